//! Family A's transactions, as the vendor's spec writes them: a web site asks the person logged
//! in on a browser session (`X-nonce`) to confirm an amount, a beneficiary and a description in
//! the companion app, then reads the answer. The app's side is `families::app`; what is signed
//! is in `latchkey_core::services::transactions`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use latchkey_core::services::access::Permission;
use latchkey_core::services::transactions::TransactionRequest;

use super::nextauth::{authorize, bad, nonce, Failure, NextAuthError};
use crate::routes::Routes;
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route(
            "/servers/{serverid}/sessions/transactions",
            post(create_transaction),
        )
        .route(
            "/servers/{serverid}/transactions/{transactionid}",
            get(transaction_result),
        )
}

/// Transaction (the vendor's model and spelling: `benificiary`). At least one value is given;
/// `amount` at most 64 characters, `benificiary` 200, `description` 1000 (which alone may hold
/// line breaks); no control characters.
#[derive(Deserialize, ToSchema)]
pub struct NextAuthTransaction {
    pub amount: Option<String>,
    pub benificiary: Option<String>,
    pub description: Option<String>,
}

/// TransactionId.
#[derive(Serialize, ToSchema)]
pub struct NextAuthTransactionId {
    /// Base64url transaction id.
    pub tid: String,
}

/// TransactionResult: `0` new, `1` approved, `2` declined (or expired unanswered).
#[derive(Serialize, ToSchema)]
pub struct NextAuthTransactionResult {
    pub tstatus: String,
}

/// Pushes a transaction to the app of the account logged in on this nonce.
#[utoipa::path(post, operation_id = "createTransaction", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/sessions/transactions", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("X-nonce" = String, Header)),
    request_body = NextAuthTransaction,
    responses(
        (status = 200, description = "Pushed", body = NextAuthTransactionId),
        (status = 400, description = "Not a Transaction, or values too long", body = NextAuthError),
        (status = 403, description = "No account associated with this session (or it is blocked)", body = NextAuthError),
        (status = 409, description = "The account has 16 transactions waiting already", body = NextAuthError),
    ))]
pub async fn create_transaction(
    State(state): State<AppState>,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<NextAuthTransactionId>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Sessions]).await?;
    let nonce = nonce(&headers)?;
    let body: NextAuthTransaction = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body is not a Transaction: {e}")))?;
    let tid = state
        .core
        .create_transaction(
            &server,
            &nonce,
            TransactionRequest {
                amount: body.amount,
                beneficiary: body.benificiary,
                description: body.description,
            },
        )
        .await?;
    Ok(Json(NextAuthTransactionId { tid }))
}

/// Where a transaction stands.
#[utoipa::path(get, operation_id = "getTransactionResult", security(("api_key" = []), ("api_key" = [], "role_id" = [])), path = "/servers/{serverid}/transactions/{transactionid}", tag = "family A: nextAuth",
    params(("serverid" = String, Path), ("transactionid" = String, Path)),
    responses(
        (status = 200, description = "TransactionResult", body = NextAuthTransactionResult),
        (status = 404, description = "No transaction with this id", body = NextAuthError),
    ))]
pub async fn transaction_result(
    State(state): State<AppState>,
    Path((server, tid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<NextAuthTransactionResult>, Failure> {
    let server = authorize(&state, &headers, &server, &[Permission::Sessions]).await?;
    let status = state.core.transaction_status(&server, &tid).await?;
    Ok(Json(NextAuthTransactionResult {
        tstatus: (status as u8).to_string(),
    }))
}
