use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use edge_node::config::NodeConfig;
use edge_node::node;

/// Roadside edge node: cameras in, events out over zenoh.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Node config (TOML), e.g. configs/edge-demo.toml.
    #[arg(long)]
    config: PathBuf,
    /// Only validate the config, and the outbox file if there is one (a release refuses an
    /// outbox of a newer schema), and exit.
    #[arg(long)]
    check: bool,
    /// Also write the end-of-run summary as JSON here.
    #[arg(long)]
    summary_json: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,zenoh=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    let cfg = NodeConfig::load(&args.config)?;
    if args.check {
        println!(
            "config '{}' is valid: {} camera(s)",
            args.config.display(),
            cfg.cameras.len()
        );
        let outbox = node::outbox_path(&cfg);
        if outbox.exists() {
            let version = edge_node::outbox::check_schema_version(&outbox)?;
            println!(
                "outbox '{}': schema version {version}, readable by this release",
                outbox.display()
            );
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    // Execution providers: every model of the node is opened with them; a required one
    // that cannot load stops the node here, before any camera starts.
    let providers = cfg.raw.runtime.providers();
    edge_node::detect::set_providers(providers.clone());
    let library = cfg.raw.runtime.onnxruntime_library();
    match edge_node::detect::probe_providers(&library, &providers) {
        Ok((first, skipped)) if skipped.is_empty() => {
            tracing::info!(provider = %first, "Execution provider")
        }
        Ok((first, skipped))
            if skipped
                .iter()
                .any(|s| edge_node::detect::skip_is_a_fault(s)) =>
        {
            tracing::warn!(provider = %first, skipped = %skipped.join("; "), "Execution provider: fell back")
        }
        Ok((first, skipped)) => {
            tracing::info!(provider = %first, skipped = %skipped.join("; "), "Execution provider: fell back")
        }
        Err(e @ edge_node::detect::DetectError::Provider { .. }) => {
            return Err(anyhow::anyhow!("{e}"))
        }
        // The library itself: each camera reports it (and a file camera gives up), as
        // before; a node may run without models until they are installed.
        Err(e) => tracing::error!(error = %e, "ONNX Runtime not loaded"),
    }
    // Video decoders: hardware where its plugin is, as configured; a required one that is
    // missing stops the node here.
    match edge_node::source::choose_decoders(cfg.raw.runtime.decoder) {
        Ok(choice) => tracing::info!(decoding = %choice, "Video decoding"),
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = shutdown.clone();
    // Watched while the node runs: a changed, valid file is applied live.
    let config_path = args.config.clone();
    let summary = rt.block_on(async move {
        // Ctrl-C, or SIGTERM from systemd (`systemctl stop`) or a container runtime: the
        // cameras finish, the outbox drains for `drain_secs`, the summary is written.
        tokio::spawn(async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
            tracing::info!("Interrupted; finishing the cameras");
            flag.store(true, Ordering::Relaxed);
        });
        node::run(cfg, shutdown, Some(config_path)).await
    })?;
    print!("{}", node::render_summary(&summary));
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing summary to '{}'", p.display()))?;
    }
    Ok(if summary.any_camera_failed() {
        std::process::ExitCode::from(3)
    } else {
        std::process::ExitCode::SUCCESS
    })
}
