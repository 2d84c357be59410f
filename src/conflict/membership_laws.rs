//! Property tests of the membership laws ([`super::membership`]): random concurrent histories
//! of adds and removals across three simulated regions, delivered per origin in order (as
//! replication does) but interleaved at random, with duplicates, and with collection of
//! removed records running at random moments; checked against a reference model computed from
//! the history's causal structure.
//!
//! Duplicates of entries a region already applied never reach its store (replication drops
//! them by sequence number), but whole states may arrive: a snapshot ships a region's records
//! with the marks they stand for. `Transfer` models that the way the store applies it: every
//! record is joined with the snapshot's marks as its context (records the sender collected
//! count as "nothing, having seen the marks"), and the receiver's marks rise to cover them.
//!
//! The reference model is the textbook one for a multi-value register: a write overwrites
//! exactly the writes its region had seen, so the writes that survive are the *maximal* ones
//! (no other write of the same member saw them), and a member is listed iff some maximal write
//! exists and every maximal write is an add. A write's causal past is what its region had
//! applied when it wrote: its own earlier writes and every delivered entry.
//!
//! Collection is the dangerous part: a region that drops a removed record too early and then
//! receives a concurrent add would list the member. The model catches that: at the end every
//! region's listed set must equal the model's.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::membership::{gc_step, Dot, GcStep, Pending, Record, Report, Write};

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];

#[derive(Debug, Clone)]
enum Step {
    /// Region adds (`true`) or removes a member, if that changes what it lists.
    Write(usize, usize, bool),
    /// Deliver the next `n` entries of `origin` to region `to` (in origin order).
    Deliver { to: usize, origin: usize, n: usize },
    /// A snapshot of `from`'s records and marks, taken by `to`.
    Transfer { from: usize, to: usize },
    /// Region runs a collection pass.
    Collect(usize),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..3, 0usize..3, any::<bool>()).prop_map(|(r, m, on)| Step::Write(r, m, on)),
        4 => (0usize..3, 0usize..3, 1usize..4)
            .prop_map(|(to, origin, n)| Step::Deliver { to, origin, n }),
        1 => (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Transfer { from, to }),
        2 => (0usize..3).prop_map(Step::Collect),
    ]
}

/// One write in the log of its origin.
#[derive(Debug, Clone)]
struct Entry {
    member: usize,
    write: Write,
    /// The writer's marks when it wrote (its causal past), own origin included.
    past: BTreeMap<String, u64>,
}

impl Entry {
    /// The marks the entry carries (the writer's before its own write).
    fn marks(&self, origin: usize, seq: u64) -> BTreeMap<String, u64> {
        let mut m = self.past.clone();
        m.insert(REGIONS[origin].into(), seq - 1);
        m
    }
}

#[derive(Default)]
struct Region {
    records: BTreeMap<usize, Record>,
    /// Per origin, how many of its entries this region applied (contiguous).
    marks: BTreeMap<String, u64>,
    pending: BTreeMap<usize, Pending>,
    /// Records this region collected (for the report).
    collected: usize,
}

struct Sim {
    logs: [Vec<Entry>; 3],
    regions: [Region; 3],
}

impl Sim {
    fn new() -> Sim {
        Sim {
            logs: Default::default(),
            regions: Default::default(),
        }
    }

    fn allocated(&self, r: usize) -> u64 {
        self.logs[r].len() as u64
    }

    fn set(&mut self, r: usize, member: usize, new: Record) {
        let region = &mut self.regions[r];
        let old = region.records.get(&member).cloned().unwrap_or_default();
        if old == new {
            return;
        }
        if new.removed() {
            region.pending.insert(
                member,
                Pending {
                    marks: region.marks.clone(),
                    allocated: None,
                },
            );
        } else {
            region.pending.remove(&member);
        }
        region.records.insert(member, new);
    }

    fn write(&mut self, r: usize, member: usize, on: bool) {
        let old = self.regions[r]
            .records
            .get(&member)
            .cloned()
            .unwrap_or_default();
        if old.present() == on {
            return; // the store writes nothing for a no-op
        }
        let seq = self.allocated(r) + 1;
        let dot = Dot {
            region: REGIONS[r].into(),
            seq,
        };
        let marks = self.regions[r].marks.clone();
        let write = Write {
            group: None,
            member: MEMBERS[member].into(),
            on,
            attrs: None,
            seen: Write::beyond(&old.seen, &marks),
        };
        let new = old.write_after(&marks, dot, on, None, seq as i64);
        self.regions[r].marks.insert(REGIONS[r].into(), seq);
        let past = self.regions[r].marks.clone();
        self.logs[r].push(Entry {
            member,
            write,
            past,
        });
        self.set(r, member, new);
    }

    fn apply(&mut self, to: usize, origin: usize, seq: u64) {
        let entry = self.logs[origin][seq as usize - 1].clone();
        let dot = Dot {
            region: REGIONS[origin].into(),
            seq,
        };
        let old = self.regions[to]
            .records
            .get(&entry.member)
            .cloned()
            .unwrap_or_default();
        let marks = entry.marks(origin, seq);
        let new = old.join(&entry.write.state(dot, seq as i64, &marks));
        self.set(to, entry.member, new);
    }

    /// As the store applies a snapshot: every record joined with the snapshot's marks as its
    /// context, and every record the sender lacks joined with "nothing, having seen them".
    fn transfer(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        let records = self.regions[from].records.clone();
        let marks = self.regions[from].marks.clone();
        let with = |mut r: Record| {
            for (o, s) in &marks {
                let m = r.seen.entry(o.clone()).or_insert(0);
                *m = (*m).max(*s);
            }
            r
        };
        // The marks first: a record this makes removed waits with them (as the store stages it
        // with the snapshot's marks).
        for (o, s) in &marks {
            let mark = self.regions[to].marks.entry(o.clone()).or_insert(0);
            *mark = (*mark).max(*s);
        }
        let mine: Vec<usize> = self.regions[to].records.keys().copied().collect();
        for m in mine {
            if !records.contains_key(&m) {
                let old = self.regions[to].records[&m].clone();
                let new = old.join(&with(Record::default()));
                if new.values.is_empty() {
                    self.regions[to].records.remove(&m);
                    self.regions[to].pending.remove(&m);
                } else {
                    self.set(to, m, new);
                }
            }
        }
        for (m, record) in records {
            let old = self.regions[to]
                .records
                .get(&m)
                .cloned()
                .unwrap_or_default();
            let new = old.join(&with(record));
            self.set(to, m, new);
        }
    }

    fn deliver(&mut self, to: usize, origin: usize, n: usize) {
        if to == origin {
            return;
        }
        let have = self.regions[to]
            .marks
            .get(REGIONS[origin])
            .copied()
            .unwrap_or(0);
        let upto = (have + n as u64).min(self.allocated(origin));
        for seq in have + 1..=upto {
            // As the store: the entry and the marks it raises commit together, and a record
            // removed by it waits with those marks.
            self.regions[to].marks.insert(REGIONS[origin].into(), seq);
            self.apply(to, origin, seq);
        }
    }

    fn collect(&mut self, r: usize) {
        let cluster: Vec<String> = REGIONS.iter().map(|s| s.to_string()).collect();
        let reports: BTreeMap<String, Report> = (0..3)
            .filter(|o| *o != r)
            .map(|o| {
                (
                    REGIONS[o].to_string(),
                    Report {
                        marks: self.regions[o].marks.clone(),
                        allocated: self.allocated(o),
                    },
                )
            })
            .collect();
        let own_allocated = self.allocated(r);
        let region = &mut self.regions[r];
        let members: Vec<usize> = region.pending.keys().copied().collect();
        for m in members {
            let p = region.pending[&m].clone();
            match gc_step(
                &p,
                REGIONS[r],
                &region.marks,
                own_allocated,
                &reports,
                &cluster,
            ) {
                GcStep::Wait => {}
                GcStep::Settle(allocated) => {
                    region.pending.insert(
                        m,
                        Pending {
                            marks: p.marks,
                            allocated: Some(allocated),
                        },
                    );
                }
                GcStep::Collect => {
                    assert!(region.records[&m].removed());
                    region.records.remove(&m);
                    region.pending.remove(&m);
                    region.collected += 1;
                }
            }
        }
    }

    /// Deliver everything everywhere, then collect until nothing changes.
    fn settle(&mut self) {
        for to in 0..3 {
            for origin in 0..3 {
                let n = self.logs[origin].len();
                self.deliver(to, origin, n);
            }
        }
        for _ in 0..3 {
            for r in 0..3 {
                self.collect(r);
            }
        }
    }

    /// The model's listed members: per member, the maximal writes are all adds.
    fn model(&self) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        for m in 0..MEMBERS.len() {
            let writes: Vec<(usize, u64, &Entry)> = (0..3)
                .flat_map(|o| {
                    self.logs[o]
                        .iter()
                        .enumerate()
                        .filter(move |(_, e)| e.member == m)
                        .map(move |(i, e)| (o, i as u64 + 1, e))
                })
                .collect();
            let seen_by = |w: &(usize, u64, &Entry), other: &(usize, u64, &Entry)| {
                // `w` is in the causal past of `other`.
                (w.0, w.1) != (other.0, other.1)
                    && other.2.past.get(REGIONS[w.0]).copied().unwrap_or(0) >= w.1
            };
            let maximal: Vec<&(usize, u64, &Entry)> = writes
                .iter()
                .filter(|w| !writes.iter().any(|o| seen_by(w, o)))
                .collect();
            if !maximal.is_empty() && maximal.iter().all(|w| w.2.write.on) {
                out.insert(m);
            }
        }
        out
    }
}

fn listed(region: &Region) -> BTreeSet<usize> {
    region
        .records
        .iter()
        .filter(|(_, r)| r.present())
        .map(|(m, _)| *m)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn memberships_converge_to_the_model_and_collection_never_resurrects(
        steps in prop::collection::vec(arb_step(), 0..60)
    ) {
        let mut sim = Sim::new();
        for step in &steps {
            match *step {
                Step::Write(r, m, on) => sim.write(r, m, on),
                Step::Deliver { to, origin, n } => sim.deliver(to, origin, n),
                Step::Transfer { from, to } => sim.transfer(from, to),
                Step::Collect(r) => sim.collect(r),
            }
        }
        sim.settle();
        let model = sim.model();
        for (region, name) in sim.regions.iter().zip(REGIONS) {
            prop_assert_eq!(listed(region), model.clone(), "region {}", name);
        }
        // Once everything has arrived everywhere, every removed record is collected and the
        // records left hold the same values in every region. (Contexts may differ, e.g. where
        // a snapshot raised a region's marks: the values are what is listed and what digests
        // compare.)
        for region in &sim.regions {
            prop_assert!(region.records.values().all(Record::present));
            prop_assert!(region.pending.is_empty());
        }
        let encode = |reg: &Region| -> BTreeMap<usize, Vec<u8>> {
            reg.records
                .iter()
                .map(|(m, r)| {
                    let values = Record {
                        values: r.values.clone(),
                        seen: BTreeMap::new(),
                    };
                    (*m, values.encode())
                })
                .collect()
        };
        prop_assert_eq!(encode(&sim.regions[0]), encode(&sim.regions[1]));
        prop_assert_eq!(encode(&sim.regions[1]), encode(&sim.regions[2]));
    }
}

#[test]
fn a_removal_concurrent_with_an_add_survives_an_early_collection_attempt() {
    let mut sim = Sim::new();
    sim.write(0, 0, true);
    sim.deliver(1, 0, 1);
    sim.deliver(2, 0, 1);
    // eu removes m1 while us re-adds it (a new display would do the same): concurrent.
    sim.write(0, 0, false);
    sim.write(1, 0, false);
    sim.write(1, 0, true);
    // ap and us get eu's removal; eu has not yet got us's writes.
    sim.deliver(1, 0, 5);
    sim.deliver(2, 0, 5);
    for _ in 0..3 {
        sim.collect(0);
    }
    // eu must not have collected: us's re-add, made before us saw the removal, is coming.
    assert!(sim.regions[0].records.contains_key(&0));
    sim.settle();
    for r in 0..3 {
        assert_eq!(listed(&sim.regions[r]), sim.model());
    }
}
