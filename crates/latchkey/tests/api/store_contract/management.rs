//! `ManagementStore`: server settings and activity, roles made with their first key, the keys
//! a role made, one role per user (also when two ask at once), permissions by server.

use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{ApiKey, Permissions, Role};
use latchkey_core::StoreError;
use uuid::Uuid;

use super::{at_once, given_account, given_server, given_user, new_account, open, NOW};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    server_settings_and_activity,
    a_role_made_with_its_key_and_the_keys_a_role_made,
    a_user_has_one_role_even_when_asked_twice_at_once,
    permissions_are_listed_per_server_and_revoked,
);

fn key(role: &str, byte: u8) -> ApiKey {
    ApiKey {
        id: Uuid::new_v4(),
        key_hash: SecretHash([byte; 32]),
        role_id: role.to_owned(),
        created_at: NOW + i64::from(byte),
    }
}

async fn server_settings_and_activity(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    assert_eq!(
        store.server_config(&server.id).await.unwrap().as_deref(),
        Some("{}")
    );
    assert!(store
        .update_server(&server.id, "renamed", r#"{"pingTime":5}"#)
        .await
        .unwrap());
    assert_eq!(
        store.server_config(&server.id).await.unwrap().as_deref(),
        Some(r#"{"pingTime":5}"#)
    );
    assert_eq!(
        store.server(&server.id).await.unwrap().unwrap().name,
        "renamed"
    );
    let unknown = super::new_server("unknown", NOW).id;
    assert!(!store.update_server(&unknown, "x", "{}").await.unwrap());
    assert_eq!(store.server_config(&unknown).await.unwrap(), None);

    assert_eq!(store.server_activity(&server.id).await.unwrap(), (0, None));
    let a = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    given_account(&*store, new_account(&server, 2, None, NOW)).await;
    store
        .touch_account(a.id, Some(NOW + 9), None)
        .await
        .unwrap();
    assert_eq!(
        store.server_activity(&server.id).await.unwrap(),
        (2, Some(NOW + 9))
    );
}

async fn a_role_made_with_its_key_and_the_keys_a_role_made(db: TestDb) {
    let store = open(&db).await;
    store
        .insert_role(&Role {
            id: "root".into(),
            root: true,
        })
        .await
        .unwrap();
    let first = key("made-1", 1);
    store
        .insert_role_with_key("made-1", "billing", "root", &first)
        .await
        .unwrap();
    store
        .insert_role_with_key("made-2", "support", "root", &key("made-2", 2))
        .await
        .unwrap();
    store
        .insert_role_with_key("made-3", "theirs", "made-1", &key("made-3", 3))
        .await
        .unwrap();
    let role = store.role("made-1").await.unwrap().unwrap();
    assert!(!role.root);
    assert_eq!(
        store
            .api_key(&first.key_hash)
            .await
            .unwrap()
            .unwrap()
            .role_id,
        "made-1"
    );
    let made = store.api_keys_made_by("root").await.unwrap();
    assert_eq!(
        made.iter()
            .map(|k| (k.role_id.as_str(), k.description.as_deref()))
            .collect::<Vec<_>>(),
        [("made-1", Some("billing")), ("made-2", Some("support"))]
    );
    assert_eq!(made[0].key_id, first.id);
    // A role id taken: nothing is made, not even the key.
    let again = key("made-1", 4);
    assert!(matches!(
        store
            .insert_role_with_key("made-1", "again", "root", &again)
            .await,
        Err(StoreError::Conflict)
    ));
    assert!(store.api_key(&again.key_hash).await.unwrap().is_none());
}

async fn a_user_has_one_role_even_when_asked_twice_at_once(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    assert_eq!(store.user_role(alice.id).await.unwrap(), None);
    let roles = at_once(2, |i| {
        let store = store.clone();
        async move {
            store
                .ensure_user_role(alice.id, &format!("role-{i}"))
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(roles[0], roles[1]);
    assert_eq!(
        store.user_role(alice.id).await.unwrap(),
        Some(roles[0].clone())
    );
    // The role goes with the user.
    assert!(store.delete_user(alice.id).await.unwrap());
    assert!(store.role(&roles[0]).await.unwrap().is_none());
}

async fn permissions_are_listed_per_server_and_revoked(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other = super::new_server("other", NOW);
    store.insert_server(&other).await.unwrap();
    for id in ["b-role", "a-role"] {
        store
            .insert_role(&Role {
                id: id.into(),
                root: false,
            })
            .await
            .unwrap();
    }
    let some = Permissions {
        sessions: true,
        users: true,
        ..Permissions::default()
    };
    store
        .set_permissions("b-role", &server.id, some)
        .await
        .unwrap();
    store
        .set_permissions("a-role", &server.id, Permissions::default())
        .await
        .unwrap();
    store
        .set_permissions("a-role", &other.id, some)
        .await
        .unwrap();
    assert_eq!(
        store.server_permissions(&server.id).await.unwrap(),
        vec![
            ("a-role".to_owned(), Permissions::default()),
            ("b-role".to_owned(), some)
        ]
    );
    assert!(store
        .revoke_permissions("b-role", &server.id)
        .await
        .unwrap());
    assert!(!store
        .revoke_permissions("b-role", &server.id)
        .await
        .unwrap());
    assert_eq!(
        store.permissions("b-role", &server.id).await.unwrap(),
        Permissions::default()
    );
    assert_eq!(store.permissions("a-role", &other.id).await.unwrap(), some);
}
