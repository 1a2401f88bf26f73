//! Issue 18, row 4: a peer posing as an aggregator. With mutual TLS every certificate the
//! deployment's CA signed connects, a node's own included; the edge node exchanges messages
//! only with the common names in `[zenoh] trusted_common_names`. An impostor holding another
//! checkpoint's (stolen) certificate, with an aggregator's liveliness token and
//! acknowledgements for every item the outbox holds, sees none of the node's events and frees
//! nothing; the same impostor under a trusted name does free them, so it is the policy, not
//! the test, that stops it.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use protocol::security::TlsFiles;

const CK: &str = "32050500051210000001";
/// Another checkpoint of the same county: its certificate is as valid as the node's.
const STOLEN: &str = "32050500051210000002";
const AGG_ID: &str = "32050500055030000001";

fn certs(dir: &Path, names: &[&str]) {
    let out = Command::new(repo_root().join("scripts/certs.sh"))
        .arg(dir)
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn files(dir: &Path, cn: &str) -> TlsFiles {
    TlsFiles::in_folder(dir, cn)
}

/// The impostor: a TLS peer listening where the node connects, holding an aggregator's
/// liveliness token, counting what reaches it from the node, and acknowledging `ack_ids`
/// (when set) every 200 ms.
struct Impostor {
    rt: tokio::runtime::Runtime,
    session: Option<zenoh::Session>,
    seen: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acker: Option<std::thread::JoinHandle<()>>,
}

impl Impostor {
    fn start(port: u16, tls: &TlsFiles, ack_ids: Vec<String>) -> Impostor {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let text = protocol::security::zenoh_json5(
            "peer",
            &[],
            &[format!("tls/localhost:{port}")],
            false,
            Some(tls),
            None,
        );
        let session = rt.block_on(async {
            zenoh::open(zenoh::Config::from_json5(&text).unwrap())
                .await
                .unwrap()
        });
        let agg = protocol::DeviceId::parse(AGG_ID).unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        rt.block_on(async {
            let token = session
                .liveliness()
                .declare_token(protocol::keys::aggregator_alive("320505", &agg))
                .await
                .unwrap();
            std::mem::forget(token);
            let s = seen.clone();
            session
                .declare_subscriber("ckpt/320500/320505/**")
                .callback(move |sample| {
                    if !sample.key_expr().as_str().ends_with("/ack") {
                        s.fetch_add(1, Relaxed);
                    }
                })
                .background()
                .await
                .unwrap();
        });
        let stop = Arc::new(AtomicBool::new(false));
        let acker = (!ack_ids.is_empty()).then(|| {
            let (session, stop) = (session.clone(), stop.clone());
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                let ck = protocol::DeviceId::parse(CK).unwrap();
                let (events, evidence): (Vec<_>, Vec<_>) =
                    ack_ids.into_iter().partition(|i| !i.contains('-'));
                let msg = serde_json::to_vec(&protocol::AckMsg {
                    aggregator: AGG_ID.into(),
                    scope: "320505".into(),
                    events,
                    evidence,
                    rejected: vec![],
                })
                .unwrap();
                while !stop.load(Relaxed) {
                    handle.block_on(async {
                        session
                            .put(protocol::keys::ack(&ck), msg.clone())
                            .await
                            .unwrap()
                    });
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        });
        Impostor {
            rt,
            session: Some(session),
            seen,
            stop,
            acker,
        }
    }

    fn close(mut self) -> u64 {
        self.stop.store(true, Relaxed);
        if let Some(a) = self.acker.take() {
            a.join().unwrap();
        }
        if let Some(s) = self.session.take() {
            self.rt.block_on(async { s.close().await.unwrap() });
        }
        self.seen.load(Relaxed)
    }
}

fn node_config(dir: &Path, port: u16, pki: &Path, trusted: &[&str]) -> String {
    let tls = files(pki, CK);
    node_header(port)
        .replace("wait_for_aggregator_secs = 20", "wait_for_aggregator_secs = 3")
        .replace(
            &format!("connect = [\"tcp/127.0.0.1:{port}\"]"),
            &format!(
                "connect = [\"tls/localhost:{port}\"]\ntls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}\ntrusted_common_names = {trusted:?}",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ),
        )
        + &format!(
            r#"[[cameras]]
id = "32050500051320000001"
name = "vtest"
source = {{ type = "file", path = "{}" }}
detector = "models/yolov8n.toml"
max_frames = 15

[outbox]
path = "{}"
resend_after_secs = 1
drain_secs = 4
"#,
            vtest().display(),
            dir.join("outbox.db").display()
        )
}

fn outbox_ids(dir: &Path) -> Vec<String> {
    edge_node::outbox::Outbox::open(&dir.join("outbox.db"))
        .unwrap()
        .ids()
        .unwrap()
}

#[test]
fn row4_only_a_trusted_aggregator_can_free_the_outbox() {
    let dir = tempdir::Dir::new("impostor");
    let pki = dir.0.join("pki");
    certs(&pki, &["aggregator", CK, STOLEN]);
    let port = free_port();
    let stolen = files(&pki, STOLEN);

    // Run 1: the impostor listens where the node connects; the node trusts "aggregator".
    let imp = Impostor::start(port, &stolen, vec![]);
    let (out, summary) = run_edge(
        &node_config(&dir.0, port, &pki, &["aggregator"]),
        &dir.0,
        Duration::from_secs(180),
    );
    let seen_1 = imp.close();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = summary.unwrap();
    let kept = outbox_ids(&dir.0);
    assert!(
        kept.len() >= 5,
        "the node's events stay in its outbox: {kept:?}\n{summary}"
    );
    assert_eq!(seen_1, 0, "an untrusted peer received the node's events");

    // Run 2: the impostor knows every id the outbox keeps and acknowledges them all.
    let imp = Impostor::start(port, &stolen, kept.clone());
    let (out, _) = run_edge(
        &node_config(&dir.0, port, &pki, &["aggregator"]),
        &dir.0,
        Duration::from_secs(180),
    );
    let seen_2 = imp.close();
    assert!(out.status.success());
    let after = outbox_ids(&dir.0);
    let freed_2 = kept.iter().filter(|i| !after.contains(i)).count();

    // Run 3, the control: the same impostor under a trusted name frees what it acknowledges.
    let imp = Impostor::start(port, &stolen, kept.clone());
    let (out, _) = run_edge(
        &node_config(&dir.0, port, &pki, &["aggregator", STOLEN]),
        &dir.0,
        Duration::from_secs(180),
    );
    let seen_3 = imp.close();
    assert!(out.status.success());
    let after_3 = outbox_ids(&dir.0);
    let freed_3 = kept.iter().filter(|i| !after_3.contains(i)).count();
    println!(
        "ledger row4: outbox kept {} items; untrusted impostor saw {seen_1} + {seen_2} samples and freed {freed_2}; trusted, it saw {seen_3} and freed {freed_3}",
        kept.len()
    );
    assert_eq!(seen_2, 0, "an untrusted peer received the node's events");
    assert_eq!(
        freed_2, 0,
        "an untrusted peer's acknowledgements freed outbox items"
    );
    assert!(
        seen_3 > 0,
        "the control: a trusted peer receives the events"
    );
    assert_eq!(
        freed_3,
        kept.len(),
        "the control: a trusted peer's acks free the items"
    );
}
