//! SCIM security events (RFC 9967): what each write meant ([`intent`]), the Security Event
//! Token made of it ([`set`]), and the poll request of a receiver (RFC 8936, [`poll`]). Pure:
//! no I/O, time is a parameter.
//!
//! How the parts meet (the README's "SCIM events" has the operator's view):
//! - a write an API request makes records its [`Intent`] in its last replication log entry, so
//!   every region derives the same event from the same entry, whether it accepted the write
//!   or merged it from a peer; the event's `jti` is the entry's `origin.sequence`;
//! - `store` keeps a feed per tenant, written in the batch that commits the entry (an
//!   acknowledged write's event is as durable as the write), and removes what was acknowledged;
//! - `api::events` answers polls (`POST /scim/v2/Events`), `push` delivers to a receiver URL.

pub mod intent;
pub mod poll;
pub mod set;

pub use intent::{Access, Intent, Op};
