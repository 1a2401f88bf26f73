//! Completeness across levels: the city converges on every county's events after any
//! outage.
//!
//! Events reach the city live (it subscribes to its whole key space), but an edge node frees
//! an event once its county has stored it: while the county -> city link is down, the city
//! misses those for good unless someone hands them over again. Here the county does: every
//! county aggregator answers, over zenoh, what it has stored in the order it stored it
//! (`ckpt/agg/<county>/<id>/sync/refs`), the events themselves (`sync/events`) and their
//! evidence images (`sync/evidence`). The city keeps, per county and in its own database, how
//! far it has pulled (its high-water mark, [`crate::store::SyncCursor`]), asks for what
//! follows, fetches what it lacks and feeds it through its own ingest (validated, stored
//! idempotently, correlated, alerted) like a live sample. The mark moves only over events the
//! city has stored, so a city that was cut off, started late or was restored from a backup
//! (an older mark) pulls exactly what it is missing. Who may ask is zenoh's business: with
//! TLS, the county's access-control policy admits only trusted certificates (the city's).
//!
//! A county offers only rows that are settled: stored at least `settle_ms` ago and older than
//! any batch its writer is committing, so that a row committed late never lands behind a mark
//! the city has already passed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::keys;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::store::{EventStore, StoreError, SyncCursor, SyncRef};

/// `[sync]`: the city's pull from its counties, and what a county serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// A city pulls from its counties (a county serves whatever this says).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The counties to pull from (six-digit codes); empty: the counties of `[[checkpoints]]`.
    #[serde(default)]
    pub counties: Vec<String>,
    /// Seconds between pulls once a county has nothing new.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Events offered per page.
    #[serde(default = "default_page")]
    pub page: usize,
    /// Which events' evidence images follow them: `all`, `violations` (events that await
    /// review: red-light crossings, plate anomalies) or `none`.
    #[serde(default)]
    pub evidence: EvidencePolicy,
    /// County side: rows stored less than this long ago are not offered yet.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
    /// How long the city waits for a county's answer.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidencePolicy {
    #[default]
    All,
    Violations,
    None,
}

fn yes() -> bool {
    true
}
fn default_interval() -> u64 {
    5
}
fn default_page() -> usize {
    500
}
fn default_settle() -> u64 {
    2000
}
fn default_timeout() -> u64 {
    10
}

impl Default for SyncConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl SyncConfig {
    pub fn check(&self, errors: &mut Vec<String>) {
        for c in &self.counties {
            if c.len() != 6 || !c.bytes().all(|b| b.is_ascii_digit()) || c.ends_with("00") {
                errors.push(format!(
                    "sync.counties has '{c}', not a six-digit county code (e.g. \"320505\")"
                ));
            }
        }
        if self.page == 0 || self.page > MAX_PAGE {
            errors.push(format!(
                "sync.page = {} must be between 1 and {MAX_PAGE}",
                self.page
            ));
        }
        if self.interval_secs == 0 || self.timeout_secs == 0 {
            errors.push("sync.interval_secs and sync.timeout_secs must be above 0".into());
        }
    }
}

/// Most events offered, or fetched, in one answer.
pub const MAX_PAGE: usize = 2000;
/// Images fetched per request (each reply carries one).
const IMAGES_PER_FETCH: usize = 16;
/// Events fetched per request.
const EVENTS_PER_FETCH: usize = 250;

/// What a county answers to `sync/refs`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RefsPage {
    pub refs: Vec<SyncRef>,
    /// Rows stored up to this time (county clock) are all in order; a city that got fewer
    /// than it asked for has everything up to here.
    pub settled_ms: i64,
}

type SharedStore = Arc<Mutex<Box<dyn EventStore>>>;
/// The replies to one request: payload, and the evidence key attached to an image.
type Answer = Result<Vec<(Vec<u8>, Option<String>)>, String>;

async fn with<T: Send + 'static>(
    store: &SharedStore,
    f: impl FnOnce(&mut dyn EventStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(s.lock().expect("not poisoned").as_mut()))
        .await
        .expect("store calls do not panic")
}

/// Serves `ckpt/agg/<county>/<id>/sync/{refs,events,evidence}` from a county's store.
pub async fn serve(
    session: &zenoh::Session,
    store: SharedStore,
    county: &str,
    id: &protocol::DeviceId,
    settle_ms: u64,
    clock: Arc<crate::ingest::IngestMetrics>,
) -> zenoh::Result<zenoh::query::Queryable<()>> {
    let key = keys::aggregator_sync(county, id.as_str(), "*");
    let rt = tokio::runtime::Handle::current();
    let (county, id) = (county.to_string(), id.to_string());
    session
        .declare_queryable(key)
        .callback(move |query| {
            let (store, clock) = (store.clone(), clock.clone());
            let (county, id) = (county.clone(), id.clone());
            rt.spawn(async move {
                let name = query
                    .key_expr()
                    .as_str()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                // The concrete key: it names this aggregator, and the city takes one
                // aggregator's replies.
                let key = keys::aggregator_sync(&county, &id, &name);
                let params = query.parameters().as_str().replace(';', "&");
                let body = query
                    .payload()
                    .map(|p| p.to_bytes().into_owned())
                    .unwrap_or_default();
                let result: Answer = match name.as_str() {
                    "refs" => refs(&store, &params, settle_ms, &clock).await,
                    "events" => events(&store, &body).await,
                    "evidence" => evidence(&store, &body).await,
                    _ => Err(format!(
                        "no sync answer '{name}'; answers: refs, events, evidence"
                    )),
                };
                // A city of this release asks for each reply's digest (see `Pulled`); one
                // of an earlier release gets the replies as it knows them.
                let digest = params.split('&').any(|kv| kv == DIGEST_PARAM);
                let sent = match result {
                    Ok(replies) => {
                        let mut r = Ok(());
                        for (payload, attachment) in replies {
                            let attachment = if digest {
                                Some(with_digest(attachment, &payload))
                            } else {
                                attachment
                            };
                            let mut reply = query.reply(key.clone(), payload);
                            if let Some(a) = attachment {
                                reply = reply.attachment(a.into_bytes());
                            }
                            r = r.and(reply.await);
                        }
                        r
                    }
                    Err(e) => {
                        warn!(query = %name, error = %e, "Sync request refused");
                        query.reply_err(e.into_bytes()).await
                    }
                };
                if let Err(e) = sent {
                    warn!(error = %e, query = %name, "Sync request not answered");
                }
            });
        })
        .await
}

/// The query parameter by which a city asks for each reply's digest.
const DIGEST_PARAM: &str = "digest=sha256";

/// A reply's attachment with the payload's digest ([`protocol::integrity`]) on its last
/// line: `sha256:...` alone, or an image's evidence key, a newline, `sha256:...`.
fn with_digest(attachment: Option<String>, payload: &[u8]) -> String {
    let digest = protocol::integrity::attachment(payload);
    match attachment {
        Some(a) => format!("{a}\n{digest}"),
        None => digest,
    }
}

/// One reply a county sent, checked against the digest it came with.
#[derive(Debug, PartialEq)]
struct Pulled {
    payload: Vec<u8>,
    /// The evidence key an image reply carries.
    key: Option<String>,
}

impl Pulled {
    /// Checks a reply's payload against its attachment's digest. A county of an earlier
    /// release sends none (the attachment is then the evidence key alone, or nothing): taken
    /// as it is. A payload that does not match is damaged on the way: refused, so the round
    /// fails, the county's mark stays where it is and the next round asks again (a damaged
    /// image that still decodes as a JPEG would otherwise be stored as evidence, and one
    /// that does not would be passed over for good).
    fn check(payload: Vec<u8>, attachment: Option<&[u8]>) -> Result<Pulled, String> {
        let text = attachment.map(|a| String::from_utf8_lossy(a).into_owned());
        let (key, digest) = match text.as_deref() {
            None => (None, None),
            Some(t) => match t.rsplit_once('\n') {
                Some((k, d)) if d.starts_with("sha256:") => (Some(k.to_string()), Some(d)),
                None if t.starts_with("sha256:") => (None, Some(t)),
                _ => (Some(t.to_string()), None),
            },
        };
        protocol::integrity::check(&payload, digest.map(str::as_bytes))?;
        Ok(Pulled { payload, key })
    }
}

async fn refs(
    store: &SharedStore,
    params: &str,
    settle_ms: u64,
    clock: &crate::ingest::IngestMetrics,
) -> Answer {
    #[derive(Deserialize)]
    struct P {
        #[serde(default)]
        after_ms: i64,
        #[serde(default)]
        after_id: String,
        #[serde(default = "default_page")]
        limit: usize,
    }
    let p: P =
        serde_urlencoded::from_str(params).map_err(|e| format!("parameters '{params}': {e}"))?;
    let now = protocol::time::now_ms();
    let writing = clock.writing_since_ms();
    let mut settled = now - settle_ms as i64;
    if writing > 0 {
        settled = settled.min(writing - 1);
    }
    let after = SyncCursor {
        received_ms: p.after_ms,
        event_id: p.after_id,
    };
    let limit = p.limit.clamp(1, MAX_PAGE);
    let refs = with(store, move |s| s.sync_refs(&after, settled, limit))
        .await
        .map_err(|e| e.to_string())?;
    let page = RefsPage {
        refs,
        settled_ms: settled,
    };
    Ok(vec![(serde_json::to_vec(&page).expect("JSON"), None)])
}

fn ids_of(body: &[u8], most: usize) -> Result<Vec<String>, String> {
    let ids: Vec<String> = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a JSON list of ids: {e}"))?;
    if ids.len() > most {
        return Err(format!(
            "{} ids asked for; at most {most} per request",
            ids.len()
        ));
    }
    Ok(ids)
}

/// The events asked for, as one JSON list (the ones the store no longer has are left out).
async fn events(store: &SharedStore, body: &[u8]) -> Answer {
    let ids = ids_of(body, MAX_PAGE)?;
    let evs = with(store, move |s| {
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(ev) = s.get(id)? {
                out.push(ev);
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(vec![(serde_json::to_vec(&evs).expect("JSON"), None)])
}

/// One reply per image asked for and held: its bytes, with its evidence key attached.
async fn evidence(store: &SharedStore, body: &[u8]) -> Answer {
    let ids = ids_of(body, IMAGES_PER_FETCH)?;
    let blobs = with(store, move |s| {
        let mut out = Vec::new();
        for id in &ids {
            if let Some(b) = s.get_evidence(id)? {
                out.push(b);
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(blobs
        .into_iter()
        .filter_map(|b| {
            let ck = protocol::DeviceId::parse(&b.checkpoint_id).ok()?;
            let cam = protocol::DeviceId::parse(&b.camera_id).ok()?;
            Some((b.bytes, Some(keys::evidence(&ck, &cam, &b.image_id))))
        })
        .collect())
}

/// The city's figures, per county, for `/metrics` and `/health`.
#[derive(Debug, Default)]
pub struct SyncMetrics {
    pub per_county: Mutex<std::collections::BTreeMap<String, CountySync>>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CountySync {
    /// The county's store time of the last event the city has (its mark).
    pub mark_ms: i64,
    /// Events and images the city pulled because it lacked them.
    pub events_pulled: u64,
    pub images_pulled: u64,
    /// When the county last answered (city clock), and the last failure, if any since.
    pub last_answer_ms: i64,
    pub error: Option<String>,
    /// Events the city fetched but could not store (yet); the mark waits before the first.
    pub stuck: u64,
    /// Replies that did not match the digest the county sent with them (asked again).
    pub damaged: u64,
}

impl SyncMetrics {
    /// Per county: the figures, and a problem when it has not answered for `stale_ms`.
    pub fn report(&self, now_ms: i64, stale_ms: i64) -> (serde_json::Value, Vec<String>) {
        let per = self.per_county.lock().expect("not poisoned").clone();
        let mut problems: Vec<String> = per
            .iter()
            .filter(|(_, c)| c.error.is_some() && now_ms - c.last_answer_ms > stale_ms)
            .map(|(county, c)| {
                format!(
                    "county {county} has not answered the city's pull {}: {}; its events come once it answers (nothing is lost while the county keeps them)",
                    if c.last_answer_ms == 0 { "since the start".to_string() } else { format!("for {} s", (now_ms - c.last_answer_ms) / 1000) },
                    c.error.as_deref().unwrap_or_default()
                )
            })
            .collect();
        problems.extend(per.iter().filter(|(_, c)| c.stuck > 0).map(|(county, c)| {
            format!(
                "{} items pulled from county {county} are not stored here (see rejected_by_reason); the pull from that county waits before them",
                c.stuck
            )
        }));
        (serde_json::to_value(&per).expect("JSON"), problems)
    }

    /// `/metrics` lines.
    pub fn render(&self, out: &mut String, now_ms: i64) {
        use std::fmt::Write;
        let per = self.per_county.lock().expect("not poisoned").clone();
        if per.is_empty() {
            return;
        }
        type Get = fn(&CountySync, i64) -> f64;
        let series: [(&str, &str, &str, Get); 5] = [
            ("aggregator_sync_events_pulled_total", "counter", "Events the city lacked and pulled from the county.", |c, _| c.events_pulled as f64),
            ("aggregator_sync_images_pulled_total", "counter", "Evidence images the city lacked and pulled from the county.", |c, _| c.images_pulled as f64),
            ("aggregator_sync_answer_age_seconds", "gauge", "Seconds since the county last answered the city's pull (-1: never).", |c, now| if c.last_answer_ms == 0 { -1.0 } else { (now - c.last_answer_ms) as f64 / 1000.0 }),
            ("aggregator_sync_stuck", "gauge", "Items pulled from the county that the city could not store; its mark waits before them.", |c, _| c.stuck as f64),
            ("aggregator_sync_damaged_total", "counter", "Replies from the county that did not match the digest sent with them (asked again).", |c, _| c.damaged as f64),
        ];
        for (name, kind, help, get) in series {
            protocol::metrics::family(out, name, kind, help);
            for (county, c) in &per {
                let _ = writeln!(out, "{name}{{county=\"{county}\"}} {}", get(c, now_ms));
            }
        }
    }

    fn update(&self, county: &str, f: impl FnOnce(&mut CountySync)) {
        f(self
            .per_county
            .lock()
            .expect("not poisoned")
            .entry(county.to_string())
            .or_default())
    }
}

/// Everything the city's pull needs.
pub struct Puller {
    pub session: zenoh::Session,
    pub store: SharedStore,
    pub cfg: SyncConfig,
    /// The city's ingest queue: what is pulled is stored like a live sample.
    pub ingest: crate::ingest::Queue,
    pub ingest_metrics: Arc<crate::ingest::IngestMetrics>,
    pub metrics: Arc<SyncMetrics>,
    /// One city aggregator pulls at a time (the `sync` lease).
    pub leases: Arc<crate::lease::Leases>,
}

impl Puller {
    /// Pulls from every county, each in its own task, until aborted.
    pub fn spawn(self, counties: Vec<String>) -> Vec<tokio::task::JoinHandle<()>> {
        let me = Arc::new(self);
        counties
            .into_iter()
            .map(|c| {
                let me = me.clone();
                tokio::spawn(async move { me.follow(c).await })
            })
            .collect()
    }

    async fn follow(&self, county: String) {
        info!(county = %county, "Following the county's events (pull after any outage)");
        loop {
            if !self.leases.holds(crate::lease::SYNC) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            match self.round(&county).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    debug!(county = %county, error = %e, "Sync with the county failed; trying again");
                    self.metrics.update(&county, |c| c.error = Some(e));
                }
            }
            tokio::time::sleep(Duration::from_secs(self.cfg.interval_secs)).await;
        }
    }

    async fn ask(
        &self,
        county: &str,
        name: &str,
        params: String,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<Pulled>, String> {
        let key = keys::aggregator_sync(county, "*", name);
        let selector = if params.is_empty() {
            format!("{key}?{DIGEST_PARAM}")
        } else {
            format!("{key}?{params}&{DIGEST_PARAM}")
        };
        // Every reply counts: zenoh's default keeps only the latest per key, and the images
        // of one request share one.
        let mut get = self
            .session
            .get(&selector)
            .consolidation(zenoh::query::ConsolidationMode::None)
            .timeout(Duration::from_secs(self.cfg.timeout_secs));
        if let Some(b) = body {
            get = get.payload(b);
        }
        let replies = get.await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut error = None;
        let mut damaged = None;
        // Every aggregator of the county may answer; the first one's replies are taken.
        let mut from = None;
        while let Ok(reply) = replies.recv_async().await {
            match reply.into_result() {
                Ok(sample) => {
                    let replier = sample.key_expr().as_str().to_string();
                    if from.is_none() {
                        from = Some(replier.clone());
                    }
                    if from == Some(replier) {
                        let payload = sample.payload().to_bytes().into_owned();
                        let attachment = sample.attachment().map(|a| a.to_bytes().into_owned());
                        match Pulled::check(payload, attachment.as_deref()) {
                            Ok(p) => out.push(p),
                            Err(why) => damaged = Some(why),
                        }
                    }
                }
                Err(e) => {
                    error = Some(String::from_utf8_lossy(&e.payload().to_bytes()).into_owned())
                }
            }
        }
        if from.is_none() {
            return Err(error.unwrap_or_else(|| {
                format!("no aggregator of county {county} answered {name} (link down?)")
            }));
        }
        if let Some(why) = damaged {
            self.metrics.update(county, |c| c.damaged += 1);
            return Err(format!(
                "county {county} answered {name} with a reply damaged on the way ({why}); asked again next round"
            ));
        }
        Ok(out)
    }

    /// One page: returns whether there may be more right away.
    async fn round(&self, county: &str) -> Result<bool, String> {
        let c = county.to_string();
        let mark = with(&self.store, move |s| s.sync_mark(&c))
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let params = serde_urlencoded::to_string([
            ("after_ms", mark.received_ms.to_string()),
            ("after_id", mark.event_id.clone()),
            ("limit", self.cfg.page.to_string()),
        ])
        .expect("encodes");
        let answer = self.ask(county, "refs", params, None).await?;
        let page: RefsPage = answer
            .first()
            .ok_or("an empty answer")
            .and_then(|p| {
                serde_json::from_slice(&p.payload).map_err(|_| "an answer that is not a page")
            })
            .map_err(|e| format!("county {county} sent {e}"))?;
        self.metrics.update(county, |c| {
            c.last_answer_ms = protocol::time::now_ms();
            c.error = None;
            c.mark_ms = mark.received_ms;
        });
        if page.refs.is_empty() {
            return Ok(false);
        }
        let full = page.refs.len() >= self.cfg.page;
        let ids: Vec<String> = page.refs.iter().map(|r| r.event_id.clone()).collect();
        let images: Vec<String> = page
            .refs
            .iter()
            .filter(|r| match self.cfg.evidence {
                EvidencePolicy::All => true,
                EvidencePolicy::Violations => r.violation,
                EvidencePolicy::None => false,
            })
            .flat_map(|r| r.images.iter().cloned())
            .collect();
        let (missing, missing_images) = self.missing(&ids, &images).await?;
        // What the county actually sent: an image it never had (dropped at a full outbox)
        // or an event it purged meanwhile is not waited for.
        let (mut fed, mut fed_images) = (Vec::new(), Vec::new());
        for chunk in missing_images.chunks(IMAGES_PER_FETCH) {
            let body = serde_json::to_vec(chunk).expect("JSON");
            for pulled in self
                .ask(county, "evidence", String::new(), Some(body))
                .await?
            {
                let Some(key) = pulled.key else {
                    continue;
                };
                if let Some((_, _, id)) = keys::parse_evidence_key(&key) {
                    fed_images.push(id.to_string());
                }
                self.ingest_metrics
                    .enqueue(&self.ingest, (key, pulled.payload));
                self.metrics.update(county, |c| c.images_pulled += 1);
            }
        }
        for chunk in missing.chunks(EVENTS_PER_FETCH) {
            let body = serde_json::to_vec(chunk).expect("JSON");
            let answer = self
                .ask(county, "events", String::new(), Some(body))
                .await?;
            let evs: Vec<protocol::Event> = answer
                .first()
                .and_then(|p| serde_json::from_slice(&p.payload).ok())
                .ok_or_else(|| format!("county {county} sent events that do not decode"))?;
            for ev in evs {
                let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
                fed.push(ev.event_id.clone());
                self.ingest_metrics
                    .enqueue(&self.ingest, (key, ev.encode()));
                self.metrics.update(county, |c| c.events_pulled += 1);
            }
        }
        // The mark moves over what is stored here: wait for ingest to store what was fed.
        let (n_fed, n_fed_images) = (fed.len(), fed_images.len());
        if n_fed < missing.len() || n_fed_images < missing_images.len() {
            warn!(
                county,
                events = missing.len() - n_fed,
                images = missing_images.len() - n_fed_images,
                "The county does not have everything it listed (purged since, or images its nodes never sent); not waited for"
            );
        }
        let mut still = (fed, fed_images);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.cfg.timeout_secs * 3);
        while !(still.0.is_empty() && still.1.is_empty()) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            still = self.missing(&still.0, &still.1).await?;
        }
        let lacking: HashSet<&String> = still.0.iter().collect();
        let lacking_images: HashSet<&String> = still.1.iter().collect();
        // The last ref before the first one still lacking (its images included).
        let mut next = None;
        for r in &page.refs {
            if lacking.contains(&r.event_id) || r.images.iter().any(|i| lacking_images.contains(i))
            {
                break;
            }
            next = Some(r.cursor());
        }
        let stuck = (still.0.len() + still.1.len()) as u64;
        self.metrics.update(county, |c| c.stuck = stuck);
        if stuck > 0 {
            warn!(county, events = still.0.len(), images = still.1.len(), "Pulled from the county but not stored here (see the rejections in /health); the county's mark waits before them");
        }
        let Some(next) = next else { return Ok(false) };
        let (c, n) = (county.to_string(), next.clone());
        with(&self.store, move |s| {
            s.set_sync_mark(&c, &n, protocol::time::now_ms())
        })
        .await
        .map_err(|e| e.to_string())?;
        self.metrics
            .update(county, |c| c.mark_ms = next.received_ms);
        if n_fed + n_fed_images > 0 {
            info!(
                county,
                events = n_fed - still.0.len(),
                images = n_fed_images - still.1.len(),
                "Pulled what the city lacked from the county"
            );
        }
        Ok(full && stuck == 0)
    }

    async fn missing(
        &self,
        ids: &[String],
        images: &[String],
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let (ids, images) = (ids.to_vec(), images.to_vec());
        with(&self.store, move |s| {
            let have = s.present(&ids, false)?;
            let have_images = s.present(&images, true)?;
            Ok((
                ids.into_iter().filter(|i| !have.contains(i)).collect(),
                images
                    .into_iter()
                    .filter(|i| !have_images.contains(i))
                    .collect(),
            ))
        })
        .await
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod digest_tests {
    use super::*;

    /// What a county of this release sends, a city checks; a payload changed on the way is
    /// refused; a county of an earlier release (no digest) is taken as it is.
    #[test]
    fn a_pulled_reply_is_checked_against_its_digest() {
        let image = b"\xFF\xD8\xFF image bytes".to_vec();
        let key = "ckpt/320500/x/evidence/img1".to_string();
        let a = with_digest(Some(key.clone()), &image);
        assert_eq!(
            Pulled::check(image.clone(), Some(a.as_bytes())),
            Ok(Pulled {
                payload: image.clone(),
                key: Some(key.clone())
            })
        );
        let mut damaged = image.clone();
        damaged[5] ^= 0x01;
        assert!(Pulled::check(damaged, Some(a.as_bytes()))
            .unwrap_err()
            .contains("does not match"));
        // An events list: the digest alone.
        let events = b"[]".to_vec();
        let d = with_digest(None, &events);
        assert_eq!(
            Pulled::check(events.clone(), Some(d.as_bytes()))
                .unwrap()
                .key,
            None
        );
        assert!(Pulled::check(b"[ ]".to_vec(), Some(d.as_bytes())).is_err());
        // An earlier county: the key alone, or nothing.
        assert_eq!(
            Pulled::check(image.clone(), Some(key.as_bytes()))
                .unwrap()
                .key,
            Some(key)
        );
        assert_eq!(Pulled::check(events.clone(), None).unwrap().key, None);
    }
}
