//! Fault test `aggregator_failover` (issue 19): two aggregator processes of one county on one
//! PostgreSQL schema, both subscribed and ingesting; the once-only jobs (GA/T 1400 export,
//! retention) held by one through a lease in the database. The holder is killed with SIGKILL
//! while passes flow; the other takes the jobs over within the lease. Nothing is lost, every
//! cloned-plate alert is stored once, every pass reaches the GA/T 1400 test platform (which
//! counts each post: a pass is sent twice only if it was in flight at the kill), and the
//! takeover time is reported. Each aggregator stores with two writers, the two checkpoints'
//! passes by different ones (`ingest::tests::a_checkpoint_has_one_writer`), so each cloned
//! plate is found across writers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::*;

mod common;
use common::*;
#[path = "common/viid_platform.rs"]
mod viid_platform;

const CK1: &str = "32050500051210000001";
const CK2: &str = "32050500051210000002";
const CAM1: &str = "32050500051320000001";
const CAM2: &str = "32050500051320000002";
const NODE: &str = "32050500055050000001";

struct Agg {
    child: Child,
    addr: std::net::SocketAddr,
}

#[allow(clippy::too_many_arguments)]
fn start(dir: &Path, n: u32, schema: &str, zport: u16, platform: u16) -> Agg {
    let cfg = dir.join(format!("agg{n}.toml"));
    let state = dir.join(format!("state{n}"));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        &cfg,
        format!(
            r#"id = "3205050005503000000{n}"
scope = "county:320505"
[auth]
required = false
[storage]
backend = "postgres"
postgres_url = "{url}"
postgres_schema = "{schema}"
writers = 2
[http]
listen = "127.0.0.1:0"
[zenoh]
mode = "client"
listen = []
connect = ["tcp/127.0.0.1:{zport}"]
[watchlist]
state_dir = "{state}"
[ha]
lease_secs = 3
[export]
enabled = true
endpoint = "http://127.0.0.1:{platform}"
user_identify = "{pid}"
username = "{user}"
password = "{password}"
keepalive_secs = 5
batch = 8
poll_ms = 100
retry_secs = 1
[[checkpoints]]
id = "{CK1}"
name = "Wuzhong Rd checkpoint"
lon = 120.63
lat = 31.26
[[checkpoints]]
id = "{CK2}"
name = "Wuzhong ring road checkpoint"
lon = 120.66
lat = 31.30
[[road_distances]]
from = "{CK1}"
to = "{CK2}"
km = 100.0
"#,
            url = pg_url(),
            state = state.display(),
            pid = viid_platform::PLATFORM_ID,
            user = viid_platform::USER,
            password = viid_platform::PASSWORD,
        ),
    )
    .unwrap();
    let addr_file = dir.join(format!("addr{n}"));
    let child = Child(
        Command::new(env!("CARGO_BIN_EXE_aggregator"))
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join(format!("agg{n}.log"))).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    wait_until("an aggregator's address", Duration::from_secs(60), || {
        std::fs::read_to_string(&addr_file).is_ok_and(|s| !s.trim().is_empty())
    });
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Agg { child, addr }
}

fn health(a: &Agg) -> Option<serde_json::Value> {
    let (_, body) = aggregator::client::get(a.addr, "/health").ok()?;
    serde_json::from_str(&body).ok()
}

fn holds_export(a: &Agg) -> bool {
    health(a).is_some_and(|h| {
        h["jobs"]["held"]
            .as_array()
            .is_some_and(|j| j.iter().any(|x| x == "export"))
    })
}

/// How many events `query` lists at aggregator `a`.
fn count(a: &Agg, query: &str) -> usize {
    event_ids(a.addr, query).len()
}

#[test]
fn aggregator_failover() {
    let dir = temp_dir("failover");
    let schema = format!("fo_{}", ulid::Ulid::new().to_string().to_lowercase());
    let rt = runtime();
    let platform: viid_platform::Shared = Arc::default();
    let pport = free_port();
    viid_platform::serve(&rt, &platform, pport);
    // The county's zenoh router; both aggregators and the node are its clients.
    let zport = free_port();
    let router = rt.block_on(async {
        let text = keys::zenoh_json5("router", &[], &[format!("tcp/127.0.0.1:{zport}")], false);
        zenoh::open(zenoh::Config::from_json5(&text).unwrap())
            .await
            .unwrap()
    });

    let mut a1 = start(&dir.0, 1, &schema, zport, pport);
    let mut a2 = start(&dir.0, 2, &schema, zport, pport);
    wait_until(
        "one aggregator holding the export",
        Duration::from_secs(30),
        || holds_export(&a1) || holds_export(&a2),
    );
    assert!(
        !(holds_export(&a1) && holds_export(&a2)),
        "both aggregators hold the export"
    );
    // A watch list put in force at one aggregator is in force at the other within a lease
    // round (a third of the lease): they keep it in the database they share.
    let watch = |version: u64| {
        protocol::registry::RegistryFile {
            version,
            issued_by: "county traffic police".into(),
            vehicles: vec![],
        }
        .encode()
    };
    let version_at = |a: &Agg| {
        aggregator::client::get(a.addr, "/api/v1/watchlist")
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["version"].as_u64())
    };
    let (status, body) =
        aggregator::client::put_json(a1.addr, "/api/v1/watchlist", &watch(7)).unwrap();
    assert_eq!(status, 200, "{body}");
    let t = Instant::now();
    wait_until(
        "the other aggregator takes watch-list version 7",
        Duration::from_secs(10),
        || version_at(&a2) == Some(7),
    );
    eprintln!(
        "watch list version 7 put in force at aggregator 1, in force at aggregator 2 {:.1} s later",
        t.elapsed().as_secs_f64()
    );
    let node = rt.block_on(async {
        let text = keys::zenoh_json5("client", &[format!("tcp/127.0.0.1:{zport}")], &[], false);
        zenoh::open(zenoh::Config::from_json5(&text).unwrap())
            .await
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(2));

    // 150 plates at checkpoint 1, one every 40 ms; every sixth seen 5 s later at
    // checkpoint 2, 100 km away: 25 cloned plates.
    // Passes as a checkpoint sends them: a vehicle box, a vehicle and a plate picture.
    let image = jpeg(320, 240, 0);
    let put = |ev: &Event| {
        let mut ev = ev.clone();
        ev.detections = vec![Detection {
            class: "car".into(),
            score: 0.9,
            bbox: BBox::new(100.0, 100.0, 300.0, 220.0),
            track_id: Some(1),
        }];
        ev.evidence = ["vehicle", "plate"]
            .iter()
            .map(|role| EvidenceRef {
                image_id: format!("{}-{role}", ev.event_id),
                sha256: String::new(),
                role: role.to_string(),
            })
            .collect();
        rt.block_on(put_with_evidence(&node, &ev, &image))
    };
    let mut passes = 0usize;
    let mut clones = 0usize;
    let mut pending: Vec<Event> = Vec::new();
    let mut killed: Option<(Instant, u32)> = None;
    let mut takeover = None;
    let mut kill_offset = 0.0;
    let t_start = protocol::time::now_ms();
    for i in 0..150u32 {
        let t = protocol::time::now_ms();
        let plate = format!("苏E{:05}", 30000 + i);
        put(&pass(CK1, CAM1, NODE, t, &plate, 1));
        passes += 1;
        if i % 6 == 0 {
            pending.push(pass(CK2, CAM2, NODE, t + 5_000, &plate, 1));
        }
        while pending
            .first()
            .is_some_and(|p| p.frame_time_ms <= protocol::time::now_ms())
        {
            put(&pending.remove(0));
            passes += 1;
            clones += 1;
        }
        if i == 60 {
            // Mid-run: the aggregator holding the jobs dies.
            let (victim, n) = if holds_export(&a1) {
                (&mut a1, 1)
            } else {
                (&mut a2, 2)
            };
            victim.child.0.kill().unwrap();
            victim.child.0.wait().unwrap();
            killed = Some((Instant::now(), n));
            kill_offset = (protocol::time::now_ms() - t_start) as f64 / 1000.0;
        }
        if let Some((at, n)) = killed {
            let survivor = if n == 1 { &a2 } else { &a1 };
            if takeover.is_none() && holds_export(survivor) {
                takeover = Some(at.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    for p in std::mem::take(&mut pending) {
        while p.frame_time_ms > protocol::time::now_ms() {
            std::thread::sleep(Duration::from_millis(20));
        }
        put(&p);
        passes += 1;
        clones += 1;
    }
    let (killed_at, victim) = killed.unwrap();
    let survivor = if victim == 1 { &a2 } else { &a1 };
    wait_until(
        "the survivor takes the jobs over",
        Duration::from_secs(30),
        || holds_export(survivor),
    );
    let takeover = takeover.unwrap_or_else(|| killed_at.elapsed());
    wait_until("every pass stored", Duration::from_secs(60), || {
        count(survivor, "kind=vehicle_pass") == passes
    });
    wait_until(
        "every cloned plate alerted",
        Duration::from_secs(60),
        || count(survivor, "anomaly=cloned_plate") >= clones,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while platform.lock().unwrap().vehicles.len() < passes {
        if Instant::now() > deadline {
            let p = platform.lock().unwrap();
            let log = std::fs::read_to_string(dir.0.join(format!("agg{}.log", 3 - victim)))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "not every pass exported: {} of {passes}; violations {:?}; survivor {}\n{}",
                p.vehicles.len(),
                p.violations.iter().take(3).collect::<Vec<_>>(),
                health(survivor).unwrap(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let stored_clones = count(survivor, "anomaly=cloned_plate");
    let (posted, distinct, violations) = {
        let p = platform.lock().unwrap();
        (
            p.posts.values().sum::<u32>() as usize,
            p.posts.len(),
            p.violations.clone(),
        )
    };
    let h = health(survivor).unwrap();
    eprintln!(
        "aggregator_failover ledger: passes produced {passes} / stored {} / lost 0 | cloned plates expected {clones} / stored {stored_clones} | GA/T 1400 posts {posted} for {distinct} passes | holder (aggregator {victim}) killed with SIGKILL {:.1} s into the run; the other held the jobs {:.1} s later (lease 3 s) | survivor jobs {}",
        count(survivor, "kind=vehicle_pass"),
        kill_offset,
        takeover.as_secs_f64(),
        h["jobs"],
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(stored_clones, clones, "each cloned plate once");
    assert_eq!(distinct, passes, "every pass exported");
    // At least once: a post in flight when the holder died (sent, not yet marked done) is
    // sent again by the next holder; at most one batch (8), and the platform keeps one
    // record per MotorVehicleID. Anything more is two exporters at once.
    assert!(
        posted - distinct <= 8,
        "{} passes exported twice: more than the one batch that can be in flight at the kill",
        posted - distinct
    );
    assert!(
        takeover < Duration::from_secs(3 + 1 + 2),
        "takeover took {takeover:?} with a 3 s lease"
    );
    // The survivor edits the watch list; the killed one, started again, takes that version
    // from the database although its own state folder keeps the older one.
    let (status, body) =
        aggregator::client::put_json(survivor.addr, "/api/v1/watchlist", &watch(8)).unwrap();
    assert_eq!(status, 200, "{body}");
    std::fs::remove_file(dir.0.join(format!("addr{victim}"))).unwrap();
    let restarted = start(&dir.0, victim, &schema, zport, pport);
    wait_until(
        "the restarted aggregator takes watch-list version 8",
        Duration::from_secs(15),
        || version_at(&restarted) == Some(8),
    );
    drop(restarted);

    drop(a1);
    drop(a2);
    rt.block_on(async {
        let _ = node.close().await;
        let _ = router.close().await;
    });
    drop_pg_schema(&schema);
}
