//! Cursor pages (RFC 9865) over the store: the `count` matches after (or before) a key in
//! (resource type, id) order.
//!
//! The cost of a page is one seek per resource type plus the rows it reads until the page is
//! full (and one more, to know whether a next page exists): never the tenant's size, unless a
//! filter matches so rarely that the scan must walk far to fill the page. `totalResults` comes
//! from the maintained counters without a filter, from the candidates when an index serves the
//! filter, and is left out when only a scan could count it (RFC 9865 §2 allows that): counting
//! would read the whole tenant on every page, which is what cursor paging exists to avoid.
//!
//! Because the order is by id, and ids never change, a resource that exists unchanged during a
//! whole walk is on exactly one page: creates and deletes around it move no key.

use std::ops::Bound;

use serde_json::{json, Map, Value};

use super::list::{indexed_candidates, show, Matcher};
use crate::scim::cursor::{Direction, Position};
use crate::scim::list::ListQuery;
use crate::scim::schema::{self, ResourceKind};
use crate::store::{Store, StoreError};

/// One cursor page, before its cursors are sealed.
#[derive(Debug)]
pub struct CursorPage {
    /// The resources, rendered and projected, in list order.
    pub resources: Vec<Value>,
    /// Where a `nextCursor` continues from, when there are more matches after this page.
    pub next: Option<Position>,
    /// Where a `previousCursor` walks back from, when there are matches before this page.
    pub previous: Option<Position>,
    /// Matches in all, when they can be counted without a scan.
    pub total: Option<usize>,
}

/// The page of `q` (its filter and `count`) starting from `from` (none: the first page).
pub fn cursor_page(
    store: &Store,
    tenant: &str,
    kinds: &[ResourceKind],
    q: &ListQuery,
    from: Option<(Direction, Position)>,
    base: &str,
    max_members: usize,
) -> Result<CursorPage, StoreError> {
    let count = q.count.max(1);
    let direction = from.as_ref().map_or(Direction::After, |(d, _)| *d);
    let reverse = direction == Direction::Before;
    let start = from.as_ref().map(|(_, p)| p.clone());
    // Every kind in walking order, each with the id to start after (only the cursor's kind).
    let mut order: Vec<(u8, ResourceKind)> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| (u8::try_from(i).unwrap_or(u8::MAX), *k))
        .collect();
    if reverse {
        order.reverse();
    }
    let mut found: Vec<(Position, ResourceKind, Value)> = Vec::new();
    let mut total = Some(0usize);
    for (index, kind) in order {
        let from_id = match &start {
            Some(p) if p.kind == index => Some(p.id.as_str()),
            // Kinds the cursor has walked past hold nothing for this page...
            Some(p) if (!reverse && index < p.kind) || (reverse && index > p.kind) => {
                total = kind_total(store, tenant, kind, q, total)?;
                continue;
            }
            // ...and the kinds ahead are read from their first (or last) row.
            _ => None,
        };
        let matcher = Matcher::new(store, tenant, kind, q.filter.as_ref())?;
        let candidates = q
            .filter
            .as_ref()
            .map(|f| indexed_candidates(store, tenant, kind, f))
            .transpose()?
            .flatten();
        let full = |found: &Vec<_>| found.len() > count;
        match candidates {
            Some(ids) => {
                // An index names the candidates: few, so all are checked (which counts them).
                let mut matched = 0usize;
                for id in &ids {
                    if let Some(s) = store.get(tenant, kind, id)? {
                        if matcher.matches(&s.view)? {
                            matched += 1;
                        }
                    }
                }
                if let Some(t) = total.as_mut() {
                    *t += matched;
                }
                let in_range: Box<dyn Iterator<Item = &String>> = match (reverse, from_id) {
                    (false, Some(id)) => {
                        Box::new(ids.range::<str, _>((Bound::Excluded(id), Bound::Unbounded)))
                    }
                    (false, None) => Box::new(ids.iter()),
                    (true, Some(id)) => Box::new(
                        ids.range::<str, _>((Bound::Unbounded, Bound::Excluded(id)))
                            .rev(),
                    ),
                    (true, None) => Box::new(ids.iter().rev()),
                };
                for id in in_range {
                    if full(&found) {
                        break;
                    }
                    if let Some(s) = store.get(tenant, kind, id)? {
                        if matcher.matches(&s.view)? {
                            found.push((position(index, id), kind, s.view));
                        }
                    }
                }
            }
            None => {
                if q.filter.is_some() {
                    total = None;
                } else if let Some(t) = total.as_mut() {
                    *t += store.count(tenant, kind)?;
                }
                for row in store.scan_from(tenant, kind, from_id, reverse) {
                    if full(&found) {
                        break;
                    }
                    let (id, view) = row?;
                    if matcher.matches(&view)? {
                        found.push((position(index, &id), kind, view));
                    }
                }
            }
        }
    }
    // One match beyond the page says there is more in the walking direction.
    let more = found.len() > count;
    found.truncate(count);
    if reverse {
        found.reverse();
    }
    let first = found.first().map(|(p, _, _)| p.clone());
    let last = found.last().map(|(p, _, _)| p.clone());
    let (next, previous) = match direction {
        // Forward: a previous page exists once the walk has left the first page.
        Direction::After => (last.filter(|_| more), first.filter(|_| start.is_some())),
        // Backward: the page came from a later one, so a next page exists.
        Direction::Before => (last, first.filter(|_| more)),
    };
    let mut resources = Vec::with_capacity(found.len());
    for (_, kind, view) in found {
        resources.push(show(store, tenant, kind, view, base, q, max_members)?);
    }
    Ok(CursorPage {
        resources,
        next,
        previous,
        total,
    })
}

fn position(kind: u8, id: &str) -> Position {
    Position {
        kind,
        id: id.to_string(),
    }
}

/// The running total after adding a kind the page itself does not read: counted when the
/// counters or an index can, `None` (unknown) when only a scan could.
fn kind_total(
    store: &Store,
    tenant: &str,
    kind: ResourceKind,
    q: &ListQuery,
    total: Option<usize>,
) -> Result<Option<usize>, StoreError> {
    let Some(t) = total else {
        return Ok(None);
    };
    let Some(f) = &q.filter else {
        return Ok(Some(t + store.count(tenant, kind)?));
    };
    let Some(ids) = indexed_candidates(store, tenant, kind, f)? else {
        return Ok(None);
    };
    let matcher = Matcher::new(store, tenant, kind, Some(f))?;
    let mut n = 0;
    for id in &ids {
        if let Some(s) = store.get(tenant, kind, id)? {
            if matcher.matches(&s.view)? {
                n += 1;
            }
        }
    }
    Ok(Some(t + n))
}

/// The ListResponse of a cursor page, with its sealed cursors. No `startIndex`: it means
/// nothing for a cursor page.
pub fn cursor_response(
    total: Option<usize>,
    resources: Vec<Value>,
    next: Option<String>,
    previous: Option<String>,
) -> Value {
    let mut body = Map::new();
    body.insert("schemas".into(), json!([schema::LIST_RESPONSE_SCHEMA]));
    if let Some(t) = total {
        body.insert("totalResults".into(), json!(t));
    }
    body.insert("itemsPerPage".into(), json!(resources.len()));
    if let Some(c) = next {
        body.insert("nextCursor".into(), json!(c));
    }
    if let Some(c) = previous {
        body.insert("previousCursor".into(), json!(c));
    }
    body.insert("Resources".into(), Value::Array(resources));
    Value::Object(body)
}
