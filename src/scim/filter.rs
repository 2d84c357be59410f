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

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
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
    fn peek_word(&self) -> &'a str {
        let rest = self.rest();
        let end = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
        &rest[..end]
    }

    fn take_word(&mut self) -> &'a str {
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
        // Not in RFC 7644's filter grammar, but Entra ID sends it when a matching attribute is
        // `emails[type eq "work"].value`: read `attr[f].sub op v` as `attr[f and sub op v]`.
        let inner = if self.peek() == Some('.') {
            self.pos += 1;
            let sub_at = self.pos;
            let sub = self.take_word().to_string();
            if !is_attr_name(&sub) {
                return Err(self.error(sub_at, "expected a sub-attribute name after ']. '"));
            }
            let sub_path = AttrPath {
                uri: None,
                name: sub,
                sub: None,
            };
            self.skip_ws();
            let op_at = self.pos;
            let op_text = self.take_word();
            let tail = if op_text.eq_ignore_ascii_case("pr") {
                Filter::Present(sub_path)
            } else {
                let Some(op) = parse_op(op_text) else {
                    return Err(self.error(op_at, "expected an operator after the sub-attribute"));
                };
                let value = self.parse_value(op_text)?;
                Filter::Compare {
                    path: sub_path,
                    op,
                    value,
                }
            };
            Filter::And(Box::new(inner), Box::new(tail))
        } else {
            inner
        };
        Ok((
            Filter::ValuePath {
                path,
                filter: Box::new(inner),
            },
            self.check_height(h + 2)?,
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
        let invalid = || self.error(start, &format!("invalid number '{text}'"));
        // serde_json checks the JSON grammar; without its `float_roundtrip` feature it may round
        // the last digit of a float, so floats are re-read with the standard library's exact
        // parser to keep print/parse lossless.
        let mut number = serde_json::from_str::<Number>(text).map_err(|_| invalid())?;
        if number.is_f64() {
            let exact = text
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .ok_or_else(invalid)?;
            number = exact;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{Mutability, Returned, Uniqueness, ENTERPRISE_USER_SCHEMA};
    use proptest::prelude::*;
    use serde_json::json;

    const ENTERPRISE: &str = ENTERPRISE_USER_SCHEMA;

    fn p(text: &str) -> Filter {
        parse(text, &FilterLimits::default()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn parse_err(text: &str) -> String {
        match parse(text, &FilterLimits::default()) {
            Err(ScimError::InvalidFilter(detail)) => detail,
            other => panic!("{text}: expected InvalidFilter, got {other:?}"),
        }
    }

    fn path(text: &str) -> AttrPath {
        split_attr_path(text).unwrap()
    }

    fn cmp(p: &str, op: CompareOp, value: CompValue) -> Filter {
        Filter::Compare {
            path: path(p),
            op,
            value,
        }
    }

    fn s(text: &str) -> CompValue {
        CompValue::Str(text.to_string())
    }

    fn pr(p: &str) -> Filter {
        Filter::Present(path(p))
    }

    fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }

    fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "Ext-1",
            "userName": "Bjensen@Example.com",
            "name": { "givenName": "Barbara", "familyName": "Jensen" },
            "displayName": "Babs Jensen",
            "title": "",
            "nickName": null,
            "active": true,
            "emails": [
                { "value": "bjensen@example.com", "type": "work", "primary": true },
                { "value": "babs@jensen.org", "type": "home" }
            ],
            "phoneNumbers": [],
            "meta": {
                "resourceType": "User",
                "created": "2010-01-23T04:56:22Z",
                "lastModified": "2011-05-13T04:42:34Z"
            },
            ENTERPRISE: {
                "employeeNumber": "701984",
                "manager": { "value": "26118915-6090-4610-87e4-49d8ca9f808d" }
            }
        })
    }

    fn m(text: &str) -> bool {
        matches(&p(text), &user(), ResourceKind::User)
    }

    // --- parsing -----------------------------------------------------------------------------

    #[test]
    fn parses_a_comparison_into_path_operator_and_value() {
        assert_eq!(
            p(r#"userName eq "bjensen""#),
            cmp("userName", CompareOp::Eq, s("bjensen"))
        );
        assert_eq!(p("title pr"), pr("title"));
        assert_eq!(
            p("name.familyName co \"O'Malley\""),
            cmp("name.familyName", CompareOp::Co, s("O'Malley"))
        );
    }

    #[test]
    fn keywords_operators_and_literals_are_case_insensitive() {
        assert_eq!(
            p(r#"userName EQ "a""#),
            cmp("userName", CompareOp::Eq, s("a"))
        );
        assert_eq!(p("title PR"), pr("title"));
        assert_eq!(
            p("active Eq TRUE"),
            cmp("active", CompareOp::Eq, CompValue::Bool(true))
        );
        assert_eq!(
            p("active eq False"),
            cmp("active", CompareOp::Eq, CompValue::Bool(false))
        );
        assert_eq!(
            p("title eq NULL"),
            cmp("title", CompareOp::Eq, CompValue::Null)
        );
        assert_eq!(
            p("a pr AND b pr Or c pr"),
            or(and(pr("a"), pr("b")), pr("c"))
        );
        assert_eq!(p("NOT (a pr)"), Filter::Not(Box::new(pr("a"))));
        for (word, op) in [
            ("ne", CompareOp::Ne),
            ("co", CompareOp::Co),
            ("sw", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("gt", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("lt", CompareOp::Lt),
            ("le", CompareOp::Le),
        ] {
            assert_eq!(
                p(&format!("x {} 1", word.to_uppercase())),
                cmp("x", op, CompValue::Num(1.into()))
            );
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            p("a pr or b pr and c pr"),
            or(pr("a"), and(pr("b"), pr("c")))
        );
        assert_eq!(
            p("a pr and b pr or c pr"),
            or(and(pr("a"), pr("b")), pr("c"))
        );
    }

    #[test]
    fn chains_associate_to_the_left() {
        assert_eq!(
            p("a pr and b pr and c pr"),
            and(and(pr("a"), pr("b")), pr("c"))
        );
        assert_eq!(p("a pr or b pr or c pr"), or(or(pr("a"), pr("b")), pr("c")));
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(
            p("(a pr or b pr) and c pr"),
            and(or(pr("a"), pr("b")), pr("c"))
        );
        assert_eq!(p("  ( ( a pr ) )  "), pr("a"));
    }

    #[test]
    fn not_requires_parentheses() {
        assert_eq!(
            p("not (a pr or b pr)"),
            Filter::Not(Box::new(or(pr("a"), pr("b"))))
        );
        assert_eq!(p("not(a pr)"), Filter::Not(Box::new(pr("a"))));
        let detail = parse_err("not a pr");
        assert!(
            detail.contains("'not' must be followed by a parenthesised filter"),
            "{detail}"
        );
        // An attribute that happens to be called `not` still works.
        assert_eq!(p("not pr"), pr("not"));
    }

    #[test]
    fn urn_prefix_is_everything_before_the_last_colon() {
        let f = p(&format!("{ENTERPRISE}:employeeNumber eq \"1\""));
        assert_eq!(
            f,
            Filter::Compare {
                path: AttrPath {
                    uri: Some(ENTERPRISE.into()),
                    name: "employeeNumber".into(),
                    sub: None
                },
                op: CompareOp::Eq,
                value: s("1"),
            }
        );
        let f = p(&format!("{ENTERPRISE}:manager.value eq \"x\""));
        let Filter::Compare { path, .. } = f else {
            panic!()
        };
        assert_eq!(path.uri.as_deref(), Some(ENTERPRISE));
        assert_eq!(
            (path.name.as_str(), path.sub.as_deref()),
            ("manager", Some("value"))
        );
        let core = path_of("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName");
        assert_eq!(
            core.uri.as_deref(),
            Some("urn:ietf:params:scim:schemas:core:2.0:User")
        );
        assert_eq!(
            (core.name.as_str(), core.sub.as_deref()),
            ("name", Some("familyName"))
        );
    }

    fn path_of(text: &str) -> AttrPath {
        parse_attr_path(text).unwrap()
    }

    #[test]
    fn value_paths_hold_an_inner_filter_over_sub_attributes() {
        let f = p(r#"emails[type eq "work" and value co "@example.com"]"#);
        assert_eq!(
            f,
            Filter::ValuePath {
                path: path("emails"),
                filter: Box::new(and(
                    cmp("type", CompareOp::Eq, s("work")),
                    cmp("value", CompareOp::Co, s("@example.com"))
                )),
            }
        );
        assert_eq!(
            p(r#"userType eq "Employee" and emails[type eq "work"] or members[value pr]"#)
                .to_string(),
            r#"userType eq "Employee" and emails[type eq "work"] or members[value pr]"#
        );
    }

    #[test]
    fn entra_value_path_with_sub_attribute_reads_as_a_conjunction() {
        assert_eq!(
            p(r#"emails[type eq "work"].value eq "a@x.com""#).to_string(),
            r#"emails[type eq "work" and value eq "a@x.com"]"#
        );
        let user = json!({"userName": "u", "emails": [
            {"type": "home", "value": "a@x.com"}, {"type": "work", "value": "b@x.com"}]});
        let f = p(r#"emails[type eq "work"].value eq "A@X.com""#);
        assert!(!matches(&f, &user, ResourceKind::User));
        let f = p(r#"emails[type eq "work"].value eq "B@X.com""#);
        assert!(matches(&f, &user, ResourceKind::User));
        assert!(parse_err(r#"emails[type eq "work"].value zz "x""#).contains("operator"));
    }

    #[test]
    fn value_paths_cannot_nest_or_use_dotted_inner_paths() {
        assert!(parse_err(r#"emails[type[value eq "x"]]"#).contains("cannot be nested"));
        assert!(parse_err(r#"emails[type.x eq "work"]"#).contains("plain sub-attribute names"));
        assert!(parse_err(r#"name.givenName[value pr]"#).contains("not a sub-attribute"));
    }

    #[test]
    fn string_literals_use_json_escapes() {
        assert_eq!(
            p(r#"x eq "a\"b\\c\u00e9\n""#),
            cmp("x", CompareOp::Eq, s("a\"b\\c\u{e9}\n"))
        );
        assert!(parse_err(r#"x eq "bad \q escape""#).contains("invalid string literal"));
        assert!(parse_err(r#"x eq "open"#).contains("unterminated string"));
    }

    #[test]
    fn numbers_are_json_numbers() {
        assert_eq!(
            p("x gt 42"),
            cmp("x", CompareOp::Gt, CompValue::Num(42.into()))
        );
        assert_eq!(
            p("x gt -7"),
            cmp("x", CompareOp::Gt, CompValue::Num((-7).into()))
        );
        let f = p("x lt 1.5e3");
        assert_eq!(
            f,
            cmp(
                "x",
                CompareOp::Lt,
                CompValue::Num(Number::from_f64(1500.0).unwrap())
            )
        );
        assert!(parse_err("x eq 01").contains("invalid number '01'"));
        assert!(parse_err("x eq 1e999").contains("invalid number"));
    }

    #[test]
    fn unbalanced_parentheses_are_invalid() {
        assert!(parse_err("(a pr").contains("missing ')'"));
        assert!(parse_err("a pr)").contains("unexpected text"));
        assert!(parse_err("emails[type pr").contains("missing ']'"));
        assert!(parse_err("()").contains("expected an attribute path"));
    }

    #[test]
    fn unknown_operator_is_named_in_the_error() {
        let detail = parse_err(r#"userName like "x""#);
        assert!(
            detail.contains("unknown operator 'like' after 'userName'"),
            "{detail}"
        );
        assert!(parse_err("userName").contains("expected an operator"));
    }

    #[test]
    fn missing_value_is_reported() {
        let detail = parse_err("userName eq");
        assert!(detail.contains("missing value after 'eq'"), "{detail}");
        let detail = parse_err("userName eq bjensen");
        assert!(
            detail.contains("strings must be in double quotes"),
            "{detail}"
        );
        assert!(detail.contains("'bjensen'"), "{detail}");
    }

    #[test]
    fn trailing_garbage_is_reported_with_its_offset() {
        let detail = parse_err(r#"userName eq "a" garbage"#);
        assert!(detail.contains("'garbage' at offset 16"), "{detail}");
        assert!(parse_err("a pr and").contains("the end of the filter"));
        assert!(parse_err("a pr andb pr").contains("unexpected text"));
    }

    #[test]
    fn malformed_attribute_paths_are_invalid_filters() {
        assert!(parse_err("1abc pr").contains("'1abc' is not an attribute name"));
        assert!(parse_err("foo:bar pr").contains("is not a URN"));
        assert!(parse_err("a.b.c pr").contains("at most one sub-attribute"));
        assert!(parse_err("   ").contains("empty filter"));
        assert!(parse_err("\"x\" eq a").contains("expected an attribute path"));
    }

    #[test]
    fn too_long_filters_name_the_limit() {
        let limits = FilterLimits {
            max_len: 10,
            max_depth: 32,
        };
        let err = parse("userName eq \"bjensen\"", &limits).unwrap_err();
        assert!(
            matches!(&err, ScimError::InvalidFilter(d) if d.contains("max_len") && d.contains("10")),
            "{err}"
        );
    }

    #[test]
    fn too_deep_filters_name_the_limit() {
        let limits = FilterLimits {
            max_len: 1 << 20,
            max_depth: 2,
        };
        assert!(parse("a pr and b pr and c pr", &limits).is_ok());
        assert!(parse("not (a pr and b pr)", &limits).is_ok());
        assert!(parse("((a pr))", &limits).is_ok());
        for text in [
            "a pr and b pr and c pr and d pr",
            "(((a pr)))",
            "not (((a pr)))",
            "x[(a pr and b pr)]",
        ] {
            let err = parse(text, &limits).unwrap_err();
            assert!(
                matches!(&err, ScimError::InvalidFilter(d) if d.contains("max_depth")),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn hostile_nesting_fails_without_exhausting_the_stack() {
        let limits = FilterLimits {
            max_len: usize::MAX,
            max_depth: 32,
        };
        let text = "(".repeat(1_000_000);
        assert!(parse(&text, &limits).is_err());
        let text = "not (".repeat(200_000);
        assert!(parse(&text, &limits).is_err());
        let text = vec!["a pr"; 100_000].join(" and ");
        assert!(parse(&text, &limits).is_err());
    }

    #[test]
    fn display_is_canonical() {
        let f = p(r#"USERNAME Eq "x\ty" AND (a PR OR NOT(b Gt 1.5)) and emails[TYPE eq true]"#);
        assert_eq!(
            f.to_string(),
            r#"USERNAME eq "x\ty" and (a pr or not (b gt 1.5)) and emails[TYPE eq true]"#
        );
        // A right-nested chain keeps its shape through parentheses.
        let right = and(pr("a"), and(pr("b"), pr("c")));
        assert_eq!(right.to_string(), "a pr and (b pr and c pr)");
        assert_eq!(p(&right.to_string()), right);
    }

    #[test]
    fn parse_attr_path_errors_are_invalid_path() {
        assert!(matches!(
            parse_attr_path("a b"),
            Err(ScimError::InvalidPath(_))
        ));
        assert!(matches!(
            parse_attr_path(""),
            Err(ScimError::InvalidPath(_))
        ));
        assert_eq!(path_of("members.$ref").sub.as_deref(), Some("$ref"));
    }

    // --- evaluation --------------------------------------------------------------------------

    #[test]
    fn eq_on_case_insensitive_attributes_ignores_case() {
        assert!(m(r#"userName eq "bjensen@example.com""#));
        assert!(m(r#"USERNAME eq "BJENSEN@EXAMPLE.COM""#));
        assert!(!m(r#"userName eq "bjensen""#));
    }

    #[test]
    fn id_and_external_id_are_case_exact() {
        assert!(m(r#"id eq "2819c223-7f76-453a-919d-413861904646""#));
        assert!(!m(r#"id eq "2819C223-7F76-453A-919D-413861904646""#));
        assert!(m(r#"externalId eq "Ext-1""#));
        assert!(!m(r#"externalId eq "ext-1""#));
        assert!(!m(r#"externalId sw "ext""#));
        assert!(m(r#"externalId sw "Ext""#));
    }

    #[test]
    fn substring_operators_respect_case_exactness() {
        assert!(m(r#"userName co "JENSEN@""#));
        assert!(m(r#"userName sw "BJ""#));
        assert!(m(r#"userName ew ".COM""#));
        assert!(!m(r#"userName sw "jensen""#));
        assert!(!m(r#"userName ew "example""#));
        assert!(!m(r#"userName co "nobody""#));
    }

    #[test]
    fn ordering_operators_compare_strings_case_insensitively() {
        assert!(m(r#"userName gt "BA""#));
        assert!(m(r#"userName ge "bjensen@example.com""#));
        assert!(m(r#"userName lt "C""#));
        assert!(m(r#"userName le "BJENSEN@EXAMPLE.COM""#));
        assert!(!m(r#"userName lt "b""#));
        assert!(!m(r#"userName gt "bz""#));
    }

    #[test]
    fn ne_is_the_negation_of_eq_and_matches_absent_attributes() {
        assert!(m(r#"userName ne "someone""#));
        assert!(!m(r#"userName ne "BJENSEN@example.com""#));
        assert!(m(r#"nickName ne "x""#), "null counts as absent");
        assert!(m(r#"profileUrl ne "x""#), "absent");
        assert!(!m(r#"emails ne "babs@jensen.org""#), "one email is equal");
        assert!(
            !m(r#"noSuchAttribute ne "x""#),
            "unknown attributes never match"
        );
    }

    #[test]
    fn eq_null_matches_absent_attributes() {
        assert!(m("nickName eq null"));
        assert!(m("profileUrl eq null"));
        assert!(!m("userName eq null"));
        assert!(m("userName ne null"));
        assert!(!m("userName gt null"));
    }

    #[test]
    fn present_requires_a_non_empty_value() {
        assert!(m("userName pr"));
        assert!(m("name pr"));
        assert!(m("emails pr"));
        assert!(m("emails.type pr"));
        assert!(m("meta.lastModified pr"));
        assert!(!m("title pr"), "empty string");
        assert!(!m("nickName pr"), "null");
        assert!(!m("phoneNumbers pr"), "empty array");
        assert!(!m("profileUrl pr"), "absent");
        assert!(!m("emails.display pr"), "absent in every element");
        assert!(!m("noSuchAttribute pr"), "unknown");
        assert!(m("not (noSuchAttribute pr)"));
    }

    #[test]
    fn booleans_compare_by_equality_only() {
        assert!(m("active eq true"));
        assert!(m("active eq TRUE"));
        assert!(!m("active eq false"));
        assert!(m("active ne false"));
        assert!(!m("active gt false"));
        assert!(
            !m(r#"active eq "true""#),
            "a string literal does not equal a boolean"
        );
    }

    #[test]
    fn date_times_compare_as_instants() {
        assert!(m(r#"meta.lastModified gt "2011-05-13T04:42:33Z""#));
        assert!(!m(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#));
        assert!(m(r#"meta.lastModified ge "2011-05-13T04:42:34Z""#));
        // The same instant written in another offset is equal, and ordering is chronological
        // rather than lexical.
        assert!(m(r#"meta.lastModified eq "2011-05-13T06:42:34+02:00""#));
        assert!(!m(r#"meta.lastModified lt "2011-05-13T05:00:00+00:30""#));
        assert!(m(r#"meta.lastModified lt "2011-05-13T06:00:00+01:00""#));
        assert!(m(r#"meta.created lt "2011-01-01T00:00:00.5Z""#));
        assert!(m(r#"meta.created sw "2010-01""#));
        // Unparsable literal: falls back to comparing text.
        assert!(m(r#"meta.created gt "2010""#));
        assert!(!m(r#"meta.created gt "2011""#));
    }

    #[test]
    fn numbers_compare_numerically() {
        static COUNT: AttrDef = AttrDef {
            name: "count",
            ty: AttrType::Integer,
            multi_valued: false,
            description: "",
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: &[],
            reference_types: &[],
            sub_attributes: &[],
        };
        let num = |n: f64| CompValue::Num(Number::from_f64(n).unwrap());
        assert!(compare_one(
            &json!(10),
            CompareOp::Gt,
            &CompValue::Num(9.into()),
            &COUNT
        ));
        assert!(compare_one(&json!(10), CompareOp::Eq, &num(10.0), &COUNT));
        assert!(compare_one(&json!(-3), CompareOp::Lt, &num(-2.5), &COUNT));
        assert!(compare_one(
            &json!(u64::MAX),
            CompareOp::Gt,
            &CompValue::Num(i64::MAX.into()),
            &COUNT
        ));
        assert!(!compare_one(
            &json!(10),
            CompareOp::Co,
            &CompValue::Num(1.into()),
            &COUNT
        ));
        assert!(!compare_one(
            &json!("10"),
            CompareOp::Eq,
            &CompValue::Num(10.into()),
            &COUNT
        ));
    }

    #[test]
    fn multi_valued_attributes_match_when_any_value_matches() {
        assert!(m(r#"emails.value ew "@jensen.org""#));
        assert!(m(r#"emails.type eq "WORK""#));
        assert!(!m(r#"emails.type eq "other""#));
        // Without a sub-attribute, a complex multi-valued attribute compares its `value`.
        assert!(m(r#"emails co "babs@""#));
        assert!(m(r#"emails eq "BJENSEN@example.com""#));
        assert!(
            !m(r#"name eq "Barbara""#),
            "single-valued complex has no `value`"
        );
    }

    #[test]
    fn value_path_requires_one_element_to_match_every_term() {
        assert!(m(r#"emails[type eq "work" and value co "example.com"]"#));
        assert!(!m(r#"emails[type eq "home" and value co "example.com"]"#));
        // The same terms outside a value path may match different elements.
        assert!(m(
            r#"emails.type eq "home" and emails.value co "example.com""#
        ));
        assert!(m(r#"emails[primary eq true]"#));
        assert!(m(r#"emails[not (primary pr)]"#));
        assert!(!m(r#"emails[nope pr]"#));
        assert!(!m(r#"userName[value pr]"#), "not complex");
        assert!(
            m(r#"name[givenName sw "barb"]"#),
            "single-valued complex works too"
        );
    }

    #[test]
    fn extension_attributes_match_with_or_without_urn() {
        assert!(m(r#"employeeNumber eq "701984""#));
        assert!(m(&format!(r#"{ENTERPRISE}:employeeNumber eq "701984""#)));
        assert!(m(&format!(
            r#"{}:EMPLOYEENUMBER eq "701984""#,
            ENTERPRISE.to_lowercase()
        )));
        assert!(m(&format!(
            r#"{ENTERPRISE}:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d""#
        )));
        assert!(!m(&format!(
            r#"{ENTERPRISE}:manager.value eq "26118915-6090-4610-87E4-49D8CA9F808D""#
        )));
        assert!(m("manager pr"));
        assert!(!m("department pr"));
        assert!(!m(r#"urn:example:unknown:employeeNumber eq "701984""#));
        assert!(!matches(
            &p(r#"employeeNumber eq "701984""#),
            &json!({"userName": "x"}),
            ResourceKind::User
        ));
    }

    #[test]
    fn core_urn_prefix_names_core_attributes() {
        assert!(m(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bjensen""#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:name.familyName eq "jensen""#
        ));
        assert!(!m(
            r#"urn:ietf:params:scim:schemas:core:2.0:Group:userName pr"#
        ));
    }

    #[test]
    fn resource_attribute_names_match_case_insensitively() {
        let r = json!({ "USERNAME": "x", "Emails": [{ "VALUE": "a@b" }] });
        assert!(matches(&p(r#"userName eq "X""#), &r, ResourceKind::User));
        assert!(matches(
            &p(r#"emails.value eq "A@B""#),
            &r,
            ResourceKind::User
        ));
        assert!(matches(
            &p(r#"emails[value eq "a@b"]"#),
            &r,
            ResourceKind::User
        ));
    }

    #[test]
    fn complex_filters_combine() {
        assert!(m(
            r#"userType eq "Employee" or (emails co "example.com" and not (active eq false))"#
        ));
        assert!(!m(
            r#"(userName sw "b" or displayName sw "b") and meta.lastModified lt "2000-01-01T00:00:00Z""#
        ));
        assert!(m(
            r#"(userName sw "x" or displayName sw "babs") and meta.lastModified gt "2000-01-01T00:00:00Z""#
        ));
    }

    #[test]
    fn group_members_match_by_value_path() {
        let group = json!({
            "displayName": "Tour Guides",
            "members": [
                { "value": "2819c223-7f76-453a-919d-413861904646", "type": "User" },
                { "value": "902c246b-6245-4190-8e05-00816be7344a", "type": "User" }
            ]
        });
        let g = |text: &str| matches(&p(text), &group, ResourceKind::Group);
        assert!(g(
            r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#
        ));
        assert!(!g(
            r#"members[value eq "2819C223-7F76-453A-919D-413861904646"]"#
        ));
        assert!(g(
            r#"members.value eq "902c246b-6245-4190-8e05-00816be7344a""#
        ));
        assert!(g(r#"displayName eq "tour guides""#));
        assert!(!g("userName pr"), "not a Group attribute");
    }

    #[test]
    fn required_eq_collects_terms_every_match_must_satisfy() {
        let f = p(
            r#"userName eq "a" and (title pr or x eq "y") and emails[value eq "m"] and active eq true"#,
        );
        assert_eq!(
            required_eq(&f),
            vec![
                (path("userName"), "a".to_string()),
                (path("emails.value"), "m".to_string())
            ]
        );
        assert!(required_eq(&p(r#"userName eq "a" or userName eq "b""#)).is_empty());
        assert!(required_eq(&p(r#"not (userName eq "a")"#)).is_empty());
        assert!(required_eq(&p(r#"userName ne "a""#)).is_empty());
        assert_eq!(
            required_eq(&p(r#"externalId eq "E""#)),
            vec![(path("externalId"), "E".to_string())]
        );
    }

    // --- properties --------------------------------------------------------------------------

    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-zA-Z][a-zA-Z0-9_-]{0,6}",
            1 => "\\$[a-zA-Z][a-z0-9]{0,3}",
            // Keywords are valid attribute names too.
            1 => prop::sample::select(vec!["not", "and", "or", "pr", "eq", "true", "null"]).prop_map(String::from),
        ]
    }

    fn arb_path(simple: bool) -> BoxedStrategy<AttrPath> {
        if simple {
            return arb_name()
                .prop_map(|name| AttrPath {
                    uri: None,
                    name,
                    sub: None,
                })
                .boxed();
        }
        (
            prop::option::of("urn:[a-z]{1,5}(:[a-zA-Z0-9.]{1,5}){0,3}"),
            arb_name(),
            prop::option::of(arb_name()),
        )
            .prop_map(|(uri, name, sub)| AttrPath { uri, name, sub })
            .boxed()
    }

    fn arb_value() -> impl Strategy<Value = CompValue> {
        prop_oneof![
            any::<String>().prop_map(CompValue::Str),
            any::<i64>().prop_map(|n| CompValue::Num(n.into())),
            any::<u64>().prop_map(|n| CompValue::Num(n.into())),
            any::<f64>()
                .prop_filter_map("finite", Number::from_f64)
                .prop_map(CompValue::Num),
            any::<bool>().prop_map(CompValue::Bool),
            Just(CompValue::Null),
        ]
    }

    fn arb_op() -> impl Strategy<Value = CompareOp> {
        use CompareOp::*;
        prop::sample::select(vec![Eq, Ne, Co, Sw, Ew, Gt, Ge, Lt, Le])
    }

    fn arb_leaf(simple: bool) -> BoxedStrategy<Filter> {
        prop_oneof![
            (arb_path(simple), arb_op(), arb_value())
                .prop_map(|(path, op, value)| Filter::Compare { path, op, value }),
            arb_path(simple).prop_map(Filter::Present),
        ]
        .boxed()
    }

    fn combine(leaf: BoxedStrategy<Filter>) -> BoxedStrategy<Filter> {
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
                inner.prop_map(|a| Filter::Not(Box::new(a))),
            ]
        })
        .boxed()
    }

    fn arb_filter() -> BoxedStrategy<Filter> {
        let value_path =
            (arb_path(true), combine(arb_leaf(true))).prop_map(|(path, f)| Filter::ValuePath {
                path,
                filter: Box::new(f),
            });
        combine(prop_oneof![3 => arb_leaf(false), 1 => value_path].boxed())
    }

    const ROOMY: FilterLimits = FilterLimits {
        max_len: usize::MAX,
        max_depth: 10_000,
    };

    proptest! {
        #[test]
        fn printing_then_parsing_gives_the_same_filter(f in arb_filter()) {
            let text = f.to_string();
            prop_assert_eq!(parse(&text, &ROOMY), Ok(f), "text: {}", text);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse(&text, &FilterLimits::default());
            let _ = parse_value_filter(&text, &FilterLimits::default());
            let _ = parse_attr_path(&text);
        }

        #[test]
        fn parsing_filter_like_text_never_panics_and_round_trips(
            text in r#"([a-zA-Z:.$]{1,6}|[ ()\[\]"\\]|eq|and|or|not|pr|-?[0-9.eE]{1,4}|\\u[0-9a-f]{0,4}|é){0,24}"#
        ) {
            if let Ok(f) = parse(&text, &ROOMY) {
                prop_assert_eq!(parse(&f.to_string(), &ROOMY), Ok(f));
            }
        }

        #[test]
        fn evaluation_agrees_with_a_reference_evaluator(
            resource in reference::arb_user(),
            f in reference::arb_user_filter(),
        ) {
            let text = f.to_string();
            prop_assert_eq!(
                matches(&f, &resource, ResourceKind::User),
                reference::eval(&f, &resource),
                "filter: {} resource: {}", text, resource
            );
        }
    }

    /// An independent, deliberately naive evaluator for a User subset whose schema facts are
    /// written out by hand: `userName`, `displayName` (case-insensitive strings), `active`
    /// (boolean) and `emails` (multi-valued complex; `value`, `type` case-insensitive strings,
    /// `primary` boolean).
    mod reference {
        use super::*;

        pub fn arb_user() -> impl Strategy<Value = Value> {
            let text = || prop::option::of("[aAbB]{0,3}");
            let email = (
                prop::option::of(prop::sample::select(vec!["work", "home", "WORK"])),
                text(),
                prop::option::of(any::<bool>()),
            )
                .prop_map(|(ty, value, primary)| {
                    let mut e = Map::new();
                    if let Some(t) = ty {
                        e.insert("type".into(), json!(t));
                    }
                    if let Some(v) = value {
                        e.insert("value".into(), json!(v));
                    }
                    if let Some(p) = primary {
                        e.insert("primary".into(), json!(p));
                    }
                    Value::Object(e)
                });
            (
                text(),
                text(),
                prop::option::of(any::<bool>()),
                prop::option::of(prop::collection::vec(email, 0..3)),
            )
                .prop_map(|(user_name, display_name, active, emails)| {
                    let mut u = Map::new();
                    if let Some(v) = user_name {
                        u.insert("userName".into(), json!(v));
                    }
                    if let Some(v) = display_name {
                        u.insert("displayName".into(), json!(v));
                    }
                    if let Some(v) = active {
                        u.insert("active".into(), json!(v));
                    }
                    if let Some(v) = emails {
                        u.insert("emails".into(), json!(v));
                    }
                    Value::Object(u)
                })
        }

        fn lit() -> impl Strategy<Value = CompValue> {
            prop_oneof![
                4 => "[aAbB]{0,2}".prop_map(CompValue::Str),
                1 => any::<bool>().prop_map(CompValue::Bool),
                1 => Just(CompValue::Null),
                1 => (0i64..3).prop_map(|n| CompValue::Num(n.into())),
            ]
        }

        fn names(choices: &[&'static str]) -> impl Strategy<Value = AttrPath> {
            prop::sample::select(choices.to_vec()).prop_map(|t| split_attr_path(t).unwrap())
        }

        fn leaf(paths: &[&'static str]) -> BoxedStrategy<Filter> {
            prop_oneof![
                4 => (names(paths), arb_op(), lit()).prop_map(|(path, op, value)| Filter::Compare { path, op, value }),
                1 => names(paths).prop_map(Filter::Present),
            ]
            .boxed()
        }

        pub fn arb_user_filter() -> BoxedStrategy<Filter> {
            let top = [
                "userName",
                "USERNAME",
                "displayName",
                "active",
                "emails",
                "emails.value",
                "emails.TYPE",
                "emails.primary",
                "title",
            ];
            let inner = ["value", "type", "Primary", "display"];
            let value_path = combine(leaf(&inner)).prop_map(|f| Filter::ValuePath {
                path: split_attr_path("emails").unwrap(),
                filter: Box::new(f),
            });
            combine(prop_oneof![3 => leaf(&top), 1 => value_path].boxed())
        }

        #[derive(Clone, Copy, PartialEq)]
        enum Kind {
            Text,
            Flag,
        }

        /// The values a (top-level) path reaches and their kind; `None` for unknown names.
        fn values(path: &AttrPath, user: &Value) -> Option<(Vec<Value>, Kind)> {
            let field = |v: &Value, k: &str| {
                v.get(k)
                    .cloned()
                    .into_iter()
                    .filter(|x| !x.is_null())
                    .collect::<Vec<_>>()
            };
            let emails: Vec<Value> = user
                .get("emails")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let of_emails = |k: &str| emails.iter().flat_map(|e| field(e, k)).collect::<Vec<_>>();
            let name = path.name.to_lowercase();
            let sub = path.sub.as_ref().map(|s| s.to_lowercase());
            Some(match (name.as_str(), sub.as_deref()) {
                ("username", None) => (field(user, "userName"), Kind::Text),
                ("displayname", None) => (field(user, "displayName"), Kind::Text),
                ("title", None) => (field(user, "title"), Kind::Text),
                ("active", None) => (field(user, "active"), Kind::Flag),
                ("emails", None | Some("value")) => (of_emails("value"), Kind::Text),
                ("emails", Some("type")) => (of_emails("type"), Kind::Text),
                ("emails", Some("primary")) => (of_emails("primary"), Kind::Flag),
                _ => return None,
            })
        }

        fn inner_values(path: &AttrPath, email: &Value) -> Option<(Vec<Value>, Kind)> {
            let field = |k: &str| {
                email
                    .get(k)
                    .cloned()
                    .into_iter()
                    .filter(|x| !x.is_null())
                    .collect::<Vec<_>>()
            };
            Some(match path.name.to_lowercase().as_str() {
                "value" => (field("value"), Kind::Text),
                "type" => (field("type"), Kind::Text),
                "display" => (field("display"), Kind::Text),
                "primary" => (field("primary"), Kind::Flag),
                _ => return None,
            })
        }

        fn one(actual: &Value, op: CompareOp, lit: &CompValue, kind: Kind) -> bool {
            match (kind, actual, lit) {
                (Kind::Text, Value::String(a), CompValue::Str(l)) => {
                    let (a, l) = (a.to_lowercase(), l.to_lowercase());
                    match op {
                        CompareOp::Eq => a == l,
                        CompareOp::Ne => a != l,
                        CompareOp::Co => a.contains(&l),
                        CompareOp::Sw => a.starts_with(&l),
                        CompareOp::Ew => a.ends_with(&l),
                        CompareOp::Gt => a > l,
                        CompareOp::Ge => a >= l,
                        CompareOp::Lt => a < l,
                        CompareOp::Le => a <= l,
                    }
                }
                (Kind::Flag, Value::Bool(a), CompValue::Bool(l)) => op == CompareOp::Eq && a == l,
                _ => false,
            }
        }

        fn check(found: Option<(Vec<Value>, Kind)>, f: &Filter) -> bool {
            let Some((vals, kind)) = found else {
                return false;
            };
            match f {
                Filter::Present(_) => vals.iter().any(|v| v != &json!("")),
                Filter::Compare {
                    op,
                    value: CompValue::Null,
                    ..
                } => match op {
                    CompareOp::Eq => vals.is_empty(),
                    CompareOp::Ne => !vals.is_empty(),
                    _ => false,
                },
                Filter::Compare {
                    op: CompareOp::Ne,
                    value,
                    ..
                } => !vals.iter().any(|v| one(v, CompareOp::Eq, value, kind)),
                Filter::Compare { op, value, .. } => vals.iter().any(|v| one(v, *op, value, kind)),
                _ => unreachable!(),
            }
        }

        fn eval_inner(f: &Filter, email: &Value) -> bool {
            match f {
                Filter::And(a, b) => eval_inner(a, email) && eval_inner(b, email),
                Filter::Or(a, b) => eval_inner(a, email) || eval_inner(b, email),
                Filter::Not(a) => !eval_inner(a, email),
                Filter::Present(p) | Filter::Compare { path: p, .. } => {
                    check(inner_values(p, email), f)
                }
                Filter::ValuePath { .. } => false,
            }
        }

        pub fn eval(f: &Filter, user: &Value) -> bool {
            match f {
                Filter::And(a, b) => eval(a, user) && eval(b, user),
                Filter::Or(a, b) => eval(a, user) || eval(b, user),
                Filter::Not(a) => !eval(a, user),
                // `pr` on a complex attribute asks for any non-empty sub-attribute.
                Filter::Present(p) if p.name.eq_ignore_ascii_case("emails") && p.sub.is_none() => {
                    user.get("emails")
                        .and_then(Value::as_array)
                        .is_some_and(|emails| {
                            emails
                                .iter()
                                .filter_map(Value::as_object)
                                .any(|e| e.values().any(|v| !v.is_null() && v != &json!("")))
                        })
                }
                Filter::Present(p) | Filter::Compare { path: p, .. } => check(values(p, user), f),
                Filter::ValuePath { filter, .. } => user
                    .get("emails")
                    .and_then(Value::as_array)
                    .is_some_and(|emails| emails.iter().any(|e| eval_inner(filter, e))),
            }
        }
    }
}
