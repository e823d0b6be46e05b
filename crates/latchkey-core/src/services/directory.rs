//! Family A's management of accounts, users and attributes, as the vendor's spec lists them
//! (docs/nextauth-management.md): listings with filter, search, sort, limit and marker;
//! deleting accounts and users; attributes at global, server, privileged-server and user scope,
//! where *set* replaces the whole set and *update* merges the given keys.

use crate::error::{Error, Result};
use crate::model::directory::{
    AccountColumn, AttributeFilter, AttributeScope, Attributes, ListedAccount, Listing, Page,
    UserColumn, UserSummary,
};
use crate::model::ids::{ServerId, UserId};
use crate::services::audit::AuditEvent;
use crate::services::Latchkey;

/// Items a listing answers when it names no limit, and the most it answers.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;
/// Attributes one scope holds at most, and the longest name.
pub const MAX_ATTRIBUTES: u64 = 256;
pub const MAX_ATTRIBUTE_NAME_CHARS: usize = 128;
/// Columns one `sort` names at most, and values one `in:` filter lists at most.
const MAX_SORT_COLUMNS: usize = 8;
const MAX_FILTER_VALUES: usize = 100;

/// A listing's query parameters as the request gave them.
#[derive(Debug, Default, Clone, Copy)]
pub struct ListingParams<'a> {
    pub filter: Option<&'a str>,
    pub search: Option<&'a str>,
    pub sort: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub marker: Option<&'a str>,
}

impl ListingParams<'_> {
    /// The listing these parameters ask for; `Invalid` names what is malformed.
    pub fn parse<C: Copy>(&self, column: impl Fn(&str) -> Option<C>) -> Result<Listing<C>> {
        let number = |name: &str, text: Option<&str>| -> Result<Option<u64>> {
            text.filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<u64>()
                        .map_err(|_| Error::Invalid(format!("{name} must be a whole number")))
                })
                .transpose()
        };
        let limit = number("limit", self.limit)?.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::Invalid(format!(
                "limit must be from 1 to {MAX_LIMIT}"
            )));
        }
        let mut sort = Vec::new();
        for part in self.sort.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
            let (name, direction) = part.split_once(':').unwrap_or((part, "asc"));
            let c = column(name.trim())
                .ok_or_else(|| Error::Invalid(format!("cannot sort by {name:?}")))?;
            let descending = match direction.trim() {
                "asc" => false,
                "desc" => true,
                other => {
                    return Err(Error::Invalid(format!(
                        "sort direction {other:?} is neither asc nor desc"
                    )))
                }
            };
            sort.push((c, descending));
        }
        if sort.len() > MAX_SORT_COLUMNS {
            return Err(Error::Invalid(format!(
                "sort by at most {MAX_SORT_COLUMNS} columns"
            )));
        }
        Ok(Listing {
            user: None,
            filter: self
                .filter
                .filter(|f| !f.is_empty())
                .map(parse_filter)
                .transpose()?,
            search: match self.search.filter(|s| !s.is_empty()) {
                Some(s) if s.chars().count() > 256 || s.chars().any(char::is_control) => {
                    return Err(Error::Invalid(
                        "search is at most 256 characters, none a control character".into(),
                    ))
                }
                other => other.map(str::to_owned),
            },
            sort,
            limit,
            offset: number("marker", self.marker)?.unwrap_or(0),
        })
    }
}

/// `name=value` or `name=in:v1,v2`.
fn parse_filter(text: &str) -> Result<AttributeFilter> {
    let (key, value) = text
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| {
            Error::Invalid("filter takes the form name=value or name=in:v1,v2".into())
        })?;
    let values: Vec<String> = match value.strip_prefix("in:") {
        Some(list) => list.split(',').map(str::to_owned).collect(),
        None => vec![value.to_owned()],
    };
    if values.len() > MAX_FILTER_VALUES {
        return Err(Error::Invalid(format!(
            "a filter lists at most {MAX_FILTER_VALUES} values"
        )));
    }
    Ok(AttributeFilter {
        key: attribute_name(key)?,
        values,
    })
}

fn attribute_name(name: &str) -> Result<String> {
    if name.is_empty()
        || name.chars().count() > MAX_ATTRIBUTE_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Error::Invalid(format!(
            "an attribute name is 1 to {MAX_ATTRIBUTE_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

/// The attributes a request body holds: a JSON object of at most [`MAX_ATTRIBUTES`] names.
pub fn parse_attributes(body: &[u8]) -> Result<Attributes> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::Invalid(format!("the body is not JSON: {e}")))?;
    let serde_json::Value::Object(object) = value else {
        return Err(Error::Invalid(
            "the attributes must be a JSON object".into(),
        ));
    };
    if object.len() as u64 > MAX_ATTRIBUTES {
        return Err(Error::Invalid(format!(
            "at most {MAX_ATTRIBUTES} attributes"
        )));
    }
    object
        .into_iter()
        .map(|(name, value)| Ok((attribute_name(&name)?, value.to_string())))
        .collect()
}

/// Attributes as reads answer them: one JSON object.
pub fn attributes_json(attributes: &Attributes) -> String {
    let object: serde_json::Map<String, serde_json::Value> = attributes
        .iter()
        .map(|(name, value)| {
            let value = serde_json::from_str(value).unwrap_or(serde_json::Value::Null);
            (name.clone(), value)
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

impl Latchkey {
    /// The server's accounts a listing asks for.
    pub async fn list_accounts(
        &self,
        server: &ServerId,
        listing: &Listing<AccountColumn>,
    ) -> Result<Page<ListedAccount>> {
        Ok(self.store.list_accounts(server, listing).await?)
    }

    /// One user's accounts (`NotFound` for an unknown user).
    pub async fn accounts_of_user(
        &self,
        server: &ServerId,
        userid: &str,
        mut listing: Listing<AccountColumn>,
    ) -> Result<Page<ListedAccount>> {
        let user = self.user(server, &UserId::parse(userid)?).await?;
        listing.user = Some(user.id);
        listing.filter = None;
        Ok(self.store.list_accounts(server, &listing).await?)
    }

    /// The server's users a listing asks for.
    pub async fn list_users(
        &self,
        server: &ServerId,
        listing: &Listing<UserColumn>,
    ) -> Result<Page<UserSummary>> {
        Ok(self.store.list_users(server, listing).await?)
    }

    /// Deletes an account (`NotFound` when the server has none of that id).
    pub async fn delete_account(&self, server: &ServerId, account_id: i64) -> Result<()> {
        if !self.store.delete_account(server, account_id).await? {
            return Err(Error::NotFound(format!("no account {account_id}")));
        }
        self.audit(server, AuditEvent::AccountDeleted { account_id })
            .await
    }

    /// Deletes every account of a user, keeping the user; answers how many.
    pub async fn delete_user_accounts(&self, server: &ServerId, userid: &str) -> Result<u64> {
        let user = self.user(server, &UserId::parse(userid)?).await?;
        let deleted = self.store.delete_user_accounts(user.id).await?;
        self.audit(
            server,
            AuditEvent::UserAccountsDeleted {
                userid: user.userid.as_str(),
                count: deleted,
            },
        )
        .await?;
        Ok(deleted)
    }

    /// The attribute scope of a user; with `create`, a user that does not exist is made
    /// (without credentials), as setting a user's attributes does.
    pub async fn user_attribute_scope(
        &self,
        server: &ServerId,
        userid: &str,
        create: bool,
    ) -> Result<AttributeScope> {
        let userid = UserId::parse(userid)?;
        match self.store.user(server, &userid).await? {
            Some(user) => Ok(AttributeScope::User(user.id)),
            None if create => match self.add_user(server, &userid, None).await {
                Ok(user) => Ok(AttributeScope::User(user.id)),
                // Made by a concurrent request: use that one.
                Err(Error::Conflict(_)) => {
                    Ok(AttributeScope::User(self.user(server, &userid).await?.id))
                }
                Err(e) => Err(e),
            },
            None => Err(Error::NotFound(format!("no user {userid}"))),
        }
    }

    /// A scope's attributes as one JSON object.
    pub async fn attributes(&self, scope: &AttributeScope) -> Result<String> {
        Ok(attributes_json(&self.store.attributes(scope).await?))
    }

    /// Replaces a scope's attributes with those of the body.
    pub async fn set_attributes(&self, scope: &AttributeScope, body: &[u8]) -> Result<()> {
        let attributes = parse_attributes(body)?;
        Ok(self.store.replace_attributes(scope, &attributes).await?)
    }

    /// Sets the body's attributes in a scope, keeping the others.
    pub async fn update_attributes(&self, scope: &AttributeScope, body: &[u8]) -> Result<()> {
        let attributes = parse_attributes(body)?;
        if self
            .store
            .merge_attributes(scope, &attributes, MAX_ATTRIBUTES)
            .await?
        {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "a scope holds at most {MAX_ATTRIBUTES} attributes: delete some first"
            )))
        }
    }

    pub async fn delete_attributes(&self, scope: &AttributeScope) -> Result<()> {
        self.store.delete_attributes(scope).await?;
        Ok(())
    }

    /// Deletes one attribute (`NotFound` when the scope has none of that name).
    pub async fn delete_attribute(&self, scope: &AttributeScope, name: &str) -> Result<()> {
        // A name no attribute can have (too long, a control character) names none.
        if attribute_name(name).is_ok() && self.store.delete_attribute(scope, name).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("no attribute {name:?}")))
        }
    }
}
