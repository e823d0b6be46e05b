//! A fresh, empty database per test, on either backend, dropped when the test ends: tests never
//! share state and never depend on order. SQLite always runs. PostgreSQL tests are marked
//! ignored, so a plain `cargo test` reports them as such instead of passing them without
//! running; `cargo test -- --ignored on_postgres` with `LATCHKEY_TEST_POSTGRES_URL` naming a
//! server on which the tests may create databases runs them (and without it they fail, saying
//! so).

use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;

/// Generates, for each named scenario `async fn name(db: TestDb)` of the calling module, a
/// module `name` with one test per backend: `name::on_sqlite` and `name::on_postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    let backend = $crate::db::Backend::Sqlite;
                    if let Some(db) = $crate::db::TestDb::new(backend).await {
                        super::$scenario(db).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: LATCHKEY_TEST_POSTGRES_URL=... cargo test -- --ignored on_postgres"]
                async fn on_postgres() {
                    let backend = $crate::db::Backend::Postgres;
                    if let Some(db) = $crate::db::TestDb::new(backend).await {
                        super::$scenario(db).await;
                    }
                }
            }
        )+
    };
}

/// The environment variable naming the PostgreSQL server for tests (an administrative URL:
/// the tests create and drop their databases on it).
pub const POSTGRES_URL_VAR: &str = "LATCHKEY_TEST_POSTGRES_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    url: String,
    /// Holds the SQLite file and, for either backend, the master key file; removed on drop.
    dir: TempDir,
    inner: Inner,
}

enum Inner {
    Sqlite,
    /// The database created for this test on the server that `admin_url` reaches.
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDb {
    /// A fresh, empty database of that backend (always `Some`; an `Option` so callers read
    /// alike). Panics when the backend is PostgreSQL and `LATCHKEY_TEST_POSTGRES_URL` is
    /// unset: a PostgreSQL test that ran without PostgreSQL must not pass.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary folder");
                let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
                Some(TestDb {
                    url,
                    dir,
                    inner: Inner::Sqlite,
                })
            }
            Backend::Postgres => {
                let Some(admin_url) = std::env::var(POSTGRES_URL_VAR)
                    .ok()
                    .filter(|u| !u.is_empty())
                else {
                    panic!(
                        "{POSTGRES_URL_VAR} is unset: PostgreSQL tests need it, e.g. \
                         {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/postgres"
                    );
                };
                let name = format!("latchkey_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
                conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await
                    .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
                conn.close().await.ok();
                let url = with_database(&admin_url, &name);
                Some(TestDb {
                    url,
                    dir: tempfile::tempdir().expect("a temporary folder"),
                    inner: Inner::Postgres { admin_url, name },
                })
            }
        }
    }

    /// The database URL to pass to `latchkey::open_store` or to the binary's `--database`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The master key file every process on this database uses (for SQLite, the default one
    /// beside the database file).
    pub fn master_key_file(&self) -> std::path::PathBuf {
        self.dir.path().join("master.key")
    }

    /// The folder of the test's files (the SQLite database, the master key file).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs `sql` (statements separated by `;`) behind latchkey's back, on a connection of its
    /// own: what an attacker with the database, or an older version, would do.
    pub async fn execute(&self, sql: &str) {
        use sqlx::Connection;
        match self.backend() {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.ok();
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.ok();
            }
        }
    }

    /// The (text, bytes) rows `sql` selects, read behind latchkey's back.
    pub async fn text_and_bytes(&self, sql: &str) -> Vec<(String, Vec<u8>)> {
        use sqlx::Connection;
        match self.backend() {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
                conn.close().await.ok();
                rows
            }
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
                conn.close().await.ok();
                rows
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite => Backend::Sqlite,
            Inner::Postgres { .. } => Backend::Postgres,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Inner::Postgres { admin_url, name } = &self.inner else {
            return; // the TempDir removes itself
        };
        // Drop is synchronous and may run on a runtime worker, where blocking on a future of
        // that runtime is refused: the database is dropped from a thread with its own runtime.
        // FORCE ends the connections the test's pool still holds.
        let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let admin_url = admin_url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.execute(statement.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.ok();
                Ok::<(), String>(())
            })
        })
        .join();
        // Never panic here: a panic while the test is already unwinding would abort.
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {name}: {e}"),
            Err(_) => eprintln!("warning: dropping test database {name} panicked"),
        }
    }
}

/// `url` with its database (the URL path) replaced by `name`, keeping user, host, port and
/// query parameters.
fn with_database(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = rest
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let query = url[authority_end..]
        .find('?')
        .map_or("", |i| &url[authority_end + i..]);
    format!("{}/{name}{query}", &url[..authority_end])
}

#[test]
fn a_database_name_replaces_only_the_path_of_the_url() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgresql://u:p@db:5432", "t1"),
        "postgresql://u:p@db:5432/t1"
    );
    assert_eq!(
        with_database("postgres://u@db/postgres?sslmode=disable", "t1"),
        "postgres://u@db/t1?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://u@db?sslmode=disable", "t1"),
        "postgres://u@db/t1?sslmode=disable"
    );
}
