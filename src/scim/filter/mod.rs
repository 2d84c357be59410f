//! SCIM filters (RFC 7644 §3.4.2.2): parse, print, evaluate. Pure.
//!
//! # Shape
//! - [`parse`] is a hand-written recursive-descent parser over the filter text. It never panics:
//!   every malformed input becomes [`ScimError::InvalidFilter`] whose detail names the offending
//!   text and its byte offset, because the text comes straight from untrusted query strings.
//!   Length and nesting are bounded by [`FilterLimits`] *before* recursion can get deep, so a
//!   hostile filter cannot exhaust the stack.
//! - `Display` prints the canonical form (lower-case keywords, JSON string literals, only the
//!   parentheses precedence needs), which parses back to an equal AST.
//! - [`matches`] evaluates a filter against a resource in SCIM wire JSON, taking type and
//!   case-exactness of every attribute from the schema (`schema::resolve`), so `userName` compares
//!   case-insensitively while `id` and `externalId` do not.
//! - [`required_eq`] extracts the equality terms a filter cannot match without, so the storage
//!   layer can narrow candidates through an index and re-check them with [`matches`].
//!
//! # Evaluation rules worth knowing
//! - Unknown attributes (not in the schema) make every comparison and `pr` false.
//! - Multi-valued attributes match when *any* value matches. A complex multi-valued attribute
//!   named without a sub-attribute (`emails co "@x"`) compares its `value` sub-attribute.
//! - `ne` is the negation of `eq`: it matches when the attribute is absent, and for multi-valued
//!   attributes when no value is equal. `eq null` matches an absent attribute, `ne null` a present
//!   one.
//! - Ordering operators on booleans or complex attributes, and any comparison whose literal type
//!   does not fit the attribute type, are false (the RFC allows a 400; false keeps evaluation
//!   total, which the storage layer relies on).
//! - `dateTime` values compare as instants when both sides parse as RFC 3339, else as strings.

use std::fmt;

use serde_json::Value;

use super::error::{ScimError, ScimResult};
use super::schema::ResourceKind;

mod eval;
mod parse;
#[cfg(test)]
mod tests;

pub(crate) use eval::{compare_numbers, get_ci, parse_instant};
use eval::{eval, Scope};
use parse::parse_with_mode;

/// Limits on untrusted filter text. Both are configurable (`[scim]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct FilterLimits {
    /// Longest filter accepted, in bytes.
    pub max_len: usize,
    /// Deepest nesting of parentheses / not / value paths / and-or chains accepted.
    pub max_depth: usize,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            max_len: 4096,
            max_depth: 32,
        }
    }
}

/// `[schemaURN:]attr[.subAttr]` as written by the client (not yet resolved against a schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URN prefix, if the client wrote one (e.g. the enterprise extension).
    pub uri: Option<String>,
    /// The attribute name.
    pub name: String,
    /// The sub-attribute name.
    pub sub: Option<String>,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A literal in a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Num(serde_json::Number),
    Bool(bool),
    Null,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `path op value`
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: CompValue,
    },
    /// `path pr`
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[inner]` (inner paths are relative to the sub-attributes of `attr`);
    /// `path.sub` must be `None`.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

/// Parse filter text.
///
/// Nesting depth counts every `and`/`or` node, parenthesised group, `not (...)` and value path
/// on the way from the root to the deepest comparison: that is the recursion depth of every later
/// walk over the AST (evaluation, printing, dropping), which is what the limit protects.
pub fn parse(input: &str, limits: &FilterLimits) -> ScimResult<Filter> {
    parse_with_mode(input, limits, false)
}

/// Parse the inside of a value filter (`type eq "work"` in `emails[type eq "work"]`), as PATCH
/// paths need: attribute names are sub-attributes, so URNs, dotted paths and nested value filters
/// are rejected.
pub(crate) fn parse_value_filter(input: &str, limits: &FilterLimits) -> ScimResult<Filter> {
    parse_with_mode(input, limits, true)
}

/// Parse `[uri:]attr[.sub]` (used by `attributes`, `excludedAttributes`, `sortBy`).
pub fn parse_attr_path(input: &str) -> ScimResult<AttrPath> {
    split_attr_path(input).map_err(ScimError::InvalidPath)
}

/// Is `name` a syntactically valid attribute name (RFC 7643 §2.1 `ATTRNAME`, plus `$ref`)?
pub(crate) fn is_attr_name(name: &str) -> bool {
    let rest = name.strip_prefix('$').unwrap_or(name);
    let mut chars = rest.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Does `resource` (SCIM JSON of type `kind`) match `filter`?
pub fn matches(filter: &Filter, resource: &Value, kind: ResourceKind) -> bool {
    eval(
        filter,
        Scope::Resource {
            kind,
            root: resource,
        },
    )
}

/// The `attr eq "string"` terms that `filter` requires: every resource matching `filter` has a
/// value equal to the string at that path (under the attribute's case-exactness). An index can
/// therefore narrow candidates by any one term; the caller must still re-check with [`matches`].
///
/// Terms come from a top-level `eq`, from either side of a top-level `and` chain, and from an
/// `eq` required inside a value path (`emails[value eq "x"]` yields `emails.value`). Anything
/// under `or` or `not` is left out because it is not required. The string is as the client wrote
/// it; lower-case it for attributes whose `caseExact` is false.
pub fn required_eq(filter: &Filter) -> Vec<(AttrPath, String)> {
    let mut out = Vec::new();
    collect_required_eq(filter, &mut out);
    out
}

fn collect_required_eq(filter: &Filter, out: &mut Vec<(AttrPath, String)>) {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: CompValue::Str(s),
        } => {
            out.push((path.clone(), s.clone()));
        }
        Filter::And(a, b) => {
            collect_required_eq(a, out);
            collect_required_eq(b, out);
        }
        Filter::ValuePath { path, filter } if path.sub.is_none() => {
            for (inner, s) in required_eq(filter) {
                if inner.uri.is_none() && inner.sub.is_none() {
                    let outer = AttrPath {
                        sub: Some(inner.name),
                        ..path.clone()
                    };
                    out.push((outer, s));
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Attribute paths
// ---------------------------------------------------------------------------------------------

/// Split `[uri:]attr[.sub]`; the error is the detail text. The URN is everything up to the last
/// `:`, because URNs themselves contain dots (`...:2.0:User`) but attribute names never contain
/// a colon.
fn split_attr_path(text: &str) -> Result<AttrPath, String> {
    if text.is_empty() {
        return Err("empty attribute path".to_string());
    }
    let (uri, rest) = match text.rfind(':') {
        Some(i) => (Some(&text[..i]), &text[i + 1..]),
        None => (None, text),
    };
    if let Some(uri) = uri {
        if !is_urn(uri) {
            return Err(format!(
                "invalid attribute path '{text}': the schema prefix '{uri}' is not a URN \
                 (expected 'urn:...' followed by ':attribute')"
            ));
        }
    }
    let mut parts = rest.split('.');
    let name = parts.next().unwrap_or_default();
    let sub = parts.next();
    if parts.next().is_some() {
        return Err(format!(
            "invalid attribute path '{text}': at most one sub-attribute ('attr.sub') is allowed"
        ));
    }
    for part in std::iter::once(name).chain(sub) {
        if !is_attr_name(part) {
            return Err(format!(
                "invalid attribute path '{text}': '{part}' is not an attribute name (a letter \
                 followed by letters, digits, '-' or '_')"
            ));
        }
    }
    Ok(AttrPath {
        uri: uri.map(str::to_string),
        name: name.to_string(),
        sub: sub.map(str::to_string),
    })
}

/// A schema URN as it can appear in an attribute path: `urn:` and non-empty `:`-separated
/// segments of URN-safe characters.
fn is_urn(uri: &str) -> bool {
    let mut segments = uri.split(':');
    matches!(segments.next(), Some(s) if s.eq_ignore_ascii_case("urn"))
        && uri.len() > 4
        && segments.all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '$'))
        })
}

// ---------------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------------

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(uri) = &self.uri {
            write!(f, "{uri}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CompareOp::*;
        f.write_str(match self {
            Eq => "eq",
            Ne => "ne",
            Co => "co",
            Sw => "sw",
            Ew => "ew",
            Gt => "gt",
            Ge => "ge",
            Lt => "lt",
            Le => "le",
        })
    }
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // JSON escaping is exactly what the parser decodes.
            CompValue::Str(s) => write!(f, "{}", Value::String(s.clone())),
            CompValue::Num(n) => write!(f, "{n}"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Null => f.write_str("null"),
        }
    }
}

/// Binding strength of the context a sub-filter is printed in.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Prec {
    Or,
    And,
    Atom,
}

fn write_filter(filter: &Filter, ctx: Prec, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match filter {
        Filter::Compare { path, op, value } => write!(f, "{path} {op} {value}"),
        Filter::Present(path) => write!(f, "{path} pr"),
        Filter::Not(inner) => {
            f.write_str("not (")?;
            write_filter(inner, Prec::Or, f)?;
            f.write_str(")")
        }
        Filter::ValuePath { path, filter } => {
            write!(f, "{path}[")?;
            write_filter(filter, Prec::Or, f)?;
            f.write_str("]")
        }
        // Chains parse left-associatively, so a right operand of the same operator needs
        // parentheses to come back as the same tree.
        Filter::Or(a, b) => parenthesised(ctx > Prec::Or, f, |f| {
            write_filter(a, Prec::Or, f)?;
            f.write_str(" or ")?;
            write_filter(b, Prec::And, f)
        }),
        Filter::And(a, b) => parenthesised(ctx > Prec::And, f, |f| {
            write_filter(a, Prec::And, f)?;
            f.write_str(" and ")?;
            write_filter(b, Prec::Atom, f)
        }),
    }
}

fn parenthesised(
    needed: bool,
    f: &mut fmt::Formatter<'_>,
    body: impl FnOnce(&mut fmt::Formatter<'_>) -> fmt::Result,
) -> fmt::Result {
    if needed {
        f.write_str("(")?;
    }
    body(f)?;
    if needed {
        f.write_str(")")?;
    }
    Ok(())
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_filter(self, Prec::Or, f)
    }
}
