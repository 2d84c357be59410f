//! PATCH paths (RFC 7644 §3.5.2): `attrPath` or `valuePath [ "." subAttr ]`. Pure.
//!
//! Every malformed path is [`ScimError::InvalidPath`], including a malformed value filter inside
//! the brackets: the client sent a bad `path`, and `invalidPath` is what RFC 7644 §3.5.2 lists for
//! that. The detail names the path and what is wrong with it.

use super::error::{ScimError, ScimResult};
use super::filter::{self, AttrPath, Filter, FilterLimits};

/// A parsed PATCH `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute (with optional sub-attribute when there is no value filter).
    pub attr: AttrPath,
    /// The value filter of `attr[filter]`, if any.
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter: `emails[type eq "work"].value`.
    pub sub_after_filter: Option<String>,
}

/// Parse a PATCH path. Surrounding whitespace is ignored; the filter limits bound the length of
/// the whole path and the nesting of its value filter.
pub fn parse_patch_path(input: &str, limits: &FilterLimits) -> ScimResult<PatchPath> {
    let text = input.trim();
    if text.is_empty() {
        return Err(ScimError::InvalidPath("empty path".to_string()));
    }
    if text.len() > limits.max_len {
        return Err(ScimError::InvalidPath(format!(
            "path is {} bytes long, more than the limit (max_len) of {} bytes",
            text.len(),
            limits.max_len
        )));
    }
    let Some(open) = text.find('[') else {
        if text.contains(']') {
            return Err(invalid(text, "']' without a matching '['"));
        }
        let attr = filter::parse_attr_path(text)?;
        return Ok(PatchPath {
            attr,
            filter: None,
            sub_after_filter: None,
        });
    };
    let attr = filter::parse_attr_path(&text[..open])?;
    if attr.sub.is_some() {
        return Err(invalid(
            text,
            "a value filter '[...]' must follow an attribute, not a sub-attribute",
        ));
    }
    let close = closing_bracket(text, open)
        .ok_or_else(|| invalid(text, "missing ']' to close the value filter"))?;
    let inner = filter::parse_value_filter(&text[open + 1..close], limits)
        .map_err(|e| invalid(text, &format!("bad value filter: {}", e.detail())))?;
    let sub_after_filter = sub_after(text, &text[close + 1..])?;
    Ok(PatchPath {
        attr,
        filter: Some(inner),
        sub_after_filter,
    })
}

/// The optional `.subAttr` after `]`.
fn sub_after(path: &str, rest: &str) -> ScimResult<Option<String>> {
    if rest.is_empty() {
        return Ok(None);
    }
    match rest.strip_prefix('.') {
        Some(sub) if filter::is_attr_name(sub) => Ok(Some(sub.to_string())),
        Some(sub) => Err(invalid(
            path,
            &format!("'{sub}' after ']' is not a sub-attribute name"),
        )),
        None => Err(invalid(
            path,
            &format!("unexpected '{rest}' after ']' (only '.subAttribute' may follow)"),
        )),
    }
}

/// The byte offset of the `]` closing the `[` at `open`, skipping brackets inside JSON string
/// literals (`emails[value eq "a]b"]`).
fn closing_bracket(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut i = open + 1;
    while i < bytes.len() {
        match (bytes[i], in_string) {
            (b'\\', true) => i += 1,
            (b'"', _) => in_string = !in_string,
            (b']', false) => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn invalid(path: &str, what: &str) -> ScimError {
    ScimError::InvalidPath(format!("invalid path '{path}': {what}"))
}
