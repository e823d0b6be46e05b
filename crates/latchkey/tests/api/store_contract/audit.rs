//! `AuditStore`: the append-only audit trail, newest first per server.

use latchkey_core::model::AuditRecord;
use latchkey_core::ServerId;
use uuid::Uuid;

use super::{given_server, open, NOW};
use crate::support::db::{both_backends, TestDb};

both_backends!(audit_events_are_listed_newest_first_per_server);

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

    let newest = store.audit_events(&server.id, 2).await.unwrap();
    assert_eq!(
        newest,
        vec![event("session_revoked", &server.id), full.clone()]
    );
    let all = store.audit_events(&server.id, u64::MAX).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["session_revoked", "login_succeeded", "login_failed"]
    );
    assert_eq!(
        store.audit_events(&other_server, 10).await.unwrap().len(),
        1
    );
    assert!(store
        .audit_events(&ServerId::generate(), 10)
        .await
        .unwrap()
        .is_empty());
}
