//! Who may use the HTTP API, and what each may see.
//!
//! Users are configured (`[[auth.users]]`) with an argon2 password hash (PHC string, made by
//! `aggregator hash-password`), a role and, for county roles, a county:
//!
//! | role | sees | may |
//! |---|---|---|
//! | `county_operator` | events, plates, evidence, checkpoints of its county | query |
//! | `city_operator` | everything in the aggregator's scope | query |
//! | `reviewer` | its county (or all, without `county`) | query, confirm or reject violations |
//! | `admin` | everything | all of the above, put a new watch list in force |
//!
//! `POST /api/v1/login` with `{"user", "password"}` answers a bearer token (also set as an
//! HttpOnly cookie, for the dashboard); every other route except `/health`, `/metrics` and
//! the OpenAPI document wants it. Logins are limited per user from one client address and
//! per address: each attempt is counted before its password is checked, and after
//! `max_failures` within `lockout_secs` further attempts get 429 for `lockout_secs`, twice
//! that at the next lockout, and so on up to 64 times; a stranger's guesses never lock out
//! the same user at another address, and an administrator can lift a user's lockouts
//! (`POST /api/v1/users/{user}/unlock`). Logins, plate queries, evidence views, reviews and watch-list changes go to the
//! audit log in the event store (`GET /api/v1/audit-log`, admin only).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    CountyOperator,
    CityOperator,
    Reviewer,
    Admin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub role: Role,
    /// Six-digit county region code: what a county operator (or a county's reviewer) sees.
    #[serde(default)]
    pub county: Option<String>,
    /// argon2 PHC string (`$argon2id$v=19$...`), from `aggregator hash-password`.
    pub password_hash: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Authentication on (default). `false` only on a trusted network: every request is then
    /// served as an anonymous administrator, and still audited.
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// How long a login lasts.
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// Failed logins per user, and per client address, before it is locked out.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// The window failures are counted in, and how long a lockout lasts.
    #[serde(default = "default_lockout_secs")]
    pub lockout_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_session_minutes() -> u64 {
    480
}
fn default_max_failures() -> u32 {
    5
}
fn default_lockout_secs() -> u64 {
    300
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: true,
            users: vec![],
            session_minutes: default_session_minutes(),
            max_failures: default_max_failures(),
            lockout_secs: default_lockout_secs(),
        }
    }
}

impl AuthConfig {
    /// Every problem, each naming the user and field.
    pub fn check(&self, scope_county: Option<&str>, errors: &mut Vec<String>) {
        if self.required && self.users.is_empty() {
            errors.push("auth: no users; add [[auth.users]] (name, role, county, password_hash from `aggregator hash-password`), or set auth.required = false on a trusted network".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let at = format!("auth.users[{i}] '{}'", u.name);
            if u.name.is_empty() || !seen.insert(u.name.clone()) {
                errors.push(format!("{at}: names must be non-empty and unique"));
            }
            if PasswordHash::new(&u.password_hash).is_err() {
                errors.push(format!("{at}: password_hash is not an argon2 PHC string; make one with `aggregator hash-password`"));
            }
            match (&u.county, u.role) {
                (None, Role::CountyOperator) => {
                    errors.push(format!("{at}: a county_operator needs county (6 digits)"))
                }
                (Some(c), _) if c.len() != 6 || !c.bytes().all(|b| b.is_ascii_digit()) => {
                    errors.push(format!("{at}: county '{c}' is not a 6-digit region code"))
                }
                (Some(c), _) if scope_county.is_some_and(|s| s != c) => errors.push(format!(
                    "{at}: county '{c}' is outside this aggregator's county '{}'",
                    scope_county.unwrap_or_default()
                )),
                _ => {}
            }
        }
        if self.session_minutes == 0 || self.max_failures == 0 || self.lockout_secs == 0 {
            errors.push(
                "auth: session_minutes, max_failures and lockout_secs must be at least 1".into(),
            );
        }
    }
}

/// Hashes a password for `password_hash` (argon2id, default parameters, random salt).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS has randomness");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes encode");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes")
        .to_string()
}

/// Who is asking: set on every request that passed authentication.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// The county this principal is limited to; None sees the whole scope.
    pub county: Option<String>,
}

impl Principal {
    pub fn anonymous_admin() -> Principal {
        Principal {
            user: "anonymous".into(),
            role: Role::Admin,
            county: None,
        }
    }
    /// Whether events of `checkpoint_id` are visible to this principal.
    pub fn sees(&self, checkpoint_id: &str) -> bool {
        self.county
            .as_deref()
            .is_none_or(|c| checkpoint_id.starts_with(c))
    }
    pub fn may_review(&self) -> bool {
        matches!(self.role, Role::Reviewer | Role::Admin)
    }
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

struct Session {
    principal: Principal,
    expires: Instant,
}

#[derive(Default)]
struct Failures {
    count: u32,
    since: Option<Instant>,
    /// Lockouts this key has had in a row: each lasts twice the one before (up to 64x).
    lockouts: u32,
    /// Locked out until then.
    until: Option<Instant>,
}

/// Why a login failed.
#[derive(Debug, PartialEq)]
pub enum LoginError {
    /// Wrong user or password (not told apart).
    Invalid,
    /// Too many failures; try again after this long.
    Locked(Duration),
}

pub struct Auth {
    pub required: bool,
    users: HashMap<String, UserConfig>,
    session_ttl: Duration,
    max_failures: u32,
    window: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Failures>>,
    /// Verified instead when the user is unknown, so that timing does not tell.
    dummy_hash: String,
}

impl Auth {
    pub fn new(cfg: &AuthConfig) -> Auth {
        Auth {
            required: cfg.required,
            users: cfg
                .users
                .iter()
                .map(|u| (u.name.clone(), u.clone()))
                .collect(),
            session_ttl: Duration::from_secs(cfg.session_minutes * 60),
            max_failures: cfg.max_failures,
            window: Duration::from_secs(cfg.lockout_secs),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            dummy_hash: hash_password("not a password anyone has"),
        }
    }

    /// The keys a login attempt counts against: the user from this address (so that a
    /// stranger's guesses lock out nobody else: not the admin logging in from the control
    /// room) and the address itself (so that one address cannot try every user).
    fn keys(user: &str, from: Option<IpAddr>) -> Vec<String> {
        let ip = from.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        vec![format!("user:{user}@{ip}"), format!("ip:{ip}")]
    }

    /// Takes one attempt for `keys`, before the password is checked, under one lock: at most
    /// `max_failures` attempts are ever checked in a window, however many arrive at once.
    /// Locked: how long still.
    fn take_attempt(&self, keys: &[String]) -> Result<(), Duration> {
        let now = Instant::now();
        let mut f = self.failures.lock().expect("not poisoned");
        let mut wait = Duration::ZERO;
        for k in keys {
            let e = f.entry(k.clone()).or_default();
            if let Some(u) = e.until.filter(|u| *u > now) {
                wait = wait.max(u - now);
                continue;
            }
            if e.since.is_none_or(|s| now.duration_since(s) >= self.window) {
                e.count = 0;
                e.since = Some(now);
                if e.until
                    .is_some_and(|u| now.duration_since(u) >= self.window)
                {
                    // A quiet window after the last lockout: the next starts short again.
                    e.lockouts = 0;
                }
            }
            if e.count >= self.max_failures {
                let lock = self.window * 2u32.pow(e.lockouts.min(6));
                e.lockouts += 1;
                e.until = Some(now + lock);
                e.count = 0;
                e.since = None;
                wait = wait.max(lock);
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for k in keys {
            f.get_mut(k).expect("entered above").count += 1;
        }
        // Bounded: forget keys long quiet.
        if f.len() > 100_000 {
            f.retain(|_, e| {
                e.until.is_some_and(|u| u > now)
                    || e.since.is_some_and(|s| now.duration_since(s) < self.window)
            });
        }
        Ok(())
    }

    /// A right password: the user's attempts from this address start again (the address's
    /// stay counted: a right password for one user does not buy guesses at another).
    fn succeeded(&self, keys: &[String]) {
        let mut f = self.failures.lock().expect("not poisoned");
        f.remove(&keys[0]);
        for k in &keys[1..] {
            if let Some(e) = f.get_mut(k) {
                e.count = e.count.saturating_sub(1);
            }
        }
    }

    /// Lifts every lockout of `user` (an administrator's doing); whether there was one.
    pub fn unlock(&self, user: &str) -> bool {
        let prefix = format!("user:{user}@");
        let mut f = self.failures.lock().expect("not poisoned");
        let before = f.len();
        f.retain(|k, _| !k.starts_with(&prefix));
        f.len() != before
    }

    /// Whether `user` is a configured user (what a failed login may write to the audit log:
    /// anything else typed in the user field may be a password).
    pub fn is_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Checks a password (slow by design: run it off the async threads); a token on success.
    pub fn login(
        &self,
        user: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<(String, Principal), LoginError> {
        let keys = Self::keys(user, from);
        self.take_attempt(&keys).map_err(LoginError::Locked)?;
        let (cfg, hash) = match self.users.get(user) {
            Some(c) => (Some(c), c.password_hash.as_str()),
            None => (None, self.dummy_hash.as_str()),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        let Some(cfg) = cfg.filter(|_| ok) else {
            return Err(LoginError::Invalid);
        };
        self.succeeded(&keys);
        let principal = Principal {
            user: cfg.name.clone(),
            role: cfg.role,
            county: cfg.county.clone(),
        };
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("the OS has randomness");
        let token = hex::encode(raw);
        let mut sessions = self.sessions.lock().expect("not poisoned");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            token.clone(),
            Session {
                principal: principal.clone(),
                expires: now + self.session_ttl,
            },
        );
        Ok((token, principal))
    }

    /// The principal of a live session.
    pub fn session(&self, token: &str) -> Option<Principal> {
        let sessions = self.sessions.lock().expect("not poisoned");
        sessions
            .get(token)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.principal.clone())
    }

    pub fn logout(&self, token: &str) -> bool {
        self.sessions
            .lock()
            .expect("not poisoned")
            .remove(token)
            .is_some()
    }

    pub fn session_secs(&self) -> u64 {
        self.session_ttl.as_secs()
    }
}

/// The token a request carries: `Authorization: Bearer <token>`, else the `session` cookie.
pub fn token_of(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
    }
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("session=").map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        AuthConfig {
            users: vec![UserConfig {
                name: "li".into(),
                role: Role::CountyOperator,
                county: Some("320505".into()),
                password_hash: hash_password("correct horse"),
            }],
            max_failures: 3,
            ..Default::default()
        }
    }

    #[test]
    fn login_issues_a_session_and_wrong_passwords_lock_out() {
        let a = Auth::new(&cfg());
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let (token, p) = a.login("li", "correct horse", Some(ip)).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(a.session(&token).unwrap().user, "li");
        assert!(p.sees("32050500051210000001") && !p.sees("32050600051210000001"));
        assert!(!p.may_review());
        for _ in 0..3 {
            assert!(matches!(
                a.login("li", "wrong", Some(ip)),
                Err(LoginError::Invalid)
            ));
        }
        // Locked now, even with the right password, and the address too for another user.
        assert!(matches!(
            a.login("li", "correct horse", Some(ip)),
            Err(LoginError::Locked(_))
        ));
        assert!(matches!(
            a.login("nobody", "x", Some(ip)),
            Err(LoginError::Locked(_))
        ));
        assert!(a.logout(&token));
        assert!(a.session(&token).is_none());
    }

    /// Issue 18, row 6: the lockout cannot be raced (40 wrong passwords at once: exactly
    /// `max_failures` are checked), a stranger's guesses do not lock the user out at another
    /// address, an administrator can lift the user's lockout, and the next lockout of the
    /// same key lasts twice as long.
    #[test]
    fn row6_the_login_lockout_cannot_be_raced_nor_used_against_others() {
        let mut c = cfg();
        c.lockout_secs = 3;
        let a = Auth::new(&c);
        let stranger: IpAddr = "203.0.113.7".parse().unwrap();
        let office: IpAddr = "10.0.0.9".parse().unwrap();
        let wrong = |ip| matches!(a.login("li", "wrong", Some(ip)), Err(LoginError::Invalid));
        let checked = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..40 {
                s.spawn(|| {
                    if wrong(stranger) {
                        checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(checked.into_inner(), 3, "wrong passwords checked");
        // The right password from the stranger's address: locked.
        assert!(matches!(
            a.login("li", "correct horse", Some(stranger)),
            Err(LoginError::Locked(w)) if w <= Duration::from_secs(3)
        ));
        // From the office, li logs in all the same.
        assert!(a.login("li", "correct horse", Some(office)).is_ok());
        // The administrator lifts li's lockout; the stranger's address stays locked.
        assert!(a.unlock("li"));
        assert!(!a.unlock("li"));
        assert!(matches!(
            a.login("li", "correct horse", Some(stranger)),
            Err(LoginError::Locked(_))
        ));
        // Once it has passed, three more guesses lock the address again, for twice as long.
        std::thread::sleep(Duration::from_millis(3100));
        for _ in 0..3 {
            assert!(wrong(stranger));
        }
        assert!(matches!(
            a.login("li", "wrong", Some(stranger)),
            Err(LoginError::Locked(w)) if w > Duration::from_millis(4500)
        ));
    }

    #[test]
    fn config_check_names_each_problem() {
        let mut c = cfg();
        c.users.push(UserConfig {
            name: "li".into(),
            role: Role::CountyOperator,
            county: None,
            password_hash: "plain".into(),
        });
        let mut errors = vec![];
        c.check(Some("320505"), &mut errors);
        assert_eq!(errors.len(), 3, "{errors:?}");
        let mut errors = vec![];
        AuthConfig::default().check(None, &mut errors);
        assert!(errors[0].contains("hash-password"), "{errors:?}");
    }

    #[test]
    fn token_from_bearer_or_cookie() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=1; session=abc".parse().unwrap());
        assert_eq!(token_of(&h).as_deref(), Some("abc"));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(token_of(&h).as_deref(), Some("xyz"));
    }
}
