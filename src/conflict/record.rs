//! The conflict record: what the log stores, the admin API serves and the dashboard shows.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The rule that decided a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A deactivation concurrent with a reactivation (or any edit asserting `active:true`):
    /// the user ends inactive.
    StickyDeactivation,
    /// A delete concurrent with updates: the resource ends deleted.
    DeleteWins,
    /// Concurrent creates of one userName in different regions: one resource, attributes
    /// merged per attribute.
    UsernameMerge,
    /// A member removal concurrent with an add of the same member: the member ends removed.
    MembershipRemoveWins,
    /// Any other concurrent write of one attribute: a deterministic winner.
    ConcurrentScalar,
}

impl Rule {
    /// Every rule, in a fixed order (metrics, docs).
    pub const ALL: [Rule; 5] = [
        Rule::StickyDeactivation,
        Rule::DeleteWins,
        Rule::UsernameMerge,
        Rule::MembershipRemoveWins,
        Rule::ConcurrentScalar,
    ];

    /// The rule's name as written in records, filters and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::StickyDeactivation => "sticky-deactivation",
            Rule::DeleteWins => "delete-wins",
            Rule::UsernameMerge => "username-merge",
            Rule::MembershipRemoveWins => "membership-remove-wins",
            Rule::ConcurrentScalar => "concurrent-scalar",
        }
    }

    /// Parse a rule name (as written by [`Rule::as_str`]).
    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One of the concurrent values of a conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The value written (JSON; `null` for a delete or a removal).
    pub value: Value,
    /// The region that wrote it.
    pub region: String,
    /// When that region wrote it (RFC 3339, the writing region's clock).
    pub at: String,
}

/// One automatic resolution of concurrent writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    /// Deterministic: the same conflict observed in several regions has one id.
    pub id: String,
    pub tenant: String,
    /// `User` or `Group`.
    pub resource_type: String,
    pub resource_id: String,
    /// The attribute (`active`, `userName`, `members[value eq "…"]`, `(resource)` for a delete).
    pub attribute: String,
    pub rule: Rule,
    /// The concurrent values, ordered by region then time.
    pub values: Vec<Candidate>,
    /// The value the resource ended with (`null`: deleted or removed).
    pub outcome: Value,
    /// When the conflict happened: the latest `at` among the values.
    pub at: String,
}

/// A query over stored conflict records (the admin API's filters and paging).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConflictQuery {
    pub tenant: Option<String>,
    pub rule: Option<Rule>,
    pub resource_id: Option<String>,
    /// Only conflicts at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only conflicts before this RFC 3339 time.
    pub until: Option<String>,
    /// 1-based index of the first record returned.
    pub start_index: usize,
    /// At most this many records.
    pub count: usize,
}
