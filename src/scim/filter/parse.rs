//! The filter parser: recursive descent over untrusted text, bounded by [`FilterLimits`]
//! before recursion can get deep (see the module docs of `super`).

use serde_json::Number;

use super::{is_attr_name, split_attr_path, AttrPath, CompValue, CompareOp, Filter, FilterLimits};
use crate::scim::error::{ScimError, ScimResult};

pub(super) fn parse_with_mode(
    input: &str,
    limits: &FilterLimits,
    value_filter: bool,
) -> ScimResult<Filter> {
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
