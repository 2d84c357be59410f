//! PATCH paths (RFC 7644 §3.5.2): `attrPath` or `valuePath [ "." subAttr ]`. Pure.

use super::error::ScimResult;
use super::filter::{AttrPath, Filter, FilterLimits};

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

/// Parse a PATCH path.
pub fn parse_patch_path(input: &str, limits: &FilterLimits) -> ScimResult<PatchPath> {
    let _ = (input, limits);
    todo!()
}
