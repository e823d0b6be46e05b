//! `UserStore`: users, unique per server, and their credentials, each written on its own; the
//! TOTP step consumed once; a SCRAM verifier re-derived only over the one it replaces; the
//! iteration counts in use.

use latchkey_core::model::{Account, MfaKind, PasswordHashes, ScramVerifier, UserCredentials};
use latchkey_core::UserId;
use uuid::Uuid;

use super::{
    assert_conflict, assert_not_found, at_once, given_account, given_server, given_session,
    given_user, new_account, new_server, new_session, new_user, open, stored, stored_account,
    token_hash, NOW, ROUNDS,
};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    user_names_are_unique_per_server_and_listed_in_byte_order,
    deleting_a_user_deletes_its_sessions,
    deleting_a_user_unbinds_its_accounts,
    credentials_round_trip_password_totp_secret_and_pin,
    credentials_are_found_by_user_id_as_by_name,
    credential_updates_of_an_unknown_user_are_not_found,
    a_totp_step_is_accepted_once_and_never_an_older_one,
    a_scram_verifier_is_replaced_only_over_the_one_it_replaces,
    racing_verifier_replacements_and_password_changes_leave_the_password,
    scram_iteration_counts_count_users_with_a_password_per_server,
);

fn hashes(argon2: &str, iterations: u32, fill: u8) -> PasswordHashes {
    PasswordHashes {
        argon2: argon2.to_owned(),
        scram: ScramVerifier {
            salt: vec![fill, 0, 0xff, fill.wrapping_add(1)],
            iterations,
            stored_key: [fill; 32],
            server_key: [fill ^ 0xff; 32],
        },
    }
}

async fn user_names_are_unique_per_server_and_listed_in_byte_order(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = new_server("other", NOW + 1);
    store.insert_server(&other_server).await.unwrap();

    let alice = given_user(&*store, &server, "alice@example.com").await;
    let bob = given_user(&*store, &server, "Bob").await;
    let zoe = given_user(&*store, &server, "_zoe").await;
    assert_conflict(
        store
            .insert_user(&new_user(&server, "alice@example.com"))
            .await,
    );
    let alice_elsewhere = given_user(&*store, &other_server, "alice@example.com").await;

    let name = UserId::parse("alice@example.com").unwrap();
    assert_eq!(
        store.user(&server.id, &name).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.user(&other_server.id, &name).await.unwrap(),
        Some(alice_elsewhere)
    );
    assert_eq!(
        store
            .user(&server.id, &UserId::parse("ALICE@example.com").unwrap())
            .await
            .unwrap(),
        None,
        "user names compare exactly"
    );
    assert_eq!(store.user_by_id(bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(store.user_by_id(Uuid::new_v4()).await.unwrap(), None);

    // Byte order ("B" < "_" < "a"), whatever the database's locale.
    assert_eq!(
        store.users(&server.id).await.unwrap(),
        vec![bob, zoe, alice]
    );
}

async fn deleting_a_user_deletes_its_sessions(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let other = given_user(&*store, &server, "bob").await;
    let session = given_session(&*store, new_session(&server, Some(&user))).await;
    let kept = given_session(&*store, new_session(&server, Some(&other))).await;

    assert!(store.delete_user(user.id).await.unwrap());
    assert!(!store.delete_user(user.id).await.unwrap());

    assert_eq!(store.user_by_id(user.id).await.unwrap(), None);
    assert_eq!(store.session(session.id).await.unwrap(), None);
    assert_eq!(
        store.session_by_token(&token_hash(&session)).await.unwrap(),
        None
    );
    assert_eq!(stored(&*store, kept.id).await, kept);
}

async fn deleting_a_user_unbinds_its_accounts(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    let alices = [
        given_account(&*store, new_account(&server, 1, Some(&alice), NOW)).await,
        given_account(&*store, new_account(&server, 2, Some(&alice), NOW)).await,
    ];
    let bobs = given_account(&*store, new_account(&server, 3, Some(&bob), NOW)).await;

    assert!(store.delete_user(alice.id).await.unwrap());

    // The accounts stay (the app is still enrolled), bound to no one.
    for account in &alices {
        assert_eq!(
            stored_account(&*store, account).await,
            Account {
                user_id: None,
                ..account.clone()
            }
        );
    }
    assert!(store.user_accounts(alice.id).await.unwrap().is_empty());
    assert_eq!(store.user_accounts(bob.id).await.unwrap(), vec![bobs]);
}

async fn credentials_round_trip_password_totp_secret_and_pin(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let name = user.userid.clone();

    let fresh = store
        .credentials(&server.id, &name)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(fresh.user, user);
    assert_eq!(fresh.password, None);
    assert_eq!(fresh.totp_secret, None);
    assert_eq!(fresh.totp_last_step, -1);
    assert_eq!(fresh.pin_hash, None);
    assert_eq!(fresh.second_factor(), None);

    // u32::MAX iterations: the column must hold every u32.
    let first = hashes("$argon2id$v=19$m=19456,t=2,p=1$first", u32::MAX, 7);
    store.set_password(user.id, &first).await.unwrap();
    let second = hashes("$argon2id$v=19$m=19456,t=2,p=1$second", 600_000, 0x80);
    store.set_password(user.id, &second).await.unwrap();
    store
        .set_totp_secret(user.id, Some(&[0, 1, 2, 0xfe, 0xff]))
        .await
        .unwrap();
    store
        .set_pin_hash(user.id, Some("$argon2id$v=19$pin"))
        .await
        .unwrap();

    let set = store
        .credentials(&server.id, &name)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(set.password, Some(second));
    assert_eq!(set.totp_secret.as_deref(), Some(&[0, 1, 2, 0xfe, 0xff][..]));
    assert_eq!(set.pin_hash.as_deref(), Some("$argon2id$v=19$pin"));
    assert_eq!(set.second_factor(), Some(MfaKind::Totp));

    store.set_password(user.id, &first).await.unwrap();
    store.set_totp_secret(user.id, None).await.unwrap();
    let pin_only = store
        .credentials(&server.id, &name)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(pin_only.password, Some(first));
    assert_eq!(pin_only.totp_secret, None);
    assert_eq!(pin_only.second_factor(), Some(MfaKind::Pin));

    store.set_pin_hash(user.id, None).await.unwrap();
    let none = store
        .credentials(&server.id, &name)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(none.pin_hash, None);
    assert_eq!(none.second_factor(), None);

    assert!(store
        .credentials(&server.id, &UserId::parse("nobody").unwrap())
        .await
        .unwrap()
        .is_none());
}

async fn credential_updates_of_an_unknown_user_are_not_found(db: TestDb) {
    let store = open(&db).await;
    let nobody = Uuid::new_v4();
    assert_not_found(store.set_password(nobody, &hashes("x", 1, 1)).await);
    assert_not_found(store.set_totp_secret(nobody, Some(b"secret")).await);
    assert_not_found(store.set_totp_secret(nobody, None).await);
    assert_not_found(store.set_pin_hash(nobody, Some("pin")).await);
    assert_not_found(store.set_pin_hash(nobody, None).await);
    assert!(!store.consume_totp_step(nobody, 1).await.unwrap());
    let v = hashes("x", 1, 1).scram;
    assert!(!store.set_scram_verifier(nobody, &v.salt, &v).await.unwrap());
}

async fn a_totp_step_is_accepted_once_and_never_an_older_one(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    store
        .set_totp_secret(user.id, Some(b"0123456789"))
        .await
        .unwrap();

    assert!(store.consume_totp_step(user.id, 100).await.unwrap());
    assert!(
        !store.consume_totp_step(user.id, 100).await.unwrap(),
        "replay"
    );
    assert!(
        !store.consume_totp_step(user.id, 99).await.unwrap(),
        "older"
    );
    assert!(
        store.consume_totp_step(user.id, 101).await.unwrap(),
        "newer"
    );
    let creds = store
        .credentials(&server.id, &user.userid)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(creds.totp_last_step, 101);

    // A new secret starts a new sequence.
    store
        .set_totp_secret(user.id, Some(b"another secret"))
        .await
        .unwrap();
    assert!(store.consume_totp_step(user.id, 50).await.unwrap());

    // Racing checks of one code: exactly one wins.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.consume_totp_step(user.id, 60).await })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        if racer.await.unwrap().unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// The credentials as the store answers them, in one comparable value.
fn fields(
    c: &UserCredentials,
) -> (
    latchkey_core::model::User,
    Option<PasswordHashes>,
    Option<Vec<u8>>,
    i64,
    Option<String>,
) {
    (
        c.user.clone(),
        c.password.clone(),
        c.totp_secret.clone(),
        c.totp_last_step,
        c.pin_hash.clone(),
    )
}

async fn credentials_are_found_by_user_id_as_by_name(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = new_server("other", NOW + 1);
    store.insert_server(&other_server).await.unwrap();
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    let alice_elsewhere = given_user(&*store, &other_server, "alice").await;

    let by_id = |id| {
        let store = store.clone();
        async move {
            store
                .credentials_by_id(id)
                .await
                .unwrap()
                .expect("credentials by id")
        }
    };
    let by_name = |server_id, userid| {
        let store = store.clone();
        async move {
            store
                .credentials(&server_id, &userid)
                .await
                .unwrap()
                .expect("credentials by name")
        }
    };

    // A fresh user: nothing set, and the same answer both ways.
    let fresh = by_id(alice.id).await;
    assert_eq!(fresh.user, alice);
    assert_eq!(fresh.password, None);
    assert_eq!(fresh.totp_secret, None);
    assert_eq!(fresh.totp_last_step, -1);
    assert_eq!(fresh.pin_hash, None);
    assert_eq!(
        fields(&fresh),
        fields(&by_name(server.id.clone(), alice.userid.clone()).await)
    );

    // Every credential set, and a TOTP step used.
    let password = hashes("$argon2id$v=19$m=19456,t=2,p=1$alice", u32::MAX, 0x80);
    store.set_password(alice.id, &password).await.unwrap();
    store
        .set_totp_secret(alice.id, Some(&[0, 0x80, 0xff]))
        .await
        .unwrap();
    store
        .set_pin_hash(alice.id, Some("$argon2id$v=19$pin"))
        .await
        .unwrap();
    assert!(store.consume_totp_step(alice.id, 77).await.unwrap());
    let set = by_id(alice.id).await;
    assert_eq!(set.user, alice);
    assert_eq!(set.password, Some(password));
    assert_eq!(set.totp_secret.as_deref(), Some(&[0, 0x80, 0xff][..]));
    assert_eq!(set.totp_last_step, 77);
    assert_eq!(set.pin_hash.as_deref(), Some("$argon2id$v=19$pin"));
    assert_eq!(set.second_factor(), Some(MfaKind::Totp));
    assert_eq!(
        fields(&set),
        fields(&by_name(server.id.clone(), alice.userid.clone()).await)
    );

    // Each id names its own user: another user of the server, and the same name elsewhere.
    let bobs = by_id(bob.id).await;
    assert_eq!(bobs.user, bob);
    assert_eq!(bobs.password, None);
    assert_eq!(bobs.totp_secret, None);
    assert_eq!(bobs.pin_hash, None);
    let elsewhere = by_id(alice_elsewhere.id).await;
    assert_eq!(elsewhere.user, alice_elsewhere);
    assert_eq!(elsewhere.password, None);
    assert_eq!(
        fields(&elsewhere),
        fields(&by_name(other_server.id.clone(), alice_elsewhere.userid.clone()).await)
    );

    assert!(store
        .credentials_by_id(Uuid::new_v4())
        .await
        .unwrap()
        .is_none());
    assert!(store.delete_user(alice.id).await.unwrap());
    assert!(store.credentials_by_id(alice.id).await.unwrap().is_none());
    assert_eq!(
        fields(&by_id(bob.id).await),
        fields(&bobs),
        "deleting one user leaves another's credentials"
    );
}

/// A verifier as a re-derivation makes it: another salt and count, other keys.
fn verifier(iterations: u32, fill: u8) -> ScramVerifier {
    ScramVerifier {
        salt: vec![fill; 16],
        iterations,
        stored_key: [fill.wrapping_add(1); 32],
        server_key: [fill.wrapping_add(2); 32],
    }
}

async fn password_of(
    store: &dyn latchkey_core::Store,
    user: &latchkey_core::model::User,
) -> Option<PasswordHashes> {
    store
        .credentials_by_id(user.id)
        .await
        .unwrap()
        .expect("user")
        .password
}

async fn a_scram_verifier_is_replaced_only_over_the_one_it_replaces(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    let old = hashes("$argon2id$v=19$m=19456,t=2,p=1$old", 4096, 7);
    store.set_password(alice.id, &old).await.unwrap();
    store
        .set_totp_secret(alice.id, Some(b"0123456789"))
        .await
        .unwrap();
    store
        .set_pin_hash(alice.id, Some("$argon2id$pin"))
        .await
        .unwrap();
    let before = store.credentials_by_id(alice.id).await.unwrap().unwrap();

    // Over another salt (a password set since the verifier was read): nothing changes.
    let new = verifier(600_000, 0x80);
    assert!(!store
        .set_scram_verifier(alice.id, &[1, 2, 3], &new)
        .await
        .unwrap());
    assert_eq!(password_of(&*store, &alice).await, Some(old.clone()));

    // Over its own salt: the verifier is replaced, the argon2id hash and the rest are kept.
    assert!(store
        .set_scram_verifier(alice.id, &old.scram.salt, &new)
        .await
        .unwrap());
    let after = store.credentials_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(
        after.password,
        Some(PasswordHashes {
            argon2: old.argon2.clone(),
            scram: new.clone(),
        })
    );
    assert_eq!(after.user, before.user);
    assert_eq!(after.totp_secret, before.totp_secret);
    assert_eq!(after.totp_last_step, before.totp_last_step);
    assert_eq!(after.pin_hash, before.pin_hash);
    // The old salt is gone: a second replacement from the same reading does nothing.
    assert!(!store
        .set_scram_verifier(alice.id, &old.scram.salt, &verifier(1, 9))
        .await
        .unwrap());
    assert_eq!(password_of(&*store, &alice).await.unwrap().scram, new);
    // u32::MAX iterations fit.
    let max = verifier(u32::MAX, 0xff);
    assert!(store
        .set_scram_verifier(alice.id, &new.salt, &max)
        .await
        .unwrap());
    assert_eq!(password_of(&*store, &alice).await.unwrap().scram, max);

    // A user without a password gets no verifier (whatever salt is named).
    for salt in [&[][..], &old.scram.salt[..]] {
        assert!(!store.set_scram_verifier(bob.id, salt, &new).await.unwrap());
    }
    assert_eq!(password_of(&*store, &bob).await, None);
}

async fn racing_verifier_replacements_and_password_changes_leave_the_password(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    for round in 0..ROUNDS {
        let old = hashes("$argon2id$old", 4096, round as u8);
        store.set_password(alice.id, &old).await.unwrap();
        // Two re-derivations from the same reading: exactly one replaces the verifier.
        let replaced = at_once(2, |i| {
            let store = store.clone();
            let salt = old.scram.salt.clone();
            async move {
                store
                    .set_scram_verifier(alice.id, &salt, &verifier(600_000, i as u8))
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(
            replaced.iter().filter(|&&r| r).count(),
            1,
            "round {round}: {replaced:?}"
        );

        // A re-derivation racing a password change: the new password wins, whichever is first.
        let current = password_of(&*store, &alice).await.unwrap();
        let newer = hashes("$argon2id$newer", 8192, 0x40 + round as u8);
        let newer_for_task = newer.clone();
        at_once(2, |i| {
            let store = store.clone();
            let salt = current.scram.salt.clone();
            let newer = newer_for_task.clone();
            async move {
                if i == 0 {
                    store.set_password(alice.id, &newer).await.unwrap();
                } else {
                    store
                        .set_scram_verifier(alice.id, &salt, &verifier(600_000, 0xee))
                        .await
                        .unwrap();
                }
            }
        })
        .await;
        assert_eq!(
            password_of(&*store, &alice).await,
            Some(newer),
            "round {round}"
        );
    }
}

async fn scram_iteration_counts_count_users_with_a_password_per_server(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = new_server("other", NOW + 1);
    store.insert_server(&other_server).await.unwrap();
    assert_eq!(
        store.scram_iteration_counts(&server.id).await.unwrap(),
        vec![],
        "no users"
    );

    let mut users = Vec::new();
    for (name, iterations) in [
        ("a", Some(600_000)),
        ("b", Some(4096)),
        ("c", Some(600_000)),
        ("d", None),
        ("e", Some(u32::MAX)),
        ("f", Some(600_000)),
    ] {
        let user = given_user(&*store, &server, name).await;
        if let Some(iterations) = iterations {
            store
                .set_password(user.id, &hashes("$argon2id$x", iterations, 1))
                .await
                .unwrap();
        }
        users.push(user);
    }
    let elsewhere = given_user(&*store, &other_server, "a").await;
    store
        .set_password(elsewhere.id, &hashes("$argon2id$x", 4096, 2))
        .await
        .unwrap();
    given_user(&*store, &other_server, "no password").await;

    assert_eq!(
        store.scram_iteration_counts(&server.id).await.unwrap(),
        vec![(4096, 1), (600_000, 3), (u32::MAX, 1)],
        "lowest count first, users without a password not counted"
    );
    assert_eq!(
        store
            .scram_iteration_counts(&other_server.id)
            .await
            .unwrap(),
        vec![(4096, 1)]
    );

    // A re-derivation moves a user from one count to another; a deleted user leaves.
    let b = &users[1];
    let salt = password_of(&*store, b).await.unwrap().scram.salt;
    assert!(store
        .set_scram_verifier(b.id, &salt, &verifier(600_000, 3))
        .await
        .unwrap());
    assert!(store.delete_user(users[4].id).await.unwrap());
    assert_eq!(
        store.scram_iteration_counts(&server.id).await.unwrap(),
        vec![(600_000, 4)]
    );
}
