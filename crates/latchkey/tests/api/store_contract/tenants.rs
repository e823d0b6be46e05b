//! `TenantStore`: settings, servers, roles and their permissions, API keys, JWT signing keys.

use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{ApiKey, Permissions, Role, SigningKey};
use latchkey_core::ServerId;
use uuid::Uuid;

use super::{assert_conflict, at_once, given_server, new_server, open, NOW, ROUNDS};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    a_setting_is_set_once_and_a_second_insert_conflicts,
    servers_round_trip_with_their_keys_byte_for_byte,
    a_role_has_no_permissions_until_granted_and_a_grant_replaces_the_last,
    an_api_key_is_found_by_its_hash_alone,
    signing_keys_are_listed_newest_first_and_retired_all_but_one,
    racing_creators_of_the_first_signing_key_create_exactly_one,
);

async fn a_setting_is_set_once_and_a_second_insert_conflicts(db: TestDb) {
    let store = open(&db).await;
    assert_eq!(store.setting("default_server").await.unwrap(), None);

    store.insert_setting("default_server", "one").await.unwrap();
    assert_conflict(store.insert_setting("default_server", "two").await);

    assert_eq!(
        store.setting("default_server").await.unwrap().as_deref(),
        Some("one")
    );
}

async fn servers_round_trip_with_their_keys_byte_for_byte(db: TestDb) {
    let store = open(&db).await;
    let later = new_server("later", NOW + 10);
    let earlier = new_server("earlier", NOW);
    store.insert_server(&later).await.unwrap();
    store.insert_server(&earlier).await.unwrap();

    let got = store.server(&later.id).await.unwrap().expect("server");
    assert_eq!(got.id, later.id);
    assert_eq!(got.name, "later");
    assert_eq!(got.secret_key, later.secret_key);
    assert_eq!(got.public_key, later.public_key);
    assert_eq!(got.created_at, NOW + 10);

    let all: Vec<ServerId> = store
        .servers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(all, vec![earlier.id.clone(), later.id.clone()]);

    assert!(store.server(&ServerId::generate()).await.unwrap().is_none());
    assert_conflict(store.insert_server(&later).await);
}

async fn a_role_has_no_permissions_until_granted_and_a_grant_replaces_the_last(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = new_server("other", NOW + 1);
    store.insert_server(&other_server).await.unwrap();
    let admin = Role {
        id: "admin".into(),
        root: false,
    };
    let root = Role {
        id: "root".into(),
        root: true,
    };
    store.insert_role(&admin).await.unwrap();
    store.insert_role(&root).await.unwrap();
    assert_conflict(store.insert_role(&admin).await);

    assert_eq!(store.role("admin").await.unwrap(), Some(admin));
    assert_eq!(store.role("root").await.unwrap(), Some(root));
    assert_eq!(store.role("nobody").await.unwrap(), None);

    assert_eq!(
        store.permissions("admin", &server.id).await.unwrap(),
        Permissions::default()
    );

    let first = Permissions {
        sessions: true,
        accounts: false,
        users: true,
        servers: false,
    };
    store
        .set_permissions("admin", &server.id, first)
        .await
        .unwrap();
    assert_eq!(store.permissions("admin", &server.id).await.unwrap(), first);

    let second = Permissions {
        sessions: false,
        accounts: true,
        users: false,
        servers: true,
    };
    store
        .set_permissions("admin", &server.id, second)
        .await
        .unwrap();
    assert_eq!(
        store.permissions("admin", &server.id).await.unwrap(),
        second
    );
    assert_eq!(
        store.permissions("admin", &other_server.id).await.unwrap(),
        Permissions::default(),
        "a grant on one server gives nothing on another"
    );
}

async fn an_api_key_is_found_by_its_hash_alone(db: TestDb) {
    let store = open(&db).await;
    store
        .insert_role(&Role {
            id: "ops".into(),
            root: false,
        })
        .await
        .unwrap();
    let key = ApiKey {
        id: Uuid::new_v4(),
        key_hash: SecretHash::of(b"the api key"),
        role_id: "ops".into(),
        created_at: NOW,
    };
    store.insert_api_key(&key).await.unwrap();

    let got = store.api_key(&key.key_hash).await.unwrap().expect("key");
    assert_eq!(got.id, key.id);
    assert_eq!(got.key_hash, key.key_hash);
    assert_eq!(got.role_id, "ops");
    assert_eq!(got.created_at, NOW);

    assert!(store
        .api_key(&SecretHash::of(b"another key"))
        .await
        .unwrap()
        .is_none());
    assert_conflict(
        store
            .insert_api_key(&ApiKey {
                id: Uuid::new_v4(),
                ..key
            })
            .await,
    );
}

fn new_signing_key(kid: &str, created_at: i64, fill: u8) -> SigningKey {
    let mut secret_key = [fill; 32];
    secret_key[0] = 0;
    secret_key[31] = 0xff;
    SigningKey {
        kid: kid.to_owned(),
        secret_key,
        public_key: [fill ^ 0xff; 32],
        created_at,
        retired_at: None,
    }
}

async fn signing_keys_are_listed_newest_first_and_retired_all_but_one(db: TestDb) {
    let store = open(&db).await;
    assert!(store.signing_keys().await.unwrap().is_empty());

    let oldest = SigningKey {
        retired_at: Some(NOW - 500),
        ..new_signing_key("k-oldest", NOW - 1000, 1)
    };
    let older = new_signing_key("k-older", NOW - 100, 2);
    // Two keys of the same second: kid order decides, in bytes ("a" > "B"), whatever the
    // database's locale.
    let upper = new_signing_key("k-B", NOW, 3);
    let lower = new_signing_key("k-a", NOW, 0x80);
    for key in [&upper, &oldest, &lower, &older] {
        store.insert_signing_key(key).await.unwrap();
    }
    assert_conflict(
        store
            .insert_signing_key(&new_signing_key("k-older", NOW + 1, 9))
            .await,
    );
    assert_eq!(
        store.signing_keys().await.unwrap(),
        vec![lower.clone(), upper.clone(), older.clone(), oldest.clone()]
    );

    // Rotation: the newest key stays, every other unretired key is retired now; a key retired
    // before keeps its time.
    store.retire_signing_keys("k-a", NOW + 5).await.unwrap();
    let retired = |key: &SigningKey| SigningKey {
        retired_at: Some(NOW + 5),
        ..key.clone()
    };
    let after = vec![
        lower.clone(),
        retired(&upper),
        retired(&older),
        oldest.clone(),
    ];
    assert_eq!(store.signing_keys().await.unwrap(), after);

    // Idempotent: retiring again changes nothing.
    store.retire_signing_keys("k-a", NOW + 9).await.unwrap();
    assert_eq!(store.signing_keys().await.unwrap(), after);

    // The next rotation retires the previous key.
    let newest = new_signing_key("k-newest", NOW + 10, 4);
    store.insert_signing_key(&newest).await.unwrap();
    store
        .retire_signing_keys("k-newest", NOW + 10)
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(
        keys.iter()
            .map(|k| (k.kid.as_str(), k.retired_at))
            .collect::<Vec<_>>(),
        vec![
            ("k-newest", None),
            ("k-a", Some(NOW + 10)),
            ("k-B", Some(NOW + 5)),
            ("k-older", Some(NOW + 5)),
            ("k-oldest", Some(NOW - 500)),
        ]
    );
    assert_eq!(keys[0], newest, "keys round-trip byte for byte");
}

async fn racing_creators_of_the_first_signing_key_create_exactly_one(db: TestDb) {
    let store = open(&db).await;
    for round in 0..ROUNDS {
        let results = at_once(4, |i| {
            let store = store.clone();
            let key = new_signing_key(&format!("k-{round}-{i}"), NOW + round as i64, i as u8);
            async move { store.insert_first_signing_key(&key).await.unwrap() }
        })
        .await;
        assert_eq!(
            results.iter().filter(|inserted| **inserted).count(),
            1,
            "round {round}: {results:?}"
        );
        let active: Vec<_> = store
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.retired_at.is_none())
            .collect();
        assert_eq!(active.len(), 1, "round {round}: {active:?}");

        // While a key is active, nothing is inserted; once it is retired, the next one is.
        let late = new_signing_key(&format!("late-{round}"), NOW, 7);
        assert!(!store.insert_first_signing_key(&late).await.unwrap());
        store
            .retire_signing_keys("none-kept", NOW + round as i64)
            .await
            .unwrap();
    }
    assert!(store
        .signing_keys()
        .await
        .unwrap()
        .iter()
        .all(|k| k.retired_at.is_some() && !k.kid.starts_with("late-")));
}
