use std::path::PathBuf;

use aggregator::config::AggregatorConfig;
use clap::{Parser, Subcommand};

/// County or city aggregator: stores events from edge nodes and serves queries.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// For `get`, `summary`, `violations`: log in as this user (else TRAFFIC_API_USER); the
    /// password comes from TRAFFIC_API_PASSWORD, never from the command line.
    #[arg(long, global = true)]
    user: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the aggregator until interrupted.
    Run {
        /// Aggregator config (TOML), e.g. configs/aggregator-demo.toml.
        #[arg(long)]
        config: PathBuf,
        /// Write the HTTP address here once listening (for scripts using port 0).
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Print the zenoh config (JSON, for `zenohd -c`) of a router between the levels: mutual
    /// TLS and the access-control policy made from this aggregator's config (its checkpoints'
    /// nodes may publish only under their own checkpoint; the names given with --trust, and
    /// the config's zenoh.trusted_common_names, may do anything).
    Router {
        /// The config of the aggregator this router serves (county or city).
        #[arg(long)]
        config: PathBuf,
        /// Endpoints to listen on, e.g. tls/0.0.0.0:7447 (repeat for more).
        #[arg(long)]
        listen: Vec<String>,
        /// Routers to link to, e.g. the city's: tls/city-router.example:7447.
        #[arg(long)]
        connect: Vec<String>,
        /// Folder of the certificates from scripts/certs.sh.
        #[arg(long)]
        tls_dir: PathBuf,
        /// This router's certificate common name (its files are <name>.pem and <name>.key).
        #[arg(long)]
        name: String,
        /// A certificate common name trusted with everything: the aggregators of this level
        /// and the level above, the routers linked to (repeat for more).
        #[arg(long)]
        trust: Vec<String>,
    },
    /// Validate a config and exit.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Also check that this release reads the database the config names (its schema
        /// is not newer), changing nothing.
        #[arg(long)]
        state: bool,
    },
    /// GET a path from a running aggregator's API and print the JSON, e.g.
    /// `aggregator get 127.0.0.1:8080 /api/v1/stats`.
    Get { addr: String, path: String },
    /// Print what a running aggregator has stored, as a person reads it.
    Summary { addr: String },
    /// Read a password from standard input and print its argon2 hash for
    /// `[[auth.users]] password_hash`.
    HashPassword,
    /// List pedestrian red-light violations and save their evidence pictures.
    Violations {
        addr: String,
        /// Folder to save the evidence pictures (JPEG) and clips (MP4) in.
        #[arg(long)]
        save: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    // Printing into a closed pipe (`| head`) ends the program quietly instead of panicking.
    #[cfg(unix)]
    unsafe_free_sigpipe_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,zenoh=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Logs the client in when a user is given and the command talks to a running aggregator.
fn login_if_asked(user: Option<String>, addr: &str) -> anyhow::Result<()> {
    let Some(user) = user.or_else(|| std::env::var("TRAFFIC_API_USER").ok()) else {
        return Ok(());
    };
    let password = std::env::var("TRAFFIC_API_PASSWORD")
        .map_err(|_| anyhow::anyhow!("set TRAFFIC_API_PASSWORD to the password of '{user}'"))?;
    aggregator::client::login(addr, &user, &password)?;
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.cmd {
        Cmd::Get { addr, .. } | Cmd::Summary { addr } | Cmd::Violations { addr, .. } => {
            login_if_asked(args.user.clone(), addr)?
        }
        _ => {}
    }
    match args.cmd {
        Cmd::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!("{}", aggregator::auth::hash_password(password));
        }
        Cmd::Router {
            config,
            listen,
            connect,
            tls_dir,
            name,
            trust,
        } => {
            let c = AggregatorConfig::load(&config)?;
            let spec = aggregator::router::RouterSpec {
                listen,
                connect,
                tls: protocol::security::TlsFiles::in_folder(&tls_dir, &name),
                trusted: trust,
            };
            let text = aggregator::router::config(&c, &spec)
                .map_err(|e| anyhow::anyhow!("router '{name}': {e}"))?;
            println!("{text}");
        }
        Cmd::Check { config, state } => {
            let c = AggregatorConfig::load(&config)?;
            println!(
                "config '{}' is valid: scope {}",
                config.display(),
                c.scope_label
            );
            if state {
                let (found, known) = aggregator::store::check_version(&c.raw.storage)?;
                println!("database: schema version {found}, this release knows {known}");
            }
        }
        Cmd::Get { addr, path } => {
            let (status, body) = aggregator::client::get(addr.as_str(), &path)?;
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
                Err(_) => println!("{body}"),
            }
            if status >= 400 {
                anyhow::bail!("HTTP {status}");
            }
        }
        Cmd::Summary { addr } => {
            let (status, body) = aggregator::client::get(addr.as_str(), "/api/v1/stats")?;
            if status != 200 {
                anyhow::bail!("HTTP {status} from {addr}: {body}");
            }
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let map = |v: &serde_json::Value| -> String {
                let parts: Vec<String> = v
                    .as_object()
                    .map(|o| o.iter().map(|(k, n)| format!("{k} {n}")).collect())
                    .unwrap_or_default();
                if parts.is_empty() {
                    "none".into()
                } else {
                    parts.join(", ")
                }
            };
            println!("aggregator at {addr}");
            println!(
                "  events stored: {} ({})",
                v["store"]["events_total"],
                map(&v["store"]["by_kind"])
            );
            println!(
                "  object tracks stored per class: {}",
                map(&v["store"]["object_tracks_by_class"])
            );
            let i = &v["ingest"];
            println!(
                "  received {}, stored {}, duplicates {}, rejected {}",
                i["received"], i["stored"], i["duplicates"], i["rejected"]
            );
        }
        Cmd::Violations { addr, save } => violations(&addr, save.as_deref())?,
        Cmd::Run { config, addr_file } => {
            let cfg = AggregatorConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let running = aggregator::start(cfg).await?;
                if let Some(p) = &addr_file {
                    std::fs::write(p, running.http_addr.to_string())?;
                }
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                tracing::info!("Stopping: storing what was received");
                running.stop().await;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}

fn violations(addr: &str, save: Option<&std::path::Path>) -> anyhow::Result<()> {
    let mut cursor: Option<String> = None;
    let mut n = 0;
    if let Some(d) = save {
        std::fs::create_dir_all(d)?;
    }
    // Times in the zone the aggregator shows them in (`[display] time_zone`).
    let zone = match aggregator::client::get(addr, "/dashboard/settings.json") {
        Ok((200, body)) => serde_json::from_str::<aggregator::config::DisplayConfig>(&body)
            .map(|d| d.zone())
            .unwrap_or(jiff::tz::TimeZone::UTC),
        _ => jiff::tz::TimeZone::UTC,
    };
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?kind=pedestrian_red_light&limit=200&cursor={c}"),
            None => "/api/v1/events?kind=pedestrian_red_light&limit=200".to_string(),
        };
        let (status, body) = aggregator::client::get(addr, &path)?;
        if status != 200 {
            anyhow::bail!("HTTP {status} from {addr}: {body}");
        }
        let page: serde_json::Value = serde_json::from_str(&body)?;
        for ev in page["events"].as_array().cloned().unwrap_or_default() {
            n += 1;
            let b = &ev["body"];
            let t = ev["frame_time_ms"].as_i64().unwrap_or(0);
            println!(
                "violation {n}: event {} at {} camera {} track {} crossed '{}' from '{}' on red (red for {:.1} s, signal from {}, age {} ms), review {}",
                ev["event_id"].as_str().unwrap_or("?"),
                aggregator::config::local_time(t, &zone),
                ev["camera_id"].as_str().unwrap_or("?"),
                b["track_id"],
                b["crosswalk"].as_str().unwrap_or("?"),
                b["waiting_area"].as_str().unwrap_or("?"),
                b["red_for_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                b["signal"]["source"].as_str().unwrap_or("?"),
                b["signal_age_ms"],
                ev["review"].as_str().unwrap_or("?"),
            );
            for e in ev["evidence"].as_array().cloned().unwrap_or_default() {
                let id = e["image_id"].as_str().unwrap_or("?");
                let url = format!("http://{addr}/api/v1/evidence/{id}");
                match save {
                    Some(dir) => {
                        let (status, _, bytes) =
                            aggregator::client::get_bytes(addr, &format!("/api/v1/evidence/{id}"))?;
                        if status == 200 {
                            let ext = if e["role"] == "clip" { "mp4" } else { "jpg" };
                            let p = dir.join(format!("{id}.{ext}"));
                            std::fs::write(&p, &bytes)?;
                            println!(
                                "  {:<8} {}  ({url})",
                                e["role"].as_str().unwrap_or("?"),
                                p.display()
                            );
                        } else {
                            println!(
                                "  {:<8} missing at the aggregator ({url})",
                                e["role"].as_str().unwrap_or("?")
                            );
                        }
                    }
                    None => println!("  {:<8} {url}", e["role"].as_str().unwrap_or("?")),
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    if n == 0 {
        println!("no pedestrian red-light violations stored");
    }
    Ok(())
}

/// Restores the default SIGPIPE action through libc-free means: Rust ignores SIGPIPE, so
/// writes to a closed pipe fail and `println!` panics; a failed write ends the process here.
#[cfg(unix)]
fn unsafe_free_sigpipe_default() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
