//! The HTTP calls of the app protocol (docs/app-protocol.md, `/app/v1/`), one method per
//! endpoint. Signing stays with the callers: this module only moves JSON, the bodies and answers
//! being the protocol's wire types from `latchkey-wire`, which the server uses too.
//!
//! A non-2xx answer becomes [`ClientError::Api`] with the status and the server's
//! `{error, message}`, so callers can tell a refusal (blocked, expired, already answered) from a
//! network failure, which they may retry. Error texts never carry request URLs' query strings
//! (the events URL holds a signature).

use std::time::Duration;

use latchkey_wire::{
    AnswerRequest, Answered, AppLoggedIn, AppLoginRequest, Challenge, ChallengeRequest,
    EnrolRequest, Enrolled, ErrorBody, ListenQuery, TransactionAnswer, TransactionAnswered,
    Transactions, TransactionsRequest,
};
use reqwest::{Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// For every call but the event stream, which stays open.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENT_VERSION: &str = concat!("latchkey-app/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{endpoint} answered {status}: {message} ({code})")]
    Api {
        endpoint: String,
        status: StatusCode,
        code: String,
        message: String,
    },
    /// No answer (connection refused, timeout, dropped).
    #[error("cannot reach {endpoint}")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the protocol says.
    #[error("unexpected answer from {endpoint}: {why}")]
    Unexpected { endpoint: String, why: String },
    #[error("{0}")]
    BadBaseUrl(String),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's machine code (e.g. `expired`), or a short kind for other failures.
    pub fn code(&self) -> String {
        match self {
            ClientError::Api { code, .. } => code.clone(),
            ClientError::Transport { .. } => "unreachable".into(),
            ClientError::Unexpected { .. } => "unexpected_answer".into(),
            ClientError::BadBaseUrl(_) => "bad_base_url".into(),
        }
    }
}

/// A connection to one server's `/app/v1/`.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        let bad = || ClientError::BadBaseUrl(format!("unusable base URL {base_url:?}"));
        let base = Url::parse(base_url).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(CLIENT_VERSION)
            .build()
            .map_err(|e| ClientError::BadBaseUrl(format!("cannot make an HTTP client: {e}")))?;
        Ok(Client { http, base })
    }

    /// True when requests would cross a network in clear text (http to a host other than this
    /// machine).
    pub fn is_plain_remote(&self) -> bool {
        let host = self.base.host_str().unwrap_or_default();
        let local = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        self.base.scheme() == "http" && !local
    }

    fn endpoint(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|_| ClientError::BadBaseUrl(format!("unusable base URL {}", self.base)))?
            .pop_if_empty()
            .extend(["app", "v1"])
            .extend(segments);
        Ok(url)
    }

    pub async fn enrol(
        &self,
        payload: &str,
        publickey: &str,
        signature: &str,
    ) -> Result<Enrolled, ClientError> {
        let body = EnrolRequest {
            payload: payload.to_owned(),
            publickey: publickey.to_owned(),
            signature: signature.to_owned(),
            client_version: Some(CLIENT_VERSION.to_owned()),
        };
        self.post(&["enrol"], &body).await
    }

    pub async fn login(
        &self,
        payload: &str,
        accountid: i64,
        signature: &str,
    ) -> Result<AppLoggedIn, ClientError> {
        let body = AppLoginRequest {
            payload: payload.to_owned(),
            accountid,
            signature: signature.to_owned(),
        };
        self.post(&["login"], &body).await
    }

    pub async fn challenge(
        &self,
        serverid: &str,
        accountid: i64,
    ) -> Result<Challenge, ClientError> {
        let body = ChallengeRequest {
            serverid: serverid.to_owned(),
            accountid,
        };
        self.post(&["challenge"], &body).await
    }

    /// Opens the event stream; the answer's body is the stream.
    pub async fn events(
        &self,
        serverid: &str,
        accountid: i64,
        challenge: &str,
        signature: &str,
    ) -> Result<Response, ClientError> {
        let url = self.endpoint(&["events"])?;
        let endpoint = without_query(&url);
        let query = ListenQuery {
            serverid: serverid.to_owned(),
            accountid,
            challenge: challenge.to_owned(),
            signature: signature.to_owned(),
        };
        let response = self
            .http
            .get(url)
            .query(&query)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| transport(&endpoint, e))?;
        check(&endpoint, response).await
    }

    pub async fn answer(
        &self,
        requestid: &str,
        serverid: &str,
        accountid: i64,
        approve: bool,
        signature: &str,
    ) -> Result<Answered, ClientError> {
        let body = AnswerRequest {
            serverid: serverid.to_owned(),
            accountid,
            approve,
            signature: signature.to_owned(),
        };
        self.post(&["push", requestid], &body).await
    }

    /// The account's pending transactions (signature of action `transactions`).
    pub async fn transactions(
        &self,
        serverid: &str,
        accountid: i64,
        challenge: &str,
        signature: &str,
    ) -> Result<Transactions, ClientError> {
        let body = TransactionsRequest {
            serverid: serverid.to_owned(),
            accountid,
            challenge: challenge.to_owned(),
            signature: signature.to_owned(),
        };
        self.post(&["transactions"], &body).await
    }

    pub async fn answer_transaction(
        &self,
        tid: &str,
        serverid: &str,
        accountid: i64,
        approve: bool,
        signature: &str,
    ) -> Result<TransactionAnswered, ClientError> {
        let body = TransactionAnswer {
            serverid: serverid.to_owned(),
            accountid,
            approve,
            signature: signature.to_owned(),
        };
        self.post(&["transactions", tid], &body).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.endpoint(segments)?;
        let endpoint = without_query(&url);
        let response = self
            .http
            .post(url)
            .json(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| transport(&endpoint, e))?;
        let response = check(&endpoint, response).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(&endpoint, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            endpoint,
            why: e.to_string(),
        })
    }
}

fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

fn transport(endpoint: &str, e: reqwest::Error) -> ClientError {
    ClientError::Transport {
        endpoint: endpoint.to_owned(),
        source: e.without_url(),
    }
}

/// Passes a 2xx answer through; turns any other into [`ClientError::Api`].
async fn check(endpoint: &str, response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error, body.message),
        Err(_) => (
            format!("http_{}", status.as_u16()),
            status.canonical_reason().unwrap_or("error").to_owned(),
        ),
    };
    Err(ClientError::Api {
        endpoint: endpoint.to_owned(),
        status,
        code,
        message: printable(&message),
    })
}

/// Drops control characters from text the server chose, before it reaches a terminal.
pub fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_extend_the_base_url_path() {
        let client = Client::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            client.endpoint(&["push", "a/b c"]).unwrap().as_str(),
            "http://127.0.0.1:8080/app/v1/push/a%2Fb%20c"
        );
        let client = Client::new("https://example.com/latchkey/").unwrap();
        assert_eq!(
            client.endpoint(&["enrol"]).unwrap().as_str(),
            "https://example.com/latchkey/app/v1/enrol"
        );
        assert!(Client::new("ftp://example.com").is_err());
        assert!(Client::new("not a url").is_err());
    }

    #[test]
    fn only_clear_text_to_other_hosts_counts_as_plain_remote() {
        assert!(!Client::new("http://127.0.0.1:1").unwrap().is_plain_remote());
        assert!(!Client::new("http://localhost:1").unwrap().is_plain_remote());
        assert!(!Client::new("http://[::1]:1").unwrap().is_plain_remote());
        assert!(!Client::new("https://example.com")
            .unwrap()
            .is_plain_remote());
        assert!(Client::new("http://example.com").unwrap().is_plain_remote());
    }
}
