//! Small helpers to write schemas and diagnostics tersely.

use std::collections::HashMap;

use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::{AttributePath, Diagnostics};

/// An attribute of type `ty`.
pub fn attr(ty: AttributeType, constraint: AttributeConstraint, doc: &str) -> Attribute {
    Attribute {
        attr_type: ty,
        description: Description::plain(doc.to_string()),
        constraint,
        sensitive: false,
        deprecated: false,
    }
}

/// The same, sensitive (never shown in plans or logs).
pub fn secret(ty: AttributeType, constraint: AttributeConstraint, doc: &str) -> Attribute {
    Attribute {
        sensitive: true,
        ..attr(ty, constraint, doc)
    }
}

/// `list(string)`.
pub fn strings() -> AttributeType {
    AttributeType::List(Box::new(AttributeType::String))
}

/// `map(string)`.
pub fn string_map() -> AttributeType {
    AttributeType::Map(Box::new(AttributeType::String))
}

/// A schema of `attributes` with a description.
pub fn schema(doc: &str, attributes: Vec<(&str, Attribute)>) -> Schema {
    Schema {
        version: 1,
        block: Block {
            version: 1,
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<HashMap<_, _>>(),
            description: Description::plain(doc.to_string()),
            ..Default::default()
        },
    }
}

/// An error on `attribute` (top-level name) with a detail that says the fix.
pub fn error_at(diags: &mut Diagnostics, attribute: &str, summary: &str, detail: String) {
    diags.error(summary.to_string(), detail, attribute_path(attribute));
}

/// `cluster[1].http` as a Terraform attribute path.
pub fn attribute_path(path: &str) -> AttributePath {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let (name, index) = split_index(first);
    let mut p = AttributePath::new(name.to_string());
    if let Some(i) = index {
        p = p.index(i);
    }
    for part in parts {
        let (name, index) = split_index(part);
        p = p.attribute(name.to_string());
        if let Some(i) = index {
            p = p.index(i);
        }
    }
    p
}

fn split_index(part: &str) -> (&str, Option<i64>) {
    match part.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
        None => (part, None),
    }
}

/// A Terraform number that is not an integer. Terraform encodes a number as a MessagePack
/// float only when float64 holds it exactly, else as its decimal string (50.11 arrives as
/// "50.11"), so both are read here; it is written back as a float.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct Number(pub f64);

impl<'de> serde::Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a decimal string")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Number, E> {
                v.parse().map(Number).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
