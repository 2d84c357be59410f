//! The pure SCIM core (RFC 7643 / RFC 7644): schemas, filters, PATCH, validation, listing.
//!
//! Nothing here does I/O, reads a clock or spawns a task: resources are `serde_json::Value`
//! objects in SCIM wire form (core attributes at the top level, extension attributes under their
//! schema URN), and time arrives as a parameter. That keeps every rule testable with plain unit and
//! property tests, and lets `store` and `api` stay thin.

pub mod bulk;
pub mod cursor;
pub mod error;
pub mod filter;
pub mod list;
pub mod members;
pub mod patch;
pub mod path;
pub mod resource;
pub mod schema;

pub use error::{ScimError, ScimResult};
