//! `AuditStore`: the append-only audit trail, newest first per server.

use latchkey_core::model::AuditRecord;
use latchkey_core::store::AuditQuery;
use latchkey_core::ServerId;
use uuid::Uuid;

use super::{given_server, open, NOW};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    audit_events_are_listed_newest_first_per_server,
    audit_events_filter_by_user_kind_and_time_and_old_ones_are_purged
);

async fn audit_events_are_listed_newest_first_per_server(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = ServerId::generate();
    let event = |kind: &str, server_id: &ServerId| AuditRecord {
        at: NOW,
        server_id: server_id.clone(),
        kind: kind.to_owned(),
        userid: None,
        session_id: None,
        ip: None,
        detail: None,
    };
    let full = AuditRecord {
        userid: Some("alice".into()),
        session_id: Some(Uuid::new_v4()),
        ip: Some("2001:db8::2".into()),
        detail: Some("totp".into()),
        ..event("login_succeeded", &server.id)
    };
    // Same second for all: insertion order decides, not the time.
    store
        .insert_audit(&event("login_failed", &server.id))
        .await
        .unwrap();
    store.insert_audit(&full).await.unwrap();
    // Audit events outlive their server: no server row is needed.
    store
        .insert_audit(&event("login_failed", &other_server))
        .await
        .unwrap();
    store
        .insert_audit(&event("session_revoked", &server.id))
        .await
        .unwrap();

    let newest = store
        .audit_events(&server.id, &AuditQuery::newest(2))
        .await
        .unwrap();
    assert_eq!(
        newest,
        vec![event("session_revoked", &server.id), full.clone()]
    );
    let all = store
        .audit_events(&server.id, &AuditQuery::newest(u64::MAX))
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["session_revoked", "login_succeeded", "login_failed"]
    );
    assert_eq!(
        store
            .audit_events(&other_server, &AuditQuery::newest(10))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .audit_events(&ServerId::generate(), &AuditQuery::newest(10))
        .await
        .unwrap()
        .is_empty());
}

async fn audit_events_filter_by_user_kind_and_time_and_old_ones_are_purged(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let event = |at: i64, kind: &str, userid: Option<&str>| AuditRecord {
        at,
        server_id: server.id.clone(),
        kind: kind.to_owned(),
        userid: userid.map(str::to_owned),
        session_id: None,
        ip: None,
        detail: None,
    };
    let events = [
        event(NOW - 300, "login_failed", Some("alice")),
        event(NOW - 200, "login_succeeded", Some("alice")),
        event(NOW - 100, "login_failed", Some("bob")),
        event(NOW, "server_created", None),
    ];
    for e in &events {
        store.insert_audit(e).await.unwrap();
    }
    let query = |userid: Option<&str>, kind: Option<&str>, since: Option<i64>| AuditQuery {
        userid: userid.map(str::to_owned),
        kind: kind.map(str::to_owned),
        since,
        limit: 10,
    };
    let found = |q: AuditQuery| {
        let store = store.clone();
        let server = server.id.clone();
        async move {
            store
                .audit_events(&server, &q)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.at)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        found(query(Some("alice"), None, None)).await,
        [NOW - 200, NOW - 300]
    );
    assert_eq!(
        found(query(None, Some("login_failed"), None)).await,
        [NOW - 100, NOW - 300]
    );
    assert_eq!(
        found(query(Some("alice"), Some("login_failed"), None)).await,
        [NOW - 300]
    );
    assert_eq!(
        found(query(None, None, Some(NOW - 200))).await,
        [NOW, NOW - 100, NOW - 200]
    );
    assert!(found(query(Some("carol"), None, None)).await.is_empty());

    // Retention: everything before the cut goes, the rest stays.
    assert_eq!(store.purge_audit(NOW - 150).await.unwrap(), 2);
    assert_eq!(found(query(None, None, None)).await, [NOW, NOW - 100]);
    assert_eq!(store.purge_audit(NOW - 150).await.unwrap(), 0);
}
