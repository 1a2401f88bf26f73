//! Execution providers from config, on a CPU box (issue 17, item 3): the GPU providers are
//! tried in order and the node falls back to the CPU, saying why, per model, in the log, the
//! summary, `/metrics` and the health report; a required GPU that is not there stops the
//! node at start with a clear error; a TensorRT engine cache that cannot be made is named;
//! the video decoding chosen is logged, and a required hardware decoder that is not there
//! stops the node.
//! `scripts/setup.sh` installs the CPU build of ONNX Runtime here, which has neither CUDA
//! nor TensorRT.

mod common;

use std::time::Duration;

use common::*;

/// A one-camera node on the first `frames` frames of vtest.avi with `runtime` lines added,
/// on the CPU build of ONNX Runtime (setup installs it on every machine; on a GPU box the
/// rest of the suite runs on the GPU build).
fn config(zenoh_port: u16, runtime: &str, metrics_port: u16, frames: u32) -> String {
    let cpu_build = cache_dir().join("onnxruntime/libonnxruntime.so.1.32.0");
    let header: String = node_header(zenoh_port)
        .lines()
        .map(|l| {
            if l.starts_with("onnxruntime_library") {
                format!(
                    "onnxruntime_library = \"{}\"\n{runtime}\n",
                    cpu_build.display()
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    header
        + &format!(
            r#"[metrics]
listen = "127.0.0.1:{metrics_port}"
[[cameras]]
id = "32050500051320000001"
name = "crossing"
source = {{ type = "file", path = "{}" }}
max_frames = {frames}
"#,
            vtest().display()
        )
}

#[test]
fn gpu_providers_fall_back_to_the_cpu_saying_why_and_a_required_gpu_is_refused() {
    let agg = TestAggregator::start();

    // Preferred TensorRT (with an engine cache), then CUDA, then the CPU: runs on the CPU.
    let dir = common::tempdir::Dir::new("providers");
    let cache = dir.0.join("trt-cache");
    let metrics_port = free_port();
    let text = config(
        agg.zenoh_port,
        &format!(
            "providers = [\"tensorrt\", \"cuda\", \"cpu\"]\ntensorrt_cache_dir = \"{}\"",
            cache.display()
        ),
        metrics_port,
        // Long enough for a health report (every 5 s) after the model loaded.
        300,
    );
    // The health report (every 5 s) reaches the aggregator too.
    let scraper = watch_metrics_and_nodes(metrics_port, agg.http, |metrics, nodes| {
        metrics.contains("edge_model_execution_provider{")
            && nodes.contains("\"execution_providers\":{\"yolov8n.onnx\":\"cpu\"}")
    });
    let (out, summary) = run_edge(&text, &dir.0, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for needle in [
        "Execution provider: fell back",
        "tensorrt: not in this ONNX Runtime library (a CPU build)",
        "cuda: not in this ONNX Runtime library (a CPU build)",
        "Model loaded on a fallback execution provider",
        "model=yolov8n.onnx provider=cpu",
        // [runtime] thread_pool = "node" by default: one pool for every model.
        "ONNX Runtime: one thread pool for every model of the node threads=2",
    ] {
        assert!(stderr.contains(needle), "'{needle}' not logged:\n{stderr}");
    }
    // Decoding: the choice at start, and the decoder each source got (vtest.avi is MS-MPEG4,
    // which no hardware decoder takes).
    assert!(stderr.contains("Video decoding decoding="), "{stderr}");
    assert!(stderr.contains("decoder=avdec_msmpeg4"), "{stderr}");
    let summary = summary.unwrap();
    assert_eq!(
        summary["execution_providers"]["yolov8n.onnx"], "cpu",
        "{summary}"
    );
    assert_eq!(summary["cameras"][0]["frames_processed"], 300, "{summary}");
    // The engine cache folder is made before TensorRT is asked for (a wrong path is found
    // at once, not after the GPU arrives).
    assert!(cache.is_dir(), "{}", cache.display());
    let (metrics, _) = scraper
        .join()
        .unwrap()
        .expect("the provider in /metrics and in the health report at the aggregator");
    assert!(
        metrics
            .contains("edge_model_execution_provider{model=\"yolov8n.onnx\",provider=\"cpu\"} 1"),
        "{metrics}"
    );

    // An engine cache that cannot be made is named, and TensorRT skipped.
    let dir = common::tempdir::Dir::new("providers-cache");
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let text = config(
        agg.zenoh_port,
        &format!(
            "providers = [\"tensorrt\", \"cpu\"]\ntensorrt_cache_dir = \"{}/trt\"",
            file.display()
        ),
        free_port(),
        5,
    );
    let (out, _) = run_edge(&text, &dir.0, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "tensorrt: cannot create its engine cache '{}/trt'",
            file.display()
        )),
        "{stderr}"
    );

    // require = "cuda" where there is none: the node stops at start, before any camera,
    // saying what was asked, what loaded and why.
    let dir = common::tempdir::Dir::new("providers-require");
    let text = config(
        agg.zenoh_port,
        "providers = [\"cuda\", \"cpu\"]\nrequire = \"cuda\"",
        free_port(),
        5,
    );
    let (out, summary) = run_edge(&text, &dir.0, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(summary.is_none());
    assert!(
        stderr.contains("runtime.providers: runtime.require = \"cuda\" but only cpu loaded (cuda: not in this ONNX Runtime library (a CPU build); install the GPU build"),
        "{stderr}"
    );
    assert!(!stderr.contains("Camera"), "a camera started: {stderr}");

    // decoder = "nvidia" where GStreamer has no NVIDIA decoder: refused at start, saying
    // what to install.
    gstreamer::init().unwrap();
    if gstreamer::Registry::get()
        .lookup_feature("nvh264dec")
        .is_none()
    {
        let dir = common::tempdir::Dir::new("decoder-require");
        let text = config(agg.zenoh_port, "decoder = \"nvidia\"", free_port(), 5);
        let (out, _) = run_edge(&text, &dir.0, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr
                .contains("runtime.decoder = \"nvidia\" but no NVIDIA decoder plugin is installed"),
            "{stderr}"
        );
    }

    // Config mistakes are caught by the check, all at once.
    let dir = common::tempdir::Dir::new("providers-bad");
    for (runtime, says) in [
        ("providers = []", "runtime.providers is empty"),
        (
            "providers = [\"cuda\", \"cuda\"]",
            "runtime.providers lists a provider twice",
        ),
        (
            "providers = [\"cpu\"]\nrequire = \"cuda\"",
            "runtime.require = \"cuda\" is not in providers [\"cpu\"]",
        ),
        (
            "providers = [\"cpu\", \"cuda\"]",
            "runtime.providers lists [\"cuda\"] after \"cpu\"",
        ),
        (
            "providers = [\"gpu\"]",
            "unknown variant `gpu`, expected one of `tensorrt`, `cuda`, `cpu`",
        ),
    ] {
        let (out, _) = run_edge(
            &config(agg.zenoh_port, runtime, free_port(), 5),
            &dir.0,
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{runtime}: {stderr}");
        assert!(
            stderr.contains(says),
            "{runtime}: '{says}' not in:\n{stderr}"
        );
    }
}
