//! The HTTP API's authentication and roles, against a running aggregator: logins with argon2
//! hashes, bearer tokens and the session cookie, county operators limited to their county,
//! city operators seeing all, reviewers alone confirming violations, the audit log of plate
//! queries and reviews, and the login rate limit.

use std::time::Duration;

use aggregator::auth::hash_password;
use aggregator::client::request_with;
use protocol::*;
use serde_json::{json, Value};

mod common;
use common::*;

const CK_A: &str = "32050500051210000001"; // county 320505
const CK_B: &str = "32050600051210000001"; // county 320506
const CAM_A: &str = "32050500051320000002";
const CAM_B: &str = "32050600051320000002";
const NODE: &str = "32050500055050000001";

fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut headers = vec![("Content-Type", "application/json".to_string())];
    if let Some(t) = token {
        headers.push(("Authorization", format!("Bearer {t}")));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, head, out) = request_with(addr, method, path, &headers, body.as_bytes()).unwrap();
    let v = serde_json::from_slice(&out).unwrap_or(Value::Null);
    (status, head, v)
}

fn login(addr: std::net::SocketAddr, user: &str, password: &str) -> String {
    let (status, _, v) = call(
        addr,
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"user": user, "password": password})),
    );
    assert_eq!(status, 200, "login {user}: {v}");
    v["token"].as_str().unwrap().to_string()
}

fn ids(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn roles_scopes_audit_and_login_limits() {
    let dir = temp_dir("auth");
    let rt = runtime();
    let zport = free_port();
    let user = |name: &str, role: &str, county: Option<&str>, pw: &str| {
        format!(
            "[[auth.users]]\nname = \"{name}\"\nrole = \"{role}\"\n{}password_hash = '{}'\n",
            county
                .map(|c| format!("county = \"{c}\"\n"))
                .unwrap_or_default(),
            hash_password(pw)
        )
    };
    let text = format!(
        "id = \"32050000055030000001\"\nscope = \"city:320500\"\n[storage]\nsqlite_path = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[zenoh]\nlisten = [\"tcp/127.0.0.1:{zport}\"]\n[auth]\nmax_failures = 3\n{}{}{}{}[[checkpoints]]\nid = \"{CK_A}\"\nname = \"A\"\nlon = 120.63\nlat = 31.26\n[[checkpoints]]\nid = \"{CK_B}\"\nname = \"B\"\nlon = 120.64\nlat = 31.37\n",
        dir.0.join("agg.db").display(),
        user("li", "county_operator", Some("320505"), "li-pw"),
        user("wang", "city_operator", None, "wang-pw"),
        user("zhao", "reviewer", Some("320505"), "zhao-pw"),
        user("root", "admin", None, "root-pw"),
    );
    let agg = start_aggregator(&rt, &text);
    let addr = agg.http_addr;

    // Three passes of one plate, at A and B, and a violation awaiting review at each.
    let t0 = 1_795_000_000_000i64;
    let pa = pass(CK_A, CAM_A, NODE, t0, "苏E7C001", 1);
    let pb = pass(CK_B, CAM_B, NODE, t0 + 3_600_000, "苏E7C001", 1);
    // Violations: watch-list hits, which the aggregator sets pending at ingest (a node's
    // word on review state is not taken).
    let violation = |mut ev: Event, plate: &str| {
        ev.severity = Severity::Alert;
        ev.body = EventBody::PlateAnomaly(PlateAnomaly {
            anomaly: AnomalyType::WatchList,
            plate: plate.into(),
            passes: vec![],
            distance_km: None,
            interval_secs: None,
            implied_speed_kmh: None,
            detail: Some("wanted".into()),
        });
        ev
    };
    let va = violation(pass(CK_A, CAM_A, NODE, t0 + 10, "苏E5Q888", 1), "苏E5Q888");
    let vb = violation(pass(CK_B, CAM_B, NODE, t0 + 20, "苏E5Q999", 1), "苏E5Q999");
    let session = peer(&rt, zport);
    std::thread::sleep(Duration::from_millis(500));
    for ev in [&pa, &pb, &va, &vb] {
        let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
        rt.block_on(async { session.put(key, ev.encode()).await.unwrap() });
    }
    wait_until("four events stored", Duration::from_secs(20), || {
        let h: Value =
            serde_json::from_str(&aggregator::client::get(addr, "/health").unwrap().1).unwrap();
        h["ingest"]["stored"] == 4
    });

    // Nothing without a login but health, metrics and the API document.
    let (s, head, _) = call(addr, "GET", "/api/v1/events", None, None);
    assert_eq!(s, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    for open in ["/health", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(call(addr, "GET", open, None, None).0, 200, "{open}");
    }
    assert_eq!(
        call(addr, "GET", "/api/v1/events", Some("forged"), None).0,
        401
    );

    let li = login(addr, "li", "li-pw");
    let wang = login(addr, "wang", "wang-pw");
    let zhao = login(addr, "zhao", "zhao-pw");
    let root = login(addr, "root", "root-pw");

    // The county operator sees county 320505 only.
    let (s, _, v) = call(addr, "GET", "/api/v1/events", Some(&li), None);
    assert_eq!(s, 200);
    let mut seen = ids(&v);
    seen.sort();
    let mut want = vec![pa.event_id.clone(), va.event_id.clone()];
    want.sort();
    assert_eq!(seen, want, "county operator's events");
    assert_eq!(
        call(
            addr,
            "GET",
            &format!("/api/v1/events?checkpoint={CK_B}"),
            Some(&li),
            None
        )
        .0,
        403
    );
    assert_eq!(
        call(
            addr,
            "GET",
            &format!("/api/v1/events/{}", pb.event_id),
            Some(&li),
            None
        )
        .0,
        404
    );
    let (s, _, v) = call(
        addr,
        "GET",
        "/api/v1/trajectory?plate=%E8%8B%8FE7C001",
        Some(&li),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(
        v["passes"].as_array().unwrap().len(),
        1,
        "county trajectory: {v}"
    );
    let (_, _, v) = call(addr, "GET", "/api/v1/checkpoints", Some(&li), None);
    assert_eq!(v["checkpoints"].as_array().unwrap().len(), 1);
    // Issue 18, row 11: the county operator's stats count that county only, without the
    // city-wide ingest counters; the city operator's count both.
    let (s, _, v) = call(addr, "GET", "/api/v1/stats", Some(&li), None);
    assert_eq!(s, 200);
    assert_eq!(v["store"]["events_total"], 2, "county stats: {v}");
    assert_eq!(v["county"], "320505");
    assert!(v.get("ingest").is_none(), "county stats: {v}");
    let (_, _, v) = call(addr, "GET", "/api/v1/stats", Some(&wang), None);
    assert_eq!(v["store"]["events_total"], 4, "city stats: {v}");
    assert_eq!(v["ingest"]["stored"], 4, "city stats: {v}");
    let (s, _, _) = call(
        addr,
        "POST",
        &format!("/api/v1/events/{}/review", va.event_id),
        Some(&li),
        Some(json!({"decision": "confirmed", "reason": "seen"})),
    );
    assert_eq!(s, 403, "an operator reviewed");

    // The city operator sees both counties, and may not review either.
    let (_, _, v) = call(addr, "GET", "/api/v1/events", Some(&wang), None);
    assert_eq!(ids(&v).len(), 4);
    let (_, _, v) = call(
        addr,
        "GET",
        "/api/v1/trajectory?plate=%E8%8B%8FE7C001",
        Some(&wang),
        None,
    );
    assert_eq!(v["passes"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(
            addr,
            "POST",
            &format!("/api/v1/events/{}/review", vb.event_id),
            Some(&wang),
            Some(json!({"decision": "confirmed", "reason": "x"}))
        )
        .0,
        403
    );

    // The reviewer confirms in its county, under its own name; the other county's is hidden.
    let (s, _, v) = call(
        addr,
        "POST",
        &format!("/api/v1/events/{}/review", va.event_id),
        Some(&zhao),
        Some(
            json!({"decision": "confirmed", "reviewer": "mallory", "reason": "plate and light clear"}),
        ),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["review"], "confirmed");
    let (_, _, trail) = call(
        addr,
        "GET",
        &format!("/api/v1/events/{}/audit", va.event_id),
        Some(&zhao),
        None,
    );
    assert_eq!(trail["audit"][0]["actor"], "zhao", "{trail}");
    assert_eq!(
        call(
            addr,
            "POST",
            &format!("/api/v1/events/{}/review", vb.event_id),
            Some(&zhao),
            Some(json!({"decision": "rejected", "reason": "x"}))
        )
        .0,
        404
    );

    // A decision is final: a second one is refused; only an administrator reopens it,
    // with a reason; then it can be decided again.
    let review_va = |who: &str, decision: &str| {
        call(
            addr,
            "POST",
            &format!("/api/v1/events/{}/review", va.event_id),
            Some(who),
            Some(json!({"decision": decision, "reason": "bicycle pushed"})),
        )
    };
    let (s, _, v) = review_va(&zhao, "rejected");
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("reopen"), "{v}");
    assert_eq!(
        review_va(&zhao, "pending").0,
        400,
        "pending is not a decision"
    );
    let reopen = |who: &str, body: Value| {
        call(
            addr,
            "POST",
            &format!("/api/v1/events/{}/reopen", va.event_id),
            Some(who),
            Some(body),
        )
    };
    assert_eq!(
        reopen(&zhao, json!({"reason": "x"})).0,
        403,
        "a reviewer reopened"
    );
    assert_eq!(reopen(&root, json!({})).0, 400, "reopened without a reason");
    let (s, _, v) = reopen(&root, json!({"reason": "the reviewer missed the bicycle"}));
    assert_eq!((s, v["review"].as_str()), (200, Some("pending")), "{v}");
    let (s, _, v) = review_va(&zhao, "rejected");
    assert_eq!((s, v["review"].as_str()), (200, Some("rejected")), "{v}");

    // Watch lists: administrators only.
    let wl = json!({"version": 1, "issued_by": "test", "vehicles": []});
    assert_eq!(
        call(
            addr,
            "PUT",
            "/api/v1/watchlist",
            Some(&wang),
            Some(wl.clone())
        )
        .0,
        403
    );
    assert_eq!(
        call(addr, "PUT", "/api/v1/watchlist", Some(&root), Some(wl)).0,
        200
    );

    // The audit log: every login, plate query and review, readable by administrators only.
    assert_eq!(
        call(addr, "GET", "/api/v1/audit-log", Some(&wang), None).0,
        403
    );
    let (_, _, log) = call(
        addr,
        "GET",
        "/api/v1/audit-log?limit=100",
        Some(&root),
        None,
    );
    let lines = log["audit"].as_array().unwrap();
    let has = |action: &str, actor: &str, detail: &str| {
        lines.iter().any(|l| {
            l["action"] == action
                && l["actor"] == actor
                && l["detail"].as_str().unwrap().contains(detail)
        })
    };
    assert!(has("plate_query", "li", "trajectory?plate="), "{log}");
    assert!(has("plate_query", "wang", "trajectory?plate="), "{log}");
    assert!(has("review", "zhao", ""), "{log}");
    assert!(
        has("reopen", "root", "pending: the reviewer missed the bicycle"),
        "{log}"
    );
    assert!(has("login", "root", "127.0.0.1"), "{log}");
    assert!(has("watchlist_put", "root", "version 1"), "{log}");
    assert!(
        !lines.iter().any(|l| l["action"] == "plate_query"
            && l["detail"]
                .as_str()
                .unwrap()
                .starts_with("events?checkpoint")),
        "a query without a plate was audited as one"
    );

    // The session cookie works as the token does; logging out ends the session.
    let (_, head, _) = call(
        addr,
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"user": "wang", "password": "wang-pw"})),
    );
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let (s, _, _) = request_with(
        addr,
        "GET",
        "/api/v1/whoami",
        &[("Cookie", pair.clone())],
        b"",
    )
    .unwrap();
    assert_eq!(s, 200);
    let (s, _, _) = request_with(
        addr,
        "POST",
        "/api/v1/logout",
        &[("Cookie", pair.clone())],
        b"",
    )
    .unwrap();
    assert_eq!(s, 200);
    let (s, _, _) = request_with(addr, "GET", "/api/v1/whoami", &[("Cookie", pair)], b"").unwrap();
    assert_eq!(s, 401);

    // Three wrong passwords, then even the right one is refused for a while (429).
    for _ in 0..3 {
        assert_eq!(
            call(
                addr,
                "POST",
                "/api/v1/login",
                None,
                Some(json!({"user": "li", "password": "guess"}))
            )
            .0,
            401
        );
    }
    let (s, head, v) = call(
        addr,
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"user": "li", "password": "li-pw"})),
    );
    assert_eq!(s, 429, "{v}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    let (_, _, log) = call(addr, "GET", "/api/v1/audit-log?limit=10", Some(&root), None);
    assert!(
        log["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["action"] == "login_failed" && l["actor"] == "li"),
        "{log}"
    );
    // Sessions opened before stay valid.
    assert_eq!(call(addr, "GET", "/api/v1/whoami", Some(&li), None).0, 200);

    rt.block_on(async { session.close().await.unwrap() });
    rt.block_on(agg.stop());
}
