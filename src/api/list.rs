//! Lists and searches (`GET /Users`, `POST /.search`, …) over the store, in memory bounded by
//! the page, not the tenant.
//!
//! - A plain page (no filter, no sort) seeks to its first row ([`Store::page`]) and takes
//!   `totalResults` from a maintained counter: it reads the page and nothing else.
//! - A filter that requires `attr eq "value"` on an indexed attribute (`userName`,
//!   `externalId`, `emails.value`, a group's `displayName` and `externalId`, and a group's
//!   `members.value` through the membership index) reads only the candidates the index names.
//! - Any other filter scans the tenant's views once, counts every match and keeps only the
//!   page: the rows in `[startIndex, startIndex + count)` when unsorted, the first
//!   `startIndex + count` by the sort order when sorted ([`list::TopK`]).
//!
//! Filters on a group's members can only name members by id (`members[value eq "…"]`,
//! `members.value eq "…"`): each such term is one point read per group. Anything else about
//! members (`members.display co "x"`, `members pr`) would read every member of every group and
//! is refused with `invalidFilter`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::render::{render, with_members, Members};
use crate::scim::filter::{self, AttrPath};
use crate::scim::list::{self, ListQuery, Sorter, TopK};
use crate::scim::members::{self as scim_members, FilterMembers};
use crate::scim::schema::ResourceKind;
use crate::scim::ScimError;
use crate::store::{indexed_attrs, Store, StoreError};

/// Evaluate a list query and build the ListResponse.
pub fn list_in_store(
    store: &Store,
    tenant: &str,
    kinds: &[ResourceKind],
    q: &ListQuery,
    base: &str,
    max_members: usize,
) -> Result<Value, StoreError> {
    let skip = q.start_index.max(1) - 1;
    let shown =
        |kind: ResourceKind, view: Value| show(store, tenant, kind, view, base, q, max_members);
    if kinds.len() == 1 && q.filter.is_none() && q.sort_by.is_none() {
        let kind = kinds[0];
        let total = store.count(tenant, kind)?;
        let mut page = Vec::new();
        for view in store.page(tenant, kind, skip, q.count)? {
            page.push(shown(kind, view)?);
        }
        return Ok(list::list_response(total, q.start_index.max(1), page));
    }
    let want = skip + q.count;
    let mut total = 0usize;
    let mut page: Vec<(ResourceKind, Value)> = Vec::new();
    for &kind in kinds {
        let matcher = Matcher::new(store, tenant, kind, q.filter.as_ref())?;
        let matches = |view: Value| -> Result<Option<Value>, StoreError> {
            Ok(matcher.matches(&view)?.then_some(view))
        };
        let sorter = q
            .sort_by
            .as_ref()
            .map(|by| Sorter::new(kind, by, q.descending));
        // Kinds list one after the other: this kind's rows start after the earlier kinds'.
        let before = total;
        let mut top = TopK::new(want.saturating_sub(before));
        let mut offer = |view: Value, total: &mut usize| {
            let n = *total;
            *total += 1;
            match &sorter {
                Some(s) => top.push(s.rank(&view, n as u64), view),
                None if n >= skip && n < want => page.push((kind, view)),
                None => {}
            }
        };
        match q
            .filter
            .as_ref()
            .map(|f| indexed_candidates(store, tenant, kind, f))
            .transpose()?
            .flatten()
        {
            Some(ids) => {
                for id in ids {
                    if let Some(s) = store.get(tenant, kind, &id)? {
                        if let Some(v) = matches(s.view)? {
                            offer(v, &mut total);
                        }
                    }
                }
            }
            None => {
                for view in store.scan(tenant, kind) {
                    if let Some(v) = matches(view?)? {
                        offer(v, &mut total);
                    }
                }
            }
        }
        if sorter.is_some() {
            let sorted = top.into_sorted();
            let start = skip.saturating_sub(before);
            page.extend(sorted.into_iter().skip(start).map(|v| (kind, v)));
        }
    }
    let mut rendered = Vec::new();
    for (kind, view) in page.into_iter().take(q.count) {
        rendered.push(shown(kind, view)?);
    }
    Ok(list::list_response(total, q.start_index.max(1), rendered))
}

/// One listed resource as this client sees it: rendered (location, a group's first page of
/// members unless the projection hides them), then projected.
pub(super) fn show(
    store: &Store,
    tenant: &str,
    kind: ResourceKind,
    view: Value,
    base: &str,
    q: &ListQuery,
    max_members: usize,
) -> Result<Value, StoreError> {
    let members = match kind {
        ResourceKind::Group if scim_members::shown(&q.attributes, &q.excluded_attributes) => {
            Members::Page {
                after: None,
                count: max_members,
            }
        }
        _ => Members::Hidden,
    };
    let r = render(store, tenant, kind, view, base, &members)?;
    Ok(list::project(
        &r.body,
        kind,
        &q.attributes,
        &q.excluded_attributes,
    ))
}

/// A list's filter, ready to test one type's views: a group's member terms read only the
/// membership records they name.
pub(super) struct Matcher<'a> {
    store: &'a Store,
    tenant: &'a str,
    kind: ResourceKind,
    filter: Option<&'a filter::Filter>,
    member_ids: Option<BTreeSet<String>>,
}

impl<'a> Matcher<'a> {
    /// The matcher of `filter` for `kind`; `invalidFilter` for a members term that would read
    /// every member of every group.
    pub(super) fn new(
        store: &'a Store,
        tenant: &'a str,
        kind: ResourceKind,
        filter: Option<&'a filter::Filter>,
    ) -> Result<Matcher<'a>, StoreError> {
        let member_ids = match (filter, kind) {
            (Some(f), ResourceKind::Group) => match scim_members::filter_members(f) {
                FilterMembers::None => None,
                FilterMembers::Ids(ids) => Some(ids),
                FilterMembers::Unsupported => {
                    return Err(StoreError::Scim(ScimError::InvalidFilter(
                        "filters on a group's members can only name members by id \
                         (members[value eq \"…\"] or members.value eq \"…\")"
                            .into(),
                    )))
                }
            },
            _ => None,
        };
        Ok(Matcher {
            store,
            tenant,
            kind,
            filter,
            member_ids,
        })
    }

    /// Does this view match (always, without a filter)?
    pub(super) fn matches(&self, view: &Value) -> Result<bool, StoreError> {
        let Some(f) = self.filter else {
            return Ok(true);
        };
        let probe = match &self.member_ids {
            Some(ids) => with_members(self.store, self.tenant, view.clone(), ids)?,
            None => view.clone(),
        };
        Ok(filter::matches(f, &probe, self.kind))
    }
}

/// Candidate ids from an index when the filter requires `attr eq "value"` on an indexed
/// attribute (or, for groups, on `members.value`); `None` when it does not (scan instead).
/// Candidates are re-checked by the filter.
pub(super) fn indexed_candidates(
    store: &Store,
    tenant: &str,
    kind: ResourceKind,
    f: &filter::Filter,
) -> Result<Option<BTreeSet<String>>, StoreError> {
    for (path, value) in filter::required_eq(f) {
        if kind == ResourceKind::Group
            && scim_members::is_members(&path)
            && path
                .sub
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case("value"))
        {
            return Ok(Some(
                store.member_groups(tenant, &value)?.into_iter().collect(),
            ));
        }
        if let Some(attr) = index_name(kind, &path) {
            return Ok(Some(
                store
                    .lookup(tenant, kind, attr, &value)?
                    .into_iter()
                    .collect(),
            ));
        }
    }
    Ok(None)
}

/// The index that serves an attribute path, if any.
fn index_name(kind: ResourceKind, path: &AttrPath) -> Option<&'static str> {
    if let Some(uri) = &path.uri {
        if !uri.eq_ignore_ascii_case(kind.core_schema().id) {
            return None;
        }
    }
    let full = match &path.sub {
        Some(sub) => format!("{}.{}", path.name, sub),
        // A multi-valued attribute without a sub-attribute compares its `value` (RFC 7644).
        None if path.name.eq_ignore_ascii_case("emails") => "emails.value".to_string(),
        None => path.name.clone(),
    };
    indexed_attrs(kind)
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(&full))
}
