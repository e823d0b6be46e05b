//! `PasskeyStore`: credential ids unique across users, use records, renames, and the removal
//! that keeps a user's last way to sign in.

use latchkey_core::model::{PasskeyCredential, PasswordHashes, ScramVerifier};
use latchkey_core::store::PasskeyRemoval;
use uuid::Uuid;

use super::{at_once, given_server, given_user, open, NOW, ROUNDS};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    a_credential_id_is_stored_once_across_users,
    a_use_rewrites_the_passkey_and_a_rename_only_the_owners,
    the_last_way_to_sign_in_is_not_removed,
    racing_removals_of_the_last_two_passkeys_leave_one,
);

fn passkey(user_id: Uuid, id: &[u8], name: &str) -> PasskeyCredential {
    PasskeyCredential {
        credential_id: id.to_vec(),
        user_id,
        name: name.to_owned(),
        passkey: format!("{{\"cred\":\"{name}\"}}"),
        created_at: NOW,
        last_used_at: None,
    }
}

async fn a_credential_id_is_stored_once_across_users(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    assert!(store
        .insert_passkey(&passkey(alice.id, b"key-1", "laptop"))
        .await
        .unwrap());
    assert!(!store
        .insert_passkey(&passkey(alice.id, b"key-1", "again"))
        .await
        .unwrap());
    assert!(!store
        .insert_passkey(&passkey(bob.id, b"key-1", "stolen"))
        .await
        .unwrap());
    assert!(store
        .insert_passkey(&passkey(alice.id, b"key-2", "phone"))
        .await
        .unwrap());
    let listed = store.user_passkeys(alice.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["laptop", "phone"]
    );
    assert!(store.user_passkeys(bob.id).await.unwrap().is_empty());
    assert_eq!(
        store.passkey(b"key-1").await.unwrap(),
        Some(passkey(alice.id, b"key-1", "laptop"))
    );
    assert_eq!(store.passkey(b"unknown").await.unwrap(), None);
}

async fn a_use_rewrites_the_passkey_and_a_rename_only_the_owners(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    store
        .insert_passkey(&passkey(alice.id, b"key-1", "laptop"))
        .await
        .unwrap();
    let first = passkey(alice.id, b"key-1", "laptop").passkey;
    assert!(store
        .record_passkey_use(b"key-1", &first, "{\"counter\":7}", NOW + 60)
        .await
        .unwrap());
    // A second use judged against the same old state writes nothing: the counter stays.
    assert!(!store
        .record_passkey_use(b"key-1", &first, "{\"counter\":5}", NOW + 61)
        .await
        .unwrap());
    assert!(!store
        .record_passkey_use(b"nope", "{}", "{}", NOW)
        .await
        .unwrap());
    assert!(!store
        .rename_passkey(bob.id, b"key-1", "mine")
        .await
        .unwrap());
    assert!(store
        .rename_passkey(alice.id, b"key-1", "work laptop")
        .await
        .unwrap());
    let stored = store.passkey(b"key-1").await.unwrap().unwrap();
    assert_eq!(
        stored,
        PasskeyCredential {
            name: "work laptop".into(),
            passkey: "{\"counter\":7}".into(),
            last_used_at: Some(NOW + 60),
            ..passkey(alice.id, b"key-1", "laptop")
        }
    );
}

async fn the_last_way_to_sign_in_is_not_removed(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    // No password: the passkeys are the only way in.
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    store
        .insert_passkey(&passkey(alice.id, b"key-1", "laptop"))
        .await
        .unwrap();
    store
        .insert_passkey(&passkey(alice.id, b"key-2", "phone"))
        .await
        .unwrap();
    assert_eq!(
        store.delete_passkey(bob.id, b"key-1").await.unwrap(),
        PasskeyRemoval::NotFound
    );
    assert_eq!(
        store.delete_passkey(alice.id, b"key-1").await.unwrap(),
        PasskeyRemoval::Removed
    );
    assert_eq!(
        store.delete_passkey(alice.id, b"key-1").await.unwrap(),
        PasskeyRemoval::NotFound
    );
    assert_eq!(
        store.delete_passkey(alice.id, b"key-2").await.unwrap(),
        PasskeyRemoval::LastSignInMethod
    );
    assert_eq!(store.user_passkeys(alice.id).await.unwrap().len(), 1);
    // With a password, the last passkey may go.
    let hashes = PasswordHashes {
        argon2: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        scram: ScramVerifier {
            salt: vec![1, 2, 3],
            iterations: 4096,
            stored_key: [1; 32],
            server_key: [2; 32],
        },
    };
    store.set_password(alice.id, &hashes).await.unwrap();
    assert_eq!(
        store.delete_passkey(alice.id, b"key-2").await.unwrap(),
        PasskeyRemoval::Removed
    );
    assert!(store.user_passkeys(alice.id).await.unwrap().is_empty());
}

async fn racing_removals_of_the_last_two_passkeys_leave_one(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    for round in 0..ROUNDS {
        let user = given_user(&*store, &server, &format!("user{round}")).await;
        let ids = [format!("{round}-a"), format!("{round}-b")];
        for id in &ids {
            store
                .insert_passkey(&passkey(user.id, id.as_bytes(), id))
                .await
                .unwrap();
        }
        let results = at_once(2, |i| {
            let store = store.clone();
            let id = ids[i].clone();
            async move { store.delete_passkey(user.id, id.as_bytes()).await.unwrap() }
        })
        .await;
        let removed = results
            .iter()
            .filter(|r| **r == PasskeyRemoval::Removed)
            .count();
        assert_eq!(removed, 1, "round {round}: {results:?}");
        assert_eq!(store.user_passkeys(user.id).await.unwrap().len(), 1);
    }
}
