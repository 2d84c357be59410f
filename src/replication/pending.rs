//! Pending offboardings: the deactivations and deletes some region has accepted that not every
//! region holds yet. Pure: the store's records ([`Offboarding`], each at its log position) and
//! the marks each peer last reported in, the list out, oldest first.
//!
//! A region holds the write at (origin, seq) exactly when its mark for `origin` is at least
//! `seq`. A peer that never reported holds nothing as far as this region knows; a peer that is
//! cut off keeps the marks it last reported, so its offboardings stay pending until it reports
//! again: the list errs on the side of "not yet everywhere".

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::Offboarding;

/// One pending offboarding: the record, how old it is, and the regions that lack it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    #[serde(flatten)]
    pub record: Offboarding,
    /// Milliseconds since the write (by this region's clock; 0 when the clocks disagree).
    pub age_ms: i64,
    /// The regions not known to hold it, by name.
    pub missing: Vec<String>,
}

/// The records that some peer lacks, oldest first (then by origin and sequence). `peers` maps
/// every other region to the marks it last reported (`None`: it has not reported).
pub fn pending(
    records: Vec<Offboarding>,
    peers: &BTreeMap<String, Option<BTreeMap<String, u64>>>,
    now_millis: i64,
) -> Vec<Pending> {
    let mut out: Vec<Pending> = records
        .into_iter()
        .filter_map(|record| {
            let missing: Vec<String> = peers
                .iter()
                .filter(|(_, marks)| {
                    marks
                        .as_ref()
                        .and_then(|m| m.get(&record.origin))
                        .is_none_or(|mark| *mark < record.seq)
                })
                .map(|(name, _)| name.clone())
                .collect();
            (!missing.is_empty()).then(|| Pending {
                age_ms: (now_millis - record.at_millis).max(0),
                record,
                missing,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.record.at_millis, &a.record.origin, a.record.seq).cmp(&(
            b.record.at_millis,
            &b.record.origin,
            b.record.seq,
        ))
    });
    out
}

/// The peers' last reported marks out of the replication status (`node`'s JSON: `peers[]`
/// with `peer` and `has`); an empty `has` means the peer has not reported.
pub fn reported_marks(
    status: &serde_json::Value,
) -> BTreeMap<String, Option<BTreeMap<String, u64>>> {
    status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["peer"].as_str()?.to_string();
            let has: BTreeMap<String, u64> = p["has"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(o, v)| Some((o.clone(), v.as_u64()?)))
                .collect();
            Some((name, (!has.is_empty()).then_some(has)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::offboarding::Action;

    fn record(origin: &str, seq: u64, at: i64) -> Offboarding {
        Offboarding {
            origin: origin.into(),
            seq,
            tenant: "t".into(),
            resource_type: "User".into(),
            id: format!("{origin}-{seq}"),
            action: Action::Deactivate,
            at_millis: at,
        }
    }

    fn marks(pairs: &[(&str, u64)]) -> Option<BTreeMap<String, u64>> {
        Some(pairs.iter().map(|(o, s)| (o.to_string(), *s)).collect())
    }

    #[test]
    fn an_offboarding_is_pending_until_every_peer_reported_its_position() {
        let records = vec![
            record("eu", 5, 1_000),
            record("us", 2, 500),
            record("eu", 3, 900),
        ];
        let peers: BTreeMap<_, _> = [
            ("us".to_string(), marks(&[("eu", 4), ("us", 2)])),
            ("ap".to_string(), marks(&[("eu", 5), ("us", 1)])),
        ]
        .into();
        let list = pending(records, &peers, 2_000);
        let got: Vec<(&str, u64, Vec<String>)> = list
            .iter()
            .map(|p| (p.record.origin.as_str(), p.record.seq, p.missing.clone()))
            .collect();
        // Oldest first; eu/3 is held by both peers (us has eu up to 4, ap up to 5).
        assert_eq!(
            got,
            vec![
                ("us", 2, vec!["ap".to_string()]),
                ("eu", 5, vec!["us".to_string()])
            ]
        );
        assert_eq!(list[0].age_ms, 1_500);
    }

    #[test]
    fn a_peer_that_never_reported_lacks_everything_and_all_caught_up_is_empty() {
        let peers: BTreeMap<_, _> = [("ap".to_string(), None)].into();
        assert_eq!(
            pending(vec![record("eu", 1, 0)], &peers, 0)[0].missing,
            ["ap"]
        );
        let peers: BTreeMap<_, _> = [("ap".to_string(), marks(&[("eu", 9)]))].into();
        assert!(pending(vec![record("eu", 1, 0)], &peers, 0).is_empty());
        assert!(pending(vec![record("eu", 1, 0)], &BTreeMap::new(), 0).is_empty());
    }

    #[test]
    fn reported_marks_read_the_node_status() {
        let status = serde_json::json!({"peers": [
            {"peer": "us", "has": {"eu": 3}}, {"peer": "ap", "has": {}}]});
        let m = reported_marks(&status);
        assert_eq!(m["us"], marks(&[("eu", 3)]));
        assert_eq!(m["ap"], None);
    }
}
