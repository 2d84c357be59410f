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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::{CompValue, CompareOp};
    use proptest::prelude::*;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn pp(text: &str) -> PatchPath {
        parse_patch_path(text, &FilterLimits::default()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn path_err(text: &str) -> String {
        match parse_patch_path(text, &FilterLimits::default()) {
            Err(ScimError::InvalidPath(detail)) => detail,
            other => panic!("{text}: expected InvalidPath, got {other:?}"),
        }
    }

    fn attr(uri: Option<&str>, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            uri: uri.map(String::from),
            name: name.into(),
            sub: sub.map(String::from),
        }
    }

    fn eq(name: &str, value: &str) -> Filter {
        Filter::Compare {
            path: attr(None, name, None),
            op: CompareOp::Eq,
            value: CompValue::Str(value.into()),
        }
    }

    #[test]
    fn plain_and_dotted_attribute_paths() {
        assert_eq!(
            pp("userName"),
            PatchPath {
                attr: attr(None, "userName", None),
                filter: None,
                sub_after_filter: None
            }
        );
        assert_eq!(
            pp("name.givenName").attr,
            attr(None, "name", Some("givenName"))
        );
        assert_eq!(pp(" active ").attr, attr(None, "active", None));
    }

    #[test]
    fn urn_prefixed_paths_split_at_the_last_colon() {
        assert_eq!(
            pp("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName").attr,
            attr(
                Some("urn:ietf:params:scim:schemas:core:2.0:User"),
                "name",
                Some("familyName")
            )
        );
        assert_eq!(
            pp(&format!("{ENTERPRISE}:manager.value")).attr,
            attr(Some(ENTERPRISE), "manager", Some("value"))
        );
        assert_eq!(
            pp(&format!("{ENTERPRISE}:employeeNumber")).attr,
            attr(Some(ENTERPRISE), "employeeNumber", None)
        );
    }

    #[test]
    fn value_filter_with_sub_attribute() {
        let p = pp(r#"emails[type eq "work"].value"#);
        assert_eq!(p.attr, attr(None, "emails", None));
        assert_eq!(p.filter, Some(eq("type", "work")));
        assert_eq!(p.sub_after_filter.as_deref(), Some("value"));
    }

    #[test]
    fn value_filter_on_group_members() {
        let p = pp(r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#);
        assert_eq!(p.attr, attr(None, "members", None));
        assert_eq!(
            p.filter,
            Some(eq("value", "2819c223-7f76-453a-919d-413861904646"))
        );
        assert_eq!(p.sub_after_filter, None);
    }

    #[test]
    fn value_filter_may_contain_brackets_in_strings_and_logic() {
        let p = pp(r#"emails[value eq "a]b" or not (type pr)]"#);
        assert!(matches!(p.filter, Some(Filter::Or(..))));
        let p = pp(&format!(r#"{ENTERPRISE}:manager[value pr].displayName"#));
        assert_eq!(p.attr, attr(Some(ENTERPRISE), "manager", None));
        assert_eq!(p.sub_after_filter.as_deref(), Some("displayName"));
    }

    #[test]
    fn malformed_paths_are_invalid_path_errors_naming_the_path() {
        assert!(path_err("").contains("empty path"));
        assert!(path_err("emails[type eq \"work\"").contains("missing ']'"));
        assert!(path_err("emails]").contains("without a matching '['"));
        assert!(path_err("emails[type eq \"work\"]value").contains("unexpected 'value' after ']'"));
        assert!(path_err("emails[type eq \"work\"].").contains("is not a sub-attribute name"));
        assert!(
            path_err("emails[type eq \"work\"].value.x").contains("is not a sub-attribute name")
        );
        assert!(path_err("name.givenName[value pr]").contains("not a sub-attribute"));
        assert!(path_err("a.b.c").contains("at most one sub-attribute"));
        assert!(path_err("1bad").contains("'1bad' is not an attribute name"));
        assert!(path_err("emails[]").contains("invalid path 'emails[]'"));
        let detail = path_err(r#"emails[type xx "work"]"#);
        assert!(
            detail.contains("bad value filter") && detail.contains("unknown operator 'xx'"),
            "{detail}"
        );
        assert!(path_err(r#"emails[type[value pr]]"#).contains("cannot be nested"));
        assert!(path_err(r#"emails[urn:x:y:type pr]"#).contains("plain sub-attribute names"));
    }

    #[test]
    fn limits_apply_to_paths() {
        let limits = FilterLimits {
            max_len: 8,
            max_depth: 1,
        };
        let err = parse_patch_path("emails[type pr]", &limits).unwrap_err();
        assert!(
            matches!(&err, ScimError::InvalidPath(d) if d.contains("max_len")),
            "{err}"
        );
        let limits = FilterLimits {
            max_len: 100,
            max_depth: 1,
        };
        let err = parse_patch_path("emails[a pr and (b pr)]", &limits).unwrap_err();
        assert!(
            matches!(&err, ScimError::InvalidPath(d) if d.contains("max_depth")),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_paths_never_panic(text in any::<String>()) {
            let _ = parse_patch_path(&text, &FilterLimits::default());
        }

        #[test]
        fn path_like_text_never_panics(text in r#"([a-zA-Z:.$]{1,5}|[ ()\[\]"\\.]|eq|pr|é){0,16}"#) {
            if let Err(e) = parse_patch_path(&text, &FilterLimits::default()) {
                prop_assert!(matches!(e, ScimError::InvalidPath(_)));
            }
        }
    }
}
