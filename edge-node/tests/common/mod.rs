//! Shared helpers for the black-box tests: an in-process aggregator on loopback, the
//! edge-node binary run against it with a deadline, and API queries.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("TRAFFIC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

/// The sample video; the suite's command (scripts/test.sh) installs it first.
pub fn vtest() -> PathBuf {
    let p = cache_dir().join("media/vtest.avi");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TestAggregator {
    pub zenoh_port: u16,
    pub http: SocketAddr,
    pub running: Option<aggregator::Running>,
    pub rt: tokio::runtime::Runtime,
    text: String,
    _dir: tempdir::Dir,
}

pub mod tempdir {
    use std::path::PathBuf;
    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "edge-test-{tag}-{}-{}",
                std::process::id(),
                ulid::Ulid::new()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestAggregator {
    pub fn start() -> TestAggregator {
        Self::start_with("")
    }

    /// An aggregator whose config has `extra` appended (checkpoints, crossings, sections).
    pub fn start_with(extra: &str) -> TestAggregator {
        // A port found free can be taken by another test's outgoing connection before the
        // aggregator binds it: try again on another.
        for _ in 0..4 {
            if let Some(agg) = Self::try_start(extra) {
                return agg;
            }
        }
        Self::try_start(extra).expect("aggregator started")
    }

    fn try_start(extra: &str) -> Option<TestAggregator> {
        let dir = tempdir::Dir::new("agg");
        let zenoh_port = free_port();
        let text = format!(
            "id = \"32050500055030000001\"\nscope = \"county:320505\"\n[auth]\nrequired = false\n[storage]\nsqlite_path = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[zenoh]\nlisten = [\"tcp/127.0.0.1:{zenoh_port}\"]\n[retention]\ndefault_days = 0\n{extra}",
            dir.0.join("agg.db").display()
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = match Self::try_launch(&rt, &text) {
            Ok(r) => r,
            Err(e) if e.contains("Address already in use") => return None,
            Err(e) => panic!("aggregator start: {e}"),
        };
        Some(TestAggregator {
            zenoh_port,
            http: running.http_addr,
            running: Some(running),
            rt,
            text,
            _dir: dir,
        })
    }

    fn launch(rt: &tokio::runtime::Runtime, text: &str) -> aggregator::Running {
        Self::try_launch(rt, text).unwrap()
    }

    fn try_launch(rt: &tokio::runtime::Runtime, text: &str) -> Result<aggregator::Running, String> {
        let raw: aggregator::config::AggregatorConfig = toml::from_str(text).unwrap();
        let cfg = raw.validate(Path::new("test")).unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), aggregator::start(cfg))
                .await
                .unwrap()
                .map_err(|e| format!("{e:?}"))
        })
    }

    /// Stops the aggregator (what it received is stored first).
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), r.stop())
                    .await
                    .ok()
            });
        }
    }

    /// Starts it again on the same database and zenoh endpoint.
    pub fn start_again(&mut self) {
        let running = Self::launch(&self.rt, &self.text);
        self.http = running.http_addr;
        self.running = Some(running);
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = aggregator::client::get(self.http, path).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the aggregator has stored `n` events (or the deadline passes).
    pub fn wait_stored(&self, n: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let stored = self.get_json("/health")["ingest"]["stored"]
                .as_u64()
                .unwrap();
            if stored >= n || Instant::now() > deadline {
                return stored;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the aggregator has stored `n` evidence images. Images travel at a lower
    /// priority than events, so the last ones may land after the last event.
    pub fn wait_evidence(&self, n: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let stored = self.get_json("/health")["ingest"]["evidence_stored"]
                .as_u64()
                .unwrap();
            if stored >= n || Instant::now() > deadline {
                return stored;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every event matching `query`, following cursors.
    pub fn all_events(&self, query: &str) -> Vec<protocol::Event> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/events?{query}&limit=200&cursor={c}"),
                None => format!("/api/v1/events?{query}&limit=200"),
            };
            let page = self.get_json(&path);
            out.extend(
                page["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| serde_json::from_value::<protocol::Event>(e.clone()).unwrap()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }
}

impl Drop for TestAggregator {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), r.stop())
                    .await
                    .ok()
            });
        }
    }
}

/// A node config header for tests, connected to `zenoh_port`.
pub fn node_header(zenoh_port: u16) -> String {
    let root = repo_root();
    format!(
        r#"node_id = "32050500055050000001"
checkpoint_id = "32050500051210000001"
[runtime]
onnxruntime_library = "{ort}"
models_dir = "{models}"
intra_threads = 2
wait_for_aggregator_secs = 20
[zenoh]
connect = ["tcp/127.0.0.1:{zenoh_port}"]
"#,
        ort = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| cache_dir()
            .join("onnxruntime/libonnxruntime.so.1.32.0")
            .display()
            .to_string()),
        models = cache_dir().join("models").display(),
    ) + &format!("# repo {}\n", root.display())
}

/// Runs the edge-node binary on `config_text`, killing it after `deadline`.
pub fn run_edge(
    config_text: &str,
    dir: &Path,
    deadline: Duration,
) -> (Output, Option<serde_json::Value>) {
    let (mut child, summary) = spawn_edge(config_text, dir);
    let until = Instant::now() + deadline;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "edge-node ran past {deadline:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let summary = std::fs::read(&summary)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    (out, summary)
}

/// Starts the edge-node binary on `config_text` (its own outbox under `dir`): the child and
/// where its summary will be written.
#[allow(dead_code)]
/// Kills an edge node its test left running when the test panics: a node left behind keeps
/// sending its outbox to its aggregator's port, and a later test's aggregator may listen on
/// that port number again.
pub struct KillOnPanic(pub u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub fn spawn_edge(config_text: &str, dir: &Path) -> (std::process::Child, PathBuf) {
    let cfg = dir.join("edge.toml");
    // Each test's node keeps its own outbox (tests run side by side).
    let config_text = if config_text.contains("[outbox]") {
        config_text.to_string()
    } else {
        format!(
            "{config_text}\n[outbox]\npath = \"{}\"\n",
            dir.join("outbox.db").display()
        )
    };
    std::fs::write(&cfg, config_text).unwrap();
    let summary = dir.join("summary.json");
    let child = Command::new(env!("CARGO_BIN_EXE_edge-node"))
        .arg("--config")
        .arg(&cfg)
        .arg("--summary-json")
        .arg(&summary)
        .current_dir(repo_root())
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("TRAFFIC_MODELS_DIR")
        .env("RUST_LOG", "info,zenoh=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, summary)
}

/// A GStreamer RTSP server on loopback serving vtest.avi (H.264, real time) at `/vtest`, on
/// its own main context so that it can be stopped and a new one started on the same port.
pub struct RtspServer {
    pub port: u16,
    stop: Option<gstreamer::glib::MainLoop>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RtspServer {
    pub fn start(port: u16) -> RtspServer {
        use gstreamer::glib;
        use gstreamer_rtsp_server as rtsp;
        use gstreamer_rtsp_server::prelude::*;
        gstreamer::init().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ctx = glib::MainContext::new();
            ctx.with_thread_default(|| {
                let main_loop = glib::MainLoop::new(Some(&ctx), false);
                let server = rtsp::RTSPServer::new();
                server.set_address("127.0.0.1");
                server.set_service(&port.to_string());
                let factory = rtsp::RTSPMediaFactory::new();
                factory.set_launch(&format!(
                    "( filesrc location={} ! decodebin ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96 )",
                    vtest().display()
                ));
                factory.set_shared(true);
                server.mount_points().unwrap().add_factory("/vtest", factory);
                let id = server.attach(Some(&ctx)).unwrap();
                tx.send((server.bound_port() as u16, main_loop.clone())).unwrap();
                main_loop.run();
                // Stopped: every client is cut off and the port is closed.
                server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
                if let Some(source) = ctx.find_source_by_id(&id) {
                    source.destroy();
                }
                while ctx.iteration(false) {}
            })
            .unwrap();
        });
        let (port, main_loop) = rx.recv().unwrap();
        RtspServer {
            port,
            stop: Some(main_loop),
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        if let Some(ml) = self.stop.take() {
            ml.quit();
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Watches a running node's `/metrics` (on `metrics_port`) and the aggregator's
/// `/api/v1/nodes` (at `http`) on a thread until `until(metrics, nodes)` holds, for 90 s at
/// most: both bodies then, else `None`.
pub fn watch_metrics_and_nodes(
    metrics_port: u16,
    http: SocketAddr,
    until: impl Fn(&str, &str) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Option<(String, String)>> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Ok((200, body)) =
                aggregator::client::get(("127.0.0.1", metrics_port), "/metrics")
            {
                let nodes = aggregator::client::get(http, "/api/v1/nodes")
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                if until(&body, &nodes) {
                    return Some((body, nodes));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
}
