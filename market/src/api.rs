//! The REST API: thin axum handlers over [`Market`]. Mutating requests (and
//! reads of private data) are signed; every error is JSON naming the problem.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use sublet_market_api::contracts::Contract;
use sublet_market_api::credits::Micros;
use sublet_market_api::identity::{self, Party, RequestSignature, Verified};
use sublet_market_api::offers::Offer;
use sublet_market_api::{Error, Result};

use crate::Market;
use crate::offers::OfferFilter;

mod trust;

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

pub(crate) type Shared = Arc<Market>;
pub(crate) type Reply<T> = Result<Json<T>, ErrorReply>;

/// An [`Error`] as the API answers it: the status and code of [`Error::status_and_code`]
/// and a JSON body naming the problem.
#[derive(Debug)]
pub struct ErrorReply(pub Error);

impl From<Error> for ErrorReply {
    fn from(e: Error) -> Self {
        ErrorReply(e)
    }
}

impl IntoResponse for ErrorReply {
    fn into_response(self) -> Response {
        let ErrorReply(e) = self;
        let (status, code) = e.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        (
            status,
            Json(json!({"error": {"code": code, "message": e.to_string()}})),
        )
            .into_response()
    }
}

/// A request with its raw body and signature headers, not yet verified.
pub struct SignedRequest {
    method: String,
    path_and_query: String,
    signature: RequestSignature,
    pub(crate) body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for SignedRequest {
    type Rejection = ErrorReply;

    async fn from_request(req: Request, state: &S) -> Result<Self, ErrorReply> {
        let method = req.method().as_str().to_owned();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| req.uri().path().to_owned());
        let header = |h: &HeaderMap, name: &str| {
            h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let headers = req.headers();
        let signature = RequestSignature {
            party: header(headers, identity::HEADER_PARTY),
            timestamp: header(headers, identity::HEADER_TIMESTAMP),
            nonce: header(headers, identity::HEADER_NONCE),
            signature: header(headers, identity::HEADER_SIGNATURE),
        };
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| Error::BadRequest(format!("could not read the request body: {e}")))?;
        Ok(Self {
            method,
            path_and_query,
            signature,
            body,
        })
    }
}

impl SignedRequest {
    pub(crate) fn verify(&self, m: &Market) -> Result<Verified> {
        m.authenticate(
            &self.method,
            &self.path_and_query,
            &self.signature,
            &self.body,
        )
    }

    pub(crate) fn party(&self, m: &Market) -> Result<Party> {
        Ok(self.verify(m)?.party)
    }

    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T> {
        parse(&self.body)
    }
}

pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

/// Runs blocking database work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, ErrorReply> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("request worker failed: {e}")))?
        .map_err(ErrorReply)
}

pub fn router(market: Shared) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/challenges", post(challenge))
        .route("/v1/parties", post(register))
        .route("/v1/parties/{id}", get(party))
        .route("/v1/parties/{id}/balances", get(balances))
        .route(
            "/v1/parties/{id}/attestations",
            post(submit_attestation).get(attestations),
        )
        .route(
            "/v1/parties/{id}/attestations/{attestation}/revoke",
            post(revoke_attestation),
        )
        .route("/v1/deposits", post(deposit))
        .route("/v1/withdrawals", post(withdraw))
        .route("/v1/treasury", get(treasury))
        .route("/v1/held-back/release", post(release_held_back))
        .route("/v1/ledger", get(ledger_summary))
        .route("/v1/offers", post(publish_offer).get(search_offers))
        .route("/v1/offers/{id}", get(offer).delete(withdraw_offer))
        .route("/v1/contracts", post(propose_contract).get(my_contracts))
        .route("/v1/contracts/{id}", get(contract))
        .route("/v1/contracts/{id}/evidence", get(contract_evidence))
        .route("/v1/contracts/{id}/accept", post(accept_contract))
        .route("/v1/contracts/{id}/reject", post(reject_contract))
        .route("/v1/contracts/{id}/prepay", post(prepay))
        .route("/v1/contracts/{id}/terminate", post(terminate_contract))
        .route("/v1/contracts/{id}/receipts", post(submit_receipt))
        .route("/v1/contracts/{id}/periods", get(periods))
        .route(
            "/v1/contracts/{id}/periods/{start}/settle",
            post(settle_period),
        )
        .route("/v1/parties/{id}/rating", get(rating))
        .route("/v1/contracts/{id}/observations", post(observe))
        .route(
            "/v1/contracts/{id}/feedback",
            post(give_feedback).get(feedback),
        )
        .route(
            "/v1/contracts/{id}/disputes",
            post(open_dispute).get(contract_disputes),
        )
        .route("/v1/disputes", get(my_disputes))
        .route("/v1/disputes/{id}", get(dispute))
        .route("/v1/disputes/{id}/decide", post(decide_dispute))
        // Support tickets, reviews both ways and the market's own contact checks (issue 23).
        .merge(trust::routes())
        .fallback(|| async {
            ErrorReply(Error::not_found(
                "route; the API is described at /openapi.json",
            ))
        })
        .layer(axum::middleware::from_fn_with_state(
            market.clone(),
            count_responses,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(market)
}

/// The console page.
const CONSOLE: &str = include_str!("console.html");

/// The policy of every answer but the console: nothing in it may load, run or be framed.
const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console's policy: its own inline script and style only (by hash, so nothing
/// injected runs), requests to this origin only, and no framing.
pub fn console_csp(html: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hashes = |open: &str, close: &str| {
        let mut out = String::new();
        let mut rest = html;
        while let Some(start) = rest.find(open) {
            let body = &rest[start + open.len()..];
            let Some(end) = body.find(close) else { break };
            let digest = sha2::Sha256::digest(&body.as_bytes()[..end]);
            out.push_str(&format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            ));
            rest = &body[end..];
        }
        out
    };
    format!(
        "default-src 'none'; script-src{}; style-src{}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hashes("<script>", "</script>"),
        hashes("<style>", "</style>"),
    )
}

/// Headers on every answer: no type sniffing, no framing, and a content security policy.
async fn security_headers(req: Request, next: axum::middleware::Next) -> Response {
    static CONSOLE_CSP: std::sync::OnceLock<header::HeaderValue> = std::sync::OnceLock::new();
    let console = req.uri().path() == "/";
    let mut response = next.run(req).await;
    let csp = if console {
        CONSOLE_CSP
            .get_or_init(|| {
                header::HeaderValue::from_str(&console_csp(CONSOLE))
                    .unwrap_or_else(|_| header::HeaderValue::from_static(API_CSP))
            })
            .clone()
    } else {
        header::HeaderValue::from_static(API_CSP)
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn count_responses(
    State(m): State<Shared>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method().clone();
    let response = next.run(req).await;
    m.metrics()
        .http_responses
        .with_label_values(&[method.as_str(), response.status().as_str()])
        .inc();
    response
}

async fn metrics(State(m): State<Shared>) -> Result<impl IntoResponse, ErrorReply> {
    let text = blocking(move || m.render_metrics()).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeRequest {
    public_key: String,
}

#[derive(Serialize)]
struct ChallengeReply {
    challenge: String,
    expires_at: i64,
}

async fn challenge(State(m): State<Shared>, body: Bytes) -> Reply<ChallengeReply> {
    blocking(move || {
        let req: ChallengeRequest = parse(&body)?;
        let (challenge, expires_at) = m.challenge(&req.public_key)?;
        Ok(Json(ChallengeReply {
            challenge,
            expires_at,
        }))
    })
    .await
}

async fn register(State(m): State<Shared>, body: Bytes) -> Reply<Party> {
    blocking(move || Ok(Json(m.register(&parse(&body)?)?))).await
}

async fn party(
    State(m): State<Shared>,
    Path(id): Path<String>,
) -> Reply<crate::service::PartyView> {
    blocking(move || Ok(Json(m.party_view(&id)?))).await
}

/// Unsigned: the attestation carries its attestor's signature, so whoever relays it
/// (usually the party) can change nothing, and only attestor keys can make one.
async fn submit_attestation(
    State(m): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<crate::attestations::Attestation>), ErrorReply> {
    blocking(move || {
        let att = parse(&body)?;
        Ok((StatusCode::CREATED, Json(m.submit_attestation(&id, &att)?)))
    })
    .await
}

async fn attestations(
    State(m): State<Shared>,
    Path(id): Path<String>,
) -> Reply<Vec<crate::attestations::Attestation>> {
    blocking(move || Ok(Json(m.attestations(&id)?))).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Revocation {
    #[serde(default)]
    reason: String,
}

/// Signed by the attestation's attestor key (`x-sublet-party` is that key's id).
async fn revoke_attestation(
    State(m): State<Shared>,
    Path((id, attestation)): Path<(String, String)>,
    req: SignedRequest,
) -> Reply<crate::attestations::Attestation> {
    blocking(move || {
        let revocation: Revocation = if req.body.iter().all(u8::is_ascii_whitespace) {
            Revocation::default()
        } else {
            req.json()?
        };
        Ok(Json(m.revoke_attestation(
            &req.method,
            &req.path_and_query,
            &req.signature,
            &req.body,
            &id,
            &attestation,
            &revocation.reason,
        )?))
    })
    .await
}

async fn balances(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<crate::service::Balances> {
    blocking(move || Ok(Json(m.balances(&req.party(&m)?, &id)?))).await
}

/// The web console: one page calling the public routes, and the private ones signed
/// in the browser with a key file the user picks (see console.html).
async fn console() -> axum::response::Html<&'static str> {
    axum::response::Html(CONSOLE)
}

async fn ledger_summary(State(m): State<Shared>) -> Reply<crate::ledger::LedgerSummary> {
    blocking(move || Ok(Json(m.ledger_summary()?))).await
}

/// Body of deposits, withdrawals and prepayments.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    /// Chosen by the client; sending the same operation again changes nothing.
    op_id: String,
    amount: Micros,
    #[serde(default)]
    reference: String,
    /// A treasurer's signed word for this deposit or withdrawal (the treasurer rail).
    #[serde(default)]
    authorization: Option<crate::rail::Authorization>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpOnly {
    op_id: String,
}

async fn deposit(
    State(m): State<Shared>,
    req: SignedRequest,
) -> Reply<crate::service::OperationResult> {
    blocking(move || {
        let who = req.party(&m)?;
        let t: Transfer = req.json()?;
        Ok(Json(m.deposit(
            &who,
            &t.op_id,
            t.amount,
            &t.reference,
            t.authorization.as_ref(),
        )?))
    })
    .await
}

async fn withdraw(
    State(m): State<Shared>,
    req: SignedRequest,
) -> Reply<crate::service::OperationResult> {
    blocking(move || {
        let who = req.party(&m)?;
        let t: Transfer = req.json()?;
        Ok(Json(m.withdraw(
            &who,
            &t.op_id,
            t.amount,
            &t.reference,
            t.authorization.as_ref(),
        )?))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TreasuryQuery {
    party: Option<String>,
    limit: Option<i64>,
}

/// The treasurer rail's audit trail: what was credited or paid out on whose signature.
async fn treasury(
    State(m): State<Shared>,
    query: Result<Query<TreasuryQuery>, QueryRejection>,
    req: SignedRequest,
) -> Reply<Vec<crate::rail::treasurer::Entry>> {
    let Query(q) =
        query.map_err(|e| Error::BadRequest(format!("invalid query: {}", e.body_text())))?;
    blocking(move || {
        let who = req.party(&m)?;
        Ok(Json(m.treasury(
            &who,
            q.party.as_deref(),
            q.limit.unwrap_or(100),
        )?))
    })
    .await
}

async fn release_held_back(
    State(m): State<Shared>,
    req: SignedRequest,
) -> Reply<crate::service::OperationResult> {
    blocking(move || {
        let who = req.party(&m)?;
        let op: OpOnly = req.json()?;
        Ok(Json(m.release_held_back(&who, &op.op_id)?))
    })
    .await
}

async fn publish_offer(State(m): State<Shared>, req: SignedRequest) -> Reply<Offer> {
    blocking(move || {
        let who = req.party(&m)?;
        Ok(Json(m.publish_offer(&who, &req.json()?)?))
    })
    .await
}

async fn search_offers(
    State(m): State<Shared>,
    filter: Result<Query<OfferFilter>, QueryRejection>,
) -> Reply<Vec<Offer>> {
    let Query(filter) =
        filter.map_err(|e| Error::BadRequest(format!("invalid search: {}", e.body_text())))?;
    blocking(move || Ok(Json(m.search_offers(&filter)?))).await
}

async fn offer(State(m): State<Shared>, Path(id): Path<String>) -> Reply<Offer> {
    blocking(move || Ok(Json(m.offer(&id)?))).await
}

async fn withdraw_offer(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Offer> {
    blocking(move || Ok(Json(m.withdraw_offer(&req.party(&m)?, &id)?))).await
}

async fn propose_contract(
    State(m): State<Shared>,
    req: SignedRequest,
) -> Result<(StatusCode, Json<Contract>), ErrorReply> {
    blocking(move || {
        let who = req.verify(&m)?;
        let new = req.json()?;
        Ok((
            StatusCode::CREATED,
            Json(m.propose_contract(&who, &req.body, &new)?),
        ))
    })
    .await
}

async fn my_contracts(State(m): State<Shared>, req: SignedRequest) -> Reply<Vec<Contract>> {
    blocking(move || Ok(Json(m.contracts_of(&req.party(&m)?)?))).await
}

async fn contract(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Contract> {
    blocking(move || Ok(Json(m.contract(&req.party(&m)?, &id)?))).await
}

/// The demander's signed proposal and the provider's signed acceptance.
async fn contract_evidence(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<sublet_market_api::contracts::ContractEvidence> {
    blocking(move || Ok(Json(m.contract_evidence(&req.party(&m)?, &id)?))).await
}

async fn accept_contract(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Contract> {
    blocking(move || {
        let who = req.verify(&m)?;
        Ok(Json(m.accept_contract(&who, &req.body, &id)?))
    })
    .await
}

async fn reject_contract(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Contract> {
    blocking(move || Ok(Json(m.reject_contract(&req.party(&m)?, &id)?))).await
}

async fn prepay(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<crate::service::OperationResult> {
    blocking(move || {
        let who = req.party(&m)?;
        let t: Transfer = req.json()?;
        Ok(Json(m.prepay(&who, &id, &t.op_id, t.amount)?))
    })
    .await
}

async fn terminate_contract(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<crate::service::Termination> {
    blocking(move || Ok(Json(m.terminate_contract(&req.party(&m)?, &id)?))).await
}

async fn submit_receipt(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<crate::receipts::Period> {
    blocking(move || {
        let who = req.verify(&m)?;
        let receipt = req.json()?;
        Ok(Json(m.submit_receipt(&who, &req.body, &id, &receipt)?))
    })
    .await
}

async fn periods(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Vec<crate::receipts::Period>> {
    blocking(move || Ok(Json(m.periods(&req.party(&m)?, &id)?))).await
}

async fn settle_period(
    State(m): State<Shared>,
    path: Result<Path<(String, i64)>, PathRejection>,
    req: SignedRequest,
) -> Reply<crate::receipts::Period> {
    let Path((id, start)) = path.map_err(|e| {
        Error::BadRequest(format!(
            "the period is named by its period_start in unix seconds: {}",
            e.body_text()
        ))
    })?;
    blocking(move || Ok(Json(m.settle_period(&req.party(&m)?, &id, start)?))).await
}

async fn rating(State(m): State<Shared>, Path(id): Path<String>) -> Reply<crate::ratings::Rating> {
    blocking(move || Ok(Json(m.rating(&id)?))).await
}

async fn observe(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Result<StatusCode, ErrorReply> {
    blocking(move || {
        let who = req.verify(&m)?;
        let o = req.json()?;
        m.observe(&who, &req.body, &id, &o)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn give_feedback(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<crate::quality::Feedback> {
    blocking(move || {
        let who = req.verify(&m)?;
        let f = req.json()?;
        Ok(Json(m.give_feedback(&who, &req.body, &id, &f)?))
    })
    .await
}

async fn feedback(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Option<crate::quality::Feedback>> {
    blocking(move || Ok(Json(m.feedback(&req.party(&m)?, &id)?))).await
}

async fn open_dispute(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Result<(StatusCode, Json<crate::disputes::Dispute>), ErrorReply> {
    blocking(move || {
        let who = req.verify(&m)?;
        let new = req.json()?;
        Ok((
            StatusCode::CREATED,
            Json(m.open_dispute(&who, &req.body, &id, &new)?),
        ))
    })
    .await
}

async fn contract_disputes(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Vec<crate::disputes::Dispute>> {
    blocking(move || Ok(Json(m.disputes_of_contract(&req.party(&m)?, &id)?))).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisputeQuery {
    #[serde(default)]
    state: crate::disputes::DisputeState,
}

async fn my_disputes(
    State(m): State<Shared>,
    query: Result<Query<DisputeQuery>, QueryRejection>,
    req: SignedRequest,
) -> Reply<Vec<crate::disputes::Dispute>> {
    let Query(query) = query.map_err(|e| {
        Error::BadRequest(format!(
            "invalid query (state is open, decided or any): {}",
            e.body_text()
        ))
    })?;
    blocking(move || Ok(Json(m.disputes_of(&req.party(&m)?, query.state)?))).await
}

async fn dispute(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<crate::disputes::Dispute> {
    blocking(move || Ok(Json(m.dispute(&req.party(&m)?, &id)?))).await
}

async fn decide_dispute(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<crate::disputes::Dispute> {
    blocking(move || {
        let who = req.verify(&m)?;
        let decision = req.json()?;
        Ok(Json(m.decide_dispute(&who, &req.body, &id, &decision)?))
    })
    .await
}
