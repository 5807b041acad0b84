//! Property test: the store against a dumb in-memory model of etcd's MVCC
//! semantics (every version of every key kept in a BTreeMap, compaction only
//! recorded), over random sequences of put, delete, txn, range and compact.

mod common;

use std::collections::BTreeMap;

use common::*;
use concord_mvcc::*;
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq)]
struct MKv {
    value: Vec<u8>,
    create: i64,
    version: i64,
    modr: i64,
}

#[derive(Default)]
struct Model {
    rev: i64,
    compacted: i64,
    /// key -> [(revision, Some(kv) | None for a tombstone)]
    versions: BTreeMap<Vec<u8>, Vec<(i64, Option<MKv>)>>,
    /// (revision, key, value if put) in apply order.
    events: Vec<(i64, Vec<u8>, Option<Vec<u8>>)>,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        e => k >= key && k < e,
    }
}

impl Model {
    fn new() -> Model {
        Model {
            rev: 1,
            compacted: -1,
            ..Default::default()
        }
    }

    fn at(&self, key: &[u8], rev: i64) -> Option<&MKv> {
        self.versions
            .get(key)?
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)?
            .1
            .as_ref()
    }

    fn live_at(&self, key: &[u8], end: &[u8], rev: i64) -> Vec<(Vec<u8>, MKv)> {
        self.versions
            .keys()
            .filter(|k| in_range(k, key, end))
            .filter_map(|k| self.at(k, rev).map(|kv| (k.clone(), kv.clone())))
            .collect()
    }

    /// Writes at revision `self.rev + 1` without bumping.
    fn put(&mut self, key: &[u8], value: &[u8]) {
        let rev = self.rev + 1;
        let prev = self.at(key, rev).cloned();
        let kv = MKv {
            value: value.to_vec(),
            create: prev.as_ref().map_or(rev, |p| p.create),
            version: prev.map_or(1, |p| p.version + 1),
            modr: rev,
        };
        self.versions
            .entry(key.to_vec())
            .or_default()
            .push((rev, Some(kv)));
        self.events.push((rev, key.to_vec(), Some(value.to_vec())));
    }

    fn delete(&mut self, key: &[u8], end: &[u8]) -> usize {
        let rev = self.rev + 1;
        let victims: Vec<_> = self
            .live_at(key, end, rev)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in &victims {
            self.versions.get_mut(k).unwrap().push((rev, None));
            self.events.push((rev, k.clone(), None));
        }
        victims.len()
    }
}

#[derive(Clone, Debug)]
enum BranchOp {
    Put(String, String),
    Del(String),
}

#[derive(Clone, Debug)]
enum Op {
    Put(String, String),
    Del(String, String),
    Txn {
        key: String,
        version: i64,
        then: Vec<BranchOp>,
        els: Vec<BranchOp>,
    },
    Range {
        key: String,
        end: String,
        rev_back: i64,
        limit: i64,
    },
    Compact {
        rev_back: i64,
    },
    /// Close and reopen the store: the key index (with each key's create
    /// revision, version and lease, which puts use without reading back)
    /// is rebuilt from disk.
    Reopen,
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "ab", "b", "c", "d", "e"]).prop_map(String::from)
}

fn end() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "", "\0", "c", "e", "b"]).prop_map(String::from)
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["x", "y", "zz", ""]).prop_map(String::from)
}

fn branch_op() -> impl Strategy<Value = BranchOp> {
    prop_oneof![
        3 => (key(), value()).prop_map(|(k, v)| BranchOp::Put(k, v)),
        1 => key().prop_map(BranchOp::Del),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (key(), end()).prop_map(|(k, e)| Op::Del(k, e)),
        2 => (key(), 0i64..3, prop::collection::vec(branch_op(), 0..4), prop::collection::vec(branch_op(), 0..3))
            .prop_map(|(key, version, then, els)| Op::Txn { key, version, then, els }),
        4 => (key(), end(), 0i64..8, -1i64..4).prop_map(|(key, end, rev_back, limit)| Op::Range { key, end, rev_back, limit }),
        1 => (0i64..6).prop_map(|rev_back| Op::Compact { rev_back }),
        1 => Just(Op::Reopen),
    ]
}

fn to_request(op: &BranchOp) -> RequestOp {
    match op {
        BranchOp::Put(k, v) => RequestOp::Put(put_req(k, v)),
        BranchOp::Del(k) => RequestOp::DeleteRange(DeleteRangeRequest {
            key: k.clone().into(),
            ..Default::default()
        }),
    }
}

/// etcd's duplicate-key rule for a flat branch of single-key ops.
fn has_duplicate(ops: &[BranchOp]) -> bool {
    let puts: Vec<&String> = ops
        .iter()
        .filter_map(|o| {
            if let BranchOp::Put(k, _) = o {
                Some(k)
            } else {
                None
            }
        })
        .collect();
    let dels: Vec<&String> = ops
        .iter()
        .filter_map(|o| {
            if let BranchOp::Del(k) = o {
                Some(k)
            } else {
                None
            }
        })
        .collect();
    puts.iter()
        .enumerate()
        .any(|(i, k)| puts[..i].contains(k) || dels.contains(k))
}

fn check_range(
    h: &Harness,
    m: &Model,
    key: &str,
    end: &str,
    rev_back: i64,
    limit: i64,
) -> Result<(), TestCaseError> {
    let rev = if rev_back == 0 {
        0
    } else {
        m.rev - rev_back + 1
    };
    let req = RangeRequest {
        key: key.into(),
        range_end: end.into(),
        revision: rev,
        limit,
        ..Default::default()
    };
    let got = h.store.range(&req);
    let read_rev = if rev <= 0 { m.rev } else { rev };
    if read_rev < m.compacted {
        prop_assert!(matches!(got, Err(MvccError::Compacted { .. })), "{got:?}");
        return Ok(());
    }
    let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
    let want = m.live_at(key.as_bytes(), end.as_bytes(), read_rev);
    prop_assert_eq!(got.count, want.len() as i64);
    prop_assert_eq!(got.revision, m.rev);
    let take = if limit > 0 {
        (limit as usize).min(want.len())
    } else {
        want.len()
    };
    prop_assert_eq!(got.more, take < want.len());
    prop_assert_eq!(got.kvs.len(), take);
    for (kv, (k, w)) in got.kvs.iter().zip(&want) {
        prop_assert_eq!(&kv.key, k);
        prop_assert_eq!(&kv.value, &w.value);
        prop_assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (w.create, w.modr, w.version)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        let mut m = Model::new();
        for op in &ops {
            match op {
                Op::Put(k, v) => {
                    h.put(k, v);
                    m.put(k.as_bytes(), v.as_bytes());
                    m.rev += 1;
                }
                Op::Del(k, e) => {
                    let d = h.del(k, e);
                    let n = m.delete(k.as_bytes(), e.as_bytes());
                    if n > 0 { m.rev += 1; }
                    prop_assert_eq!(d.deleted, n as i64);
                    prop_assert_eq!(d.revision, m.rev);
                }
                Op::Txn { key, version, then, els } => {
                    let req = TxnRequest {
                        compare: vec![cmp(key, CompareResult::Equal, CompareTarget::Version(*version))],
                        success: then.iter().map(to_request).collect(),
                        failure: els.iter().map(to_request).collect(),
                    };
                    let got = h.txn(req);
                    if has_duplicate(then) || has_duplicate(els) {
                        prop_assert!(matches!(got, Err(MvccError::DuplicateKey)), "{got:?}");
                        continue;
                    }
                    let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let holds = m.at(key.as_bytes(), m.rev).map_or(0, |kv| kv.version) == *version;
                    prop_assert_eq!(got.succeeded, holds);
                    let before = m.events.len();
                    for o in if holds { then } else { els } {
                        match o {
                            BranchOp::Put(k, v) => m.put(k.as_bytes(), v.as_bytes()),
                            BranchOp::Del(k) => { m.delete(k.as_bytes(), b""); }
                        }
                    }
                    if m.events.len() > before { m.rev += 1; }
                    prop_assert_eq!(got.revision, m.rev);
                }
                Op::Range { key, end, rev_back, limit } => check_range(&h, &m, key, end, *rev_back, *limit)?,
                Op::Compact { rev_back } => {
                    let rev = m.rev - rev_back;
                    let got = h.apply(Command::Compact(CompactionRequest { revision: rev, physical: true }));
                    if rev <= m.compacted {
                        prop_assert!(matches!(got, Err(MvccError::Compacted { .. })), "{got:?}");
                    } else {
                        prop_assert!(got.is_ok(), "{got:?}");
                        m.compacted = rev;
                    }
                }
                Op::Reopen => h.reopen(),
            }
            prop_assert_eq!(h.rev(), m.rev);
            h.store.reader().verify().map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        // Every readable revision answers like the model, for every key form.
        for rev_back in 0..=(m.rev - m.compacted.max(1)) {
            for (k, e) in [("a", "\0"), ("b", ""), ("ab", "c"), ("a", "")] {
                check_range(&h, &m, k, e, rev_back, 0)?;
            }
        }
        // The history since the compaction matches the model's events.
        let start = m.compacted + 1;
        let got = h.store.reader().events_since(start, b"\0", b"\0", 0).unwrap();
        let want: Vec<_> = m.events.iter().filter(|(r, _, _)| *r >= start).cloned().collect();
        let got: Vec<_> = got
            .events
            .iter()
            .map(|e| (e.kv.mod_revision, e.kv.key.clone(), (e.kind == EventKind::Put).then(|| e.kv.value.clone())))
            .collect();
        prop_assert_eq!(got, want);
        // A snapshot restores to an identical store.
        let mut bytes = Vec::new();
        h.store.reader().snapshot_to(&mut bytes).unwrap();
        let mut other = Harness::new();
        other.store.restore_from(bytes.as_slice()).unwrap();
        prop_assert_eq!(other.store.reader().hash_kv(0).unwrap(), h.store.reader().hash_kv(0).unwrap());
        other.store.reader().verify().map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}
