//! The document layout the rules live in (document format 2, unchanged by storage format 3). `store::doc` writes it; [`super::detect`]
//! reads it.
//!
//! ```text
//! { "h": "{\"v\":2,\"type\":\"User\",\"id\":\"…\"}",   // header  } the genesis change: written by
//!   "a": { … },                                         // attrs   } GENESIS_ACTOR at time 0, so
//!                                                       //           every region writes the same
//!   "c": "{\"at\":\"…\",\"by\":\"region\"}",            // creation (one per creating region)
//!   "m": "…",                                           // lastModified
//!   "a": { "<attribute>": "<JSON text>",                // one value per attribute
//!          "<extension URN>:<attribute>": "<JSON text>",
//!          "active": { "value": bool, "at", "by" },     // disable-wins flag
//!          "members": { … } },                          // storage format 2 only (see below)
//!   "d": { "at", "by" },                                // tombstone
//!   "x": { "<conflict id>": "<JSON of the record>" } }  // conflict records
//! ```
//! Storage format 2 kept a group's members in its document (`"<id>": { "on", "m", "at", "by" }`,
//! remove-wins). Format 3 keeps each membership as a record of its own
//! ([`super::membership`]); the map is read only by the migration and never written.
//!
//! Why a shared genesis: concurrent creates of one user (same deterministic id) in two regions
//! must write into *one* attributes map. Two independently created `a` maps would be a conflict
//! on the root key, and the losing map, with every attribute its region wrote, would vanish.

/// Document format version, stored in every header as `v`.
pub const DOC_FORMAT: i64 = 2;

/// The actor of the genesis change (not a valid region name, so it never writes anything else).
pub const GENESIS_ACTOR: &[u8] = b"~genesis";

pub const HEADER: &str = "h";
pub const ATTRS: &str = "a";
pub const CREATED: &str = "c";
pub const MODIFIED: &str = "m";
pub const DELETED: &str = "d";
pub const CONFLICTS: &str = "x";
pub const ACTIVE: &str = "active";
pub const MEMBERS: &str = "members";

/// Keys inside a sticky flag or a member entry.
pub const VALUE: &str = "value";
pub const ON: &str = "on";
pub const MEMBER: &str = "m";
pub const AT: &str = "at";
pub const BY: &str = "by";
