//! The routes of support tickets, two-way reviews and the market's own contact checks:
//! thin handlers over [`crate::Market`], signed like the rest of the API.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sublet_market_api::Error;

use super::{ErrorReply, Reply, Shared, SignedRequest, blocking};
use crate::contacts::{Contact, ContactChallenge};
use crate::disputes::Dispute;
use crate::reviews::{Review, ReviewList};
use crate::tickets::{Ticket, TicketFilter};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/v1/contracts/{id}/reviews",
            post(give_review).get(contract_reviews),
        )
        .route("/v1/parties/{id}/reviews", get(party_reviews))
        .route("/v1/tickets", post(open_ticket).get(my_tickets))
        .route("/v1/tickets/{id}", get(ticket))
        .route("/v1/tickets/{id}/messages", post(reply_ticket))
        .route("/v1/tickets/{id}/close", post(close_ticket))
        .route("/v1/tickets/{id}/escalate", post(escalate_ticket))
        .route(
            "/v1/parties/{id}/contacts",
            post(request_contact_check).get(contacts),
        )
        .route("/v1/parties/{id}/contacts/verify", post(verify_contact))
}

async fn give_review(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Review> {
    blocking(move || {
        let who = req.verify(&m)?;
        let new = req.json()?;
        Ok(Json(m.give_review(&who, &req.body, &id, &new)?))
    })
    .await
}

async fn contract_reviews(State(m): State<Shared>, Path(id): Path<String>) -> Reply<Vec<Review>> {
    blocking(move || Ok(Json(m.contract_reviews(&id)?))).await
}

async fn party_reviews(State(m): State<Shared>, Path(id): Path<String>) -> Reply<ReviewList> {
    blocking(move || Ok(Json(m.party_reviews(&id)?))).await
}

async fn open_ticket(
    State(m): State<Shared>,
    req: SignedRequest,
) -> Result<(StatusCode, Json<Ticket>), ErrorReply> {
    blocking(move || {
        let who = req.verify(&m)?;
        let new = req.json()?;
        Ok((
            StatusCode::CREATED,
            Json(m.open_ticket(&who, &req.body, &new)?),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketQuery {
    #[serde(default)]
    state: TicketFilter,
}

async fn my_tickets(
    State(m): State<Shared>,
    query: Result<Query<TicketQuery>, QueryRejection>,
    req: SignedRequest,
) -> Reply<Vec<Ticket>> {
    let Query(query) = query.map_err(|e| {
        Error::BadRequest(format!(
            "invalid query (state is open, answered, closed, escalated or any): {}",
            e.body_text()
        ))
    })?;
    blocking(move || Ok(Json(m.tickets_of(&req.party(&m)?, query.state)?))).await
}

async fn ticket(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Ticket> {
    blocking(move || Ok(Json(m.ticket(&req.party(&m)?, &id)?))).await
}

async fn reply_ticket(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Ticket> {
    blocking(move || {
        let who = req.verify(&m)?;
        let new = req.json()?;
        Ok(Json(m.reply_ticket(&who, &req.body, &id, &new)?))
    })
    .await
}

async fn close_ticket(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Ticket> {
    blocking(move || Ok(Json(m.close_ticket(&req.party(&m)?, &id)?))).await
}

#[derive(Serialize)]
struct Escalation {
    ticket: Ticket,
    dispute: Dispute,
}

async fn escalate_ticket(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Escalation> {
    blocking(move || {
        let who = req.verify(&m)?;
        let (ticket, dispute) = m.escalate_ticket(&who, &req.body, &id)?;
        Ok(Json(Escalation { ticket, dispute }))
    })
    .await
}

async fn request_contact_check(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<ContactChallenge> {
    blocking(move || {
        let who = req.party(&m)?;
        let ask = req.json()?;
        Ok(Json(m.request_contact_check(&who, &id, &ask)?))
    })
    .await
}

async fn contacts(State(m): State<Shared>, Path(id): Path<String>) -> Reply<Vec<Contact>> {
    blocking(move || Ok(Json(m.contacts(&id)?))).await
}

async fn verify_contact(
    State(m): State<Shared>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> Reply<Contact> {
    blocking(move || {
        let who = req.verify(&m)?;
        let proof = req.json()?;
        Ok(Json(m.verify_contact(&who, &req.body, &id, &proof)?))
    })
    .await
}
