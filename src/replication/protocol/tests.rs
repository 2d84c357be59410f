//! Replicator unit tests: a log over maps, messages driven by hand.

use super::*;

/// A log over maps, committing `Apply`s as the store would.
#[derive(Default)]
struct MemLog {
    entries: BTreeMap<String, BTreeMap<u64, Vec<u8>>>,
    digest: Option<[u8; 32]>,
}

impl MemLog {
    fn write(&mut self, origin: &str, seqs: impl IntoIterator<Item = u64>) {
        for s in seqs {
            self.entries
                .entry(origin.into())
                .or_default()
                .insert(s, format!("{origin}{s}").into_bytes());
        }
    }

    fn commit(&mut self, apply: &Apply) {
        for (seq, bytes) in &apply.entries {
            self.entries
                .entry(apply.origin.clone())
                .or_default()
                .insert(*seq, bytes.clone());
        }
    }
}

impl Log for MemLog {
    fn hwm(&self) -> Hwm {
        self.entries
            .iter()
            .map(|(o, e)| {
                (
                    o.clone(),
                    e.keys().zip(1..).take_while(|(s, i)| *s == i).count() as u64,
                )
            })
            .collect()
    }

    fn read(&self, origin: &str, from: u64, max_entries: usize, _max_bytes: usize) -> Vec<Entry> {
        let Some(e) = self.entries.get(origin) else {
            return vec![];
        };
        e.range(from..)
            .take(max_entries)
            .map(|(s, b)| (*s, b.clone()))
            .collect()
    }

    fn digest(&self) -> Option<(Hwm, [u8; 32])> {
        self.digest.map(|d| (self.hwm(), d))
    }
}

fn hwm(pairs: &[(&str, u64)]) -> Hwm {
    pairs.iter().map(|(o, s)| (o.to_string(), *s)).collect()
}

fn cfg(region: &str) -> Config {
    let mut c = Config::new(region, ["a", "b", "c"], 1);
    c.max_batch_entries = 2;
    c.max_inflight_batches = 2;
    c
}

fn drain(r: &mut Replicator, now: Millis, log: &dyn Log) -> Vec<(String, MessageV1)> {
    std::iter::from_fn(|| r.poll_transmit(now, log))
        .map(|(to, Message::V1(m))| (to, m))
        .collect()
}

fn entries_to(sent: &[(String, MessageV1)], peer: &str) -> Vec<(String, Vec<u64>)> {
    sent.iter()
        .filter(|(to, _)| to == peer)
        .filter_map(|(_, m)| match m {
            MessageV1::Entries { origin, entries } => {
                Some((origin.clone(), entries.iter().map(|e| e.0).collect()))
            }
            _ => None,
        })
        .collect()
}

fn entries(origin: &str, seqs: impl IntoIterator<Item = u64>) -> Message {
    MessageV1::Entries {
        origin: origin.into(),
        entries: seqs
            .into_iter()
            .map(|s| (s, format!("{origin}{s}").into_bytes()))
            .collect(),
    }
    .into()
}

fn hello(region: &str, marks: &[(&str, u64)]) -> Message {
    hello_from(region, 1, marks)
}

fn hello_from(region: &str, incarnation: u64, marks: &[(&str, u64)]) -> Message {
    MessageV1::Hello {
        region: region.into(),
        protocol: PROTOCOL_VERSION,
        incarnation,
        hwm: hwm(marks),
        floor: Hwm::new(),
    }
    .into()
}

/// A region `a` with `n` own entries, connected to and greeted by `b` with `b_has`.
fn greeted(n: u64, b_has: &[(&str, u64)]) -> (Replicator, MemLog) {
    let mut log = MemLog::default();
    log.write("a", 1..=n);
    let mut r = Replicator::new(cfg("a"), &log, 0);
    r.connected("b", 0);
    r.received("b", hello("b", b_has), 0, &log).unwrap();
    (r, log)
}

#[test]
fn hello_comes_first_and_entries_wait_for_the_peers_hello() {
    let mut log = MemLog::default();
    log.write("a", 1..=3);
    let mut r = Replicator::new(cfg("a"), &log, 0);
    r.connected("b", 0);
    let sent = drain(&mut r, 0, &log);
    assert!(
        matches!(&sent[0], (to, MessageV1::Hello { region, hwm, .. }) if to == "b" && region == "a" && *hwm == super::tests::hwm(&[("a", 3)]))
    );
    assert!(entries_to(&sent, "b").is_empty(), "{sent:?}");
    r.received("b", hello("b", &[("a", 1)]), 1, &log).unwrap();
    let sent = drain(&mut r, 1, &log);
    assert_eq!(entries_to(&sent, "b"), vec![("a".into(), vec![2, 3])]);
}

#[test]
fn own_entries_are_pushed_in_batches_within_the_window() {
    let (mut r, log) = greeted(7, &[]);
    let sent = drain(&mut r, 0, &log);
    // Two batches of two: the window is full.
    assert_eq!(
        entries_to(&sent, "b"),
        vec![("a".into(), vec![1, 2]), ("a".into(), vec![3, 4])]
    );
    assert_eq!(
        r.peer_status(0)
            .iter()
            .find(|s| s.peer == "b")
            .unwrap()
            .in_flight,
        4
    );
    // An ack of the first batch opens the window by one batch.
    r.received(
        "b",
        MessageV1::Ack {
            incarnation: 1,
            hwm: hwm(&[("a", 2)]),
        }
        .into(),
        5,
        &log,
    )
    .unwrap();
    assert_eq!(
        entries_to(&drain(&mut r, 5, &log), "b"),
        vec![("a".into(), vec![5, 6])]
    );
    assert_eq!(r.poll_event(), Some(Event::Acked { peer: "b".into() }));
}

#[test]
fn new_local_commits_are_pushed_at_once() {
    let (mut r, mut log) = greeted(0, &[]);
    assert!(entries_to(&drain(&mut r, 0, &log), "b").is_empty());
    log.write("a", [1]);
    r.local_committed(3, &log);
    assert_eq!(
        entries_to(&drain(&mut r, 3, &log), "b"),
        vec![("a".into(), vec![1])]
    );
}

#[test]
fn a_local_write_above_a_transient_gap_waits_for_the_gap() {
    // Sequence 2 is still committing while 3 is in the log: the mark stays at 1.
    let (mut r, mut log) = greeted(1, &[("a", 1)]);
    log.write("a", [3]);
    r.local_committed(1, &log);
    assert!(entries_to(&drain(&mut r, 1, &log), "b").is_empty());
    log.write("a", [2]);
    r.local_committed(2, &log);
    assert_eq!(
        entries_to(&drain(&mut r, 2, &log), "b"),
        vec![("a".into(), vec![2, 3])]
    );
}

#[test]
fn duplicates_are_ignored_but_acknowledged() {
    let mut log = MemLog::default();
    log.write("a", 1..=5);
    let mut r = Replicator::new(cfg("b"), &log, 0);
    r.connected("a", 0);
    drain(&mut r, 0, &log);
    r.received("a", entries("a", 3..=5), 1, &log).unwrap();
    assert_eq!(r.poll_apply(), None);
    let sent = drain(&mut r, 1, &log);
    assert!(
        sent.contains(&(
            "a".into(),
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 5)])
            }
        )),
        "{sent:?}"
    );
    let status = r.peer_status(1);
    let a = status.iter().find(|s| s.peer == "a").unwrap();
    assert_eq!((a.received_entries, a.duplicate_entries), (3, 3));
}

#[test]
fn one_apply_per_origin_at_a_time_and_the_ack_follows_the_commit() {
    let mut log = MemLog::default();
    let mut r = Replicator::new(cfg("b"), &log, 0);
    r.connected("a", 0);
    drain(&mut r, 0, &log);
    r.received("a", entries("a", 1..=2), 1, &log).unwrap();
    let first = r.poll_apply().unwrap();
    assert_eq!(
        (first.origin.as_str(), first.from_peer.as_str()),
        ("a", "a")
    );
    assert_eq!(
        first.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // More arrives while the store commits: held, not handed out, not acknowledged yet.
    r.received("a", entries("a", 3..=4), 2, &log).unwrap();
    r.received("a", entries("a", 5..=5), 2, &log).unwrap();
    assert_eq!(r.poll_apply(), None);
    assert!(!drain(&mut r, 2, &log)
        .iter()
        .any(|(_, m)| matches!(m, MessageV1::Ack { .. })));
    log.commit(&first);
    r.applied("a", 3, &log);
    assert_eq!(
        drain(&mut r, 3, &log),
        vec![(
            "a".into(),
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 2)])
            }
        )]
    );
    // Everything that queued up meanwhile goes in one batch (group commit).
    let second = r.poll_apply().unwrap();
    assert_eq!(
        second.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    log.commit(&second);
    r.applied("a", 4, &log);
    assert_eq!(
        drain(&mut r, 4, &log),
        vec![(
            "a".into(),
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 5)])
            }
        )]
    );
}

#[test]
fn a_gap_is_held_asked_for_and_filled() {
    let mut log = MemLog::default();
    log.write("a", [1]);
    let mut r = Replicator::new(cfg("b"), &log, 0);
    r.connected("c", 0);
    drain(&mut r, 0, &log);
    r.received("c", entries("a", 3..=4), 10, &log).unwrap();
    assert_eq!(r.poll_apply(), None);
    assert_eq!(r.held_entries(), 2);
    let sent = drain(&mut r, 10, &log);
    assert!(
        sent.contains(&(
            "c".into(),
            MessageV1::Need {
                origin: "a".into(),
                from: 2
            }
        )),
        "{sent:?}"
    );
    // Asked again only after `need_interval`.
    r.tick(11, &log);
    assert!(!drain(&mut r, 11, &log)
        .iter()
        .any(|(_, m)| matches!(m, MessageV1::Need { .. })));
    r.tick(10 + r.cfg.need_interval, &log);
    assert!(drain(&mut r, 600, &log)
        .iter()
        .any(|(_, m)| matches!(m, MessageV1::Need { .. })));
    r.received("c", entries("a", [2]), 700, &log).unwrap();
    let apply = r.poll_apply().unwrap();
    assert_eq!(
        apply.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
}

#[test]
fn need_moves_the_sender_back() {
    let (mut r, log) = greeted(4, &[]);
    assert_eq!(entries_to(&drain(&mut r, 0, &log), "b").len(), 2);
    r.received(
        "b",
        MessageV1::Need {
            origin: "a".into(),
            from: 1,
        }
        .into(),
        1,
        &log,
    )
    .unwrap();
    assert_eq!(
        entries_to(&drain(&mut r, 1, &log), "b"),
        vec![("a".into(), vec![1, 2]), ("a".into(), vec![3, 4])]
    );
}

#[test]
fn unacknowledged_batches_are_resent_after_the_timeout_with_backoff() {
    let (mut r, log) = greeted(2, &[]);
    let rto = r.cfg.retransmit_after;
    assert_eq!(entries_to(&drain(&mut r, 0, &log), "b").len(), 1);
    assert_eq!(r.poll_timeout(), Some(rto.min(r.next_status)));
    r.tick(rto - 1, &log);
    assert!(entries_to(&drain(&mut r, rto - 1, &log), "b").is_empty());
    r.tick(rto, &log);
    assert_eq!(
        entries_to(&drain(&mut r, rto, &log), "b"),
        vec![("a".into(), vec![1, 2])]
    );
    // The next timeout is twice as long.
    assert_eq!(
        r.poll_timeout(),
        Some(rto + 2 * rto).min(Some(r.next_status))
    );
    r.tick(rto + 2 * rto - 1, &log);
    assert!(entries_to(&drain(&mut r, rto + 2 * rto - 1, &log), "b").is_empty());
    // An acknowledgement stops it.
    r.received(
        "b",
        MessageV1::Ack {
            incarnation: 1,
            hwm: hwm(&[("a", 2)]),
        }
        .into(),
        4 * rto,
        &log,
    )
    .unwrap();
    r.tick(10 * rto, &log);
    assert!(entries_to(&drain(&mut r, 10 * rto, &log), "b").is_empty());
    assert_eq!(
        r.peer_status(0)
            .iter()
            .find(|s| s.peer == "b")
            .unwrap()
            .retransmits,
        1
    );
}

#[test]
fn a_restarted_region_resumes_from_the_peers_marks() {
    let (mut r, log) = greeted(5, &[]);
    drain(&mut r, 0, &log);
    // Crash: all in-memory state is gone; the log survives.
    let mut r = Replicator::new(cfg("a"), &log, 100);
    r.connected("b", 100);
    r.received("b", hello("b", &[("a", 3)]), 100, &log).unwrap();
    assert_eq!(
        entries_to(&drain(&mut r, 100, &log), "b"),
        vec![("a".into(), vec![4, 5])]
    );
}

#[test]
fn reconnecting_forgets_what_was_in_flight() {
    let (mut r, log) = greeted(2, &[]);
    assert_eq!(entries_to(&drain(&mut r, 0, &log), "b").len(), 1);
    r.disconnected("b", 1);
    assert!(drain(&mut r, 1, &log).is_empty());
    r.connected("b", 2);
    r.received("b", hello("b", &[]), 2, &log).unwrap();
    assert_eq!(
        entries_to(&drain(&mut r, 2, &log), "b"),
        vec![("a".into(), vec![1, 2])]
    );
}

#[test]
fn another_origins_entries_are_forwarded_only_when_the_direct_path_fails() {
    // c holds a's entries 1..=2; b is connected to c and says it reaches a.
    let mut log = MemLog::default();
    log.write("a", 1..=2);
    let mut r = Replicator::new(cfg("c"), &log, 0);
    r.connected("b", 0);
    r.received("b", hello("b", &[]), 0, &log).unwrap();
    let status = MessageV1::Status {
        incarnation: 1,
        hwm: Hwm::new(),
        connected: ["a".into(), "c".into()].into(),
        floor: Hwm::new(),
        allocated: 0,
    };
    r.received("b", status.into(), 0, &log).unwrap();
    assert!(entries_to(&drain(&mut r, 0, &log), "b").is_empty());
    let fwd = r.cfg.forward_after;
    assert!(entries_to(&drain(&mut r, fwd - 1, &log), "b").is_empty());
    // b made no progress on a for `forward_after`: forward.
    let sent = drain(&mut r, fwd, &log);
    assert_eq!(entries_to(&sent, "b"), vec![("a".into(), vec![1, 2])]);
    assert_eq!(r.peer_status(fwd)[1].forwarded_entries, 2);
}

#[test]
fn the_designated_forwarder_steps_in_at_once_when_the_peer_cannot_reach_the_origin() {
    let mut log = MemLog::default();
    log.write("a", 1..=2);
    let mut r = Replicator::new(cfg("c"), &log, 0);
    r.connected("b", 0);
    r.received("b", hello("b", &[]), 0, &log).unwrap();
    // b reaches only c: c is the only candidate.
    let status = MessageV1::Status {
        incarnation: 1,
        hwm: Hwm::new(),
        connected: ["c".into()].into(),
        floor: Hwm::new(),
        allocated: 0,
    };
    r.received("b", status.into(), 0, &log).unwrap();
    assert_eq!(
        entries_to(&drain(&mut r, 0, &log), "b"),
        vec![("a".into(), vec![1, 2])]
    );
}

#[test]
fn a_peer_that_keeps_progressing_is_not_forwarded_to() {
    let mut log = MemLog::default();
    let mut r = Replicator::new(cfg("c"), &log, 0);
    r.connected("b", 0);
    r.received("b", hello("b", &[]), 0, &log).unwrap();
    let reaches: BTreeSet<String> = ["a".into(), "c".into()].into();
    let fwd = r.cfg.forward_after;
    // a writes steadily; b gets it directly and says so in its Status every second.
    for t in (0..10 * fwd).step_by(500) {
        log.write("a", [t / 500 + 1]);
        r.local_committed(t, &log);
        let status = MessageV1::Status {
            incarnation: 1,
            hwm: hwm(&[("a", t / 500)]),
            connected: reaches.clone(),
            floor: Hwm::new(),
            allocated: 0,
        };
        r.received("b", status.into(), t, &log).unwrap();
        assert!(
            entries_to(&drain(&mut r, t, &log), "b").is_empty(),
            "at {t}"
        );
    }
}

#[test]
fn lag_counts_changes_and_the_age_of_the_oldest_unacknowledged_one() {
    let mut log = MemLog::default();
    let mut r = Replicator::new(cfg("a"), &log, 0);
    log.write("a", 1..=2);
    r.local_committed(1_000, &log);
    log.write("a", 3..=5);
    r.local_committed(4_000, &log);
    let b = |r: &Replicator, now| {
        r.peer_status(now)
            .into_iter()
            .find(|s| s.peer == "b")
            .unwrap()
    };
    assert_eq!(
        (b(&r, 5_000).behind_changes, b(&r, 5_000).oldest_unacked_age),
        (5, Some(4_000))
    );
    assert!(!b(&r, 5_000).connected);
    r.connected("b", 5_000);
    r.received("b", hello("b", &[]), 5_000, &log).unwrap();
    r.received(
        "b",
        MessageV1::Ack {
            incarnation: 1,
            hwm: hwm(&[("a", 2)]),
        }
        .into(),
        5_000,
        &log,
    )
    .unwrap();
    assert_eq!(
        (b(&r, 5_000).behind_changes, b(&r, 5_000).oldest_unacked_age),
        (3, Some(1_000))
    );
    r.received(
        "b",
        MessageV1::Ack {
            incarnation: 1,
            hwm: hwm(&[("a", 5)]),
        }
        .into(),
        5_000,
        &log,
    )
    .unwrap();
    assert_eq!(
        (b(&r, 5_000).behind_changes, b(&r, 5_000).oldest_unacked_age),
        (0, None)
    );
}

#[test]
fn durability_counts_this_region_and_every_peer_that_acknowledged() {
    let (mut r, log) = greeted(3, &[]);
    assert_eq!(r.durable_count("a", 3), 1);
    r.connected("c", 0);
    r.received("c", hello("c", &[]), 0, &log).unwrap();
    r.received(
        "b",
        MessageV1::Ack {
            incarnation: 1,
            hwm: hwm(&[("a", 3)]),
        }
        .into(),
        1,
        &log,
    )
    .unwrap();
    r.received(
        "c",
        MessageV1::Ack {
            incarnation: 1,
            hwm: hwm(&[("a", 2)]),
        }
        .into(),
        1,
        &log,
    )
    .unwrap();
    assert_eq!(r.durable_count("a", 2), 3);
    assert_eq!(r.durable_count("a", 3), 2);
    assert_eq!(r.durable_count("a", 4), 0);
    // Acks may arrive reordered: an older one never lowers what we know.
    r.received(
        "b",
        MessageV1::Ack {
            incarnation: 1,
            hwm: hwm(&[("a", 1)]),
        }
        .into(),
        2,
        &log,
    )
    .unwrap();
    assert_eq!(r.durable_count("a", 3), 2);
}

#[test]
fn own_entries_beyond_our_log_are_reported_and_never_applied() {
    let mut log = MemLog::default();
    log.write("a", 1..=2);
    let mut r = Replicator::new(cfg("a"), &log, 0);
    r.connected("b", 0);
    r.received("b", hello("b", &[("a", 9)]), 0, &log).unwrap();
    let events: Vec<_> = std::iter::from_fn(|| r.poll_event()).collect();
    assert!(
        events.contains(&Event::OwnLogBehind {
            peer: "b".into(),
            ours: 2,
            theirs: 9
        }),
        "{events:?}"
    );
    r.received("b", entries("a", 3..=4), 0, &log).unwrap();
    assert_eq!(r.poll_apply(), None);
    // Recovery mode takes them.
    let mut c = cfg("a");
    c.accept_own_entries = true;
    let mut r = Replicator::new(c, &log, 0);
    r.received("b", entries("a", 3..=4), 0, &log).unwrap();
    assert_eq!(r.poll_apply().map(|a| a.entries.len()), Some(2));
}

#[test]
fn reports_of_one_incarnation_only_raise_marks_in_whatever_order_they_arrive() {
    let mut log = MemLog::default();
    log.write("a", 1..=4);
    let mut r = Replicator::new(cfg("a"), &log, 0);
    r.connected("b", 0);
    // A later Ack overtakes the Hello: it counts, and sending may start.
    let ack = |n| {
        MessageV1::Ack {
            incarnation: 7,
            hwm: hwm(&[("a", n)]),
        }
        .into()
    };
    r.received("b", ack(3), 0, &log).unwrap();
    assert_eq!(r.durable_count("a", 3), 2);
    assert_eq!(
        entries_to(&drain(&mut r, 0, &log), "b"),
        vec![("a".into(), vec![4])]
    );
    // The older Hello, even delivered twice, does not lower it nor report a regression.
    r.received("b", hello_from("b", 7, &[("a", 2)]), 0, &log)
        .unwrap();
    r.received("b", hello_from("b", 7, &[("a", 2)]), 0, &log)
        .unwrap();
    assert_eq!(r.durable_count("a", 3), 2);
    let events: Vec<_> = std::iter::from_fn(|| r.poll_event()).collect();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::PeerRegressed { .. })),
        "{events:?}"
    );
}

#[test]
fn a_lost_hello_only_delays_sending_until_the_next_status() {
    let (mut r, log) = greeted(2, &[]);
    r.disconnected("b", 1);
    r.connected("b", 2);
    assert!(entries_to(&drain(&mut r, 2, &log), "b").is_empty());
    let status = MessageV1::Status {
        incarnation: 1,
        hwm: Hwm::new(),
        connected: ["a".into()].into(),
        floor: Hwm::new(),
        allocated: 0,
    };
    r.received("b", status.into(), 3, &log).unwrap();
    assert_eq!(
        entries_to(&drain(&mut r, 3, &log), "b"),
        vec![("a".into(), vec![1, 2])]
    );
}

#[test]
fn a_peer_that_lost_data_is_reported_and_served_again() {
    let (mut r, log) = greeted(2, &[]);
    r.received(
        "b",
        MessageV1::Ack {
            incarnation: 1,
            hwm: hwm(&[("a", 2)]),
        }
        .into(),
        0,
        &log,
    )
    .unwrap();
    drain(&mut r, 0, &log);
    while r.poll_event().is_some() {}
    r.connected("b", 1);
    // Restarted (a new incarnation) with an older copy of its log.
    r.received("b", hello_from("b", 2, &[]), 1, &log).unwrap();
    assert_eq!(
        r.poll_event(),
        Some(Event::PeerRegressed {
            peer: "b".into(),
            origin: "a".into(),
            acked: 2,
            has: 0
        })
    );
    assert_eq!(
        entries_to(&drain(&mut r, 1, &log), "b"),
        vec![("a".into(), vec![1, 2])]
    );
}

#[test]
fn a_failed_commit_is_asked_for_again() {
    let log = MemLog::default();
    let mut r = Replicator::new(cfg("b"), &log, 0);
    r.connected("a", 0);
    drain(&mut r, 0, &log);
    r.received("a", entries("a", 1..=2), 1, &log).unwrap();
    let _lost = r.poll_apply().unwrap();
    r.applied("a", 2, &log); // the store failed: nothing committed
    let sent = drain(&mut r, 2, &log);
    assert!(
        sent.contains(&(
            "a".into(),
            MessageV1::Need {
                origin: "a".into(),
                from: 1
            }
        )),
        "{sent:?}"
    );
    r.received("a", entries("a", 1..=2), 3, &log).unwrap();
    assert_eq!(r.poll_apply().map(|a| a.entries.len()), Some(2));
}

#[test]
fn invalid_messages_are_protocol_errors() {
    let (mut r, log) = greeted(0, &[]);
    assert_eq!(
        r.received("c", hello("b", &[]), 0, &log),
        Err(ProtocolError::RegionMismatch {
            expected: "c".into(),
            got: "b".into()
        })
    );
    let old = MessageV1::Hello {
        region: "c".into(),
        protocol: 0,
        incarnation: 1,
        hwm: Hwm::new(),
        floor: Hwm::new(),
    };
    assert_eq!(
        r.received("c", old.into(), 0, &log),
        Err(ProtocolError::UnsupportedProtocol(0))
    );
    let bad = MessageV1::Entries {
        origin: "c".into(),
        entries: vec![(2, vec![]), (2, vec![])],
    };
    assert!(matches!(
        r.received("c", bad.into(), 0, &log),
        Err(ProtocolError::BadEntries { .. })
    ));
    let zero = MessageV1::Entries {
        origin: "c".into(),
        entries: vec![(0, vec![])],
    };
    assert!(matches!(
        r.received("c", zero.into(), 0, &log),
        Err(ProtocolError::BadEntries { .. })
    ));
    assert_eq!(
        r.received("a", hello("a", &[]), 0, &log),
        Err(ProtocolError::FromSelf)
    );
}

#[test]
fn equal_marks_with_different_digests_are_divergence() {
    let mut log = MemLog::default();
    log.write("a", 1..=2);
    log.digest = Some([1; 32]);
    let mut r = Replicator::new(cfg("a"), &log, 0);
    let d = |marks: &[(&str, u64)], digest| {
        MessageV1::Digest {
            hwm: hwm(marks),
            digest,
        }
        .into()
    };
    r.received("b", d(&[("a", 2)], [1; 32]), 0, &log).unwrap();
    r.received("b", d(&[("a", 1)], [2; 32]), 0, &log).unwrap();
    // The equal digest is a match; the one at other marks is not comparable.
    assert_eq!(
        r.poll_event(),
        Some(Event::DigestMatched { peer: "b".into() })
    );
    assert_eq!(r.poll_event(), None);
    r.received("b", d(&[("a", 2)], [2; 32]), 0, &log).unwrap();
    assert_eq!(
        r.poll_event(),
        Some(Event::Diverged {
            peer: "b".into(),
            hwm: hwm(&[("a", 2)])
        })
    );
}

#[test]
fn equal_marks_with_equal_digests_are_a_match() {
    let mut log = MemLog::default();
    log.write("a", 1..=2);
    log.digest = Some([1; 32]);
    let mut r = Replicator::new(cfg("a"), &log, 0);
    let d = |marks: &[(&str, u64)], digest| {
        MessageV1::Digest {
            hwm: hwm(marks),
            digest,
        }
        .into()
    };
    // Other marks: not comparable, whatever the digest.
    r.received("b", d(&[("a", 1)], [1; 32]), 0, &log).unwrap();
    assert_eq!(r.poll_event(), None);
    r.received("b", d(&[("a", 2)], [1; 32]), 0, &log).unwrap();
    assert_eq!(
        r.poll_event(),
        Some(Event::DigestMatched { peer: "b".into() })
    );
    // No digest of our own (documents above the marks): nothing to compare.
    log.digest = None;
    r.received("b", d(&[("a", 2)], [1; 32]), 0, &log).unwrap();
    assert_eq!(r.poll_event(), None);
}

#[test]
fn status_advertises_marks_and_connections_periodically_and_on_change() {
    let (mut r, log) = greeted(1, &[("a", 1)]);
    let sent = drain(&mut r, 0, &log);
    let status = MessageV1::Status {
        incarnation: 1,
        hwm: hwm(&[("a", 1)]),
        connected: ["b".into()].into(),
        floor: Hwm::new(),
        allocated: 0,
    };
    assert!(sent.contains(&("b".into(), status.clone())), "{sent:?}");
    assert!(!drain(&mut r, 1, &log).contains(&("b".into(), status.clone())));
    let next = r.next_status;
    r.tick(next, &log);
    assert!(drain(&mut r, next, &log).contains(&("b".into(), status)));
}

#[test]
fn timeline_buckets_bound_memory_and_overestimate_ages() {
    let mut t = Timeline::default();
    t.record(1, 0, 100);
    t.record(5, 50, 100); // same bucket as seq 1
    t.record(6, 150, 100);
    assert_eq!(t.learned_at(1), Some(0));
    assert_eq!(t.learned_at(5), Some(0));
    assert_eq!(t.learned_at(6), Some(150));
    assert_eq!(t.learned_at(7), None);
    t.prune(5);
    assert_eq!(t.learned_at(6), Some(150));
    for i in 0..(TIMELINE_CAP as u64 + 10) {
        t.record(100 + i, 1_000 + i * 100, 100);
    }
    assert_eq!(t.samples.len(), TIMELINE_CAP);
    assert_eq!(
        t.learned_at(100),
        Some(150),
        "merged buckets keep the oldest time"
    );
}
