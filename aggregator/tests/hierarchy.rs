//! The county -> city hierarchy, end to end over real zenoh sessions on loopback: two county
//! aggregators and one city aggregator behind a zenoh router (the shape of a deployment:
//! routers between sites), edge nodes publishing through the same router.
//!
//! - Each county stores only its own county; the city stores both and finds a cloned plate
//!   across the county line that neither county can see.
//! - The operator queries are answered over zenoh with the HTTP API's JSON.
//! - A watch list put in force at the city reaches both counties (kept there, served to
//!   their nodes) and a node's subscription; a county refuses edits of a list it follows.

use std::path::Path;
use std::time::Duration;

use protocol::registry::{RegistryFile, Status, VehicleRecord};
use protocol::*;

mod common;
use common::*;

const CK_A: &str = "32050500051210000001"; // county 320505
const CK_B: &str = "32050600051210000001"; // county 320506
const CAM_A: &str = "32050500051320000002";
const CAM_B: &str = "32050600051320000002";
const NODE_A: &str = "32050500055050000001";
const NODE_B: &str = "32050600055050000001";

fn checkpoints() -> &'static str {
    r#"
[[checkpoints]]
id = "32050500051210000001"
name = "Wuzhong Rd checkpoint"
lon = 120.63
lat = 31.26

[[checkpoints]]
id = "32050600051210000001"
name = "Xiangcheng Rd checkpoint"
lon = 120.64
lat = 31.37

[[road_distances]]
from = "32050500051210000001"
to = "32050600051210000001"
km = 100.0
"#
}

fn start(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    id: &str,
    scope: &str,
    router: u16,
    extra: &str,
) -> aggregator::Running {
    // Only the checkpoints in scope: a county aggregator refuses others.
    let cps: String = checkpoints()
        .split("\n\n")
        .filter(|block| {
            let county = scope.strip_prefix("county:");
            match county {
                Some(c) => !block.contains("[[checkpoints]]") || block.contains(&format!("\"{c}")),
                None => true,
            }
        })
        .filter(|block| !(scope.starts_with("county:") && block.contains("[[road_distances]]")))
        .collect::<Vec<_>>()
        .join("\n\n");
    let text = format!(
        "id = \"{id}\"\nscope = \"{scope}\"\n{extra}\n[auth]\nrequired = false\n[storage]\nsqlite_path = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[zenoh]\nmode = \"client\"\nlisten = []\nconnect = [\"tcp/127.0.0.1:{router}\"]\n[watchlist]\nstate_dir = \"{}\"\n{}\n",
        dir.join(format!("{id}.db")).display(),
        dir.display(),
        if scope.starts_with("county:") { "follow_upstream = true" } else { "" },
    ) + &cps;
    let raw: aggregator::config::AggregatorConfig =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let cfg = raw.validate(Path::new("test")).unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), aggregator::start(cfg))
            .await
            .unwrap()
            .unwrap()
    })
}

fn get(a: &aggregator::Running, path: &str) -> serde_json::Value {
    let (status, body) = aggregator::client::get(a.http_addr, path).unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn registry(version: u64) -> RegistryFile {
    RegistryFile {
        version,
        issued_by: "city traffic police".into(),
        vehicles: vec![
            VehicleRecord {
                plate: "苏E7C001".into(),
                plate_class: None,
                plate_colour: None,
                vehicle_class: Some("K33".into()),
                use_character: None,
                status: vec![Status::Wanted],
                short_route: false,
            },
            // A scheduled coach: a key vehicle whose trajectory the platform follows.
            VehicleRecord {
                plate: "苏E5Q888".into(),
                plate_class: None,
                plate_colour: None,
                vehicle_class: Some("K11".into()),
                use_character: Some("B".into()),
                status: vec![],
                short_route: false,
            },
        ],
    }
}

#[test]
fn city_sees_every_county_and_finds_clones_across_them() {
    let dir = temp_dir("hierarchy");
    let rt = runtime();
    let router_port = free_port();
    let router = rt.block_on(async {
        let text = keys::zenoh_json5(
            "router",
            &[],
            &[format!("tcp/127.0.0.1:{router_port}")],
            false,
        );
        zenoh::open(zenoh::Config::from_json5(&text).unwrap())
            .await
            .unwrap()
    });
    let city = start(
        &rt,
        &dir.0,
        "32050000055030000001",
        "city:320500",
        router_port,
        "",
    );
    let county_a = start(
        &rt,
        &dir.0,
        "32050500055030000001",
        "county:320505",
        router_port,
        "",
    );
    let county_b = start(
        &rt,
        &dir.0,
        "32050600055030000001",
        "county:320506",
        router_port,
        "",
    );
    // Two edge nodes, one per county, through the same router.
    let edge = rt.block_on(async {
        let text = keys::zenoh_json5(
            "client",
            &[format!("tcp/127.0.0.1:{router_port}")],
            &[],
            false,
        );
        zenoh::open(zenoh::Config::from_json5(&text).unwrap())
            .await
            .unwrap()
    });
    // A node's view of county A's watch list.
    let (wl_tx, wl_rx) = std::sync::mpsc::channel::<u64>();
    let _wl_sub = rt.block_on(async {
        edge.declare_subscriber(keys::watchlist(&DeviceId::parse(CK_A).unwrap()))
            .callback(move |s| {
                if let Ok(f) = RegistryFile::decode(&s.payload().to_bytes()) {
                    let _ = wl_tx.send(f.version);
                }
            })
            .await
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));

    // The plate at A, then 10 minutes later 100 km away at B: 600 km/h, a clone. Another
    // plate passes A twice (no clone) and its misread (one character off) once.
    let t0 = 1_795_000_000_000i64;
    let events = [
        pass(CK_A, CAM_A, NODE_A, t0, "苏E7C001", 1),
        pass(CK_B, CAM_B, NODE_B, t0 + 600_000, "苏E7C001", 2),
        pass(CK_A, CAM_A, NODE_A, t0 + 1_000, "苏E5Q888", 2),
        pass(CK_A, CAM_A, NODE_A, t0 + 3_700_000, "苏E5Q888", 2),
        pass(CK_A, CAM_A, NODE_A, t0 + 3_800_000, "苏E5Q868", 1),
    ];
    rt.block_on(async {
        for ev in &events {
            let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
            edge.put(key, ev.encode()).await.unwrap();
        }
    });
    let stored = |a: &aggregator::Running| get(a, "/health")["ingest"]["stored"].as_u64().unwrap();
    // The city: all five passes, and the clone it derives from two of them.
    wait_until(
        "the city to store 5 passes",
        Duration::from_secs(20),
        || stored(&city) >= 5,
    );
    wait_until(
        "the city to find the clone",
        Duration::from_secs(10),
        || get(&city, "/health")["ingest"]["anomalies_raised"].as_u64() >= Some(1),
    );
    wait_until("county A to store 4", Duration::from_secs(20), || {
        stored(&county_a) >= 4
    });
    wait_until("county B to store 1", Duration::from_secs(20), || {
        stored(&county_b) >= 1
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stored(&county_a), 4, "county A stores its own county only");
    assert_eq!(stored(&county_b), 1, "county B stores its own county only");
    let clones = get(&city, "/api/v1/events?anomaly=cloned_plate");
    let clones = clones["events"].as_array().unwrap();
    assert_eq!(clones.len(), 1, "{clones:?}");
    assert_eq!(clones[0]["body"]["plate"], "苏E7C001");
    assert_eq!(
        clones[0]["body"]["passes"],
        serde_json::json!([events[0].event_id, events[1].event_id])
    );
    assert!((clones[0]["body"]["implied_speed_kmh"].as_f64().unwrap() - 600.0).abs() < 1e-6);
    for county in [&county_a, &county_b] {
        let none = get(county, "/api/v1/events?anomaly=cloned_plate");
        assert!(none["events"].as_array().unwrap().is_empty());
    }

    // Queries over zenoh, as an operator's tool or another aggregator would ask.
    let ask = |selector: String| -> serde_json::Value {
        rt.block_on(async {
            let replies = edge
                .get(selector.as_str())
                .timeout(Duration::from_secs(10))
                .await
                .unwrap();
            let reply = replies.recv_async().await.expect("a reply");
            match reply.result() {
                Ok(s) => serde_json::from_slice(&s.payload().to_bytes()).unwrap(),
                Err(e) => panic!(
                    "{selector}: {}",
                    String::from_utf8_lossy(&e.payload().to_bytes())
                ),
            }
        })
    };
    let traj = ask("ckpt/agg/320500/*/query/trajectory?plate=苏E7C001".into());
    let passes = traj["passes"].as_array().unwrap();
    assert_eq!(passes.len(), 2);
    assert_eq!(passes[0]["checkpoint_name"], "Wuzhong Rd checkpoint");
    assert_eq!(passes[1]["checkpoint_name"], "Xiangcheng Rd checkpoint");
    assert_eq!(passes[1]["lat"], 31.37);
    assert_eq!(traj["legs"][0]["km"], 100.0);
    assert!((traj["legs"][0]["kmh"].as_f64().unwrap() - 600.0).abs() < 1e-6);
    // The same JSON as the HTTP API.
    assert_eq!(traj, get(&city, "/api/v1/trajectory?plate=%E8%8B%8FE7C001"));
    // Within one edit: the plate and its misread; `;` separates zenoh parameters.
    let near = ask("ckpt/agg/320505/*/query/events?plate=苏E5Q888;near=true".into());
    let plates: Vec<&str> = near["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["body"]["plate"].as_str().unwrap())
        .collect();
    assert_eq!(plates, ["苏E5Q888", "苏E5Q888", "苏E5Q868"]);
    // Traffic flow at the city: per hour, checkpoint and lane.
    let flow = ask(format!(
        "ckpt/agg/320500/*/query/flow?from={}&to={}",
        t0 - t0 % 3_600_000,
        t0 + 7_200_000
    ));
    assert_eq!(flow["total"], 5);
    // A bad query gets an error reply naming the problem.
    let bad = rt.block_on(async {
        let replies = edge
            .get("ckpt/agg/320500/*/query/flow?from=yesterday")
            .timeout(Duration::from_secs(10))
            .await
            .unwrap();
        replies.recv_async().await.unwrap()
    });
    let err = String::from_utf8_lossy(&bad.result().unwrap_err().payload().to_bytes()).to_string();
    assert!(err.contains("\"status\":400"), "{err}");

    // A watch list put in force at the city reaches both counties and the node.
    let (status, body) =
        aggregator::client::put_json(city.http_addr, "/api/v1/watchlist", &registry(2).encode())
            .unwrap();
    assert_eq!(status, 200, "{body}");
    for county in [&county_a, &county_b] {
        wait_until(
            "the county to follow version 2",
            Duration::from_secs(10),
            || {
                aggregator::client::get(county.http_addr, "/api/v1/watchlist")
                    .map(|(s, b)| s == 200 && b.contains("\"version\":2"))
                    .unwrap_or(false)
            },
        );
    }
    assert_eq!(wl_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
    // The county follows the city: it refuses an edit of its own.
    let (status, body) = aggregator::client::put_json(
        county_a.http_addr,
        "/api/v1/watchlist",
        &registry(3).encode(),
    )
    .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("city"), "{body}");
    // Key vehicles at county A: the coach, with its two passes and the leg between them.
    let key = get(&county_a, "/api/v1/key-vehicles");
    assert_eq!(key["registry_version"], 2);
    let vehicles = key["vehicles"].as_array().unwrap();
    assert_eq!(vehicles.len(), 1, "{key}");
    assert_eq!(vehicles[0]["plate"], "苏E5Q888");
    assert_eq!(vehicles[0]["passes"], 2);
    assert_eq!(vehicles[0]["legs"][0]["km"], 0.0);
    assert_eq!(
        vehicles[0]["last_seen"]["event_id"],
        events[3].event_id.as_str()
    );
    // A pass the node could not check (no registry there) is checked by the county against
    // the version in force: the wanted plate is a watch-list hit, once.
    let late = pass(CK_A, CAM_A, NODE_A, t0 + 7_000_000, "苏E7C001", 1);
    rt.block_on(async {
        let key = keys::event(
            &late.checkpoint_id,
            &late.camera_id,
            late.kind(),
            &late.event_id,
        );
        edge.put(key.clone(), late.encode()).await.unwrap();
        edge.put(key, late.encode()).await.unwrap();
    });
    wait_until("county A's watch-list hit", Duration::from_secs(10), || {
        !get(&county_a, "/api/v1/events?anomaly=watch_list")["events"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let hits = get(&county_a, "/api/v1/events?anomaly=watch_list");
    let hits = hits["events"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["body"]["passes"][0], late.event_id.as_str());
    assert_eq!(hits[0]["rule"]["id"], "aggregator.watch_list");
    assert!(hits[0]["body"]["detail"]
        .as_str()
        .unwrap()
        .contains("wanted"));

    // A node that starts later asks its county and gets the version in force.
    let asked = rt.block_on(async {
        let replies = edge
            .get(keys::watchlist(&DeviceId::parse(CK_B).unwrap()))
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
        let mut versions = vec![];
        while let Ok(r) = replies.recv_async().await {
            if let Ok(s) = r.result() {
                versions.push(
                    RegistryFile::decode(&s.payload().to_bytes())
                        .unwrap()
                        .version,
                );
            }
        }
        versions
    });
    assert!(
        !asked.is_empty() && asked.iter().all(|v| *v == 2),
        "{asked:?}"
    );

    rt.block_on(async {
        county_a.stop().await;
        county_b.stop().await;
        city.stop().await;
        let _ = edge.close().await;
        let _ = router.close().await;
    });
}
