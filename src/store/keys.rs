//! Storage keys. Every key starts with the tenant, so no scan can cross tenants.
//!
//! Tenant names and resource type names contain no `\0` (see `ids::is_valid_name`), so `\0`
//! separates the parts and a prefix ending in `\0` selects exactly one tenant (and type).

use crate::scim::schema::ResourceKind;

/// Separator between key parts.
const SEP: u8 = 0;

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(p);
    }
    out
}

/// `docs` / `views`: tenant, type, id.
pub fn resource(tenant: &str, kind: ResourceKind, id: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), kind.name().as_bytes(), id.as_bytes()])
}

/// Prefix of every resource of one type in one tenant.
pub fn resource_prefix(tenant: &str, kind: ResourceKind) -> Vec<u8> {
    let mut k = join(&[tenant.as_bytes(), kind.name().as_bytes()]);
    k.push(SEP);
    k
}

/// `index`: tenant, type, attribute, normalised value, id.
pub fn index(tenant: &str, kind: ResourceKind, attr: &str, value: &str, id: &str) -> Vec<u8> {
    join(&[
        tenant.as_bytes(),
        kind.name().as_bytes(),
        attr.as_bytes(),
        value.as_bytes(),
        id.as_bytes(),
    ])
}

/// Prefix of the ids indexed under one value.
pub fn index_prefix(tenant: &str, kind: ResourceKind, attr: &str, value: &str) -> Vec<u8> {
    let mut k = join(&[
        tenant.as_bytes(),
        kind.name().as_bytes(),
        attr.as_bytes(),
        value.as_bytes(),
    ]);
    k.push(SEP);
    k
}

/// `index`: the reverse membership record, member id → group id (a User's `groups`).
pub fn member_of(tenant: &str, member: &str, group: &str) -> Vec<u8> {
    join(&[
        tenant.as_bytes(),
        b"~member",
        member.as_bytes(),
        group.as_bytes(),
    ])
}

/// Prefix of the groups a member belongs to.
pub fn member_of_prefix(tenant: &str, member: &str) -> Vec<u8> {
    let mut k = join(&[tenant.as_bytes(), b"~member", member.as_bytes()]);
    k.push(SEP);
    k
}

/// `members`: the membership record of (tenant, group, member).
pub fn membership(tenant: &str, group: &str, member: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), group.as_bytes(), member.as_bytes()])
}

/// Prefix of every membership record of one group.
pub fn membership_prefix(tenant: &str, group: &str) -> Vec<u8> {
    let mut k = join(&[tenant.as_bytes(), group.as_bytes()]);
    k.push(SEP);
    k
}

/// `index`: a listed member of a group (present, and the member is a live resource), in member
/// id order; the value is the member's shown attributes (JSON without `value`, or empty).
pub fn listed(tenant: &str, group: &str, member: &str) -> Vec<u8> {
    join(&[
        tenant.as_bytes(),
        b"~listed",
        group.as_bytes(),
        member.as_bytes(),
    ])
}

/// Prefix of the listed members of one group.
pub fn listed_prefix(tenant: &str, group: &str) -> Vec<u8> {
    let mut k = join(&[tenant.as_bytes(), b"~listed", group.as_bytes()]);
    k.push(SEP);
    k
}

/// `counts`: live resources of one type in one tenant (i64, summed by the merge operator).
pub fn resource_count(tenant: &str, kind: ResourceKind) -> Vec<u8> {
    let mut k = b"n".to_vec();
    k.extend(join(&[tenant.as_bytes(), kind.name().as_bytes()]));
    k
}

/// The bucket of an id for positional seeks: its first [`BUCKET_CHARS`] characters. Ids are
/// UUIDs (random for groups, hashed for users), so buckets are evenly filled.
pub const BUCKET_CHARS: usize = 3;

/// `counts`: live resources of one type in one tenant whose id starts with `bucket`.
pub fn bucket_count(tenant: &str, kind: ResourceKind, bucket: &str) -> Vec<u8> {
    let mut k = bucket_count_prefix(tenant, kind);
    k.extend_from_slice(bucket.as_bytes());
    k
}

/// Prefix of the bucket counts of one type in one tenant.
pub fn bucket_count_prefix(tenant: &str, kind: ResourceKind) -> Vec<u8> {
    let mut k = b"b".to_vec();
    k.extend(join(&[tenant.as_bytes(), kind.name().as_bytes()]));
    k.push(SEP);
    k
}

/// The bucket of an id (see [`BUCKET_CHARS`]).
pub fn bucket_of(id: &str) -> &str {
    let end = id
        .char_indices()
        .nth(BUCKET_CHARS)
        .map_or(id.len(), |(i, _)| i);
    &id[..end]
}

/// `counts`: listed members of one group (i64, summed).
pub fn member_count(tenant: &str, group: &str) -> Vec<u8> {
    let mut k = b"m".to_vec();
    k.extend(join(&[tenant.as_bytes(), group.as_bytes()]));
    k
}

/// `counts`: XOR of the listed members' terms of one group (32 bytes): what its ETag covers.
pub fn member_digest(tenant: &str, group: &str) -> Vec<u8> {
    let mut k = b"x".to_vec();
    k.extend(join(&[tenant.as_bytes(), group.as_bytes()]));
    k
}

/// `counts`: XOR of the present membership records' terms of one group (32 bytes): what the
/// heads digest holds of it, taken out when the group is deleted.
pub fn record_digest(tenant: &str, group: &str) -> Vec<u8> {
    let mut k = b"r".to_vec();
    k.extend(join(&[tenant.as_bytes(), group.as_bytes()]));
    k
}

/// `history`: one membership change of a group (a log entry's writes), in time order.
pub fn member_history(tenant: &str, group: &str, at: i64, origin: &str, seq: u64) -> Vec<u8> {
    let mut k = member_history_prefix(tenant, group);
    k.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    k.extend_from_slice(origin.as_bytes());
    k.push(SEP);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `counts`: entries in a group's membership history (i64, summed).
pub fn history_count(tenant: &str, group: &str) -> Vec<u8> {
    let mut k = b"h".to_vec();
    k.extend(join(&[tenant.as_bytes(), group.as_bytes()]));
    k
}

/// Prefix of a group's membership history.
pub fn member_history_prefix(tenant: &str, group: &str) -> Vec<u8> {
    let mut k = join(&[tenant.as_bytes(), group.as_bytes()]);
    k.push(SEP);
    k
}

/// Conflict records in time order: `CONFLICT_BY_TIME ‖ at ‖ 0 ‖ id` → the record's JSON.
/// RFC 3339 UTC times sort as text.
pub const CONFLICT_BY_TIME: &[u8] = b"t\0";

/// The time-ordered key of a conflict record.
pub fn conflict_by_time(at: &str, id: &str) -> Vec<u8> {
    let mut k = CONFLICT_BY_TIME.to_vec();
    k.extend_from_slice(at.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The id key of a conflict record (`i ‖ 0 ‖ id` → its time-ordered key), so a record observed
/// again is not stored twice.
pub fn conflict_by_id(id: &str) -> Vec<u8> {
    let mut k = b"i\0".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// `log`: origin region and sequence number (big-endian, so keys sort by sequence).
pub fn log(origin: &str, seq: u64) -> Vec<u8> {
    let mut k = join(&[origin.as_bytes(), b""]);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The last part of a key (the id after the final separator).
pub fn last_part(key: &[u8]) -> &[u8] {
    match key.iter().rposition(|&b| b == SEP) {
        Some(i) => &key[i + 1..],
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_prefixes_do_not_overlap() {
        let a = resource_prefix("acme", ResourceKind::User);
        let b = resource("acme2", ResourceKind::User, "x");
        assert!(!b.starts_with(&a));
        assert!(resource("acme", ResourceKind::User, "x").starts_with(&a));
    }

    #[test]
    fn last_part_is_the_id() {
        let k = index("t", ResourceKind::User, "userName", "bob", "id-1");
        assert_eq!(last_part(&k), b"id-1");
        assert!(k.starts_with(&index_prefix("t", ResourceKind::User, "userName", "bob")));
    }
}
