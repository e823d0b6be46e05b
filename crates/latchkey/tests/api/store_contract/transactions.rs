//! `AppStore`'s transactions: stored with every field, found only on their server, answered
//! once and only before they expire, listed while pending, bounded per account even when
//! inserts race, and purged once long expired.

use latchkey_core::model::{Account, Transaction, TransactionStatus};
use latchkey_core::Store;
use uuid::Uuid;

use super::{at_once, given_account, given_server, new_account, new_server, open, NOW, ROUNDS};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    a_transaction_round_trips_every_field_and_is_found_only_on_its_server,
    a_transaction_is_answered_once_and_only_before_its_expiry,
    racing_answers_to_a_transaction_see_exactly_one_true,
    pending_transactions_are_new_unexpired_and_oldest_first,
    an_account_holds_at_most_the_limit_of_pending_transactions,
    racing_inserts_never_pass_the_limit,
    long_expired_transactions_are_purged,
);

fn new_transaction(account: &Account, amount: &str, created_at: i64) -> Transaction {
    Transaction {
        id: Uuid::new_v4(),
        server_id: account.server_id.clone(),
        account_id: account.id,
        session_id: Uuid::new_v4(),
        amount: amount.into(),
        beneficiary: "ACME Bank \u{2603}".into(),
        description: "order 1\nline two \u{ef}".into(),
        created_at,
        expires_at: created_at + 300,
        status: TransactionStatus::New,
        answered_at: None,
        signature: format!("signature of {amount}"),
        answer_signature: None,
    }
}

async fn given(store: &dyn Store, t: Transaction) -> Transaction {
    assert!(store.insert_transaction(&t, 100).await.unwrap());
    t
}

async fn stored(store: &dyn Store, t: &Transaction) -> Transaction {
    store
        .transaction(&t.server_id, t.id)
        .await
        .unwrap()
        .expect("transaction stored")
}

async fn a_transaction_round_trips_every_field_and_is_found_only_on_its_server(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other = new_server("other", NOW);
    store.insert_server(&other).await.unwrap();
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;

    let t = given(&*store, new_transaction(&account, "10.00 EUR", NOW)).await;
    let answered = given(
        &*store,
        Transaction {
            status: TransactionStatus::Declined,
            answered_at: Some(NOW + 3),
            answer_signature: Some("declined by \u{2603}".into()),
            ..new_transaction(&account, "", NOW - 1)
        },
    )
    .await;
    assert_eq!(stored(&*store, &t).await, t);
    assert_eq!(stored(&*store, &answered).await, answered);
    assert_eq!(store.transaction(&other.id, t.id).await.unwrap(), None);
    assert_eq!(
        store.transaction(&server.id, Uuid::new_v4()).await.unwrap(),
        None
    );
    // A transaction belongs to an enrolled account.
    let mut orphan = new_transaction(&account, "1", NOW);
    orphan.account_id += 1000;
    assert!(store.insert_transaction(&orphan, 100).await.is_err());
}

async fn a_transaction_is_answered_once_and_only_before_its_expiry(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    let t = given(&*store, new_transaction(&account, "1", NOW)).await;
    let bystander = given(&*store, new_transaction(&account, "2", NOW)).await;

    assert!(store
        .answer_transaction(t.id, TransactionStatus::Approved, NOW + 5, "sig")
        .await
        .unwrap());
    let approved = Transaction {
        status: TransactionStatus::Approved,
        answered_at: Some(NOW + 5),
        answer_signature: Some("sig".into()),
        ..t.clone()
    };
    assert_eq!(stored(&*store, &t).await, approved);
    assert!(!store
        .answer_transaction(t.id, TransactionStatus::Declined, NOW + 6, "sig")
        .await
        .unwrap());
    assert_eq!(stored(&*store, &t).await, approved);
    assert_eq!(stored(&*store, &bystander).await, bystander);

    // Expiry is exclusive: at `expires_at` no answer is taken.
    assert!(!store
        .answer_transaction(
            bystander.id,
            TransactionStatus::Approved,
            bystander.expires_at,
            "sig",
        )
        .await
        .unwrap());
    assert_eq!(stored(&*store, &bystander).await, bystander);
    assert!(!store
        .answer_transaction(Uuid::new_v4(), TransactionStatus::Approved, NOW, "sig")
        .await
        .unwrap());
}

async fn racing_answers_to_a_transaction_see_exactly_one_true(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    for round in 0..ROUNDS {
        let t = given(&*store, new_transaction(&account, "raced", NOW)).await;
        let answers = at_once(8, |i| {
            let store = store.clone();
            let status = if i % 2 == 0 {
                TransactionStatus::Approved
            } else {
                TransactionStatus::Declined
            };
            async move {
                (
                    status,
                    store
                        .answer_transaction(t.id, status, NOW + 1, "sig")
                        .await
                        .unwrap(),
                )
            }
        })
        .await;
        let winners: Vec<_> = answers.iter().filter(|(_, won)| *won).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one answer wins");
        assert_eq!(stored(&*store, &t).await.status, winners[0].0);
    }
}

async fn pending_transactions_are_new_unexpired_and_oldest_first(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    let other = given_account(&*store, new_account(&server, 2, None, NOW)).await;

    let newest = given(&*store, new_transaction(&account, "newest", NOW - 10)).await;
    let oldest = given(&*store, new_transaction(&account, "oldest", NOW - 30)).await;
    let answered = given(&*store, new_transaction(&account, "answered", NOW - 20)).await;
    assert!(store
        .answer_transaction(answered.id, TransactionStatus::Declined, NOW, "sig")
        .await
        .unwrap());
    // Expiring now: no longer pending.
    given(&*store, new_transaction(&account, "expires now", NOW - 300)).await;
    let others = given(&*store, new_transaction(&other, "other", NOW)).await;

    assert_eq!(
        store.pending_transactions(account.id, NOW).await.unwrap(),
        vec![oldest, newest]
    );
    assert_eq!(
        store.pending_transactions(other.id, NOW).await.unwrap(),
        vec![others]
    );
}

async fn an_account_holds_at_most_the_limit_of_pending_transactions(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    let other = given_account(&*store, new_account(&server, 2, None, NOW)).await;

    let first = new_transaction(&account, "1", NOW);
    assert!(store.insert_transaction(&first, 2).await.unwrap());
    assert!(store
        .insert_transaction(&new_transaction(&account, "2", NOW), 2)
        .await
        .unwrap());
    let refused = new_transaction(&account, "3", NOW);
    assert!(!store.insert_transaction(&refused, 2).await.unwrap());
    assert_eq!(
        store.transaction(&server.id, refused.id).await.unwrap(),
        None
    );
    // Another account has its own bound.
    assert!(store
        .insert_transaction(&new_transaction(&other, "1", NOW), 2)
        .await
        .unwrap());
    // An answered transaction no longer counts, nor does an expired one.
    assert!(store
        .answer_transaction(first.id, TransactionStatus::Approved, NOW + 1, "sig")
        .await
        .unwrap());
    assert!(store
        .insert_transaction(&new_transaction(&account, "4", NOW + 1), 2)
        .await
        .unwrap());
    assert!(store
        .insert_transaction(&new_transaction(&account, "5", NOW + 400), 2)
        .await
        .unwrap());
}

async fn racing_inserts_never_pass_the_limit(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    for round in 0..ROUNDS {
        let account =
            given_account(&*store, new_account(&server, round as u8 + 1, None, NOW)).await;
        let made = at_once(8, |i| {
            let store = store.clone();
            let t = new_transaction(&account, &i.to_string(), NOW);
            async move { store.insert_transaction(&t, 3).await.unwrap() }
        })
        .await;
        assert_eq!(
            made.iter().filter(|m| **m).count(),
            3,
            "round {round}: exactly the limit is inserted"
        );
        assert_eq!(
            store
                .pending_transactions(account.id, NOW)
                .await
                .unwrap()
                .len(),
            3
        );
    }
}

async fn long_expired_transactions_are_purged(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    let old = given(&*store, new_transaction(&account, "old", NOW - 1000)).await;
    let recent = given(&*store, new_transaction(&account, "recent", NOW - 100)).await;
    // Sessions' cutoff between the two expiries.
    store.purge(NOW - 2000, NOW - 500).await.unwrap();
    assert_eq!(store.transaction(&server.id, old.id).await.unwrap(), None);
    assert_eq!(stored(&*store, &recent).await, recent);
}
