//! zenoh over mutual TLS with the access-control policy built from the checkpoint registry:
//! certificates issued by `scripts/certs.sh`, an aggregator listening on TLS only, edge
//! sessions holding their checkpoint's certificate. A node publishing under another
//! checkpoint's prefix is refused at the aggregator; a certificate from another CA cannot
//! connect at all; plain TCP finds no listener.

use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::security::TlsFiles;
use protocol::*;

mod common;
use common::*;

const CK_A: &str = "32050500051210000001";
const CK_B: &str = "32050500051210000002";
const CAM_A: &str = "32050500051320000002";
const CAM_B: &str = "32050500051320000012";
const NODE: &str = "32050500055050000001";

fn files(dir: &Path, cn: &str) -> TlsFiles {
    TlsFiles::in_folder(dir, cn)
}

fn open(
    rt: &tokio::runtime::Runtime,
    port: u16,
    tls: Option<&TlsFiles>,
) -> Result<zenoh::Session, String> {
    let scheme = if tls.is_some() { "tls" } else { "tcp" };
    let text = protocol::security::zenoh_json5(
        "client",
        &[format!("{scheme}/localhost:{port}")],
        &[],
        false,
        tls,
        None,
    );
    rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(15),
            zenoh::open(zenoh::Config::from_json5(&text).unwrap()),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
    })
}

fn put(rt: &tokio::runtime::Runtime, s: &zenoh::Session, ev: &Event) {
    let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
    rt.block_on(async { s.put(key, ev.encode()).await.unwrap() });
}

fn stored(a: &aggregator::Running, id: &str) -> bool {
    let (status, _) =
        aggregator::client::get(a.http_addr, &format!("/api/v1/events/{id}")).unwrap();
    status == 200
}

#[test]
fn mutual_tls_and_checkpoint_acl() {
    let dir = Dir(std::env::temp_dir().join(format!("zsec-{}", ulid::Ulid::new())));
    let pki: PathBuf = dir.0.join("pki");
    certs(&pki, &["aggregator", CK_A, CK_B]);
    // The same common name under a CA the aggregator does not trust.
    let rogue = dir.0.join("rogue");
    certs(&rogue, &[CK_A]);

    let rt = runtime();
    let port = free_port();
    let agg_tls = files(&pki, "aggregator");
    let text = format!(
        r#"id = "32050500055030000001"
scope = "county:320505"
[auth]
required = false
[storage]
sqlite_path = "{db}"
[http]
listen = "127.0.0.1:0"
[zenoh]
listen = ["tls/localhost:{port}"]
tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}" }}
[[checkpoints]]
id = "{CK_A}"
name = "A"
lon = 120.63
lat = 31.26
[[checkpoints]]
id = "{CK_B}"
name = "B"
lon = 120.64
lat = 31.27
"#,
        db = dir.0.join("agg.db").display(),
        ca = agg_tls.ca.display(),
        cert = agg_tls.cert.display(),
        key = agg_tls.key.display(),
    );
    let agg = start_aggregator(&rt, &text);

    // Plain TCP on the TLS port: no session.
    assert!(
        open(&rt, port, None).is_err(),
        "a plain TCP client connected to the TLS listener"
    );
    // A certificate from another CA, even with a known checkpoint's name: refused.
    let e = open(&rt, port, Some(&files(&rogue, CK_A)))
        .expect_err("a certificate from an untrusted CA connected");
    eprintln!("rogue CA refused: {e}");

    let node_a =
        open(&rt, port, Some(&files(&pki, CK_A))).expect("node A connects with its certificate");
    let node_b =
        open(&rt, port, Some(&files(&pki, CK_B))).expect("node B connects with its certificate");
    std::thread::sleep(Duration::from_millis(500));

    let t0 = 1_795_000_000_000i64;
    // Node A forges a pass at checkpoint B (a valid event under B's key), then sends its own.
    let forged = pass(CK_B, CAM_B, NODE, t0, "苏E00001", 1);
    let own_a = pass(CK_A, CAM_A, NODE, t0 + 1_000, "苏E00002", 1);
    let own_b = pass(CK_B, CAM_B, NODE, t0 + 2_000, "苏E00003", 1);
    put(&rt, &node_a, &forged);
    put(&rt, &node_a, &own_a);
    put(&rt, &node_b, &own_b);
    wait_until(
        "node A's and node B's own passes",
        Duration::from_secs(20),
        || stored(&agg, &own_a.event_id) && stored(&agg, &own_b.event_id),
    );
    // zenoh keeps one session's order: the forged put went before A's own, which is stored.
    std::thread::sleep(Duration::from_secs(1));
    let forged_stored = stored(&agg, &forged.event_id);
    let h = aggregator::client::get(agg.http_addr, "/health").unwrap().1;
    let h: serde_json::Value = serde_json::from_str(&h).unwrap();
    eprintln!(
        "ledger: own-prefix sent 2 stored 2 | foreign-prefix sent 1 stored {} | untrusted CA and plain TCP refused | ingest received {}",
        forged_stored as u8, h["ingest"]["received"]
    );
    assert!(
        !forged_stored,
        "node A's put under checkpoint B's prefix was stored"
    );
    assert_eq!(
        h["ingest"]["received"], 2,
        "the forged put reached the ingest: {h}"
    );

    rt.block_on(async {
        node_a.close().await.unwrap();
        node_b.close().await.unwrap();
    });
    rt.block_on(agg.stop());
}
