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

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::{ScimError, ScimResult};
use super::schema::{self, AttrDef, AttrType, ResourceKind};

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
// Parser
// ---------------------------------------------------------------------------------------------

fn parse_with_mode(input: &str, limits: &FilterLimits, value_filter: bool) -> ScimResult<Filter> {
    if input.len() > limits.max_len {
        return Err(ScimError::InvalidFilter(format!(
            "filter is {} bytes long, more than the limit (max_len) of {} bytes",
            input.len(),
            limits.max_len
        )));
    }
    if input.trim().is_empty() {
        return Err(ScimError::InvalidFilter("empty filter".to_string()));
    }
    let mut p = Parser {
        src: input,
        pos: 0,
        limits: *limits,
        nesting: 0,
        in_value_filter: value_filter,
    };
    let (filter, _) = p.parse_or()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(
            p.pos,
            "unexpected text after a complete expression (expected 'and', 'or', ')' or the end)",
        ));
    }
    Ok(filter)
}

/// A parsed sub-expression and its nesting height (0 for a single comparison).
type Parsed = (Filter, usize);

/// Characters of an attribute path or keyword: `ATTRNAME`, `$ref`, and URN prefixes.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | '$')
}

struct Parser<'a> {
    /// The whole filter text, kept for error excerpts.
    src: &'a str,
    /// Byte offset of the next unread character (always on a char boundary).
    pos: usize,
    limits: FilterLimits,
    /// Open parentheses / `not (` / `[` around the current position: the parser's own recursion
    /// depth, checked on entry so hostile nesting fails before the stack grows.
    nesting: usize,
    /// Inside `attr[...]`: paths are plain sub-attribute names and value paths cannot nest.
    in_value_filter: bool,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    /// The word (attribute path or keyword) starting at the current position, possibly empty.
    fn peek_word(&self) -> &str {
        let rest = self.rest();
        let end = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
        &rest[..end]
    }

    fn take_word(&mut self) -> &str {
        let start = self.pos;
        let len = self.peek_word().len();
        self.pos += len;
        &self.src[start..start + len]
    }

    /// Consume `keyword` (case-insensitive) if it is the next whole word after whitespace.
    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let save = self.pos;
        self.skip_ws();
        if self.peek_word().eq_ignore_ascii_case(keyword) {
            self.pos += keyword.len();
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// An `InvalidFilter` error at byte offset `at`, quoting the text found there.
    fn error(&self, at: usize, what: &str) -> ScimError {
        let near: String = self
            .src
            .get(at..)
            .unwrap_or_default()
            .chars()
            .take(24)
            .collect();
        let found = if near.is_empty() {
            "the end of the filter".to_string()
        } else {
            format!("'{near}'")
        };
        ScimError::InvalidFilter(format!("{what}: found {found} at offset {at}"))
    }

    fn depth_error(&self) -> ScimError {
        ScimError::InvalidFilter(format!(
            "filter nests deeper than the limit (max_depth) of {}",
            self.limits.max_depth
        ))
    }

    fn check_height(&self, height: usize) -> ScimResult<usize> {
        if height > self.limits.max_depth {
            Err(self.depth_error())
        } else {
            Ok(height)
        }
    }

    /// Enter a bracketed construct, refusing before recursing past the depth limit.
    fn enter(&mut self) -> ScimResult<()> {
        self.nesting += 1;
        if self.nesting > self.limits.max_depth {
            return Err(self.depth_error());
        }
        Ok(())
    }

    fn expect_char(&mut self, c: char, what: &str) -> ScimResult<()> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(self.pos, what))
        }
    }

    /// `orExpr = andExpr *("or" andExpr)`, left-associative.
    fn parse_or(&mut self) -> ScimResult<Parsed> {
        let (mut left, mut height) = self.parse_and()?;
        while self.eat_keyword("or") {
            let (right, h) = self.parse_and()?;
            height = self.check_height(height.max(h) + 1)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok((left, height))
    }

    /// `andExpr = unary *("and" unary)`: `and` binds tighter than `or`.
    fn parse_and(&mut self) -> ScimResult<Parsed> {
        let (mut left, mut height) = self.parse_unary()?;
        while self.eat_keyword("and") {
            let (right, h) = self.parse_unary()?;
            height = self.check_height(height.max(h) + 1)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok((left, height))
    }

    /// `"(" filter ")"`, `"not" "(" filter ")"`, a value path or an attribute expression.
    fn parse_unary(&mut self) -> ScimResult<Parsed> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.error(self.pos, "expected an attribute path, '(' or 'not'")),
            Some('(') => {
                self.enter()?;
                self.pos += 1;
                let (inner, h) = self.parse_or()?;
                self.expect_char(')', "missing ')' to close '('")?;
                self.nesting -= 1;
                Ok((inner, self.check_height(h + 1)?))
            }
            Some(c) if is_word_char(c) => {
                if self.peek_word().eq_ignore_ascii_case("not") && self.not_follows() {
                    return self.parse_not();
                }
                self.parse_attr_expr()
            }
            Some(_) => Err(self.error(self.pos, "expected an attribute path, '(' or 'not'")),
        }
    }

    /// After the word `not`: is this the `not` operator rather than an attribute called `not`?
    /// It is unless an operator keyword or `[` follows, which only make sense after a path.
    fn not_follows(&self) -> bool {
        let after = self.src[self.pos + 3..].trim_start();
        let next_word = {
            let end = after
                .find(|c: char| !is_word_char(c))
                .unwrap_or(after.len());
            &after[..end]
        };
        !(after.starts_with('[')
            || parse_op(next_word).is_some()
            || next_word.eq_ignore_ascii_case("pr"))
    }

    fn parse_not(&mut self) -> ScimResult<Parsed> {
        self.pos += 3;
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.error(
                self.pos,
                "'not' must be followed by a parenthesised filter, as in 'not (...)'",
            ));
        }
        self.enter()?;
        self.pos += 1;
        let (inner, h) = self.parse_or()?;
        self.expect_char(')', "missing ')' to close 'not ('")?;
        self.nesting -= 1;
        Ok((Filter::Not(Box::new(inner)), self.check_height(h + 1)?))
    }

    /// `attrPath "pr"`, `attrPath compareOp compValue` or `attrPath "[" valFilter "]"`.
    fn parse_attr_expr(&mut self) -> ScimResult<Parsed> {
        let start = self.pos;
        let text = self.take_word();
        let path = split_attr_path(text)
            .map_err(|d| ScimError::InvalidFilter(format!("{d} (at offset {start})")))?;
        if self.in_value_filter && (path.uri.is_some() || path.sub.is_some()) {
            return Err(self.error(
                start,
                "inside a value filter '[...]' only plain sub-attribute names are allowed",
            ));
        }
        if self.peek() == Some('[') {
            return self.parse_value_path(path, start);
        }
        self.skip_ws();
        let op_at = self.pos;
        let op_text = self.take_word();
        if op_text.eq_ignore_ascii_case("pr") {
            return Ok((Filter::Present(path), 0));
        }
        let Some(op) = parse_op(op_text) else {
            let msg = if op_text.is_empty() {
                format!("expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le or pr) after '{path}'")
            } else {
                format!("unknown operator '{op_text}' after '{path}' (expected eq, ne, co, sw, ew, gt, ge, lt, le or pr)")
            };
            return Err(self.error(op_at, &msg));
        };
        let value = self.parse_value(op_text)?;
        Ok((Filter::Compare { path, op, value }, 0))
    }

    fn parse_value_path(&mut self, path: AttrPath, start: usize) -> ScimResult<Parsed> {
        if self.in_value_filter {
            return Err(self.error(self.pos, "value filters '[...]' cannot be nested"));
        }
        if path.sub.is_some() {
            return Err(self.error(
                start,
                "a value filter '[...]' must follow an attribute, not a sub-attribute",
            ));
        }
        self.enter()?;
        self.pos += 1;
        self.in_value_filter = true;
        let (inner, h) = self.parse_or()?;
        self.expect_char(']', "missing ']' to close the value filter")?;
        self.in_value_filter = false;
        self.nesting -= 1;
        if self.peek() == Some('.') {
            return Err(self.error(
                self.pos,
                "a sub-attribute after a value filter ('emails[...].value') is only allowed in PATCH paths",
            ));
        }
        Ok((
            Filter::ValuePath {
                path,
                filter: Box::new(inner),
            },
            self.check_height(h + 1)?,
        ))
    }

    /// `compValue = false / null / true / number / string` (keywords case-insensitive).
    fn parse_value(&mut self, op: &str) -> ScimResult<CompValue> {
        self.skip_ws();
        let at = self.pos;
        match self.peek() {
            Some('"') => self.parse_string().map(CompValue::Str),
            Some(c) if c == '-' || c.is_ascii_digit() => self.parse_number().map(CompValue::Num),
            Some(c) if is_word_char(c) => {
                let word = self.take_word();
                if word.eq_ignore_ascii_case("true") {
                    Ok(CompValue::Bool(true))
                } else if word.eq_ignore_ascii_case("false") {
                    Ok(CompValue::Bool(false))
                } else if word.eq_ignore_ascii_case("null") {
                    Ok(CompValue::Null)
                } else {
                    Err(self.error(
                        at,
                        &format!("expected a value after '{op}' (strings must be in double quotes)"),
                    ))
                }
            }
            _ => Err(self.error(
                at,
                &format!("missing value after '{op}' (expected a \"string\", number, true, false or null)"),
            )),
        }
    }

    /// A JSON string literal, escapes and all; decoding is left to serde_json so the accepted
    /// escapes are exactly JSON's.
    fn parse_string(&mut self) -> ScimResult<String> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut i = start + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    let literal = &self.src[start..=i];
                    let decoded = serde_json::from_str::<String>(literal)
                        .map_err(|e| self.error(start, &format!("invalid string literal ({e})")))?;
                    self.pos = i + 1;
                    return Ok(decoded);
                }
                _ => i += 1,
            }
        }
        Err(self.error(start, "unterminated string literal (missing closing '\"')"))
    }

    /// A JSON number.
    fn parse_number(&mut self) -> ScimResult<Number> {
        let start = self.pos;
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
            .unwrap_or(rest.len());
        let text = &rest[..len];
        let number = serde_json::from_str::<Number>(text)
            .map_err(|_| self.error(start, &format!("invalid number '{text}'")))?;
        self.pos += len;
        Ok(number)
    }
}

/// A comparison operator keyword (case-insensitive); `pr` is handled separately.
fn parse_op(word: &str) -> Option<CompareOp> {
    use CompareOp::*;
    Some(match word.to_ascii_lowercase().as_str() {
        "eq" => Eq,
        "ne" => Ne,
        "co" => Co,
        "sw" => Sw,
        "ew" => Ew,
        "gt" => Gt,
        "ge" => Ge,
        "lt" => Lt,
        "le" => Le,
        _ => return None,
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

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// Where attribute paths are looked up: the resource itself, or one element of a multi-valued
/// complex attribute inside a value filter (`emails[type eq "work"]`).
#[derive(Clone, Copy)]
enum Scope<'a> {
    Resource {
        kind: ResourceKind,
        root: &'a Value,
    },
    Element {
        attr: &'static AttrDef,
        element: &'a Value,
    },
}

/// The values an attribute path reaches, arrays flattened, with the definition they share.
struct Located<'a> {
    def: &'static AttrDef,
    values: Vec<&'a Value>,
}

fn eval(filter: &Filter, scope: Scope<'_>) -> bool {
    match filter {
        Filter::And(a, b) => eval(a, scope) && eval(b, scope),
        Filter::Or(a, b) => eval(a, scope) || eval(b, scope),
        Filter::Not(a) => !eval(a, scope),
        Filter::Present(path) => {
            locate(scope, path).is_some_and(|l| l.values.into_iter().any(is_present))
        }
        Filter::Compare { path, op, value } => compare(scope, path, *op, value),
        Filter::ValuePath { path, filter } => value_path(scope, path, filter),
    }
}

/// Look up `name` in a JSON object: the exact key first, then case-insensitively, because
/// attribute names are case-insensitive (RFC 7643 §2.1) even though we store canonical case.
pub(crate) fn get_ci<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let obj: &Map<String, Value> = value.as_object()?;
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// One value, or the elements of an array.
fn flatten(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// RFC 7644 `pr`: present and not null, not an empty string, not empty array/object.
fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(is_present),
        Value::Object(map) => map.values().any(is_present),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// Resolve `path` in `scope` and collect the values it reaches; `None` for unknown attributes.
fn locate<'a>(scope: Scope<'a>, path: &AttrPath) -> Option<Located<'a>> {
    match scope {
        Scope::Resource { kind, root } => {
            let r = schema::resolve(kind, path.uri.as_deref(), &path.name, path.sub.as_deref())?;
            let container = if r.extension {
                get_ci(root, r.schema.id)
            } else {
                Some(root)
            };
            let top = container.and_then(|c| get_ci(c, r.attr.name));
            let values = match (top, r.sub) {
                (None, _) => Vec::new(),
                (Some(v), None) => flatten(v),
                (Some(v), Some(sub)) => flatten(v)
                    .into_iter()
                    .filter_map(|e| get_ci(e, sub.name))
                    .flat_map(flatten)
                    .collect(),
            };
            Some(Located {
                def: r.leaf(),
                values,
            })
        }
        Scope::Element { attr, element } => {
            if path.uri.is_some() || path.sub.is_some() {
                return None;
            }
            let def = attr
                .sub_attributes
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(&path.name))?;
            let values = get_ci(element, def.name).map(flatten).unwrap_or_default();
            Some(Located { def, values })
        }
    }
}

fn compare(scope: Scope<'_>, path: &AttrPath, op: CompareOp, literal: &CompValue) -> bool {
    let Some(mut located) = locate(scope, path) else {
        return false;
    };
    if located.def.ty == AttrType::Complex {
        // `emails co "@x"` means the `value` sub-attribute (RFC 7644 §3.4.2.2).
        let Some(value_def) = located
            .def
            .sub_attributes
            .iter()
            .find(|s| s.name == "value")
        else {
            return false;
        };
        located.values = located
            .values
            .into_iter()
            .filter_map(|e| get_ci(e, "value"))
            .flat_map(flatten)
            .collect();
        located.def = value_def;
    }
    let values: Vec<&Value> = located
        .values
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    match (op, literal) {
        (CompareOp::Eq, CompValue::Null) => values.is_empty(),
        (CompareOp::Ne, CompValue::Null) => !values.is_empty(),
        (_, CompValue::Null) => false,
        (CompareOp::Ne, _) => !values
            .iter()
            .any(|v| compare_one(v, CompareOp::Eq, literal, located.def)),
        _ => values
            .iter()
            .any(|v| compare_one(v, op, literal, located.def)),
    }
}

/// Compare one (non-null) attribute value with a literal under the attribute's definition.
fn compare_one(actual: &Value, op: CompareOp, literal: &CompValue, def: &AttrDef) -> bool {
    match (def.ty, literal, actual) {
        (AttrType::DateTime, CompValue::Str(lit), Value::String(act)) => {
            let substring_op = matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew);
            match (parse_instant(act), parse_instant(lit)) {
                (Some(a), Some(b)) if !substring_op => ordering_matches(op, a.cmp(&b)),
                _ => compare_strings(act, lit, op, def.case_exact),
            }
        }
        (
            AttrType::String | AttrType::Reference | AttrType::Binary,
            CompValue::Str(lit),
            Value::String(act),
        ) => compare_strings(act, lit, op, def.case_exact),
        (AttrType::Boolean, CompValue::Bool(lit), Value::Bool(act)) => match op {
            CompareOp::Eq => act == lit,
            CompareOp::Ne => act != lit,
            _ => false,
        },
        (AttrType::Integer | AttrType::Decimal, CompValue::Num(lit), Value::Number(act)) => {
            compare_numbers(act, lit).is_some_and(|ord| ordering_matches(op, ord))
        }
        _ => false,
    }
}

/// An RFC 3339 timestamp, for chronological comparison of `dateTime` attributes.
pub(crate) fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Does `ord` (actual compared with literal) satisfy `op`? `co`/`sw`/`ew` have no ordering.
fn ordering_matches(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// String operators; `caseExact = false` compares Unicode lower-case forms.
fn compare_strings(actual: &str, literal: &str, op: CompareOp, case_exact: bool) -> bool {
    let (a, l) = if case_exact {
        (actual.to_string(), literal.to_string())
    } else {
        (actual.to_lowercase(), literal.to_lowercase())
    };
    match op {
        CompareOp::Co => a.contains(&l),
        CompareOp::Sw => a.starts_with(&l),
        CompareOp::Ew => a.ends_with(&l),
        _ => ordering_matches(op, a.cmp(&l)),
    }
}

/// Numeric ordering: exact for integers, `f64` otherwise.
pub(crate) fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// `attr[inner]`: some element of the complex attribute `attr` matches `inner`.
fn value_path(scope: Scope<'_>, path: &AttrPath, inner: &Filter) -> bool {
    let Scope::Resource { kind, root } = scope else {
        return false;
    };
    if path.sub.is_some() {
        return false;
    }
    let Some(r) = schema::resolve(kind, path.uri.as_deref(), &path.name, None) else {
        return false;
    };
    if r.attr.ty != AttrType::Complex {
        return false;
    }
    let container = if r.extension {
        get_ci(root, r.schema.id)
    } else {
        Some(root)
    };
    let Some(value) = container.and_then(|c| get_ci(c, r.attr.name)) else {
        return false;
    };
    flatten(value).into_iter().any(|element| {
        element.is_object()
            && eval(
                inner,
                Scope::Element {
                    attr: r.attr,
                    element,
                },
            )
    })
}
