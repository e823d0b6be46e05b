//! `DirectoryStore`: attributes per scope (set replaces, merge keeps the rest and holds the
//! bound even when merges race), and the account and user listings (filter by a user
//! attribute, search, sort with NULLs first going up, limit and offset, the total).

use latchkey_core::model::directory::{
    AccountColumn, AttributeFilter, AttributeScope, Attributes, Listing, UserColumn,
};

use super::{at_once, given_account, given_server, given_user, new_account, open, NOW};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    attributes_are_kept_per_scope_and_set_replaces_while_merge_keeps,
    racing_merges_never_pass_the_bound,
    accounts_are_listed_filtered_sorted_and_paged_with_their_total,
    users_are_listed_searched_filtered_and_aggregated,
    deleting_accounts_one_or_all_of_a_user,
);

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn listing<C>(sort: Vec<(C, bool)>) -> Listing<C> {
    Listing {
        user: None,
        filter: None,
        search: None,
        sort,
        limit: 100,
        offset: 0,
    }
}

async fn attributes_are_kept_per_scope_and_set_replaces_while_merge_keeps(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let scopes = [
        AttributeScope::Global,
        AttributeScope::Server(server.id.clone()),
        AttributeScope::Privileged(server.id.clone()),
        AttributeScope::User(alice.id),
    ];
    for (i, scope) in scopes.iter().enumerate() {
        let own = format!("\"scope {i}\"");
        store
            .replace_attributes(scope, &attrs(&[("a", "1"), ("b", &own), ("c", "null")]))
            .await
            .unwrap();
    }
    // Each scope holds its own.
    for (i, scope) in scopes.iter().enumerate() {
        let own = format!("\"scope {i}\"");
        assert_eq!(
            store.attributes(scope).await.unwrap(),
            attrs(&[("a", "1"), ("b", &own), ("c", "null")])
        );
    }
    let server_scope = &scopes[1];
    store
        .replace_attributes(server_scope, &attrs(&[("d", "[1,2]")]))
        .await
        .unwrap();
    assert_eq!(
        store.attributes(server_scope).await.unwrap(),
        attrs(&[("d", "[1,2]")])
    );
    assert!(store
        .merge_attributes(
            server_scope,
            &attrs(&[("d", "3"), ("e", "{\"x\":true}")]),
            10
        )
        .await
        .unwrap());
    assert_eq!(
        store.attributes(server_scope).await.unwrap(),
        attrs(&[("d", "3"), ("e", "{\"x\":true}")])
    );
    // Past the bound: nothing changes.
    assert!(!store
        .merge_attributes(server_scope, &attrs(&[("f", "1"), ("g", "2")]), 3)
        .await
        .unwrap());
    assert_eq!(store.attributes(server_scope).await.unwrap().len(), 2);
    assert!(store.delete_attribute(server_scope, "d").await.unwrap());
    assert!(!store.delete_attribute(server_scope, "d").await.unwrap());
    assert_eq!(store.delete_attributes(&scopes[3]).await.unwrap(), 3);
    assert!(store.attributes(&scopes[3]).await.unwrap().is_empty());
    // The others are untouched.
    assert_eq!(store.attributes(&scopes[0]).await.unwrap().len(), 3);
    // A user's attributes go with the user.
    store
        .replace_attributes(&scopes[3], &attrs(&[("x", "1")]))
        .await
        .unwrap();
    assert!(store.delete_user(alice.id).await.unwrap());
    assert!(store.attributes(&scopes[3]).await.unwrap().is_empty());
}

async fn racing_merges_never_pass_the_bound(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let scope = AttributeScope::Server(server.id.clone());
    let results = at_once(6, |i| {
        let store = store.clone();
        let scope = scope.clone();
        async move {
            store
                .merge_attributes(&scope, &attrs(&[(&format!("k{i}"), "1")]), 4)
                .await
                .unwrap()
        }
    })
    .await;
    let held = store.attributes(&scope).await.unwrap().len();
    assert!(held <= 4, "{held} attributes");
    assert_eq!(results.iter().filter(|ok| **ok).count(), held);
}

async fn accounts_are_listed_filtered_sorted_and_paged_with_their_total(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other = super::new_server("other", NOW);
    store.insert_server(&other).await.unwrap();
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    let a1 = given_account(&*store, new_account(&server, 1, Some(&alice), NOW - 30)).await;
    let b1 = given_account(&*store, new_account(&server, 2, Some(&bob), NOW - 20)).await;
    let free = given_account(&*store, new_account(&server, 3, None, NOW - 10)).await;
    given_account(&*store, new_account(&other, 4, None, NOW)).await;
    store.touch_account(b1.id, Some(NOW), None).await.unwrap();
    store
        .replace_attributes(
            &AttributeScope::User(alice.id),
            &attrs(&[("group", "\"red\""), ("level", "3")]),
        )
        .await
        .unwrap();
    store
        .replace_attributes(
            &AttributeScope::User(bob.id),
            &attrs(&[("group", "\"blue\"")]),
        )
        .await
        .unwrap();

    let ids = |page: &latchkey_core::model::directory::Page<
        latchkey_core::model::directory::ListedAccount,
    >| { page.items.iter().map(|a| a.account.id).collect::<Vec<_>>() };
    let all = store
        .list_accounts(&server.id, &listing(vec![]))
        .await
        .unwrap();
    assert_eq!(ids(&all), vec![a1.id, b1.id, free.id]);
    assert_eq!(all.total, 3);
    assert_eq!(all.items[0].userid.as_ref().unwrap().as_str(), "alice");
    assert_eq!(all.items[2].userid, None);

    let by_user_desc = store
        .list_accounts(&server.id, &listing(vec![(AccountColumn::Userid, true)]))
        .await
        .unwrap();
    assert_eq!(ids(&by_user_desc), vec![b1.id, a1.id, free.id]);
    // NULLs first going up.
    let by_login = store
        .list_accounts(
            &server.id,
            &listing(vec![(AccountColumn::LastLogin, false)]),
        )
        .await
        .unwrap();
    assert_eq!(ids(&by_login), vec![a1.id, free.id, b1.id]);

    let page = Listing {
        limit: 1,
        offset: 1,
        ..listing(vec![(AccountColumn::Created, true)])
    };
    let second = store.list_accounts(&server.id, &page).await.unwrap();
    assert_eq!(ids(&second), vec![b1.id]);
    assert_eq!(second.total, 3);

    let red = Listing {
        filter: Some(AttributeFilter {
            key: "group".into(),
            values: vec!["red".into()],
        }),
        ..listing(vec![])
    };
    let found = store.list_accounts(&server.id, &red).await.unwrap();
    assert_eq!((ids(&found), found.total), (vec![a1.id], 1));
    let either = Listing {
        filter: Some(AttributeFilter {
            key: "group".into(),
            values: vec!["red".into(), "blue".into()],
        }),
        ..listing(vec![])
    };
    assert_eq!(
        store
            .list_accounts(&server.id, &either)
            .await
            .unwrap()
            .total,
        2
    );
    // Numbers match as written.
    let level = Listing {
        filter: Some(AttributeFilter {
            key: "level".into(),
            values: vec!["3".into()],
        }),
        ..listing(vec![])
    };
    assert_eq!(
        ids(&store.list_accounts(&server.id, &level).await.unwrap()),
        vec![a1.id]
    );
    let of_bob = Listing {
        user: Some(bob.id),
        ..listing(vec![])
    };
    assert_eq!(
        ids(&store.list_accounts(&server.id, &of_bob).await.unwrap()),
        vec![b1.id]
    );
}

async fn users_are_listed_searched_filtered_and_aggregated(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice@example.com").await;
    let bob = given_user(&*store, &server, "Bob@example.org").await;
    given_user(&*store, &server, "carol_1").await;
    let a1 = given_account(&*store, new_account(&server, 1, Some(&alice), NOW)).await;
    given_account(&*store, new_account(&server, 2, Some(&alice), NOW)).await;
    store
        .touch_account(a1.id, Some(NOW + 5), None)
        .await
        .unwrap();
    store
        .replace_attributes(&AttributeScope::User(bob.id), &attrs(&[("vip", "true")]))
        .await
        .unwrap();

    let names = |page: &latchkey_core::model::directory::Page<
        latchkey_core::model::directory::UserSummary,
    >| {
        page.items
            .iter()
            .map(|u| u.userid.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let all = store
        .list_users(&server.id, &listing(vec![]))
        .await
        .unwrap();
    // Byte order: upper case first.
    assert_eq!(
        names(&all),
        ["Bob@example.org", "alice@example.com", "carol_1"]
    );
    assert_eq!(all.total, 3);
    assert_eq!(all.items[1].accounts, 2);
    assert_eq!(all.items[1].last_login, Some(NOW + 5));
    assert_eq!((all.items[0].accounts, all.items[0].last_login), (0, None));

    let most = store
        .list_users(
            &server.id,
            &listing(vec![(UserColumn::NumberAccounts, true)]),
        )
        .await
        .unwrap();
    assert_eq!(names(&most)[0], "alice@example.com");
    // Search ignores case and treats LIKE's own characters as text.
    let search = |text: &str| Listing {
        search: Some(text.into()),
        ..listing(vec![])
    };
    assert_eq!(
        names(
            &store
                .list_users(&server.id, &search("EXAMPLE"))
                .await
                .unwrap()
        )
        .len(),
        2
    );
    assert_eq!(
        names(&store.list_users(&server.id, &search("_")).await.unwrap()),
        ["carol_1"]
    );
    assert_eq!(
        store
            .list_users(&server.id, &search("%"))
            .await
            .unwrap()
            .total,
        0
    );
    let vip = Listing {
        filter: Some(AttributeFilter {
            key: "vip".into(),
            values: vec!["true".into()],
        }),
        ..listing(vec![])
    };
    assert_eq!(
        names(&store.list_users(&server.id, &vip).await.unwrap()),
        ["Bob@example.org"]
    );
}

async fn deleting_accounts_one_or_all_of_a_user(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other = super::new_server("other", NOW);
    store.insert_server(&other).await.unwrap();
    let alice = given_user(&*store, &server, "alice").await;
    let a1 = given_account(&*store, new_account(&server, 1, Some(&alice), NOW)).await;
    given_account(&*store, new_account(&server, 2, Some(&alice), NOW)).await;
    let free = given_account(&*store, new_account(&server, 3, None, NOW)).await;
    // Another server's id space is not this one's.
    assert!(!store.delete_account(&other.id, free.id).await.unwrap());
    assert!(store.delete_account(&server.id, a1.id).await.unwrap());
    assert!(!store.delete_account(&server.id, a1.id).await.unwrap());
    assert_eq!(store.delete_user_accounts(alice.id).await.unwrap(), 1);
    assert!(store.user_accounts(alice.id).await.unwrap().is_empty());
    assert!(store.account(&server.id, free.id).await.unwrap().is_some());
}
