//! Running latchkey as an operator does: HTTPS from PEM files (HTTP/2 and HTTP/1.1, reloaded
//! without dropping connections), the management listener, and the drain at shutdown. The
//! certificates are made here with rcgen and trusted by a rustls client. Nothing here depends
//! on the database, so SQLite only.

use std::path::Path;
use std::time::Duration;

use latchkey_http::{HttpOptions, TlsFiles};
use reqwest::Version;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::db::{Backend, TestDb};
use crate::support::server::{test_settings, TestServer};

/// A self-signed certificate for `localhost`, written as PEM files in `dir` under `name`.
struct Certificate {
    files: TlsFiles,
    pem: String,
}

fn certificate(dir: &Path, name: &str) -> Certificate {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    Certificate {
        files,
        pem: cert.pem(),
    }
}

/// A client that trusts only `pem` (no system roots).
fn trusting(pem: &str, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

async fn start(http: HttpOptions) -> Option<TestServer> {
    let db = TestDb::new(Backend::Sqlite).await?;
    Some(TestServer::start_with_http(db, test_settings(), http).await)
}

async fn start_tls(files: &TlsFiles) -> Option<TestServer> {
    start(HttpOptions {
        tls: Some(files.clone()),
        ..HttpOptions::default()
    })
    .await
}

#[tokio::test]
async fn https_is_served_over_http2_and_http1_to_a_client_that_trusts_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate(dir.path(), "server");
    let Some(s) = start_tls(&cert.files).await else {
        return;
    };
    assert!(s.base.starts_with("https://"));

    let h2 = trusting(&cert.pem, false)
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h2.status(), 200);
    assert_eq!(h2.version(), Version::HTTP_2, "ALPN offers h2");

    let h1 = trusting(&cert.pem, true)
        .get(format!("{}/session/login", s.base))
        .basic_auth("nobody@example.com", Some("nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), Version::HTTP_11);
    assert_eq!(h1.status(), 401, "an API answers over TLS as over HTTP");

    // A client that does not trust the certificate does not get through; plain HTTP on the
    // TLS port is not served.
    let other = certificate(dir.path(), "other");
    assert!(trusting(&other.pem, false)
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .is_err());
    let plain = reqwest::get(format!("{}/healthz", s.base.replace("https://", "http://"))).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[tokio::test]
async fn a_reload_serves_new_files_to_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first = certificate(dir.path(), "server");
    let Some(s) = start_tls(&first.files).await else {
        return;
    };
    let kept = trusting(&first.pem, false);
    let url = format!("{}/healthz", s.base);
    assert_eq!(kept.get(&url).send().await.unwrap().status(), 200);

    // A renewal writes new files over the old ones (a new key, so a new certificate).
    let renewed = certificate(dir.path(), "renewed");
    std::fs::copy(&renewed.files.cert, &first.files.cert).unwrap();
    std::fs::copy(&renewed.files.key, &first.files.key).unwrap();
    s.tls.as_ref().unwrap().reload().unwrap();

    assert_eq!(
        trusting(&renewed.pem, false)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "a new connection gets the new certificate"
    );
    assert!(
        trusting(&first.pem, false).get(&url).send().await.is_err(),
        "the old certificate is no longer offered to new connections"
    );
    // The HTTP/2 connection opened before the reload still serves.
    let again = kept.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.version(), Version::HTTP_2);

    // A reload that fails (half-written key) keeps the files in use.
    std::fs::write(&first.files.key, "-----BEGIN PRIVATE KEY-----\ntruncated").unwrap();
    let failed = s.tls.as_ref().unwrap().reload().unwrap_err().to_string();
    assert!(failed.contains("server.key"), "{failed}");
    assert_eq!(
        trusting(&renewed.pem, false)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn unreadable_tls_files_stop_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate(dir.path(), "server");
    let Some(s) = start(HttpOptions::default()).await else {
        return;
    };
    let core = s.core.clone();
    let missing = TlsFiles {
        cert: dir.path().join("missing.crt"),
        key: cert.files.key.clone(),
    };
    let mismatched = TlsFiles {
        cert: cert.files.cert.clone(),
        key: certificate(dir.path(), "other").files.key,
    };
    for (files, expected) in [(missing, "missing.crt"), (mismatched, "do not make")] {
        let options = HttpOptions {
            tls: Some(files),
            ..HttpOptions::default()
        };
        let Err(e) = latchkey_http::build(core.clone(), options, "127.0.0.1:0").await else {
            panic!("started with bad TLS files");
        };
        assert!(e.to_string().contains(expected), "{e}");
    }
}

#[tokio::test]
async fn the_management_listener_serves_metrics_and_probes_and_the_public_one_no_metrics() {
    let Some(s) = start(HttpOptions {
        management_listen: Some("127.0.0.1:0".into()),
        ..HttpOptions::default()
    })
    .await
    else {
        return;
    };
    let management = s.management.clone().unwrap();
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            status_of(&s, reqwest::Method::GET, &format!("{management}{path}")).await,
            200,
            "{path} on the management listener"
        );
    }
    let metrics = s
        .http
        .get(format!("{management}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("latchkey_active_sessions"), "{metrics}");
    // The management listener serves nothing else.
    assert_eq!(
        status_of(
            &s,
            reqwest::Method::POST,
            &format!("{management}/session/login")
        )
        .await,
        404
    );
    // The public one keeps the probes, not the metrics.
    assert_eq!(
        status_of(&s, reqwest::Method::GET, &s.url("/metrics")).await,
        404
    );
    assert_eq!(
        status_of(&s, reqwest::Method::GET, &s.url("/readyz")).await,
        200
    );
}

/// The status `method url` answers.
async fn status_of(s: &TestServer, method: reqwest::Method, url: &str) -> u16 {
    s.http
        .request(method, url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Opens a request that stays in flight: its head is complete, its body never is.
async fn request_in_flight(base: &str) -> TcpStream {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /auth/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"partial\":",
        )
        .await
        .unwrap();
    stream
}

async fn readyz(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn at_shutdown_readyz_turns_503_first_then_the_listener_closes_and_requests_finish() {
    let drain = Duration::from_secs(1);
    let request_timeout = Duration::from_secs(2);
    let Some(mut s) = start(HttpOptions {
        management_listen: Some("127.0.0.1:0".into()),
        drain_timeout: drain,
        request_timeout,
        ..HttpOptions::default()
    })
    .await
    else {
        return;
    };
    let management = s.management.clone().unwrap();
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    assert_eq!(readyz(&fresh(), &management).await.0, 200);

    let began = std::time::Instant::now();
    s.begin_shutdown();
    let (status, body) = loop {
        let answer = readyz(&fresh(), &management).await;
        if answer.0 != 200 {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503);
    assert_eq!(body["error"], "draining");
    // While draining, everything but readiness is still served, to new connections too.
    assert_eq!(readyz(&fresh(), &s.base).await.0, 503);
    let health = fresh()
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut busy = request_in_flight(&s.base).await;

    // After the drain the public listener accepts no new connection...
    tokio::time::sleep(drain + Duration::from_millis(300)).await;
    assert!(fresh()
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .is_err());
    assert_eq!(readyz(&fresh(), &management).await.0, 503);
    // ...and the request in flight is ended (answered 503 at the request timeout, or closed),
    // then the management listener closes too.
    let mut received = Vec::new();
    let ended = tokio::time::timeout(request_timeout * 3, async {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut busy, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the busy connection outlived the shutdown");
    let answer = String::from_utf8_lossy(&received);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
    assert!(began.elapsed() >= drain);
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        while fresh()
            .get(format!("{management}/healthz"))
            .send()
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        stopped.is_ok(),
        "the management listener closed after the public one"
    );
}

/// `kill -HUP`, as `systemctl reload` does.
fn hang_up(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_running_process_reloads_its_certificate_on_sighup_and_logs_routes_not_paths() {
    let dir = tempfile::tempdir().unwrap();
    let first = certificate(dir.path(), "server");
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let cert = first.files.cert.display().to_string();
    let key = first.files.key.display().to_string();
    let server = crate::cli::serve(
        &db,
        &[
            ("LATCHKEY_TLS_CERT", &cert),
            ("LATCHKEY_TLS_KEY", &key),
            ("LATCHKEY_ACCESS_LOG", "true"),
        ],
    );
    let base = server.base.replace("http://127.0.0.1", "https://localhost");
    let kept = trusting(&first.pem, false);
    let session_path = "/sessions/0123456789abcdef0123456789abcdef";
    let r = kept
        .delete(format!("{base}{session_path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let renewed = certificate(dir.path(), "renewed");
    std::fs::copy(&renewed.files.cert, &first.files.cert).unwrap();
    std::fs::copy(&renewed.files.key, &first.files.key).unwrap();
    hang_up(&server.child);
    let reloaded = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let answer = trusting(&renewed.pem, false)
                .get(format!("{base}/healthz"))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reloaded.is_ok(),
        "the new certificate is served after SIGHUP"
    );
    assert_eq!(
        kept.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the connection opened before the reload still serves"
    );

    // The reload is logged after the new certificate is in use: wait for the line a moment.
    let mut log = server.log();
    for _ in 0..50 {
        if log
            .iter()
            .any(|l| l.contains("TLS certificate and key reloaded"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        log = server.log();
    }
    assert!(log
        .iter()
        .any(|l| l.contains("TLS certificate and key reloaded")));
    let access: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["target"] == "latchkey::access")
        .collect();
    let revoke = access
        .iter()
        .find(|e| e["fields"]["method"] == "DELETE")
        .unwrap_or_else(|| panic!("no access line for the DELETE: {log:?}"));
    assert_eq!(revoke["fields"]["route"], "/sessions/{session_id}");
    assert_eq!(revoke["fields"]["status"], 401);
    assert_eq!(revoke["fields"]["client"], "127.0.0.1");
    assert!(
        !log.iter()
            .any(|l| l.contains("0123456789abcdef0123456789abcdef")),
        "the session id in the path is never logged"
    );
}

#[tokio::test]
async fn sighup_without_tls_leaves_the_process_serving() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let mut server = crate::cli::serve(&db, &[]);
    hang_up(&server.child);
    let logged = tokio::time::timeout(Duration::from_secs(10), async {
        while !server.log().iter().any(|l| l.contains("nothing to reload")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(logged.is_ok(), "{:?}", server.log());
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the process"
    );
    let r = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
