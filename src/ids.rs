//! Names and ids: tenants, regions, resource ids, and the normalisation of unique values.
//!
//! User ids are derived from the tenant and the normalised userName (UUIDv5), so the same POST
//! replayed any number of times, in any region, names the same document: replays cannot create a
//! second user. A rename keeps the id; when the derived id is already held by another document (a
//! renamed user, or a tombstone), the next candidate in a deterministic sequence is used.

use uuid::Uuid;

/// Namespace of geoscim's UUIDv5 ids (a fixed random UUID; never change it: ids depend on it).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_4c1e_9a57_4f0e_b3a2_58c1_e0d4_7a19);

/// Is `name` a valid tenant or region name: 1-63 of `a-z 0-9 - _`? Names are part of storage
/// keys, so the alphabet is closed and contains no separator byte.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The normal form of a case-insensitive unique value (userName, RFC 7643 §4.1.1).
pub fn normalize_case_insensitive(value: &str) -> String {
    value.to_lowercase()
}

/// The `n`-th candidate id of a user with this userName in this tenant (n = 0 first).
pub fn user_id_candidate(tenant: &str, user_name: &str, n: u32) -> String {
    let mut name = Vec::with_capacity(tenant.len() + user_name.len() + 8);
    name.extend_from_slice(tenant.as_bytes());
    name.push(0);
    name.extend_from_slice(normalize_case_insensitive(user_name).as_bytes());
    if n > 0 {
        name.push(0);
        name.extend_from_slice(n.to_string().as_bytes());
    }
    Uuid::new_v5(&ID_NAMESPACE, &name).to_string()
}

/// A fresh random id (groups).
pub fn random_id() -> String {
    Uuid::new_v4().to_string()
}

/// Is `id` acceptable as a path id? Ids are ours (UUIDs), but clients send anything.
pub fn is_plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.bytes().any(|b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_ignore_user_name_case_but_not_tenant() {
        assert_eq!(
            user_id_candidate("t", "Alice@X.com", 0),
            user_id_candidate("t", "alice@x.com", 0)
        );
        assert_ne!(
            user_id_candidate("t", "alice", 0),
            user_id_candidate("u", "alice", 0)
        );
        assert_ne!(
            user_id_candidate("t", "alice", 0),
            user_id_candidate("t", "alice", 1)
        );
    }

    #[test]
    fn names_are_a_closed_alphabet() {
        assert!(is_valid_name("eu-west_1"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("EU"));
        assert!(!is_valid_name("a\0b"));
        assert!(!is_valid_name(&"a".repeat(64)));
    }
}
