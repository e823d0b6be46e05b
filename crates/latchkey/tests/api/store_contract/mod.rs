//! The store contract: every `Store` method, run against each backend through
//! `latchkey::open_store`, exactly as the server opens it. Both backends must answer the same
//! way, so any behaviour the services rely on is asserted here once.
//!
//! One file per narrow trait of `latchkey_core::store` (`tenants.rs` tests `TenantStore`, and
//! so on), each with its own `both_backends!` list; the fixtures they share are here. A
//! transition is checked by the whole record it leaves (what must change and what must not),
//! by its answer, and, for the one-statement rule (docs/architecture.md, "One statement per
//! state change"), by `racing_*` scenarios that release competing calls at one barrier.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod app;
mod audit;
mod directory;
mod housekeeping;
mod management;
mod passkeys;
mod sessions;
mod tenants;
mod throttle;
mod tokens;
mod transactions;
mod users;

use std::future::Future;
use std::sync::Arc;

use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{
    Account, AppChallenge, AuthMethod, ClientInfo, NewAccount, PushRequest, Server, Session,
    SessionState, User,
};
use latchkey_core::{ServerId, Store, StoreError, UserId};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::support::db::TestDb;

const NOW: i64 = 1_700_000_000;

/// How many times each `racing_*` scenario fires its competing calls.
const ROUNDS: usize = 10;

async fn open(db: &TestDb) -> Arc<dyn Store> {
    latchkey::open_store(db.url(), &db.master_key_file())
        .await
        .unwrap_or_else(|e| panic!("opening {:?} store: {e:#}", db.backend()))
}

/// Starts `n` tasks, `task(0)` to `task(n - 1)`, that all wait at one barrier and then run at
/// once, as competing requests would; answers their results in task order.
async fn at_once<T, Fut>(n: usize, task: impl Fn(usize) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let racer = task(i);
            tokio::spawn(async move {
                barrier.wait().await;
                racer.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

fn new_server(name: &str, created_at: i64) -> Server {
    let mut secret_key = [0u8; 32];
    let mut public_key = [0u8; 32];
    for i in 0..32u8 {
        // Every byte value class: zero, high bit, 0xff.
        secret_key[usize::from(i)] = i.wrapping_mul(37).wrapping_add(created_at as u8);
        public_key[usize::from(i)] = 0xff - i;
    }
    secret_key[0] = 0;
    Server {
        id: ServerId::generate(),
        name: name.to_owned(),
        secret_key,
        public_key,
        created_at,
    }
}

async fn given_server(store: &dyn Store) -> Server {
    let server = new_server("example", NOW);
    store.insert_server(&server).await.unwrap();
    server
}

fn new_user(server: &Server, name: &str) -> User {
    User {
        id: Uuid::new_v4(),
        server_id: server.id.clone(),
        userid: UserId::parse(name).unwrap(),
        created_at: NOW,
    }
}

async fn given_user(store: &dyn Store, server: &Server, name: &str) -> User {
    let user = new_user(server, name);
    store.insert_user(&user).await.unwrap();
    user
}

/// An active session that stays live for an hour after `NOW`.
fn new_session(server: &Server, user: Option<&User>) -> Session {
    Session {
        id: Uuid::new_v4(),
        server_id: server.id.clone(),
        user_id: user.map(|u| u.id),
        methods: vec![AuthMethod::Pwd],
        state: SessionState::Active,
        created_at: NOW - 60,
        last_active_at: NOW - 60,
        idle_expires_at: NOW + 3600,
        absolute_expires_at: NOW + 86_400,
        // Not the column's default (900): a backend that drops the field is caught.
        idle_timeout: 3600,
        client: ClientInfo::default(),
        pending_mfa: None,
        mfa_attempts: 0,
        captcha_answer: None,
        captcha_failures: 0,
        password_ok: false,
        revoked_at: None,
    }
}

fn token_hash(session: &Session) -> SecretHash {
    SecretHash::of(session.id.as_bytes())
}

async fn given_session(store: &dyn Store, session: Session) -> Session {
    store
        .insert_session(&session, &token_hash(&session), None, None)
        .await
        .unwrap();
    session
}

/// Every field of a session, for failure messages (its `Debug` shows only a few).
fn dump(s: &Session) -> String {
    format!(
        "user_id {:?}, methods {:?}, state {:?}, created {}, last active {}, idle expires {}, \
         absolute expires {}, idle timeout {}, client {:?}, pending {:?}, mfa attempts {}, \
         captcha answer set {}, captcha failures {}, password ok {}, revoked at {:?}",
        s.user_id,
        s.methods,
        s.state,
        s.created_at,
        s.last_active_at,
        s.idle_expires_at,
        s.absolute_expires_at,
        s.idle_timeout,
        s.client,
        s.pending_mfa,
        s.mfa_attempts,
        s.captcha_answer.is_some(),
        s.captcha_failures,
        s.password_ok,
        s.revoked_at,
    )
}

async fn stored(store: &dyn Store, id: Uuid) -> Session {
    store.session(id).await.unwrap().expect("session stored")
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Conflict) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::NotFound) => {}
        other => panic!("expected not found, got {other:?}"),
    }
}

fn new_account(server: &Server, key: u8, user: Option<&User>, created_at: i64) -> NewAccount {
    let mut public_key = [key; 32];
    // Every byte value class: zero, high bit, 0xff.
    public_key[0] = 0;
    public_key[1] = 0x80;
    public_key[31] = 0xff;
    NewAccount {
        server_id: server.id.clone(),
        public_key,
        description: format!("phone {key}"),
        user_id: user.map(|u| u.id),
        client_version: Some("1.2.3".into()),
        created_at,
    }
}

/// The account as the store should answer it right after the insert.
fn inserted(id: i64, a: &NewAccount) -> Account {
    Account {
        id,
        server_id: a.server_id.clone(),
        public_key: a.public_key,
        description: a.description.clone(),
        user_id: a.user_id,
        blocked: false,
        client_version: a.client_version.clone(),
        created_at: a.created_at,
        last_login: None,
        last_provoke: None,
    }
}

async fn given_account(store: &dyn Store, account: NewAccount) -> Account {
    let id = store.insert_account(&account).await.unwrap();
    inserted(id, &account)
}

async fn stored_account(store: &dyn Store, account: &Account) -> Account {
    store
        .account(&account.server_id, account.id)
        .await
        .unwrap()
        .expect("account stored")
}

fn new_app_challenge(server: &Server, name: &[u8], expires_at: i64) -> AppChallenge {
    AppChallenge {
        challenge_hash: SecretHash::of(name),
        server_id: server.id.clone(),
        purpose: "listen".into(),
        account_id: None,
        name: None,
        userid: None,
        expires_at,
    }
}

fn new_push(account: &Account, name: &str, created_at: i64, expires_at: i64) -> PushRequest {
    PushRequest {
        id: Uuid::new_v4(),
        server_id: account.server_id.clone(),
        account_id: account.id,
        nonce_hash: SecretHash::of(format!("nonce {name}").as_bytes()),
        user_context: format!("{{\"name\":\"{name}\"}}"),
        created_at,
        expires_at,
        answered_at: None,
        approved: None,
    }
}

async fn given_push(store: &dyn Store, push: PushRequest) -> PushRequest {
    store.insert_push(&push).await.unwrap();
    push
}

async fn stored_push(store: &dyn Store, push: &PushRequest) -> PushRequest {
    store.push(push.id).await.unwrap().expect("push stored")
}
