//! Pure decisions over plain maps: what a peer still needs, and who sends it.
//!
//! Nothing here has state, time or I/O: the [`Replicator`](super::Replicator) gathers the maps
//! and asks. Keeping these apart (as corrosion does) lets the rules be tested one by one.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use super::wire::Hwm;

/// For every origin where `ours` is ahead of `theirs`, the sequences the peer lacks:
/// `theirs[origin] + 1 ..= ours[origin]` (an origin absent from a map counts as 0).
///
/// Both maps are *contiguous* high-water marks, so this range is exactly what the peer is
/// missing from us: everything at or below its mark it already holds durably, and nothing
/// above ours can be sent because we do not hold it contiguously.
pub fn still_needed<'a>(ours: &'a Hwm, theirs: &Hwm) -> BTreeMap<&'a str, RangeInclusive<u64>> {
    ours.iter()
        .filter_map(|(origin, &our)| {
            let their = theirs.get(origin).copied().unwrap_or(0);
            (our > their).then(|| (origin.as_str(), their + 1..=our))
        })
        .collect()
}

/// How many changes the peer lacks from us in total (the "changes behind" of the lag metric).
pub fn changes_behind(ours: &Hwm, theirs: &Hwm) -> u64 {
    still_needed(ours, theirs)
        .values()
        .map(|r| r.end() - r.start() + 1)
        .sum()
}

/// Which of the regions `peer` is connected to (`reaches`, from its last `Status`) should forward
/// it the changes of `origin`, which it cannot reach itself. Every region computes the same
/// answer from the same advertisement, so exactly one forwarder starts at once instead of all of
/// them (the others fall back to [`should_send`]'s stall timer). `None` when no candidate exists.
///
/// The choice is a stable hash of (origin, peer, candidate), so the forwarding load of several
/// unreachable origins spreads over the candidates; the hash is FNV-1a, fixed forever, because
/// regions running different builds must agree.
pub fn designated_forwarder<'a>(
    origin: &str,
    peer: &str,
    reaches: &'a BTreeSet<String>,
) -> Option<&'a str> {
    reaches
        .iter()
        .filter(|c| c.as_str() != origin && c.as_str() != peer)
        .min_by_key(|c| {
            (
                fnv1a(&[origin.as_bytes(), peer.as_bytes(), c.as_bytes()]),
                c.as_str(),
            )
        })
        .map(String::as_str)
}

/// Should region `me` send `peer` the entries of `origin` it lacks, now?
///
/// - Our own changes: always, at once (we are their source).
/// - Another origin's changes (forwarding): when the peer said it cannot reach `origin` and we
///   are its [`designated_forwarder`]; or, whatever it said, when the peer has made no progress
///   on `origin` for `forward_after` although we have held its next missing entry that long
///   (`stalled_for`): its direct path or its designated forwarder is not working.
///
/// Without the second condition a partition that leaves a region connected to some peers would
/// stall it forever; without the first every connected region would forward every origin to
/// every peer, multiplying traffic by the cluster size.
pub fn should_send(
    me: &str,
    peer: &str,
    origin: &str,
    reaches: Option<&BTreeSet<String>>,
    stalled_for: u64,
    forward_after: u64,
) -> bool {
    if origin == me {
        return true;
    }
    if let Some(reaches) = reaches {
        if !reaches.contains(origin) && designated_forwarder(origin, peer, reaches) == Some(me) {
            return true;
        }
    }
    stalled_for >= forward_after
}

/// Does a region with marks `ours` need a snapshot from a peer whose log starts at `floor`?
/// Yes when, for some origin, the peer no longer holds the next entry we lack
/// (`ours + 1 < floor`): entry by entry we can never catch up from it.
pub fn snapshot_needed(ours: &Hwm, floor: &Hwm) -> bool {
    floor
        .iter()
        .any(|(origin, f)| ours.get(origin).copied().unwrap_or(0) + 1 < *f)
}

/// Where to truncate the log: per origin, the new floor (the lowest sequence to keep), or
/// nothing for origins that stay as they are.
///
/// Entries every known region holds (the lowest of our mark and every peer's) are dropped
/// except the newest `keep` of them (a window for a slow or restored peer to catch up entry by
/// entry). `max_retained` (0: no limit) bounds what a region that stays down can hold back: a
/// log longer than that is cut even past it, and that region then needs a snapshot. A peer
/// that never reported (`None`) holds everything back but the `max_retained` bound.
pub fn truncation(
    own: &Hwm,
    floors: &Hwm,
    peers: &[Option<&Hwm>],
    keep: u64,
    max_retained: u64,
) -> Hwm {
    let mut out = Hwm::new();
    for (origin, &mark) in own {
        let acked = peers
            .iter()
            .map(|p| p.map_or(0, |h| h.get(origin).copied().unwrap_or(0)))
            .fold(mark, u64::min);
        let mut upto = acked.saturating_sub(keep);
        if max_retained > 0 {
            upto = upto.max(mark.saturating_sub(max_retained));
        }
        let floor = floors.get(origin).copied().unwrap_or(1);
        if upto + 1 > floor {
            out.insert(origin.clone(), upto + 1);
        }
    }
    out
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xffu8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hwm(pairs: &[(&str, u64)]) -> Hwm {
        pairs.iter().map(|(o, s)| (o.to_string(), *s)).collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_peer_needs_exactly_what_lies_between_its_mark_and_ours() {
        let ours = hwm(&[("eu", 10), ("us", 5), ("ap", 3)]);
        let theirs = hwm(&[("eu", 4), ("us", 5), ("ap", 9), ("sa", 2)]);
        let needed = still_needed(&ours, &theirs);
        assert_eq!(needed.into_iter().collect::<Vec<_>>(), vec![("eu", 5..=10)]);
        assert_eq!(changes_behind(&ours, &theirs), 6);
    }

    #[test]
    fn an_origin_the_peer_never_heard_of_is_needed_from_the_start() {
        let ours = hwm(&[("eu", 3)]);
        assert_eq!(still_needed(&ours, &Hwm::new()).get("eu"), Some(&(1..=3)));
        assert!(still_needed(&Hwm::new(), &ours).is_empty());
        assert!(still_needed(&ours, &ours).is_empty());
        assert_eq!(changes_behind(&Hwm::new(), &ours), 0);
    }

    #[test]
    fn origins_at_zero_need_nothing() {
        assert!(still_needed(&hwm(&[("eu", 0)]), &Hwm::new()).is_empty());
    }

    #[test]
    fn exactly_one_forwarder_is_designated_and_never_the_origin_or_the_peer() {
        let reaches = set(&["a", "b", "c", "d"]);
        let chosen = designated_forwarder("o", "p", &reaches).unwrap();
        assert!(reaches.contains(chosen));
        // Every region computes the same choice, whatever order it learned the names in.
        let mut reversed: Vec<_> = reaches.iter().cloned().collect();
        reversed.reverse();
        assert_eq!(
            designated_forwarder("o", "p", &reversed.into_iter().collect()),
            Some(chosen)
        );
        assert_eq!(designated_forwarder("a", "b", &set(&["a", "b"])), None);
        assert_eq!(
            designated_forwarder("a", "b", &set(&["a", "b", "c"])),
            Some("c")
        );
        // Different unreachable origins spread over the candidates.
        let many = set(&["f1", "f2", "f3", "f4", "f5"]);
        let chosen: BTreeSet<_> = (0..40)
            .filter_map(|i| designated_forwarder(&format!("o{i}"), "p", &many))
            .collect();
        assert!(chosen.len() >= 3, "{chosen:?}");
    }

    #[test]
    fn own_changes_are_always_sent() {
        assert!(should_send("me", "p", "me", None, 0, 1000));
        assert!(should_send("me", "p", "me", Some(&set(&["me"])), 0, 1000));
    }

    #[test]
    fn another_origins_changes_wait_for_the_direct_path() {
        // The peer reaches the origin itself: we stay quiet until it stalls.
        let reaches = set(&["me", "o"]);
        assert!(!should_send("me", "p", "o", Some(&reaches), 999, 1000));
        assert!(should_send("me", "p", "o", Some(&reaches), 1000, 1000));
        // Unknown connectivity: the stall timer alone decides.
        assert!(!should_send("me", "p", "o", None, 10, 1000));
    }

    #[test]
    fn the_designated_forwarder_starts_at_once_and_the_others_wait() {
        let reaches = set(&["a", "b", "c"]);
        let chosen = designated_forwarder("o", "p", &reaches).unwrap();
        for me in ["a", "b", "c"] {
            assert_eq!(
                should_send(me, "p", "o", Some(&reaches), 0, 1000),
                me == chosen,
                "{me}"
            );
        }
    }

    #[test]
    fn a_snapshot_is_needed_only_below_a_floor() {
        let floor = hwm(&[("eu", 101)]);
        assert!(!snapshot_needed(&hwm(&[("eu", 100)]), &floor));
        assert!(snapshot_needed(&hwm(&[("eu", 99)]), &floor));
        assert!(snapshot_needed(&Hwm::new(), &floor));
        assert!(!snapshot_needed(&Hwm::new(), &Hwm::new()));
        assert!(!snapshot_needed(&Hwm::new(), &hwm(&[("eu", 1)])));
    }

    #[test]
    fn the_log_is_cut_below_what_everyone_holds_minus_the_window() {
        let own = hwm(&[("eu", 1000), ("us", 50)]);
        let b = hwm(&[("eu", 900), ("us", 50)]);
        let c = hwm(&[("eu", 950)]);
        // Everyone holds eu up to 900: keep 100 → floor 801; us: c lacks it, nothing to cut.
        assert_eq!(
            truncation(&own, &Hwm::new(), &[Some(&b), Some(&c)], 100, 0),
            hwm(&[("eu", 801)])
        );
        // Already cut there: nothing new.
        assert!(truncation(&own, &hwm(&[("eu", 801)]), &[Some(&b), Some(&c)], 100, 0).is_empty());
        // A peer that never reported holds everything back, unless the log is too long.
        assert!(truncation(&own, &Hwm::new(), &[Some(&b), None], 0, 0).is_empty());
        assert_eq!(
            truncation(&own, &Hwm::new(), &[Some(&b), None], 0, 400),
            hwm(&[("eu", 601)])
        );
    }

    #[test]
    fn a_peer_that_lost_its_own_log_gets_it_back_from_its_forwarder() {
        // The peer never lists itself, so its own origin is "unreachable" for it.
        let reaches = set(&["a", "b"]);
        let chosen = designated_forwarder("p", "p", &reaches).unwrap();
        assert!(should_send(chosen, "p", "p", Some(&reaches), 0, 1000));
    }
}
