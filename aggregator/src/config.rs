//! Aggregator configuration, validated with every problem reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use protocol::keys::Scope;
use protocol::{DeviceId, DeviceType};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// This aggregator's 20-digit id (type code 503, video image database).
    pub id: String,
    /// What it stores: `all` (a single-site demo), `county:<6-digit region>` or
    /// `city:<6-digit region ending 00>`.
    #[serde(default = "default_scope")]
    pub scope: String,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub zenoh: ZenohConfig,
    /// How long events are kept; personal data no longer than configured.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The checkpoints in scope: id, name, coordinates.
    #[serde(default)]
    pub checkpoints: Vec<crate::checkpoints::CheckpointConfig>,
    /// Road distances between checkpoints that differ from the straight line times
    /// `road_factor`.
    #[serde(default)]
    pub road_distances: Vec<crate::checkpoints::RoadDistanceConfig>,
    /// Cross-checkpoint correlation (cloned plates).
    #[serde(default)]
    pub correlation: crate::correlate::CorrelationConfig,
    /// Road distance over great-circle distance where no road distance is configured.
    #[serde(default = "default_road_factor")]
    pub road_factor: f64,
    /// The vehicle registry and watch list pushed down to the edge nodes.
    #[serde(default)]
    pub watchlist: crate::watchlist::WatchlistConfig,
    /// GA/T 1400 export of vehicle passes to an upstream platform.
    #[serde(default)]
    pub export: crate::viid::ExportConfig,
    /// Users, roles and login limits of the HTTP API.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// What ingest takes from the nodes.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The city's pull of every county's events (completeness after an outage).
    #[serde(default)]
    pub sync: crate::sync::SyncConfig,
    /// Aggregators side by side on one database.
    #[serde(default)]
    pub ha: HaConfig,
    /// What operators read: the dashboard's language and the time zone of every time shown.
    #[serde(default)]
    pub display: DisplayConfig,
    /// The JT/T 808 gateway for vehicle terminals (`[jt808] listen`; off by default).
    #[serde(default)]
    pub jt808: crate::jt808::Jt808Config,
    /// Signalised crossings whose timing is proposed from measured flows (`timing` query).
    #[serde(default)]
    pub crossings: Vec<crate::timing::CrossingConfig>,
}

/// `[display]`: the dashboard's default language (each user may switch) and the one time
/// zone every time is shown in (dashboard, CLI summaries). The API answers in UTC and takes
/// RFC 3339 with any offset.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DisplayConfig {
    /// `zh-CN` (Simplified Chinese) or `en`.
    #[serde(default = "default_language")]
    pub language: String,
    /// An IANA time zone name.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Map tiles under the trajectory map: a URL template with `{z}`, `{x}` and `{y}`
    /// (Web Mercator, 256 px), e.g. the site's own tile server. None by default: the map is
    /// drawn from the coordinates alone and the page loads nothing from elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_tiles: Option<String>,
    /// The tiles' attribution, shown on the map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_attribution: Option<String>,
}

pub const LANGUAGES: [&str; 2] = ["zh-CN", "en"];

fn default_language() -> String {
    "zh-CN".into()
}
fn default_time_zone() -> String {
    "Asia/Shanghai".into()
}

impl Default for DisplayConfig {
    fn default() -> Self {
        DisplayConfig {
            language: default_language(),
            time_zone: default_time_zone(),
            map_tiles: None,
            map_attribution: None,
        }
    }
}

impl DisplayConfig {
    /// The origin (`scheme://host[:port]`) of the map tiles, which the page's content
    /// security policy lets images come from; None without tiles.
    pub fn tile_origin(&self) -> Option<String> {
        let t = self.map_tiles.as_deref()?;
        let (scheme, rest) = t.split_once("://")?;
        let host = rest.split('/').next()?;
        (matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('{'))
            .then(|| format!("{scheme}://{host}"))
    }

    /// The configured zone (checked by `validate`; UTC if it were not).
    pub fn zone(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.time_zone).unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

/// `2026-11-29 16:00:00.300 +08:00`: a UTC time in `zone`, with the offset stated.
pub fn local_time(ms: i64, zone: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t
            .to_zoned(zone.clone())
            .strftime("%Y-%m-%d %H:%M:%S%.3f %:z")
            .to_string(),
        Err(_) => protocol::time::format_rfc3339_ms(ms),
    }
}

/// `[ha]`: the once-only jobs' leases (see `crate::lease`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// How long a job's lease lasts unrenewed: the longest a job stays without a holder
    /// after its holder dies (plus one renewal, every third of it).
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

fn default_lease_secs() -> u64 {
    10
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            lease_secs: default_lease_secs(),
        }
    }
}

/// `[ingest]`: checks on each event beyond its shape.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// An event whose frame time is more than this many seconds ahead of the aggregator's
    /// clock is refused (`time_skew`): its node's clock is wrong, and so is its evidence.
    /// Old events are taken (a node's outbox may hold days while its uplink is down).
    #[serde(default = "default_future_skew")]
    pub max_clock_skew_s: u64,
    /// An event whose id's time (a ULID) is further than this from its frame time is
    /// refused (`time_skew`): nodes make the id from the frame time.
    #[serde(default = "default_id_skew")]
    pub max_id_skew_s: u64,
    /// With `[[checkpoints]]` listed, events of a checkpoint not listed are held at their
    /// node (not acknowledged, nothing lost) and `/health` says which checkpoint to add.
    #[serde(default = "yes")]
    pub require_registered: bool,
}

fn default_future_skew() -> u64 {
    300
}
fn default_id_skew() -> u64 {
    600
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_clock_skew_s: default_future_skew(),
            max_id_skew_s: default_id_skew(),
            require_registered: true,
        }
    }
}

fn default_road_factor() -> f64 {
    1.3
}

/// Days to keep events, per kind, and how often the purge job runs. An event kind not listed
/// is kept `default_days`; `0` days keeps that kind forever.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_retention_days")]
    pub default_days: u32,
    /// e.g. `{ object_track = 30, pedestrian_red_light = 365 }`.
    #[serde(default)]
    pub days: std::collections::BTreeMap<String, u32>,
    /// Seconds between purge runs.
    #[serde(default = "default_purge_interval")]
    pub purge_interval_secs: u64,
}

fn default_retention_days() -> u32 {
    180
}
fn default_purge_interval() -> u64 {
    3600
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default_days: default_retention_days(),
            days: Default::default(),
            purge_interval_secs: default_purge_interval(),
        }
    }
}

impl RetentionConfig {
    /// Days to keep `kind`; None keeps it forever.
    pub fn days_for(&self, kind: protocol::EventKind) -> Option<u32> {
        let d = self
            .days
            .get(kind.as_str())
            .copied()
            .unwrap_or(self.default_days);
        (d > 0).then_some(d)
    }
}

fn default_scope() -> String {
    "all".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded SQLite file: the default, nothing to run.
    Sqlite,
    /// A PostgreSQL server: production.
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite` (default) or `postgres`.
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// SQLite database file; created with its tables if missing.
    #[serde(default = "default_sqlite")]
    pub sqlite_path: PathBuf,
    /// PostgreSQL connection, e.g. `host=127.0.0.1 port=5432 user=postgres dbname=test`.
    #[serde(default = "default_pg_url")]
    pub postgres_url: String,
    /// PostgreSQL schema the tables live in; created if missing.
    #[serde(default = "default_pg_schema")]
    pub postgres_schema: String,
    /// Connections storing events side by side (PostgreSQL only; SQLite has one writer).
    /// Each checkpoint's events go to one of them. 2 took the store bench from 21 000 to
    /// 31 000-37 000 passes/s on a 2-core box; more help only where the server has the
    /// cores.
    #[serde(default = "default_writers")]
    pub writers: usize,
}

fn default_writers() -> usize {
    1
}

fn default_backend() -> Backend {
    Backend::Sqlite
}
fn default_pg_url() -> String {
    "host=127.0.0.1 port=5432 user=postgres dbname=test".into()
}
fn default_pg_schema() -> String {
    "traffic".into()
}

fn default_sqlite() -> PathBuf {
    PathBuf::from("aggregator.db")
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: default_backend(),
            sqlite_path: default_sqlite(),
            postgres_url: default_pg_url(),
            postgres_schema: default_pg_schema(),
            writers: default_writers(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP JSON API; port 0 picks a free port (logged at start).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Serve HTTPS (rustls): `cert` (PEM chain) and `key` (PEM private key).
    #[serde(default)]
    pub tls: Option<HttpTls>,
    /// Seconds a client has to send a request's header (and to finish a TLS handshake); a
    /// kept-alive connection idle this long is closed.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_s: u64,
    /// Seconds a client has to send a request's body.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout_s: u64,
    /// The largest request body (a watch list upload is the largest there is).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Connections open at once; more are refused with 503 (keep it well under the
    /// process's file-descriptor limit: zenoh and the store need descriptors too).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one client address.
    #[serde(default = "default_max_per_address")]
    pub max_connections_per_address: usize,
}

/// `[http.tls]`: the API's certificate and key, PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_header_timeout() -> u64 {
    10
}
fn default_body_timeout() -> u64 {
    30
}
fn default_max_body() -> usize {
    16 << 20
}
fn default_max_connections() -> usize {
    512
}
fn default_max_per_address() -> usize {
    64
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            tls: None,
            header_read_timeout_s: default_header_timeout(),
            body_read_timeout_s: default_body_timeout(),
            max_body_bytes: default_max_body(),
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_per_address(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZenohConfig {
    /// `peer` (default) or `client` (through a zenoh router).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Endpoints to listen on; edge nodes connect here.
    #[serde(default = "default_zlisten")]
    pub listen: Vec<String>,
    /// Endpoints to connect to (routers, other aggregators).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Find peers by multicast on the LAN; off by default.
    #[serde(default)]
    pub multicast_scouting: bool,
    /// Mutual TLS (`ca`, `cert`, `key`, PEM files; `scripts/certs.sh` issues them). With it
    /// every endpoint must be `tls/...`, and unless `acl = false` an access-control policy
    /// built from `[[checkpoints]]` lets each edge node (certificate common name = its
    /// checkpoint id) publish only under its own checkpoint's prefix.
    #[serde(default)]
    pub tls: Option<protocol::security::TlsFiles>,
    /// Plain zenoh (no TLS) on a network address, or with multicast scouting, is refused
    /// unless this is true: without TLS there is no access control (anyone reaching the
    /// endpoint can read plates and publish or acknowledge events). Logged as a warning at
    /// every start.
    #[serde(default)]
    pub insecure: bool,
    /// The access-control policy (on by default with TLS).
    #[serde(default = "yes")]
    pub acl: bool,
    /// Certificate common names allowed everything (other aggregators, operators' tools).
    #[serde(default)]
    pub trusted_common_names: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_mode() -> String {
    "peer".into()
}
fn default_zlisten() -> Vec<String> {
    vec!["tcp/127.0.0.1:7447".into()]
}

impl Default for ZenohConfig {
    fn default() -> Self {
        ZenohConfig {
            mode: default_mode(),
            listen: default_zlisten(),
            connect: vec![],
            multicast_scouting: false,
            tls: None,
            insecure: false,
            acl: true,
            trusted_common_names: vec![],
        }
    }
}

#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub id: DeviceId,
    pub checkpoints: crate::checkpoints::Registry,
    pub scope: Scope,
    pub scope_label: String,
    pub http_listen: SocketAddr,
    pub raw: AggregatorConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config '{path}': {err}; pass an existing file with --config")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("config '{path}' is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config '{path}' has {} problem(s):\n  - {}", .errors.len(), .errors.join("\n  - "))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

pub fn parse_scope(s: &str) -> Result<Scope, String> {
    let six = |r: &str| r.len() == 6 && r.bytes().all(|b| b.is_ascii_digit());
    match s.split_once(':') {
        None if s == "all" => Ok(Scope::All),
        Some(("county", r)) if six(r) && !r.ends_with("00") => Ok(Scope::County(r.into())),
        Some(("city", r)) if six(r) && r.ends_with("00") => Ok(Scope::City(r.into())),
        _ => Err(format!(
            "scope '{s}' is not one of: all, county:<6-digit region code, e.g. county:320505>, city:<6-digit code ending 00, e.g. city:320500>"
        )),
    }
}

impl AggregatorConfig {
    pub fn load(path: &Path) -> Result<ValidConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.into(),
            err,
        })?;
        let raw: AggregatorConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        raw.validate(path)
    }

    pub fn validate(self, path: &Path) -> Result<ValidConfig, ConfigError> {
        let mut errors = Vec::new();
        let id = DeviceId::parse_as(&self.id, DeviceType::ImageDatabase)
            .map_err(|e| errors.push(format!("id: {e}")))
            .ok();
        let scope = parse_scope(&self.scope).map_err(|e| errors.push(e)).ok();
        let http_listen = self
            .http
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                errors.push(format!(
                    "http.listen '{}' is not an address like 127.0.0.1:8080",
                    self.http.listen
                ))
            })
            .ok();
        for (name, v) in [
            (
                "http.header_read_timeout_s",
                self.http.header_read_timeout_s as usize,
            ),
            (
                "http.body_read_timeout_s",
                self.http.body_read_timeout_s as usize,
            ),
            ("http.max_body_bytes", self.http.max_body_bytes),
            ("http.max_connections", self.http.max_connections),
            (
                "http.max_connections_per_address",
                self.http.max_connections_per_address,
            ),
        ] {
            if v == 0 {
                errors.push(format!("{name} must be at least 1"));
            }
        }
        if let Some(t) = &self.http.tls {
            if let Err(e) = crate::http_server::tls_acceptor(t) {
                errors.push(e);
            }
        }
        if !LANGUAGES.contains(&self.display.language.as_str()) {
            errors.push(format!(
                "display.language '{}' must be one of {}",
                self.display.language,
                LANGUAGES.join(", ")
            ));
        }
        if let Err(e) = jiff::tz::TimeZone::get(&self.display.time_zone) {
            errors.push(format!(
                "display.time_zone '{}' is not a time zone name ({e}); use an IANA name such as Asia/Shanghai",
                self.display.time_zone
            ));
        }
        if let Some(t) = &self.display.map_tiles {
            if self.display.tile_origin().is_none()
                || !["{z}", "{x}", "{y}"].iter().all(|p| t.contains(p))
            {
                errors.push(format!(
                    "display.map_tiles '{t}' must be an http(s) URL template with {{z}}, {{x}} and {{y}}, e.g. http://tiles.example/{{z}}/{{x}}/{{y}}.png"
                ));
            }
        }
        if self.zenoh.mode != "peer" && self.zenoh.mode != "client" && self.zenoh.mode != "router" {
            errors.push(format!(
                "zenoh.mode '{}' must be peer, client or router",
                self.zenoh.mode
            ));
        }
        for k in self.retention.days.keys() {
            if protocol::EventKind::parse(k).is_none() {
                let known: Vec<&str> = protocol::EventKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect();
                errors.push(format!(
                    "retention.days names unknown event kind '{k}'; kinds: {}",
                    known.join(", ")
                ));
            }
        }
        if !(self.correlation.max_speed_kmh > 0.0 && self.correlation.window_hours > 0.0) {
            errors.push(format!(
                "correlation: max_speed_kmh ({}) and window_hours ({}) must be above 0",
                self.correlation.max_speed_kmh, self.correlation.window_hours
            ));
        }
        let known: std::collections::HashSet<&str> =
            self.checkpoints.iter().map(|c| c.id.as_str()).collect();
        for (i, c) in self.crossings.iter().enumerate() {
            c.check(
                &|id: &str| known.contains(id),
                &format!("crossings[{i}]"),
                &mut errors,
            );
        }
        self.jt808
            .check(&self.id, &|id: &str| known.contains(id), &mut errors);
        for (i, s) in self.correlation.sections.iter().enumerate() {
            s.check(
                &|id: &str| known.contains(id),
                &format!("correlation.sections[{i}]"),
                &mut errors,
            );
        }
        if self.watchlist.follow_upstream && !matches!(scope, Some(Scope::County(_))) {
            errors.push(format!(
                "watchlist.follow_upstream: only a county aggregator follows a city's watch list (scope is '{}')",
                self.scope
            ));
        }
        self.export.check(&mut errors);
        self.sync.check(&mut errors);
        if !(1..=3600).contains(&self.ha.lease_secs) {
            errors.push(format!(
                "ha.lease_secs = {} must be between 1 and 3600",
                self.ha.lease_secs
            ));
        }
        if let Some(Scope::City(city)) = &scope {
            for c in self
                .sync
                .counties
                .iter()
                .filter(|c| !c.starts_with(&city[..4]))
            {
                errors.push(format!(
                    "sync.counties has '{c}', which is not in city {city}; list the city's own counties ({}xx)",
                    &city[..4]
                ));
            }
        }
        let scope_county = match &scope {
            Some(Scope::County(c)) => Some(c.as_str()),
            _ => None,
        };
        self.auth.check(scope_county, &mut errors);
        if self.export.enabled
            && self.export.image_base_url.is_none()
            && (self.http.listen.starts_with("0.0.0.0") || self.http.listen.starts_with("[::]"))
        {
            errors.push(format!(
                "export.image_base_url: http.listen '{}' is no address the platform can fetch images from; set export.image_base_url, e.g. http://10.0.0.8:8080/api/v1/evidence/",
                self.http.listen
            ));
        }
        if self.retention.purge_interval_secs == 0 {
            errors.push("retention.purge_interval_secs must be at least 1".into());
        }
        let checkpoints = crate::checkpoints::Registry::build(
            &self.checkpoints,
            &self.road_distances,
            self.road_factor,
            scope.as_ref(),
            &mut errors,
        );
        if self.storage.sqlite_path.as_os_str().is_empty() {
            errors.push("storage.sqlite_path is empty".into());
        }
        let writers = self.storage.writers;
        if !(1..=crate::ingest::MAX_WRITERS).contains(&writers) {
            errors.push(format!(
                "storage.writers = {writers}: give 1 to {} connections",
                crate::ingest::MAX_WRITERS
            ));
        } else if writers > 1 && self.storage.backend == Backend::Sqlite {
            errors.push(format!("storage.writers = {writers}: SQLite stores with one writer at a time; set writers = 1, or backend = \"postgres\""));
        }
        let endpoints: Vec<String> = self
            .zenoh
            .listen
            .iter()
            .chain(&self.zenoh.connect)
            .cloned()
            .collect();
        if let Some(tls) = &self.zenoh.tls {
            errors.extend(tls.check(&endpoints));
            if self.zenoh.acl && checkpoints.all().is_empty() {
                errors.push("zenoh.acl: the access-control policy is built from [[checkpoints]] and there are none; list the checkpoints whose nodes connect here, or set zenoh.acl = false".into());
            }
        } else if !self.zenoh.insecure {
            errors.extend(protocol::security::plain_transport_problems(
                &endpoints,
                self.zenoh.multicast_scouting,
            ));
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.into(),
                errors,
            });
        }
        let scope = scope.expect("checked");
        let scope_label = match &scope {
            Scope::All => "all".to_string(),
            Scope::County(c) | Scope::City(c) => c.clone(),
        };
        Ok(ValidConfig {
            checkpoints,
            id: id.expect("checked"),
            scope,
            scope_label,
            http_listen: http_listen.expect("checked"),
            raw: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_defaults_to_chinese_and_beijing_time() {
        let raw: AggregatorConfig = toml::from_str("id = \"32050500055030000001\"\n").unwrap();
        assert_eq!(raw.display, DisplayConfig::default());
        assert_eq!(raw.display.language, "zh-CN");
        let zone = raw.display.zone();
        // 2026-11-29T00:00:00.300Z is 08:00 in Beijing.
        assert_eq!(
            local_time(1_795_939_200_300 - 8 * 3_600_000, &zone),
            "2026-11-29 08:00:00.300 +08:00"
        );
        let ny = DisplayConfig {
            language: "en".into(),
            time_zone: "America/New_York".into(),
            ..Default::default()
        }
        .zone();
        // Summer and winter time: the offset follows the zone's rules.
        assert!(local_time(1_783_000_000_000, &ny).ends_with("-04:00"));
        assert!(local_time(1_795_939_200_000, &ny).ends_with("-05:00"));
    }

    #[test]
    fn a_wrong_language_or_zone_is_refused() {
        let raw: AggregatorConfig = toml::from_str(
            "id = \"32050500055030000001\"\n[display]\nlanguage = \"fr\"\ntime_zone = \"Beijing\"\nmap_tiles = \"ftp://tiles/{z}\"\n",
        )
        .unwrap();
        let e = raw.validate(Path::new("a.toml")).unwrap_err().to_string();
        assert!(
            e.contains("display.language 'fr' must be one of zh-CN, en"),
            "{e}"
        );
        assert!(
            e.contains("display.time_zone 'Beijing'") && e.contains("Asia/Shanghai"),
            "{e}"
        );
        assert!(e.contains("display.map_tiles 'ftp://tiles/{z}'"), "{e}");
        let tiles = DisplayConfig {
            map_tiles: Some("http://10.20.0.5:8088/tiles/{z}/{x}/{y}.png".into()),
            ..Default::default()
        };
        assert_eq!(
            tiles.tile_origin().as_deref(),
            Some("http://10.20.0.5:8088")
        );
        assert_eq!(DisplayConfig::default().tile_origin(), None);
    }

    #[test]
    fn scopes() {
        assert_eq!(parse_scope("all").unwrap(), Scope::All);
        assert_eq!(
            parse_scope("county:320505").unwrap(),
            Scope::County("320505".into())
        );
        assert_eq!(
            parse_scope("city:320500").unwrap(),
            Scope::City("320500".into())
        );
        assert!(parse_scope("county:320500").is_err());
        assert!(parse_scope("city:32050")
            .unwrap_err()
            .contains("'city:32050'"));
    }

    #[test]
    fn all_problems_at_once() {
        let raw: AggregatorConfig =
            toml::from_str("id = \"1\"\nscope = \"galaxy\"\n[http]\nlisten = \"nowhere\"\n[watchlist]\nfollow_upstream = true\n")
                .unwrap();
        let e = raw.validate(Path::new("a.toml")).unwrap_err().to_string();
        for n in [
            "'a.toml'",
            "5 problem",
            "'1'",
            "'galaxy'",
            "'nowhere'",
            "follow_upstream",
            "auth: no users",
        ] {
            assert!(e.contains(n), "{n} missing from {e}");
        }
    }

    /// More than one writer on SQLite, or none, or too many, is refused with the fix.
    #[test]
    fn writers_are_checked_against_the_backend() {
        let base =
            "id = \"32050500055030000001\"\nscope = \"county:320505\"\n[auth]\nrequired = false\n";
        let check = |storage: &str| {
            let raw: AggregatorConfig =
                toml::from_str(&format!("{base}[storage]\n{storage}")).unwrap();
            raw.validate(Path::new("a.toml"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let e = check("writers = 2\n").unwrap_err();
        assert!(
            e.contains("storage.writers = 2") && e.contains("SQLite"),
            "{e}"
        );
        assert!(check("writers = 0\n").unwrap_err().contains("give 1 to 8"));
        assert!(check("backend = \"postgres\"\nwriters = 9\n")
            .unwrap_err()
            .contains("give 1 to 8"));
        check("backend = \"postgres\"\nwriters = 2\n").unwrap();
        check("writers = 1\n").unwrap();
    }
}

#[cfg(test)]
mod example_configs {
    use super::*;

    /// Every aggregator config shipped in configs/ parses and validates.
    #[test]
    fn shipped_aggregator_configs_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        // The configs name files (certificates) relative to the repository root, where
        // the binaries run; no other test here depends on the working directory.
        std::env::set_current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("aggregator") && name.ends_with(".toml") {
                // Files under .cache/ are where TRAFFIC_CACHE puts them, as demo.sh does.
                let mut text = std::fs::read_to_string(&p).unwrap();
                if let Some(cache) = std::env::var_os("TRAFFIC_CACHE") {
                    text = text.replace("\".cache/", &format!("\"{}/", cache.to_string_lossy()));
                }
                let raw: AggregatorConfig =
                    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                raw.validate(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 1);
    }
}
