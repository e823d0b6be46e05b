//! `SessionStore`: a session is created whole, then changed only by transitions, each one
//! conditional statement that names the state it leaves and reports whether it happened.
//! Every transition is checked by the whole record it leaves, so a backend that writes a field
//! it should not (or forgets one it should) is caught.

use std::collections::HashSet;

use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{
    AuditRecord, AuthMethod, ClientInfo, MfaKind, Server, Session, SessionState, SessionTouch, User,
};
use latchkey_core::store::{AuditQuery, CaptchaVerdict, Transition};
use latchkey_core::{Store, StoreError};
use uuid::Uuid;

use super::{
    assert_conflict, at_once, dump, given_server, given_session, given_user, new_session, open,
    stored, token_hash, NOW, ROUNDS,
};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    a_session_round_trips_every_field_by_id_and_by_token,
    every_transition_writes_only_its_own_fields_and_keeps_the_token,
    a_sessions_idle_timeout_round_trips_and_sets_the_idle_deadline_of_transitions,
    an_mfa_attempt_is_claimed_up_to_the_limit_and_only_while_pending_mfa,
    completing_mfa_activates_only_a_live_pending_session_and_adds_the_method,
    a_captcha_answer_is_kept_only_while_blocked_on_captcha,
    a_right_captcha_answer_passes_to_active_or_to_the_pending_second_factor,
    a_right_captcha_answer_with_a_wrong_password_ends_the_session,
    wrong_captcha_answers_are_counted_and_the_last_allowed_one_ends_the_session,
    a_captcha_challenge_takes_one_answer,
    a_captcha_answer_to_a_session_not_blocked_or_past_a_deadline_is_not_blocked,
    abandoning_a_login_ends_it_once_and_never_an_active_session,
    a_live_session_is_given_to_another_user_but_not_a_revoked_one,
    touching_moves_activity_forward_only_and_only_on_active_sessions,
    overlapping_touch_batches_and_a_revocation_run_concurrently_without_failing,
    a_session_is_revoked_once,
    revoking_a_users_sessions_answers_only_those_that_were_live,
    a_users_sessions_are_listed_newest_activity_first_in_pages,
    only_active_unexpired_sessions_are_counted,
    racing_mfa_attempts_never_claim_more_than_the_limit,
    racing_right_captcha_answers_pass_exactly_once,
    racing_mfa_completions_and_a_revocation_leave_every_counted_session_revoked,
    a_session_inserted_with_its_audit_record_writes_both_or_neither,
);

/// How long a login step (second factor, CAPTCHA) may wait, in the transitions below.
const LOGIN_STEP: i64 = 300;

/// The clock of a transition at `now`.
fn at(now: i64) -> Transition {
    Transition {
        now,
        login_step_timeout: LOGIN_STEP,
    }
}

/// A session waiting for its second factor `kind`, for one login step.
fn pending_mfa(server: &Server, user: &User, kind: MfaKind) -> Session {
    Session {
        state: SessionState::PendingMfa,
        pending_mfa: Some(kind),
        idle_expires_at: NOW + LOGIN_STEP,
        ..new_session(server, Some(user))
    }
}

/// A login held on a CAPTCHA whose answer is `answer`, with the verdict on its password kept.
fn blocked(server: &Server, user: Option<&User>, answer: &[u8], password_ok: bool) -> Session {
    Session {
        state: SessionState::BlockedCaptcha,
        captcha_answer: Some(SecretHash::of(answer)),
        password_ok,
        idle_expires_at: NOW + LOGIN_STEP,
        ..new_session(server, user)
    }
}

/// Asserts that the store holds `expected`, found by id and by its token.
async fn assert_stored(store: &dyn Store, expected: &Session) {
    let got = stored(store, expected.id).await;
    assert!(
        &got == expected,
        "stored:   {}\nexpected: {}",
        dump(&got),
        dump(expected)
    );
    assert_eq!(
        store
            .session_by_token(&token_hash(expected))
            .await
            .unwrap()
            .as_ref(),
        Some(expected),
        "the session keeps its token"
    );
}

async fn claim(store: &dyn Store, id: Uuid, max_attempts: u32) -> Option<u32> {
    store.claim_mfa_attempt(id, max_attempts).await.unwrap()
}

async fn answer(store: &dyn Store, id: Uuid, answer: &[u8], now: i64) -> CaptchaVerdict {
    store
        .answer_captcha(id, &SecretHash::of(answer), 3, at(now))
        .await
        .unwrap()
}

async fn a_session_round_trips_every_field_by_id_and_by_token(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let session = Session {
        methods: vec![AuthMethod::Pwd, AuthMethod::Otp],
        state: SessionState::PendingMfa,
        client: ClientInfo {
            ip: Some("2001:db8::1".into()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) \u{2603}".into()),
            device_name: Some("Alice's phone".into()),
        },
        pending_mfa: Some(MfaKind::Totp),
        mfa_attempts: 2,
        captcha_answer: Some(SecretHash::of(b"answer")),
        captcha_failures: 3,
        password_ok: true,
        ..new_session(&server, Some(&user))
    };
    store
        .insert_session(&session, &token_hash(&session), None, None)
        .await
        .unwrap();

    assert_eq!(stored(&*store, session.id).await, session);
    assert_eq!(
        store.session_by_token(&token_hash(&session)).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(store.session(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        store
            .session_by_token(&SecretHash::of(b"unknown"))
            .await
            .unwrap(),
        None
    );

    // A login of an unknown user name held on CAPTCHA has no user.
    let anonymous = Session {
        state: SessionState::BlockedCaptcha,
        methods: vec![],
        ..new_session(&server, None)
    };
    let anonymous = given_session(&*store, anonymous).await;
    assert_eq!(stored(&*store, anonymous.id).await, anonymous);

    // The token hash is unique, the session id too.
    let same_token = new_session(&server, Some(&user));
    assert_conflict(
        store
            .insert_session(&same_token, &token_hash(&session), None, None)
            .await,
    );
    assert_conflict(
        store
            .insert_session(&session, &SecretHash::of(b"another token"), None, None)
            .await,
    );
}

async fn every_transition_writes_only_its_own_fields_and_keeps_the_token(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let bystander = given_session(
        &*store,
        Session {
            pending_mfa: Some(MfaKind::Pin),
            ..blocked(&server, None, b"first answer", true)
        },
    )
    .await;

    // The counters hold every u32.
    let counted = given_session(
        &*store,
        Session {
            mfa_attempts: u32::MAX,
            captcha_failures: u32::MAX,
            ..blocked(&server, None, b"answer", false)
        },
    )
    .await;
    assert_stored(&*store, &counted).await;

    // A login of a name not yet bound, held on CAPTCHA, with every field set, walked through
    // its whole life: after each transition the record must be exactly this.
    let session = given_session(
        &*store,
        Session {
            methods: vec![AuthMethod::Pwd],
            absolute_expires_at: NOW + 10_000_000,
            idle_timeout: 2_592_000,
            client: ClientInfo {
                ip: Some("192.0.2.7".into()),
                user_agent: Some("curl/8".into()),
                device_name: Some("laptop".into()),
            },
            pending_mfa: Some(MfaKind::Pin),
            ..blocked(&server, None, b"first answer", true)
        },
    )
    .await;

    assert!(store.set_session_user(session.id, user.id).await.unwrap());
    let bound = Session {
        user_id: Some(user.id),
        ..session.clone()
    };
    assert_stored(&*store, &bound).await;

    assert_eq!(
        answer(&*store, session.id, b"wrong answer", NOW + 1).await,
        CaptchaVerdict::Wrong { ended: false }
    );
    let failed_once = Session {
        captcha_answer: None,
        captcha_failures: 1,
        ..bound
    };
    assert_stored(&*store, &failed_once).await;

    let second = SecretHash::of(b"second answer");
    assert!(store.set_captcha_answer(session.id, &second).await.unwrap());
    let redrawn = Session {
        captcha_answer: Some(second),
        ..failed_once
    };
    assert_stored(&*store, &redrawn).await;

    assert_eq!(
        answer(&*store, session.id, b"second answer", NOW + 2).await,
        CaptchaVerdict::Passed {
            mfa: Some(MfaKind::Pin)
        }
    );
    let solved = Session {
        state: SessionState::PendingMfa,
        captcha_answer: None,
        last_active_at: NOW + 2,
        idle_expires_at: NOW + 2 + LOGIN_STEP,
        ..redrawn
    };
    assert_stored(&*store, &solved).await;

    assert_eq!(claim(&*store, session.id, 5).await, Some(1));
    let claimed = Session {
        mfa_attempts: 1,
        ..solved
    };
    assert_stored(&*store, &claimed).await;

    assert!(store
        .complete_mfa(session.id, AuthMethod::Pin, at(NOW + 3))
        .await
        .unwrap());
    let active = Session {
        state: SessionState::Active,
        methods: vec![AuthMethod::Pwd, AuthMethod::Pin],
        pending_mfa: None,
        last_active_at: NOW + 3,
        idle_expires_at: NOW + 3 + 2_592_000,
        ..claimed
    };
    assert_stored(&*store, &active).await;

    assert!(store.revoke_session(session.id, NOW + 6).await.unwrap());
    let revoked = Session {
        state: SessionState::Revoked,
        revoked_at: Some(NOW + 6),
        ..active
    };
    assert_stored(&*store, &revoked).await;

    assert_stored(&*store, &bystander).await;
    assert_stored(&*store, &counted).await;

    // No transition finds (or creates) a session that does not exist.
    let unknown = Uuid::new_v4();
    assert_eq!(claim(&*store, unknown, 5).await, None);
    assert!(!store
        .complete_mfa(unknown, AuthMethod::Otp, at(NOW))
        .await
        .unwrap());
    assert!(!store
        .set_captcha_answer(unknown, &SecretHash::of(b"answer"))
        .await
        .unwrap());
    assert_eq!(
        answer(&*store, unknown, b"answer", NOW).await,
        CaptchaVerdict::NotBlocked
    );
    assert!(!store.abandon_login(unknown, NOW).await.unwrap());
    assert!(!store.set_session_user(unknown, user.id).await.unwrap());
    assert_eq!(store.session(unknown).await.unwrap(), None);
}

async fn a_sessions_idle_timeout_round_trips_and_sets_the_idle_deadline_of_transitions(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    // A token session (family B) tolerates far longer inactivity than a browser session.
    let token_session = given_session(
        &*store,
        Session {
            idle_timeout: 30 * 86_400,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let browser_session = given_session(
        &*store,
        Session {
            idle_timeout: 1,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    assert_eq!(
        stored(&*store, token_session.id).await.idle_timeout,
        30 * 86_400
    );
    assert_eq!(
        store
            .session_by_token(&token_hash(&browser_session))
            .await
            .unwrap()
            .expect("session")
            .idle_timeout,
        1
    );

    // The column holds every i64.
    let mut extremes = Vec::new();
    for idle_timeout in [i64::MAX, 0, 900] {
        let session = given_session(
            &*store,
            Session {
                idle_timeout,
                ..new_session(&server, Some(&user))
            },
        )
        .await;
        assert_stored(&*store, &session).await;
        extremes.push((session.id, idle_timeout));
    }
    let listed = store.user_sessions(user.id, NOW, 0, 10).await.unwrap();
    let mut expected: HashSet<(Uuid, i64)> = extremes.into_iter().collect();
    expected.insert((token_session.id, 30 * 86_400));
    expected.insert((browser_session.id, 1));
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.id, s.idle_timeout))
            .collect::<HashSet<_>>(),
        expected,
        "listed sessions carry their idle timeout"
    );

    // Becoming active, a session is given its own idle timeout...
    let long = given_session(
        &*store,
        Session {
            idle_timeout: 30 * 86_400,
            absolute_expires_at: NOW + 90 * 86_400,
            ..pending_mfa(&server, &user, MfaKind::Totp)
        },
    )
    .await;
    let short = given_session(
        &*store,
        Session {
            idle_timeout: 1,
            ..pending_mfa(&server, &user, MfaKind::Totp)
        },
    )
    .await;
    for (session, idle_expires_at) in [(&long, NOW + 30 * 86_400), (&short, NOW + 1)] {
        assert!(store
            .complete_mfa(session.id, AuthMethod::Otp, at(NOW))
            .await
            .unwrap());
        assert_eq!(
            stored(&*store, session.id).await.idle_expires_at,
            idle_expires_at
        );
    }
    // ...and while a login step waits, the shorter of its idle timeout and the step's.
    for (idle_timeout, idle_expires_at) in [(30 * 86_400, NOW + LOGIN_STEP), (1, NOW + 1)] {
        let held = given_session(
            &*store,
            Session {
                idle_timeout,
                pending_mfa: Some(MfaKind::Pin),
                ..blocked(&server, Some(&user), b"answer", true)
            },
        )
        .await;
        assert_eq!(
            answer(&*store, held.id, b"answer", NOW).await,
            CaptchaVerdict::Passed {
                mfa: Some(MfaKind::Pin)
            }
        );
        let got = stored(&*store, held.id).await;
        assert_eq!(
            (got.idle_timeout, got.idle_expires_at),
            (idle_timeout, idle_expires_at)
        );
    }

    assert_stored(&*store, &browser_session).await;
    assert_stored(&*store, &token_session).await;
}

async fn an_mfa_attempt_is_claimed_up_to_the_limit_and_only_while_pending_mfa(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;

    let pending = given_session(&*store, pending_mfa(&server, &user, MfaKind::Totp)).await;
    for number in 1..=3 {
        assert_eq!(claim(&*store, pending.id, 3).await, Some(number));
    }
    assert_eq!(
        claim(&*store, pending.id, 3).await,
        None,
        "the attempts are used up"
    );
    assert_eq!(claim(&*store, pending.id, 3).await, None);
    assert_stored(
        &*store,
        &Session {
            mfa_attempts: 3,
            ..pending.clone()
        },
    )
    .await;
    // The limit is the caller's: a higher one gives the next number, a lower one none.
    assert_eq!(claim(&*store, pending.id, 4).await, Some(4));
    assert_eq!(claim(&*store, pending.id, 2).await, None);
    assert_eq!(stored(&*store, pending.id).await.mfa_attempts, 4);

    let none_allowed = given_session(&*store, pending_mfa(&server, &user, MfaKind::Pin)).await;
    assert_eq!(claim(&*store, none_allowed.id, 0).await, None);
    assert_stored(&*store, &none_allowed).await;

    // The count reaches u32::MAX.
    let nearly = given_session(
        &*store,
        Session {
            mfa_attempts: u32::MAX - 1,
            ..pending_mfa(&server, &user, MfaKind::Pin)
        },
    )
    .await;
    assert_eq!(claim(&*store, nearly.id, u32::MAX).await, Some(u32::MAX));
    assert_eq!(claim(&*store, nearly.id, u32::MAX).await, None);
    assert_eq!(stored(&*store, nearly.id).await.mfa_attempts, u32::MAX);

    // Only a session pending MFA has attempts to claim.
    let not_pending = [
        new_session(&server, Some(&user)),
        Session {
            pending_mfa: Some(MfaKind::Totp),
            ..blocked(&server, Some(&user), b"answer", true)
        },
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 1),
            pending_mfa: Some(MfaKind::Totp),
            ..new_session(&server, Some(&user))
        },
    ];
    for session in not_pending {
        let session = given_session(&*store, session).await;
        assert_eq!(
            claim(&*store, session.id, 3).await,
            None,
            "{:?}",
            session.state
        );
        assert_stored(&*store, &session).await;
    }
    // Nor one that left that state: completed, or abandoned.
    let completed = given_session(&*store, pending_mfa(&server, &user, MfaKind::Totp)).await;
    assert_eq!(claim(&*store, completed.id, 3).await, Some(1));
    assert!(store
        .complete_mfa(completed.id, AuthMethod::Otp, at(NOW))
        .await
        .unwrap());
    assert_eq!(claim(&*store, completed.id, 3).await, None);
    assert_eq!(stored(&*store, completed.id).await.mfa_attempts, 1);
    let abandoned = given_session(&*store, pending_mfa(&server, &user, MfaKind::Totp)).await;
    assert!(store.abandon_login(abandoned.id, NOW).await.unwrap());
    assert_eq!(claim(&*store, abandoned.id, 3).await, None);
    assert_eq!(stored(&*store, abandoned.id).await.mfa_attempts, 0);

    assert_eq!(claim(&*store, Uuid::new_v4(), 3).await, None);
}

async fn completing_mfa_activates_only_a_live_pending_session_and_adds_the_method(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let complete = |id: Uuid, method: AuthMethod, now: i64| {
        let store = store.clone();
        async move { store.complete_mfa(id, method, at(now)).await.unwrap() }
    };

    let pending = given_session(
        &*store,
        Session {
            mfa_attempts: 2,
            client: ClientInfo {
                ip: Some("2001:db8::1".into()),
                user_agent: Some("Firefox".into()),
                device_name: None,
            },
            ..pending_mfa(&server, &user, MfaKind::Totp)
        },
    )
    .await;
    assert!(complete(pending.id, AuthMethod::Otp, NOW + 10).await);
    let active = Session {
        state: SessionState::Active,
        methods: vec![AuthMethod::Pwd, AuthMethod::Otp],
        pending_mfa: None,
        last_active_at: NOW + 10,
        idle_expires_at: NOW + 10 + 3600,
        ..pending.clone()
    };
    assert_stored(&*store, &active).await;
    assert!(
        !complete(pending.id, AuthMethod::Otp, NOW + 11).await,
        "a session is completed once"
    );
    assert_stored(&*store, &active).await;

    // The method is added to whatever the session had, even nothing.
    let no_methods = given_session(
        &*store,
        Session {
            methods: vec![],
            ..pending_mfa(&server, &user, MfaKind::Pin)
        },
    )
    .await;
    assert!(complete(no_methods.id, AuthMethod::Pin, NOW).await);
    assert_eq!(
        stored(&*store, no_methods.id).await.methods,
        vec![AuthMethod::Pin]
    );

    // The absolute deadline caps the idle one.
    let capped = given_session(
        &*store,
        Session {
            absolute_expires_at: NOW + 100,
            ..pending_mfa(&server, &user, MfaKind::Totp)
        },
    )
    .await;
    assert!(complete(capped.id, AuthMethod::Otp, NOW).await);
    assert_stored(
        &*store,
        &Session {
            state: SessionState::Active,
            methods: vec![AuthMethod::Pwd, AuthMethod::Otp],
            pending_mfa: None,
            last_active_at: NOW,
            idle_expires_at: NOW + 100,
            ..capped
        },
    )
    .await;

    // A session is live up to, not at, either deadline.
    let last_second = given_session(
        &*store,
        Session {
            idle_expires_at: NOW + 1,
            ..pending_mfa(&server, &user, MfaKind::Totp)
        },
    )
    .await;
    assert!(complete(last_second.id, AuthMethod::Otp, NOW).await);
    for expired in [
        Session {
            idle_expires_at: NOW,
            ..pending_mfa(&server, &user, MfaKind::Totp)
        },
        Session {
            absolute_expires_at: NOW,
            ..pending_mfa(&server, &user, MfaKind::Totp)
        },
    ] {
        let expired = given_session(&*store, expired).await;
        assert!(!complete(expired.id, AuthMethod::Otp, NOW).await, "expired");
        assert_stored(&*store, &expired).await;
    }

    // Only a pending session moves: not an active one, a blocked one, a revoked one.
    for other in [
        new_session(&server, Some(&user)),
        Session {
            pending_mfa: Some(MfaKind::Totp),
            ..blocked(&server, Some(&user), b"answer", true)
        },
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 1),
            pending_mfa: Some(MfaKind::Totp),
            ..new_session(&server, Some(&user))
        },
    ] {
        let other = given_session(&*store, other).await;
        assert!(
            !complete(other.id, AuthMethod::Otp, NOW).await,
            "{:?}",
            other.state
        );
        assert_stored(&*store, &other).await;
    }
    // A revocation that came first wins, as does an abandoned login.
    let revoked = given_session(&*store, pending_mfa(&server, &user, MfaKind::Totp)).await;
    assert!(store.revoke_session(revoked.id, NOW + 1).await.unwrap());
    assert!(!complete(revoked.id, AuthMethod::Otp, NOW + 2).await);
    assert_stored(
        &*store,
        &Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW + 1),
            ..revoked
        },
    )
    .await;
    let abandoned = given_session(&*store, pending_mfa(&server, &user, MfaKind::Pin)).await;
    assert!(store.abandon_login(abandoned.id, NOW + 1).await.unwrap());
    assert!(!complete(abandoned.id, AuthMethod::Pin, NOW + 2).await);
    assert_eq!(
        stored(&*store, abandoned.id).await.state,
        SessionState::Revoked
    );

    assert!(!complete(Uuid::new_v4(), AuthMethod::Otp, NOW).await);
}

async fn a_captcha_answer_is_kept_only_while_blocked_on_captcha(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let one = SecretHash::of(b"one");
    let two = SecretHash::of(b"two");

    let held = given_session(
        &*store,
        Session {
            captcha_answer: None,
            captcha_failures: 1,
            ..blocked(&server, None, b"", true)
        },
    )
    .await;
    assert!(store.set_captcha_answer(held.id, &one).await.unwrap());
    assert_stored(
        &*store,
        &Session {
            captcha_answer: Some(one),
            ..held.clone()
        },
    )
    .await;
    // A new drawing replaces the answer, and only the new one passes.
    assert!(store.set_captcha_answer(held.id, &two).await.unwrap());
    assert_stored(
        &*store,
        &Session {
            captcha_answer: Some(two),
            ..held.clone()
        },
    )
    .await;
    assert_eq!(
        answer(&*store, held.id, b"one", NOW).await,
        CaptchaVerdict::Wrong { ended: false }
    );

    for other in [
        new_session(&server, Some(&user)),
        pending_mfa(&server, &user, MfaKind::Totp),
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 1),
            captcha_answer: Some(one),
            ..new_session(&server, None)
        },
    ] {
        let other = given_session(&*store, other).await;
        assert!(
            !store.set_captcha_answer(other.id, &two).await.unwrap(),
            "{:?}",
            other.state
        );
        assert_stored(&*store, &other).await;
    }
    assert!(!store
        .set_captcha_answer(Uuid::new_v4(), &one)
        .await
        .unwrap());
}

async fn a_right_captcha_answer_passes_to_active_or_to_the_pending_second_factor(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;

    // No second factor: active, for the session's own idle timeout. Failures so far are kept.
    let plain = given_session(
        &*store,
        Session {
            captcha_failures: 2,
            ..blocked(&server, Some(&user), b"answer", true)
        },
    )
    .await;
    assert_eq!(
        answer(&*store, plain.id, b"answer", NOW + 5).await,
        CaptchaVerdict::Passed { mfa: None }
    );
    assert_stored(
        &*store,
        &Session {
            state: SessionState::Active,
            captcha_answer: None,
            last_active_at: NOW + 5,
            idle_expires_at: NOW + 5 + 3600,
            ..plain
        },
    )
    .await;

    // A second factor to come: pending it, for one login step.
    for kind in [MfaKind::Pin, MfaKind::Totp] {
        let held = given_session(
            &*store,
            Session {
                pending_mfa: Some(kind),
                ..blocked(&server, Some(&user), b"answer", true)
            },
        )
        .await;
        assert_eq!(
            answer(&*store, held.id, b"answer", NOW + 5).await,
            CaptchaVerdict::Passed { mfa: Some(kind) }
        );
        assert_stored(
            &*store,
            &Session {
                state: SessionState::PendingMfa,
                captcha_answer: None,
                last_active_at: NOW + 5,
                idle_expires_at: NOW + 5 + LOGIN_STEP,
                ..held
            },
        )
        .await;
    }

    // The absolute deadline caps both.
    for pending in [None, Some(MfaKind::Totp)] {
        let capped = given_session(
            &*store,
            Session {
                absolute_expires_at: NOW + 100,
                pending_mfa: pending,
                ..blocked(&server, Some(&user), b"answer", true)
            },
        )
        .await;
        assert_eq!(
            answer(&*store, capped.id, b"answer", NOW + 5).await,
            CaptchaVerdict::Passed { mfa: pending }
        );
        assert_eq!(
            stored(&*store, capped.id).await.idle_expires_at,
            NOW + 100,
            "{pending:?}"
        );
    }
}

async fn a_right_captcha_answer_with_a_wrong_password_ends_the_session(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;

    for held in [
        blocked(&server, Some(&user), b"answer", false),
        // A name that does not exist: its password is wrong too.
        blocked(&server, None, b"answer", false),
        // A wrong password is told before any second factor is asked.
        Session {
            pending_mfa: Some(MfaKind::Totp),
            ..blocked(&server, Some(&user), b"answer", false)
        },
    ] {
        let held = given_session(&*store, held).await;
        assert_eq!(
            answer(&*store, held.id, b"answer", NOW + 5).await,
            CaptchaVerdict::PasswordWrong
        );
        let got = stored(&*store, held.id).await;
        assert_eq!(
            got,
            Session {
                state: SessionState::Revoked,
                revoked_at: Some(NOW + 5),
                captcha_answer: None,
                // When an ended login was last active is not part of the contract.
                last_active_at: got.last_active_at,
                ..held.clone()
            }
        );
        assert!(!got.is_live(NOW + 5));
        assert_eq!(
            answer(&*store, held.id, b"answer", NOW + 6).await,
            CaptchaVerdict::NotBlocked,
            "an ended login takes no more answers"
        );
        assert_eq!(stored(&*store, held.id).await, got);
    }
}

async fn wrong_captcha_answers_are_counted_and_the_last_allowed_one_ends_the_session(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;

    let held = given_session(&*store, blocked(&server, Some(&user), b"answer", true)).await;
    assert_eq!(
        answer(&*store, held.id, b"wrong", NOW + 1).await,
        CaptchaVerdict::Wrong { ended: false }
    );
    // The challenge is used up and the failure counted; nothing else moves.
    assert_stored(
        &*store,
        &Session {
            captcha_answer: None,
            captcha_failures: 1,
            ..held.clone()
        },
    )
    .await;
    assert!(store
        .set_captcha_answer(held.id, &SecretHash::of(b"answer 2"))
        .await
        .unwrap());
    assert_eq!(
        answer(&*store, held.id, b"wrong", NOW + 2).await,
        CaptchaVerdict::Wrong { ended: false }
    );
    assert_eq!(stored(&*store, held.id).await.captcha_failures, 2);
    assert!(store
        .set_captcha_answer(held.id, &SecretHash::of(b"answer 3"))
        .await
        .unwrap());
    assert_eq!(
        answer(&*store, held.id, b"wrong", NOW + 3).await,
        CaptchaVerdict::Wrong { ended: true },
        "the third of three allowed failures ends the login"
    );
    let ended = Session {
        state: SessionState::Revoked,
        revoked_at: Some(NOW + 3),
        captcha_answer: None,
        captcha_failures: 3,
        ..held.clone()
    };
    assert_stored(&*store, &ended).await;
    assert_eq!(
        answer(&*store, held.id, b"answer 3", NOW + 4).await,
        CaptchaVerdict::NotBlocked
    );
    assert_stored(&*store, &ended).await;

    // The limit counts the failures made before; a limit of one ends at the first.
    for (failures, max_failures) in [(4, 3), (0, 1)] {
        let held = given_session(
            &*store,
            Session {
                captcha_failures: failures,
                ..blocked(&server, Some(&user), b"answer", true)
            },
        )
        .await;
        assert_eq!(
            store
                .answer_captcha(held.id, &SecretHash::of(b"wrong"), max_failures, at(NOW))
                .await
                .unwrap(),
            CaptchaVerdict::Wrong { ended: true }
        );
        assert_stored(
            &*store,
            &Session {
                state: SessionState::Revoked,
                revoked_at: Some(NOW),
                captcha_answer: None,
                captcha_failures: failures + 1,
                ..held
            },
        )
        .await;
    }
}

async fn a_captcha_challenge_takes_one_answer(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;

    // A wrong answer uses the challenge up: the right one after it is wrong too (none drawn).
    let held = given_session(&*store, blocked(&server, Some(&user), b"answer", true)).await;
    assert_eq!(
        answer(&*store, held.id, b"wrong", NOW).await,
        CaptchaVerdict::Wrong { ended: false }
    );
    assert_eq!(
        answer(&*store, held.id, b"answer", NOW).await,
        CaptchaVerdict::Wrong { ended: false }
    );
    assert_stored(
        &*store,
        &Session {
            captcha_answer: None,
            captcha_failures: 2,
            ..held.clone()
        },
    )
    .await;

    // A new drawing takes one answer again; the right one passes once.
    assert!(store
        .set_captcha_answer(held.id, &SecretHash::of(b"answer"))
        .await
        .unwrap());
    assert_eq!(
        answer(&*store, held.id, b"answer", NOW + 1).await,
        CaptchaVerdict::Passed { mfa: None }
    );
    let active = Session {
        state: SessionState::Active,
        captcha_answer: None,
        captcha_failures: 2,
        last_active_at: NOW + 1,
        idle_expires_at: NOW + 1 + 3600,
        ..held
    };
    assert_stored(&*store, &active).await;
    assert_eq!(
        answer(&*store, active.id, b"answer", NOW + 2).await,
        CaptchaVerdict::NotBlocked,
        "the same answer again finds the session no longer blocked"
    );
    assert_stored(&*store, &active).await;
}

async fn a_captcha_answer_to_a_session_not_blocked_or_past_a_deadline_is_not_blocked(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;

    let cases = [
        (
            "active",
            Session {
                captcha_answer: Some(SecretHash::of(b"answer")),
                ..new_session(&server, Some(&user))
            },
        ),
        (
            "pending MFA",
            Session {
                captcha_answer: Some(SecretHash::of(b"answer")),
                ..pending_mfa(&server, &user, MfaKind::Totp)
            },
        ),
        (
            "revoked",
            Session {
                state: SessionState::Revoked,
                revoked_at: Some(NOW - 1),
                ..blocked(&server, Some(&user), b"answer", true)
            },
        ),
        (
            "idle expired",
            Session {
                idle_expires_at: NOW,
                ..blocked(&server, Some(&user), b"answer", true)
            },
        ),
        (
            "too old",
            Session {
                absolute_expires_at: NOW,
                ..blocked(&server, Some(&user), b"answer", true)
            },
        ),
    ];
    for (label, session) in cases {
        let session = given_session(&*store, session).await;
        for given in [&b"answer"[..], b"wrong"] {
            assert_eq!(
                answer(&*store, session.id, given, NOW).await,
                CaptchaVerdict::NotBlocked,
                "{label}"
            );
        }
        assert_stored(&*store, &session).await;
    }

    // Up to its last live second a held session takes its answer.
    let last_second = given_session(
        &*store,
        Session {
            idle_expires_at: NOW + 1,
            ..blocked(&server, Some(&user), b"answer", true)
        },
    )
    .await;
    assert_eq!(
        answer(&*store, last_second.id, b"answer", NOW).await,
        CaptchaVerdict::Passed { mfa: None }
    );
}

async fn abandoning_a_login_ends_it_once_and_never_an_active_session(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;

    for login in [
        pending_mfa(&server, &user, MfaKind::Totp),
        blocked(&server, Some(&user), b"answer", true),
        blocked(&server, None, b"answer", false),
    ] {
        let login = given_session(&*store, login).await;
        assert!(store.abandon_login(login.id, NOW + 1).await.unwrap());
        let ended = Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW + 1),
            ..login.clone()
        };
        assert_stored(&*store, &ended).await;
        assert!(
            !store.abandon_login(login.id, NOW + 2).await.unwrap(),
            "a login is abandoned once"
        );
        assert_stored(&*store, &ended).await;
    }

    let active = given_session(&*store, new_session(&server, Some(&user))).await;
    assert!(!store.abandon_login(active.id, NOW + 1).await.unwrap());
    assert_stored(&*store, &active).await;
    // Nor one that became active through its second factor or its CAPTCHA.
    let completed = given_session(&*store, pending_mfa(&server, &user, MfaKind::Pin)).await;
    assert!(store
        .complete_mfa(completed.id, AuthMethod::Pin, at(NOW))
        .await
        .unwrap());
    let solved = given_session(&*store, blocked(&server, Some(&user), b"answer", true)).await;
    assert_eq!(
        answer(&*store, solved.id, b"answer", NOW).await,
        CaptchaVerdict::Passed { mfa: None }
    );
    for id in [completed.id, solved.id] {
        let before = stored(&*store, id).await;
        assert_eq!(before.state, SessionState::Active);
        assert!(!store.abandon_login(id, NOW + 1).await.unwrap());
        assert_eq!(stored(&*store, id).await, before);
    }

    let revoked = given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 5),
            pending_mfa: Some(MfaKind::Totp),
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    assert!(!store.abandon_login(revoked.id, NOW).await.unwrap());
    assert_stored(&*store, &revoked).await;
    assert!(!store.abandon_login(Uuid::new_v4(), NOW).await.unwrap());
}

async fn a_live_session_is_given_to_another_user_but_not_a_revoked_one(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;

    // A login of a name that did not exist yet, bound once the name is registered.
    let held = given_session(&*store, blocked(&server, None, b"answer", true)).await;
    assert!(store.set_session_user(held.id, alice.id).await.unwrap());
    assert_stored(
        &*store,
        &Session {
            user_id: Some(alice.id),
            ..held.clone()
        },
    )
    .await;

    let alices = given_session(&*store, new_session(&server, Some(&alice))).await;
    let pending = given_session(&*store, pending_mfa(&server, &alice, MfaKind::Totp)).await;
    for session in [&alices, &pending] {
        assert!(store.set_session_user(session.id, bob.id).await.unwrap());
        assert_stored(
            &*store,
            &Session {
                user_id: Some(bob.id),
                ..session.clone()
            },
        )
        .await;
    }
    // It is now listed, counted and revoked as the new user's.
    let moved = Session {
        user_id: Some(bob.id),
        ..alices.clone()
    };
    assert_eq!(
        store.user_sessions(bob.id, NOW, 0, 10).await.unwrap(),
        vec![moved]
    );
    assert!(store
        .user_sessions(alice.id, NOW, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.count_user_sessions(alice.id, NOW).await.unwrap(), 0);
    assert_eq!(store.count_user_sessions(bob.id, NOW).await.unwrap(), 1);

    let revoked = given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 1),
            ..new_session(&server, Some(&alice))
        },
    )
    .await;
    assert!(!store.set_session_user(revoked.id, bob.id).await.unwrap());
    assert_stored(&*store, &revoked).await;
    assert!(!store
        .set_session_user(Uuid::new_v4(), bob.id)
        .await
        .unwrap());

    // All but one (a pending session goes too), then the one.
    let but_one = store
        .revoke_user_sessions(bob.id, Some(alices.id), NOW)
        .await
        .unwrap();
    assert_eq!(but_one, vec![pending.id]);
    let rest = store.revoke_user_sessions(bob.id, None, NOW).await.unwrap();
    assert_eq!(rest, vec![alices.id]);
}

async fn racing_mfa_attempts_never_claim_more_than_the_limit(db: TestDb) {
    const MAX: u32 = 5;
    const RACERS: usize = 12;
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;

    for round in 0..ROUNDS {
        let session = given_session(&*store, pending_mfa(&server, &user, MfaKind::Pin)).await;
        let id = session.id;
        let claims = at_once(RACERS, |_| {
            let store = store.clone();
            async move { store.claim_mfa_attempt(id, MAX).await.unwrap() }
        })
        .await;
        let mut numbers: Vec<u32> = claims.iter().flatten().copied().collect();
        numbers.sort_unstable();
        assert_eq!(
            numbers,
            (1..=MAX).collect::<Vec<_>>(),
            "round {round}: each number up to the limit is handed out once: {claims:?}"
        );
        assert_stored(
            &*store,
            &Session {
                mfa_attempts: MAX,
                ..session
            },
        )
        .await;
    }
}

async fn racing_right_captcha_answers_pass_exactly_once(db: TestDb) {
    const RACERS: usize = 8;
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;

    for round in 0..ROUNDS {
        let mfa = if round % 2 == 0 {
            None
        } else {
            Some(MfaKind::Totp)
        };
        let session = given_session(
            &*store,
            Session {
                pending_mfa: mfa,
                ..blocked(&server, Some(&user), b"answer", true)
            },
        )
        .await;
        let id = session.id;
        let verdicts = at_once(RACERS, |i| {
            let store = store.clone();
            let now = NOW + i64::try_from(i).unwrap();
            async move {
                store
                    .answer_captcha(id, &SecretHash::of(b"answer"), 3, at(now))
                    .await
                    .unwrap()
            }
        })
        .await;
        let passed = CaptchaVerdict::Passed { mfa };
        assert_eq!(
            verdicts.iter().filter(|v| **v == passed).count(),
            1,
            "round {round}: exactly one answer passes: {verdicts:?}"
        );
        assert!(
            verdicts
                .iter()
                .all(|v| *v == passed || *v == CaptchaVerdict::NotBlocked),
            "round {round}: the others find the session no longer blocked: {verdicts:?}"
        );
        let got = stored(&*store, id).await;
        let state = if mfa.is_some() {
            SessionState::PendingMfa
        } else {
            SessionState::Active
        };
        assert_eq!(
            (got.state, got.captcha_answer, got.captcha_failures),
            (state, None, 0),
            "round {round}"
        );
    }
}

async fn racing_mfa_completions_and_a_revocation_leave_every_counted_session_revoked(db: TestDb) {
    const PENDING: usize = 6;
    let store = open(&db).await;
    let server = given_server(&*store).await;

    enum Outcome {
        Completed(Uuid, bool),
        Revoked(Vec<Uuid>),
    }

    for round in 0..ROUNDS {
        let user = given_user(&*store, &server, &format!("user{round}")).await;
        let mut ids = Vec::new();
        for _ in 0..PENDING {
            let session = given_session(&*store, pending_mfa(&server, &user, MfaKind::Totp)).await;
            ids.push(session.id);
        }
        let user_id = user.id;
        // Racer i completes session i; the last one revokes all of the user's sessions.
        let outcomes = at_once(PENDING + 1, |i| {
            let store = store.clone();
            let target = ids.get(i).copied();
            async move {
                match target {
                    Some(id) => Outcome::Completed(
                        id,
                        store
                            .complete_mfa(id, AuthMethod::Otp, at(NOW))
                            .await
                            .unwrap(),
                    ),
                    None => Outcome::Revoked(
                        store
                            .revoke_user_sessions(user_id, None, NOW)
                            .await
                            .unwrap(),
                    ),
                }
            }
        })
        .await;

        let mut revoked = HashSet::new();
        let mut completed = HashSet::new();
        for outcome in outcomes {
            match outcome {
                Outcome::Revoked(ids) => revoked.extend(ids),
                Outcome::Completed(id, true) => {
                    completed.insert(id);
                }
                Outcome::Completed(_, false) => {}
            }
        }
        for id in &revoked {
            assert_eq!(
                stored(&*store, *id).await.state,
                SessionState::Revoked,
                "round {round}: a session counted as revoked stays revoked"
            );
        }
        // Pending or just completed, every session was live when the revocation ran: all are
        // counted, none is left working.
        assert_eq!(
            revoked,
            ids.iter().copied().collect::<HashSet<_>>(),
            "round {round}"
        );
        for id in &ids {
            let got = stored(&*store, *id).await;
            assert_eq!(
                (got.state, got.revoked_at),
                (SessionState::Revoked, Some(NOW))
            );
            // A completion that answered true added its method; one that answered false
            // (the revocation came first) changed nothing.
            let methods = if completed.contains(id) {
                vec![AuthMethod::Pwd, AuthMethod::Otp]
            } else {
                vec![AuthMethod::Pwd]
            };
            assert_eq!(got.methods, methods, "round {round}");
            assert_eq!(got.pending_mfa.is_none(), completed.contains(id));
        }
    }
}

async fn touching_moves_activity_forward_only_and_only_on_active_sessions(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let active = given_session(&*store, new_session(&server, Some(&user))).await;
    let other = given_session(&*store, new_session(&server, Some(&user))).await;
    let pending = given_session(
        &*store,
        Session {
            state: SessionState::PendingMfa,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let revoked = given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 1),
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let touch = |s: &Session, last_active_at: i64| SessionTouch {
        id: s.id,
        last_active_at,
        idle_expires_at: last_active_at + 900,
    };

    store.touch_sessions(&[]).await.unwrap();
    store
        .touch_sessions(&[
            touch(&active, NOW),
            touch(&other, NOW + 7),
            touch(&pending, NOW),
            touch(&revoked, NOW),
            SessionTouch {
                id: Uuid::new_v4(),
                last_active_at: NOW,
                idle_expires_at: NOW + 900,
            },
        ])
        .await
        .unwrap();
    let got = stored(&*store, active.id).await;
    assert_eq!((got.last_active_at, got.idle_expires_at), (NOW, NOW + 3600));
    let got = stored(&*store, other.id).await;
    assert_eq!(
        (got.last_active_at, got.idle_expires_at),
        (NOW + 7, NOW + 3600)
    );
    assert_eq!(stored(&*store, pending.id).await, pending);
    assert_eq!(stored(&*store, revoked.id).await, revoked);

    // Each value moves forward on its own; an older touch changes nothing.
    store
        .touch_sessions(&[
            SessionTouch {
                id: active.id,
                last_active_at: NOW - 30,
                idle_expires_at: NOW + 4000,
            },
            touch(&other, NOW + 1),
        ])
        .await
        .unwrap();
    let got = stored(&*store, active.id).await;
    assert_eq!((got.last_active_at, got.idle_expires_at), (NOW, NOW + 4000));
    let got = stored(&*store, other.id).await;
    assert_eq!(
        (got.last_active_at, got.idle_expires_at),
        (NOW + 7, NOW + 3600)
    );

    // The same session twice in one batch ends at the later values, in either order.
    store
        .touch_sessions(&[touch(&active, NOW + 4000), touch(&active, NOW + 3500)])
        .await
        .unwrap();
    let got = stored(&*store, active.id).await;
    assert_eq!(
        (got.last_active_at, got.idle_expires_at),
        (NOW + 4000, NOW + 4900)
    );
    let untouched = Session {
        last_active_at: NOW + 4000,
        idle_expires_at: NOW + 4900,
        ..active.clone()
    };
    assert_eq!(got, untouched, "a touch changes nothing else");
}

async fn overlapping_touch_batches_and_a_revocation_run_concurrently_without_failing(db: TestDb) {
    // Several processes flush their coalesced touches for the same sessions in whatever order
    // they saw them, while a user logs out everywhere: no flush may fail (e.g. on a deadlock).
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    let mut ids = Vec::new();
    for i in 0..60 {
        let owner = if i % 2 == 0 { &alice } else { &bob };
        ids.push(
            given_session(&*store, new_session(&server, Some(owner)))
                .await
                .id,
        );
    }

    let flushers: Vec<_> = (0..4i64)
        .map(|flusher| {
            let store = store.clone();
            let mut ids = ids.clone();
            if flusher % 2 == 1 {
                ids.reverse();
            }
            tokio::spawn(async move {
                for round in 0..10i64 {
                    let at = NOW + round * 10 + flusher;
                    let touches: Vec<SessionTouch> = ids
                        .iter()
                        .map(|&id| SessionTouch {
                            id,
                            last_active_at: at,
                            idle_expires_at: at + 3600,
                        })
                        .collect();
                    store.touch_sessions(&touches).await?;
                }
                Ok::<(), StoreError>(())
            })
        })
        .collect();
    let revoked = store
        .revoke_user_sessions(alice.id, None, NOW)
        .await
        .unwrap();
    for flusher in flushers {
        flusher.await.unwrap().unwrap();
    }

    assert_eq!(revoked.len(), 30);
    for id in ids {
        let got = stored(&*store, id).await;
        if got.user_id == Some(bob.id) {
            assert_eq!(got.state, SessionState::Active);
            assert_eq!(got.last_active_at, NOW + 93, "the latest touch wins");
            assert_eq!(got.idle_expires_at, NOW + 93 + 3600);
        } else {
            assert_eq!(got.state, SessionState::Revoked);
        }
    }
}

async fn a_session_is_revoked_once(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let session = given_session(&*store, new_session(&server, None)).await;

    assert!(store.revoke_session(session.id, NOW + 1).await.unwrap());
    assert!(!store.revoke_session(session.id, NOW + 2).await.unwrap());
    assert!(!store.revoke_session(Uuid::new_v4(), NOW).await.unwrap());

    let got = stored(&*store, session.id).await;
    assert_eq!(got.state, SessionState::Revoked);
    assert_eq!(got.revoked_at, Some(NOW + 1), "the first revocation's time");
    assert!(!got.is_live(NOW));
}

async fn revoking_a_users_sessions_answers_only_those_that_were_live(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let other_user = given_user(&*store, &server, "bob").await;
    let active = given_session(&*store, new_session(&server, Some(&user))).await;
    let pending = given_session(
        &*store,
        Session {
            state: SessionState::PendingMfa,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let idle = given_session(
        &*store,
        Session {
            idle_expires_at: NOW,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let too_old = given_session(
        &*store,
        Session {
            absolute_expires_at: NOW - 1,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let revoked = given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 5),
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let someone_else = given_session(&*store, new_session(&server, Some(&other_user))).await;

    let ids: HashSet<Uuid> = store
        .revoke_user_sessions(user.id, None, NOW)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids, HashSet::from([active.id, pending.id]));

    for id in [active.id, pending.id] {
        let got = stored(&*store, id).await;
        assert_eq!(got.state, SessionState::Revoked);
        assert_eq!(got.revoked_at, Some(NOW));
    }
    assert_eq!(stored(&*store, idle.id).await, idle);
    assert_eq!(stored(&*store, too_old.id).await, too_old);
    assert_eq!(stored(&*store, revoked.id).await, revoked);
    assert_eq!(stored(&*store, someone_else.id).await, someone_else);

    assert!(store
        .revoke_user_sessions(user.id, None, NOW + 1)
        .await
        .unwrap()
        .is_empty());
}

async fn a_users_sessions_are_listed_newest_activity_first_in_pages(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let other_user = given_user(&*store, &server, "bob").await;
    let mut listed = Vec::new();
    for last_active_at in [NOW - 50, NOW - 10, NOW - 40, NOW - 20, NOW - 30] {
        let session = Session {
            last_active_at,
            ..new_session(&server, Some(&user))
        };
        listed.push(given_session(&*store, session).await);
    }
    listed.sort_by_key(|s| std::cmp::Reverse(s.last_active_at));
    for hidden in [
        Session {
            state: SessionState::PendingMfa,
            ..new_session(&server, Some(&user))
        },
        Session {
            state: SessionState::BlockedCaptcha,
            ..new_session(&server, Some(&user))
        },
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 1),
            ..new_session(&server, Some(&user))
        },
        Session {
            idle_expires_at: NOW,
            ..new_session(&server, Some(&user))
        },
        Session {
            absolute_expires_at: NOW,
            ..new_session(&server, Some(&user))
        },
        new_session(&server, Some(&other_user)),
    ] {
        given_session(&*store, hidden).await;
    }

    let all = store.user_sessions(user.id, NOW, 0, 100).await.unwrap();
    assert_eq!(all, listed);
    let unbounded = store
        .user_sessions(user.id, NOW, 0, u64::MAX)
        .await
        .unwrap();
    assert_eq!(unbounded, listed);

    let mut ids = store.user_session_ids(user.id, NOW).await.unwrap();
    ids.sort();
    let mut expected: Vec<Uuid> = listed.iter().map(|s| s.id).collect();
    expected.sort();
    assert_eq!(ids, expected);

    let page = store.user_sessions(user.id, NOW, 1, 2).await.unwrap();
    assert_eq!(page, listed[1..3].to_vec());
    let tail = store.user_sessions(user.id, NOW, 4, 2).await.unwrap();
    assert_eq!(tail, listed[4..].to_vec());
    assert!(store
        .user_sessions(user.id, NOW, 5, 2)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .user_sessions(user.id, NOW, 0, 0)
        .await
        .unwrap()
        .is_empty());
}

async fn only_active_unexpired_sessions_are_counted(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    assert_eq!(store.count_active_sessions(NOW).await.unwrap(), 0);
    assert_eq!(store.count_user_sessions(alice.id, NOW).await.unwrap(), 0);

    given_session(&*store, new_session(&server, Some(&alice))).await;
    given_session(&*store, new_session(&server, Some(&alice))).await;
    given_session(&*store, new_session(&server, Some(&bob))).await;
    given_session(
        &*store,
        Session {
            idle_expires_at: NOW + 10,
            ..new_session(&server, Some(&bob))
        },
    )
    .await;
    given_session(
        &*store,
        Session {
            state: SessionState::PendingMfa,
            ..new_session(&server, Some(&alice))
        },
    )
    .await;
    given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW),
            ..new_session(&server, Some(&alice))
        },
    )
    .await;

    assert_eq!(store.count_user_sessions(alice.id, NOW).await.unwrap(), 2);
    assert_eq!(store.count_user_sessions(bob.id, NOW).await.unwrap(), 2);
    assert_eq!(store.count_active_sessions(NOW).await.unwrap(), 4);
    // At a session's idle deadline it is no longer counted.
    assert_eq!(
        store.count_user_sessions(bob.id, NOW + 10).await.unwrap(),
        1
    );
    assert_eq!(store.count_active_sessions(NOW + 10).await.unwrap(), 3);
    assert_eq!(
        store
            .count_user_sessions(Uuid::new_v4(), NOW)
            .await
            .unwrap(),
        0
    );
}

async fn a_session_inserted_with_its_audit_record_writes_both_or_neither(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let session = new_session(&server, Some(&user));
    let record = |session: &Session| AuditRecord {
        at: NOW,
        server_id: server.id.clone(),
        kind: "login_succeeded".into(),
        userid: Some("alice".into()),
        session_id: Some(session.id),
        ip: Some("192.0.2.7".into()),
        detail: Some("via=scram".into()),
    };
    store
        .insert_session(
            &session,
            &token_hash(&session),
            Some(&SecretHash::of(b"refresh")),
            Some(&record(&session)),
        )
        .await
        .unwrap();
    assert_eq!(stored(&*store, session.id).await, session);
    let audited = |store: std::sync::Arc<dyn Store>| {
        let server = server.id.clone();
        async move {
            store
                .audit_events(&server, &AuditQuery::newest(10))
                .await
                .unwrap()
        }
    };
    assert_eq!(audited(store.clone()).await, [record(&session)]);

    // A session that cannot be inserted (its token is taken) leaves no record behind.
    let other = new_session(&server, Some(&user));
    assert_conflict(
        store
            .insert_session(&other, &token_hash(&session), None, Some(&record(&other)))
            .await,
    );
    assert_eq!(store.session(other.id).await.unwrap(), None);
    assert_eq!(audited(store.clone()).await, [record(&session)]);
}
