//! The node's clock (issue 22, item 3): a fake `chronyc` stands in for chrony. While it says
//! the clock is not synchronised, every event the camera makes carries `clock.trusted =
//! false` at the aggregator, and the health report (at the aggregator) and `/metrics` show
//! the state; once it reports a synchronised clock within the bound, events are trusted.

mod common;

use std::time::Duration;

use common::*;

/// A fake `chronyc` printing `line` for `chronyc -c -n tracking`.
fn fake_chronyc(dir: &std::path::Path, line: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("chronyc");
    std::fs::write(&p, format!("#!/bin/sh\necho '{line}'\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A one-camera node on vtest.avi with no `start_time` (frame times from the box's clock).
fn config(zenoh_port: u16, metrics_port: u16, chronyc: &std::path::Path, frames: u32) -> String {
    node_header(zenoh_port)
        + &format!(
            r#"[metrics]
listen = "127.0.0.1:{metrics_port}"
[[cameras]]
id = "32050500051320000001"
name = "crossing"
source = {{ type = "file", path = "{}" }}
max_frames = {frames}

[clock]
source = "chrony"
chronyc = "{}"
max_error_ms = 50
check_interval_secs = 1
"#,
            vtest().display(),
            chronyc.display()
        )
}

#[test]
fn events_are_marked_while_the_clock_is_unsynchronised_and_trusted_once_it_is() {
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("clock");
    let chronyc = fake_chronyc(
        &dir.0,
        "00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,0.000,1.000000000,1.000000000,0.0,Not synchronised",
    );
    let metrics_port = free_port();
    let scraper = watch_metrics_and_nodes(metrics_port, agg.http, |metrics, nodes| {
        metrics.contains("edge_clock_trusted{") && nodes.contains("\"clock\":{")
    });
    let (out, summary) = run_edge(
        &config(agg.zenoh_port, metrics_port, &chronyc, 300),
        &dir.0,
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Clock not synchronised or off by more than clock.max_error_ms"),
        "{stderr}"
    );
    let summary = summary.unwrap();
    assert_eq!(summary["clock"]["source"], "chrony", "{summary}");
    assert_eq!(summary["clock"]["trusted"], false, "{summary}");
    let published = summary["events_published"].as_u64().unwrap();
    assert!(published > 0, "{summary}");
    assert_eq!(
        agg.wait_stored(published, Duration::from_secs(30)),
        published
    );
    let events = agg.all_events("kind=object_track");
    assert!(!events.is_empty());
    for ev in &events {
        let c = ev
            .clock
            .as_ref()
            .expect("every event carries the clock's state");
        assert!(!c.trusted && !c.synchronised, "{c:?}");
        assert_eq!(c.source, "chrony");
        assert_eq!(c.bound_ms, 50.0);
    }
    let (metrics, nodes) = scraper
        .join()
        .unwrap()
        .expect("the clock in /metrics and in the health report at the aggregator");
    for needle in [
        "edge_clock_synchronised{source=\"chrony\"} 0",
        "edge_clock_trusted{source=\"chrony\"} 0",
    ] {
        assert!(metrics.contains(needle), "{needle} not in:\n{metrics}");
    }
    assert!(nodes.contains("\"trusted\":false"), "{nodes}");

    // Synchronised, 0.3 ms fast, error bound 0.3 + 2 + 4 / 2 = 4.3 ms: trusted.
    let dir = common::tempdir::Dir::new("clock-synced");
    let chronyc = fake_chronyc(
        &dir.0,
        "C0A80001,192.168.0.1,2,1765000000.000000000,-0.000300000,0.000010000,0.000020000,-11.000,0.001,0.050,0.004000000,0.002000000,64.0,Normal",
    );
    let (out, summary) = run_edge(
        &config(agg.zenoh_port, free_port(), &chronyc, 100),
        &dir.0,
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = summary.unwrap();
    assert_eq!(summary["clock"]["trusted"], true, "{summary}");
    let second = summary["events_published"].as_u64().unwrap();
    assert!(second > 0, "{summary}");
    assert_eq!(
        agg.wait_stored(published + second, Duration::from_secs(30)),
        published + second
    );
    let all = agg.all_events("kind=object_track");
    let trusted: Vec<_> = all
        .iter()
        .filter_map(|e| e.clock.as_ref().filter(|c| c.trusted))
        .collect();
    assert_eq!(trusted.len(), all.len() - events.len(), "{trusted:?}");
    assert!(!trusted.is_empty());
    let c = trusted[0];
    assert!(c.synchronised);
    assert!((c.offset_ms.unwrap() - 0.3).abs() < 1e-6, "{c:?}");
    assert!((c.max_error_ms.unwrap() - 4.3).abs() < 1e-6, "{c:?}");
}
