//! The dashboard in a real browser: Debian's headless Chromium driven by chromedriver over
//! the W3C WebDriver protocol, against a running aggregator with logins on. A reviewer logs
//! in, sees a live alert arrive over server-sent events, searches a plate, opens the
//! violation with its evidence pictures and confirms it with a reason; the trajectory map,
//! node health and charts are drawn. All of it in Chinese (the default), with no visible
//! English word and every time in Beijing time; then switched to English. Screenshots are
//! saved under `target/dashboard-screenshots/` (the README shows them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aggregator::client::request_with;
use protocol::*;
use serde_json::{json, Value};

mod common;
use common::*;
#[path = "common/browser.rs"]
mod browser;
use browser::{no_english, Driver};

const CK_A: &str = "32050500051210000001";
const CK_B: &str = "32050500051210000002";
const CAM_A: &str = "32050500051320000001";
const CAM_B: &str = "32050500051320000012";
const NODE: &str = "32050500055050000001";

/// `2026-11-29 16:00:00`: a UTC time in Beijing time (UTC+8 all year).
fn beijing_time(ms: i64) -> String {
    protocol::time::format_rfc3339_ms(ms + 8 * 3_600_000)[..19].replace('T', " ")
}

/// Four seconds of test pattern as H.264 in MP4 (gst-launch-1.0, installed by setup).
fn h264_clip(dir: &Path) -> Vec<u8> {
    let path = dir.join("clip.mp4");
    let ok = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=40",
            "!",
            "video/x-raw,width=320,height=240,framerate=10/1",
            "!",
            "videoconvert",
            "!",
            "x264enc",
            "!",
            "h264parse",
            "!",
            "mp4mux",
            "faststart=true",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", path.display()))
        .status()
        .expect("gst-launch-1.0 from scripts/setup.sh");
    assert!(ok.success());
    let b = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    b
}

fn violation(t: i64, image: &str, sha: &str) -> Event {
    red_light(CK_A, CAM_A, NODE, t, image, sha)
}

#[test]
fn reviewer_sees_a_live_alert_searches_opens_evidence_and_confirms() {
    let shots = browser::screenshots_dir();
    let dir = temp_dir("dash");
    let rt = runtime();
    let zport = free_port();
    // The site's tile server: a grey tile for any request, counted.
    let tile_hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tiles = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = tiles.local_addr().unwrap().port();
    {
        let (hits, tile) = (tile_hits.clone(), jpeg(256, 256, 0));
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for s in tiles.incoming() {
                let Ok(mut s) = s else { break };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", tile.len());
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&tile);
            }
        });
    }
    let text = format!(
        "id = \"32050500055030000001\"\nscope = \"county:320505\"\n[display]\nmap_tiles = \"http://127.0.0.1:{tport}/{{z}}/{{x}}/{{y}}.jpg\"\nmap_attribution = \"测试底图\"\n[storage]\nsqlite_path = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[zenoh]\nlisten = [\"tcp/127.0.0.1:{zport}\"]\n[[auth.users]]\nname = \"zhao\"\nrole = \"reviewer\"\ncounty = \"320505\"\npassword_hash = '{}'\n[[checkpoints]]\nid = \"{CK_A}\"\nname = \"校园路口\"\nlon = 120.630\nlat = 31.260\n[[checkpoints]]\nid = \"{CK_B}\"\nname = \"吴中大道卡口\"\nlon = 120.700\nlat = 31.300\n",
        dir.0.join("agg.db").display(),
        aggregator::auth::hash_password("zhao-pw"),
    );
    let agg = start_aggregator(&rt, &text);
    let base = format!("http://{}", agg.http_addr);
    let session = peer(&rt, zport);
    std::thread::sleep(Duration::from_millis(500));
    let put =
        |key: String, bytes: Vec<u8>| rt.block_on(async { session.put(key, bytes).await.unwrap() });
    let ck_a = DeviceId::parse(CK_A).unwrap();

    // Twelve hours of traffic at both checkpoints, busier by day; the plate 苏E7C001 at A and
    // 20 minutes later at B.
    let now = protocol::time::now_ms();
    let t0 = now - 3_000_000;
    let mut passes = vec![
        pass(CK_A, CAM_A, NODE, t0, "苏E7C001", 1),
        pass(CK_B, CAM_B, NODE, t0 + 1_200_000, "苏E7C001", 2),
        // A delivery van back and forth: A, B, A, B.
        pass(CK_A, CAM_A, NODE, t0 - 4_000_000, "苏E7C002", 1),
        pass(CK_B, CAM_B, NODE, t0 - 2_800_000, "苏E7C002", 2),
        pass(CK_A, CAM_A, NODE, t0 - 1_600_000, "苏E7C002", 1),
        pass(CK_B, CAM_B, NODE, t0 - 400_000, "苏E7C002", 2),
    ];
    for h in 0..12i64 {
        for k in 0..(3 + (h * 7) % 9) {
            let (ck, cam) = if k % 3 == 0 {
                (CK_B, CAM_B)
            } else {
                (CK_A, CAM_A)
            };
            let t = now - (12 - h) * 3_600_000 + k * 311_000;
            passes.push(pass(
                ck,
                cam,
                NODE,
                t,
                &format!("苏E{:05}", h * 100 + k),
                1 + (k % 2) as u32,
            ));
        }
    }
    let stored = passes.len() as u64;
    for ev in &passes {
        put(
            keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id),
            ev.encode(),
        );
    }
    // The node at A reports its health.
    let health = protocol::health::NodeHealth {
        node_id: NODE.into(),
        checkpoint_id: CK_A.into(),
        sent_ms: now,
        interval_ms: 60_000,
        cameras: vec![protocol::health::CameraHealth {
            id: CAM_A.into(),
            label: "人行横道".into(),
            frames_decoded: 7950,
            frames_processed: 7941,
            frames_dropped: 9,
            frames_dropped_by_reason: [("behind".to_string(), 9)].into(),
            inference_errors: 0,
            fps: 14.8,
            failures_in_a_row: 0,
        }],
        outbox_backlog_items: 2,
        outbox_oldest_age_secs: 0.4,
        execution_providers: [("yolov8n.onnx".to_string(), "cpu".to_string())].into(),
        // The box's clock is not synchronised: the operator sees it.
        clock: Some(protocol::health::ClockStatus {
            source: "kernel".into(),
            synchronised: false,
            offset_ms: Some(0.0),
            max_error_ms: None,
            bound_ms: 100.0,
            trusted: false,
            checked_ms: 0,
        }),
    };
    put(keys::health(&ck_a), health.encode());
    wait_until("the passes stored", Duration::from_secs(20), || {
        agg.metrics.snapshot().stored == stored
    });

    let d = Driver::launch();
    d.go(&format!("{base}/dashboard/"));
    d.wait(
        "the login form",
        "document.getElementById('login') && !document.getElementById('login').hidden",
    );
    d.type_into("#login-user", "zhao");
    d.type_into("#login-password", "wrong");
    d.click("#login-submit");
    d.wait(
        "the refusal",
        "document.getElementById('login-error').textContent === '用户名或密码错误'",
    );
    d.type_into("#login-password", "zhao-pw");
    d.click("#login-submit");
    d.wait("the live view in Chinese", "document.documentElement.lang === 'zh-CN' && !document.getElementById('view-live').hidden && document.getElementById('live-state').textContent === '已连接'");

    // A violation arrives while the page is open: evidence first, then the event.
    let jpeg = std::fs::read(
        std::env::var("TRAFFIC_MEDIA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/media"))
            .join("bus.jpg"),
    )
    .expect("bus.jpg from scripts/setup.sh");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&jpeg))
    };
    let mut v = violation(now - 60_000, "ev-scene-1", &sha);
    put(
        keys::evidence(&ck_a, &v.camera_id, "ev-scene-1"),
        jpeg.clone(),
    );
    // And its clip, H.264 in MP4 as the edge makes them.
    let mp4 = h264_clip(&shots);
    v.evidence.push(EvidenceRef {
        image_id: "ev-clip-1".into(),
        sha256: {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&mp4))
        },
        role: "clip".into(),
    });
    put(keys::evidence(&ck_a, &v.camera_id, "ev-clip-1"), mp4);
    put(
        keys::event(&v.checkpoint_id, &v.camera_id, v.kind(), &v.event_id),
        v.encode(),
    );
    d.wait(
        "the live alert",
        &format!(
            "document.querySelector('#alerts tr[data-id=\"{}\"]')",
            v.event_id
        ),
    );
    // Its time in Beijing time, the kind in Chinese.
    let beijing = beijing_time(v.frame_time_ms);
    d.wait(
        "the alert's time in Beijing time and its kind in Chinese",
        &format!(
            "(() => {{ const c = document.querySelector('#alerts tr[data-id=\"{}\"]').cells; return c[0].textContent === '{beijing}' && c[1].textContent === '行人闯红灯' && c[5].textContent === '待审核'; }})()",
            v.event_id
        ),
    );
    no_english(&d, "the live alerts");
    d.screenshot(&shots, "1-live-alert.png");

    // Search a plate.
    d.go(&format!("{base}/dashboard/#/search"));
    d.wait(
        "the search form",
        "!document.getElementById('view-search').hidden",
    );
    d.type_into("#search-form input[name=plate]", "苏E7C001");
    d.click("#search-submit");
    d.wait(
        "two passes found",
        "document.querySelectorAll('#results tr').length === 2",
    );
    no_english(&d, "the search");
    d.screenshot(&shots, "2-search.png");
    // A window typed in Beijing time finds the plate's first pass and not the second.
    d.type_into(
        "#search-form input[name=from]",
        &beijing_time(t0 - 60_000)[..16],
    );
    d.type_into(
        "#search-form input[name=to]",
        &beijing_time(t0 + 60_000)[..16],
    );
    d.click("#search-submit");
    d.wait(
        "one pass in the Beijing-time window",
        &format!("document.querySelectorAll('#results tr').length === 1 && document.querySelector('#results tr').cells[0].textContent === '{}'", beijing_time(t0)),
    );

    // Open the violation: its picture loads; confirm it.
    d.go(&format!("{base}/dashboard/#/event/{}", v.event_id));
    d.wait("the evidence picture", "(() => { const i = document.querySelector('#event-evidence img'); return i && i.complete && i.naturalWidth > 0; })()");
    d.wait(
        "the review buttons",
        "!document.getElementById('event-review').hidden",
    );
    no_english(&d, "the violation");
    d.screenshot(&shots, "3-evidence.png");
    // No reason, no decision.
    d.click("#review-confirm");
    d.wait(
        "a reason asked for",
        "document.getElementById('review-result').textContent === '请先填写审核理由' && !document.getElementById('event-review').hidden",
    );
    d.type_into("#review-reason", "信号灯、行人和人行横道清晰可见");
    d.click("#review-confirm");
    d.wait(
        "the decision recorded",
        "document.getElementById('review-result').dataset.state === 'confirmed' && document.getElementById('review-result').textContent === '已记录：已确认'",
    );
    d.wait(
        "the audit line",
        "document.getElementById('event-audit').textContent.includes('zhao 审核（已确认：信号灯、行人和人行横道清晰可见）')",
    );
    no_english(&d, "the review");
    d.screenshot(&shots, "4-confirmed.png");
    // A reviewer may not reopen a decision (an administrator may: tests/api_auth.rs).
    assert_eq!(
        d.js("return document.getElementById('event-reopen').hidden;"),
        json!(true)
    );
    // The clip plays in the browser (Chromium decodes its H.264), and enlarges.
    d.wait("the clip decoded", "(() => { const v = document.querySelector('#event-evidence figure[data-role=clip] video'); return v && v.readyState >= 1 && v.videoWidth === 320 && v.duration > 3.5; })()");
    d.click("#event-evidence figure[data-role=clip] button.enlarge");
    d.wait(
        "the clip enlarged and playing",
        "(() => { const v = document.getElementById('zoom-video'); return document.getElementById('zoom').open && !v.hidden && v.readyState >= 2 && v.currentTime > 0; })()",
    );
    d.click("#zoom-close");
    d.wait("the clip closed", "!document.getElementById('zoom').open");
    // A picture enlarges and closes.
    d.click("#event-evidence img");
    d.wait(
        "the picture enlarged",
        "document.getElementById('zoom').open && document.getElementById('zoom-img').complete && document.getElementById('zoom-img').naturalWidth > 0",
    );
    d.click("#zoom-close");
    d.wait(
        "the picture closed",
        "!document.getElementById('zoom').open",
    );

    // The printable notice: offence with its code, time, place, decision, pictures.
    d.click("#event-notice");
    d.wait(
        "the notice",
        "(() => { const f = (k) => (document.querySelector(`#notice-facts dd[data-fact=${k}]`) || {}).textContent; \
          const i = document.querySelector('#notice-pictures img'); \
          return !document.getElementById('view-notice').hidden && f('offence') === '行人不按交通信号灯指示通行（违法代码 3001）' \
            && (f('review') || '').startsWith('已确认（zhao，') && i && i.complete && i.naturalWidth > 0; })()",
    );
    let notice_time =
        d.js("return document.querySelector('#notice-facts dd[data-fact=time]').textContent;");
    assert_eq!(notice_time, json!(format!("{beijing}（UTC+8）")));
    no_english(&d, "the notice");
    d.screenshot(&shots, "9-notice.png");
    let pdf = {
        use base64::Engine;
        let v = d.call(
            "POST",
            &d.s("/print"),
            Some(json!({"page": {"width": 21.0, "height": 29.7}, "background": true})),
        );
        base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().unwrap())
            .unwrap()
    };
    assert!(pdf.starts_with(b"%PDF"), "a PDF");
    std::fs::write(shots.join("notice.pdf"), &pdf).unwrap();

    // The trajectory of the plate on the map.
    d.go(&format!(
        "{base}/dashboard/#/trajectory/{}",
        "%E8%8B%8FE7C001"
    ));
    d.wait("a leg drawn", "document.querySelectorAll('#map path.leg').length === 1 && document.querySelectorAll('#trajectory-rows tr').length === 2");
    no_english(&d, "the trajectory");
    // Back and forth: three legs between the same two checkpoints, each its own curve, and
    // no label over another or outside the map.
    d.go(&format!(
        "{base}/dashboard/#/trajectory/{}",
        "%E8%8B%8FE7C002"
    ));
    d.wait("three legs drawn", "document.querySelectorAll('#map path.leg').length === 3 && document.querySelectorAll('#trajectory-rows tr').length === 4");
    let layout = d.js(
        "const legs = [...document.querySelectorAll('#map path.leg')].map((p) => p.getAttribute('d')); \
         const boxes = [...document.querySelectorAll('#map text:not(.attribution)')].map((t) => t.getBBox()); \
         let overlaps = 0, outside = 0; \
         boxes.forEach((a, i) => { if (a.x < 0 || a.y < 0 || a.x + a.width > 800 || a.y + a.height > 500) outside++; \
           boxes.slice(i + 1).forEach((b) => { if (a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height) overlaps++; }); }); \
         return { distinct: new Set(legs).size, labels: boxes.length, overlaps, outside };",
    );
    assert_eq!(
        layout,
        json!({"distinct": 3, "labels": 5, "overlaps": 0, "outside": 0}),
        "legs and labels of a back-and-forth trajectory"
    );
    // Under it, the site's tiles (the only other origin the page may load from).
    d.wait(
        "the map tiles",
        "document.querySelectorAll('#map image.tile.loaded').length >= 4 && document.querySelector('#map text.attribution').textContent === '测试底图'",
    );
    assert!(tile_hits.load(std::sync::atomic::Ordering::SeqCst) >= 4);
    d.screenshot(&shots, "5-trajectory.png");
    d.go(&format!("{base}/dashboard/#/health"));
    d.wait(
        "node A alive",
        &format!("document.querySelector('#health-rows tr[data-checkpoint=\"{CK_A}\"] td.ok')"),
    );
    d.wait(
        "drop reasons and the models' execution provider shown",
        &format!("(() => {{ const r = document.querySelector('#health-rows tr[data-checkpoint=\"{CK_A}\"]'); return r && r.querySelector('td.dropped').textContent === '7950 / 9（处理不及 9）' && r.querySelector('td.providers').textContent === 'yolov8n.onnx: cpu' && r.querySelector('td.clock.bad').textContent === '未同步或超差（系统内核）'; }})()"),
    );
    no_english(&d, "the health view");
    d.screenshot(&shots, "6-health.png");

    // The live view of camera A, from the health table. The node is stood in for by a zenoh
    // queryable answering as a node does (the real node's answer, through the aggregator, is
    // tested by edge-node/tests/live_view.rs).
    let live_key = keys::camera_live(&ck_a, &DeviceId::parse(CAM_A).unwrap());
    let queryable =
        rt.block_on(async { session.declare_queryable(live_key.clone()).await.unwrap() });
    let frame_time = now - 1_000;
    let live_jpeg = jpeg.clone();
    let answering = rt.spawn(async move {
        while let Ok(q) = queryable.recv_async().await {
            let _ = q
                .reply(live_key.as_str(), live_jpeg.as_slice())
                .attachment(frame_time.to_string())
                .await;
        }
    });
    d.click(&format!("a.camera-link[data-camera=\"{CAM_A}\"]"));
    d.wait(
        "the camera's frame",
        &format!(
            "!document.getElementById('view-camera').hidden && document.getElementById('camera-frame').naturalWidth > 0 && document.getElementById('camera-time').textContent.includes('{}')",
            beijing_time(frame_time)
        ),
    );
    no_english(&d, "the live view");
    d.screenshot(&shots, "10-live-view.png");
    d.go(&format!("{base}/dashboard/#/charts"));
    d.wait("bars drawn", "document.querySelectorAll('#chart-kinds rect').length > 0 && document.querySelectorAll('#chart-flow rect').length > 0");
    no_english(&d, "the charts");
    d.screenshot(&shots, "7-charts.png");

    // The same page in English, at the click of one button; times stay in Beijing time.
    d.go(&format!("{base}/dashboard/#/live"));
    d.wait(
        "the live view",
        "!document.getElementById('view-live').hidden",
    );
    d.click("#lang-switch");
    d.wait(
        "the page in English",
        &format!(
            "(() => {{ const c = document.querySelector('#alerts tr[data-id=\"{}\"]').cells; return document.documentElement.lang === 'en' && document.querySelector('#nav a').textContent === 'Live' && c[0].textContent === '{beijing}' && c[1].textContent === 'pedestrian red light' && c[5].textContent === 'confirmed'; }})()",
            v.event_id
        ),
    );
    d.screenshot(&shots, "8-english.png");
    // The choice stays with the browser.
    d.go(&format!("{base}/dashboard/#/event/{}", v.event_id));
    d.wait(
        "the violation in English",
        "document.querySelector('#event-facts dd[data-fact=\"review\"]') && document.querySelector('#event-facts dd[data-fact=\"review\"]').textContent === 'confirmed' && document.getElementById('event-audit').textContent.includes('zhao review (confirmed: ')",
    );

    // The flow again in English: a second violation arrives live, is opened, needs a reason,
    // is rejected with one; its notice prints; the camera's live view shows its frame.
    d.go(&format!("{base}/dashboard/#/live"));
    d.wait("the live view", "!document.getElementById('view-live').hidden && document.getElementById('live-state').textContent === 'live'");
    let v2 = violation(now - 30_000, "ev-scene-2", &sha);
    put(
        keys::evidence(&ck_a, &v2.camera_id, "ev-scene-2"),
        jpeg.clone(),
    );
    put(
        keys::event(&v2.checkpoint_id, &v2.camera_id, v2.kind(), &v2.event_id),
        v2.encode(),
    );
    d.wait(
        "the second alert, in English",
        &format!(
            "(() => {{ const r = document.querySelector('#alerts tr[data-id=\"{}\"]'); return r && r.cells[1].textContent === 'pedestrian red light' && r.cells[5].textContent === 'pending'; }})()",
            v2.event_id
        ),
    );
    d.go(&format!("{base}/dashboard/#/event/{}", v2.event_id));
    d.wait("its picture", "(() => { const i = document.querySelector('#event-evidence img'); return i && i.complete && i.naturalWidth > 0 && !document.getElementById('event-review').hidden; })()");
    d.click("#review-reject");
    d.wait(
        "a reason asked for, in English",
        "document.getElementById('review-result').textContent === 'type a reason first'",
    );
    d.type_into("#review-reason", "the person crossed on green");
    d.click("#review-reject");
    d.wait(
        "the rejection recorded",
        "document.getElementById('review-result').dataset.state === 'rejected' && document.getElementById('review-result').textContent === 'Recorded: rejected'",
    );
    d.click("#event-notice");
    d.wait(
        "the notice in English",
        "(() => { const f = (k) => (document.querySelector(`#notice-facts dd[data-fact=${k}]`) || {}).textContent; \
          return !document.getElementById('view-notice').hidden && document.querySelector('#notice h2').textContent === 'Notice of a traffic violation' \
            && f('offence') === '行人不按交通信号灯指示通行 (code 3001)' && (f('review') || '').startsWith('rejected (zhao, '); })()",
    );
    let pdf = d.call(
        "POST",
        &d.s("/print"),
        Some(json!({"page": {"width": 21.0, "height": 29.7}, "background": true})),
    );
    assert!(pdf["value"].as_str().unwrap().starts_with("JVBER"), "a PDF");
    d.go(&format!("{base}/dashboard/#/camera/{CAM_A}"));
    d.wait(
        "the camera's frame, in English",
        &format!(
            "!document.getElementById('view-camera').hidden && document.getElementById('camera-frame').naturalWidth > 0 && document.getElementById('camera-time').textContent.includes('{}') && document.querySelector('#view-camera h2 span').textContent === 'Live view'",
            beijing_time(frame_time)
        ),
    );
    answering.abort();

    // What the browser did, as the API records it.
    let token = {
        let (_, _, out) = request_with(
            agg.http_addr,
            "POST",
            "/api/v1/login",
            &[("Content-Type", "application/json".into())],
            json!({"user": "zhao", "password": "zhao-pw"})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        serde_json::from_slice::<Value>(&out).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (_, _, out) = request_with(
        agg.http_addr,
        "GET",
        &format!("/api/v1/events/{}", v.event_id),
        &[("Authorization", format!("Bearer {token}"))],
        b"",
    )
    .unwrap();
    let stored: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(stored["review"], "confirmed", "{stored}");
    let (_, _, out) = request_with(
        agg.http_addr,
        "GET",
        &format!("/api/v1/events/{}/audit", v.event_id),
        &[("Authorization", format!("Bearer {token}"))],
        b"",
    )
    .unwrap();
    let audit: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(audit["audit"][0]["actor"], "zhao", "{audit}");
    for n in [
        "1-live-alert",
        "2-search",
        "3-evidence",
        "4-confirmed",
        "5-trajectory",
        "6-health",
        "7-charts",
        "8-english",
        "9-notice",
        "10-live-view",
    ] {
        let len = std::fs::metadata(shots.join(format!("{n}.png")))
            .unwrap()
            .len();
        assert!(len > 10_000, "{n}.png is {len} bytes");
    }
    drop(d);
    rt.block_on(async { session.close().await.unwrap() });
    rt.block_on(agg.stop());
}
