//! What a write meant, as its writer saw it: the operation, the attributes it changed and
//! whether it took access away or gave it back. Carried in the write's (last) log entry, so
//! every region derives the same event from the same entry, whatever it merged before.
//!
//! Encoding (appended to a v3 log entry, see `store::log`):
//! ```text
//! intent := op:u8 access:u8 varint n, n × (varint len, attribute name)
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::conflict::membership::{put_varint, take_varint};
use crate::conflict::sticky::StickySet;
use crate::scim::schema::ResourceKind;

/// Changed attribute names one intent carries at most (a wider change names the first ones).
pub const MAX_ATTRIBUTES: usize = 256;
/// The longest attribute name kept in an intent.
const MAX_NAME: usize = 512;

/// The SCIM operation a write was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Put,
    Patch,
    Delete,
}

/// A change of a user's access the write made (RFC 9967 activate/deactivate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// From restricted (`active` false, or a tenant's sticky attribute at a restrictive value)
    /// to unrestricted.
    Activate,
    /// From unrestricted to restricted: an offboarding.
    Deactivate,
}

/// What one write meant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Intent {
    pub op: Option<Op>,
    /// Top-level attributes whose value changed (extension attributes as
    /// `urn:…:User:attribute`), in order; `members` when memberships changed.
    pub attributes: Vec<String>,
    pub access: Option<Access>,
}

impl Intent {
    /// The intent of a write of `kind` from view `old` to view `new` (None: absent), as
    /// operation `op`, with `members_changed` for a group whose memberships changed.
    pub fn of(
        op: Op,
        kind: ResourceKind,
        sticky: &StickySet,
        old: Option<&Value>,
        new: Option<&Value>,
        members_changed: bool,
    ) -> Intent {
        let mut attributes = match op {
            Op::Delete => Vec::new(),
            _ => changed_attributes(old, new),
        };
        if members_changed && kind == ResourceKind::Group {
            attributes.push("members".into());
        }
        attributes.truncate(MAX_ATTRIBUTES);
        let access = match (kind, old, new) {
            (ResourceKind::User, Some(o), Some(n)) => {
                match (sticky.restricts(o), sticky.restricts(n)) {
                    (false, true) => Some(Access::Deactivate),
                    (true, false) => Some(Access::Activate),
                    _ => None,
                }
            }
            _ => None,
        };
        Intent {
            op: Some(op),
            attributes,
            access,
        }
    }

    /// Does this write take access away (a deactivation or a delete)?
    pub fn is_offboarding(&self) -> bool {
        self.op == Some(Op::Delete) || self.access == Some(Access::Deactivate)
    }

    /// Append the encoding.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(match self.op {
            None => 0,
            Some(Op::Create) => 1,
            Some(Op::Put) => 2,
            Some(Op::Patch) => 3,
            Some(Op::Delete) => 4,
        });
        out.push(match self.access {
            None => 0,
            Some(Access::Activate) => 1,
            Some(Access::Deactivate) => 2,
        });
        put_varint(out, self.attributes.len() as u64);
        for a in &self.attributes {
            put_varint(out, a.len() as u64);
            out.extend_from_slice(a.as_bytes());
        }
    }

    /// Decode from the front of `bytes`; the rest follows. `None` for garbage.
    pub fn decode_from(bytes: &[u8]) -> Option<(Intent, &[u8])> {
        let (&op, rest) = bytes.split_first()?;
        let (&access, rest) = rest.split_first()?;
        let op = match op {
            0 => None,
            1 => Some(Op::Create),
            2 => Some(Op::Put),
            3 => Some(Op::Patch),
            4 => Some(Op::Delete),
            _ => return None,
        };
        let access = match access {
            0 => None,
            1 => Some(Access::Activate),
            2 => Some(Access::Deactivate),
            _ => return None,
        };
        let (n, mut rest) = take_varint(rest).ok()?;
        if n > MAX_ATTRIBUTES as u64 {
            return None;
        }
        let mut attributes = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (len, more) = take_varint(rest).ok()?;
            if len > MAX_NAME as u64 || len > more.len() as u64 {
                return None;
            }
            let (name, more) = more.split_at(len as usize);
            attributes.push(String::from_utf8(name.to_vec()).ok()?);
            rest = more;
        }
        Some((
            Intent {
                op,
                attributes,
                access,
            },
            rest,
        ))
    }
}

/// The attributes that differ between two views: top-level keys, and the keys inside an
/// extension schema's object as `urn:…:attribute`. `schemas`, `id` and `meta` are bookkeeping.
pub fn changed_attributes(old: Option<&Value>, new: Option<&Value>) -> Vec<String> {
    let empty = Map::new();
    let as_map = |v: Option<&Value>| v.and_then(Value::as_object).unwrap_or(&empty).clone();
    let (old, new) = (as_map(old), as_map(new));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        if matches!(key.as_str(), "schemas" | "id" | "meta") {
            continue;
        }
        let (o, n) = (old.get(key), new.get(key));
        if o == n {
            continue;
        }
        match (o.and_then(Value::as_object), n.and_then(Value::as_object)) {
            (o_ext, n_ext) if key.starts_with("urn:") && (o_ext.is_some() || n_ext.is_some()) => {
                let (o_ext, n_ext) = (o_ext.unwrap_or(&empty), n_ext.unwrap_or(&empty));
                let mut inner: Vec<&String> = o_ext.keys().chain(n_ext.keys()).collect();
                inner.sort();
                inner.dedup();
                for attr in inner {
                    if o_ext.get(attr) != n_ext.get(attr) {
                        out.push(format!("{key}:{attr}"));
                    }
                }
            }
            _ => out.push(key.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    #[test]
    fn changed_attributes_name_top_level_and_extension_attributes_but_not_bookkeeping() {
        let old = json!({"schemas": ["a"], "id": "1", "meta": {"version": "1"},
                         "userName": "a", "active": true, "title": "x",
                         ENT: {"department": "d", "employeeNumber": "7"}});
        let new = json!({"schemas": ["a", "b"], "id": "1", "meta": {"version": "2"},
                         "userName": "a", "active": false,
                         ENT: {"department": "e", "employeeNumber": "7"}});
        assert_eq!(
            changed_attributes(Some(&old), Some(&new)),
            vec![
                "active".to_string(),
                "title".into(),
                format!("{ENT}:department")
            ]
        );
        assert_eq!(
            changed_attributes(None, Some(&json!({"userName": "a"}))),
            vec!["userName".to_string()]
        );
    }

    #[test]
    fn intents_tell_deactivation_activation_and_delete_apart() {
        let sticky = StickySet::default();
        let on = json!({"userName": "a", "active": true});
        let off = json!({"userName": "a", "active": false});
        let i = Intent::of(
            Op::Patch,
            ResourceKind::User,
            &sticky,
            Some(&on),
            Some(&off),
            false,
        );
        assert_eq!(i.access, Some(Access::Deactivate));
        assert!(i.is_offboarding());
        assert_eq!(i.attributes, vec!["active".to_string()]);
        let i = Intent::of(
            Op::Put,
            ResourceKind::User,
            &sticky,
            Some(&off),
            Some(&on),
            false,
        );
        assert_eq!(i.access, Some(Access::Activate));
        assert!(!i.is_offboarding());
        // Created inactive: no access was taken away.
        let i = Intent::of(
            Op::Create,
            ResourceKind::User,
            &sticky,
            None,
            Some(&off),
            false,
        );
        assert_eq!(i.access, None);
        let i = Intent::of(
            Op::Delete,
            ResourceKind::User,
            &sticky,
            Some(&on),
            None,
            false,
        );
        assert!(i.is_offboarding() && i.attributes.is_empty());
        let g = json!({"displayName": "g"});
        let i = Intent::of(
            Op::Patch,
            ResourceKind::Group,
            &sticky,
            Some(&g),
            Some(&g),
            true,
        );
        assert_eq!(i.attributes, vec!["members".to_string()]);
    }

    #[test]
    fn intents_round_trip_and_garbage_is_refused() {
        let i = Intent {
            op: Some(Op::Patch),
            attributes: vec!["active".into(), format!("{ENT}:department")],
            access: Some(Access::Deactivate),
        };
        let mut bytes = i.encode_into_vec();
        bytes.extend_from_slice(b"rest");
        let (back, rest) = Intent::decode_from(&bytes).unwrap();
        assert_eq!((back, rest), (i, &b"rest"[..]));
        assert!(Intent::decode_from(&[9, 0, 0]).is_none());
        assert!(Intent::decode_from(&[1, 7, 0]).is_none());
        assert!(Intent::decode_from(&[1, 0, 5, 3, b'a']).is_none());
        assert!(Intent::decode_from(&[1]).is_none());
    }

    impl Intent {
        fn encode_into_vec(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.encode_into(&mut out);
            out
        }
    }
}
