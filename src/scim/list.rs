//! Listing (RFC 7644 §3.4.2): query parameters, sorting, paging and attribute projection. Pure.
//!
//! GET query parameters and `POST /.search` bodies carry the same fields, so both parsers feed
//! the same small per-field functions; they differ only in how values arrive (text vs JSON) and
//! so in which error a wrong type earns (`400` without `scimType` for query text, `invalidValue`
//! for a body). Sorting and projection take type, case-exactness and `returned` from the schema,
//! never from the JSON they are handed.

use std::cmp::Ordering;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::error::{ScimError, ScimResult};
use super::filter::{self, get_ci, AttrPath, Filter, FilterLimits};
use super::schema::{self, AttrDef, AttrType, Resolved, ResourceKind, Returned, Schema};

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

/// The fields a list request can set, by their lower-cased names (parameter and body member
/// names are case-insensitive, RFC 7643 §2.1).
const FIELDS: [&str; 7] = [
    "filter",
    "sortby",
    "sortorder",
    "startindex",
    "count",
    "attributes",
    "excludedattributes",
];

impl ListQuery {
    /// The query a request without parameters means.
    fn defaults(limits: &ListLimits) -> Self {
        ListQuery {
            filter: None,
            sort_by: None,
            descending: false,
            start_index: 1,
            count: limits.default_count.min(limits.max_count),
            attributes: Vec::new(),
            excluded_attributes: Vec::new(),
        }
    }
}

/// Parse the query string parameters of a GET list request (names are case-insensitive).
///
/// Unknown parameters are ignored; a known one given twice is a `400`, since silently picking
/// one of two filters could return data the client did not ask for.
pub fn parse_query(params: &[(String, String)], limits: &ListLimits) -> ScimResult<ListQuery> {
    let mut query = ListQuery::defaults(limits);
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in params {
        let Some(field) = FIELDS
            .iter()
            .copied()
            .find(|f| f.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        if seen.contains(&field) {
            return Err(ScimError::BadRequest(format!(
                "query parameter '{name}' is given more than once"
            )));
        }
        seen.push(field);
        match field {
            "filter" => query.filter = parse_filter(value, &limits.filter)?,
            "sortby" => query.sort_by = parse_sort_by(value)?,
            "sortorder" => {
                query.descending = parse_sort_order(value).map_err(ScimError::BadRequest)?
            }
            "startindex" => query.start_index = start_index(parse_int_text(name, value)?),
            "count" => query.count = page_size(parse_int_text(name, value)?, limits),
            "attributes" => query.attributes = parse_attr_list(value.split(','))?,
            _ => query.excluded_attributes = parse_attr_list(value.split(','))?,
        }
    }
    Ok(query)
}

/// Parse the body of a `POST /.search` request.
///
/// Member names are case-insensitive and unknown members are ignored. `schemas`, when present,
/// must name the SearchRequest URN. `attributes` and `excludedAttributes` are arrays of strings;
/// a single comma-separated string is accepted too, as the GET form is. `null` means absent.
pub fn parse_search(body: &Value, limits: &ListLimits) -> ScimResult<ListQuery> {
    let Value::Object(members) = body else {
        return Err(ScimError::InvalidSyntax(
            "a SearchRequest body must be a JSON object".to_string(),
        ));
    };
    check_search_schemas(members)?;
    let mut query = ListQuery::defaults(limits);
    for (name, value) in members {
        let Some(field) = FIELDS
            .iter()
            .copied()
            .find(|f| f.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        match field {
            "filter" => query.filter = parse_filter(json_str(name, value)?, &limits.filter)?,
            "sortby" => query.sort_by = parse_sort_by(json_str(name, value)?)?,
            "sortorder" => {
                query.descending =
                    parse_sort_order(json_str(name, value)?).map_err(ScimError::InvalidValue)?;
            }
            "startindex" => query.start_index = start_index(json_int(name, value)?),
            "count" => query.count = page_size(json_int(name, value)?, limits),
            "attributes" => query.attributes = json_attr_list(name, value)?,
            _ => query.excluded_attributes = json_attr_list(name, value)?,
        }
    }
    Ok(query)
}

/// `schemas`, if the client sent it, must be an array of strings naming the SearchRequest URN.
fn check_search_schemas(members: &Map<String, Value>) -> ScimResult<()> {
    let Some((_, schemas)) = members
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("schemas"))
    else {
        return Ok(());
    };
    let names_search = schemas.as_array().is_some_and(|items| {
        items.iter().any(|s| {
            s.as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(schema::SEARCH_REQUEST_SCHEMA))
        })
    });
    if names_search {
        Ok(())
    } else {
        Err(ScimError::InvalidValue(format!(
            "'schemas' of a SearchRequest must be an array containing \"{}\"",
            schema::SEARCH_REQUEST_SCHEMA
        )))
    }
}

/// A filter parameter; blank means no filter (some clients send `filter=`).
fn parse_filter(text: &str, limits: &FilterLimits) -> ScimResult<Option<Filter>> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        filter::parse(text, limits).map(Some)
    }
}

/// A `sortBy` parameter; blank means unsorted.
fn parse_sort_by(text: &str) -> ScimResult<Option<AttrPath>> {
    let text = text.trim();
    if text.is_empty() {
        Ok(None)
    } else {
        filter::parse_attr_path(text).map(Some)
    }
}

/// `ascending` / `descending` in any case: true for descending. The error is the detail text,
/// wrapped by the caller in the error type its transport calls for.
fn parse_sort_order(text: &str) -> Result<bool, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("ascending") || text.is_empty() {
        Ok(false)
    } else if text.eq_ignore_ascii_case("descending") {
        Ok(true)
    } else {
        Err(format!(
            "sortOrder must be \"ascending\" or \"descending\", got \"{text}\""
        ))
    }
}

/// A decimal integer from query text, saturating instead of failing on huge values (a huge
/// `startIndex` is merely past the end, not malformed).
fn parse_int_text(name: &str, text: &str) -> ScimResult<i64> {
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScimError::BadRequest(format!(
            "query parameter '{name}' must be an integer, got \"{text}\""
        )));
    }
    let magnitude = digits.bytes().fold(0i64, |n, b| {
        n.saturating_mul(10).saturating_add(i64::from(b - b'0'))
    });
    Ok(if negative { -magnitude } else { magnitude })
}

/// A JSON integer (an integral float such as `10.0` is accepted), saturating.
fn json_int(name: &str, value: &Value) -> ScimResult<i64> {
    let wrong = || ScimError::InvalidValue(format!("'{name}' must be an integer, got {value}"));
    let Value::Number(n) = value else {
        return Err(wrong());
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    if n.as_u64().is_some() {
        return Ok(i64::MAX);
    }
    match n.as_f64() {
        // `as` saturates, which is what we want for out-of-range integral floats.
        Some(f) if f.fract() == 0.0 => Ok(f as i64),
        _ => Err(wrong()),
    }
}

fn json_str<'a>(name: &str, value: &'a Value) -> ScimResult<&'a str> {
    value
        .as_str()
        .ok_or_else(|| ScimError::InvalidValue(format!("'{name}' must be a string, got {value}")))
}

fn json_attr_list(name: &str, value: &Value) -> ScimResult<Vec<AttrPath>> {
    match value {
        Value::String(s) => parse_attr_list(s.split(',')),
        Value::Array(items) => {
            let texts = items
                .iter()
                .map(|item| json_str(name, item))
                .collect::<ScimResult<Vec<&str>>>()?;
            parse_attr_list(texts.into_iter().flat_map(|t| t.split(',')))
        }
        other => Err(ScimError::InvalidValue(format!(
            "'{name}' must be an array of strings, got {other}"
        ))),
    }
}

/// Attribute paths from comma-separated pieces; blanks (as in a trailing comma) are skipped.
fn parse_attr_list<'a>(pieces: impl Iterator<Item = &'a str>) -> ScimResult<Vec<AttrPath>> {
    pieces
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(filter::parse_attr_path)
        .collect()
}

/// RFC 7644 §3.4.2.4: a `startIndex` below 1 is interpreted as 1.
fn start_index(requested: i64) -> usize {
    usize::try_from(requested.max(1)).unwrap_or(usize::MAX)
}

/// RFC 7644 §3.4.2.4: a negative `count` is 0; more than the maximum is capped.
fn page_size(requested: i64, limits: &ListLimits) -> usize {
    usize::try_from(requested.max(0))
        .unwrap_or(usize::MAX)
        .min(limits.max_count)
}

// ---------------------------------------------------------------------------------------------
// Sorting
// ---------------------------------------------------------------------------------------------

/// A comparable sort value. Values of different kinds (possible only when stored data disagrees
/// with the schema) order by kind, so the order stays total.
#[derive(Debug, PartialEq)]
enum SortKey {
    Bool(bool),
    Num(serde_json::Number),
    Time(OffsetDateTime),
    Str(String),
}

impl SortKey {
    fn rank(&self) -> u8 {
        match self {
            SortKey::Bool(_) => 0,
            SortKey::Num(_) => 1,
            SortKey::Time(_) => 2,
            SortKey::Str(_) => 3,
        }
    }

    fn cmp(&self, other: &SortKey) -> Ordering {
        match (self, other) {
            (SortKey::Bool(a), SortKey::Bool(b)) => a.cmp(b),
            (SortKey::Num(a), SortKey::Num(b)) => {
                filter::compare_numbers(a, b).unwrap_or(Ordering::Equal)
            }
            (SortKey::Time(a), SortKey::Time(b)) => a.cmp(b),
            (SortKey::Str(a), SortKey::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Sort resources in place by `sort_by` (case-exactness and type from the schema; missing values
/// last in ascending order), stable.
///
/// Resources without a value sort last in *both* orders: someone asking for the newest or
/// largest first wants values, not blanks, at the top of the first page. A multi-valued
/// attribute sorts by its `primary` value, else its first (RFC 7644 §3.4.2.3); a complex one named
/// without a sub-attribute by its `value`. An attribute the schema does not know leaves the order
/// unchanged.
pub fn sort(resources: &mut [Value], kind: ResourceKind, sort_by: &AttrPath, descending: bool) {
    let Some(resolved) = schema::resolve(
        kind,
        sort_by.uri.as_deref(),
        &sort_by.name,
        sort_by.sub.as_deref(),
    ) else {
        return;
    };
    let mut keyed: Vec<(Option<SortKey>, Value)> = resources
        .iter_mut()
        .map(|r| (sort_key(r, &resolved), r.take()))
        .collect();
    keyed.sort_by(|(a, _), (b, _)| match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) if descending => b.cmp(a),
        (Some(a), Some(b)) => a.cmp(b),
    });
    for (slot, (_, value)) in resources.iter_mut().zip(keyed) {
        *slot = value;
    }
}

/// The sort key of one resource, or `None` when it has no (usable) value.
fn sort_key(resource: &Value, resolved: &Resolved) -> Option<SortKey> {
    let container = if resolved.extension {
        get_ci(resource, resolved.schema.id)?
    } else {
        resource
    };
    let top = get_ci(container, resolved.attr.name)?;
    let chosen = match top {
        Value::Array(items) => primary_or_first(items)?,
        single => single,
    };
    let (value, def) = match resolved.sub {
        Some(sub) => (get_ci(chosen, sub.name)?, sub),
        None if resolved.attr.ty == AttrType::Complex => {
            let value_def = resolved
                .attr
                .sub_attributes
                .iter()
                .find(|s| s.name == "value")?;
            (get_ci(chosen, "value")?, value_def)
        }
        None => (chosen, resolved.attr),
    };
    key_of(value, def)
}

fn primary_or_first(items: &[Value]) -> Option<&Value> {
    items
        .iter()
        .find(|item| get_ci(item, "primary").and_then(Value::as_bool) == Some(true))
        .or(items.first())
}

fn key_of(value: &Value, def: &AttrDef) -> Option<SortKey> {
    match value {
        Value::String(s) => {
            if def.ty == AttrType::DateTime {
                if let Some(instant) = filter::parse_instant(s) {
                    return Some(SortKey::Time(instant));
                }
            }
            Some(SortKey::Str(if def.case_exact {
                s.clone()
            } else {
                s.to_lowercase()
            }))
        }
        Value::Number(n) => Some(SortKey::Num(n.clone())),
        Value::Bool(b) => Some(SortKey::Bool(*b)),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Projection
// ---------------------------------------------------------------------------------------------

/// What one `attributes` / `excludedAttributes` entry names, resolved against the schema so that
/// `employeeNumber` and `urn:...:enterprise:2.0:User:employeeNumber` are the same thing.
#[derive(Debug, PartialEq)]
enum Selector {
    /// A whole schema, named by its URN: every attribute it defines (for an extension, the whole
    /// extension object).
    Schema(&'static str),
    /// A top-level attribute (schema id, canonical name), or one of its sub-attributes.
    Attr {
        schema: &'static str,
        attr: &'static str,
        sub: Option<&'static str>,
    },
}

/// Both selector lists of a projection.
struct Selection {
    /// True when the client sent `attributes`: only named (and `always`) attributes remain.
    restrict: bool,
    include: Vec<Selector>,
    exclude: Vec<Selector>,
}

/// Apply `attributes` / `excludedAttributes` and the schema's `returned` rules to one resource:
/// `always` attributes (`id`, `schemas`...) are always kept, `never` ones always removed,
/// `request` ones only when named in `attributes`.
///
/// `default` attributes are dropped when `attributes` is given and does not name them; naming a
/// sub-attribute (`name.givenName`) keeps only that sub-attribute. `excludedAttributes` removes
/// attributes or sub-attributes unless they are `always`. Naming an extension URN selects or
/// excludes the whole extension object, and an extension object left empty is removed. Names the
/// schema does not know select nothing; `schemas` is returned as is.
pub fn project(
    resource: &Value,
    kind: ResourceKind,
    attributes: &[AttrPath],
    excluded: &[AttrPath],
) -> Value {
    let Value::Object(members) = resource else {
        return resource.clone();
    };
    let selection = Selection {
        restrict: !attributes.is_empty(),
        include: attributes
            .iter()
            .filter_map(|p| selector(kind, p))
            .collect(),
        exclude: excluded.iter().filter_map(|p| selector(kind, p)).collect(),
    };
    let mut out = Map::new();
    for (key, value) in members {
        if key.eq_ignore_ascii_case("schemas") {
            out.insert(key.clone(), value.clone());
            continue;
        }
        if let Some(ext) = extension_schema(kind, key) {
            if let Value::Object(inner) = value {
                let projected = project_members(inner, &selection, |name| {
                    schema::resolve(kind, Some(ext.id), name, None)
                        .filter(|r| r.schema.id == ext.id)
                });
                if !projected.is_empty() {
                    out.insert(key.clone(), Value::Object(projected));
                }
            } else if !selection.restrict {
                out.insert(key.clone(), value.clone());
            }
            continue;
        }
        let resolved = schema::resolve(kind, None, key, None).filter(|r| !r.extension);
        if let Some(v) = project_member(value, resolved.as_ref(), &selection) {
            out.insert(key.clone(), v);
        }
    }
    Value::Object(out)
}

/// The extension schema whose URN is `key`, if `kind` allows one.
fn extension_schema(kind: ResourceKind, key: &str) -> Option<&'static Schema> {
    kind.extensions()
        .iter()
        .map(|(s, _)| *s)
        .find(|s| s.id.eq_ignore_ascii_case(key))
}

fn selector(kind: ResourceKind, path: &AttrPath) -> Option<Selector> {
    if let (Some(uri), None) = (&path.uri, &path.sub) {
        let full = format!("{uri}:{}", path.name);
        let schemas =
            std::iter::once(kind.core_schema()).chain(kind.extensions().iter().map(|(s, _)| *s));
        if let Some(s) = schemas
            .into_iter()
            .find(|s| s.id.eq_ignore_ascii_case(&full))
        {
            return Some(Selector::Schema(s.id));
        }
    }
    let r = schema::resolve(kind, path.uri.as_deref(), &path.name, path.sub.as_deref())?;
    Some(Selector::Attr {
        schema: r.schema.id,
        attr: r.attr.name,
        sub: r.sub.map(|s| s.name),
    })
}

/// Project the members of one JSON object (the resource root or an extension object).
fn project_members(
    members: &Map<String, Value>,
    selection: &Selection,
    resolve: impl Fn(&str) -> Option<Resolved>,
) -> Map<String, Value> {
    members
        .iter()
        .filter_map(|(key, value)| {
            project_member(value, resolve(key).as_ref(), selection).map(|v| (key.clone(), v))
        })
        .collect()
}

/// Project one top-level attribute; `None` removes it. Unknown attributes survive only when the
/// client did not restrict the attribute set.
fn project_member(
    value: &Value,
    resolved: Option<&Resolved>,
    selection: &Selection,
) -> Option<Value> {
    let Some(r) = resolved else {
        return (!selection.restrict).then(|| value.clone());
    };
    let def = r.attr;
    match def.returned {
        Returned::Always => return Some(value.clone()),
        Returned::Never => return None,
        Returned::Default | Returned::Request => {}
    }
    let names_whole = |list: &[Selector]| {
        list.iter().any(|s| match s {
            Selector::Schema(id) => *id == r.schema.id,
            Selector::Attr {
                schema,
                attr,
                sub: None,
            } => *schema == r.schema.id && *attr == def.name,
            Selector::Attr { .. } => false,
        })
    };
    let named_subs = |list: &[Selector]| -> Vec<&'static str> {
        list.iter()
            .filter_map(|s| match s {
                Selector::Attr {
                    schema,
                    attr,
                    sub: Some(sub),
                } if *schema == r.schema.id && *attr == def.name => Some(*sub),
                _ => None,
            })
            .collect()
    };
    if names_whole(&selection.exclude) {
        return None;
    }
    let included = named_subs(&selection.include);
    let excluded = named_subs(&selection.exclude);
    let whole = if selection.restrict {
        names_whole(&selection.include)
    } else {
        def.returned == Returned::Default
    };
    if !whole && included.is_empty() {
        return None;
    }
    if def.ty != AttrType::Complex {
        return Some(value.clone());
    }
    let keep = |sub: Option<&AttrDef>| match sub {
        None => whole,
        Some(s) => match s.returned {
            Returned::Always => true,
            Returned::Never => false,
            Returned::Default => {
                (whole || included.contains(&s.name)) && !excluded.contains(&s.name)
            }
            Returned::Request => included.contains(&s.name) && !excluded.contains(&s.name),
        },
    };
    filter_complex(value, def, &keep)
}

/// Keep the sub-attributes of a complex value (or of each element of a multi-valued one) that
/// `keep` accepts. Objects emptied by the projection disappear, and so does the attribute if
/// nothing remains; values that were empty to begin with are returned as they were.
fn filter_complex(
    value: &Value,
    def: &AttrDef,
    keep: &dyn Fn(Option<&AttrDef>) -> bool,
) -> Option<Value> {
    let filter_object = |m: &Map<String, Value>| -> Option<Value> {
        let kept: Map<String, Value> = m
            .iter()
            .filter(|(k, _)| {
                keep(
                    def.sub_attributes
                        .iter()
                        .find(|s| s.name.eq_ignore_ascii_case(k)),
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (m.is_empty() || !kept.is_empty()).then_some(Value::Object(kept))
    };
    match value {
        Value::Object(m) => filter_object(m),
        Value::Array(items) => {
            let kept: Vec<Value> = items
                .iter()
                .filter_map(|item| match item {
                    Value::Object(m) => filter_object(m),
                    other => Some(other.clone()),
                })
                .collect();
            (items.is_empty() || !kept.is_empty()).then_some(Value::Array(kept))
        }
        other => Some(other.clone()),
    }
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
