//! Operator queries, one implementation served two ways: over HTTP (`GET /api/v1/<name>?...`)
//! and as a zenoh queryable (`ckpt/agg/<scope>/<aggregator-id>/query/<name>?...`, parameters
//! separated by `;` or `&`). Both take the same parameters and answer the same JSON.
//!
//! - `events`: events by checkpoint(s), camera, kind, class, anomaly type, plate (exact,
//!   wildcard `*`/`?`, or `near=true`: within one edit), review state and time range, in
//!   frame-time order with cursor pagination.
//! - `trajectory`: one plate's passes in time order with checkpoint names and coordinates, and
//!   the leg between each two (road distance, time, implied speed).
//! - `flow`: vehicle passes per hour (or `bucket_minutes`) per checkpoint and lane.
//! - `key_vehicles`: the key vehicles of the registry (coaches, hazardous goods and heavy
//!   goods vehicles, 两客一危一货)
//!   seen in a time range, each with its trajectory.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use protocol::{Event, EventBody, EventKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{with_store, ApiError, ApiState};
use crate::auth::Principal;
use crate::store::{EventFilter, FlowQuery};

/// The queries, by the name they are asked for.
pub const QUERIES: &[&str] = &[
    "events",
    "trajectory",
    "flow",
    "key_vehicles",
    "counts",
    "timing",
];

/// Whether query `name` with URL-encoded `params` looks up plates (and goes to the audit
/// log).
fn is_plate_query(name: &str, params: &str) -> bool {
    match name {
        "trajectory" | "key_vehicles" => true,
        // Keys as the query's own parser reads them (`pl%61te=` is `plate=`); parameters
        // that do not parse are audited too (they are refused later anyway).
        "events" => serde_urlencoded::from_str::<Vec<(String, String)>>(params)
            .map(|kvs| kvs.iter().any(|(k, _)| k == "plate"))
            .unwrap_or(true),
        _ => false,
    }
}

/// Answers query `name` with URL-encoded `params` for `who` (a county principal sees its
/// county only), asked from `from`. A plate query is written to the audit log first; one
/// that cannot be is refused.
pub async fn answer(
    s: &ApiState,
    name: &str,
    params: &str,
    who: &Principal,
    from: &str,
) -> Result<Value, ApiError> {
    if is_plate_query(name, params) {
        let detail = format!("{name}?{params} from {from}");
        crate::api::audit_line(s, "plate_query", &who.user, "", detail)
            .await
            .map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "the audit log cannot be written ({}); plate queries wait until it can",
                        e.1
                    ),
                )
            })?;
    }
    let county = who.county.clone();
    match name {
        "events" => events(s, parse(params)?, county).await,
        "trajectory" => trajectory(s, parse(params)?, county).await,
        "flow" => flow(s, parse(params)?, county).await,
        "key_vehicles" => key_vehicles(s, parse(params)?, county).await,
        "counts" => counts(s, parse(params)?, county).await,
        "timing" => timing(s, parse(params)?, county).await,
        _ => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no query '{name}'; queries: {}", QUERIES.join(", ")),
        )),
    }
}

fn parse<T: serde::de::DeserializeOwned>(params: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(params).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("parameters '{params}': {e}"),
        )
    })
}

fn bad(msg: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg)
}

pub(crate) fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    protocol::time::parse_rfc3339_ms(v).ok_or_else(|| {
        bad(format!("{name} '{v}' is neither UTC milliseconds nor an RFC 3339 time like 2026-11-29T08:00:00Z or 2026-11-29T16:00:00+08:00"))
    })
}

fn opt_time(name: &str, v: &Option<String>) -> Result<Option<i64>, ApiError> {
    v.as_deref().map(|v| parse_time(name, v)).transpose()
}

/// `a,b,c` -> ids, each checked as a 20-digit checkpoint id and, for a county principal,
/// as one of its county.
fn checkpoint_list(v: &Option<String>, county: &Option<String>) -> Result<Vec<String>, ApiError> {
    let Some(v) = v else { return Ok(vec![]) };
    v.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            protocol::DeviceId::parse(c).map_err(|e| bad(format!("checkpoint '{c}': {e}")))?;
            match county {
                Some(k) if !c.starts_with(k.as_str()) => Err(ApiError(
                    StatusCode::FORBIDDEN,
                    format!("checkpoint '{c}' is outside your county {k}"),
                )),
                _ => Ok(c.to_string()),
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    /// One checkpoint id, or several separated by commas.
    pub checkpoint: Option<String>,
    pub camera: Option<String>,
    pub kind: Option<String>,
    pub class: Option<String>,
    /// Plate anomaly type: `cloned_plate`, `watch_list`, ...
    pub anomaly: Option<String>,
    pub plate: Option<String>,
    /// `true`: plates within one edit of `plate` as well.
    pub near: Option<bool>,
    pub review: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

fn enum_param<T: serde::de::DeserializeOwned>(
    name: &str,
    v: &Option<String>,
    known: &str,
) -> Result<Option<T>, ApiError> {
    v.as_ref()
        .map(|x| {
            serde_json::from_value::<T>(json!(x))
                .map_err(|_| bad(format!("{name} '{x}' is unknown; {name}s: {known}")))
        })
        .transpose()
}

async fn events(s: &ApiState, q: EventsParams, county: Option<String>) -> Result<Value, ApiError> {
    let kind = match &q.kind {
        None => None,
        Some(k) => Some(EventKind::parse(k).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            bad(format!(
                "kind '{k}' is unknown; kinds: {}",
                known.join(", ")
            ))
        })?),
    };
    if q.near == Some(true) && q.plate.is_none() {
        return Err(bad("near=true needs a plate".into()));
    }
    let filter = EventFilter {
        checkpoints: checkpoint_list(&q.checkpoint, &county)?,
        county,
        camera_id: q.camera,
        kind,
        class: q.class,
        anomaly: enum_param(
            "anomaly",
            &q.anomaly,
            "format_invalid, not_registered, watch_list, class_mismatch, cloned_plate, night_coach, restricted_zone, section_speeding",
        )?,
        plate: q.plate,
        plate_near: q.near.unwrap_or(false),
        plates: vec![],
        review: enum_param(
            "review",
            &q.review,
            "not_required, pending, confirmed, rejected",
        )?,
        from_ms: opt_time("from", &q.from)?,
        to_ms: opt_time("to", &q.to)?,
        limit: q.limit.unwrap_or(100),
        cursor: q.cursor,
    };
    let page = with_store(s, move |st| st.list(&filter)).await?;
    Ok(serde_json::to_value(page).expect("a page serialises"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrajectoryParams {
    pub plate: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// One pass on a trajectory, with where the checkpoint is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrajectoryPoint {
    pub event_id: String,
    pub time_ms: i64,
    pub time: String,
    pub checkpoint_id: String,
    /// Absent for a checkpoint outside the registry.
    pub checkpoint_name: Option<String>,
    pub lon: Option<f64>,
    pub lat: Option<f64>,
    pub camera_id: String,
    pub lane: Option<u32>,
    pub direction: Option<String>,
    pub vehicle_class: String,
}

/// From one pass to the next.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Leg {
    pub from: String,
    pub to: String,
    pub minutes: f64,
    /// Road distance, where both checkpoints are in the registry.
    pub km: Option<f64>,
    pub kmh: Option<f64>,
}

fn point(s: &ApiState, ev: &Event) -> Option<TrajectoryPoint> {
    let EventBody::VehiclePass(v) = &ev.body else {
        return None;
    };
    let cp = s.checkpoints.get(ev.checkpoint_id.as_str());
    Some(TrajectoryPoint {
        event_id: ev.event_id.clone(),
        time_ms: ev.frame_time_ms,
        time: protocol::time::format_rfc3339_ms(ev.frame_time_ms),
        checkpoint_id: ev.checkpoint_id.to_string(),
        checkpoint_name: cp.map(|c| c.name.clone()),
        lon: cp.map(|c| c.lon),
        lat: cp.map(|c| c.lat),
        camera_id: ev.camera_id.to_string(),
        lane: ev.lane,
        direction: v.direction.clone(),
        vehicle_class: v.vehicle_class.clone(),
    })
}

fn legs(s: &ApiState, points: &[TrajectoryPoint]) -> Vec<Leg> {
    points
        .windows(2)
        .map(|w| {
            let minutes = (w[1].time_ms - w[0].time_ms) as f64 / 60_000.0;
            let km = if w[0].checkpoint_id == w[1].checkpoint_id {
                Some(0.0)
            } else {
                s.checkpoints
                    .distance_km(&w[0].checkpoint_id, &w[1].checkpoint_id)
            };
            Leg {
                from: w[0].event_id.clone(),
                to: w[1].event_id.clone(),
                minutes,
                km,
                kmh: km.filter(|_| minutes > 0.0).map(|k| k / (minutes / 60.0)),
            }
        })
        .collect()
}

async fn trajectory(
    s: &ApiState,
    q: TrajectoryParams,
    county: Option<String>,
) -> Result<Value, ApiError> {
    let plate = protocol::plate::normalise(&q.plate);
    if plate.is_empty() || plate.contains(['*', '?']) {
        return Err(bad(format!(
            "plate '{}': a trajectory needs one whole plate",
            q.plate
        )));
    }
    let filter = EventFilter {
        kind: Some(EventKind::VehiclePass),
        plate: Some(plate.clone()),
        county,
        from_ms: opt_time("from", &q.from)?,
        to_ms: opt_time("to", &q.to)?,
        limit: q.limit.unwrap_or(1000),
        cursor: q.cursor,
        ..Default::default()
    };
    let page = with_store(s, move |st| st.list(&filter)).await?;
    let points: Vec<TrajectoryPoint> = page.events.iter().filter_map(|e| point(s, e)).collect();
    let legs = legs(s, &points);
    Ok(json!({
        "plate": plate,
        "passes": points,
        "legs": legs,
        "next_cursor": page.next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowParams {
    pub checkpoint: Option<String>,
    pub from: String,
    pub to: String,
    /// Bucket size, minutes (default 60).
    pub bucket_minutes: Option<i64>,
}

impl FlowParams {
    fn query(&self, county: Option<String>) -> Result<FlowQuery, ApiError> {
        Ok(FlowQuery {
            checkpoints: checkpoint_list(&self.checkpoint, &county)?,
            county,
            from_ms: parse_time("from", &self.from)?,
            to_ms: parse_time("to", &self.to)?,
            bucket_ms: self.bucket_minutes.unwrap_or(60).saturating_mul(60_000),
        })
    }
}

async fn flow(s: &ApiState, q: FlowParams, county: Option<String>) -> Result<Value, ApiError> {
    let fq = q.query(county)?;
    let bucket_ms = fq.bucket_ms;
    let rows = with_store(s, move |st| st.flow(&fq)).await?;
    let total: i64 = rows.iter().map(|r| r.vehicles).sum();
    // Each checkpoint's busiest hour, all lanes together, with its peak-hour factor.
    let mut per_checkpoint: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for r in &rows {
        per_checkpoint
            .entry(r.checkpoint_id.as_str())
            .or_default()
            .push((r.bucket_start_ms, r.vehicles));
    }
    let peaks: Vec<Value> = per_checkpoint
        .iter()
        .filter_map(|(ck, bins)| {
            let p = crate::timing::peak_hour(bins, bucket_ms)?;
            Some(json!({
                "checkpoint_id": ck,
                "start_ms": p.start_ms,
                "start": protocol::time::format_rfc3339_ms(p.start_ms),
                "vehicles": p.vehicles,
                "phf": p.phf,
            }))
        })
        .collect();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let name = s.checkpoints.get(&r.checkpoint_id).map(|c| c.name.clone());
            json!({
                "bucket_start_ms": r.bucket_start_ms,
                "bucket_start": protocol::time::format_rfc3339_ms(r.bucket_start_ms),
                "checkpoint_id": r.checkpoint_id,
                "checkpoint_name": name,
                "lane": r.lane,
                "vehicles": r.vehicles,
            })
        })
        .collect();
    Ok(json!({ "bucket_ms": bucket_ms, "total": total, "rows": rows, "peak_hours": peaks }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingParams {
    /// The crossing's name as configured (`[[crossings]] name`).
    pub crossing: String,
    pub from: String,
    pub to: String,
}

/// A timing proposal per hour of the day (in the display time zone) for a configured
/// crossing: each phase's critical flow (the busiest of its lanes, vehicles per hour,
/// averaged over the days measured), its flow ratio, and Webster's cycle and greens, beside
/// the plan in force.
async fn timing(s: &ApiState, q: TimingParams, county: Option<String>) -> Result<Value, ApiError> {
    let Some(c) = s.crossings.iter().find(|c| c.name == q.crossing).cloned() else {
        let names: Vec<&str> = s.crossings.iter().map(|c| c.name.as_str()).collect();
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no crossing '{}'; configured: [{}] ([[crossings]] in the aggregator's config)",
                q.crossing,
                names.join(", ")
            ),
        ));
    };
    let fq = FlowQuery {
        checkpoints: checkpoint_list(&Some(c.checkpoint.clone()), &county)?,
        county,
        from_ms: parse_time("from", &q.from)?,
        to_ms: parse_time("to", &q.to)?,
        bucket_ms: 3_600_000,
    };
    let rows = with_store(s, move |st| st.flow(&fq)).await?;
    let zone = s.display.zone();
    let local = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_zoned(zone.clone()))
            .ok()
    };
    // (hour of day, lane) -> vehicles per day measured; the days each hour was measured on.
    let mut per_lane: BTreeMap<(i8, i64), i64> = BTreeMap::new();
    let mut days: BTreeMap<i8, std::collections::BTreeSet<jiff::civil::Date>> = BTreeMap::new();
    for r in &rows {
        let (Some(z), Some(lane)) = (local(r.bucket_start_ms), r.lane) else {
            continue;
        };
        *per_lane.entry((z.hour(), lane)).or_default() += r.vehicles;
        days.entry(z.hour()).or_default().insert(z.date());
    }
    let lost = c.lost_time_s * c.phases.len() as f64;
    let plan = c.phases.iter().all(|p| p.green_s.is_some()).then(|| {
        let greens: Vec<f64> = c.phases.iter().filter_map(|p| p.green_s).collect();
        json!({"cycle_s": greens.iter().sum::<f64>() + lost, "greens_s": greens})
    });
    let hours: Vec<Value> = days
        .iter()
        .map(|(h, d)| {
            let n = d.len() as f64;
            let flows: Vec<f64> = c
                .phases
                .iter()
                .map(|p| {
                    p.lanes
                        .iter()
                        .map(|l| *per_lane.get(&(*h, *l)).unwrap_or(&0) as f64 / n)
                        .fold(0.0, f64::max)
                })
                .collect();
            let y: Vec<f64> = flows.iter().map(|q| q / c.saturation_flow).collect();
            let t = crate::timing::webster(&y, lost, c.min_cycle_s, c.max_cycle_s);
            json!({
                "hour": h,
                "days": d.len(),
                "critical_flows_vph": flows,
                "flow_ratios": y,
                "proposal": t,
            })
        })
        .collect();
    Ok(json!({
        "crossing": c.name,
        "checkpoint_id": c.checkpoint,
        "time_zone": s.display.time_zone,
        "phases": c.phases.iter().map(|p| json!({"name": p.name, "lanes": p.lanes})).collect::<Vec<_>>(),
        "saturation_flow_vph": c.saturation_flow,
        "lost_time_s": lost,
        "plan_in_force": plan,
        "hours": hours,
    }))
}

/// Events per bucket (an hour by default) and kind, for the dashboard's chart.
async fn counts(s: &ApiState, q: FlowParams, county: Option<String>) -> Result<Value, ApiError> {
    let fq = q.query(county)?;
    let bucket_ms = fq.bucket_ms;
    let rows = with_store(s, move |st| st.counts(&fq)).await?;
    Ok(json!({ "bucket_ms": bucket_ms, "rows": rows }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVehicleParams {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Passes read for the key vehicles at most, per query.
pub const MAX_KEY_VEHICLE_PASSES: usize = 20_000;

async fn key_vehicles(
    s: &ApiState,
    q: KeyVehicleParams,
    county: Option<String>,
) -> Result<Value, ApiError> {
    let (from_ms, to_ms) = (opt_time("from", &q.from)?, opt_time("to", &q.to)?);
    let Some(reg) = s.watchlist.current() else {
        return Ok(
            json!({"registry_version": null, "vehicles": [], "note": "no registry in force: PUT one to /api/v1/watchlist"}),
        );
    };
    // 两客一危一货: tourist and scheduled coaches, hazardous goods, heavy goods vehicles.
    let key: BTreeMap<String, &protocol::registry::VehicleRecord> = reg
        .vehicles
        .iter()
        .filter(|r| {
            r.is_hazardous()
                || r.is_heavy_truck()
                || matches!(r.use_character.as_deref(), Some("B" | "E"))
        })
        .map(|r| (r.plate.clone(), r))
        .collect();
    let plates: Vec<String> = key.keys().cloned().collect();
    let mut passes: Vec<Event> = Vec::new();
    let mut truncated = false;
    for chunk in plates.chunks(500) {
        let mut cursor = None;
        loop {
            let filter = EventFilter {
                kind: Some(EventKind::VehiclePass),
                plates: chunk.to_vec(),
                county: county.clone(),
                from_ms,
                to_ms,
                limit: 1000,
                cursor: cursor.take(),
                ..Default::default()
            };
            let page = with_store(s, move |st| st.list(&filter)).await?;
            passes.extend(page.events);
            if passes.len() >= MAX_KEY_VEHICLE_PASSES {
                truncated = true;
                break;
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    let mut by_plate: BTreeMap<String, Vec<TrajectoryPoint>> = BTreeMap::new();
    for ev in &passes {
        if let (EventBody::VehiclePass(v), Some(p)) = (&ev.body, point(s, ev)) {
            if let Some(plate) = &v.plate {
                by_plate.entry(plate.clone()).or_default().push(p);
            }
        }
    }
    let vehicles: Vec<Value> = by_plate
        .into_iter()
        .filter_map(|(plate, mut points)| {
            points.sort_by(|a, b| (a.time_ms, &a.event_id).cmp(&(b.time_ms, &b.event_id)));
            let r = key.get(&plate)?;
            Some(json!({
                "plate": plate,
                "use_character": r.use_character,
                "vehicle_class": r.vehicle_class,
                "hazardous": r.is_hazardous(),
                "coach": r.is_coach(),
                "heavy_truck": r.is_heavy_truck(),
                // What the registry holds against it (inspection overdue, hit-and-run...).
                "statuses": r.status,
                "passes": points.len(),
                "last_seen": points.last(),
                "legs": legs(s, &points),
                "trajectory": points,
            }))
        })
        .collect();
    Ok(json!({
        "registry_version": reg.version,
        "key_vehicles_registered": key.len(),
        "vehicles": vehicles,
        "truncated": truncated,
    }))
}

/// Serves every query on `ckpt/agg/<scope>/<id>/query/<name>`; the reply is the JSON the
/// HTTP API gives, or an error reply `{"error", "status"}`.
pub async fn serve(
    session: &zenoh::Session,
    state: ApiState,
    scope_label: &str,
    id: &protocol::DeviceId,
) -> zenoh::Result<zenoh::query::Queryable<()>> {
    let key = protocol::keys::aggregator_query(scope_label, id, "*");
    let rt = tokio::runtime::Handle::current();
    let (scope_label, id) = (scope_label.to_string(), id.clone());
    session
        .declare_queryable(key)
        .callback(move |query| {
            let s = state.clone();
            let (scope_label, id) = (scope_label.clone(), id.clone());
            rt.spawn(async move {
                let name = query
                    .key_expr()
                    .as_str()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let params = query.parameters().as_str().replace(';', "&");
                let t = std::time::Instant::now();
                // Who may ask is zenoh's business: with TLS, the access-control policy
                // admits queries from trusted certificates only.
                let who = Principal {
                    user: "zenoh-query".into(),
                    role: crate::auth::Role::CityOperator,
                    county: None,
                };
                let result = answer(&s, &name, &params, &who, "zenoh").await;
                // Unknown names share one series: a caller's made-up names must not grow
                // the label set without bound.
                let series = if QUERIES.contains(&name.as_str()) {
                    name.as_str()
                } else {
                    "unknown"
                };
                s.http_metrics
                    .observe(&format!("zenoh:{series}"), t.elapsed());
                // The concrete key: the query may name the aggregator with a wildcard.
                let key = protocol::keys::aggregator_query(&scope_label, &id, &name);
                let sent = match result {
                    Ok(v) => {
                        query
                            .reply(key, serde_json::to_vec(&v).expect("JSON"))
                            .await
                    }
                    Err(ApiError(status, msg)) => {
                        query
                            .reply_err(
                                serde_json::to_vec(
                                    &json!({"error": msg, "status": status.as_u16()}),
                                )
                                .expect("JSON"),
                            )
                            .await
                    }
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, query = %name, "Query not answered");
                }
            });
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, row 7: a plate query spelled differently in the query string still goes to
    /// the audit log.
    #[test]
    fn row7_a_plate_query_spelled_differently_is_still_audited() {
        for params in [
            "plate=%E8%8B%8FE12345",
            "limit=5&plate=X",
            "pl%61te=%E8%8B%8FE12345",
            "%70late=X&near=true",
            "limit=5&p%6C%61%74%65=X",
        ] {
            assert!(is_plate_query("events", params), "{params}");
            // The query itself reads the plate from it.
            let p: EventsParams = parse(params).map_err(|e| e.1).unwrap();
            assert!(p.plate.is_some(), "{params}");
        }
        for params in [
            "",
            "limit=5",
            "kind=vehicle_pass&camera=x",
            "plates_total=1",
        ] {
            assert!(!is_plate_query("events", params), "{params}");
        }
        assert!(is_plate_query("trajectory", ""));
    }
}
