//! The watch list travels from the aggregator to the edge: a version PUT to the aggregator's
//! API is kept and published over zenoh; a node's registry store follows it (asking for the
//! version in force when it starts, then taking each update), refuses older versions and
//! bad payloads, and keeps the version in force across a restart.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use edge_node::registry::{RegistryConfig, RegistryStore};
use protocol::registry::{RegistryFile, Status, VehicleRecord};
use protocol::DeviceId;

fn file(version: u64, plate: &str, status: Vec<Status>) -> Vec<u8> {
    RegistryFile {
        version,
        issued_by: "city operator".into(),
        vehicles: vec![VehicleRecord {
            plate: plate.into(),
            plate_class: None,
            plate_colour: None,
            vehicle_class: Some("K33".into()),
            use_character: Some("A".into()),
            status,
            short_route: false,
        }],
    }
    .encode()
}

fn wait_version(store: &RegistryStore, v: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(15);
    while store.current().version != v && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    store.current().version
}

#[test]
fn watch_list_updates_reach_the_edge_in_version_order_and_survive_a_restart() {
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("registry");
    let cfg = RegistryConfig {
        file: None,
        state_dir: dir.0.clone(),
        follow_updates: true,
    };
    let checkpoint = DeviceId::parse("32050500051210000001").unwrap();
    // The aggregator has nothing yet.
    let (status, _) = aggregator::client::get(agg.http, "/api/v1/watchlist").unwrap();
    assert_eq!(status, 404);
    // Version 2 goes in at the aggregator before the node starts.
    let (status, body) = aggregator::client::put_json(
        agg.http,
        "/api/v1/watchlist",
        &file(2, "苏E12345", vec![Status::Wanted]),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ckpt/320500/320505/watchlist"), "{body}");

    let store = Arc::new(RegistryStore::open(&cfg, "node-a").unwrap());
    let zenoh_cfg: edge_node::config::ZenohConfig =
        toml::from_str(&format!("connect = [\"tcp/127.0.0.1:{}\"]", agg.zenoh_port)).unwrap();
    let (session, _sub) = agg.rt.block_on(async {
        let s = edge_node::publish::open_session(&zenoh_cfg).await.unwrap();
        let sub = edge_node::publish::follow_watchlist(&s, &checkpoint, store.clone())
            .await
            .unwrap();
        (s, sub)
    });
    // Started after version 2 was published: it asked, and got it.
    assert_eq!(wait_version(&store, 2), 2);
    assert!(store
        .current()
        .get("苏E12345")
        .unwrap()
        .status
        .contains(&Status::Wanted));

    // An update is pushed down.
    let (status, body) = aggregator::client::put_json(
        agg.http,
        "/api/v1/watchlist",
        &file(3, "苏E12345", vec![Status::Scrapped]),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(wait_version(&store, 3), 3);
    assert_eq!(
        store.current().get("苏E12345").unwrap().status,
        vec![Status::Scrapped]
    );

    // The aggregator refuses an older version and a bad file.
    let (status, body) =
        aggregator::client::put_json(agg.http, "/api/v1/watchlist", &file(1, "苏E12345", vec![]))
            .unwrap();
    assert_eq!(status, 409, "{body}");
    let (status, body) = aggregator::client::put_json(
        agg.http,
        "/api/v1/watchlist",
        b"{\"version\": 9, \"vehicles\": [{\"plate\": \"XX1\"}]}",
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("XX1"), "{body}");

    // Straight over zenoh, an older version and a malformed payload are refused at the edge.
    agg.rt.block_on(async {
        let key = protocol::keys::watchlist(&checkpoint);
        session
            .put(&key, file(1, "苏A99999", vec![]))
            .await
            .unwrap();
        session.put(&key, b"not a registry".to_vec()).await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(store.current().version, 3);
    assert!(store.current().get("苏A99999").is_none());
    agg.rt.block_on(async { session.close().await.unwrap() });
    drop(store);

    // Restart: version 3 comes back from the node's state folder without any aggregator.
    let again = RegistryStore::open(&cfg, "node-a").unwrap();
    assert_eq!(again.current().version, 3);
    let (status, body) = aggregator::client::get(agg.http, "/api/v1/watchlist").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"version\":3"), "{body}");
}
