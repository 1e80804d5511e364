//! The server API (`/api/v1/`) and the admin dashboard (`/admin`): the app's
//! backend, or an operator, sees and steers every room and peer of the
//! deployment. A thin translation onto the hub, whose broker answers for every
//! node: no endpoint here knows whether Redis is there.
//!
//! Off unless `--api-key` is set (the routes are then not mounted: 404).
//! Every request carries `Authorization: Bearer KEY`; every error is
//! `{"code": <stable code>, "message": ...}` with the protocol's codes. Every
//! call is logged with the key's fingerprint (never the key) and counted.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use metrics::counter;
use rust_embed::RustEmbed;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use switchboard_protocol::server::{encode, REMOVED_CLOSE_CODE};
use switchboard_protocol::ErrorCode;
use tracing::info;

use crate::app::App;
use crate::auth::{self, Claims};
use crate::broker::{meta_of, user_of, BrokerError, Command, NodeInfo};
use crate::hub::activity::is_told;
use crate::hub::room::validate_name;
use crate::outbox::Removal;
use crate::peer_id::PeerId;
use crate::webhooks::rfc3339_ms;

/// The largest request body.
const MAX_BODY: usize = 1024 * 1024;
/// Rooms per page unless `?limit=` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// The reason a removed peer's close frame carries unless `?reason=` says otherwise.
const DEFAULT_REASON: &str = "removed by the server";
/// The longest close reason a WebSocket close frame can carry.
const MAX_REASON: usize = 123;

/// The dashboard's files, served at `/admin`.
#[derive(RustEmbed)]
#[folder = "../../admin/"]
struct Dashboard;

/// The API's routes and the dashboard, for the main router or `--api-listen`.
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    let api = Router::new()
        .route("/rooms", get(rooms))
        .route("/rooms/{room}", get(room).delete(close_room))
        .route("/rooms/{room}/broadcast", post(broadcast))
        .route("/peers/{id}/send", post(send))
        .route("/peers/{id}", delete(remove_peer))
        .route("/nodes", get(nodes))
        .route("/tokens", post(tokens))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(app, authorize))
        // Larger bodies are refused by the extractor, as `message-too-large`.
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .route("/admin", get(dashboard_index))
        .route("/admin/", get(dashboard_index))
        .route("/admin/{file}", get(dashboard_file))
        .nest("/api/v1", api)
}

/// An API error: its status and stable code.
struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, message)
    }

    fn unknown_room(room: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::UnknownRoom, format!("no room `{room}` has members"))
    }

    fn unknown_peer(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::UnknownTarget, format!("no peer `{id}` is connected"))
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, format!("{error}; try again shortly"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.code.as_str(), "message": self.message}))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// The first 8 bytes of a key's SHA-256, in hex: names it in logs without revealing it.
pub fn fingerprint(key: &str) -> String {
    Sha256::digest(key.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the bearer key, then logs and counts the call.
async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| route_label(p.as_str())).unwrap_or("unknown");
    let method = request.method().clone();
    let presented = bearer(request.headers());
    // Compared as digests: the time a comparison takes tells nothing about the key.
    let key = presented.and_then(|presented| {
        let digest = Sha256::digest(presented.as_bytes());
        app.settings.api_keys.iter().find(|key| Sha256::digest(key.as_bytes()) == digest)
    });
    let (response, key) = match key {
        Some(key) => (next.run(request).await, fingerprint(key)),
        None => {
            let message = "send `Authorization: Bearer KEY` with a key of --api-key";
            (ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message).into_response(), "-".into())
        }
    };
    let status = response.status().as_u16();
    info!(%method, route, status, key, "api call");
    counter!("switchboard_api_requests_total", "route" => route, "status" => status_label(status)).increment(1);
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// A metric label for a route: from a fixed set, never the client's path.
fn route_label(path: &str) -> &'static str {
    match path {
        "/api/v1/rooms" => "rooms",
        "/api/v1/rooms/{room}" => "room",
        "/api/v1/rooms/{room}/broadcast" => "broadcast",
        "/api/v1/peers/{id}/send" => "send",
        "/api/v1/peers/{id}" => "peer",
        "/api/v1/nodes" => "nodes",
        "/api/v1/tokens" => "tokens",
        _ => "unknown",
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        204 => "204",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        413 => "413",
        503 => "503",
        _ => "other",
    }
}

async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::UnknownType, "no such API route")
}

/// A JSON body, or the API's error for it.
fn json_body<T: for<'de> Deserialize<'de>>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MessageTooLarge,
            format!("the body must be at most {MAX_BODY} bytes"),
        ),
        _ => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedJson, rejection.body_text()),
    })?;
    serde_json::from_slice(&body).map_err(|error| {
        let code = if error.is_data() { ErrorCode::InvalidField } else { ErrorCode::MalformedJson };
        ApiError::new(StatusCode::BAD_REQUEST, code, error.to_string())
    })
}

/// A room name from the path: a native room's rules.
fn room_name(app: &App, room: &str) -> Result<Arc<str>, ApiError> {
    validate_name(room, app.settings.max_room_name_len).map_err(ApiError::invalid)?;
    Ok(room.into())
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /api/v1/rooms`: every room with members, by name, a page at a time.
async fn rooms(
    State(app): State<Arc<App>>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(page) = page.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let after = match &page.cursor {
        Some(cursor) => Some(
            URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::invalid("cursor is not one this API gave"))?,
        ),
        None => None,
    };
    let mut rooms = app.hub.broker().rooms().await?;
    rooms.retain(|room| is_told(&room.name) && after.as_deref().is_none_or(|after| room.name.as_str() > after));
    rooms.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let more = rooms.len() > limit;
    rooms.truncate(limit);
    let next_cursor = more.then(|| rooms.last().map(|room| URL_SAFE_NO_PAD.encode(room.name.as_bytes()))).flatten();
    let rooms: Vec<Value> = rooms
        .iter()
        .map(|room| {
            json!({"name": room.name, "members": room.members, "capacity": room.capacity, "created": time(room.created)})
        })
        .collect();
    Ok(Json(json!({"rooms": rooms, "next_cursor": next_cursor})).into_response())
}

/// A time (ms since the epoch) in RFC 3339, `null` when unknown (0: a
/// record Redis lost and a node wrote back).
fn time(ms: u64) -> Value {
    if ms == 0 {
        Value::Null
    } else {
        Value::from(rfc3339_ms(ms))
    }
}

/// `GET /api/v1/rooms/{room}`: a room and its members on every node.
async fn room(State(app): State<Arc<App>>, Path(room): Path<String>) -> ApiResult {
    let name = room_name(&app, &room)?;
    let detail = app.hub.broker().room(&name).await?.ok_or_else(|| ApiError::unknown_room(&room))?;
    let members: Vec<Value> = detail
        .members
        .iter()
        .map(|member| {
            let mut entry =
                json!({"id": member.id.as_str(), "node": member.node.as_str(), "joined": time(member.joined)});
            if let Some(user) = user_of(&member.shown) {
                entry["user"] = Value::from(user);
            }
            if let Some(meta) = meta_of(&member.shown) {
                entry["meta"] = serde_json::from_str(meta.get()).unwrap_or(Value::Null);
            }
            entry
        })
        .collect();
    let summary = &detail.summary;
    Ok(Json(json!({
        "name": summary.name,
        "capacity": summary.capacity,
        "created": time(summary.created),
        "members": members,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct DataBody {
    data: Box<RawValue>,
}

/// `POST /api/v1/rooms/{room}/broadcast`: every member gets the data, from `"server"`.
async fn broadcast(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let name = room_name(&app, &room)?;
    let DataBody { data } = json_body(body)?;
    if app.hub.broker().members(&name).await?.is_empty() {
        return Err(ApiError::unknown_room(&room));
    }
    app.hub.broadcast_from_server(&name, &data)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/peers/{id}/send`: the peer gets `server-message`, on whichever node.
async fn send(State(app): State<Arc<App>>, Path(id): Path<String>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let DataBody { data } = json_body(body)?;
    let peer = PeerId::parse(&id).ok_or_else(|| ApiError::unknown_peer(&id))?;
    let command = Command::Send(encode::server_message(&data));
    match app.hub.command(peer, &command).await? {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Err(ApiError::unknown_peer(&id)),
    }
}

#[derive(Deserialize)]
struct RemoveQuery {
    code: Option<u16>,
    reason: Option<String>,
}

/// `DELETE /api/v1/peers/{id}`: the peer's connection closes with the code;
/// its rooms hear `peer-left`; its session cannot be resumed.
async fn remove_peer(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("code must be 4000 to 4999 ({})", e.body_text())))?;
    let code = query.code.unwrap_or(REMOVED_CLOSE_CODE);
    if !(4000..=4999).contains(&code) {
        return Err(ApiError::invalid("code must be 4000 to 4999"));
    }
    let reason = query.reason.unwrap_or_else(|| DEFAULT_REASON.to_owned());
    if reason.len() > MAX_REASON {
        return Err(ApiError::invalid(format!("reason must be at most {MAX_REASON} bytes")));
    }
    let peer = PeerId::parse(&id).ok_or_else(|| ApiError::unknown_peer(&id))?;
    let command = Command::Remove(Removal { code, reason: reason.into() });
    match app.hub.command(peer, &command).await? {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Err(ApiError::unknown_peer(&id)),
    }
}

/// `DELETE /api/v1/rooms/{room}`: every member is out (`room-closed`), the room is gone.
async fn close_room(State(app): State<Arc<App>>, Path(room): Path<String>) -> ApiResult {
    let name = room_name(&app, &room)?;
    match app.hub.close_room(&name).await? {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Err(ApiError::unknown_room(&room)),
    }
}

/// `GET /api/v1/nodes`: every live node.
async fn nodes(State(app): State<Arc<App>>) -> ApiResult {
    let now = crate::broker::now_ms();
    let nodes: Vec<Value> = app
        .hub
        .nodes()
        .await?
        .iter()
        .map(|node: &NodeInfo| {
            json!({
                "id": node.id.as_str(),
                "address": node.address,
                "version": node.version,
                "started": time(node.started),
                "uptime_seconds": now.saturating_sub(node.started) / 1000,
                "connections": node.connections,
                "rooms": node.rooms,
                "messages_in": node.messages_in,
            })
        })
        .collect();
    Ok(Json(json!({"nodes": nodes})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    sub: String,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    capacity: Option<u32>,
    /// A duration (`"1h"`, `"90s"`) or seconds.
    #[serde(default)]
    ttl: Option<Value>,
}

/// `POST /api/v1/tokens`: a client token, as `switchboard token` mints it.
async fn tokens(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let request: TokenRequest = json_body(body)?;
    if request.sub.is_empty() {
        return Err(ApiError::invalid("sub must not be empty"));
    }
    let ttl = match &request.ttl {
        None => std::time::Duration::from_secs(3600),
        Some(Value::Number(seconds)) => std::time::Duration::from_secs(
            seconds.as_u64().ok_or_else(|| ApiError::invalid("ttl must be a whole number of seconds"))?,
        ),
        Some(Value::String(text)) => {
            humantime::parse_duration(text).map_err(|e| ApiError::invalid(format!("ttl: {e}")))?
        }
        Some(_) => return Err(ApiError::invalid("ttl must be seconds or a duration such as \"1h\"")),
    };
    if ttl.is_zero() {
        return Err(ApiError::invalid("ttl must be more than zero"));
    }
    let secret = app
        .settings
        .auth_secret
        .as_deref()
        .ok_or_else(|| ApiError::invalid("this server has no --auth-secret to sign tokens with"))?;
    let exp = auth::now() + ttl.as_secs();
    let claims = Claims { sub: request.sub, exp, nbf: None, rooms: request.rooms, capacity: request.capacity };
    let token = auth::mint(&claims, Some(secret), None).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(Json(json!({"token": token, "expires": time(exp * 1000)})).into_response())
}

async fn dashboard_index(headers: HeaderMap) -> Response {
    super::static_files::serve::<Dashboard>("index.html", &headers)
}

async fn dashboard_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    super::static_files::serve::<Dashboard>(&file, &headers)
}
