//! Listing (RFC 7644 §3.4.2): query parameters, sorting, paging and attribute projection. Pure.

use serde_json::Value;

use super::error::ScimResult;
use super::filter::{AttrPath, Filter, FilterLimits};
use super::schema::ResourceKind;

/// A parsed list/search request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    pub sort_by: Option<AttrPath>,
    /// True for `sortOrder=descending`.
    pub descending: bool,
    /// 1-based; values below 1 are treated as 1 (RFC 7644 §3.4.2.4).
    pub start_index: usize,
    /// Page size: the client's `count` capped at the configured maximum; `0` is allowed.
    pub count: usize,
    pub attributes: Vec<AttrPath>,
    pub excluded_attributes: Vec<AttrPath>,
}

/// Limits that apply to listing.
#[derive(Debug, Clone, Copy)]
pub struct ListLimits {
    pub filter: FilterLimits,
    /// `count` when the client sends none.
    pub default_count: usize,
    /// The largest `count` honoured (larger requests are capped, as RFC 7644 allows).
    pub max_count: usize,
}

/// Parse the query string parameters of a GET list request (names are case-insensitive).
pub fn parse_query(params: &[(String, String)], limits: &ListLimits) -> ScimResult<ListQuery> {
    let _ = (params, limits);
    todo!()
}

/// Parse the body of a `POST /.search` request.
pub fn parse_search(body: &Value, limits: &ListLimits) -> ScimResult<ListQuery> {
    let _ = (body, limits);
    todo!()
}

/// Sort resources in place by `sort_by` (case-exactness and type from the schema; missing values
/// last in ascending order), stable.
pub fn sort(resources: &mut [Value], kind: ResourceKind, sort_by: &AttrPath, descending: bool) {
    let _ = (resources, kind, sort_by, descending);
    todo!()
}

/// Apply `attributes` / `excludedAttributes` and the schema's `returned` rules to one resource:
/// `always` attributes (`id`, `schemas`...) are always kept, `never` ones always removed,
/// `request` ones only when named in `attributes`.
pub fn project(resource: &Value, kind: ResourceKind, attributes: &[AttrPath], excluded: &[AttrPath]) -> Value {
    let _ = (resource, kind, attributes, excluded);
    todo!()
}

/// A ListResponse body.
pub fn list_response(total_results: usize, start_index: usize, resources: Vec<Value>) -> Value {
    serde_json::json!({
        "schemas": [super::schema::LIST_RESPONSE_SCHEMA],
        "totalResults": total_results,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}
