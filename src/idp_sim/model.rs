//! What idp-sim expects to read back, pure: every write that got a 2xx updates the expected
//! state of its user; a write that was given up on (no 2xx after every retry) makes its user
//! *uncertain* (the server may or may not have applied it), so the user is left alone and not
//! judged. [`judge`] compares one region's read of a user with the expectation.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

/// The expected state of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub id: String,
    pub user_name: String,
    pub display_name: String,
    pub title: Option<String>,
    /// `false` once a deactivation got a 2xx.
    pub active: bool,
    /// A deactivation got a 2xx (the offboarding figure).
    pub deactivated: bool,
    /// A delete got a 2xx (or a retried delete found it gone).
    pub deleted: bool,
    /// Group ids the user is a member of, by acknowledged adds and removes.
    pub groups: BTreeSet<String>,
    /// A membership change of this user was given up on: its groups are not judged.
    pub groups_uncertain: bool,
    /// Some write was given up on: the user is not judged.
    pub uncertain: bool,
    /// Writes acknowledged for this user.
    pub acked: u64,
}

/// One region's disagreement with the expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// As expected.
    Ok,
    /// An acknowledged create is not there, or an acknowledged delete is still there.
    Missing,
    /// There, but an acknowledged attribute has another value.
    Wrong(String),
    /// An acknowledged deactivation reads `active: true`.
    DeactivatedActive,
}

/// `active` as read: JSON true/false (strings tolerated).
fn read_active(v: &Value) -> Option<bool> {
    match &v["active"] {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse::<bool>().ok().or(match s.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        }),
        Value::Null => Some(true),
        _ => None,
    }
}

/// Compare a read (`None`: 404) with the expectation.
pub fn judge(e: &Expected, read: Option<&Value>) -> Verdict {
    let Some(v) = read else {
        return if e.deleted {
            Verdict::Ok
        } else {
            Verdict::Missing
        };
    };
    if e.deleted {
        return if e.deactivated && read_active(v) == Some(true) {
            Verdict::DeactivatedActive
        } else {
            Verdict::Missing
        };
    }
    if e.deactivated && read_active(v) != Some(false) {
        return Verdict::DeactivatedActive;
    }
    if read_active(v) != Some(e.active) {
        return Verdict::Wrong(format!("active: read {} want {}", v["active"], e.active));
    }
    if v["userName"].as_str() != Some(e.user_name.as_str()) {
        return Verdict::Wrong(format!("userName: read {}", v["userName"]));
    }
    if v["displayName"].as_str() != Some(e.display_name.as_str()) {
        return Verdict::Wrong(format!(
            "displayName: read {} want {:?}",
            v["displayName"], e.display_name
        ));
    }
    if v["title"].as_str() != e.title.as_deref() {
        return Verdict::Wrong(format!("title: read {} want {:?}", v["title"], e.title));
    }
    if !e.groups_uncertain {
        let read: BTreeSet<String> = v["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g["value"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if read != e.groups {
            return Verdict::Wrong(format!("groups: read {read:?} want {:?}", e.groups));
        }
    }
    Verdict::Ok
}

/// The longest stretch without a successful request, tracked as successes come in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gaps {
    last: Option<u64>,
    /// The longest gap (ms) and when it ended (ms since the start).
    pub longest_ms: u64,
    pub longest_ended_at_ms: u64,
    /// The address of the last success, and how often it changed (failovers seen).
    last_addr: Option<String>,
    pub failovers: u64,
    /// Every gap over [`LONG_GAP_MS`] as (ended at, length) in ms, the first 1,000: the outages
    /// the run went through (benchmarks match them to kills).
    pub long: Vec<(u64, u64)>,
}

/// A gap without a successful request this long is listed in [`Gaps::long`].
pub const LONG_GAP_MS: u64 = 200;

impl Gaps {
    /// A successful request at `now_ms` (since the start) served by `addr`.
    pub fn success(&mut self, now_ms: u64, addr: &str) {
        let since = self.last.unwrap_or(now_ms);
        let gap = now_ms.saturating_sub(since);
        if gap > LONG_GAP_MS && self.long.len() < 1000 {
            self.long.push((now_ms, gap));
        }
        if gap > self.longest_ms {
            self.longest_ms = gap;
            self.longest_ended_at_ms = now_ms;
        }
        self.last = Some(now_ms.max(since));
        if self.last_addr.as_deref().is_some_and(|a| a != addr) {
            self.failovers += 1;
        }
        self.last_addr = Some(addr.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Expected {
        Expected {
            id: "1".into(),
            user_name: "u".into(),
            display_name: "U".into(),
            title: Some("T".into()),
            active: true,
            deactivated: false,
            deleted: false,
            groups: ["g1".to_string()].into(),
            groups_uncertain: false,
            uncertain: false,
            acked: 3,
        }
    }

    fn read() -> Value {
        json!({"id": "1", "userName": "u", "displayName": "U", "title": "T", "active": true,
               "groups": [{"value": "g1", "display": "G"}]})
    }

    #[test]
    fn a_matching_read_is_ok_and_every_acknowledged_attribute_is_checked() {
        assert_eq!(judge(&user(), Some(&read())), Verdict::Ok);
        let mut r = read();
        r["title"] = json!("X");
        assert!(matches!(judge(&user(), Some(&r)), Verdict::Wrong(_)));
        let mut r = read();
        r["groups"] = json!([]);
        assert!(matches!(judge(&user(), Some(&r)), Verdict::Wrong(_)));
        let mut e = user();
        e.groups_uncertain = true;
        assert_eq!(judge(&e, Some(&r)), Verdict::Ok);
        assert_eq!(judge(&user(), None), Verdict::Missing);
    }

    #[test]
    fn acknowledged_offboarding_must_hold_everywhere() {
        let mut e = user();
        e.active = false;
        e.deactivated = true;
        assert_eq!(judge(&e, Some(&read())), Verdict::DeactivatedActive);
        let mut r = read();
        r["active"] = json!(false);
        assert_eq!(judge(&e, Some(&r)), Verdict::Ok);
        e.deleted = true;
        assert_eq!(judge(&e, None), Verdict::Ok);
        assert_eq!(judge(&e, Some(&r)), Verdict::Missing);
        assert_eq!(judge(&e, Some(&read())), Verdict::DeactivatedActive);
    }

    #[test]
    fn gaps_and_failovers_follow_the_successes() {
        let mut g = Gaps::default();
        g.success(100, "a");
        g.success(150, "a");
        g.success(1150, "b");
        g.success(1200, "b");
        assert_eq!(
            (g.longest_ms, g.longest_ended_at_ms, g.failovers),
            (1000, 1150, 1)
        );
        assert_eq!(g.long, [(1150, 1000)]);
    }
}
