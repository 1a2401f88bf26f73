//! The HTTP API under a property-based fuzzer that reads its OpenAPI document (schemathesis,
//! installed by scripts/setup.sh into the cache's `fuzz-venv`), on both backends: the
//! aggregator with logins required holds passes, a red-light violation with its picture and
//! a plate anomaly; the fuzzer, logged in as an administrator, sends what the document allows
//! and what it does not, for a bounded time, with real ids and plates mixed into what it
//! generates. It fails on any 5xx, any status code the document does not list for the
//! operation, and any answer whose content type or body does not match the document
//! (issue 18: "a hostile-client suite in CI").

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use protocol::*;
use sha2::{Digest, Sha256};

const CK_A: &str = "32050500051210000001";
const CK_B: &str = "32050500051210000002";
const CAM_A: &str = "32050500051320000001";
const CAM_B: &str = "32050500051320000012";
const NODE: &str = "32050500055050000001";
/// Seconds of fuzzing per backend (the run ends a little after: the issue allows 2 minutes).
const FUZZ_SECS: u32 = 50;

fn schemathesis() -> PathBuf {
    let cache = std::env::var_os("TRAFFIC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache"));
    let bin = cache.join("fuzz-venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup.sh (scripts/test.sh does), which installs the API fuzzer",
        bin.display()
    );
    bin
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn fuzz(backend: &str) {
    let dir = temp_dir(&format!("fuzz-{backend}"));
    let schema = format!("fuzz_{}", ulid::Ulid::new().to_string().to_lowercase());
    let storage = match backend {
        "postgres" => format!(
            "backend = \"postgres\"\npostgres_url = \"{}\"\npostgres_schema = \"{schema}\"",
            pg_url()
        ),
        _ => format!("sqlite_path = \"{}\"", dir.0.join("agg.db").display()),
    };
    let zport = free_port();
    let text = format!(
        r#"id = "32050500055030000001"
scope = "county:320505"
[storage]
{storage}
[http]
listen = "127.0.0.1:0"
[zenoh]
listen = ["tcp/127.0.0.1:{zport}"]
[auth]
required = true
[[auth.users]]
name = "admin"
role = "admin"
password_hash = '{hash}'
[[checkpoints]]
id = "{CK_A}"
name = "A"
lon = 120.60
lat = 31.30
[[checkpoints]]
id = "{CK_B}"
name = "B"
lon = 120.70
lat = 31.35
"#,
        hash = aggregator::auth::hash_password("fuzz-admin-pw"),
    );
    let rt = runtime();
    let running = start_aggregator(&rt, &text);
    let addr = running.http_addr;

    // What the fuzzer finds to read: passes at both checkpoints (a plate seen at both, for
    // trajectories and a clone), a violation with its picture, an invalid plate (an anomaly).
    let session = peer(&rt, zport);
    std::thread::sleep(Duration::from_secs(1));
    let t0 = now_ms() - 3_600_000;
    let plates = ["苏E12345", "苏EA1B23", "沪A00001", "苏E0000X"];
    let mut events = Vec::new();
    for i in 0..24i64 {
        let (ck, cam) = if i % 2 == 0 {
            (CK_A, CAM_A)
        } else {
            (CK_B, CAM_B)
        };
        events.push(pass(
            ck,
            cam,
            NODE,
            t0 + i * 60_000,
            plates[i as usize % 4],
            1 + (i % 3) as u32,
        ));
    }
    let picture = jpeg(320, 240, 4096);
    let sha = hex::encode(Sha256::digest(&picture));
    let image_id = "fuzz-scene-1";
    let v = red_light(CK_A, CAM_A, NODE, t0 + 30 * 60_000, image_id, &sha);
    let ck_a = DeviceId::parse(CK_A).unwrap();
    let cam_a = DeviceId::parse(CAM_A).unwrap();
    rt.block_on(async {
        session
            .put(keys::evidence(&ck_a, &cam_a, image_id), picture.clone())
            .await
            .unwrap();
        for ev in events.iter().chain([&v]) {
            let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
            session.put(key, ev.encode()).await.unwrap();
        }
    });
    let n = events.len() as u64 + 1;
    wait_until("the seeded events stored", Duration::from_secs(30), || {
        running.metrics.snapshot().stored >= n
    });

    let (status, body) = aggregator::client::post_json(
        addr,
        "/api/v1/login",
        &serde_json::json!({"user": "admin", "password": "fuzz-admin-pw"}),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let mut ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    ids.push(v.event_id.clone());
    let quoted = |xs: &[String]| {
        xs.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config = dir.0.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"[dictionaries]
event_ids = {{ values = [{ids}] }}
image_ids = {{ values = ["{image_id}"] }}
plates = {{ values = [{plates}] }}
checkpoints = {{ values = ["{CK_A}", "{CK_B}"] }}

[parameters]
"path.event_id" = {{ dictionary = "event_ids", probability = 0.5 }}
"path.image_id" = {{ dictionary = "image_ids", probability = 0.5 }}
"query.plate" = {{ dictionary = "plates", probability = 0.3 }}
"query.checkpoint" = {{ dictionary = "checkpoints", probability = 0.3 }}
"#,
            ids = quoted(&ids),
            plates = quoted(&plates.map(String::from)),
        ),
    )
    .unwrap();
    let report = dir.0.join("report");
    let started = std::time::Instant::now();
    let out = Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("http://{addr}/api/v1/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--max-time", &FUZZ_SECS.to_string()])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        // Logging out would end the fuzzer's own session; the alert stream never ends (it
        // is tested in live.rs and the dashboard test).
        .args(["--exclude-path", "/api/v1/logout"])
        .args(["--exclude-path", "/api/v1/alerts/stream"])
        .args(["--request-timeout", "10", "-w", "2"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        // Its cache (.schemathesis/) goes to the test's folder, not the repository.
        .current_dir(&dir.0)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "120")
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.contains("generated")
                || l.contains("Selected:")
                || l.contains("Seed:")
                || l.contains("passed")
        })
        .collect();
    println!(
        "fuzz {backend}: {:.0} s, exit {:?}; {}",
        took.as_secs_f64(),
        out.status.code(),
        summary.join(" | ")
    );
    // The JUnit report tells the API's failures (a check that did not hold) from errors; an
    // error is the API's when the request could not be answered (refused, reset, timed
    // out), else the fuzzer's own (a Python exception inside schemathesis, seen once in its
    // coverage phase), which is reported here and not held against the API.
    let junit = std::fs::read_dir(&report)
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let attr = |name: &str| -> Option<u64> {
        let at = junit.find("<testsuites")?;
        let rest = &junit[at..];
        let rest = &rest[rest.find(&format!(" {name}=\""))? + name.len() + 3..];
        rest[..rest.find('"')?].parse().ok()
    };
    let (failures, errors) = (attr("failures"), attr("errors"));
    let network = [
        "onnection",
        "imed out",
        "imeout",
        "RemoteDisconnected",
        "Max retries",
        "refused",
        "reset by peer",
    ];
    let api_errors: Vec<&str> = junit
        .split("<error")
        .skip(1)
        .map(|e| &e[..e.find("</error>").unwrap_or(e.len()).min(2000)])
        .filter(|e| network.iter().any(|w| e.contains(w)))
        .collect();
    if errors.unwrap_or(0) > 0 && api_errors.is_empty() {
        println!(
            "fuzz {backend}: {} error(s) inside the fuzzer itself, not the API (see its output)",
            errors.unwrap_or(0)
        );
    }
    assert!(
        failures == Some(0) && api_errors.is_empty() && (out.status.success() || errors.unwrap_or(0) > 0),
        "the API fuzzer found failures on {backend} (failures {failures:?}, errors {errors:?}, of them unanswered requests {}):\n{stdout}\n{}",
        api_errors.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    // The aggregator still answers, and the seeded data is all there.
    let (status, _) = aggregator::client::get(addr, "/health").unwrap();
    assert_eq!(status, 200);
    assert!(running.metrics.snapshot().stored >= n);

    rt.block_on(async {
        session.close().await.unwrap();
        running.stop().await;
    });
    if backend == "postgres" {
        drop_pg_schema(&schema);
    }
}

#[test]
fn api_fuzzer_finds_no_failure_sqlite() {
    fuzz("sqlite");
}

#[test]
fn api_fuzzer_finds_no_failure_postgres() {
    fuzz("postgres");
}
