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
use super::schema::{self, AttrDef, AttrType, Resolved, ResourceKind, Returned};

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
    /// RFC 9865 cursor paging: `Some` when the request has a `cursor` (empty for the first page).
    /// Cursor pages are in (resource type, id) order: `sortBy` and `startIndex` are refused
    /// with it, and `count` must be positive.
    pub cursor: Option<String>,
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
const FIELDS: [&str; 8] = [
    "cursor",
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
            cursor: None,
        }
    }

    /// RFC 9865's rules for a cursor request, once every field is read: no `startIndex` (one
    /// paging method per request), no `sortBy` (cursor pages follow the stable id order, which
    /// a sort value that changes between pages would not give), a positive `count`. `wrong`
    /// wraps the detail in the error type the transport calls for.
    fn check_cursor(
        self,
        start_index_given: bool,
        count_given: Option<i64>,
        wrong: fn(String) -> ScimError,
    ) -> ScimResult<Self> {
        if self.cursor.is_none() {
            return Ok(self);
        }
        if start_index_given {
            return Err(wrong(
                "cursor and startIndex cannot be combined: page either by cursor or by index"
                    .into(),
            ));
        }
        if self.sort_by.is_some() {
            return Err(wrong(
                "sortBy cannot be combined with cursor: cursor pages follow the stable id order \
                 so that writes between pages skip or repeat nothing; sort with index paging \
                 (startIndex) instead"
                    .into(),
            ));
        }
        if let Some(n) = count_given {
            if n < 1 {
                return Err(ScimError::InvalidCount(format!(
                    "count must be a positive integer with cursor paging, got {n}"
                )));
            }
        }
        Ok(self)
    }
}

/// Parse the query string parameters of a GET list request (names are case-insensitive).
///
/// Unknown parameters are ignored; a known one given twice is a `400`, since silently picking
/// one of two filters could return data the client did not ask for.
pub fn parse_query(params: &[(String, String)], limits: &ListLimits) -> ScimResult<ListQuery> {
    let mut query = ListQuery::defaults(limits);
    let mut seen: Vec<&str> = Vec::new();
    let mut count_given = None;
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
            "count" => {
                let n = parse_int_text(name, value)?;
                count_given = Some(n);
                query.count = page_size(n, limits.max_count);
            }
            "cursor" => query.cursor = Some(value.clone()),
            "attributes" => query.attributes = parse_attr_list(value.split(','))?,
            _ => query.excluded_attributes = parse_attr_list(value.split(','))?,
        }
    }
    query.check_cursor(
        seen.contains(&"startindex"),
        count_given,
        ScimError::BadRequest,
    )
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
    let (mut start_given, mut count_given) = (false, None);
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
            "startindex" => {
                start_given = true;
                query.start_index = start_index(json_int(name, value)?);
            }
            "count" => {
                let n = json_int(name, value)?;
                count_given = Some(n);
                query.count = page_size(n, limits.max_count);
            }
            "cursor" => query.cursor = Some(json_str(name, value)?.to_string()),
            "attributes" => query.attributes = json_attr_list(name, value)?,
            _ => query.excluded_attributes = json_attr_list(name, value)?,
        }
    }
    query.check_cursor(start_given, count_given, ScimError::InvalidValue)
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
pub fn parse_int_text(name: &str, text: &str) -> ScimResult<i64> {
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
pub fn start_index(requested: i64) -> usize {
    usize::try_from(requested.max(1)).unwrap_or(usize::MAX)
}

/// RFC 7644 §3.4.2.4: a negative `count` is 0; more than the maximum is capped.
pub fn page_size(requested: i64, max_count: usize) -> usize {
    usize::try_from(requested.max(0))
        .unwrap_or(usize::MAX)
        .min(max_count)
}

// ---------------------------------------------------------------------------------------------
// Sorting
// ---------------------------------------------------------------------------------------------

/// A comparable sort value. Values of different kinds (possible only when stored data disagrees
/// with the schema) order by kind, so the order stays total.
#[derive(Debug, Clone, PartialEq)]
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

/// A resource's place in a sorted listing (smaller comes first): the order [`sort`] gives,
/// with ties kept in arrival order (`seq`), so a bounded [`TopK`] agrees with a full sort.
#[derive(Debug, Clone)]
pub struct Rank {
    key: Option<SortKey>,
    descending: bool,
    seq: u64,
}

impl PartialEq for Rank {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Rank {}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_key = match (&self.key, &other.key) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) if self.descending => b.cmp(a),
            (Some(a), Some(b)) => a.cmp(b),
        };
        by_key.then(self.seq.cmp(&other.seq))
    }
}

/// Ranks resources by a `sortBy` attribute (see [`sort`] for the rules).
pub struct Sorter {
    resolved: Option<Resolved>,
    descending: bool,
}

impl Sorter {
    pub fn new(kind: ResourceKind, sort_by: &AttrPath, descending: bool) -> Sorter {
        Sorter {
            resolved: schema::resolve(
                kind,
                sort_by.uri.as_deref(),
                &sort_by.name,
                sort_by.sub.as_deref(),
            ),
            descending,
        }
    }

    /// The rank of the `seq`-th resource seen.
    pub fn rank(&self, resource: &Value, seq: u64) -> Rank {
        Rank {
            key: self.resolved.as_ref().and_then(|r| sort_key(resource, r)),
            descending: self.descending,
            seq,
        }
    }
}

/// The `k` first resources of a sorted listing, kept while scanning without holding the rest:
/// what a sorted page needs (`k` = startIndex - 1 + count), whatever the tenant's size.
pub struct TopK {
    k: usize,
    heap: std::collections::BinaryHeap<Ranked>,
}

struct Ranked(Rank, Value);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: std::collections::BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    /// Offer one resource.
    pub fn push(&mut self, rank: Rank, resource: Value) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() == self.k {
            match self.heap.peek() {
                Some(worst) if rank < worst.0 => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push(Ranked(rank, resource));
    }

    /// The kept resources, first first.
    pub fn into_sorted(self) -> Vec<Value> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.1)
            .collect()
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
        if let Some(ext) = kind.extension(key) {
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

#[cfg(test)]
mod topk_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #[test]
        fn a_bounded_top_k_agrees_with_a_full_sort(
            names in prop::collection::vec(prop::option::of("[a-c]{0,2}"), 0..40),
            k in 0usize..12,
            descending in any::<bool>(),
        ) {
            let users: Vec<Value> = names
                .iter()
                .enumerate()
                .map(|(i, n)| match n {
                    Some(n) => json!({"id": i.to_string(), "userName": n}),
                    None => json!({"id": i.to_string()}),
                })
                .collect();
            let by = filter::parse_attr_path("userName").unwrap();
            let mut sorted = users.clone();
            sort(&mut sorted, ResourceKind::User, &by, descending);
            sorted.truncate(k);
            let sorter = Sorter::new(ResourceKind::User, &by, descending);
            let mut top = TopK::new(k);
            for (i, u) in users.into_iter().enumerate() {
                top.push(sorter.rank(&u, i as u64), u);
            }
            prop_assert_eq!(top.into_sorted(), sorted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{
        Mutability, Schema, Uniqueness, ENTERPRISE_USER_SCHEMA, USER_SCHEMA,
    };
    use serde_json::json;

    const ENTERPRISE: &str = ENTERPRISE_USER_SCHEMA;

    fn limits() -> ListLimits {
        ListLimits {
            filter: FilterLimits::default(),
            default_count: 100,
            max_count: 500,
        }
    }

    fn query(params: &[(&str, &str)]) -> ScimResult<ListQuery> {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_query(&params, &limits())
    }

    fn q(params: &[(&str, &str)]) -> ListQuery {
        query(params).unwrap()
    }

    fn path(text: &str) -> AttrPath {
        filter::parse_attr_path(text).unwrap()
    }

    fn paths(texts: &[&str]) -> Vec<AttrPath> {
        texts.iter().map(|t| path(t)).collect()
    }

    // --- query parameters ----------------------------------------------------------------------

    #[test]
    fn no_parameters_mean_the_defaults() {
        let query = q(&[]);
        assert_eq!(query, ListQuery::defaults(&limits()));
        assert_eq!(
            (query.start_index, query.count, query.descending),
            (1, 100, false)
        );
        let small = ListLimits {
            default_count: 1000,
            max_count: 50,
            ..limits()
        };
        assert_eq!(
            parse_query(&[], &small).unwrap().count,
            50,
            "the default is capped too"
        );
    }

    #[test]
    fn parameter_names_are_case_insensitive() {
        let query = q(&[
            ("FILTER", r#"userName eq "bjensen""#),
            ("SortBy", "name.familyName"),
            ("sortorder", "DESCENDING"),
            ("StartIndex", "5"),
            ("COUNT", "10"),
            ("Attributes", "userName"),
            ("excludedattributes", "emails"),
        ]);
        assert!(query.filter.is_some());
        assert_eq!(query.sort_by, Some(path("name.familyName")));
        assert!(query.descending);
        assert_eq!((query.start_index, query.count), (5, 10));
        assert_eq!(query.attributes, paths(&["userName"]));
        assert_eq!(query.excluded_attributes, paths(&["emails"]));
    }

    #[test]
    fn a_cursor_parameter_asks_for_cursor_paging_and_rules_out_index_and_sort() {
        assert_eq!(q(&[("cursor", "")]).cursor.as_deref(), Some(""));
        assert_eq!(
            q(&[("Cursor", "abc"), ("count", "5")]).cursor.as_deref(),
            Some("abc")
        );
        assert_eq!(q(&[]).cursor, None);
        let err = query(&[("cursor", ""), ("startIndex", "1")]).unwrap_err();
        assert!(matches!(err, ScimError::BadRequest(_)), "{err}");
        let err = query(&[("cursor", ""), ("sortBy", "userName")]).unwrap_err();
        assert!(matches!(err, ScimError::BadRequest(_)), "{err}");
        for n in ["0", "-3"] {
            let err = query(&[("cursor", ""), ("count", n)]).unwrap_err();
            assert_eq!(err.scim_type(), Some("invalidCount"));
        }
        // Index paging keeps its rules: a count of 0 is allowed, startIndex and sortBy too.
        assert_eq!(q(&[("count", "0"), ("sortBy", "userName")]).count, 0);
        let body = json!({"cursor": "", "count": 0});
        assert_eq!(
            parse_search(&body, &limits()).unwrap_err().scim_type(),
            Some("invalidCount")
        );
        let body = json!({"cursor": "", "startIndex": 2});
        assert_eq!(
            parse_search(&body, &limits()).unwrap_err().scim_type(),
            Some("invalidValue")
        );
        let body = json!({"cursor": "x", "count": 3});
        let parsed = parse_search(&body, &limits()).unwrap();
        assert_eq!((parsed.cursor.as_deref(), parsed.count), (Some("x"), 3));
    }

    #[test]
    fn unknown_parameters_are_ignored() {
        assert_eq!(
            q(&[("foo", "bar"), ("domain", "x")]),
            ListQuery::defaults(&limits())
        );
    }

    #[test]
    fn a_repeated_parameter_is_a_bad_request() {
        let err = query(&[("filter", "a pr"), ("Filter", "b pr")]).unwrap_err();
        assert!(
            matches!(&err, ScimError::BadRequest(d) if d.contains("'Filter'")),
            "{err}"
        );
    }

    #[test]
    fn start_index_below_one_is_one() {
        assert_eq!(q(&[("startIndex", "0")]).start_index, 1);
        assert_eq!(q(&[("startIndex", "-7")]).start_index, 1);
        assert_eq!(q(&[("startIndex", " 3 ")]).start_index, 3);
        assert_eq!(
            q(&[("startIndex", "99999999999999999999999")]).start_index as u64,
            i64::MAX as u64
        );
    }

    #[test]
    fn non_numeric_start_index_or_count_is_a_bad_request_naming_it() {
        for (name, value) in [
            ("startIndex", "abc"),
            ("count", "1.5"),
            ("count", ""),
            ("startIndex", "--1"),
        ] {
            let err = query(&[(name, value)]).unwrap_err();
            assert!(
                matches!(&err, ScimError::BadRequest(d) if d.contains(name) && d.contains(&format!("\"{value}\""))),
                "{err}"
            );
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn count_is_clamped_between_zero_and_the_maximum() {
        assert_eq!(q(&[("count", "-1")]).count, 0);
        assert_eq!(q(&[("count", "0")]).count, 0);
        assert_eq!(q(&[("count", "42")]).count, 42);
        assert_eq!(q(&[("count", "501")]).count, 500);
        assert_eq!(q(&[("count", "+7")]).count, 7);
    }

    #[test]
    fn sort_order_is_ascending_or_descending_in_any_case() {
        assert!(!q(&[("sortOrder", "Ascending")]).descending);
        assert!(q(&[("sortOrder", "descending")]).descending);
        let err = query(&[("sortOrder", "down")]).unwrap_err();
        assert!(
            matches!(&err, ScimError::BadRequest(d) if d.contains("\"down\"")),
            "{err}"
        );
    }

    #[test]
    fn attribute_lists_are_comma_separated_paths() {
        let query = q(&[(
            "attributes",
            format!(" userName, name.givenName ,{ENTERPRISE}:employeeNumber,").as_str(),
        )]);
        assert_eq!(
            query.attributes,
            vec![
                path("userName"),
                path("name.givenName"),
                AttrPath {
                    uri: Some(ENTERPRISE.into()),
                    name: "employeeNumber".into(),
                    sub: None
                },
            ]
        );
        let err = query_err(&[("excludedAttributes", "userName,bad path")]);
        assert!(
            matches!(&err, ScimError::InvalidPath(d) if d.contains("'bad path'")),
            "{err}"
        );
        assert!(matches!(
            query_err(&[("sortBy", "a.b.c")]),
            ScimError::InvalidPath(_)
        ));
    }

    fn query_err(params: &[(&str, &str)]) -> ScimError {
        query(params).unwrap_err()
    }

    #[test]
    fn filters_are_parsed_and_blank_ones_ignored() {
        assert_eq!(q(&[("filter", "  ")]).filter, None);
        assert_eq!(q(&[("sortBy", "")]).sort_by, None);
        assert!(matches!(
            query_err(&[("filter", "userName eq")]),
            ScimError::InvalidFilter(_)
        ));
        let tight = ListLimits {
            filter: FilterLimits {
                max_len: 5,
                max_depth: 4,
            },
            ..limits()
        };
        let err = parse_query(&[("filter".into(), "userName pr".into())], &tight).unwrap_err();
        assert!(matches!(&err, ScimError::InvalidFilter(d) if d.contains("max_len")));
    }

    // --- search bodies ---------------------------------------------------------------------------

    #[test]
    fn search_body_sets_every_field() {
        let body = json!({
            "schemas": [schema::SEARCH_REQUEST_SCHEMA],
            "attributes": ["displayName", "userName"],
            "excludedAttributes": "emails, phoneNumbers",
            "Filter": "displayName sw \"smith\"",
            "startIndex": 0,
            "count": 10.0,
            "sortBy": "meta.lastModified",
            "SORTORDER": "Descending"
        });
        let query = parse_search(&body, &limits()).unwrap();
        assert_eq!(query.attributes, paths(&["displayName", "userName"]));
        assert_eq!(
            query.excluded_attributes,
            paths(&["emails", "phoneNumbers"])
        );
        assert!(query.filter.is_some());
        assert_eq!(
            (query.start_index, query.count, query.descending),
            (1, 10, true)
        );
        assert_eq!(query.sort_by, Some(path("meta.lastModified")));
    }

    #[test]
    fn search_body_nulls_and_missing_fields_take_defaults() {
        let body = json!({ "filter": null, "count": null, "attributes": null });
        assert_eq!(
            parse_search(&body, &limits()).unwrap(),
            ListQuery::defaults(&limits())
        );
        assert_eq!(
            parse_search(&json!({"count": 9999}), &limits())
                .unwrap()
                .count,
            500
        );
        assert_eq!(
            parse_search(&json!({"count": -3}), &limits())
                .unwrap()
                .count,
            0
        );
        assert_eq!(
            parse_search(&json!({"startIndex": u64::MAX}), &limits())
                .unwrap()
                .start_index as u64,
            i64::MAX as u64
        );
    }

    #[test]
    fn search_body_with_wrong_types_is_invalid_value() {
        for body in [
            json!({"count": "10"}),
            json!({"count": 2.5}),
            json!({"startIndex": true}),
            json!({"filter": 3}),
            json!({"sortBy": ["a"]}),
            json!({"sortOrder": "sideways"}),
            json!({"attributes": 5}),
            json!({"attributes": ["userName", 1]}),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}),
            json!({"schemas": "urn:ietf:params:scim:api:messages:2.0:SearchRequest"}),
        ] {
            let err = parse_search(&body, &limits()).unwrap_err();
            assert!(matches!(err, ScimError::InvalidValue(_)), "{body}: {err}");
        }
        assert!(matches!(
            parse_search(&json!([1]), &limits()),
            Err(ScimError::InvalidSyntax(_))
        ));
        assert!(matches!(
            parse_search(&json!({"filter": "a eq"}), &limits()),
            Err(ScimError::InvalidFilter(_))
        ));
        assert!(matches!(
            parse_search(&json!({"attributes": ["a b"]}), &limits()),
            Err(ScimError::InvalidPath(_))
        ));
    }

    // --- sorting ---------------------------------------------------------------------------------

    fn ids(resources: &[Value]) -> Vec<&str> {
        resources
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect()
    }

    fn sorted(mut resources: Vec<Value>, by: &str, descending: bool) -> Vec<Value> {
        sort(&mut resources, ResourceKind::User, &path(by), descending);
        resources
    }

    #[test]
    fn case_insensitive_strings_sort_ignoring_case() {
        let users = vec![
            json!({"id": "1", "userName": "bob"}),
            json!({"id": "2", "userName": "Alice"}),
            json!({"id": "3", "userName": "carol"}),
            json!({"id": "4", "userName": "ALAN"}),
        ];
        assert_eq!(
            ids(&sorted(users.clone(), "userName", false)),
            ["4", "2", "1", "3"]
        );
        assert_eq!(ids(&sorted(users, "USERNAME", true)), ["3", "1", "2", "4"]);
    }

    #[test]
    fn case_exact_strings_sort_by_code_point() {
        let users = vec![
            json!({"id": "1", "externalId": "b"}),
            json!({"id": "2", "externalId": "B"}),
            json!({"id": "3", "externalId": "a"}),
        ];
        assert_eq!(ids(&sorted(users, "externalId", false)), ["2", "3", "1"]);
    }

    #[test]
    fn missing_values_sort_last_in_both_orders() {
        let users = vec![
            json!({"id": "1"}),
            json!({"id": "2", "displayName": "b"}),
            json!({"id": "3", "displayName": null}),
            json!({"id": "4", "displayName": "a"}),
        ];
        assert_eq!(
            ids(&sorted(users.clone(), "displayName", false)),
            ["4", "2", "1", "3"]
        );
        assert_eq!(
            ids(&sorted(users, "displayName", true)),
            ["2", "4", "1", "3"]
        );
    }

    #[test]
    fn date_times_sort_chronologically() {
        let at = |id: &str, t: &str| json!({"id": id, "meta": {"lastModified": t}});
        let users = vec![
            at("1", "2020-01-01T10:00:00+02:00"), // 08:00Z
            at("2", "2020-01-01T09:00:00Z"),
            at("3", "2020-01-01T07:30:00-00:00"),
        ];
        assert_eq!(
            ids(&sorted(users, "meta.lastModified", false)),
            ["3", "1", "2"]
        );
    }

    #[test]
    fn booleans_sort_false_first() {
        let users = vec![
            json!({"id": "1", "active": true}),
            json!({"id": "2", "active": false}),
        ];
        assert_eq!(ids(&sorted(users, "active", false)), ["2", "1"]);
    }

    #[test]
    fn multi_valued_attributes_sort_by_primary_else_first_value() {
        let users = vec![
            json!({"id": "1", "emails": [{"value": "a@x"}, {"value": "z@x", "primary": true}]}),
            json!({"id": "2", "emails": [{"value": "m@x"}, {"value": "b@x"}]}),
            json!({"id": "3", "emails": []}),
        ];
        assert_eq!(
            ids(&sorted(users.clone(), "emails", false)),
            ["2", "1", "3"]
        );
        assert_eq!(ids(&sorted(users, "emails.value", true)), ["1", "2", "3"]);
    }

    #[test]
    fn extension_attributes_sort_with_or_without_urn() {
        let users = vec![
            json!({"id": "1", ENTERPRISE: {"employeeNumber": "20"}}),
            json!({"id": "2", ENTERPRISE: {"employeeNumber": "10"}}),
            json!({"id": "3"}),
        ];
        assert_eq!(
            ids(&sorted(users.clone(), "employeeNumber", false)),
            ["2", "1", "3"]
        );
        assert_eq!(
            ids(&sorted(
                users,
                &format!("{ENTERPRISE}:employeeNumber"),
                true
            )),
            ["1", "2", "3"]
        );
    }

    #[test]
    fn sorting_is_stable_and_unknown_attributes_keep_the_order() {
        let users = vec![
            json!({"id": "1", "title": "x"}),
            json!({"id": "2", "title": "X"}),
            json!({"id": "3", "title": "a"}),
        ];
        assert_eq!(ids(&sorted(users.clone(), "title", false)), ["3", "1", "2"]);
        assert_eq!(ids(&sorted(users.clone(), "title", true)), ["1", "2", "3"]);
        assert_eq!(ids(&sorted(users, "nope", true)), ["1", "2", "3"]);
    }

    // --- projection ------------------------------------------------------------------------------

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE],
            "id": "2819c223",
            "externalId": "ext",
            "userName": "bjensen",
            "password": "t1meMa$heen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "b@x", "type": "work"}, {"type": "home"}],
            "meta": {"resourceType": "User", "lastModified": "2011-05-13T04:42:34Z"},
            "x-custom": 1,
            ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915", "displayName": "John"}}
        })
    }

    fn proj(attributes: &[&str], excluded: &[&str]) -> Value {
        project(
            &user(),
            ResourceKind::User,
            &paths(attributes),
            &paths(excluded),
        )
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn default_projection_drops_only_never_returned_attributes() {
        let mut expected = user();
        expected.as_object_mut().unwrap().remove("password");
        assert_eq!(proj(&[], &[]), expected);
    }

    #[test]
    fn attributes_keep_named_and_always_returned_attributes() {
        let out = proj(&["userName"], &[]);
        assert_eq!(
            out,
            json!({"schemas": [USER_SCHEMA, ENTERPRISE], "id": "2819c223", "userName": "bjensen"})
        );
        let out = proj(&["USERNAME", "meta", "emails"], &[]);
        assert_eq!(keys(&out), ["schemas", "id", "userName", "emails", "meta"]);
    }

    #[test]
    fn never_returned_attributes_stay_hidden_even_when_named() {
        let out = proj(&["password"], &[]);
        assert_eq!(keys(&out), ["schemas", "id"]);
    }

    #[test]
    fn naming_a_sub_attribute_keeps_only_that_sub_attribute() {
        let out = proj(&["name.givenName"], &[]);
        assert_eq!(out["name"], json!({"givenName": "Barbara"}));
        let out = proj(&["emails.value"], &[]);
        assert_eq!(
            out["emails"],
            json!([{"value": "b@x"}]),
            "elements left empty disappear"
        );
        let out = proj(&["emails.display"], &[]);
        assert!(
            out.get("emails").is_none(),
            "an attribute left empty disappears"
        );
        let out = proj(&["name", "name.givenName"], &[]);
        assert_eq!(
            out["name"],
            user()["name"],
            "naming the whole attribute wins"
        );
    }

    #[test]
    fn excluded_attributes_are_removed_unless_always_returned() {
        let out = proj(
            &[],
            &[
                "emails",
                "id",
                "name.familyName",
                "schemas",
                "meta.lastModified",
            ],
        );
        assert!(out.get("emails").is_none());
        assert_eq!(out["id"], "2819c223");
        assert_eq!(out["name"], json!({"givenName": "Barbara"}));
        assert_eq!(out["meta"], json!({"resourceType": "User"}));
        assert_eq!(out["schemas"], user()["schemas"]);
        let out = proj(&[], &["name.givenName", "name.familyName"]);
        assert!(
            out.get("name").is_none(),
            "a complex attribute emptied by exclusion disappears"
        );
    }

    #[test]
    fn extension_attributes_are_selected_with_or_without_urn() {
        let out = proj(&["employeeNumber"], &[]);
        assert_eq!(out[ENTERPRISE], json!({"employeeNumber": "701984"}));
        let out = proj(&[&format!("{ENTERPRISE}:manager.value")], &[]);
        assert_eq!(out[ENTERPRISE], json!({"manager": {"value": "26118915"}}));
        let out = proj(&[ENTERPRISE], &[]);
        assert_eq!(
            out[ENTERPRISE],
            user()[ENTERPRISE],
            "the URN selects the whole extension"
        );
        assert_eq!(keys(&out), ["schemas", "id", ENTERPRISE]);
        let out = proj(&[&ENTERPRISE.to_lowercase()], &[]);
        assert_eq!(out[ENTERPRISE], user()[ENTERPRISE]);
    }

    #[test]
    fn extension_objects_left_empty_are_removed_but_schemas_stay() {
        let out = proj(&["userName"], &[]);
        assert!(out.get(ENTERPRISE).is_none());
        let out = proj(&[], &[ENTERPRISE]);
        assert!(out.get(ENTERPRISE).is_none());
        assert_eq!(out["userName"], "bjensen");
        assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE]));
        let out = proj(&[], &["employeeNumber", &format!("{ENTERPRISE}:manager")]);
        assert!(out.get(ENTERPRISE).is_none());
        let out = proj(&[], &["manager.displayName"]);
        assert_eq!(
            out[ENTERPRISE],
            json!({"employeeNumber": "701984", "manager": {"value": "26118915"}})
        );
    }

    #[test]
    fn the_core_schema_urn_selects_every_core_attribute() {
        let out = proj(&[USER_SCHEMA], &[]);
        assert!(out.get("userName").is_some() && out.get("emails").is_some());
        assert!(out.get(ENTERPRISE).is_none() && out.get("password").is_none());
    }

    #[test]
    fn unknown_names_select_nothing_and_unknown_members_follow_the_restriction() {
        let out = proj(&["nope"], &["alsoNope"]);
        assert_eq!(keys(&out), ["schemas", "id"]);
        assert_eq!(proj(&[], &["nope"])["x-custom"], 1);
    }

    #[test]
    fn groups_project_members() {
        let group = json!({
            "schemas": [schema::GROUP_SCHEMA], "id": "g", "displayName": "Admins",
            "members": [{"value": "u1", "display": "Babs"}]
        });
        let out = project(&group, ResourceKind::Group, &paths(&["displayName"]), &[]);
        assert_eq!(keys(&out), ["schemas", "id", "displayName"]);
        let out = project(
            &group,
            ResourceKind::Group,
            &[],
            &paths(&["members.display"]),
        );
        assert_eq!(out["members"], json!([{"value": "u1"}]));
        assert_eq!(
            project(&json!("x"), ResourceKind::Group, &[], &[]),
            json!("x")
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_parameters_never_panic(
            params in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["filter", "sortBy", "sortOrder", "startIndex", "count", "attributes", "excludedAttributes", "x"]),
                    proptest::prelude::any::<String>(),
                ),
                0..4,
            )
        ) {
            let params: Vec<(String, String)> = params.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let _ = parse_query(&params, &limits());
            let body = Value::Object(params.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
            let _ = parse_search(&body, &limits());
        }

        #[test]
        fn sorting_orders_by_user_name_ignoring_case(names in proptest::collection::vec(proptest::option::of("[a-cA-C]{0,3}"), 0..8)) {
            let mut users: Vec<Value> = names.iter().map(|n| json!({ "userName": n })).collect();
            sort(&mut users, ResourceKind::User, &path("userName"), false);
            let keys: Vec<Option<String>> = users.iter().map(|u| u["userName"].as_str().map(str::to_lowercase)).collect();
            let mut expected: Vec<Option<String>> = names.iter().map(|n| n.as_ref().map(|s| s.to_lowercase())).collect();
            expected.sort_by(|a, b| match (a, b) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            });
            proptest::prop_assert_eq!(keys, expected);
        }
    }

    /// No built-in attribute is `returned: request`, so a small schema of our own covers it.
    mod returned_request {
        use super::*;

        const fn def(
            name: &'static str,
            ty: AttrType,
            returned: Returned,
            subs: &'static [AttrDef],
        ) -> AttrDef {
            AttrDef {
                name,
                ty,
                multi_valued: false,
                description: "",
                required: false,
                case_exact: false,
                mutability: Mutability::ReadWrite,
                returned,
                uniqueness: Uniqueness::None,
                canonical_values: &[],
                reference_types: &[],
                sub_attributes: subs,
            }
        }

        static SUBS: [AttrDef; 3] = [
            def("plain", AttrType::String, Returned::Default, &[]),
            def("extra", AttrType::String, Returned::Request, &[]),
            def("key", AttrType::String, Returned::Always, &[]),
        ];
        static ATTRS: [AttrDef; 2] = [
            def("secret", AttrType::String, Returned::Request, &[]),
            def("box", AttrType::Complex, Returned::Default, &SUBS),
        ];
        static TEST: Schema = Schema {
            id: "urn:test:Thing",
            name: "Thing",
            description: "",
            attributes: &ATTRS,
        };

        fn resolved(i: usize) -> Resolved {
            Resolved {
                schema: &TEST,
                extension: false,
                attr: &ATTRS[i],
                sub: None,
            }
        }

        fn named(attr: &'static str, sub: Option<&'static str>) -> Selector {
            Selector::Attr {
                schema: TEST.id,
                attr,
                sub,
            }
        }

        fn selection(include: Vec<Selector>, exclude: Vec<Selector>) -> Selection {
            Selection {
                restrict: !include.is_empty(),
                include,
                exclude,
            }
        }

        #[test]
        fn request_attributes_appear_only_when_named() {
            let v = json!("s3cret");
            assert_eq!(
                project_member(&v, Some(&resolved(0)), &selection(vec![], vec![])),
                None
            );
            let named_secret = selection(vec![named("secret", None)], vec![]);
            assert_eq!(
                project_member(&v, Some(&resolved(0)), &named_secret),
                Some(v.clone())
            );
        }

        #[test]
        fn request_sub_attributes_appear_only_when_named_and_always_ones_always() {
            let v = json!({"plain": "p", "extra": "e", "key": "k", "other": "o"});
            let by_default = project_member(&v, Some(&resolved(1)), &selection(vec![], vec![]));
            assert_eq!(
                by_default,
                Some(json!({"plain": "p", "key": "k", "other": "o"}))
            );
            let whole = project_member(
                &v,
                Some(&resolved(1)),
                &selection(vec![named("box", None)], vec![]),
            );
            assert_eq!(whole, by_default);
            let extra = selection(
                vec![named("box", None), named("box", Some("extra"))],
                vec![],
            );
            assert_eq!(
                project_member(&v, Some(&resolved(1)), &extra),
                Some(v.clone())
            );
            let only_extra = selection(vec![named("box", Some("extra"))], vec![]);
            assert_eq!(
                project_member(&v, Some(&resolved(1)), &only_extra),
                Some(json!({"extra": "e", "key": "k"}))
            );
            let exclude_key = selection(
                vec![],
                vec![named("box", Some("key")), named("box", Some("plain"))],
            );
            assert_eq!(
                project_member(&v, Some(&resolved(1)), &exclude_key),
                Some(json!({"key": "k", "other": "o"}))
            );
        }
    }
}
