//! The zone editor end to end, in a real browser: the edge-node binary on vtest.avi played in
//! real time with the real YOLOv8n model, an aggregator on loopback, and headless Chromium
//! on the dashboard's live view of the camera. An administrator draws a crosswalk on the
//! picture with the mouse and moves it, saves; the node checks the zones with its whole
//! config, writes them into its config file (its comments kept), restarts the camera with
//! them, and the page sees the camera run with them; the change is audited with the zones
//! before and after. A crossed polygon is refused with its problem named, and nothing
//! changes. In Chinese (no visible English word), then in English.

#[path = "../../aggregator/tests/common/browser.rs"]
mod browser;
mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use browser::{no_english, Driver};
use common::*;
use serde_json::Value;

const CAMERA: &str = "32050500051320000001";

#[test]
fn an_administrator_draws_a_zone_and_the_edge_applies_it() {
    let shots = browser::screenshots_dir();
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("zones");
    let config = node_header(agg.zenoh_port)
        + &format!(
            r#"# The camera over the plaza.
[[cameras]]
id = "{CAMERA}"
name = "vtest"
source = {{ type = "file", path = "{}", realtime = true }}
detector = "models/yolov8n.toml"
max_frames = 3000
[[cameras.zones]]
name = "road"
kind = "crosswalk"
polygon = [[0.05, 0.45], [0.95, 0.45], [0.95, 0.75], [0.05, 0.75]]
"#,
            vtest().display(),
        );
    let (mut child, _) = spawn_edge(&config, &dir.0);
    let _node = KillOnPanic(child.id());
    let file = dir.0.join("edge.toml");
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let _stdout = child.stdout.take();
    // The camera is known once its node has reported its health and shows a frame.
    let deadline = Instant::now() + Duration::from_secs(90);
    while aggregator::client::get_bytes(agg.http, &format!("/api/v1/cameras/{CAMERA}/live"))
        .unwrap()
        .0
        != 200
    {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the camera never showed a frame"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let d = Driver::launch();
    // Logins are off on this aggregator: the page's user is an administrator.
    d.go(&format!("http://{}/dashboard/#/camera/{CAMERA}", agg.http));
    d.wait("the frame and the zones in force", "document.getElementById('camera-frame').naturalWidth === 768 && document.querySelector('#zone-list li[data-zone=road]') && !document.getElementById('zone-tools').hidden");
    no_english(&d, "the zone editor");

    // A new crosswalk: four corners clicked on the picture (768 x 576, its centre at 0, 0).
    d.click("#zone-new");
    for (x, y) in [(-300, -200), (-100, -200), (-100, -50), (-300, -50)] {
        d.click_at("#zone-svg", x, y);
    }
    d.click("#zone-finish");
    let corners = d.js("return zed.draft.find((z) => z.name === 'crosswalk_1').polygon;");
    let near = |v: &Value, x: f64, y: f64| {
        (v[0].as_f64().unwrap() - x).abs() < 0.01 && (v[1].as_f64().unwrap() - y).abs() < 0.01
    };
    assert!(
        near(&corners[0], 84.0 / 768.0, 88.0 / 576.0)
            && near(&corners[2], 284.0 / 768.0, 238.0 / 576.0),
        "corners where clicked: {corners}"
    );
    // Moved as a whole: dragged from inside by 40 px right and 30 px down.
    d.drag("#zone-svg", (-200, -125), (-160, -95));
    let moved = d.js("return zed.draft.find((z) => z.name === 'crosswalk_1').polygon;");
    assert!(
        near(&moved[0], 124.0 / 768.0, 118.0 / 576.0),
        "moved: {corners} -> {moved}"
    );
    d.wait("unsaved changes shown", "document.getElementById('zone-state').dataset.state === 'unsaved' && document.getElementById('zone-state').textContent === '有未保存的更改'");
    d.click("#zone-save");
    // The node saved them, the watcher restarted the camera, and the camera runs with them.
    d.wait(
        "the camera running with the new zones",
        "document.getElementById('zone-state').dataset.state === 'applied' && document.getElementById('zone-state').textContent === '设备已应用新区域'",
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("name = \"crosswalk_1\"") && text.contains("# The camera over the plaza."),
        "the config file keeps its comments and holds the zone:\n{text}"
    );
    d.wait(
        "the change in the audit",
        "document.querySelectorAll('#zone-audit li[data-action=zones]').length === 1 && document.querySelector('#zone-audit li').textContent.includes('修改区域：1 个 → 2 个')",
    );
    let audit: Value = serde_json::from_slice(
        &aggregator::client::get_bytes(agg.http, &format!("/api/v1/cameras/{CAMERA}/zones/audit"))
            .unwrap()
            .2,
    )
    .unwrap();
    let detail: Value =
        serde_json::from_str(audit["audit"][0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["before"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(detail["after"][1]["name"], "crosswalk_1", "{audit}");
    // The edge draws what it runs with: the debug view shows the new crosswalk.
    d.click("#camera-overlay");
    std::thread::sleep(Duration::from_millis(2500));
    no_english(&d, "the zone editor after saving");
    d.screenshot(&shots, "11-zone-editor.png");

    // A crossed polygon (a bow tie) is refused by the node, with the zone named; the file
    // stays as it was.
    d.click("#zone-new");
    for (x, y) in [(100, 50), (300, 200), (300, 50), (100, 200)] {
        d.click_at("#zone-svg", x, y);
    }
    d.click("#zone-finish");
    d.click("#zone-save");
    d.wait(
        "the problem named",
        "document.getElementById('zone-state').dataset.state === 'refused' && document.getElementById('zone-errors').textContent.includes('crosswalk_2')",
    );
    eprintln!(
        "refused: {}",
        d.js("return document.getElementById('zone-errors').textContent;")
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    d.screenshot(&shots, "12-zone-refused.png");
    d.click("#zone-revert");

    // The same editor in English: a waiting area drawn beside the crosswalk and applied.
    d.click("#lang-switch");
    d.wait("the editor in English", "document.querySelector('#zone-tools h3').textContent === 'Zones' && document.getElementById('zone-new').textContent === 'New zone'");
    d.js("document.getElementById('zone-kind').value = 'waiting_area'; return true;");
    d.click("#zone-new");
    for (x, y) in [(-380, -200), (-310, -200), (-310, -50), (-380, -50)] {
        d.click_at("#zone-svg", x, y);
    }
    d.click("#zone-finish");
    d.click("#zone-save");
    d.wait(
        "the camera running with the waiting area",
        "document.getElementById('zone-state').dataset.state === 'applied' && document.getElementById('zone-state').textContent === 'The camera runs with the new zones' && document.querySelector('#zone-list li[data-zone=waiting_area_1]').textContent.includes('waiting area')",
    );
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("kind = \"waiting_area\""));

    drop(d);
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join().unwrap();
    assert!(
        log.contains("Zones saved in the config file"),
        "the node logs the save:\n{log}"
    );
}
