//! How a stored view becomes the body a client gets: absolute `meta.location`, a user's
//! computed `groups`, a group's members (a page of them), and the ETag that covers all of it.
//!
//! Why the ETag is computed here: a body shows more than its document (a user's `groups`, a
//! group's live members), so `meta.version` combines the document's version with a digest of
//! those parts ([`crate::store::combined_version`]). A membership change therefore gives the
//! group (and the member's `groups`) a new version, and `If-None-Match` never answers a stale
//! 304. Every region computes the same from the same records.

use serde_json::{Map, Value};

use crate::scim::schema::ResourceKind;
use crate::store::{combined_version, groups_digest, Store, StoreError};

/// Which members a group's body shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// None (the projection excludes them, or a write answer for a large group).
    Hidden,
    /// At most `count`, in member id order, after the member id `after`.
    Page { after: Option<String>, count: usize },
}

/// A rendered resource.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: Value,
    /// The ETag (also `meta.version`).
    pub version: String,
    /// For a group whose members were read: how many it lists in all, and the cursor of the
    /// next page when there are more.
    pub members: Option<MemberPaging>,
}

/// Paging of a group's members in one body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPaging {
    pub total: u64,
    pub next: Option<String>,
}

/// Render a stored view for the client.
pub fn render(
    store: &Store,
    tenant: &str,
    kind: ResourceKind,
    mut view: Value,
    base: &str,
    members: &Members,
) -> Result<Rendered, StoreError> {
    let id = view["id"].as_str().unwrap_or_default().to_string();
    let doc_version = view["meta"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut paging = None;
    let version = match kind {
        ResourceKind::User => {
            let groups = store.groups_of(tenant, &id, base)?;
            let version = combined_version(&doc_version, &groups_digest(&groups));
            if !groups.is_empty() {
                insert_before_meta(&mut view, "groups", Value::Array(groups));
            }
            version
        }
        ResourceKind::Group => {
            // The digest before the page: a membership change committing in between then
            // gives a new body with the old version (the next request sees a new version), never
            // an old body with the new version (which a later If-None-Match would answer 304).
            let digest = store.member_digest(tenant, &id)?;
            if let Members::Page { after, count } = members {
                let page = store.member_page(tenant, &id, after.as_deref(), *count)?;
                let total = store.member_total(tenant, &id)?;
                // A next page exists when one more member follows the last (one seek).
                let next = match page.last().and_then(|m| m["value"].as_str()) {
                    Some(last) if page.len() == *count => {
                        let more = store.member_page(tenant, &id, Some(last), 1)?;
                        (!more.is_empty()).then(|| last.to_string())
                    }
                    _ => None,
                };
                if !page.is_empty() {
                    insert_before_meta(&mut view, "members", Value::Array(page));
                }
                paging = Some(MemberPaging { total, next });
            }
            combined_version(&doc_version, &digest)
        }
    };
    if let Some(meta) = view.get_mut("meta").and_then(Value::as_object_mut) {
        meta.insert(
            "location".into(),
            Value::String(format!("{base}/{}/{id}", kind.endpoint())),
        );
        meta.insert("version".into(), Value::String(version.clone()));
    }
    Ok(Rendered {
        body: view,
        version,
        members: paging,
    })
}

fn insert_before_meta(view: &mut Value, key: &str, value: Value) {
    if let Some(m) = view.as_object_mut() {
        let meta = m.remove("meta");
        m.insert(key.into(), value);
        if let Some(meta) = meta {
            m.insert("meta".into(), meta);
        }
    }
}

/// A group view with just the listed members among `ids` (what a filter on
/// `members[value eq …]` is evaluated against).
pub fn with_members(
    store: &Store,
    tenant: &str,
    mut view: Value,
    ids: &std::collections::BTreeSet<String>,
) -> Result<Value, StoreError> {
    let id = view["id"].as_str().unwrap_or_default().to_string();
    let mut found = Vec::new();
    for member in ids {
        if let Some(m) = store.listed_member(tenant, &id, member)? {
            found.push(m);
        }
    }
    if let Some(obj) = view.as_object_mut() {
        if found.is_empty() {
            obj.remove("members");
        } else {
            obj.insert("members".into(), Value::Array(found));
        }
    }
    Ok(view)
}

/// The stored attributes of a normalised resource: everything but `schemas`, `id`, `meta`.
pub fn stored_attrs(resource: Value) -> Map<String, Value> {
    match resource {
        Value::Object(mut m) => {
            for k in ["schemas", "id", "meta"] {
                m.remove(k);
            }
            m
        }
        _ => Map::new(),
    }
}
