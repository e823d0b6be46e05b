//! The wire types of the companion app protocol, `/app/v1/...` (docs/app-protocol.md): the JSON
//! bodies the companion app sends and the server answers, the event stream's pushes and
//! transactions, the events query and the error body.
//!
//! They exist once, here, so the server (`latchkey-http`) and the companion app
//! (`latchkey-app`) cannot disagree on a field name: both sides serialize and deserialize these
//! very structs. The crate holds data only: no validation (the server checks what it receives),
//! no HTTP, no signing. With the feature `openapi` every type also derives `utoipa::ToSchema`
//! for the server's OpenAPI document.

use serde::{Deserialize, Serialize};

/// `POST /app/v1/enrol`: enrols a new account key pair from an enrol QR payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EnrolRequest {
    /// The enrol QR payload (text or base64).
    pub payload: String,
    /// base64url of the new account's Ed25519 public key.
    pub publickey: String,
    /// Account signature of action `enrol`.
    pub signature: String,
    /// The app's name and version, e.g. `latchkey-app/0.1.0` (`clientVersion` on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
}

/// The answer to `EnrolRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Enrolled {
    /// The new account's id.
    pub accountid: i64,
    /// The server the account belongs to.
    pub serverid: String,
    /// The user the account is bound to; null when the payload named none.
    pub userid: Option<String>,
}

/// `POST /app/v1/login`: logs in the browser session of a login QR payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppLoginRequest {
    /// The login QR payload (text or base64).
    pub payload: String,
    /// The account that logs in.
    pub accountid: i64,
    /// Account signature of action `login`.
    pub signature: String,
}

/// The answer to `AppLoginRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppLoggedIn {
    /// The server the browser session belongs to.
    pub serverid: String,
    /// The account that logged in.
    pub accountid: i64,
    /// The account's user (null when it has none).
    pub userid: Option<String>,
}

/// `POST /app/v1/challenge`: asks for a one-time value to sign (listen requests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChallengeRequest {
    /// The account's server.
    pub serverid: String,
    /// The account that will sign the challenge.
    pub accountid: i64,
}

/// The answer to `ChallengeRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Challenge {
    /// The one-time value (one use).
    pub challenge: String,
    /// When it expires, unix seconds.
    pub expires: i64,
}

/// The query of `GET /app/v1/events`, the Server-Sent Events stream of an account's pushes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ListenQuery {
    /// The account's server.
    pub serverid: String,
    /// The account that listens.
    pub accountid: i64,
    /// A challenge from `POST /app/v1/challenge`.
    pub challenge: String,
    /// Account signature of action `listen`.
    pub signature: String,
}

/// A pushed login request: the data of an `event: push` on the event stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Push {
    /// The push request's id (a UUID); it goes into `POST /app/v1/push/{requestid}` and the
    /// answer's signature.
    #[cfg_attr(feature = "openapi", schema(format = Uuid))]
    pub requestid: String,
    /// The account's server.
    pub serverid: String,
    /// The account asked to approve the login.
    pub accountid: i64,
    /// What the relying party told about the login (a UserContext: `announceinfo`,
    /// `sessioninfo`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub usercontext: serde_json::Value,
    /// When the request expires, unix seconds.
    pub expires: i64,
}

/// `POST /app/v1/push/{requestid}`: approves or denies a pushed login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AnswerRequest {
    /// The account's server.
    pub serverid: String,
    /// The account that answers.
    pub accountid: i64,
    /// True to approve the login, false to deny it.
    pub approve: bool,
    /// Account signature of action `answer`.
    pub signature: String,
}

/// The answer to `AnswerRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Answered {
    /// Whether the browser session is now logged in (the approval).
    pub loggedin: bool,
}

/// A transaction to confirm: the data of an `event: transaction` on the event stream, and an
/// item of `Transactions`. The app shows the values only when `signature` verifies against
/// the server key it pinned at enrol (docs/app-protocol.md, "Transactions").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionPush {
    /// The transaction id (base64url); it goes into `POST /app/v1/transactions/{tid}`.
    pub tid: String,
    /// The account's server.
    pub serverid: String,
    /// The account asked to confirm.
    pub accountid: i64,
    pub amount: String,
    pub beneficiary: String,
    pub description: String,
    /// When the transaction was made, unix seconds.
    pub created: i64,
    /// When it expires unanswered, unix seconds.
    pub expires: i64,
    /// The server's base64url Ed25519 signature over the values.
    pub signature: String,
}

/// `POST /app/v1/transactions`: the account's pending transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionsRequest {
    /// The account's server.
    pub serverid: String,
    /// The account asking.
    pub accountid: i64,
    /// A challenge from `POST /app/v1/challenge`.
    pub challenge: String,
    /// Account signature of action `transactions`.
    pub signature: String,
}

/// The answer to `TransactionsRequest`, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transactions {
    pub transactions: Vec<TransactionPush>,
}

/// `POST /app/v1/transactions/{tid}`: approves or declines a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionAnswer {
    /// The account's server.
    pub serverid: String,
    /// The account that answers.
    pub accountid: i64,
    /// True to approve, false to decline.
    pub approve: bool,
    /// Account signature over the transaction's values and the verdict.
    pub signature: String,
}

/// The answer to `TransactionAnswer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionAnswered {
    /// Whether the transaction is now approved.
    pub approved: bool,
}

/// The body of every error answer of the protocol (any non-2xx status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable snake_case machine code, e.g. `expired`.
    pub error: String,
    /// A message for people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn round_trip<T>(value: &T, expected: Value)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_value(value).unwrap();
        assert_eq!(json, expected);
        let back: T = serde_json::from_value(json).unwrap();
        assert_eq!(&back, value);
    }

    #[test]
    fn field_names_are_the_protocols() {
        round_trip(
            &EnrolRequest {
                payload: "p".into(),
                publickey: "k".into(),
                signature: "s".into(),
                client_version: Some("latchkey-app/1".into()),
            },
            json!({"payload": "p", "publickey": "k", "signature": "s", "clientVersion": "latchkey-app/1"}),
        );
        round_trip(
            &EnrolRequest {
                payload: "p".into(),
                publickey: "k".into(),
                signature: "s".into(),
                client_version: None,
            },
            json!({"payload": "p", "publickey": "k", "signature": "s"}),
        );
        round_trip(
            &Enrolled {
                accountid: 1,
                serverid: "srv".into(),
                userid: None,
            },
            json!({"accountid": 1, "serverid": "srv", "userid": null}),
        );
        round_trip(
            &AppLoginRequest {
                payload: "p".into(),
                accountid: 1,
                signature: "s".into(),
            },
            json!({"payload": "p", "accountid": 1, "signature": "s"}),
        );
        round_trip(
            &AppLoggedIn {
                serverid: "srv".into(),
                accountid: 1,
                userid: Some("alice".into()),
            },
            json!({"serverid": "srv", "accountid": 1, "userid": "alice"}),
        );
        round_trip(
            &ChallengeRequest {
                serverid: "srv".into(),
                accountid: 1,
            },
            json!({"serverid": "srv", "accountid": 1}),
        );
        round_trip(
            &Challenge {
                challenge: "c".into(),
                expires: 5,
            },
            json!({"challenge": "c", "expires": 5}),
        );
        round_trip(
            &ListenQuery {
                serverid: "srv".into(),
                accountid: 1,
                challenge: "c".into(),
                signature: "s".into(),
            },
            json!({"serverid": "srv", "accountid": 1, "challenge": "c", "signature": "s"}),
        );
        round_trip(
            &Push {
                requestid: "r".into(),
                serverid: "srv".into(),
                accountid: 1,
                usercontext: json!({"sessioninfo": {"ip": "10.0.0.1"}}),
                expires: 5,
            },
            json!({"requestid": "r", "serverid": "srv", "accountid": 1,
                "usercontext": {"sessioninfo": {"ip": "10.0.0.1"}}, "expires": 5}),
        );
        round_trip(
            &AnswerRequest {
                serverid: "srv".into(),
                accountid: 1,
                approve: true,
                signature: "s".into(),
            },
            json!({"serverid": "srv", "accountid": 1, "approve": true, "signature": "s"}),
        );
        round_trip(&Answered { loggedin: false }, json!({"loggedin": false}));
        round_trip(
            &ErrorBody {
                error: "expired".into(),
                message: "m".into(),
            },
            json!({"error": "expired", "message": "m"}),
        );
    }
}
