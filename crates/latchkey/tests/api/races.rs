//! Competing requests released at the same instant, as an attacker would send them: each
//! scenario fires its requests through a barrier, [`ROUNDS`] times, on both backends, and
//! asserts the invariant after every round. These hold because every state change is one
//! conditional statement in the store (docs/architecture.md, "one statement per state
//! change"), and because the hot-path cache never takes back a session a revocation removed.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::nextauth::{enrol, fam_a, first_push, logged_in_then_out, status, NONCE};
use crate::polario;
use crate::support::db::{both_backends, TestDb};
use crate::support::server::{auth_token, test_settings, TestServer};
use crate::support::sse::SseReader;
use latchkey_core::model::SessionState;
use latchkey_core::{Clock, Settings};

const ROUNDS: usize = 20;
const PASSWORD: &str = "correct horse battery staple";
const PIN: &str = "246813";
const ANSWER: &str = "k3w9xp";

both_backends!(
    concurrent_wrong_pins_never_exceed_the_attempt_limit,
    one_captcha_answer_posted_twice_at_once_is_accepted_once,
    revoking_all_sessions_racing_an_mfa_completion_leaves_no_counted_session_working,
    two_refreshes_with_one_refresh_token_both_answer_and_leave_one_successor,
    one_totp_code_on_two_pending_sessions_activates_one,
    approve_and_deny_of_one_push_are_answered_once,
    revoking_all_sessions_against_a_flood_of_logins_agrees_with_the_store,
    a_captcha_answer_racing_a_new_failed_login_leaves_no_captcha_behind,
    first_checks_of_one_token_at_once_leave_it_revocable,
    sessions_checked_on_both_threads_then_revoked_are_refused_at_once,
    sessions_pushed_out_of_a_small_cache_then_revoked_are_refused_at_once,
    loaders_finding_no_signing_key_at_once_agree_on_one
);

/// Sends every request at once: each task waits at one barrier, then sends.
async fn at_once(requests: Vec<reqwest::RequestBuilder>) -> Vec<reqwest::Response> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                request.send().await.unwrap()
            })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap());
    }
    responses
}

fn statuses(responses: &[reqwest::Response]) -> Vec<u16> {
    responses.iter().map(|r| r.status().as_u16()).collect()
}

fn mfa(s: &TestServer, token: &str, kind: &str, code: &str) -> reqwest::RequestBuilder {
    s.http
        .post(s.url("/session/login"))
        .header("X-Auth-Token", token)
        .json(&json!({"auth_type": kind, "code": code}))
}

fn keepalive(s: &TestServer, token: &str) -> reqwest::RequestBuilder {
    s.http
        .get(s.url("/session/keepalive"))
        .header("X-Auth-Token", token)
}

async fn keeps_alive(s: &TestServer, token: &str) -> bool {
    keepalive(s, token).send().await.unwrap().status() == 200
}

/// Family C's revocation of session `id` by `caller`'s session: its status.
async fn revoke(s: &TestServer, caller: &str, id: Uuid) -> u16 {
    let r = s.http.delete(s.url(&format!("/sessions/{id}")));
    r.bearer_auth(caller)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn session_id_of(body: &Value) -> Uuid {
    Uuid::parse_str(body["session_id"].as_str().unwrap()).unwrap()
}

async fn stored_state(s: &TestServer, id: Uuid) -> SessionState {
    s.store.session(id).await.unwrap().unwrap().state
}

/// A user with a password and a PIN, logged in up to the PIN step: answers the pending token.
async fn pending_pin_login(s: &TestServer, user: &str) -> (String, Uuid) {
    let r = s.basic_login(user, PASSWORD).await;
    assert_eq!(r.status(), 207);
    let token = auth_token(&r);
    let id = session_id_of(&r.json().await.unwrap());
    (token, id)
}

async fn concurrent_wrong_pins_never_exceed_the_attempt_limit(db: TestDb) {
    let s = TestServer::start(db).await;
    let max = s.core.settings.max_code_attempts;
    let user = "pin@example.com";
    s.add_user(user, PASSWORD).await;
    s.set_pin(user, PIN).await;
    for round in 0..ROUNDS {
        let (token, id) = pending_pin_login(&s, user).await;
        let guesses = (0..12)
            .map(|i| mfa(&s, &token, "PIN", &format!("{:06}", 100_000 + i)))
            .collect();
        let answers = at_once(guesses).await;
        assert!(
            statuses(&answers).iter().all(|&c| c == 401),
            "round {round}: {:?}",
            statuses(&answers)
        );
        let stored = s.store.session(id).await.unwrap().unwrap();
        assert!(
            stored.mfa_attempts <= max,
            "round {round}: {} attempts judged, limit {max}",
            stored.mfa_attempts
        );
        assert_eq!(stored.state, SessionState::Revoked, "round {round}");
        // The right PIN after the flood: the session is over.
        let right = mfa(&s, &token, "PIN", PIN).send().await.unwrap();
        assert_eq!(right.status(), 401, "round {round}: the right PIN got in");
        assert!(!keeps_alive(&s, &token).await, "round {round}");
    }
}

fn captcha_settings() -> Settings {
    Settings {
        captcha_test_answer: Some(ANSWER.into()),
        captcha_after_failures_per_address: 100_000,
        ..test_settings()
    }
}

/// Five wrong passwords for `user`, then a login with the right one: answers the token of the
/// session blocked on CAPTCHA, with a challenge drawn.
async fn blocked_on_captcha(s: &TestServer, user: &str) -> String {
    for _ in 0..s.core.settings.captcha_after_failures {
        let r = s.basic_login(user, "wrong").await;
        assert!(matches!(r.status().as_u16(), 401 | 403));
    }
    let r = s.basic_login(user, PASSWORD).await;
    assert_eq!(r.status(), 403);
    let token = auth_token(&r);
    let image = s
        .http
        .get(s.url("/session/captcha"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
    token
}

fn unblock(s: &TestServer, token: &str, answer: &str) -> reqwest::RequestBuilder {
    s.http
        .post(s.url("/session/unblock-captcha"))
        .header("X-Auth-Token", token)
        .json(&json!({ "token": answer }))
}

async fn one_captcha_answer_posted_twice_at_once_is_accepted_once(db: TestDb) {
    let s = TestServer::start_with(db, captcha_settings()).await;
    for round in 0..ROUNDS {
        let user = format!("captcha{round}@example.com");
        s.add_user(&user, PASSWORD).await;
        let token = blocked_on_captcha(&s, &user).await;
        let answers = at_once(vec![
            unblock(&s, &token, ANSWER),
            unblock(&s, &token, ANSWER),
        ])
        .await;
        let mut codes = statuses(&answers);
        codes.sort();
        assert_eq!(
            codes,
            [200, 401],
            "round {round}: one challenge, one answer"
        );
    }
}

async fn revoking_all_sessions_racing_an_mfa_completion_leaves_no_counted_session_working(
    db: TestDb,
) {
    let s = TestServer::start(db).await;
    let user = "revoke@example.com";
    s.add_user(user, PASSWORD).await;
    s.set_pin(user, PIN).await;
    for round in 0..ROUNDS {
        let (caller, _) = pending_pin_login(&s, user).await;
        assert_eq!(
            mfa(&s, &caller, "PIN", PIN).send().await.unwrap().status(),
            200
        );
        let (pending, pending_id) = pending_pin_login(&s, user).await;
        let revoke_all = s.http.delete(s.url("/sessions")).bearer_auth(&caller);
        let answers = at_once(vec![revoke_all, mfa(&s, &pending, "PIN", PIN)]).await;
        let mut answers = answers.into_iter();
        let revoked = answers.next().unwrap();
        assert_eq!(revoked.status(), 200, "round {round}");
        let revoked: Value = revoked.json().await.unwrap();
        // Whichever came first, the pending login was live when all sessions were revoked.
        assert_eq!(revoked["revokedCount"], 2, "round {round}: {revoked}");
        assert!(
            !keeps_alive(&s, &pending).await,
            "round {round}: a counted session works"
        );
        assert!(!keeps_alive(&s, &caller).await, "round {round}");
        assert_eq!(stored_state(&s, pending_id).await, SessionState::Revoked);
    }
}

async fn two_refreshes_with_one_refresh_token_both_answer_and_leave_one_successor(db: TestDb) {
    // (The replaced successor is kept as superseded; docs/api.md, family B.)
    let s = TestServer::start(db).await;
    let user = "refresh@example.com";
    s.add_user(user, PASSWORD).await;
    let refresh = |token: &str| {
        s.http
            .post(s.url("/auth/session"))
            .json(&json!({ "refreshToken": token }))
    };
    let successor = |r: reqwest::Response| async move {
        let body: Value = r.json().await.unwrap();
        body["refreshToken"].as_str().unwrap().to_owned()
    };
    for round in 0..ROUNDS {
        let tokens = polario::login(&s, user, PASSWORD).await;
        let id = Uuid::parse_str(&tokens.device_id).unwrap();
        // The current token twice at once: both answer (the presented token stays valid until
        // a successor is used), and the session keeps one of the two successors.
        let answers = at_once(vec![
            refresh(&tokens.refresh_token),
            refresh(&tokens.refresh_token),
        ])
        .await;
        assert_eq!(statuses(&answers), vec![200, 200], "round {round}");
        let mut successors = Vec::new();
        for answer in answers {
            successors.push(successor(answer).await);
        }
        // One successor is kept; the replaced one is superseded (presenting it would revoke
        // the session, as from a second holder of the current token).
        let mut kept = Vec::new();
        for token in &successors {
            let hash = latchkey_core::crypto::secret::SecretHash::of(token.as_bytes());
            match s.store.refresh_standing(&hash).await.unwrap() {
                latchkey_core::model::RefreshStanding::Next { session_id, .. } => {
                    assert_eq!(session_id, id);
                    kept.push(token.clone());
                }
                latchkey_core::model::RefreshStanding::Superseded { session_id } => {
                    assert_eq!(session_id, id);
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(kept.len(), 1, "round {round}: one successor was kept");
        let r = refresh(&kept[0]).send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        let adopted = [successor(r).await];
        assert_eq!(
            stored_state(&s, id).await,
            SessionState::Active,
            "round {round}"
        );

        // The kept successor's own successor, used twice at once: one promotes it, the other
        // finds it current; both answer, and the session lives on.
        let answers = at_once(vec![refresh(&adopted[0]), refresh(&adopted[0])]).await;
        assert_eq!(statuses(&answers), vec![200, 200], "round {round}");
        assert_eq!(
            stored_state(&s, id).await,
            SessionState::Active,
            "round {round}"
        );
    }
}

async fn one_totp_code_on_two_pending_sessions_activates_one(db: TestDb) {
    let s = TestServer::start(db).await;
    let user = "totp@example.com";
    s.add_user(user, PASSWORD).await;
    let secret = s.enable_totp(user).await;
    for round in 0..ROUNDS {
        let first = auth_token(&s.basic_login(user, PASSWORD).await);
        let second = auth_token(&s.basic_login(user, PASSWORD).await);
        let code = s.totp_code(&secret);
        let answers = at_once(vec![
            mfa(&s, &first, "2FA", &code),
            mfa(&s, &second, "2FA", &code),
        ])
        .await;
        let mut codes = statuses(&answers);
        codes.sort();
        assert_eq!(codes, [200, 401], "round {round}: one code, one login");
        let working = keeps_alive(&s, &first).await as u8 + keeps_alive(&s, &second).await as u8;
        assert_eq!(working, 1, "round {round}");
        // The next round's code is the next time step's.
        s.clock.advance(30);
    }
}

async fn approve_and_deny_of_one_push_are_answered_once(db: TestDb) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, Some("push@example.com")).await;
    logged_in_then_out(&s, &app).await;
    let mut pushes = SseReader::new(app.listen(&s).await);
    for round in 0..ROUNDS {
        let provoked = fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin")
            .send()
            .await
            .unwrap();
        assert_eq!(provoked.status(), 200, "round {round}");
        let push = first_push(&mut pushes).await;
        let request = push["requestid"].as_str().unwrap();
        let approve = app.answer_request(&s, request, true);
        let deny = app.answer_request(&s, request, false);
        let answers = at_once(vec![approve, deny]).await;
        let codes = statuses(&answers);
        let mut sorted = codes.clone();
        sorted.sort();
        assert_eq!(sorted, [200, 409], "round {round}: one push, one answer");
        let approved = codes[0] == 200;
        let st = status(&s, NONCE).await;
        assert_eq!(st["loggedin"], approved, "round {round}: {st}");
        fam_a(&s, reqwest::Method::POST, "/sessions/logout")
            .send()
            .await
            .unwrap();
    }
}

async fn revoking_all_sessions_against_a_flood_of_logins_agrees_with_the_store(db: TestDb) {
    let s = TestServer::start(db).await;
    let user = "flood@example.com";
    s.add_user(user, PASSWORD).await;
    for round in 0..ROUNDS {
        let caller = s.basic_login(user, PASSWORD).await;
        assert_eq!(caller.status(), 200);
        let caller = auth_token(&caller);
        // Sessions not checked yet: their first check, racing the revocation, reads the store
        // and fills the cache.
        let mut unchecked = Vec::new();
        for _ in 0..8 {
            let r = s.basic_login(user, PASSWORD).await;
            unchecked.push((auth_token(&r), session_id_of(&r.json().await.unwrap())));
        }
        let mut requests: Vec<_> = (0..8)
            .map(|_| {
                s.http
                    .get(s.url("/session/login"))
                    .basic_auth(user, Some(PASSWORD))
            })
            .collect();
        requests.extend(unchecked.iter().map(|(token, _)| keepalive(&s, token)));
        requests.push(s.http.delete(s.url("/sessions")).bearer_auth(&caller));
        let mut answers = at_once(requests).await;
        let revoked: Value = answers.pop().unwrap().json().await.unwrap();
        let keepalives = answers.split_off(8);
        assert!(keepalives
            .iter()
            .all(|r| matches!(r.status().as_u16(), 200 | 401)));
        let mut sessions = unchecked;
        for login in answers {
            assert_eq!(login.status(), 200, "round {round}");
            let token = auth_token(&login);
            sessions.push((token, session_id_of(&login.json().await.unwrap())));
        }
        let mut revoked_sessions = 0;
        for (token, id) in &sessions {
            let stored = stored_state(&s, *id).await;
            let works = keeps_alive(&s, token).await;
            // The cache agrees with the store: no revoked session is answered from memory.
            assert_eq!(
                works,
                stored == SessionState::Active,
                "round {round}: keepalive {works}, stored {stored:?}"
            );
            revoked_sessions += u64::from(stored == SessionState::Revoked);
        }
        assert_eq!(
            revoked["revokedCount"].as_u64().unwrap(),
            revoked_sessions + 1,
            "round {round}: the count is the caller and the sessions revoked"
        );
        assert!(!keeps_alive(&s, &caller).await, "round {round}");
        // The logins that survived go before the next round.
        let cleanup = auth_token(&s.basic_login(user, PASSWORD).await);
        s.http
            .delete(s.url("/sessions"))
            .bearer_auth(&cleanup)
            .send()
            .await
            .unwrap();
    }
}

async fn a_captcha_answer_racing_a_new_failed_login_leaves_no_captcha_behind(db: TestDb) {
    let s = TestServer::start_with(db, captcha_settings()).await;
    for round in 0..ROUNDS {
        let user = format!("racer{round}@example.com");
        s.add_user(&user, PASSWORD).await;
        let token = blocked_on_captcha(&s, &user).await;
        let failed = s
            .http
            .get(s.url("/session/login"))
            .basic_auth(&user, Some("wrong again"));
        let answers = at_once(vec![unblock(&s, &token, ANSWER), failed]).await;
        let codes = statuses(&answers);
        assert_eq!(codes[0], 200, "round {round}: the right answer is accepted");
        // Either order leaves the name below the limit: the solved CAPTCHA cleared it, and
        // at most one failure came after.
        let next = s.basic_login(&user, PASSWORD).await;
        assert_eq!(
            next.status(),
            200,
            "round {round}: a CAPTCHA requirement survived its solution ({codes:?})"
        );
    }
}

/// Several first checks of one token at once each read the store and cache the session (the
/// later ones replace the earlier entry): the session must still be found by its id, so a
/// revocation removes it from the cache at once.
async fn first_checks_of_one_token_at_once_leave_it_revocable(db: TestDb) {
    let s = TestServer::start(db).await;
    let user = "cold@example.com";
    s.add_user(user, PASSWORD).await;
    let caller = auth_token(&s.basic_login(user, PASSWORD).await);
    for round in 0..ROUNDS {
        let r = s.basic_login(user, PASSWORD).await;
        assert_eq!(r.status(), 200, "round {round}");
        let token = auth_token(&r);
        let id = session_id_of(&r.json().await.unwrap());
        let checks = at_once((0..8).map(|_| keepalive(&s, &token)).collect()).await;
        assert_eq!(statuses(&checks), vec![200; 8], "round {round}");
        assert_eq!(revoke(&s, &caller, id).await, 200, "round {round}");
        assert!(
            !keeps_alive(&s, &token).await,
            "round {round}: a revoked session is still accepted from the cache"
        );
    }
}

/// Checks at once keep each session in both worker threads' fronts (`cache::front`); a
/// revocation must be seen at once by every thread, and the sessions not revoked stay
/// accepted.
async fn sessions_checked_on_both_threads_then_revoked_are_refused_at_once(db: TestDb) {
    checked_then_revoked(db, test_settings().session_cache_capacity).await;
}

/// The same while a cache of two entries pushes the sessions in and out, so that checks find
/// them in the fronts, in the cache or only in the store.
async fn sessions_pushed_out_of_a_small_cache_then_revoked_are_refused_at_once(db: TestDb) {
    checked_then_revoked(db, 2).await;
}

async fn checked_then_revoked(db: TestDb, cache_capacity: usize) {
    let settings = Settings {
        session_cache_capacity: cache_capacity,
        ..test_settings()
    };
    let s = TestServer::start_with(db, settings).await;
    let user = "small@example.com";
    s.add_user(user, PASSWORD).await;
    let caller = auth_token(&s.basic_login(user, PASSWORD).await);
    for round in 0..ROUNDS {
        let mut sessions = Vec::new();
        for _ in 0..3 {
            let r = s.basic_login(user, PASSWORD).await;
            assert_eq!(r.status(), 200, "round {round}");
            let token = auth_token(&r);
            sessions.push((token, session_id_of(&r.json().await.unwrap())));
        }
        // Four keepalives of each session, in order.
        let checks = || -> Vec<_> {
            sessions
                .iter()
                .flat_map(|(token, _)| (0..4).map(|_| keepalive(&s, token)))
                .collect()
        };
        assert_eq!(
            statuses(&at_once(checks()).await),
            vec![200; 12],
            "round {round}"
        );
        let (revoked_token, revoked_id) = &sessions[round % 3];
        assert_eq!(revoke(&s, &caller, *revoked_id).await, 200, "round {round}");
        let statuses = statuses(&at_once(checks()).await);
        for (i, (token, _)) in sessions.iter().enumerate() {
            let expected = if token == revoked_token { 401 } else { 200 };
            assert_eq!(
                statuses[i * 4..i * 4 + 4],
                [expected; 4],
                "round {round}, session {i}"
            );
        }
    }
}

/// The start-up key reload and a first login both find no active signing key: they must
/// create one between them and both keep it, or a JWT signed with one is refused by a ring
/// built from the other (for up to the reload interval).
async fn loaders_finding_no_signing_key_at_once_agree_on_one(db: TestDb) {
    let s = TestServer::start(db).await;
    let user = "keys@example.com";
    s.add_user(user, PASSWORD).await;
    for round in 0..ROUNDS {
        s.store
            .retire_signing_keys("none-kept", s.clock.now())
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(4));
        let loads: Vec<_> = (0..4)
            .map(|_| {
                let (core, barrier) = (s.core.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    core.load_signing_keys().await.unwrap()
                })
            })
            .collect();
        let mut rings = Vec::new();
        for load in loads {
            rings.push(load.await.unwrap());
        }
        let active: Vec<_> = s
            .store
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.retired_at.is_none())
            .collect();
        assert_eq!(active.len(), 1, "round {round}: {active:?}");
        assert!(
            rings.iter().all(|ring| ring.knows(&active[0].kid)),
            "round {round}"
        );
        let tokens = polario::login(&s, user, PASSWORD).await;
        let r = s
            .http
            .get(s.url(&format!("/sessions/validate/{}", tokens.device_id)))
            .bearer_auth(&tokens.jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}");
    }
}
