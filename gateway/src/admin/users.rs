//! The users and access keys API (JSON, behind the admin token), what `sublet user` and
//! `sublet key` call:
//!
//! - `GET /admin/v1/users`: every user with `bytes` and `objects` its buckets hold (the
//!   default user, owner of the configuration file's keys and of buckets without owner,
//!   first); `GET /admin/v1/users/{id}`: one, with its keys.
//! - `PUT /admin/v1/users/{id}` `{"displayName", "maxBytes", "maxObjects"}`: creates the
//!   user (201) or changes what is given (200).
//! - `DELETE /admin/v1/users/{id}`: refused (409) while it has keys or buckets.
//! - `GET /admin/v1/keys[?user=ID]`: keys without secrets (the configuration file's too,
//!   `source: config`).
//! - `POST /admin/v1/keys` `{"user", "accessKey"?, "secretKey"?, "grants": ["bucket:rw"]}`:
//!   201 with `secretKey`, the one answer that shows it; 200 without it when the given
//!   access key exists already as asked (creating twice is harmless).
//! - `POST /admin/v1/keys/{access}/rotate` (a new secret, shown once), `.../disable`,
//!   `.../enable`; `DELETE /admin/v1/keys/{access}`. The configuration file's keys answer
//!   409: the file is read at every start, so a change made here would not last.
//!
//! Every change is in the metadata store (journaled, in snapshots) before the answer, and in
//! force on this gateway at once; other gateways on the same database see it within
//! [`crate::node::users::REFRESH_INTERVAL`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Admin, error, failed};
use crate::node::users::{Accounts, KeyRequest, UserRequest, UsersError};

pub(super) fn routes() -> axum::Router<Admin> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/admin/v1/users", get(list_users))
        .route(
            "/admin/v1/users/{id}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .route("/admin/v1/keys", get(list_keys).post(create_key))
        .route("/admin/v1/keys/{access}", axum::routing::delete(delete_key))
        .route("/admin/v1/keys/{access}/rotate", post(rotate_key))
        .route("/admin/v1/keys/{access}/disable", post(disable_key))
        .route("/admin/v1/keys/{access}/enable", post(enable_key))
}

/// What the admin API answers for a refused users, keys or bucket-claim call.
pub(super) fn refused(e: UsersError) -> Response {
    let status = match &e {
        UsersError::Invalid(_) => StatusCode::BAD_REQUEST,
        UsersError::NotFound(_) => StatusCode::NOT_FOUND,
        UsersError::Conflict(_) => StatusCode::CONFLICT,
        UsersError::NotYours(_) => StatusCode::FORBIDDEN,
        UsersError::Meta(_) | UsersError::Internal(_) => return failed(&e, e.to_string()),
    };
    error(status, e.to_string())
}

/// Runs `f` on the accounts off the async workers; for a change, answers only once it is in
/// the metadata journal (as an S3 write is).
async fn run<T: Send + 'static>(
    admin: &Admin,
    change: bool,
    f: impl FnOnce(&Accounts) -> Result<T, UsersError> + Send + 'static,
) -> Result<T, Response> {
    let accounts = Arc::clone(admin.gateway.accounts());
    let out = match tokio::task::spawn_blocking(move || f(&accounts)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(refused(e)),
        Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    if change
        && let Some(journal) = admin.gateway.journal()
        && let Err(e) = journal.barrier().await
    {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the change is made but not yet in the metadata journal: {e}"),
        ));
    }
    Ok(out)
}

/// The JSON body (an empty one is the default), or why not.
fn json_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not the JSON expected: {e}"))
}

fn respond<T: serde::Serialize>(r: Result<T, Response>, status: StatusCode) -> Response {
    match r {
        Ok(v) => (status, Json(v)).into_response(),
        Err(r) => r,
    }
}

async fn list_users(State(admin): State<Admin>) -> Response {
    let users = run(&admin, false, |a| a.users()).await;
    respond(
        users.map(|items| serde_json::json!({ "items": items })),
        StatusCode::OK,
    )
}

async fn get_user(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    let found = run(&admin, false, move |a| {
        let user = a.user(&id)?;
        let keys = a.keys(Some(&id))?;
        let mut value =
            serde_json::to_value(user).map_err(|e| UsersError::Internal(e.to_string()))?;
        value["keys"] =
            serde_json::to_value(keys).map_err(|e| UsersError::Internal(e.to_string()))?;
        Ok(value)
    })
    .await;
    respond(found, StatusCode::OK)
}

async fn put_user(State(admin): State<Admin>, Path(id): Path<String>, body: Bytes) -> Response {
    let req: UserRequest = match json_body(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let now = crate::clock::now_ms();
    match run(&admin, true, move |a| a.put_user(&id, &req, now)).await {
        Ok((user, true)) => (StatusCode::CREATED, Json(user)).into_response(),
        Ok((user, false)) => (StatusCode::OK, Json(user)).into_response(),
        Err(r) => r,
    }
}

async fn delete_user(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    let done = run(&admin, true, move |a| a.delete_user(&id)).await;
    respond(done.map(|()| serde_json::json!({})), StatusCode::OK)
}

#[derive(Deserialize)]
struct KeysQuery {
    user: Option<String>,
}

async fn list_keys(State(admin): State<Admin>, Query(q): Query<KeysQuery>) -> Response {
    let keys = run(&admin, false, move |a| a.keys(q.user.as_deref())).await;
    respond(
        keys.map(|items| serde_json::json!({ "items": items })),
        StatusCode::OK,
    )
}

async fn create_key(State(admin): State<Admin>, body: Bytes) -> Response {
    let req: KeyRequest = match json_body(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if req.user.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "user is missing: every key belongs to a user".into(),
        );
    }
    let now = crate::clock::now_ms();
    match run(&admin, true, move |a| a.create_key(&req, now)).await {
        Ok((key, true)) => (StatusCode::CREATED, Json(key)).into_response(),
        Ok((key, false)) => (StatusCode::OK, Json(key)).into_response(),
        Err(r) => r,
    }
}

async fn rotate_key(State(admin): State<Admin>, Path(access): Path<String>) -> Response {
    let now = crate::clock::now_ms();
    let key = run(&admin, true, move |a| a.rotate_key(&access, now)).await;
    respond(key, StatusCode::OK)
}

async fn disable_key(State(admin): State<Admin>, Path(access): Path<String>) -> Response {
    let key = run(&admin, true, move |a| a.set_key_active(&access, false)).await;
    respond(key, StatusCode::OK)
}

async fn enable_key(State(admin): State<Admin>, Path(access): Path<String>) -> Response {
    let key = run(&admin, true, move |a| a.set_key_active(&access, true)).await;
    respond(key, StatusCode::OK)
}

async fn delete_key(State(admin): State<Admin>, Path(access): Path<String>) -> Response {
    let done = run(&admin, true, move |a| a.delete_key(&access)).await;
    respond(done.map(|()| serde_json::json!({})), StatusCode::OK)
}
