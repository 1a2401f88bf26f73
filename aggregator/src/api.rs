//! Stage `serve`: the HTTP JSON API.
//!
//! - `GET /health`: liveness and ingest counters.
//! - `GET /api/v1/openapi.json`: the OpenAPI 3 document of this API (`aggregator/openapi.json`).
//! - `GET /api/v1/events`, `/api/v1/trajectory`, `/api/v1/flow`, `/api/v1/key-vehicles`: the
//!   operator queries of [`crate::query`], also served over zenoh. `from`/`to` take UTC
//!   milliseconds or RFC 3339 with any offset (`2026-11-29T08:00:00Z`,
//!   `2026-11-29T16:00:00+08:00`); `from` is inclusive, `to` exclusive.
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

use axum::extract::{ConnectInfo, Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use serde_json::json;

use crate::auth::{LoginError, Principal};
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
    /// Users, sessions and login limits.
    pub auth: Arc<crate::auth::Auth>,
    /// Live alerts and node health, for the dashboard.
    pub live: Arc<crate::live::Live>,
    /// What one client may cost (`[http]`).
    pub http_limits: crate::http_server::Limits,
    /// The HTTP server's connection counters.
    pub connections: Arc<crate::http_server::ConnMetrics>,
    /// A city's pull from its counties (empty elsewhere).
    pub sync: Arc<crate::sync::SyncMetrics>,
    /// Seconds between a city's pulls (a county silent for three is reported).
    pub sync_interval_secs: u64,
    /// The once-only jobs this aggregator holds.
    pub leases: Arc<crate::lease::Leases>,
    /// The dashboard's language and time zone (`[display]`).
    pub display: Arc<crate::config::DisplayConfig>,
    /// `[[crossings]]`, for the `timing` query.
    pub crossings: Arc<Vec<crate::timing::CrossingConfig>>,
    /// The JT/T 808 gateway, when one runs.
    pub jt808: Option<Arc<crate::jt808::Gateway>>,
}

/// Who made a request and from where; set by [`authenticate`] on every request it lets in.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The client's address, for the audit log.
    pub from: String,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/events", query_get("events"))
        .route("/api/v1/trajectory", query_get("trajectory"))
        .route("/api/v1/flow", query_get("flow"))
        .route("/api/v1/timing", query_get("timing"))
        .route("/api/v1/vehicles/positions", get(vehicle_positions))
        .route("/api/v1/vehicles/alerts", get(vehicle_alerts))
        .route("/api/v1/vehicles/track", get(vehicle_track))
        .route("/api/v1/key-vehicles", query_get("key_vehicles"))
        .route("/api/v1/events/{event_id}", get(get_event))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/checkpoints", get(checkpoints))
        .route(
            "/api/v1/events/{event_id}/review",
            axum::routing::post(review),
        )
        .route(
            "/api/v1/events/{event_id}/reopen",
            axum::routing::post(reopen),
        )
        .route("/api/v1/events/{event_id}/audit", get(audit))
        .route("/metrics", get(prometheus))
        .route("/api/v1/evidence/{image_id}", get(get_evidence))
        .route("/api/v1/cameras/{camera_id}/live", get(camera_live))
        .route(
            "/api/v1/cameras/{camera_id}/zones",
            get(get_zones).put(put_zones),
        )
        .route("/api/v1/cameras/{camera_id}/zones/audit", get(zones_audit))
        .route("/api/v1/watchlist", get(get_watchlist).put(put_watchlist))
        .route("/api/v1/accidents", axum::routing::post(import_accidents))
        .route("/api/v1/accidents/patterns", get(accident_patterns))
        .route("/api/v1/login", axum::routing::post(login))
        .route("/api/v1/logout", axum::routing::post(logout))
        .route("/api/v1/whoami", get(whoami))
        .route(
            "/api/v1/users/{user}/unlock",
            axum::routing::post(unlock_user),
        )
        .route("/api/v1/audit-log", get(audit_log))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/alerts/stream", get(alerts_stream))
        .route("/api/v1/counts", query_get("counts"))
        .merge(crate::dashboard::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            time_request,
        ))
        .layer(axum::middleware::from_fn(refuse_control_characters))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.http_limits.max_body_bytes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.http_limits,
            crate::http_server::bounded_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.http_limits.tls,
            one_error_shape_and_security_headers,
        ))
        .with_state(state)
}

/// Whether percent-encoded text (a path or a query) decodes to a control character (a NUL
/// no store can hold, a line break that would forge a log line).
fn encodes_control_character(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        let decoded = if c == b'%' && i + 2 < b.len() {
            std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        } else {
            Some(c)
        };
        decoded.is_some_and(|d| d < 0x20 || d == 0x7f)
    })
}

/// Refuses, before any other work (login included), a request whose path or query holds a
/// control character: no route takes one, and a store would refuse it later with its own
/// words.
async fn refuse_control_characters(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = req.uri();
    if encodes_control_character(uri.path()) || uri.query().is_some_and(encodes_control_character) {
        return ApiError(
            StatusCode::BAD_REQUEST,
            "the path or a parameter holds a control character (such as %00); no parameter takes one".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// Every answer carries the security headers, and every error is `{"error": "..."}` JSON:
/// axum's own rejections (a bad path or query parameter, a malformed body) and 404 / 405
/// included, so a client reads one shape whatever went wrong.
async fn one_error_shape_and_security_headers(
    State(https): State<bool>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header::{self, HeaderValue};
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (mut parts, body) = res.into_parts();
        let text = axum::body::to_bytes(body, 64 * 1024)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        let error = match status {
            StatusCode::METHOD_NOT_ALLOWED => format!(
                "{method} is not allowed on {path} (see the Allow header and /api/v1/openapi.json)"
            ),
            StatusCode::NOT_FOUND if text.is_empty() => {
                format!("nothing at {path}; the routes are in /api/v1/openapi.json")
            }
            _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
            _ => text,
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res = Response::from_parts(
            parts,
            axum::body::Body::from(json!({ "error": error }).to_string()),
        );
    }
    let h = res.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // Answers name plates and people: no shared cache keeps them.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    res
}

/// `GET` of one operator query of [`crate::query`], for the caller.
fn query_get(name: &'static str) -> axum::routing::MethodRouter<ApiState> {
    get(
        move |State(s): State<ApiState>, Extension(c): Extension<Caller>, RawQuery(q): RawQuery| {
            run_query(name, s, c, q)
        },
    )
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

/// Routes anyone may call: liveness, metrics for the scraper, the API's description, login.
const OPEN_ROUTES: &[&str] = &[
    "/health",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/login",
];

/// Lets a request in with its [`Caller`], or answers 401. With `auth.required = false` every
/// request is an anonymous administrator.
async fn authenticate(
    State(s): State<ApiState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    req.extensions_mut().insert(ClientIp(ip));
    let from = ip
        .map(|i| i.to_string())
        .unwrap_or_else(|| "unknown".into());
    let principal = if !s.auth.required {
        Some(Principal::anonymous_admin())
    } else {
        crate::auth::token_of(req.headers()).and_then(|t| s.auth.session(&t))
    };
    match principal {
        Some(principal) => {
            req.extensions_mut().insert(Caller { principal, from });
        }
        None if OPEN_ROUTES.contains(&req.uri().path())
            || crate::dashboard::is_asset(req.uri().path()) => {}
        None => {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "log in first: POST /api/v1/login with {\"user\", \"password\"}, then send Authorization: Bearer <token>"})),
            )
                .into_response()
        }
    }
    next.run(req).await
}

/// The client's address, when the server knows it.
#[derive(Debug, Clone, Copy)]
struct ClientIp(Option<std::net::IpAddr>);

fn forbidden(what: &str) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, format!("your role may not {what}"))
}

/// Writes one line to the audit log.
pub(crate) async fn audit_line(
    s: &ApiState,
    action: &str,
    actor: &str,
    event_id: &str,
    detail: String,
) -> Result<(), ApiError> {
    let e = crate::store::AuditEntry {
        event_id: event_id.into(),
        action: action.into(),
        actor: actor.into(),
        detail,
        at_ms: protocol::time::now_ms(),
    };
    with_store(s, move |st| st.audit(&e)).await
}

#[derive(serde::Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(
    State(s): State<ApiState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{e}; send {{\"user\": ..., \"password\": ...}}"),
        )
    })?;
    let from = ip
        .map(|i| i.to_string())
        .unwrap_or_else(|| "unknown".into());
    let auth = s.auth.clone();
    let user = b.user.clone();
    let result = tokio::task::spawn_blocking(move || auth.login(&user, &b.password, ip))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match result {
        Ok((token, p)) => {
            audit_line(&s, "login", &p.user, "", format!("from {from}")).await?;
            let cookie = format!(
                "session={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                s.auth.session_secs()
            );
            Ok((
                [(axum::http::header::SET_COOKIE, cookie)],
                Json(json!({"token": token, "user": p.user, "role": p.role, "county": p.county, "expires_in_secs": s.auth.session_secs()})),
            )
                .into_response())
        }
        Err(e) => {
            // Attempts refused during a lockout are not written one by one: the lockout
            // bounds what a guesser can add to the log.
            // A name that is no user is not written: it may be a password typed into the
            // user field.
            if e == LoginError::Invalid {
                let who = if s.auth.is_user(&b.user) {
                    b.user.as_str()
                } else {
                    "(no such user)"
                };
                audit_line(&s, "login_failed", who, "", format!("from {from}")).await?;
            }
            Ok(match e {
                LoginError::Invalid => (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": "wrong user or password"})),
                )
                    .into_response(),
                LoginError::Locked(wait) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
                    Json(json!({"error": format!("too many failed logins; try again in {} s", wait.as_secs().max(1))})),
                )
                    .into_response(),
            })
        }
    }
}

async fn logout(State(s): State<ApiState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(t) = crate::auth::token_of(&headers) {
        s.auth.logout(&t);
    }
    (
        [(
            axum::http::header::SET_COOKIE,
            "session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        )],
        Json(json!({"logged_out": true})),
    )
        .into_response()
}

/// Every checkpoint the caller sees with its node's last health report: alive, cameras'
/// frame rates, the outbox backlog.
async fn nodes(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
) -> Json<serde_json::Value> {
    let known: Vec<String> = s.checkpoints.all().iter().map(|k| k.id.clone()).collect();
    let nodes: Vec<serde_json::Value> = s
        .live
        .nodes(&known, protocol::time::now_ms())
        .into_iter()
        .filter(|n| c.principal.sees(&n.checkpoint_id))
        .map(|n| {
            let name = s.checkpoints.get(&n.checkpoint_id).map(|k| k.name.clone());
            let mut v = serde_json::to_value(&n).expect("serialises");
            v["checkpoint_name"] = json!(name);
            v
        })
        .collect();
    Json(json!({ "nodes": nodes }))
}

/// Server-sent events: every alert (red-light violation, plate anomaly) the caller may see,
/// as it is stored (`event: alert`, the event as JSON); `event: lagged` when the stream fell
/// more than `live::ALERT_BACKLOG` behind and missed some.
async fn alerts_stream(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    headers: axum::http::HeaderMap,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let alert = |ev: &protocol::Event| {
        SseEvent::default()
            .event("alert")
            .id(ev.event_id.clone())
            .json_data(ev)
            .unwrap_or_else(|_| SseEvent::default().event("error"))
    };
    // Subscribed before the backlog is read: nothing falls between; what is in both is
    // sent once.
    let rx = s.live.alerts.subscribe();
    let who = c.principal;
    // A reconnecting browser names the last alert it had (`Last-Event-ID`): what came after
    // it is sent first; when it is no longer held, `resync` says to reload from the API.
    let mut first: Vec<SseEvent> = Vec::new();
    let mut sent = std::collections::HashSet::new();
    if let Some(last) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        match s.live.after(last) {
            Some(backlog) => {
                for ev in backlog.iter().filter(|e| who.sees(e.checkpoint_id.as_str())) {
                    sent.insert(ev.event_id.clone());
                    first.push(alert(ev));
                }
            }
            None => first.push(
                SseEvent::default()
                    .event("resync")
                    .data(format!("alert {last} is no longer held; reload the pending alerts from /api/v1/events?review=pending")),
            ),
        }
    }
    let backlog = futures_util::stream::iter(first.into_iter().map(Ok));
    let state = (rx, s.live.closing.subscribe(), who, sent);
    let live =
        futures_util::stream::unfold(state, move |(mut rx, mut closing, who, sent)| async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = closing.wait_for(|c| *c) => return None,
                };
                let event = match next {
                    Ok(ev) if sent.contains(&ev.event_id) => continue,
                    Ok(ev) if who.sees(ev.checkpoint_id.as_str()) => alert(&ev),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => {
                        SseEvent::default().event("lagged").data(n.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (rx, closing, who, sent)));
            }
        });
    Sse::new(futures_util::StreamExt::chain(backlog, live)).keep_alive(KeepAlive::default())
}

async fn whoami(Extension(c): Extension<Caller>) -> Json<Principal> {
    Json(c.principal)
}

/// Lifts a user's login lockouts (administrators only), audited.
async fn unlock_user(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    axum::extract::Path(user): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !c.principal.is_admin() {
        return Err(forbidden("lift a login lockout"));
    }
    if !s.auth.is_user(&user) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no user '{user}'")));
    }
    let was_locked = s.auth.unlock(&user);
    audit_line(&s, "unlock", &c.principal.user, "", format!("user {user}")).await?;
    Ok(Json(json!({ "user": user, "had_failures": was_locked })))
}

#[derive(serde::Deserialize)]
struct AuditLogParams {
    limit: Option<usize>,
}

/// The latest lines of the audit log, newest first (administrators only).
async fn audit_log(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    axum::extract::Query(p): axum::extract::Query<AuditLogParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !c.principal.is_admin() {
        return Err(forbidden("read the audit log"));
    }
    let limit = p.limit.unwrap_or(100).min(1000);
    let lines = with_store(&s, move |st| st.audit_recent(limit)).await?;
    Ok(Json(json!({ "audit": lines })))
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

async fn put_watchlist(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    use crate::watchlist::WatchlistError;
    if !c.principal.is_admin() {
        return forbidden("put a watch list in force").into_response();
    }
    if s.watchlist.follows_upstream {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "this county aggregator follows the city's watch list (watchlist.follow_upstream); put new versions in force at the city aggregator"})),
        )
            .into_response();
    }
    let (wl, store, scope) = (s.watchlist.clone(), s.store.clone(), s.scope.clone());
    let result = tokio::task::spawn_blocking(move || {
        let f = wl.replace_bytes(&body, "PUT /api/v1/watchlist")?;
        // Into the database at once, for aggregators of this scope side by side.
        crate::watchlist::share(&wl, &scope, store.lock().expect("not poisoned").as_mut());
        Ok(f)
    })
    .await
    .expect("replacing does not panic");
    match result {
        Ok(f) => {
            if let Err(e) = audit_line(
                &s,
                "watchlist_put",
                &c.principal.user,
                "",
                format!(
                    "version {} ({} vehicles) from {}",
                    f.version,
                    f.vehicles.len(),
                    c.from
                ),
            )
            .await
            {
                tracing::warn!(error = %e.1, "Watch-list change not audited");
            }
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
        {
            let mut out =
                crate::metrics::render(&s.metrics.snapshot(), &s.http_metrics, &s.connections);
            s.sync.render(&mut out, protocol::time::now_ms());
            out
        },
    )
}

/// An HTTP status and the message the client gets as `{"error": ...}`.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// A number naming one failure in the log, for an error reply that cannot say more.
fn error_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Cursor(_) => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            StoreError::Query(_) => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            StoreError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Review(_) => ApiError(StatusCode::CONFLICT, e.to_string()),
            // The database's own words stay in the log: they may quote SQL or the schema.
            StoreError::Refused(_) => {
                let id = error_id();
                tracing::warn!(error = %e, error_id = id, "Request refused by the database");
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("a parameter holds a value the database cannot take (a NUL or other control character, or one too long); error id {id}"),
                )
            }
            _ => {
                let id = error_id();
                tracing::error!(error = %e, error_id = id, "Request failed in the store");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the event store failed; the aggregator's log has the detail under error id {id}"),
                )
            }
        }
    }
}

/// Imports accident records (CSV; `crate::accidents`): administrators only.
async fn import_accidents(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !c.principal.is_admin() {
        return Err(forbidden("import accident records"));
    }
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the accident file is not UTF-8 ({e}); save it as UTF-8 CSV"),
        )
    })?;
    let tz = jiff::tz::TimeZone::get(&s.display.time_zone)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let parsed =
        crate::accidents::parse_csv(text, &tz).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let rows = parsed.accidents;
    let n = rows.len();
    let new = with_store(&s, move |st| {
        st.accidents_put(&rows, protocol::time::now_ms())
    })
    .await?;
    let detail = format!(
        "{new} new, {} already kept, {} lines refused, from {}",
        n - new,
        parsed.errors.len(),
        c.from
    );
    if let Err(e) = audit_line(&s, "accidents_import", &c.principal.user, "", detail).await {
        tracing::warn!(error = %e.1, "Accident import not audited");
    }
    Ok(Json(json!({
        "imported": new,
        "already_kept": n - new,
        "refused": parsed.errors.len(),
        "errors": parsed.errors.iter().take(1000).collect::<Vec<_>>(),
    })))
}

/// Accident hot spots by place and hour of the week, and trends by year.
async fn accident_patterns(
    State(s): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let from = q
        .get("from")
        .map(|v| crate::query::parse_time("from", v))
        .transpose()?
        .unwrap_or(i64::MIN);
    let to = q
        .get("to")
        .map(|v| crate::query::parse_time("to", v))
        .transpose()?
        .unwrap_or(i64::MAX);
    let alpha = match q.get("alpha") {
        None => 0.01,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|a| *a > 0.0 && *a < 0.5)
            .ok_or_else(|| {
                bad(format!(
                    "alpha '{v}' must be a number between 0 and 0.5, e.g. 0.01"
                ))
            })?,
    };
    let top = match q.get("top") {
        None => 20,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|t| (1..=1000).contains(t))
            .ok_or_else(|| bad(format!("top '{v}' must be 1..1000")))?,
    };
    let tz = jiff::tz::TimeZone::get(&s.display.time_zone)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let rows = with_store(&s, move |st| st.accidents_in(from, to)).await?;
    let p = tokio::task::spawn_blocking(move || crate::accidents::patterns(&rows, &tz, alpha, top))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(
        json!({ "time_zone": s.display.time_zone, "patterns": p }),
    ))
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
    let ingest = s.metrics.snapshot();
    // Degraded while the writer cannot store, or holds events of an unregistered checkpoint
    // (the nodes keep what is not acknowledged).
    let mut problems: Vec<String> = ingest
        .store_failing
        .iter()
        .map(|e| format!("the event store fails: {e}"))
        .collect();
    for (checkpoint, n) in &ingest.held_unregistered {
        problems.push(format!("{n} deliveries of events from checkpoint {checkpoint} held at its node: it is not in [[checkpoints]]; add it to this aggregator's config and restart"));
    }
    let now = protocol::time::now_ms();
    let (sync, sync_problems) = s.sync.report(now, 3_000 * s.sync_interval_secs as i64);
    problems.extend(sync_problems);
    let status = if problems.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    let mut h = json!({ "status": status, "id": s.id, "scope": s.scope, "ingest": ingest });
    if sync.as_object().is_some_and(|o| !o.is_empty()) {
        h["sync"] = sync;
    }
    h["jobs"] = json!({ "holder": s.leases.holder, "held": s.leases.held() });
    if !problems.is_empty() {
        h["problems"] = json!(problems);
    }
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
    c: Caller,
    params: Option<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(
        crate::query::answer(
            &s,
            name,
            params.as_deref().unwrap_or(""),
            &c.principal,
            &c.from,
        )
        .await?,
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

/// What a principal outside an event's county gets: the same as for no event at all.
fn no_event(id: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no event '{id}'"))
}

async fn get_event(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<protocol::Event>, ApiError> {
    let id2 = id.clone();
    match with_store(&s, move |st| st.get(&id2)).await? {
        Some(ev) if c.principal.sees(ev.checkpoint_id.as_str()) => Ok(Json(ev)),
        _ => Err(no_event(&id)),
    }
}

async fn get_evidence(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id2 = id.clone();
    match with_store(&s, move |st| st.get_evidence(&id2)).await? {
        Some(b) if c.principal.sees(&b.checkpoint_id) => Ok((
            [
                (axum::http::header::CONTENT_TYPE, b.content_type.clone()),
                (
                    axum::http::HeaderName::from_static("x-content-sha256"),
                    b.sha256.clone(),
                ),
                // An image never changes under its id; only this user's browser keeps it.
                (
                    axum::http::header::CACHE_CONTROL,
                    "private, max-age=86400".to_string(),
                ),
            ],
            b.bytes,
        )
            .into_response()),
        _ => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no evidence image '{id}' (images arrive shortly before their event)"),
        )),
    }
}

/// How long the live view waits for a camera's node.
const LIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The JT/T 808 gateway, or why there is none.
fn gateway(s: &ApiState) -> Result<&Arc<crate::jt808::Gateway>, ApiError> {
    s.jt808.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "no JT/T 808 gateway runs here; set [jt808] listen in the aggregator's config".into(),
        )
    })
}

/// The latest position of each vehicle terminal the JT/T 808 gateway heard from (a county
/// user: the terminals registered in the county), and the gateway's counters.
async fn vehicle_positions(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let gw = gateway(&s)?;
    Ok(Json(json!({
        "positions": gw.positions(c.principal.county.as_deref()),
        "gateway": gw.stats.snapshot(),
    })))
}

/// The alerts the terminals' positions raised (abnormal stop, speeding, fatigue, night
/// coach, terminal silent), newest first, with the fixes each rests on.
async fn vehicle_alerts(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let gw = gateway(&s)?;
    Ok(Json(
        json!({ "alerts": gw.alerts(c.principal.county.as_deref()) }),
    ))
}

/// Points a track answers at most.
const MAX_TRACK_POINTS: usize = 20_000;

/// A key vehicle's track over a window: its terminal's positions and its checkpoint passes
/// (sure reads of the same plate) in one time order. A pass inside a gap of the positions
/// (`gap_s`, default 120: the terminal out of coverage, or off) says so: it fills it.
async fn vehicle_track(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let plate = q
        .get("plate")
        .filter(|p| !p.is_empty() && p.chars().count() <= protocol::event::MAX_PLATE_CHARS)
        .ok_or_else(|| {
            bad("plate is required (at most 16 characters), e.g. plate=苏E12345".into())
        })?
        .clone();
    let from = q
        .get("from")
        .map(|v| crate::query::parse_time("from", v))
        .transpose()?;
    let to = q
        .get("to")
        .map(|v| crate::query::parse_time("to", v))
        .transpose()?;
    let gap_ms = match q.get("gap_s") {
        None => 120_000,
        Some(v) => {
            v.parse::<i64>()
                .ok()
                .filter(|g| (1..=86_400).contains(g))
                .ok_or_else(|| bad(format!("gap_s '{v}' must be 1..86400")))?
                * 1000
        }
    };
    let county = c.principal.county.clone();
    let kinds = [
        protocol::EventKind::VehiclePosition,
        protocol::EventKind::VehiclePass,
    ];
    let (events, truncated) = with_store(&s, move |st| {
        let mut out = Vec::new();
        for kind in kinds {
            let mut cursor = None;
            loop {
                let page = st.list(&crate::store::EventFilter {
                    county: county.clone(),
                    kind: Some(kind),
                    plate: Some(plate.clone()),
                    from_ms: from,
                    to_ms: to,
                    limit: 1000,
                    cursor,
                    ..Default::default()
                })?;
                out.extend(page.events);
                if out.len() >= MAX_TRACK_POINTS {
                    return Ok((out, true));
                }
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok((out, false))
    })
    .await?;
    let mut points: Vec<(i64, serde_json::Value)> = Vec::new();
    for ev in &events {
        match &ev.body {
            protocol::EventBody::VehiclePosition(p) => points.push((
                ev.frame_time_ms,
                json!({"time_ms": ev.frame_time_ms, "source": "gps", "lat": p.lat, "lon": p.lon, "speed_kmh": p.speed_kmh, "event_id": ev.event_id}),
            )),
            protocol::EventBody::VehiclePass(v) if !v.plate_unsure => {
                let Some(ck) = s.checkpoints.get(ev.checkpoint_id.as_str()) else {
                    continue;
                };
                points.push((
                    ev.frame_time_ms,
                    json!({"time_ms": ev.frame_time_ms, "source": "checkpoint", "lat": ck.lat, "lon": ck.lon, "checkpoint_id": ev.checkpoint_id, "checkpoint_name": ck.name, "lane": ev.lane, "event_id": ev.event_id}),
                ));
            }
            _ => {}
        }
    }
    points.sort_by_key(|(t, _)| *t);
    // The gaps of the positions, and the passes that fall in one.
    let gps: Vec<i64> = points
        .iter()
        .filter(|(_, p)| p["source"] == "gps")
        .map(|(t, _)| *t)
        .collect();
    let mut filled = 0;
    for (t, p) in points.iter_mut() {
        if p["source"] != "checkpoint" {
            continue;
        }
        let i = gps.partition_point(|g| g <= t);
        let before = i.checked_sub(1).map(|j| gps[j]);
        let after = gps.get(i).copied();
        let in_gap = match (before, after) {
            (Some(b), Some(a)) => a - b > gap_ms,
            (Some(b), None) => *t - b > gap_ms,
            (None, Some(a)) => a - *t > gap_ms,
            (None, None) => true,
        };
        p["fills_gap"] = json!(in_gap);
        filled += in_gap as usize;
    }
    Ok(Json(json!({
        "positions": gps.len(),
        "passes": points.len() - gps.len(),
        "passes_filling_gaps": filled,
        "truncated": truncated,
        "points": points.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
    })))
}

/// A camera the caller sees: its checkpoint and its id, from its node's health reports.
fn camera_of(
    s: &ApiState,
    c: &Caller,
    camera: &str,
) -> Result<(protocol::DeviceId, protocol::DeviceId), ApiError> {
    let unknown = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no camera '{camera}' in the nodes' health reports; the cameras are listed by GET /api/v1/nodes"),
        )
    };
    let checkpoint = s.live.checkpoint_of_camera(camera).ok_or_else(unknown)?;
    if !c.principal.sees(&checkpoint) {
        return Err(unknown());
    }
    match (
        protocol::DeviceId::parse(&checkpoint),
        protocol::DeviceId::parse(camera),
    ) {
        (Ok(ck), Ok(cam)) => Ok((ck, cam)),
        _ => Err(unknown()),
    }
}

/// Asks the camera's node over zenoh (`key`, with an optional payload): its reply, or its
/// error reply's text.
async fn ask_node(
    s: &ApiState,
    key: String,
    payload: Option<Vec<u8>>,
    camera: &str,
    checkpoint: &protocol::DeviceId,
) -> Result<Result<zenoh::sample::Sample, String>, ApiError> {
    let mut get = s.session.get(key).timeout(LIVE_TIMEOUT);
    if let Some(p) = payload {
        get = get.payload(p);
    }
    let replies = get
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("camera {camera}: {e}")))?;
    let reply = replies.recv_async().await.map_err(|_| {
        ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the node of checkpoint {checkpoint} did not answer for camera {camera} within {} s (is it running and connected?)", LIVE_TIMEOUT.as_secs()),
        )
    })?;
    Ok(match reply.result() {
        Ok(sample) => Ok(sample.clone()),
        Err(e) => Err(String::from_utf8_lossy(&e.payload().to_bytes()).into_owned()),
    })
}

/// The zones a camera runs with, as its node answers (`zones`, relative corners), and the
/// size of its latest frame.
async fn get_zones(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(camera): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (ck, cam) = camera_of(&s, &c, &camera)?;
    match ask_node(
        &s,
        protocol::keys::camera_zones(&ck, &cam),
        None,
        &camera,
        &ck,
    )
    .await?
    {
        Ok(sample) => serde_json::from_slice(&sample.payload().to_bytes())
            .map(Json)
            .map_err(|e| {
                ApiError(
                    StatusCode::BAD_GATEWAY,
                    format!("the node's zones of camera {camera} are not JSON: {e}"),
                )
            }),
        Err(e) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("camera {camera}: {e}"),
        )),
    }
}

/// Saves a camera's zones (administrators): `{"zones": [{"name", "kind", "polygon",
/// "lane"?}]}`. The node checks them with its whole config, writes them into its config file
/// and restarts the camera with them; the change is audited with the zones before and after.
/// Problems the node finds come back as 422 with `errors`, and nothing changes.
async fn put_zones(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(camera): Path<String>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if !c.principal.is_admin() {
        return Err(forbidden("change a camera's zones (administrators do)"));
    }
    let (ck, cam) = camera_of(&s, &c, &camera)?;
    let zones = body
        .ok()
        .and_then(|Json(v)| v.get("zones").filter(|z| z.is_array()).cloned())
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "send {\"zones\": [{\"name\": \"...\", \"kind\": \"crosswalk|waiting_area|lane|restricted\", \"polygon\": [[x, y], ...], \"lane\": n}]} with corners relative to the frame (0..1)".into(),
            )
        })?;
    let payload = json!({"zones": zones, "actor": c.principal.user}).to_string();
    let key = protocol::keys::camera_zones(&ck, &cam);
    match ask_node(&s, key, Some(payload.into_bytes()), &camera, &ck).await? {
        Ok(sample) => {
            let v: serde_json::Value =
                serde_json::from_slice(&sample.payload().to_bytes()).unwrap_or_else(|_| json!({}));
            let detail = json!({"before": v["before"], "after": v["after"]}).to_string();
            audit_line(
                &s,
                "zones",
                &c.principal.user,
                &zones_trail(&camera),
                detail,
            )
            .await?;
            Ok(Json(v).into_response())
        }
        Err(text) => {
            let errors = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("errors").cloned())
                .unwrap_or_else(|| json!([text]));
            let status = if text.starts_with('{') {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok((
                status,
                Json(json!({
                    "error": format!("the node of camera {camera} refused the zones; nothing was changed"),
                    "errors": errors,
                })),
            )
                .into_response())
        }
    }
}

/// Where a camera's zone changes are audited.
fn zones_trail(camera: &str) -> String {
    format!("zones/{camera}")
}

/// A camera's zone changes, oldest first: who, when, the zones before and after.
async fn zones_audit(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(camera): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    camera_of(&s, &c, &camera)?;
    let id = zones_trail(&camera);
    let trail = with_store(&s, move |st| st.audit_of(&id)).await?;
    Ok(Json(json!({ "audit": trail })))
}

/// The latest frame of a camera as its node answers it over zenoh (`?overlay=1`: with zones
/// and tracked boxes; `?width=N`: scaled down), for a user who sees its checkpoint. The
/// camera's checkpoint comes from its node's health reports.
async fn camera_live(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(camera): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (ck, cam) = camera_of(&s, &c, &camera)?;
    let checkpoint = ck.to_string();
    let mut params = Vec::new();
    if q.get("overlay").is_some_and(|v| v == "1" || v == "true") {
        params.push("overlay=1".to_string());
    }
    if let Some(w) = q.get("width") {
        let w: u32 = w
            .parse()
            .ok()
            .filter(|w| (64..=7680).contains(w))
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("width '{w}' must be 64..7680 pixels"),
                )
            })?;
        params.push(format!("width={w}"));
    }
    let key = protocol::keys::camera_live(&ck, &cam);
    let replies = s
        .session
        .get(format!("{key}?{}", params.join(";")))
        .timeout(LIVE_TIMEOUT)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_GATEWAY,
                format!("live view of {camera}: {e}"),
            )
        })?;
    let unanswered = || {
        ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the node of checkpoint {checkpoint} did not answer for camera {camera} within {} s (is it running and connected?)", LIVE_TIMEOUT.as_secs()),
        )
    };
    let reply = replies.recv_async().await.map_err(|_| unanswered())?;
    match reply.result() {
        Ok(sample) => {
            let time = sample
                .attachment()
                .map(|a| String::from_utf8_lossy(&a.to_bytes()).to_string())
                .unwrap_or_default();
            Ok((
                [
                    (axum::http::header::CONTENT_TYPE, "image/jpeg".to_string()),
                    (axum::http::header::CACHE_CONTROL, "no-store".to_string()),
                    (axum::http::HeaderName::from_static("x-frame-time-ms"), time),
                ],
                sample.payload().to_bytes().to_vec(),
            )
                .into_response())
        }
        Err(e) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "camera {camera}: {}",
                String::from_utf8_lossy(&e.payload().to_bytes())
            ),
        )),
    }
}

/// Confirms or rejects a violation: `{"decision": "confirmed"|"rejected", "reviewer": "...",
/// "reason": "..."}`. Recorded in the event and in its audit trail.
/// The reviewer recorded is the logged-in user; a `reviewer` in the body is ignored (it
/// counts only when logins are off).
async fn review(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<crate::store::Review>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<protocol::Event>, ApiError> {
    if !c.principal.may_review() {
        return Err(forbidden("confirm or reject violations (reviewers do)"));
    }
    let Json(mut r) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{e}; send {{\"decision\": \"confirmed\" or \"rejected\", \"reason\": ...}}"),
        )
    })?;
    if !matches!(
        r.decision,
        protocol::ReviewState::Confirmed | protocol::ReviewState::Rejected
    ) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "decision must be confirmed or rejected (an administrator reopens a decided event with POST /api/v1/events/{id}/reopen)".into(),
        ));
    }
    // Without logins (auth.required = false) the reviewer is whoever the body names.
    if s.auth.required || r.reviewer.trim().is_empty() {
        r.reviewer = c.principal.user.clone();
    }
    decide(&s, &c, id, r).await
}

/// Reopens a decided event for review: `{"reason": "..."}`, administrators only; the event
/// awaits review again and the audit trail says who reopened it and why.
async fn reopen(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<protocol::Event>, ApiError> {
    if !c.principal.is_admin() {
        return Err(forbidden("reopen a decided event (administrators do)"));
    }
    let reason = body
        .ok()
        .and_then(|Json(v)| v["reason"].as_str().map(str::to_string))
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "send {\"reason\": \"...\"}: why the decision is reopened".into(),
            )
        })?;
    let r = crate::store::Review {
        decision: protocol::ReviewState::Pending,
        reviewer: c.principal.user.clone(),
        reason,
    };
    decide(&s, &c, id, r).await
}

/// Records a decision or a reopening on an event the caller sees.
async fn decide(
    s: &ApiState,
    c: &Caller,
    id: String,
    r: crate::store::Review,
) -> Result<Json<protocol::Event>, ApiError> {
    let who = c.principal.clone();
    Ok(Json(
        with_store(s, move |st| {
            match st.get(&id)? {
                Some(ev) if who.sees(ev.checkpoint_id.as_str()) => {}
                _ => return Err(StoreError::NotFound(id)),
            }
            st.review(&id, &r, protocol::time::now_ms())
        })
        .await?,
    ))
}

async fn audit(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id2 = id.clone();
    match with_store(&s, move |st| st.get(&id2)).await? {
        Some(ev) if c.principal.sees(ev.checkpoint_id.as_str()) => {}
        _ => return Err(no_event(&id)),
    }
    let trail = with_store(&s, move |st| st.audit_of(&id)).await?;
    Ok(Json(json!({ "audit": trail })))
}

async fn checkpoints(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
) -> Json<serde_json::Value> {
    let seen: Vec<_> = s
        .checkpoints
        .all()
        .into_iter()
        .filter(|k| c.principal.sees(&k.id))
        .collect();
    // The signalised crossings at those checkpoints (`/api/v1/timing?crossing=`).
    let crossings: Vec<&str> = s
        .crossings
        .iter()
        .filter(|x| c.principal.sees(&x.checkpoint))
        .map(|x| x.name.as_str())
        .collect();
    Json(json!({ "checkpoints": seen, "crossings": crossings }))
}

/// Stored events per kind, tracks per class, images: a county operator's of that county
/// only; the aggregator-wide ingest counters to those who see every checkpoint.
async fn stats(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let county = c.principal.county.clone();
    let st = with_store(&s, move |st| st.stats(county.as_deref())).await?;
    Ok(Json(match c.principal.county {
        Some(county) => json!({ "county": county, "store": st }),
        None => json!({ "store": st, "ingest": s.metrics.snapshot() }),
    }))
}

#[cfg(test)]
mod tests {
    /// Every operation names the status codes any request can get: 400 (a bad parameter or a
    /// control character, before the login), 500 and 503 (the connection limits); 401 and
    /// 403 where a login is wanted; 404 with a path parameter; 408 and 413 with a body. The
    /// API fuzzer (tests/api_fuzz.rs) fails on any code an operation does not list.
    #[test]
    fn every_operation_documents_the_status_codes_it_can_answer() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let public = [
            "/health",
            "/metrics",
            "/api/v1/openapi.json",
            "/api/v1/login",
        ];
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let mut want = vec!["200", "400", "500", "503"];
                if !public.contains(&path.as_str()) {
                    want.extend(["401", "403"]);
                }
                if path.contains('{') {
                    want.push("404");
                }
                if method == "post" || method == "put" {
                    want.extend(["408", "413"]);
                }
                for code in want {
                    assert!(
                        op["responses"].get(code).is_some(),
                        "{method} {path} does not document {code}"
                    );
                }
            }
        }
    }

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
