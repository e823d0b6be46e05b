//! Family A's HTML blocks, for a web site to embed in its own pages (the vendor's HTML tag):
//! the login block (this browser session's login QR code), the enrol block (an enrol QR code
//! with the server's visual hash) and the footer (one script from latchkey that watches the
//! browser sessions' status and reloads the page when one logs in or out). The QR codes are
//! inline PNG `data:` images: the site's browser cannot fetch latchkey's QR calls, which need
//! the site's API key. docs/nextauth-management.md, "HTML blocks".

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use latchkey_core::crypto::qr::qr_png;
use latchkey_core::services::access::Permission;
use latchkey_core::{Nonce, ServerId};

use super::nextauth::{
    authorize, bad, base_url_of, err, login_payload, nonce, query, Failure, NextAuthError, QueryMap,
};
use crate::extract::RequestOrigin;
use crate::routes::Routes;
use crate::state::AppState;

/// Pixels of the QR codes the blocks embed.
const QR_PIXELS: u32 = 250;
/// Browser sessions one footer watches at most.
const MAX_WATCHED: usize = 16;

pub fn routes() -> Routes {
    Routes::new()
        .route("/servers/{serverid}/sessions/html/login", get(login))
        .route("/servers/{serverid}/sessions/html/enrol", get(enrol))
        .route("/servers/{serverid}/sessions/html/footer", get(footer))
        .route("/assets/nextauth-footer.js", get(footer_script))
}

#[derive(Template)]
#[template(path = "blocks/login.html")]
struct LoginBlock {
    qr: String,
    hsid: String,
}

#[derive(Template)]
#[template(path = "blocks/enrol.html")]
struct EnrolBlock {
    qr: String,
    vash: String,
    name: String,
}

#[derive(Template)]
#[template(path = "blocks/footer.html")]
struct FooterBlock {
    script: String,
    events: String,
}

fn html(block: impl Template) -> Result<Response, Failure> {
    let text = block
        .render()
        .map_err(|e| err(latchkey_core::Error::Internal(format!("HTML block: {e}"))))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response())
}

fn png_data(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", STANDARD.encode(png))
}

/// The login block: this browser session's login QR code, named by its `hsid`.
#[utoipa::path(get, operation_id = "getHtmlLogin", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/html/login", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header)),
    request_body(content = Option<super::nextauth::UserContext>, description = "Shown in the app"),
    responses(
        (status = 200, description = "HTML", content_type = "text/html", body = String),
        (status = 400, description = "Bad X-nonce or UserContext", body = NextAuthError),
        (status = 404, description = "Unknown server", body = NextAuthError),
    ))]
pub async fn login(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
    origin: RequestOrigin,
    body: Bytes,
) -> Result<Response, Failure> {
    let (server, nonce, payload) = login_payload(&state, &server, &headers, &origin, &body).await?;
    let hsid = state.core.browser_hsid(&server, &nonce).await?;
    html(LoginBlock {
        qr: png_data(&qr_png(payload.as_bytes(), QR_PIXELS)?),
        hsid,
    })
}

/// The enrol block: an enrol QR code for `name` (the server's name when absent), optionally
/// for `userid`, with the server's visual hash to compare in the app.
#[utoipa::path(get, operation_id = "getHtmlEnrol", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/html/enrol", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header),
        ("name" = Option<String>, Query), ("userid" = Option<String>, Query)),
    responses(
        (status = 200, description = "HTML", content_type = "text/html", body = String),
        (status = 400, description = "Bad X-nonce or name", body = NextAuthError),
        (status = 404, description = "Unknown server", body = NextAuthError),
    ))]
pub async fn enrol(
    State(state): State<AppState>,
    Path(server): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
    origin: RequestOrigin,
) -> Result<Response, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Sessions]).await?;
    nonce(&headers)?;
    let q = query(q)?;
    let base = base_url_of(&state, &headers, &origin)?;
    let name = match q.get("name").filter(|n| !n.trim().is_empty()) {
        Some(name) => name.clone(),
        None => state.core.server(&server).await?.name,
    };
    let payload = state
        .core
        .enrol_qr(&server, &name, q.get("userid").map(String::as_str), &base)
        .await?;
    let key = state.core.server_public_key(&server).await?;
    html(EnrolBlock {
        qr: png_data(&qr_png(payload.as_bytes(), QR_PIXELS)?),
        vash: png_data(&latchkey_core::crypto::vash::png(&key, 96)?),
        name,
    })
}

/// HtmlFooterBody: more browser sessions to watch.
#[derive(Deserialize, Default)]
struct FooterBody {
    #[serde(default)]
    sessions: Vec<ServerSession>,
}

#[derive(Deserialize)]
struct ServerSession {
    serverid: String,
    sessionid: String,
}

/// The footer: latchkey's script, watching this browser session (and those the body lists) and
/// reloading the page when one logs in or out (unless the page handles the `latchkey:status`
/// event itself and cancels it).
#[utoipa::path(get, operation_id = "getHtmlFooter", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/html/footer", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header)),
    request_body(content = Option<Object>, description = "HtmlFooterBody: {\"sessions\": [{\"serverid\", \"sessionid\"}]}"),
    responses(
        (status = 200, description = "HTML", content_type = "text/html", body = String),
        (status = 400, description = "Bad X-nonce or body", body = NextAuthError),
        (status = 403, description = "No sessions permission on a listed server", body = NextAuthError),
        (status = 404, description = "Unknown server", body = NextAuthError),
    ))]
pub async fn footer(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
    origin: RequestOrigin,
    body: Bytes,
) -> Result<Response, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Sessions]).await?;
    let own = nonce(&headers)?;
    let body: FooterBody = if body.iter().all(u8::is_ascii_whitespace) {
        FooterBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| bad("the body must be an HtmlFooterBody: {\"sessions\": [...]}"))?
    };
    if body.sessions.len() > MAX_WATCHED {
        return Err(bad(format!("a footer watches at most {MAX_WATCHED} sessions")).into());
    }
    let base = base_url_of(&state, &headers, &origin)?;
    let mut watched: Vec<(ServerId, Nonce)> = vec![(server, own)];
    for listed in &body.sessions {
        let other = authorize(&state, &headers, &listed.serverid, &[Permission::Sessions]).await?;
        watched.push((other, Nonce::parse(&listed.sessionid).map_err(err)?));
    }
    let mut events = Vec::with_capacity(watched.len());
    for (server, nonce) in &watched {
        let hsid = state.core.browser_hsid(server, nonce).await?;
        events.push(format!(
            "{base}/servers/{server}/sessions/events?hsid={hsid}"
        ));
    }
    html(FooterBlock {
        script: format!("{base}/assets/nextauth-footer.js"),
        events: events.join(" "),
    })
}

/// GET /assets/nextauth-footer.js: the footer's script.
pub async fn footer_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("../../assets/nextauth-footer.js"),
    )
        .into_response()
}
