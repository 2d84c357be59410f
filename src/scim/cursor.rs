//! Cursors of RFC 9865 cursor pagination. Pure: the key and the clock are parameters.
//!
//! A list in cursor mode is ordered by a stable key, (resource type, id): ids never change, so
//! a resource that exists unchanged across a walk keeps its place whatever is written around
//! it, and a page is "the next `count` matches after this key", a seek plus a page of reads
//! however large the tenant is. A cursor is that key, the direction to walk from it, the time it
//! was issued and a fingerprint of the query (tenant, endpoint, filter), sealed with an
//! HMAC-SHA256 tag. The tag makes a cursor unforgeable and keeps tampered or truncated text from
//! reaching the store: anything that fails it is `invalidCursor`, a cursor of another query is
//! `invalidCursor`, one older than the cursor timeout is `expiredCursor`.
//!
//! Wire form: `base64url(version ‖ direction ‖ kind ‖ issued_at (u64 BE) ‖ fingerprint (8) ‖ id
//! ‖ tag (32))`, without padding, so the text uses only URL-unreserved characters (RFC 9865 §2).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use sha2::{Digest, Sha256};

use super::error::{ScimError, ScimResult};
use super::filter::Filter;
use super::schema::ResourceKind;

/// The cursor format version; a cursor of another version is `invalidCursor`.
const VERSION: u8 = 1;
/// Bytes before the id: version, direction, kind, issued_at, fingerprint.
const HEADER: usize = 1 + 1 + 1 + 8 + 8;
/// Bytes of the HMAC-SHA256 tag.
const TAG: usize = 32;
/// The longest id a cursor carries (ids are at most 128 bytes, see `ids::is_plausible_id`).
const MAX_ID: usize = 128;

/// Which way a page walks from the cursor's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The page holds the matches strictly after the key (a `nextCursor`).
    After,
    /// The page holds the matches strictly before the key (a `previousCursor`).
    Before,
}

/// A place in the list order: the resource type (its index among the endpoint's types, in
/// the order they are listed) and the id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Index into the endpoint's resource types (`/.search` lists Users, then Groups).
    pub kind: u8,
    /// The resource id.
    pub id: String,
}

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub direction: Direction,
    pub position: Position,
    /// Unix seconds when the cursor was issued; it expires `timeout` seconds later.
    pub issued_at: u64,
    /// The query it belongs to (see [`fingerprint`]).
    pub fingerprint: [u8; 8],
}

/// The key cursors are sealed with. Every region of a cluster needs the same key for a client
/// to follow a cursor from one region to another.
pub struct CursorKey(hmac::Key);

impl CursorKey {
    /// A key from secret bytes (`scim.cursor_key`).
    pub fn new(secret: &[u8]) -> CursorKey {
        CursorKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

/// What a cursor is bound to: the tenant, the endpoint's resource types and the filter (in its
/// printed, canonical form). A cursor from another query must not walk this one: its key might
/// not match this filter, and another tenant's cursor must never be taken for this tenant's.
pub fn fingerprint(tenant: &str, kinds: &[ResourceKind], filter: Option<&Filter>) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"geoscim cursor query\0");
    h.update(tenant.as_bytes());
    h.update(b"\0");
    for kind in kinds {
        h.update(kind.name().as_bytes());
        h.update(b",");
    }
    h.update(b"\0");
    if let Some(f) = filter {
        h.update(f.to_string().as_bytes());
    }
    let digest = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The text of a cursor, sealed with `key`.
pub fn encode(key: &CursorKey, cursor: &Cursor) -> String {
    let mut bytes = Vec::with_capacity(HEADER + cursor.position.id.len() + TAG);
    bytes.push(VERSION);
    bytes.push(match cursor.direction {
        Direction::After => b'a',
        Direction::Before => b'b',
    });
    bytes.push(cursor.position.kind);
    bytes.extend_from_slice(&cursor.issued_at.to_be_bytes());
    bytes.extend_from_slice(&cursor.fingerprint);
    bytes.extend_from_slice(cursor.position.id.as_bytes());
    let tag = hmac::sign(&key.0, &bytes);
    bytes.extend_from_slice(tag.as_ref());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Check and open a cursor the client sent for the query `fingerprint` at time `now` (Unix
/// seconds). `invalidCursor` for anything not issued by us with `key` for this very query
/// (garbage, a changed byte, another filter, endpoint or tenant), `expiredCursor` for one
/// issued more than `timeout_secs` ago.
pub fn decode(
    key: &CursorKey,
    text: &str,
    fingerprint: [u8; 8],
    now: u64,
    timeout_secs: u64,
) -> ScimResult<Cursor> {
    let invalid = |why: &str| {
        ScimError::InvalidCursor(format!(
            "{why}; send an empty cursor for the first page, then the nextCursor or \
             previousCursor of a previous answer to the same query"
        ))
    };
    // Bound the work before decoding: a real cursor is never longer than this.
    if text.len() > (HEADER + MAX_ID + TAG) * 4 / 3 + 4 {
        return Err(invalid("the cursor is too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|_| invalid("the cursor is not one this service issued"))?;
    if bytes.len() < HEADER + 1 + TAG {
        return Err(invalid("the cursor is not one this service issued"));
    }
    let (body, tag) = bytes.split_at(bytes.len() - TAG);
    hmac::verify(&key.0, body, tag)
        .map_err(|_| invalid("the cursor is not one this service issued, or was changed"))?;
    if body[0] != VERSION {
        return Err(invalid("the cursor is of an unknown version"));
    }
    let direction = match body[1] {
        b'a' => Direction::After,
        b'b' => Direction::Before,
        _ => return Err(invalid("the cursor is malformed")),
    };
    let kind = body[2];
    let issued_at = u64::from_be_bytes(body[3..11].try_into().expect("8 bytes"));
    let fp: [u8; 8] = body[11..19].try_into().expect("8 bytes");
    if fp != fingerprint {
        return Err(invalid(
            "the cursor belongs to another query (a different filter, endpoint or tenant)",
        ));
    }
    let id = std::str::from_utf8(&body[HEADER..])
        .ok()
        .filter(|id| crate::ids::is_plausible_id(id))
        .ok_or_else(|| invalid("the cursor is malformed"))?;
    if now.saturating_sub(issued_at) > timeout_secs {
        return Err(ScimError::ExpiredCursor(format!(
            "the cursor was issued {} s ago, more than the cursor timeout of {timeout_secs} s; \
             start again with an empty cursor",
            now - issued_at
        )));
    }
    Ok(Cursor {
        direction,
        position: Position {
            kind,
            id: id.to_string(),
        },
        issued_at,
        fingerprint: fp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> CursorKey {
        CursorKey::new(b"a test key of some length, 32 b")
    }

    fn cursor(id: &str) -> Cursor {
        Cursor {
            direction: Direction::After,
            position: Position {
                kind: 1,
                id: id.to_string(),
            },
            issued_at: 1_000,
            fingerprint: fingerprint("t", &[ResourceKind::User], None),
        }
    }

    fn scim_type(r: ScimResult<Cursor>) -> Option<&'static str> {
        r.err().and_then(|e| e.scim_type())
    }

    #[test]
    fn a_cursor_opens_to_what_was_sealed() {
        let c = cursor("2819c223-7f76-453a-919d-413861904646");
        let text = encode(&key(), &c);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode(&key(), &text, c.fingerprint, 1_010, 600), Ok(c));
    }

    #[test]
    fn a_changed_byte_or_garbage_is_an_invalid_cursor() {
        let c = cursor("abc");
        let text = encode(&key(), &c);
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        bytes[HEADER] ^= 1; // the id's first byte
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        for bad in [
            tampered.as_str(),
            "",
            "not a cursor!",
            "AAAA",
            &text[..text.len() - 2],
        ] {
            assert_eq!(
                scim_type(decode(&key(), bad, c.fingerprint, 1_000, 600)),
                Some("invalidCursor"),
                "{bad:?}"
            );
        }
        let other_key = CursorKey::new(b"another key");
        assert_eq!(
            scim_type(decode(&other_key, &text, c.fingerprint, 1_000, 600)),
            Some("invalidCursor")
        );
    }

    #[test]
    fn a_cursor_of_another_query_is_invalid() {
        let c = cursor("abc");
        let text = encode(&key(), &c);
        let f = super::super::filter::parse(
            "userName sw \"a\"",
            &super::super::filter::FilterLimits {
                max_len: 100,
                max_depth: 5,
            },
        )
        .unwrap();
        for other in [
            fingerprint("t", &[ResourceKind::User], Some(&f)),
            fingerprint("t", &[ResourceKind::Group], None),
            fingerprint("t2", &[ResourceKind::User], None),
        ] {
            assert_eq!(
                scim_type(decode(&key(), &text, other, 1_000, 600)),
                Some("invalidCursor")
            );
        }
    }

    #[test]
    fn the_filter_fingerprint_ignores_spelling_but_not_meaning() {
        let limits = super::super::filter::FilterLimits {
            max_len: 100,
            max_depth: 5,
        };
        let parse = |t| super::super::filter::parse(t, &limits).unwrap();
        let fp = |t| fingerprint("t", &[ResourceKind::User], Some(&parse(t)));
        assert_eq!(fp("userName sw \"a\""), fp("userName  SW \"a\""));
        assert_ne!(fp("userName sw \"a\""), fp("userName sw \"b\""));
    }

    #[test]
    fn a_cursor_expires_after_the_timeout_and_not_before() {
        let c = cursor("abc");
        let text = encode(&key(), &c);
        assert!(decode(&key(), &text, c.fingerprint, 1_600, 600).is_ok());
        assert_eq!(
            scim_type(decode(&key(), &text, c.fingerprint, 1_601, 600)),
            Some("expiredCursor")
        );
        // A clock behind the issuer's (another region) does not expire it.
        assert!(decode(&key(), &text, c.fingerprint, 900, 600).is_ok());
    }

    proptest! {
        #[test]
        fn every_sealed_cursor_round_trips(
            id in "[A-Za-z0-9-]{1,128}",
            kind in 0u8..3,
            before in any::<bool>(),
            issued in 0u64..(u64::MAX / 2),
        ) {
            let c = Cursor {
                direction: if before { Direction::Before } else { Direction::After },
                position: Position { kind, id },
                issued_at: issued,
                fingerprint: [7; 8],
            };
            let text = encode(&key(), &c);
            prop_assert_eq!(decode(&key(), &text, [7; 8], issued, 1), Ok(c));
        }

        #[test]
        fn arbitrary_text_is_refused_without_panicking(text in ".{0,200}") {
            prop_assert!(decode(&key(), &text, [7; 8], 0, 600).is_err());
        }

        #[test]
        fn any_single_bit_flip_is_refused(id in "[a-z0-9]{1,40}", bit in 0usize..1000) {
            let c = cursor(&id);
            let mut bytes = URL_SAFE_NO_PAD.decode(encode(&key(), &c)).unwrap();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            let text = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(decode(&key(), &text, c.fingerprint, 1_000, 600).is_err());
        }
    }
}
