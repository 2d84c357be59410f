//! Property tests of the conflict laws ([`crate::conflict`]) on the documents [`super::doc`]
//! writes: random concurrent histories across three simulated regions, delivered in random
//! orders with duplicates, against a reference model computed from the history's causal
//! structure.
//!
//! The reference model is the textbook one for a multi-value register: a write at a region
//! overwrites exactly the writes that region had seen (its causal past), so the writes that
//! survive a merge are the *maximal* ones (no other write of the same register saw them). A
//! disable-wins flag is then the AND of its maximal values; a remove-wins member is present iff
//! every maximal write of it is an add; a plain attribute ends with one of its maximal values.
//! Causality is read from the final document's change graph (each change's deps), which is
//! exactly what each region had applied when it wrote, whatever order the bytes arrived in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::transaction::CommitOptions;
use automerge::{
    ActorId, AutoCommit, ChangeHash, ObjType, ReadDoc, ScalarValue, Value as AmValue, ROOT,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use super::doc::{
    create, is_deleted, kind_of, mark_deleted, materialize, read_attrs, record_conflicts, version,
    write_attrs, Stamp,
};
use crate::conflict::sticky::{StickyRule, StickySet};
use crate::conflict::{self, layout, rfc3339_millis, Conflict, Resource, Rule};
use crate::scim::schema::ResourceKind;

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const TENANT: &str = "t";
const ID: &str = "r-1";
/// 2026-01-01T00:00:00Z: every stamp is this plus one second per step plus the region's skew.
const BASE_MS: i64 = 1_767_225_600_000;
/// The userName spellings concurrent creates use (one user: ids come from the lower-cased name).
const NAMES: [&str; 3] = ["alice", "Alice", "ALICE"];
/// A tenant-configured sticky attribute and its values; the last one restricts access.
const STATUS: &str = "userType";
const STATUSES: [&str; 3] = ["Employee", "Contractor", "Terminated"];
const TERMINATED: &str = "Terminated";

/// The tenant's sticky set in these histories: `userType = "Terminated"` restricts.
fn sticky_set() -> StickySet {
    StickySet::new(vec![StickyRule {
        key: STATUS.into(),
        restrictive: vec![json!(TERMINATED)],
        case_exact: false,
    }])
}

/// A local write at one region, as the store performs it (read, diff, write, commit).
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Set a plain attribute to `"<key>-<n>"`.
    Set(&'static str, u8),
    /// An explicit `active` write (PATCH/PUT naming `active`): `false` deactivates, `true`
    /// reactivates (a rehire).
    Active(bool),
    /// An explicit write of the configured sticky attribute [`STATUS`]: `STATUSES[n]`, of
    /// which [`TERMINATED`] restricts access.
    Status(usize),
    Delete,
}

/// How one region's changes reach another.
#[derive(Debug, Clone)]
enum Delivery {
    /// `AutoCommit::merge` of the whole document.
    Merge,
    /// The sender's changes selected by `keep` (bit `i % 32` keeps change `i`), shuffled with
    /// `seed`, the first half sent twice when `dup`; applied one by one with `load_incremental`
    /// (changes whose deps are missing wait in Automerge's queue).
    Changes { keep: u32, seed: u64, dup: bool },
}

#[derive(Debug, Clone)]
enum Step {
    Local(usize, Op),
    Deliver(usize, usize, Delivery),
    /// The region detects the conflicts its merged document shows and records them into it, as
    /// the store does after every merge.
    Observe(usize),
}

/// A random history: who creates the resource with what, then the steps, then a final
/// everything-everywhere exchange shuffled with `seed`. Its `Debug` is one line per step, so a
/// shrunk failure reads as a script.
#[derive(Clone)]
struct History {
    kind: ResourceKind,
    /// The attributes each region creates the resource with (`None`: it only receives it).
    creates: [Option<Value>; 3],
    /// Each region's clock skew in ms (stamps stay unique: steps are 1 s apart).
    skew: [i64; 3],
    steps: Vec<Step>,
    seed: u64,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:?} history (seed {}, skew {:?}):",
            self.kind, self.seed, self.skew
        )?;
        for (r, c) in self.creates.iter().enumerate() {
            if let Some(c) = c {
                writeln!(f, "  0. {} creates {c}", REGIONS[r])?;
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            let n = i + 1;
            match step {
                Step::Local(r, op) => writeln!(f, "  {n}. {} {op:?}", REGIONS[*r])?,
                Step::Deliver(a, b, how) => {
                    writeln!(f, "  {n}. {} -> {} {how:?}", REGIONS[*a], REGIONS[*b])?
                }
                Step::Observe(r) => {
                    writeln!(f, "  {n}. {} observes (detect + record)", REGIONS[*r])?
                }
            }
        }
        Ok(())
    }
}

/// What one change wrote, for the model.
#[derive(Debug, Clone, PartialEq)]
enum Write {
    /// `c`: a creation.
    Created,
    Active(bool),
    Scalar(String, Value),
    Delete,
}

/// A committed local change and what it wrote.
#[derive(Debug, Clone)]
struct OpRec {
    region: usize,
    hash: ChangeHash,
    at: String,
    writes: Vec<Write>,
}

fn stamp(region: usize, step: usize, skew: i64) -> Stamp {
    let millis = BASE_MS + 1000 * step as i64 + skew;
    Stamp {
        region: REGIONS[region].to_string(),
        at: rfc3339_millis(millis),
        millis,
    }
}

/// splitmix64: a tiny deterministic generator for shuffles (the seed is part of the history).
fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        let j = (next(seed) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Three regions' copies of one resource document.
struct Sim {
    kind: ResourceKind,
    docs: Vec<AutoCommit>,
    ops: Vec<OpRec>,
    /// Every conflict record id a region ever wrote into its document.
    observed: BTreeSet<String>,
}

fn resource(kind: ResourceKind) -> Resource<'static> {
    Resource {
        tenant: TENANT,
        kind: kind.name(),
        id: ID,
    }
}

fn commit(doc: &mut AutoCommit, stamp: &Stamp) -> Option<ChangeHash> {
    doc.commit_with(CommitOptions::default().with_time(stamp.millis))
}

/// A document the store would write to: created (its genesis and a creation arrived; the store
/// ships both in one log entry, so it never holds a genesis alone) and not a tombstone.
fn live(doc: &AutoCommit) -> bool {
    kind_of(doc).is_ok()
        && matches!(doc.get(ROOT, layout::CREATED), Ok(Some(_)))
        && !is_deleted(doc)
}

impl Sim {
    fn new(h: &History) -> Sim {
        let mut sim = Sim {
            kind: h.kind,
            docs: REGIONS
                .iter()
                .map(|r| AutoCommit::new().with_actor(ActorId::from(r.as_bytes())))
                .collect(),
            ops: Vec::new(),
            observed: BTreeSet::new(),
        };
        for (r, attrs) in h.creates.iter().enumerate() {
            let Some(Value::Object(attrs)) = attrs else {
                continue;
            };
            // What `Store::write_new` does: genesis + `c`, every attribute explicit, one commit.
            let st = stamp(r, 0, h.skew[r]);
            let actor = ActorId::from(REGIONS[r].as_bytes());
            let mut doc = create(h.kind, ID, actor, &st).unwrap();
            let explicit: Vec<String> = attrs.keys().cloned().collect();
            write_attrs(
                &mut doc,
                h.kind,
                &Map::new(),
                attrs,
                &explicit,
                &sticky_set(),
                &st,
            )
            .unwrap();
            let hash = commit(&mut doc, &st).expect("a creation writes");
            let mut writes = vec![Write::Created];
            for (k, v) in attrs {
                match (k.as_str(), v) {
                    (layout::ACTIVE, Value::Bool(b)) => writes.push(Write::Active(*b)),
                    _ => writes.push(Write::Scalar(k.clone(), v.clone())),
                }
            }
            sim.ops.push(OpRec {
                region: r,
                hash,
                at: st.at.clone(),
                writes,
            });
            sim.docs[r] = doc;
        }
        sim
    }

    fn run(h: &History) -> Sim {
        let mut sim = Sim::new(h);
        for (i, step) in h.steps.iter().enumerate() {
            match step {
                Step::Local(r, op) => sim.local(*r, *op, &stamp(*r, i + 1, h.skew[*r])),
                Step::Deliver(from, to, how) => sim.deliver(*from, *to, how),
                Step::Observe(r) => sim.observe(*r, &stamp(*r, i + 1, h.skew[*r])),
            }
        }
        sim.exchange_all(h.seed);
        sim
    }

    /// A local write, as the store does it: refused (404) unless the document is live here.
    fn local(&mut self, r: usize, op: Op, st: &Stamp) {
        let kind = self.kind;
        let doc = &mut self.docs[r];
        if !live(doc) {
            return;
        }
        let old = read_attrs(doc, kind).unwrap();
        let mut new = old.clone();
        let mut writes = Vec::new();
        let explicit: Vec<String> = match op {
            Op::Delete => {
                mark_deleted(doc, st).unwrap();
                let hash = commit(doc, st).expect("a delete writes");
                self.ops.push(OpRec {
                    region: r,
                    hash,
                    at: st.at.clone(),
                    writes: vec![Write::Delete],
                });
                return;
            }
            Op::Set(key, n) => {
                let v = json!(format!("{key}-{n}"));
                if old.get(key) != Some(&v) {
                    writes.push(Write::Scalar(key.to_string(), v.clone()));
                }
                new.insert(key.to_string(), v);
                vec![key.to_string()]
            }
            Op::Active(b) => {
                writes.push(Write::Active(b));
                new.insert(layout::ACTIVE.to_string(), Value::Bool(b));
                vec![layout::ACTIVE.to_string()]
            }
            Op::Status(n) => {
                // Explicit: a new write even when the value is unchanged (law 3).
                let v = json!(STATUSES[n]);
                writes.push(Write::Scalar(STATUS.to_string(), v.clone()));
                new.insert(STATUS.to_string(), v);
                vec![STATUS.to_string()]
            }
        };
        let changed = write_attrs(doc, kind, &old, &new, &explicit, &sticky_set(), st).unwrap();
        assert_eq!(changed, !writes.is_empty(), "write_attrs for {op:?}");
        if let Some(hash) = commit(doc, st) {
            self.ops.push(OpRec {
                region: r,
                hash,
                at: st.at.clone(),
                writes,
            });
        }
    }

    fn deliver(&mut self, from: usize, to: usize, how: &Delivery) {
        match how {
            Delivery::Merge => {
                let mut sender = std::mem::take(&mut self.docs[from]);
                self.docs[to].merge(&mut sender).unwrap();
                self.docs[from] = sender;
            }
            Delivery::Changes { keep, seed, dup } => {
                let mut seed = *seed;
                let mut bytes: Vec<Vec<u8>> = self.docs[from]
                    .get_changes(&[])
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| keep >> (i % 32) & 1 == 1)
                    .map(|(_, c)| c.raw_bytes().to_vec())
                    .collect();
                if *dup {
                    let again: Vec<Vec<u8>> = bytes[..bytes.len().div_ceil(2)].to_vec();
                    bytes.extend(again);
                }
                shuffle(&mut bytes, &mut seed);
                for b in bytes {
                    self.docs[to].load_incremental(&b).unwrap();
                }
            }
        }
    }

    /// What the store does after a merge: detect, record what the document lacks, commit.
    fn observe(&mut self, r: usize, st: &Stamp) {
        let kind = self.kind;
        let doc = &mut self.docs[r];
        if kind_of(doc).is_err() {
            return;
        }
        let found = conflict::detect(doc, resource(kind)).unwrap();
        if record_conflicts(doc, &found).unwrap() {
            commit(doc, st);
        }
        self.observed.extend(found.into_iter().map(|c| c.id));
    }

    /// Everything everywhere: two rounds over every ordered pair, in a shuffled order, each a
    /// shuffled delivery of all the sender's changes with duplicates.
    fn exchange_all(&mut self, seed: u64) {
        let mut seed = seed;
        for _ in 0..2 {
            let mut pairs: Vec<(usize, usize)> = (0..3)
                .flat_map(|a| (0..3).filter(move |b| *b != a).map(move |b| (a, b)))
                .collect();
            shuffle(&mut pairs, &mut seed);
            for (from, to) in pairs {
                let how = Delivery::Changes {
                    keep: u32::MAX,
                    seed: next(&mut seed),
                    dup: true,
                };
                self.deliver(from, to, &how);
            }
        }
    }

    /// Every region records the conflicts it sees now, then everything is exchanged again.
    fn record_everywhere(&mut self, seed: u64, st: &Stamp) {
        for r in 0..3 {
            self.observe(r, st);
        }
        self.exchange_all(seed);
    }

    /// Each change's causal past (strict ancestors), from the converged change graph.
    fn ancestors(&mut self) -> HashMap<ChangeHash, HashSet<ChangeHash>> {
        let mut anc: HashMap<ChangeHash, HashSet<ChangeHash>> = HashMap::new();
        // `get_changes` lists changes in the order they were applied: deps first.
        for c in self.docs[0].get_changes(&[]) {
            let mut set = HashSet::new();
            for d in c.deps() {
                set.insert(*d);
                set.extend(anc[d].iter().copied());
            }
            anc.insert(c.hash(), set);
        }
        anc
    }
}

/// The reference model's registers: every write, by register, with the value it wrote.
fn registers(ops: &[OpRec]) -> BTreeMap<String, Vec<(ChangeHash, Value)>> {
    let mut regs: BTreeMap<String, Vec<(ChangeHash, Value)>> = BTreeMap::new();
    for op in ops {
        for w in &op.writes {
            let (reg, v) = match w {
                Write::Active(b) => (layout::ACTIVE.to_string(), json!(b)),
                Write::Scalar(k, v) => (k.clone(), v.clone()),
                Write::Created | Write::Delete => continue,
            };
            regs.entry(reg).or_default().push((op.hash, v));
        }
    }
    regs
}

/// The writes no other write of the same register saw: what survives the merge.
fn maximal(
    writes: &[(ChangeHash, Value)],
    anc: &HashMap<ChangeHash, HashSet<ChangeHash>>,
) -> Vec<Value> {
    writes
        .iter()
        .filter(|(h, _)| !writes.iter().any(|(o, _)| anc[o].contains(h)))
        .map(|(_, v)| v.clone())
        .collect()
}

/// Disable-wins / remove-wins reference: the AND of the maximal values.
fn all_true(values: &[Value]) -> bool {
    values.iter().all(|v| v == &json!(true))
}

fn count(records: &[Conflict], rule: Rule, attribute: &str) -> usize {
    records
        .iter()
        .filter(|c| c.rule == rule && c.attribute == attribute)
        .count()
}

fn sorted(mut records: Vec<Conflict>) -> Vec<Conflict> {
    records.sort_by(|a, b| a.id.cmp(&b.id));
    records
}

fn without_version(mut view: Value) -> Value {
    view["meta"].as_object_mut().unwrap().remove("version");
    view
}

/// Run a history and check convergence, the laws against the reference model, and conflict
/// records (determinism, expected rules, recording changes nothing but the version).
fn check(h: &History) -> Result<(), TestCaseError> {
    let mut sim = Sim::run(h);
    let kind = sim.kind;

    // Convergence: the same changes everywhere, nothing left waiting for deps.
    let heads: Vec<Vec<ChangeHash>> = sim.docs.iter_mut().map(|d| d.get_heads()).collect();
    prop_assert!(heads.iter().all(|x| *x == heads[0]), "heads differ");
    for d in &mut sim.docs {
        prop_assert!(d.get_missing_deps(&[]).is_empty(), "changes still queued");
    }

    // No resurrection: one delete anywhere and the resource is deleted everywhere.
    let deleted: Vec<bool> = sim.docs.iter().map(is_deleted).collect();
    let any_delete = sim.ops.iter().any(|o| o.writes.contains(&Write::Delete));
    prop_assert!(
        deleted.iter().all(|d| *d == any_delete),
        "deleted {deleted:?}"
    );

    // Identical views and ETags.
    let mut views = Vec::new();
    if !any_delete {
        for d in &mut sim.docs {
            let v = materialize(d, kind).unwrap();
            prop_assert_eq!(v["meta"]["version"].as_str().unwrap(), version(d));
            views.push(v);
        }
        let text = serde_json::to_string(&views[0]).unwrap();
        for v in &views[1..] {
            prop_assert_eq!(&serde_json::to_string(v).unwrap(), &text);
        }
    }

    // Records: deterministic, the same on every region.
    let detected: Vec<Vec<Conflict>> = sim
        .docs
        .iter_mut()
        .map(|d| sorted(conflict::detect(d, resource(kind)).unwrap()))
        .collect();
    for d in &detected[1..] {
        prop_assert_eq!(d, &detected[0]);
    }
    let records = &detected[0];

    // The reference model.
    let anc = sim.ancestors();
    let regs = registers(&sim.ops);
    let creates: Vec<&OpRec> = sim
        .ops
        .iter()
        .filter(|o| o.writes.contains(&Write::Created))
        .collect();
    if any_delete {
        // Delete wins: one record per update concurrent with the winning delete.
        let doc = &sim.docs[0];
        let Some((AmValue::Object(ObjType::Map), t)) = doc.get(ROOT, layout::DELETED).unwrap()
        else {
            return Err(TestCaseError::fail("tombstone is not a map"));
        };
        let at = match doc.get(&t, layout::AT).unwrap() {
            Some((AmValue::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(t) => t.to_string(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let win = sim
            .ops
            .iter()
            .find(|o| o.at == at && o.writes.contains(&Write::Delete))
            .expect("the winning delete is one of ours");
        let mut expected: Vec<(String, String)> = sim
            .ops
            .iter()
            .filter(|o| o.writes.iter().any(|w| *w != Write::Delete))
            .filter(|o| !anc[&win.hash].contains(&o.hash) && !anc[&o.hash].contains(&win.hash))
            .map(|o| (REGIONS[o.region].to_string(), o.at.clone()))
            .collect();
        let mut got: Vec<(String, String)> = records
            .iter()
            .filter(|c| c.rule == Rule::DeleteWins)
            .map(|c| (c.values[1].region.clone(), c.values[1].at.clone()))
            .collect();
        expected.sort();
        got.sort();
        prop_assert_eq!(got, expected, "delete-wins records");
        prop_assert_eq!(
            records.len(),
            records
                .iter()
                .filter(|c| c.rule == Rule::DeleteWins)
                .count()
        );
    } else {
        let view = &views[0];
        // One user per userName: one resource with the id, its userName one of the creates'.
        prop_assert_eq!(&view["id"], &json!(ID));
        if kind == ResourceKind::User {
            let names: Vec<&Value> = h.creates.iter().flatten().map(|c| &c["userName"]).collect();
            prop_assert!(
                names.contains(&&view["userName"]),
                "userName {}",
                view["userName"]
            );
        }
        prop_assert_eq!(
            count(records, Rule::UsernameMerge, "userName"),
            creates.len().saturating_sub(1)
        );
        for (reg, writes) in &regs {
            let max = maximal(writes, &anc);
            if reg == layout::ACTIVE {
                // Disable-wins: the AND of the maximal writes.
                prop_assert_eq!(&view[layout::ACTIVE], &json!(all_true(&max)), "active");
                let offs = max.iter().filter(|v| **v == json!(false)).count();
                let ons = max.len() - offs;
                let want = if offs > 0 { ons } else { 0 };
                prop_assert_eq!(
                    count(records, Rule::StickyDeactivation, layout::ACTIVE),
                    want
                );
            } else if reg == STATUS && max.contains(&json!(TERMINATED)) {
                // A configured sticky attribute: a maximal restrictive write wins, and every
                // other maximal value is a sticky record.
                prop_assert_eq!(&view[STATUS], &json!(TERMINATED), "{}", STATUS);
                let losers = max.iter().filter(|v| **v != json!(TERMINATED)).count();
                prop_assert_eq!(count(records, Rule::StickyDeactivation, STATUS), losers);
                prop_assert_eq!(count(records, Rule::ConcurrentScalar, STATUS), 0);
            } else {
                // A plain attribute (or a sticky one no maximal write restricts): one of the
                // maximal values; every other value a record.
                let value = &view[reg.as_str()];
                prop_assert!(max.contains(value), "{} = {} not in {:?}", reg, value, max);
                let losers = max.iter().filter(|v| *v != value).count();
                prop_assert_eq!(
                    count(records, Rule::ConcurrentScalar, reg),
                    losers,
                    "{}",
                    reg
                );
            }
        }
        if !regs.contains_key(layout::ACTIVE) {
            prop_assert!(view.get(layout::ACTIVE).is_none());
        }
    }

    // Recording the records (and replicating that) changes nothing but the version, and
    // creates no new records; every region then holds them.
    let st = stamp(0, h.steps.len() + 2, 0);
    sim.record_everywhere(h.seed ^ 0x5EED, &st);
    for (r, d) in sim.docs.iter_mut().enumerate() {
        prop_assert_eq!(is_deleted(d), any_delete);
        if !any_delete {
            let v = materialize(d, kind).unwrap();
            prop_assert_eq!(without_version(v), without_version(views[0].clone()));
        }
        let again = sorted(conflict::detect(d, resource(kind)).unwrap());
        prop_assert_eq!(&again, records, "records changed at {}", REGIONS[r]);
        let held: BTreeSet<String> = conflict::recorded_ids(d).unwrap().into_iter().collect();
        for c in records {
            prop_assert!(held.contains(&c.id), "{} lacks record {}", REGIONS[r], c.id);
        }
    }
    Ok(())
}

/// Every record any region ever wrote into its document is, in the end, in every region's
/// document (records "reach every region with it").
fn check_records_persist(h: &History) -> Result<(), TestCaseError> {
    let mut sim = Sim::run(h);
    let st = stamp(0, h.steps.len() + 2, 0);
    sim.record_everywhere(h.seed ^ 0x5EED, &st);
    for (r, d) in sim.docs.iter().enumerate() {
        let held: BTreeSet<String> = conflict::recorded_ids(d).unwrap().into_iter().collect();
        let lost: Vec<&String> = sim.observed.difference(&held).collect();
        prop_assert!(lost.is_empty(), "{} lost records {:?}", REGIONS[r], lost);
    }
    Ok(())
}

// ---- strategies ----

fn user_op(deletes: bool) -> BoxedStrategy<Op> {
    let edits = prop_oneof![
        4 => (prop_oneof![Just("displayName"), Just("title")], 0u8..3)
            .prop_map(|(k, n)| Op::Set(k, n)),
        4 => Just(Op::Active(false)),
        4 => Just(Op::Active(true)),
        4 => (0..STATUSES.len()).prop_map(Op::Status),
    ];
    if deletes {
        prop_oneof![12 => edits, 1 => Just(Op::Delete)].boxed()
    } else {
        edits.boxed()
    }
}

fn group_op(deletes: bool) -> BoxedStrategy<Op> {
    let edits = prop_oneof![
        3 => (0u8..2).prop_map(|n| Op::Set("displayName", n)),
        2 => (0u8..2).prop_map(|n| Op::Set("externalId", n)),
    ];
    if deletes {
        prop_oneof![11 => edits, 1 => Just(Op::Delete)].boxed()
    } else {
        edits.boxed()
    }
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![
        1 => Just(Delivery::Merge),
        3 => (
            prop_oneof![Just(u32::MAX), any::<u32>()],
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(keep, seed, dup)| Delivery::Changes { keep, seed, dup }),
    ]
}

fn steps(op: impl Strategy<Value = Op> + 'static) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        5 => (0..3usize, op).prop_map(|(r, op)| Step::Local(r, op)),
        4 => (0..3usize, 1..3usize, delivery())
            .prop_map(|(from, d, how)| Step::Deliver(from, (from + d) % 3, how)),
        1 => (0..3usize).prop_map(Step::Observe),
    ];
    proptest::collection::vec(step, 0..28)
}

fn skew() -> impl Strategy<Value = [i64; 3]> {
    [-400i64..400, -400i64..400, -400i64..400]
}

/// Users: one to three regions create the same id (same or other userName case, attributes).
fn user_history() -> impl Strategy<Value = History> {
    let payload = (
        0..NAMES.len(),
        proptest::option::of(0u8..2),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(n, display, active)| {
            let mut a = json!({"userName": NAMES[n]});
            if let Some(d) = display {
                a["displayName"] = json!(format!("displayName-{d}"));
            }
            if let Some(b) = active {
                a["active"] = json!(b);
            }
            a
        });
    (
        1u8..8,
        [payload.clone(), payload.clone(), payload],
        skew(),
        any::<bool>().prop_flat_map(|deletes| steps(user_op(deletes))),
        any::<u64>(),
    )
        .prop_map(|(mask, payloads, skew, steps, seed)| {
            let mut creates: [Option<Value>; 3] = [None, None, None];
            for (r, p) in payloads.into_iter().enumerate() {
                if mask >> r & 1 == 1 {
                    creates[r] = Some(p);
                }
            }
            History {
                kind: ResourceKind::User,
                creates,
                skew,
                steps,
                seed,
            }
        })
}

/// Groups: one region creates (group ids are random, never created twice). Members are records
/// of their own (`store::members`), with laws of their own (`conflict::membership_laws`).
fn group_history() -> impl Strategy<Value = History> {
    (
        0..3usize,
        skew(),
        any::<bool>().prop_flat_map(|deletes| steps(group_op(deletes))),
        any::<u64>(),
    )
        .prop_map(|(creator, skew, steps, seed)| {
            let mut creates: [Option<Value>; 3] = [None, None, None];
            creates[creator] = Some(json!({"displayName": "displayName-0"}));
            History {
                kind: ResourceKind::Group,
                creates,
                skew,
                steps,
                seed,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Users: convergence, disable-wins `active`, no resurrection, one user per userName,
    /// concurrent scalars, and the records each rule leaves.
    #[test]
    fn user_histories_converge_and_obey_the_laws(h in user_history()) {
        check(&h)?;
    }

    /// Groups: convergence, delete wins, concurrent scalars, and their records.
    #[test]
    fn group_histories_converge_and_delete_wins(h in group_history()) {
        check(&h)?;
    }

    /// Records written at intermediate merges survive into every region's document.
    ///
    /// Regression: see `records_written_concurrently_in_two_regions_both_survive`.
    #[test]
    fn recorded_conflicts_reach_every_region(h in prop_oneof![user_history(), group_history()]) {
        check_records_persist(&h)?;
    }
}

// ---- the laws as named histories (and the violations the properties found) ----

fn script(kind: ResourceKind, creates: [Option<Value>; 3], steps: Vec<Step>) -> History {
    History {
        kind,
        creates,
        skew: [0; 3],
        steps,
        seed: 7,
    }
}

fn alice() -> Option<Value> {
    Some(json!({"userName": "alice", "active": true}))
}

/// The view every region ends with (they are checked identical by [`check`]).
fn final_view(h: &History) -> Value {
    let mut sim = Sim::run(h);
    materialize(&mut sim.docs[0], h.kind).unwrap()
}

#[test]
fn concurrent_reactivation_loses_to_deactivation() {
    use Step::*;
    let h = script(
        ResourceKind::User,
        [alice(), None, None],
        vec![
            Deliver(0, 1, Delivery::Merge),
            Local(0, Op::Active(false)),
            Local(1, Op::Active(true)),
            Local(1, Op::Active(true)),
        ],
    );
    check(&h).unwrap();
    assert_eq!(final_view(&h)["active"], json!(false));
}

#[test]
fn a_rehire_that_saw_the_deactivation_wins() {
    use Step::*;
    let h = script(
        ResourceKind::User,
        [alice(), None, None],
        vec![
            Local(0, Op::Active(false)),
            Deliver(0, 1, Delivery::Merge),
            Local(1, Op::Active(true)),
        ],
    );
    check(&h).unwrap();
    assert_eq!(final_view(&h)["active"], json!(true));
}

#[test]
fn concurrent_creates_of_one_username_are_one_user() {
    let h = script(
        ResourceKind::User,
        [
            Some(json!({"userName": "alice", "displayName": "A"})),
            Some(json!({"userName": "ALICE", "title": "T"})),
            Some(json!({"userName": "Alice", "active": false})),
        ],
        vec![],
    );
    check(&h).unwrap();
    let view = final_view(&h);
    assert_eq!(view["id"], json!(ID));
    assert_eq!(
        (&view["displayName"], &view["title"], &view["active"]),
        (&json!("A"), &json!("T"), &json!(false))
    );
}

#[test]
fn a_delete_is_never_undone_by_concurrent_updates() {
    use Step::*;
    let h = script(
        ResourceKind::User,
        [alice(), None, None],
        vec![
            Deliver(0, 1, Delivery::Merge),
            Deliver(0, 2, Delivery::Merge),
            Local(0, Op::Delete),
            Local(1, Op::Active(true)),
            Local(2, Op::Set("title", 1)),
            Deliver(0, 2, Delivery::Merge),
            Observe(2),
        ],
    );
    check(&h).unwrap();
}

/// Regression (found by these property tests): the records map `x` was created by the first
/// region that recorded a conflict; two regions recording concurrently created two maps on one
/// root key, Automerge kept one, and the records only the other held were gone from every
/// document once the conflict they describe was superseded (here the rehire at ap). Fixed by
/// creating `x` in the shared genesis.
#[test]
fn records_written_concurrently_in_two_regions_both_survive() {
    use Step::*;
    let h = script(
        ResourceKind::User,
        [alice(), None, None],
        vec![
            Deliver(0, 1, Delivery::Merge),
            Deliver(0, 2, Delivery::Merge),
            // ap sees a deactivation concurrent with its reactivation and records it.
            Local(1, Op::Active(false)),
            Local(2, Op::Active(true)),
            Deliver(1, 2, Delivery::Merge),
            Observe(2),
            // us sees a concurrent title write and records it, into its own new `x`.
            Local(1, Op::Set("title", 0)),
            Local(0, Op::Set("title", 1)),
            Deliver(0, 1, Delivery::Merge),
            Observe(1),
            // ap rehires, having seen the deactivation: the sticky conflict is no longer visible.
            Local(2, Op::Active(true)),
        ],
    );
    check(&h).unwrap();
    check_records_persist(&h).unwrap();
}

/// Regression (found by these property tests): on a group without a members map, a write of
/// `members: []` created the map but `write_attrs` answered "unchanged", so `Store::update`
/// neither committed nor logged it, and later changes depended on a change no peer was ever
/// sent. Fixed then by the members map in the genesis; now members are never document attributes.
#[test]
fn a_write_that_changes_nothing_leaves_nothing_behind() {
    let st = stamp(0, 1, 0);
    let mut doc = create(
        ResourceKind::Group,
        ID,
        ActorId::from(b"eu".as_slice()),
        &st,
    )
    .unwrap();
    let attrs = json!({"displayName": "G"}).as_object().unwrap().clone();
    let none = StickySet::default();
    write_attrs(
        &mut doc,
        ResourceKind::Group,
        &Map::new(),
        &attrs,
        &[],
        &none,
        &st,
    )
    .unwrap();
    commit(&mut doc, &st);
    let before = doc.get_heads();
    let old = read_attrs(&doc, ResourceKind::Group).unwrap();
    let mut new = old.clone();
    new.insert("members".into(), json!([]));
    let changed = write_attrs(&mut doc, ResourceKind::Group, &old, &new, &[], &none, &st).unwrap();
    assert!(!changed);
    assert_eq!(
        doc.get_heads(),
        before,
        "an unchanged write committed a change"
    );
}

#[test]
fn a_concurrent_rehire_loses_to_a_termination_of_a_configured_sticky_attribute() {
    use Step::*;
    let h = script(
        ResourceKind::User,
        [alice(), None, None],
        vec![
            Local(0, Op::Status(0)),
            Deliver(0, 1, Delivery::Merge),
            Local(0, Op::Status(2)),
            Local(1, Op::Status(1)),
            Local(1, Op::Status(0)),
        ],
    );
    check(&h).unwrap();
    assert_eq!(final_view(&h)[STATUS], json!(TERMINATED));
}

#[test]
fn a_rehire_that_saw_the_termination_wins() {
    use Step::*;
    let h = script(
        ResourceKind::User,
        [alice(), None, None],
        vec![
            Local(0, Op::Status(2)),
            Deliver(0, 1, Delivery::Merge),
            Local(1, Op::Status(0)),
        ],
    );
    check(&h).unwrap();
    assert_eq!(final_view(&h)[STATUS], json!("Employee"));
}

/// A region whose configuration does not (yet) name the attribute writes it as a plain value;
/// a concurrent restrictive write from a region that does still wins, and both read the same.
#[test]
fn a_plain_write_from_an_unconfigured_region_loses_to_a_restrictive_one() {
    let st = |r: usize| stamp(r, 1, 0);
    let mut a = create(
        ResourceKind::User,
        ID,
        ActorId::from(REGIONS[0].as_bytes()),
        &st(0),
    )
    .unwrap();
    let base = json!({"userName": "alice", "userType": "Employee"});
    let base = base.as_object().unwrap().clone();
    write_attrs(
        &mut a,
        ResourceKind::User,
        &Map::new(),
        &base,
        &[],
        &sticky_set(),
        &st(0),
    )
    .unwrap();
    commit(&mut a, &st(0));
    let mut b = a.fork().with_actor(ActorId::from(REGIONS[1].as_bytes()));
    let mut off = base.clone();
    off.insert(STATUS.into(), json!("terminated"));
    write_attrs(
        &mut a,
        ResourceKind::User,
        &base,
        &off,
        &[STATUS.into()],
        &sticky_set(),
        &st(0),
    )
    .unwrap();
    commit(&mut a, &st(0));
    let mut on = base.clone();
    on.insert(STATUS.into(), json!("Contractor"));
    let plain = StickySet::default();
    write_attrs(
        &mut b,
        ResourceKind::User,
        &base,
        &on,
        &[STATUS.into()],
        &plain,
        &st(1),
    )
    .unwrap();
    commit(&mut b, &st(1));
    a.merge(&mut b).unwrap();
    b.merge(&mut a).unwrap();
    for d in [&mut a, &mut b] {
        assert_eq!(
            materialize(d, ResourceKind::User).unwrap()[STATUS],
            json!("terminated")
        );
        let found = conflict::detect(d, resource(ResourceKind::User)).unwrap();
        assert_eq!(
            count(&found, Rule::StickyDeactivation, STATUS),
            1,
            "{found:?}"
        );
    }
}
