//! What family A's management operations read and write beyond sessions: attributes (JSON
//! values by key, at global, server, privileged-server and user scope) and the listings of
//! accounts and users with the vendor's filter, search, sort, limit and marker.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::model::ids::{ServerId, UserId};
use crate::model::Account;

/// Where a set of attributes lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeScope {
    Global,
    Server(ServerId),
    /// A server's privileged attributes (managed with the global `servers` permission).
    Privileged(ServerId),
    User(Uuid),
}

/// Attributes by key; each value is JSON text (any JSON value).
pub type Attributes = BTreeMap<String, String>;

/// `filter=name=value` or `filter=name=in:v1,v2`: the user's attribute `name` is one of the
/// values (a JSON string equal to it, or a number or boolean written so).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeFilter {
    pub key: String,
    pub values: Vec<String>,
}

impl AttributeFilter {
    /// The JSON texts a stored value may have to match: each value as a JSON string, and as
    /// itself when it is a JSON number, boolean or null.
    pub fn json_candidates(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.values.len() * 2);
        for value in &self.values {
            out.push(serde_json::Value::String(value.clone()).to_string());
            if serde_json::from_str::<serde_json::Value>(value)
                .is_ok_and(|v| v.is_number() || v.is_boolean() || v.is_null())
            {
                out.push(value.clone());
            }
        }
        out
    }
}

/// The columns accounts can be sorted by (the Account model's fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountColumn {
    Id,
    Description,
    Userid,
    Blocked,
    ClientVersion,
    Created,
    LastLogin,
    LastProvoke,
}

impl AccountColumn {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "id" => Self::Id,
            "description" => Self::Description,
            "userid" => Self::Userid,
            "blocked" => Self::Blocked,
            "clientVersion" => Self::ClientVersion,
            "created" => Self::Created,
            "lastlogin" => Self::LastLogin,
            "lastprovoke" => Self::LastProvoke,
            _ => return None,
        })
    }
}

/// The columns users can be sorted by (the User model's fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserColumn {
    Userid,
    LastLogin,
    NumberAccounts,
}

impl UserColumn {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "userid" => Self::Userid,
            "lastlogin" => Self::LastLogin,
            "numberaccounts" => Self::NumberAccounts,
            _ => return None,
        })
    }
}

/// A listing request: filter, search (users), sort (column, descending), limit and offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing<C> {
    /// Only this user's items (accounts of one user).
    pub user: Option<Uuid>,
    pub filter: Option<AttributeFilter>,
    /// Users whose name contains this text (case-insensitive).
    pub search: Option<String>,
    pub sort: Vec<(C, bool)>,
    pub limit: u64,
    pub offset: u64,
}

/// One page of a listing and how many items all pages hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// An account as listed, with its user's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedAccount {
    pub account: Account,
    pub userid: Option<UserId>,
}

/// A user as family A lists users: aggregated over their app accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    pub userid: UserId,
    /// Latest login over all their accounts.
    pub last_login: Option<i64>,
    pub accounts: u64,
}
