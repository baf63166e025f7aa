//! The admin page's sessions: kept on the server, named by a random 256-bit id in the cookie
//! `mailplug_admin` (HttpOnly, SameSite=Strict, Path=/admin, Secure). The table holds only a
//! SHA-256 of each id, so neither a memory dump nor lookup timing gives a usable id. A session
//! belongs to one tenant, ends after `IDLE` without a request, after `LIFETIME` in any case, at
//! sign-out, or when the tenant's sign-in secrets change (`credentials_id`: a rotated token or
//! password ends every session opened with the old one). Failed sign-ins are limited per tenant
//! (`Limiter`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// The session cookie.
pub const COOKIE: &str = "mailplug_admin";
/// A session ends after this long without a request...
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// ...and after this long in any case.
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// The most sessions kept at once (over all tenants); a sign-in beyond waits for one to end.
pub const MAX_SESSIONS: usize = 10_000;
/// Failed sign-ins accepted per tenant in `FAIL_WINDOW` before sign-in pauses for it.
pub const MAX_FAILURES: u32 = 5;
pub const FAIL_WINDOW: Duration = Duration::from_secs(60);

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).expect("the system's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn digest(id: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A session as the pages see it.
#[derive(Debug, Clone)]
pub struct Session {
    pub tenant: String,
    /// The CSRF token of every form and JavaScript POST of this session.
    pub csrf: String,
    /// `credentials_id` of the tenant's secrets at sign-in.
    pub credentials: [u8; 32],
}

struct Entry {
    session: Session,
    created: Instant,
    last: Instant,
}

/// Every session.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Sessions {
    /// A new session for `tenant`: its id (for the cookie), or None when `MAX_SESSIONS` are open.
    pub fn create(&self, tenant: &str, credentials: [u8; 32]) -> Option<String> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, e| live(e, now));
            if map.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let id = random_hex(32);
        let session = Session { tenant: tenant.to_string(), csrf: random_hex(32), credentials };
        map.insert(digest(&id), Entry { session, created: now, last: now });
        Some(id)
    }

    /// The live session the request's cookie names (and its use is recorded), if any.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        if id.len() != 64 {
            return None;
        }
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = digest(&id);
        match map.get_mut(&key) {
            Some(e) if live(e, now) => {
                e.last = now;
                Some(e.session.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session the request's cookie names.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest(&id));
        }
    }

    /// Ends every session of a tenant (its sign-in secrets changed or it is gone).
    pub fn remove_tenant(&self, tenant: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, e| e.session.tenant != tenant);
    }

    #[cfg(test)]
    fn age(&self, by: Duration) {
        for e in self.map.lock().unwrap().values_mut() {
            e.created -= by;
            e.last -= by;
        }
    }
}

fn live(e: &Entry, now: Instant) -> bool {
    now.duration_since(e.last) < IDLE && now.duration_since(e.created) < LIFETIME
}

/// The Set-Cookie value of a new session.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/admin; HttpOnly; Secure; SameSite=Strict; Max-Age={}", LIFETIME.as_secs())
}

/// The Set-Cookie value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/admin; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// Whether `given` is one of the tenant's sign-in secrets: its API token or its admin page
/// password. Both are compared in constant time, whichever matches.
pub fn credentials_match(given: &str, api_token: Option<&Secret>, admin_password: Option<&Secret>) -> bool {
    let eq = |s: Option<&Secret>| -> bool { s.is_some_and(|s| given.as_bytes().ct_eq(s.expose().as_bytes()).into()) };
    let a = eq(api_token);
    let b = eq(admin_password);
    !given.is_empty() && (a | b)
}

/// A digest of a tenant's sign-in secrets (API token and admin page password): a session
/// lives only while it is the same as at its sign-in.
pub fn credentials_id(api_token: Option<&Secret>, admin_password: Option<&Secret>) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for s in [api_token, admin_password] {
        match s {
            Some(s) => {
                ctx.update(&[1]);
                ctx.update(&(s.expose().len() as u64).to_be_bytes());
                ctx.update(s.expose().as_bytes());
            }
            None => ctx.update(&[0]),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Failed sign-ins per tenant name (existing or not, so the limit says nothing about which
/// tenants exist).
#[derive(Default)]
pub struct Limiter {
    map: Mutex<HashMap<String, (Instant, u32)>>,
}

/// The most tenant names the limiter remembers; beyond, entries whose window ended are dropped.
const MAX_LIMITER_ENTRIES: usize = 10_000;

impl Limiter {
    /// Whether a sign-in to `tenant` may be tried now.
    pub fn allowed(&self, tenant: &str) -> bool {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(tenant) {
            Some((start, n)) => now.duration_since(*start) >= FAIL_WINDOW || *n < MAX_FAILURES,
            None => true,
        }
    }

    /// Records a failed sign-in.
    pub fn failed(&self, tenant: &str) {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_LIMITER_ENTRIES {
            map.retain(|_, (start, _)| now.duration_since(*start) < FAIL_WINDOW);
        }
        let e = map.entry(tenant.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= FAIL_WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// A successful sign-in clears the tenant's count.
    pub fn succeeded(&self, tenant: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, v.parse().unwrap());
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_at_logout_or_expiry() {
        let s = Sessions::default();
        let id = s.create("acme", [7; 32]).unwrap();
        assert_eq!(id.len(), 64, "256 bits in hex");
        let h = with_cookie(&format!("other=1; {COOKIE}={id}"));
        let got = s.get(&h).expect("the session");
        assert_eq!(got.tenant, "acme");
        assert_eq!(got.csrf.len(), 64);
        assert!(s.get(&with_cookie(&format!("{COOKIE}={}", random_hex(32)))).is_none(), "another id");
        assert!(s.get(&with_cookie(&format!("{COOKIE}={}", &id[..63]))).is_none(), "a prefix");
        s.age(IDLE + Duration::from_secs(1));
        assert!(s.get(&h).is_none(), "idle too long");
        let id = s.create("acme", [7; 32]).unwrap();
        let h = with_cookie(&format!("{COOKIE}={id}"));
        assert!(s.get(&h).is_some());
        s.remove(&h);
        assert!(s.get(&h).is_none(), "signed out");
        let id = s.create("acme", [7; 32]).unwrap();
        s.remove_tenant("acme");
        assert!(s.get(&with_cookie(&format!("{COOKIE}={id}"))).is_none());
    }

    #[test]
    fn the_cookie_has_every_flag() {
        let c = set_cookie("abc");
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/admin"] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn either_secret_signs_in_and_nothing_else_does() {
        let token = Secret::new("api-token-0123456789".into());
        let pw = Secret::new("admin-password-0123456".into());
        assert!(credentials_match("api-token-0123456789", Some(&token), Some(&pw)));
        assert!(credentials_match("admin-password-0123456", Some(&token), Some(&pw)));
        assert!(!credentials_match("api-token-012345678", Some(&token), Some(&pw)));
        assert!(!credentials_match("", None, None));
        assert!(!credentials_match("api-token-0123456789", None, Some(&pw)));
        let id = credentials_id(Some(&token), Some(&pw));
        assert_eq!(id, credentials_id(Some(&token), Some(&pw)));
        assert_ne!(id, credentials_id(Some(&token), None), "the password removed");
        assert_ne!(id, credentials_id(Some(&pw), Some(&token)), "order matters");
        assert_ne!(id, credentials_id(Some(&Secret::new("api-token-0123456780".into())), Some(&pw)), "a rotated token");
    }

    #[test]
    fn failed_sign_ins_pause_the_tenant_for_a_minute() {
        let l = Limiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(l.allowed("acme"));
            l.failed("acme");
        }
        assert!(!l.allowed("acme"), "paused");
        assert!(l.allowed("other"), "per tenant");
        l.map.lock().unwrap().get_mut("acme").unwrap().0 -= FAIL_WINDOW;
        assert!(l.allowed("acme"), "the window ended");
        l.failed("acme");
        l.succeeded("acme");
        assert!(l.allowed("acme"));
    }
}
