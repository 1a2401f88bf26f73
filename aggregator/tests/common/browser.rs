//! A real browser for the dashboard's tests: Debian's headless Chromium driven by
//! chromedriver over the W3C WebDriver protocol. Shared by the aggregator's dashboard test
//! and the edge node's zone-editor test (`#[path]`), so it needs nothing from either's
//! `common` module.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aggregator::client::request_with;
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the dashboard's screenshots go (`target/dashboard-screenshots`; the README shows
/// copies under docs/dashboard).
pub fn screenshots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .chain([
                PathBuf::from("/usr/bin"),
                PathBuf::from("/usr/lib/chromium"),
            ])
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// One WebDriver session.
pub struct Driver {
    port: u16,
    session: String,
    child: std::process::Child,
}

impl Driver {
    /// Debian's Chromium and chromedriver, found on the PATH (setup installs both).
    pub fn launch() -> Driver {
        let (Some(chromium), Some(chromedriver)) = (
            find_binary(&["chromium", "chromium-browser"]),
            find_binary(&["chromedriver"]),
        ) else {
            panic!("Chromium and chromedriver are needed (Debian packages chromium, chromium-driver); scripts/setup.sh installs them");
        };
        Driver::start(&chromium, &chromedriver)
    }

    pub fn start(chromium: &Path, chromedriver: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while aggregator::client::get(("127.0.0.1", port), "/status").is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut d = Driver {
            port,
            session: String::new(),
            child,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--lang=zh-CN"]
            }
        }}});
        let v = d.call("POST", "/session", Some(caps));
        d.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        d
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_else(|| {
            if method == "POST" {
                "{}".into()
            } else {
                String::new()
            }
        });
        let (status, _, out) = request_with(
            ("127.0.0.1", self.port),
            method,
            path,
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        assert!(status < 300, "WebDriver {method} {path}: {status} {v}");
        v
    }

    pub fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    pub fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )["value"]
            .clone()
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v["value"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), None);
    }

    /// Clicks at `(dx, dy)` CSS pixels from the centre of the element (W3C pointer actions:
    /// the browser's own pointer events, as a mouse makes them).
    pub fn click_at(&self, css: &str, dx: i64, dy: i64) {
        self.drag(css, (dx, dy), (dx, dy));
    }

    /// Presses at `from` and lets go at `to`, both from the centre of the element.
    pub fn drag(&self, css: &str, from: (i64, i64), to: (i64, i64)) {
        let e = self.find(css);
        let origin = json!({"element-6066-11e4-a52e-4f735466cecf": e});
        let mut actions = vec![
            json!({"type": "pointerMove", "duration": 0, "origin": origin, "x": from.0, "y": from.1}),
            json!({"type": "pointerDown", "button": 0}),
        ];
        if from != to {
            actions.push(json!({"type": "pointerMove", "duration": 150, "origin": origin, "x": to.0, "y": to.1}));
        }
        actions.push(json!({"type": "pointerUp", "button": 0}));
        self.call(
            "POST",
            &self.s("/actions"),
            Some(json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}]})),
        );
        self.call("DELETE", &self.s("/actions"), None);
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/clear")), None);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(json!({"text": text})),
        );
    }

    /// Waits until `script` (a JavaScript expression) is truthy.
    pub fn wait(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.js(&format!("return !!({script});"));
            if v == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({script}); page: {}",
                self.js("return document.body.innerText;")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn screenshot(&self, dir: &Path, name: &str) {
        use base64::Engine;
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().unwrap())
            .unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = request_with(
                ("127.0.0.1", self.port),
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                b"",
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails when the page shows an English word (two or more Latin letters; SHA-256 the name of
/// a standard) outside what is marked as data (`translate="no"`: plates, ids, user and model
/// names): every word of ours comes from the Chinese catalogue.
pub fn no_english(d: &Driver, what: &str) {
    let found = d.js(
        "const out = []; \
         const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT); \
         for (let n = walk.nextNode(); n; n = walk.nextNode()) { \
           const e = n.parentElement; \
           if (!e || e.closest('[translate=no]') || e.closest('script,style')) continue; \
           if (!e.getClientRects().length || getComputedStyle(e).visibility === 'hidden') continue; \
           const w = (n.textContent.match(/[A-Za-z]{2,}/g) || []).filter((x) => x !== 'SHA'); if (w.length) out.push(...w.map((x) => `${x} in \"${n.textContent.trim()}\"`)); \
         } \
         for (const i of document.querySelectorAll('input[placeholder]')) { \
           if (i.getClientRects().length && /[A-Za-z]{2,}/.test(i.placeholder)) out.push(`placeholder ${i.placeholder}`); \
         } \
         return out;",
    );
    assert_eq!(found, json!([]), "English on {what}");
}
