//! Hostile connections against the real server, in real time (seconds): header and idle
//! timeouts, the connection cap that evicts the longest-idle connection, the request timeout,
//! and the bounds of event streams. Nothing here depends on the database, so SQLite only.

use std::time::{Duration, Instant};

use latchkey_http::HttpOptions;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::nextauth::{status, NONCE};
use crate::support::db::{Backend, TestDb};
use crate::support::server::{test_settings, TestServer};

/// Long enough not to interfere with what a test looks at.
const LONG: Duration = Duration::from_secs(30);

fn options() -> HttpOptions {
    HttpOptions {
        header_read_timeout: LONG,
        idle_timeout: LONG,
        request_timeout: LONG,
        ..HttpOptions::default()
    }
}

async fn start(http: HttpOptions) -> Option<TestServer> {
    let db = TestDb::new(Backend::Sqlite).await?;
    Some(TestServer::start_with_http(db, test_settings(), http).await)
}

async fn connect(s: &TestServer) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (end of stream or reset); answers what it sent
/// before. Panics if it is still open after `within`.
async fn until_closed(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server left the connection open");
    received
}

/// True when the server has closed the connection (it sent nothing on it).
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// One raw HTTP/1.1 answer: status, lower-case header lines, body.
async fn read_answer(stream: &mut TcpStream, within: Duration) -> (u16, Vec<String>, String) {
    tokio::time::timeout(within, async {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a complete answer");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let mut lines = head.lines();
            let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
            let headers: Vec<String> = lines.map(str::to_ascii_lowercase).collect();
            let length: usize = headers
                .iter()
                .find_map(|h| h.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if body.len() >= length {
                return (status, headers, body.to_owned());
            }
        }
    })
    .await
    .expect("no answer in time")
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: latchkey\r\n\r\n";

/// A series of `/metrics` (name with labels, as rendered); 0 when absent.
/// The value of a series once it reaches `expected` (the server counts a close just after the
/// socket closes), or its last value after a second.
async fn metric_settles(s: &TestServer, series: &str, expected: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let value = metric(s, series).await;
        if value == expected || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(s: &TestServer, series: &str) -> f64 {
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .map_or(0.0, |(_, value)| value.parse().unwrap())
}

fn closed_for(reason: &str) -> String {
    format!("latchkey_connections_closed_total{{reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_sending_one_header_byte_a_second_is_closed_by_the_header_timeout() {
    let header = Duration::from_secs(2);
    let Some(s) = start(HttpOptions {
        header_read_timeout: header,
        ..options()
    })
    .await
    else {
        return;
    };
    let (mut read, mut write) = connect(&s).await.into_split();
    let opened = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in HEALTHZ {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let answer = until_closed(&mut read, header + Duration::from_secs(3)).await;
    let lived = opened.elapsed();
    trickle.abort();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        lived >= header - Duration::from_millis(100)
            && lived < header + Duration::from_millis(1500),
        "closed after {lived:?}"
    );
    assert_eq!(
        metric_settles(&s, &closed_for("header_timeout"), 1.0).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_by_the_header_timeout() {
    let header = Duration::from_secs(1);
    let Some(s) = start(HttpOptions {
        header_read_timeout: header,
        ..options()
    })
    .await
    else {
        return;
    };
    let mut silent = connect(&s).await;
    let opened = Instant::now();
    assert!(until_closed(&mut silent, Duration::from_secs(3))
        .await
        .is_empty());
    let lived = opened.elapsed();
    assert!(
        lived >= header - Duration::from_millis(100)
            && lived < header + Duration::from_millis(1500),
        "closed after {lived:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let (header, idle) = (Duration::from_secs(1), Duration::from_secs(2));
    let Some(s) = start(HttpOptions {
        header_read_timeout: header,
        idle_timeout: idle,
        ..options()
    })
    .await
    else {
        return;
    };
    let mut conn = connect(&s).await;
    // Two requests on one connection: it is kept alive between them.
    for _ in 0..2 {
        conn.write_all(HEALTHZ).await.unwrap();
        let (status, _, body) = read_answer(&mut conn, Duration::from_secs(2)).await;
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    }
    let answered = Instant::now();
    assert!(until_closed(&mut conn, idle + Duration::from_secs(3))
        .await
        .is_empty());
    let idled = answered.elapsed();
    // Well past the header timeout: that clock does not run while nothing is sent.
    assert!(
        idled >= idle - Duration::from_millis(100) && idled < idle + Duration::from_millis(1500),
        "closed after {idled:?}"
    );
    assert_eq!(
        metric_settles(&s, &closed_for("idle_timeout"), 1.0).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_cap_do_not_stop_healthz() {
    const CAP: usize = 4;
    let Some(s) = start(HttpOptions {
        max_connections: Some(CAP),
        ..options()
    })
    .await
    else {
        return;
    };
    // Twice the cap of sockets that send nothing, one after the other.
    let mut silent = Vec::new();
    for _ in 0..2 * CAP {
        silent.push(connect(&s).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let healthz =
        tokio::time::timeout(Duration::from_secs(2), s.http.get(s.url("/healthz")).send())
            .await
            .expect("/healthz answered in time")
            .unwrap();
    assert_eq!(healthz.status(), 200);
    // The longest-idle ones made room: the first CAP + 1, the last CAP - 1 are still open.
    let mut closed = Vec::new();
    for conn in &mut silent {
        closed.push(is_closed(conn).await);
    }
    let mut expected = vec![true; CAP + 1];
    expected.extend(vec![false; CAP - 1]);
    assert_eq!(closed, expected);
    assert!(metric(&s, &closed_for("evicted")).await >= (CAP + 1) as f64);
    assert!(metric(&s, "latchkey_open_connections").await <= CAP as f64);
}

/// A login status event stream (a busy connection for as long as it lives).
async fn open_stream(s: &TestServer, client: &reqwest::Client, hsid: &str) -> reqwest::Response {
    client
        .get(s.url(&format!("/servers/{}/sessions/events", s.server_id)))
        .query(&[("hsid", hsid)])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_are_never_evicted_and_when_all_are_busy_a_newcomer_is_refused() {
    let Some(s) = start(HttpOptions {
        max_connections: Some(2),
        max_event_streams: Some(2),
        ..options()
    })
    .await
    else {
        return;
    };
    let hsid = status(&s, NONCE).await["hsid"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let first = open_stream(&s, &client, &hsid).await;
    assert_eq!(first.status(), 200);
    // The cap is reached by an idle socket: it makes room for the second stream.
    let mut idle = connect(&s).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = open_stream(&s, &client, &hsid).await;
    assert_eq!(second.status(), 200);
    assert!(is_closed(&mut idle).await);
    // Both connections are busy: a newcomer is closed at once, unanswered.
    let mut newcomer = connect(&s).await;
    newcomer.write_all(HEALTHZ).await.ok();
    assert!(until_closed(&mut newcomer, Duration::from_secs(1))
        .await
        .is_empty());
    // A stream that ends frees its connection.
    drop(second);
    let answered = async {
        loop {
            let mut conn = connect(&s).await;
            if conn.write_all(HEALTHZ).await.is_ok() {
                let mut buf = [0u8; 12];
                if conn.read_exact(&mut buf).await.is_ok() {
                    return buf;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let answered = tokio::time::timeout(Duration::from_secs(3), answered)
        .await
        .expect("/healthz answered once a stream ended");
    assert_eq!(&answered, b"HTTP/1.1 200");
    drop(first);
    assert!(metric(&s, &closed_for("refused")).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_beyond_the_cap_get_503_in_the_family_shape() {
    let Some(s) = start(HttpOptions {
        max_event_streams: Some(1),
        ..options()
    })
    .await
    else {
        return;
    };
    let hsid = status(&s, NONCE).await["hsid"].as_str().unwrap().to_owned();
    let first = open_stream(&s, &s.http, &hsid).await;
    assert_eq!(first.status(), 200);
    assert_eq!(metric(&s, "latchkey_open_event_streams").await, 1.0);
    let refused = open_stream(&s, &s.http, &hsid).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");
    assert!(body["message"].is_string(), "{body}");
    // The companion app's stream shares the cap (and is refused before its challenge is used).
    let app = s
        .http
        .get(s.url("/app/v1/events"))
        .query(&[
            ("serverid", s.server_id.to_string()),
            ("accountid", "1".into()),
            ("challenge", "x".into()),
            ("signature", "y".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(app.status(), 503);
    // A stream that ends gives its place back.
    drop(first);
    let reopened = async {
        loop {
            let r = open_stream(&s, &s.http, &hsid).await;
            if r.status() == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), reopened)
        .await
        .expect("a stream reopened once the first ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_ends_after_its_lifetime() {
    let lifetime = Duration::from_secs(1);
    let Some(s) = start(HttpOptions {
        event_stream_max_lifetime: lifetime,
        ..options()
    })
    .await
    else {
        return;
    };
    let hsid = status(&s, NONCE).await["hsid"].as_str().unwrap().to_owned();
    let opened = Instant::now();
    let mut stream = open_stream(&s, &s.http, &hsid).await;
    assert_eq!(stream.status(), 200);
    let mut events = String::new();
    tokio::time::timeout(lifetime + Duration::from_secs(3), async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            events.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the stream outlived its lifetime");
    let lived = opened.elapsed();
    assert!(events.contains("event: status"), "{events}");
    assert!(
        lived >= lifetime - Duration::from_millis(100)
            && lived < lifetime + Duration::from_millis(1500),
        "ended after {lived:?}"
    );
    assert_eq!(
        metric_settles(&s, "latchkey_open_event_streams", 0.0).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_request_timeout_is_answered_503_in_the_family_shape() {
    let limit = Duration::from_secs(1);
    let Some(s) = start(HttpOptions {
        request_timeout: limit,
        ..options()
    })
    .await
    else {
        return;
    };
    // A body announced but never finished keeps the handler waiting.
    let mut conn = connect(&s).await;
    conn.write_all(
        b"POST /session/login HTTP/1.1\r\nHost: latchkey\r\nX-Auth-Token: t\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"auth",
    )
    .await
    .unwrap();
    let sent = Instant::now();
    let (status, headers, body) = read_answer(&mut conn, limit + Duration::from_secs(3)).await;
    let took = sent.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(
        headers.contains(&"retry-after: 1".to_owned()),
        "{headers:?}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], 16, "{body}");
    assert!(
        body["msg"].is_string() && body["details"].is_object(),
        "{body}"
    );
    assert!(
        took >= limit - Duration::from_millis(100) && took < limit + Duration::from_millis(1500),
        "answered after {took:?}"
    );
}
