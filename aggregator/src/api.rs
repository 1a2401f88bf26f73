//! Stage `serve`: the HTTP JSON API.
//!
//! - `GET /health`: liveness and ingest counters.
//! - `GET /api/v1/openapi.json`: the OpenAPI 3 document of this API (`aggregator/openapi.json`).
//! - `GET /api/v1/events`, `/api/v1/trajectory`, `/api/v1/flow`, `/api/v1/key-vehicles`: the
//!   operator queries of [`crate::query`], also served over zenoh. `from`/`to` take UTC
//!   milliseconds or RFC 3339 (`2026-11-29T08:00:00Z`); `from` is inclusive, `to` exclusive.
//! - `GET /api/v1/events/{event_id}`: one event.
//! - `GET /api/v1/stats`: events per kind, ended object tracks per class.
//! - `GET /api/v1/checkpoints`: the checkpoint registry (id, name, coordinates, county).
//! - `POST /api/v1/events/{event_id}/review`: confirm or reject a violation (reviewer, reason).
//! - `GET /api/v1/events/{event_id}/audit`: the event's audit trail.
//! - `GET /metrics`: Prometheus metrics.
//! - `GET /api/v1/evidence/{image_id}`: an evidence image (JPEG), its sha256 in
//!   `X-Content-SHA256`; an event's `evidence` lists its image ids.
//! - `GET /api/v1/watchlist`: the vehicle registry and watch list in force.
//! - `PUT /api/v1/watchlist`: a newer version (JSON, `protocol::registry::RegistryFile`);
//!   it is kept and pushed down to the edge nodes over zenoh. An older or equal version is
//!   refused with 409, an invalid one with 400.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::ingest::IngestMetrics;
use crate::store::{EventStore, StoreError};

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Mutex<Box<dyn EventStore>>>,
    pub metrics: Arc<IngestMetrics>,
    pub id: String,
    pub scope: String,
    pub checkpoints: Arc<crate::checkpoints::Registry>,
    pub http_metrics: Arc<crate::metrics::HttpMetrics>,
    pub watchlist: Arc<crate::watchlist::Watchlist>,
    pub session: zenoh::Session,
    /// The GA/T 1400 exporter's counters, when export is on.
    pub export: Option<Arc<crate::viid::ExportMetrics>>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/api/v1/events",
            get(|State(s): State<ApiState>, RawQuery(q): RawQuery| run_query("events", s, q)),
        )
        .route(
            "/api/v1/trajectory",
            get(|State(s): State<ApiState>, RawQuery(q): RawQuery| run_query("trajectory", s, q)),
        )
        .route(
            "/api/v1/flow",
            get(|State(s): State<ApiState>, RawQuery(q): RawQuery| run_query("flow", s, q)),
        )
        .route(
            "/api/v1/key-vehicles",
            get(|State(s): State<ApiState>, RawQuery(q): RawQuery| run_query("key_vehicles", s, q)),
        )
        .route("/api/v1/events/{event_id}", get(get_event))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/checkpoints", get(checkpoints))
        .route(
            "/api/v1/events/{event_id}/review",
            axum::routing::post(review),
        )
        .route("/api/v1/events/{event_id}/audit", get(audit))
        .route("/metrics", get(prometheus))
        .route("/api/v1/evidence/{image_id}", get(get_evidence))
        .route("/api/v1/watchlist", get(get_watchlist).put(put_watchlist))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            time_request,
        ))
        .with_state(state)
}

/// Times every request by its route template (not its concrete path: ids would explode the
/// label set).
async fn time_request(
    State(s): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let t = std::time::Instant::now();
    let res = next.run(req).await;
    s.http_metrics.observe(&route, t.elapsed());
    res
}

async fn get_watchlist(State(s): State<ApiState>) -> Response {
    match s.watchlist.current() {
        Some(f) => Json(f.as_ref().clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no watch list in force; PUT one to /api/v1/watchlist"})),
        )
            .into_response(),
    }
}

async fn put_watchlist(State(s): State<ApiState>, body: axum::body::Bytes) -> Response {
    use crate::watchlist::WatchlistError;
    if s.watchlist.follows_upstream {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "this county aggregator follows the city's watch list (watchlist.follow_upstream); put new versions in force at the city aggregator"})),
        )
            .into_response();
    }
    let wl = s.watchlist.clone();
    let result =
        tokio::task::spawn_blocking(move || wl.replace_bytes(&body, "PUT /api/v1/watchlist"))
            .await
            .expect("replacing does not panic");
    match result {
        Ok(f) => {
            crate::watchlist::publish(&s.session, &s.watchlist).await;
            Json(json!({"version": f.version, "vehicles": f.vehicles.len(), "published_to": s.watchlist.publish_keys}))
                .into_response()
        }
        Err(e @ WatchlistError::NotNewer { .. }) => {
            (StatusCode::CONFLICT, Json(json!({"error": e.to_string()}))).into_response()
        }
        Err(e @ WatchlistError::Invalid { .. }) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn prometheus(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(&s.metrics.snapshot(), &s.http_metrics),
    )
}

/// An HTTP status and the message the client gets as `{"error": ...}`.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Cursor(_) => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            StoreError::Query(_) => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            StoreError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Review(_) => ApiError(StatusCode::CONFLICT, e.to_string()),
            _ => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

pub(crate) async fn with_store<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&mut dyn EventStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(store.lock().expect("not poisoned").as_mut()))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

async fn health(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let mut h =
        json!({ "status": "ok", "id": s.id, "scope": s.scope, "ingest": s.metrics.snapshot() });
    if let Some(m) = &s.export {
        use std::sync::atomic::Ordering::Relaxed;
        let queue = with_store(&s, |st| st.export_stats()).await.ok();
        h["export"] = json!({
            "registered": m.registered.load(Relaxed),
            "registrations": m.registrations.load(Relaxed),
            "exported": m.exported.load(Relaxed),
            "refused": m.refused.load(Relaxed),
            "gave_up": m.gave_up.load(Relaxed),
            "posts_failed": m.posts_failed.load(Relaxed),
            "queued": queue.as_ref().map(|q| q.queued),
            "failed": queue.as_ref().map(|q| q.failed),
        });
    }
    Json(h)
}

/// `GET /api/v1/<query>?...`: one operator query of [`crate::query`].
async fn run_query(
    name: &'static str,
    s: ApiState,
    params: Option<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(
        crate::query::answer(&s, name, params.as_deref().unwrap_or("")).await?,
    ))
}

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn get_event(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<protocol::Event>, ApiError> {
    let id2 = id.clone();
    match with_store(&s, move |st| st.get(&id2)).await? {
        Some(ev) => Ok(Json(ev)),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no event '{id}'"))),
    }
}

async fn get_evidence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id2 = id.clone();
    match with_store(&s, move |st| st.get_evidence(&id2)).await? {
        Some(b) => Ok((
            [
                (axum::http::header::CONTENT_TYPE, b.content_type.clone()),
                (
                    axum::http::HeaderName::from_static("x-content-sha256"),
                    b.sha256.clone(),
                ),
            ],
            b.bytes,
        )
            .into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no evidence image '{id}' (images arrive shortly before their event)"),
        )),
    }
}

/// Confirms or rejects a violation: `{"decision": "confirmed"|"rejected", "reviewer": "...",
/// "reason": "..."}`. Recorded in the event and in its audit trail.
async fn review(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<crate::store::Review>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<protocol::Event>, ApiError> {
    let Json(r) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e}; send {{\"decision\": \"confirmed\" or \"rejected\", \"reviewer\": ..., \"reason\": ...}}")))?;
    Ok(Json(
        with_store(&s, move |st| st.review(&id, &r, protocol::time::now_ms())).await?,
    ))
}

async fn audit(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let trail = with_store(&s, move |st| st.audit_of(&id)).await?;
    Ok(Json(json!({ "audit": trail })))
}

async fn checkpoints(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "checkpoints": s.checkpoints.all() }))
}

async fn stats(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let st = with_store(&s, |st| st.stats()).await?;
    Ok(Json(json!({ "store": st, "ingest": s.metrics.snapshot() })))
}

#[cfg(test)]
mod tests {
    /// Every route the router serves is in the OpenAPI document with its methods, and the
    /// document names no route the router lacks.
    #[test]
    fn openapi_document_matches_the_router() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let src = include_str!("api.rs");
        let mut routes = std::collections::BTreeMap::new();
        for part in src.split(".route(").skip(1) {
            let path = part.split('"').nth(1).unwrap().to_string();
            let call = &part[..part.find(")\n").unwrap_or(part.len())];
            let mut methods: Vec<&str> = ["get", "post", "put", "delete"]
                .into_iter()
                .filter(|m| call.contains(&format!("{m}(")))
                .collect();
            methods.sort();
            if path.starts_with('/') {
                routes.insert(path, methods);
            }
        }
        assert!(routes.len() >= 14, "{routes:?}");
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in &routes {
            let entry = paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} missing from openapi.json"));
            let mut documented: Vec<&str> = entry
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            documented.sort();
            assert_eq!(&documented, methods, "{path}");
        }
        for path in paths.keys() {
            assert!(
                routes.contains_key(path),
                "{path} documented but not routed"
            );
        }
    }
}
