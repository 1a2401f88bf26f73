//! Aggregator: subscribe to events over zenoh -> validate -> store (idempotent) -> serve.
//!
//! [`start`] wires the stages together; tasks, threads and shutdown live there. The stages
//! themselves ([`ingest`], [`store`], [`api`]) are usable on their own.

pub mod accidents;
pub mod api;
pub mod auth;
pub mod checkpoints;
pub mod client;
pub mod config;
pub mod correlate;
pub mod dashboard;
pub mod http_server;
pub mod ingest;
pub mod jt808;
pub mod lease;
pub mod live;
pub mod metrics;
pub mod query;
pub mod retention;
pub mod router;
pub mod store;
/// The PostgreSQL backend, also at its old path.
pub use store::pg;
pub mod sync;
pub mod timing;
pub mod vehicle_state;
pub mod viid;
pub mod watchlist;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use protocol::keys;
use tracing::info;

use crate::config::ValidConfig;
use crate::ingest::IngestMetrics;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid zenoh settings: {0}; check the [zenoh] section")]
    ZenohConfig(String),
    #[error("cannot start zenoh (listen {listen:?}): {message}; is another aggregator already listening there?")]
    Zenoh {
        listen: Vec<String>,
        message: String,
    },
    #[error(transparent)]
    Watchlist(#[from] watchlist::WatchlistError),
    #[error("cannot listen for HTTP on {addr}: {err}; pick another http.listen")]
    Http {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("{0}")]
    HttpTls(String),
    #[error("the JT/T 808 gateway cannot listen on {addr}: {err}; free the port or change [jt808] listen")]
    Jt808 { addr: String, err: std::io::Error },
}

pub struct Running {
    pub http_addr: SocketAddr,
    /// Where the JT/T 808 gateway listens, when `[jt808] listen` starts one.
    pub jt808_addr: Option<SocketAddr>,
    jt808: Option<tokio::task::JoinHandle<()>>,
    jt808_gateway: Option<Arc<jt808::Gateway>>,
    jt808_forwarder: Option<std::thread::JoinHandle<()>>,
    pub metrics: Arc<IngestMetrics>,
    session: zenoh::Session,
    subscriber: Option<zenoh::pubsub::Subscriber<()>>,
    evidence_subscriber: Option<zenoh::pubsub::Subscriber<()>>,
    health_subscriber: Option<zenoh::pubsub::Subscriber<()>>,
    live: Arc<live::Live>,
    token: Option<zenoh::liveliness::LivelinessToken>,
    watchlist_queryable: Option<zenoh::query::Queryable<()>>,
    query_queryable: Option<zenoh::query::Queryable<()>>,
    sync_queryable: Option<zenoh::query::Queryable<()>>,
    pullers: Vec<tokio::task::JoinHandle<()>>,
    watchlist_follower: Option<zenoh::pubsub::Subscriber<()>>,
    exporter: Option<std::thread::JoinHandle<()>>,
    export_stop: Arc<std::sync::atomic::AtomicBool>,
    writers: Vec<std::thread::JoinHandle<()>>,
    http: tokio::task::JoinHandle<()>,
    http_stop: tokio::sync::oneshot::Sender<()>,
    reader_store: Arc<Mutex<Box<dyn store::EventStore>>>,
    purge_stop: Arc<std::sync::atomic::AtomicBool>,
    purger: std::thread::JoinHandle<()>,
    lease_stop: Arc<std::sync::atomic::AtomicBool>,
    lease_keeper: std::thread::JoinHandle<()>,
}

pub async fn start(cfg: ValidConfig) -> Result<Running, AggregatorError> {
    let metrics = Arc::new(IngestMetrics::default());

    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|err| AggregatorError::Http {
            addr: cfg.http_listen,
            err,
        })?;
    // Checked by the config's validation; loaded again here for the acceptor.
    let tls = match &cfg.raw.http.tls {
        Some(t) => Some(http_server::tls_acceptor(t).map_err(AggregatorError::HttpTls)?),
        None => None,
    };
    let http_addr = listener.local_addr().map_err(|err| AggregatorError::Http {
        addr: cfg.http_listen,
        err,
    })?;

    let z = &cfg.raw.zenoh;
    let acl = z.tls.as_ref().filter(|_| z.acl).map(|_| {
        protocol::security::checkpoint_acl(&cfg.checkpoints.device_ids(), &z.trusted_common_names)
    });
    let text = protocol::security::zenoh_json5(
        &z.mode,
        &z.connect,
        &z.listen,
        z.multicast_scouting,
        z.tls.as_ref(),
        acl,
    );
    let zcfg = zenoh::Config::from_json5(&text)
        .map_err(|e| AggregatorError::ZenohConfig(e.to_string()))?;
    let session = zenoh::open(zcfg)
        .await
        .map_err(|e| AggregatorError::Zenoh {
            listen: z.listen.clone(),
            message: e.to_string(),
        })?;

    let (tx, rxs) = ingest::Queue::new(cfg.raw.storage.writers);
    // Both subscribers hand samples to the writer; a full queue blocks zenoh's delivery:
    // back-pressure, not loss.
    let subscribe = |selector: String, tx: ingest::Queue| {
        let m = metrics.clone();
        session
            .declare_subscriber(selector)
            .callback(move |sample| {
                let attachment = sample.attachment().map(|a| a.to_bytes());
                m.receive(
                    &tx,
                    sample.key_expr().as_str(),
                    sample.payload().to_bytes().into_owned(),
                    attachment.as_deref(),
                );
            })
    };
    let zenoh_err = |e: zenoh::Error| AggregatorError::Zenoh {
        listen: z.listen.clone(),
        message: e.to_string(),
    };
    let evidence_subscriber = subscribe(keys::evidence_in(&cfg.scope), tx.clone())
        .await
        .map_err(zenoh_err)?;
    let selector = keys::events_in(&cfg.scope);
    let pull_tx = tx.clone();
    let jt808_tx = tx.clone();
    let subscriber = subscribe(selector.clone(), tx).await.map_err(zenoh_err)?;
    // Declared after the subscriber: a node that sees this token can already reach it.
    let token = session
        .liveliness()
        .declare_token(keys::aggregator_alive(&cfg.scope_label, &cfg.id))
        .await
        .map_err(|e| AggregatorError::Zenoh {
            listen: z.listen.clone(),
            message: e.to_string(),
        })?;

    // Ports and zenoh are settled before the stores open, so that their failures return a
    // clear error without dropping a PostgreSQL client on the async runtime (its own runtime
    // would panic there). Samples arriving meanwhile wait in the queue for the writer.
    // One connection writes (ingest), one reads (the API); SQLite in WAL mode and
    // PostgreSQL both let them work side by side.
    // The PostgreSQL client blocks and owns a runtime of its own: it is opened (and later
    // dropped) off the async runtime.
    let storage = cfg.raw.storage.clone();
    let exporting = cfg.raw.export.enabled;
    let (mut writer_stores, reader_store, purge_store, lease_store, export_store) =
        tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            Ok((
                (0..storage.writers)
                    .map(|_| store::open(&storage))
                    .collect::<Result<Vec<_>, _>>()?,
                store::open(&storage)?,
                store::open(&storage)?,
                store::open(&storage)?,
                if exporting {
                    Some(store::open(&storage)?)
                } else {
                    None
                },
            ))
        })
        .await
        .expect("opening the store does not panic")?;
    // Passes stored from now on are queued for export in the same transaction.
    for w in &mut writer_stores {
        w.set_export_queue(exporting);
    }
    // The once-only jobs, held by one aggregator of the scope at a time.
    let mut jobs = vec![lease::RETENTION];
    if exporting {
        jobs.push(lease::EXPORT);
    }
    if matches!(cfg.scope, protocol::keys::Scope::City(_)) && cfg.raw.sync.enabled {
        jobs.push(lease::SYNC);
    }
    let leases = Arc::new(lease::Leases::new(
        &cfg.scope_label,
        cfg.id.as_str(),
        std::time::Duration::from_secs(cfg.raw.ha.lease_secs),
        jobs,
    ));
    let export_metrics = Arc::new(viid::ExportMetrics::default());
    let export_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let exporter = export_store.map(|st| {
        let exporter = viid::Exporter {
            cfg: cfg.raw.export.clone(),
            aggregator_id: cfg.id.to_string(),
            image_base_url: cfg
                .raw
                .export
                .image_base_url
                .clone()
                .unwrap_or_else(|| format!("http://{http_addr}/api/v1/evidence/")),
            checkpoints: cfg.checkpoints.all().into_iter().cloned().collect(),
            metrics: export_metrics.clone(),
            leases: Some(leases.clone()),
        };
        let stop = export_stop.clone();
        std::thread::Builder::new()
            .name("viid-export".into())
            .spawn(move || exporter.run(st, stop))
            .expect("spawning a thread")
    });

    let default_dir = match &cfg.raw.storage.sqlite_path {
        p if cfg.raw.storage.backend == config::Backend::Sqlite => p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.to_path_buf())
            .unwrap_or_else(|| std::path::PathBuf::from(".")),
        _ => std::path::PathBuf::from(".cache/state"),
    };
    let counties: Vec<String> = cfg
        .checkpoints
        .all()
        .iter()
        .map(|c| c.county.clone())
        .collect();
    let watchlist = Arc::new(watchlist::Watchlist::open(
        &cfg.raw.watchlist,
        &default_dir,
        cfg.id.as_str(),
        &cfg.scope,
        &counties,
    )?);
    let watchlist_queryable = watchlist::serve(&session, watchlist.clone())
        .await
        .map_err(zenoh_err)?;
    let watchlist_follower = if watchlist.follows_upstream {
        Some(
            watchlist::follow(&session, watchlist.clone())
                .await
                .map_err(zenoh_err)?,
        )
    } else {
        None
    };
    watchlist::publish(&session, &watchlist).await;
    // The leases, and the watch list kept in step with aggregators side by side.
    let lease_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lease_keeper = {
        let (l, stop) = (leases.clone(), lease_stop.clone());
        let (wl, scope) = (watchlist.clone(), cfg.scope_label.clone());
        std::thread::Builder::new()
            .name("leases".into())
            .spawn(move || l.run(lease_store, stop, |st| watchlist::share(&wl, &scope, st)))
            .expect("spawning a thread")
    };

    // Node health reports, for the dashboard: the latest per checkpoint, if its key and body
    // agree.
    let live = Arc::new(live::Live::default());
    let health_subscriber = {
        let live = live.clone();
        let m = metrics.clone();
        session
            .declare_subscriber(keys::health_in(&cfg.scope))
            .callback(move |sample| {
                let key = sample.key_expr().as_str();
                match protocol::health::NodeHealth::decode(&sample.payload().to_bytes()) {
                    Ok(h) if key.split('/').nth(3) == Some(h.checkpoint_id.as_str()) => {
                        live.report(h, protocol::time::now_ms())
                    }
                    Ok(h) => m.reject(
                        key,
                        "health_key",
                        &format!("report of checkpoint {} under key {key}", h.checkpoint_id),
                    ),
                    Err(e) => m.reject(key, "health_malformed", &e),
                }
            })
            .await
            .map_err(zenoh_err)?
    };

    let m = metrics.clone();
    let correlator = ingest::Correlator {
        registry: cfg.checkpoints.clone(),
        cfg: cfg.raw.correlation.clone(),
        aggregator_id: cfg.id.clone(),
        watchlist: Some(watchlist.clone()),
        acks: Some(ingest::Acker {
            session: session.clone(),
            aggregator: cfg.id.to_string(),
            scope: cfg.scope_label.clone(),
        }),
        live: live.clone(),
        admission: ingest::Admission {
            scope: cfg.scope.clone(),
            cfg: cfg.raw.ingest,
        },
    };
    let live_for_stop = live.clone();
    let correlator = Arc::new(correlator);
    let writers: Vec<_> = writer_stores
        .into_iter()
        .zip(rxs)
        .enumerate()
        .map(|(i, (store, rx))| {
            let (m, correlator) = (m.clone(), correlator.clone());
            std::thread::Builder::new()
                .name(format!("ingest-writer-{i}"))
                .spawn(move || ingest::run_writer(store, rx, i, &m, &correlator))
                .expect("spawning a thread")
        })
        .collect();
    let purge_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (retention, stop, m) = (
        cfg.raw.retention.clone(),
        purge_stop.clone(),
        metrics.clone(),
    );
    let purger = std::thread::Builder::new()
        .name("retention-purge".into())
        .spawn({
            let leases = leases.clone();
            move || retention::run(purge_store, retention, stop, m, leases)
        })
        .expect("spawning a thread");
    let reader_store = Arc::new(Mutex::new(reader_store));
    let sync_metrics = Arc::new(sync::SyncMetrics::default());
    // The JT/T 808 gateway files what its terminals report through the same ingest, from
    // one thread (the queue may make it wait: never a task of the async runtime).
    let (jt808_gateway, jt808_forwarder) = match &cfg.raw.jt808.listen {
        None => {
            drop(jt808_tx);
            (None, None)
        }
        Some(_) => {
            let g = &cfg.raw.jt808;
            let filing = jt808::Filing {
                gateway: g.gateway_id(cfg.id.as_str()).expect("checked at load"),
                checkpoint: protocol::DeviceId::parse(
                    g.checkpoint_id.as_deref().expect("checked at load"),
                )
                .expect("checked at load"),
            };
            let (sink, mut rx) = tokio::sync::mpsc::channel::<Vec<protocol::Event>>(1024);
            let m = metrics.clone();
            let forwarder = std::thread::Builder::new()
                .name("jt808-ingest".into())
                .spawn(move || {
                    while let Some(events) = rx.blocking_recv() {
                        for ev in events {
                            let key = keys::event(
                                &ev.checkpoint_id,
                                &ev.camera_id,
                                ev.kind(),
                                &ev.event_id,
                            );
                            m.enqueue(&jt808_tx, (key, ev.encode()));
                        }
                    }
                })
                .expect("a thread starts");
            // What the registry in force says of a plate: coaches (use character B: tourist,
            // E: scheduled) and what it holds against a vehicle. Looked up at every report,
            // so it is indexed by plate once per registry version.
            let wl = watchlist.clone();
            type Index = (
                u64,
                Arc<std::collections::HashMap<String, vehicle_state::Standing>>,
            );
            let index: Mutex<Option<Index>> = Mutex::new(None);
            let gw = jt808::Gateway::new(g.clone())
                .with_registry(Box::new(move |plate: &str| {
                    let bare = |p: &str| p.replace('·', "");
                    let Some(reg) = wl.current() else {
                        return Default::default();
                    };
                    let mut cached = index.lock().unwrap_or_else(|e| e.into_inner());
                    if cached.as_ref().map(|c| c.0) != Some(reg.version) {
                        let by_plate = reg
                            .vehicles
                            .iter()
                            .filter_map(|v| {
                                let s = vehicle_state::Standing {
                                    coach: matches!(v.use_character.as_deref(), Some("B" | "E")),
                                    statuses: v.status.clone(),
                                };
                                (s != Default::default()).then(|| (bare(&v.plate), s))
                            })
                            .collect();
                        *cached = Some((reg.version, Arc::new(by_plate)));
                    }
                    cached
                        .as_ref()
                        .and_then(|c| c.1.get(&bare(plate)).cloned())
                        .unwrap_or_default()
                }))
                .with_filing(filing, sink);
            (Some(Arc::new(gw)), Some(forwarder))
        }
    };
    let state = api::ApiState {
        store: reader_store.clone(),
        metrics: metrics.clone(),
        id: cfg.id.to_string(),
        scope: cfg.scope_label.clone(),
        checkpoints: Arc::new(cfg.checkpoints.clone()),
        http_metrics: Default::default(),
        watchlist: watchlist.clone(),
        session: session.clone(),
        export: exporting.then(|| export_metrics.clone()),
        auth: Arc::new(auth::Auth::new(&cfg.raw.auth)),
        live,
        http_limits: http_server::Limits::of(&cfg.raw.http),
        connections: Default::default(),
        sync: sync_metrics.clone(),
        sync_interval_secs: cfg.raw.sync.interval_secs,
        leases: leases.clone(),
        display: Arc::new(cfg.raw.display.clone()),
        crossings: Arc::new(cfg.raw.crossings.clone()),
        jt808: jt808_gateway.clone(),
    };
    let (jt808_addr, jt808_task) = match (&state.jt808, &cfg.raw.jt808.listen) {
        (Some(gw), Some(addr)) => {
            let (a, t) =
                jt808::serve(gw.clone(), addr)
                    .await
                    .map_err(|err| AggregatorError::Jt808 {
                        addr: addr.clone(),
                        err,
                    })?;
            (Some(a), Some(t))
        }
        _ => (None, None),
    };
    if cfg.raw.zenoh.tls.is_none() && cfg.raw.zenoh.insecure {
        tracing::warn!(listen = ?cfg.raw.zenoh.listen, connect = ?cfg.raw.zenoh.connect, "zenoh.insecure = true: plain zenoh without access control on a network address; anyone reaching it can read plates and publish or acknowledge events (set [zenoh] tls)");
    }
    if !cfg.raw.auth.required {
        tracing::warn!("auth.required = false: the HTTP API serves everyone as an administrator; run it on a trusted network only");
    }
    let query_queryable = query::serve(&session, state.clone(), &cfg.scope_label, &cfg.id)
        .await
        .map_err(zenoh_err)?;
    // Completeness across levels: a county serves what it stored; a city pulls what it lacks.
    let sync_queryable = match &cfg.scope {
        protocol::keys::Scope::County(c) => Some(
            sync::serve(
                &session,
                reader_store.clone(),
                c,
                &cfg.id,
                cfg.raw.sync.settle_ms,
                metrics.clone(),
            )
            .await
            .map_err(zenoh_err)?,
        ),
        _ => None,
    };
    let pullers = match &cfg.scope {
        protocol::keys::Scope::City(_) if cfg.raw.sync.enabled => {
            let mut counties = cfg.raw.sync.counties.clone();
            if counties.is_empty() {
                counties = cfg
                    .checkpoints
                    .all()
                    .iter()
                    .map(|c| c.county.clone())
                    .collect();
            }
            counties.sort();
            counties.dedup();
            sync::Puller {
                session: session.clone(),
                store: reader_store.clone(),
                cfg: cfg.raw.sync.clone(),
                ingest: pull_tx,
                ingest_metrics: metrics.clone(),
                metrics: sync_metrics.clone(),
                leases: leases.clone(),
            }
            .spawn(counties)
        }
        _ => {
            drop(pull_tx);
            Vec::new()
        }
    };
    let (http_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (limits, connections) = (state.http_limits, state.connections.clone());
    let app = api::router(state);
    let http = tokio::spawn(http_server::serve(
        listener,
        app,
        limits,
        tls,
        connections,
        stop_rx,
    ));
    info!(http = %http_addr, zenoh = ?z.listen, subscribe = %selector, backend = ?cfg.raw.storage.backend, "Aggregator started");
    Ok(Running {
        http_addr,
        jt808_addr,
        jt808: jt808_task,
        jt808_gateway,
        jt808_forwarder,
        metrics,
        session,
        subscriber: Some(subscriber),
        evidence_subscriber: Some(evidence_subscriber),
        health_subscriber: Some(health_subscriber),
        live: live_for_stop,
        token: Some(token),
        watchlist_queryable: Some(watchlist_queryable),
        query_queryable: Some(query_queryable),
        sync_queryable,
        pullers,
        watchlist_follower,
        exporter,
        export_stop,
        writers,
        http,
        http_stop,
        reader_store,
        purge_stop,
        purger,
        lease_stop,
        lease_keeper,
    })
}

impl Running {
    /// Stops subscribing, stores what was received, then stops serving.
    pub async fn stop(mut self) {
        self.metrics
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.live.closing.send_replace(true);
        if let Some(t) = self.jt808.take() {
            t.abort();
        }
        drop(self.token.take());
        if let Some(q) = self.watchlist_queryable.take() {
            let _ = q.undeclare().await;
        }
        if let Some(q) = self.query_queryable.take() {
            let _ = q.undeclare().await;
        }
        if let Some(q) = self.sync_queryable.take() {
            let _ = q.undeclare().await;
        }
        // The pullers hold senders of the ingest queue: the writers end once they are gone.
        for p in self.pullers.drain(..) {
            p.abort();
            let _ = p.await;
        }
        if let Some(s) = self.watchlist_follower.take() {
            let _ = s.undeclare().await;
        }
        if let Some(s) = self.subscriber.take() {
            let _ = s.undeclare().await;
        }
        if let Some(s) = self.evidence_subscriber.take() {
            let _ = s.undeclare().await;
        }
        if let Some(s) = self.health_subscriber.take() {
            let _ = s.undeclare().await;
        }
        // The gateway's thread holds a sender of the ingest queue too: it ends once what
        // terminals reported is queued, and no terminal is answered after.
        if let Some(g) = self.jt808_gateway.take() {
            g.close();
        }
        if let Some(f) = self.jt808_forwarder.take() {
            let _ = tokio::task::spawn_blocking(move || f.join()).await;
        }
        let _ = self.session.close().await;
        for w in self.writers.drain(..) {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        self.export_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(x) = self.exporter.take() {
            let _ = tokio::task::spawn_blocking(move || x.join()).await;
        }
        let _ = self.http_stop.send(());
        let _ = self.http.await;
        let store = self.reader_store;
        let _ = tokio::task::spawn_blocking(move || drop(store)).await;
        self.purge_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let purger = self.purger;
        let _ = tokio::task::spawn_blocking(move || purger.join()).await;
        // Last: the jobs are stopped, their leases go to another aggregator at once.
        self.lease_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let keeper = self.lease_keeper;
        let _ = tokio::task::spawn_blocking(move || keeper.join()).await;
    }
}
