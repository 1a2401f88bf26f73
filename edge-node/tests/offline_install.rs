//! The offline bundle (issue 22, item 1): built from the suite's own binaries, signed, and
//! installed into a bare Debian 12 root with the network off, where the services run from
//! their installed units and store the crossing's events; a tampered archive and one signed
//! by another key are refused; an upgrade keeps the state and a rollback keeps it too, or,
//! past a migration the older release refuses, restores the copy taken at the upgrade.
//! The steps are in deploy/tests/offline-install.sh; this test gives it its configs: the
//! demo's crossing camera (real campus video vtest.avi, 140 frames, during red) as an
//! operator would write it for the installed paths, and an aggregator on SQLite.
//! Needs root (chroot, namespaces) and, the first time, the Debian mirror
//! (scripts/debian-root.sh and the bundle's packages are cached afterwards).

mod common;

use std::path::Path;
use std::process::Command;

fn edge_config() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("configs/edge-demo.toml")).unwrap();
    let mut v: toml::Value = toml::from_str(&text).unwrap();
    let t = v.as_table_mut().unwrap();
    // The installed unit gives ORT_DYLIB_PATH and TRAFFIC_MODELS_DIR; one camera, no
    // registry; state in the service's folder.
    t.remove("registry");
    let rt = t["runtime"].as_table_mut().unwrap();
    rt.remove("onnxruntime_library");
    rt.remove("models_dir");
    rt.insert("providers".into(), toml::Value::try_from(["cpu"]).unwrap());
    rt.insert("wait_for_aggregator_secs".into(), toml::Value::Integer(60));
    t["outbox"]["path"] = "/var/lib/traffic/edge/outbox.db".into();
    let z = t["zenoh"].as_table_mut().unwrap();
    z.remove("tls");
    z.remove("trusted_common_names");
    z.insert(
        "connect".into(),
        toml::Value::try_from(["tcp/127.0.0.1:17447"]).unwrap(),
    );
    let cams = t["cameras"].as_array_mut().unwrap();
    cams.truncate(1);
    let cam = cams[0].as_table_mut().unwrap();
    // 30 s into the plan's 60 s cycle: the 14 s played are red.
    cam["source"]["path"] = "/srv/test/media/vtest.avi".into();
    cam["source"]["start_time"] = "2026-11-29T00:00:30Z".into();
    cam["detector"] = "/opt/traffic/share/models/yolov8n.toml".into();
    cam.insert("max_frames".into(), toml::Value::Integer(140));
    toml::to_string(&v).unwrap()
}

const AGGREGATOR: &str = r#"id = "32050500055030000001"
scope = "county:320505"
[auth]
required = false
[storage]
sqlite_path = "/var/lib/traffic/aggregator/events.db"
[http]
listen = "127.0.0.1:18080"
[zenoh]
listen = ["tcp/127.0.0.1:17447"]
[retention]
default_days = 0
"#;

#[test]
fn the_signed_bundle_installs_offline_runs_upgrades_and_rolls_back() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_edge-node")).parent().unwrap();
    assert!(
        bin_dir.join("aggregator").exists(),
        "no {}/aggregator: build the workspace (cargo test --workspace) first",
        bin_dir.display()
    );
    let dir = common::tempdir::Dir::new("offline");
    let edge = dir.0.join("edge.toml");
    let agg = dir.0.join("aggregator.toml");
    std::fs::write(&edge, edge_config()).unwrap();
    std::fs::write(&agg, AGGREGATOR).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tests/offline-install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(bin_dir)
        .arg(&edge)
        .arg(&agg)
        .arg(common::vtest())
        .env("TMPDIR", &dir.0)
        .output()
        .expect("bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "offline install: {stderr}");
    for step in [
        "refused the tampered archive",
        "refused the other-key archive",
        "round 1 (0.0.1-test1)",
        "round 2 (0.0.2-test2)",
        "rolled back to 0.0.1-test1",
        "rolled back past a migration",
    ] {
        assert!(stderr.contains(step), "no '{step}' in: {stderr}");
    }
}
