//! Dashboard sessions: a random id in an HttpOnly, SameSite=Strict cookie, held here (by its
//! SHA-256) with an expiry and a CSRF token. Pure apart from the random numbers: time is a
//! parameter, so expiry and eviction are tested without waiting.
//!
//! Why server-side sessions and not a signed cookie: a forged or replayed-after-logout cookie
//! must never work, and a table lookup makes logout immediate; the price (sessions end with the
//! process, and each region has its own) suits an operator's console.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

/// The cookie's name.
pub const COOKIE: &str = "geoscim_session";

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    /// Sent with every state-changing request (logout) in a header or form field: a page of
    /// another site cannot read it, so it cannot forge one.
    csrf: String,
    expires: Instant,
    created: Instant,
}

/// The sessions of one region.
pub struct Sessions {
    /// SHA-256 of the session id (hex) → session; the id itself is only in the cookie.
    inner: Mutex<HashMap<String, Session>>,
    ttl: Duration,
    max: usize,
}

/// What a valid cookie stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    pub csrf: String,
    /// Seconds left.
    pub expires_in: u64,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Constant-time equality, for the CSRF token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions {
            inner: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session; its id (for the cookie). Expired sessions go first; at `max`, the oldest.
    pub fn create(&self, now: Instant) -> String {
        let id = random_token();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        while map.len() >= self.max {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            crate::api::token_hash(&id),
            Session {
                csrf: random_token(),
                expires: now + self.ttl,
                created: now,
            },
        );
        id
    }

    /// The session a cookie value names, if it is live.
    pub fn check(&self, id: &str, now: Instant) -> Option<Valid> {
        let key = crate::api::token_hash(id);
        let mut map = self.lock();
        let s = map.get(&key)?;
        if s.expires <= now {
            map.remove(&key);
            return None;
        }
        Some(Valid {
            csrf: s.csrf.clone(),
            expires_in: s.expires.saturating_duration_since(now).as_secs(),
        })
    }

    /// End the session when `csrf` is its token; `false` (nothing ends) otherwise.
    pub fn end(&self, id: &str, csrf: &str, now: Instant) -> bool {
        let Some(valid) = self.check(id, now) else {
            return false;
        };
        if !same(&valid.csrf, csrf) {
            return false;
        }
        self.lock().remove(&crate::api::token_hash(id));
        true
    }

    /// Live sessions now.
    pub fn len(&self, now: Instant) -> usize {
        self.lock().values().filter(|s| s.expires > now).count()
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_its_ttl_and_forged_ids_never_work() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        let id = s.create(t0);
        assert!(s.check(&id, t0 + Duration::from_secs(59)).is_some());
        assert!(s.check("forged", t0).is_none());
        assert!(s.check(&format!("{id}x"), t0).is_none());
        assert!(s.check(&id, t0 + Duration::from_secs(60)).is_none());
        assert!(s.check(&id, t0).is_none(), "an expired session is gone");
    }

    #[test]
    fn logout_needs_the_csrf_token_and_ends_the_session_at_once() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        let id = s.create(t0);
        let csrf = s.check(&id, t0).unwrap().csrf;
        assert!(!s.end(&id, "wrong", t0));
        assert!(s.check(&id, t0).is_some());
        assert!(s.end(&id, &csrf, t0));
        assert!(s.check(&id, t0).is_none());
        assert!(!s.end(&id, &csrf, t0));
    }

    #[test]
    fn beyond_the_cap_the_oldest_session_ends() {
        let s = Sessions::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let a = s.create(t0);
        let b = s.create(t0 + Duration::from_secs(1));
        let c = s.create(t0 + Duration::from_secs(2));
        let now = t0 + Duration::from_secs(3);
        assert!(s.check(&a, now).is_none());
        assert!(s.check(&b, now).is_some() && s.check(&c, now).is_some());
        assert_eq!(s.len(now), 2);
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = "theme=dark; geoscim_session=abc; other=1";
        assert_eq!(cookie_value(h, COOKIE), Some("abc"));
        assert_eq!(cookie_value("geoscim_sessionx=1", COOKIE), None);
    }
}
