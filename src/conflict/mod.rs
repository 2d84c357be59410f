//! Conflict rules: how concurrent writes from different regions end, and the record of each
//! automatic decision. Pure: works on an in-memory Automerge document, no I/O.
//!
//! The rules themselves live in the document layout (see `store::doc`), so that every region
//! reaches the same state by merging alone, whatever order changes arrive in; this module reads
//! a merged document and reports which rule decided what ([`detect`]), so the decision is on the
//! record. Records carry a deterministic id, so the regions that each observe one merge store one
//! record between them.
//!
//! Placeholder: the detection is added in the next commit.

pub mod record;

pub use record::{Candidate, Conflict, ConflictQuery, Rule};
