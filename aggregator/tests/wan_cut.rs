//! Fault test `wan_cut` (issue 19): two counties and one city, zenoh routers between them
//! with mutual TLS and the access-control policy `aggregator router` generates; the link from
//! county A's router to the city's is cut for a while with events flowing. The edge side
//! here publishes each event once and forgets it, as a node does once its county has
//! acknowledged it: whatever the city has of the cut time it must pull from county A.
//! After the link returns the city holds every event of both counties, and the evidence
//! images its policy (`violations`) asks for.
//!
//! The link is cut inside a TCP forwarder between the two routers: TLS runs end to end
//! through it, so the routers see each other's certificates as they would over a WAN.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::security::TlsFiles;
use protocol::*;

mod common;
use common::*;

const CK_A: &str = "32050500051210000001"; // county 320505
const CK_B: &str = "32050600051210000001"; // county 320506
const CAM_A: &str = "32050500051320000002";
const CAM_B: &str = "32050600051320000002";
const NODE_A: &str = "32050500055050000001";
const NODE_B: &str = "32050600055050000001";

/// A TCP forwarder whose link can be cut (open connections shut, new ones refused) and
/// restored.
struct Link {
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Link {
    fn start(listen: u16, to: u16) -> Link {
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let listener = TcpListener::bind(("127.0.0.1", listen)).unwrap();
        let (u, o) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(a) = conn else { continue };
                if !u.load(Ordering::SeqCst) {
                    let _ = a.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(b) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let _ = a.set_nodelay(true);
                let _ = b.set_nodelay(true);
                {
                    let mut o = o.lock().unwrap();
                    o.push(a.try_clone().unwrap());
                    o.push(b.try_clone().unwrap());
                }
                for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)]
                {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Link { up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn checkpoint(id: &str, lon: f64) -> String {
    format!("[[checkpoints]]\nid = \"{id}\"\nname = \"{id}\"\nlon = {lon}\nlat = 31.3\n")
}

/// An aggregator's config: a zenoh client of its router, over TLS as `cn`.
#[allow(clippy::too_many_arguments)]
fn aggregator_text(
    dir: &Path,
    pki: &Path,
    id: &str,
    scope: &str,
    cn: &str,
    router: u16,
    trusted: &[&str],
    extra: &str,
) -> String {
    let t = TlsFiles::in_folder(pki, cn);
    format!(
        "id = \"{id}\"\nscope = \"{scope}\"\n[auth]\nrequired = false\n[storage]\nsqlite_path = \"{db}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[zenoh]\nmode = \"client\"\nlisten = []\nconnect = [\"tls/localhost:{router}\"]\ntls = {{ ca = \"{ca}\", cert = \"{cert}\", key = \"{key}\" }}\ntrusted_common_names = {trusted:?}\n[watchlist]\nstate_dir = \"{dir}\"\n{extra}\n",
        db = dir.join(format!("{id}.db")).display(),
        ca = t.ca.display(),
        cert = t.cert.display(),
        key = t.key.display(),
        dir = dir.display(),
    )
}

fn validated(text: &str) -> aggregator::config::ValidConfig {
    let raw: aggregator::config::AggregatorConfig =
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    raw.validate(Path::new("test")).unwrap()
}

/// A router opened from the config `aggregator router` prints for this aggregator config.
fn router(
    rt: &tokio::runtime::Runtime,
    agg_cfg: &str,
    pki: &Path,
    cn: &str,
    listen: u16,
    connect: Option<u16>,
    trusted: &[&str],
) -> zenoh::Session {
    let spec = aggregator::router::RouterSpec {
        listen: vec![format!("tls/localhost:{listen}")],
        connect: connect
            .map(|p| format!("tls/localhost:{p}"))
            .into_iter()
            .collect(),
        tls: TlsFiles::in_folder(pki, cn),
        trusted: trusted.iter().map(|s| s.to_string()).collect(),
    };
    let text = aggregator::router::config(&validated(agg_cfg), &spec).unwrap();
    assert!(text.contains("\"default_permission\":\"deny\""), "{text}");
    rt.block_on(async {
        zenoh::open(zenoh::Config::from_json5(&text).unwrap())
            .await
            .unwrap()
    })
}

/// An edge node's session: a client of its county's router with its checkpoint certificate.
fn node(rt: &tokio::runtime::Runtime, pki: &Path, ck: &str, router: u16) -> zenoh::Session {
    let t = TlsFiles::in_folder(pki, ck);
    let text = protocol::security::zenoh_json5(
        "client",
        &[format!("tls/localhost:{router}")],
        &[],
        false,
        Some(&t),
        None,
    );
    rt.block_on(async {
        zenoh::open(zenoh::Config::from_json5(&text).unwrap())
            .await
            .unwrap()
    })
}

/// What one node produced: event ids, and the images of violations and of passes.
#[derive(Default)]
struct Produced {
    events: Vec<String>,
    violation_images: Vec<String>,
    pass_images: Vec<String>,
    /// Pictures the node never sent (as when its full outbox dropped them): the pull must not
    /// wait for them.
    unsent_images: Vec<String>,
}

/// Publishes `n` events at `ck`, one every `gap`: every fifth a red-light violation with
/// its picture (but the 40th's picture is never sent), every third pass with a plate
/// picture; pictures go first, as a node sends.
#[allow(clippy::too_many_arguments)]
fn produce(
    rt: &tokio::runtime::Runtime,
    s: &zenoh::Session,
    (ck, cam, node): (&str, &str, &str),
    first: usize,
    n: usize,
    gap: Duration,
    out: &mut Produced,
) {
    let img = jpeg(64, 48, 3000);
    for i in first..first + n {
        let t = protocol::time::now_ms();
        let (ev, image) = if i % 5 == 0 {
            let mut ev = red_light(ck, cam, node, t, "x", "x");
            ev.event_id =
                ulid::Ulid::from_parts(t as u64, rand_part(ck, &i.to_string())).to_string();
            let id = format!("{}-scene", ev.event_id);
            ev.evidence[0].image_id = id.clone();
            if i == 40 {
                out.unsent_images.push(id);
                (ev, None)
            } else {
                out.violation_images.push(id.clone());
                (ev, Some(id))
            }
        } else {
            let plate = format!("苏E{}{:04}", &ck[5..6], i);
            let mut ev = pass(ck, cam, node, t, &plate, 1);
            let image = (i % 3 == 0).then(|| {
                let id = format!("{}-plate", ev.event_id);
                ev.evidence.push(EvidenceRef {
                    image_id: id.clone(),
                    sha256: String::new(),
                    role: "plate".into(),
                });
                out.pass_images.push(id.clone());
                id
            });
            (ev, image)
        };
        rt.block_on(async {
            if let Some(id) = image {
                s.put(
                    keys::evidence(&ev.checkpoint_id, &ev.camera_id, &id),
                    img.clone(),
                )
                .await
                .unwrap();
            }
            s.put(
                keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id),
                ev.encode(),
            )
            .await
            .unwrap();
        });
        out.events.push(ev.event_id);
        std::thread::sleep(gap);
    }
}

/// The event ids an aggregator holds at checkpoint `ck`.
fn held(a: &aggregator::Running, ck: &str) -> HashSet<String> {
    event_ids(a.http_addr, &format!("checkpoint={ck}"))
        .into_iter()
        .collect()
}

fn has_image(a: &aggregator::Running, id: &str) -> bool {
    aggregator::client::get(a.http_addr, &format!("/api/v1/evidence/{id}"))
        .unwrap()
        .0
        == 200
}

fn health(a: &aggregator::Running) -> serde_json::Value {
    serde_json::from_str(&aggregator::client::get(a.http_addr, "/health").unwrap().1).unwrap()
}

#[test]
fn wan_cut() {
    let dir = temp_dir("wan-cut");
    let pki = dir.0.join("pki");
    certs(
        &pki,
        &[
            "router-a",
            "router-b",
            "router-city",
            "agg-a",
            "agg-b",
            "agg-city",
            CK_A,
            CK_B,
        ],
    );
    let rt = runtime();
    let (pa, pb, pc, pf) = (free_port(), free_port(), free_port(), free_port());

    let county_a = aggregator_text(
        &dir.0,
        &pki,
        "32050500055030000001",
        "county:320505",
        "agg-a",
        pa,
        &["router-a"],
        &checkpoint(CK_A, 120.63),
    );
    let county_b = aggregator_text(
        &dir.0,
        &pki,
        "32050600055030000001",
        "county:320506",
        "agg-b",
        pb,
        &["router-b"],
        &checkpoint(CK_B, 120.64),
    );
    let city = aggregator_text(
        &dir.0,
        &pki,
        "32050000055030000001",
        "city:320500",
        "agg-city",
        pc,
        &["router-city"],
        &format!(
            "[sync]\ninterval_secs = 1\nevidence = \"violations\"\n{}{}",
            checkpoint(CK_A, 120.63),
            checkpoint(CK_B, 120.64)
        ),
    );

    // Routers: the city's, county B's linked to it directly, county A's through the link
    // that will be cut.
    let r_city = router(
        &rt,
        &city,
        &pki,
        "router-city",
        pc,
        None,
        &["agg-city", "router-a", "router-b"],
    );
    let link = Link::start(pf, pc);
    let r_a = router(
        &rt,
        &county_a,
        &pki,
        "router-a",
        pa,
        Some(pf),
        &["agg-a", "router-city"],
    );
    let r_b = router(
        &rt,
        &county_b,
        &pki,
        "router-b",
        pb,
        Some(pc),
        &["agg-b", "router-city"],
    );
    let agg_a = start_aggregator(&rt, &county_a);
    let agg_b = start_aggregator(&rt, &county_b);
    let agg_city = start_aggregator(&rt, &city);
    let node_a = node(&rt, &pki, CK_A, pa);
    let node_b = node(&rt, &pki, CK_B, pb);
    std::thread::sleep(Duration::from_secs(2));

    let (mut prod_a, mut prod_b) = (Produced::default(), Produced::default());
    let gap = Duration::from_millis(40);
    // Link up: everything reaches the city live.
    produce(&rt, &node_a, (CK_A, CAM_A, NODE_A), 0, 20, gap, &mut prod_a);
    produce(&rt, &node_b, (CK_B, CAM_B, NODE_B), 0, 20, gap, &mut prod_b);
    wait_until(
        "the first events at the city",
        Duration::from_secs(30),
        || held(&agg_city, CK_A).len() == 20 && held(&agg_city, CK_B).len() == 20,
    );

    // The WAN link of county A goes down while both counties keep producing.
    link.cut();
    let cut_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..4 {
        produce(
            &rt,
            &node_a,
            (CK_A, CAM_A, NODE_A),
            20 + round * 15,
            15,
            gap,
            &mut prod_a,
        );
        produce(
            &rt,
            &node_b,
            (CK_B, CAM_B, NODE_B),
            20 + round * 15,
            15,
            gap,
            &mut prod_b,
        );
    }
    wait_until(
        "county A stores its events",
        Duration::from_secs(30),
        || held(&agg_a, CK_A).len() == prod_a.events.len(),
    );
    wait_until(
        "the city sees county A silent",
        Duration::from_secs(20),
        || health(&agg_city)["status"] == "degraded",
    );
    let h = health(&agg_city);
    let during = held(&agg_city, CK_A).len();
    assert!(
        during <= 20,
        "the city got {during} of county A's events with the link cut"
    );
    assert!(
        h["problems"].to_string().contains("county 320505"),
        "the city's health does not name the silent county: {h}"
    );
    let cut_for = cut_at.elapsed();

    // The link returns; a few more events follow.
    link.restore();
    let back_at = Instant::now();
    produce(
        &rt,
        &node_a,
        (CK_A, CAM_A, NODE_A),
        80,
        10,
        gap,
        &mut prod_a,
    );
    produce(
        &rt,
        &node_b,
        (CK_B, CAM_B, NODE_B),
        80,
        10,
        gap,
        &mut prod_b,
    );
    let want_a: HashSet<String> = prod_a.events.iter().cloned().collect();
    let want_b: HashSet<String> = prod_b.events.iter().cloned().collect();
    wait_until(
        "the city holds every event of both counties",
        Duration::from_secs(60),
        || held(&agg_city, CK_A) == want_a && held(&agg_city, CK_B) == want_b,
    );
    let converged = back_at.elapsed();
    wait_until(
        "the city holds every violation's picture",
        Duration::from_secs(30),
        || {
            prod_a
                .violation_images
                .iter()
                .chain(&prod_b.violation_images)
                .all(|i| has_image(&agg_city, i))
        },
    );
    let at_county = (held(&agg_a, CK_A).len(), held(&agg_b, CK_B).len());
    let at_city = (held(&agg_city, CK_A).len(), held(&agg_city, CK_B).len());
    // Pass pictures of the cut time are not pulled: the policy is violations only.
    let pass_images_at_city = prod_a
        .pass_images
        .iter()
        .filter(|i| has_image(&agg_city, i))
        .count();
    let m = aggregator::client::get(agg_city.http_addr, "/metrics")
        .unwrap()
        .1;
    let pulled: u64 = m
        .lines()
        .find(|l| l.starts_with("aggregator_sync_events_pulled_total{county=\"320505\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    eprintln!(
        "wan_cut ledger: county A produced {} / stored at county {} / stored at city {} (pulled after the cut {pulled}) | county B produced {} / stored at county {} / stored at city {} | lost 0 | violation pictures {} of {} at the city; county A pass pictures at the city {pass_images_at_city} of {} (policy: violations) | link cut {:.1} s, city complete {:.1} s after it returned",
        prod_a.events.len(), at_county.0, at_city.0,
        prod_b.events.len(), at_county.1, at_city.1,
        prod_a.violation_images.len() + prod_b.violation_images.len(),
        prod_a.violation_images.len() + prod_b.violation_images.len(),
        prod_a.pass_images.len(),
        cut_for.as_secs_f64(), converged.as_secs_f64(),
    );
    assert_eq!(at_county, (prod_a.events.len(), prod_b.events.len()));
    assert!(
        pulled >= (prod_a.events.len() - during - 10) as u64,
        "pulled {pulled}"
    );
    assert!(
        pass_images_at_city < prod_a.pass_images.len(),
        "every pass picture of county A reached the city although the cut time's are not pulled (policy violations)"
    );
    wait_until("the city healthy again", Duration::from_secs(20), || {
        health(&agg_city)["status"] == "ok"
    });

    // A city aggregator that starts late, with an empty database (as one restored from an
    // old backup would be, only more so), converges the same way.
    let late_dir = dir.0.join("late");
    std::fs::create_dir_all(&late_dir).unwrap();
    let late_text = city
        .replace("32050000055030000001", "32050000055030000002")
        .replace(
            &dir.0.display().to_string(),
            &late_dir.display().to_string(),
        )
        .replace(
            &late_dir.join("pki").display().to_string(),
            &pki.display().to_string(),
        );
    let t = Instant::now();
    let late = start_aggregator(&rt, &late_text);
    wait_until(
        "the late city holds every event and violation picture",
        Duration::from_secs(60),
        || {
            held(&late, CK_A) == want_a
                && held(&late, CK_B) == want_b
                && prod_a
                    .violation_images
                    .iter()
                    .chain(&prod_b.violation_images)
                    .all(|i| has_image(&late, i))
        },
    );
    assert!(
        prod_a.unsent_images.iter().all(|i| !has_image(&late, i)),
        "a picture nobody sent is at the city"
    );
    eprintln!(
        "wan_cut: a city started late with an empty database held all {} events and {} violation pictures {:.1} s after it started",
        want_a.len() + want_b.len(),
        prod_a.violation_images.len() + prod_b.violation_images.len(),
        t.elapsed().as_secs_f64()
    );
    rt.block_on(late.stop());

    rt.block_on(async {
        node_a.close().await.unwrap();
        node_b.close().await.unwrap();
    });
    rt.block_on(agg_city.stop());
    rt.block_on(agg_a.stop());
    rt.block_on(agg_b.stop());
    rt.block_on(async {
        let _ = r_a.close().await;
        let _ = r_b.close().await;
        let _ = r_city.close().await;
    });
}
