//! Shared test harness: a store in a temporary directory that hands out
//! consecutive Raft indexes.
#![allow(dead_code)]

use concord_mvcc::*;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub next_index: u64,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_options(StoreOptions::default())
    }

    pub fn with_options(options: StoreOptions) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("mvcc.redb"), options).unwrap();
        Harness {
            dir,
            store,
            next_index: 1,
        }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("mvcc.redb")
    }

    /// Closes the store and opens it again from its file (the key index is
    /// rebuilt from what is stored).
    pub fn reopen(&mut self) {
        let placeholder = Store::open(
            self.dir.path().join("placeholder.redb"),
            StoreOptions::default(),
        )
        .unwrap();
        drop(std::mem::replace(&mut self.store, placeholder));
        self.store = Store::open(self.path(), StoreOptions::default()).unwrap();
    }

    /// Applies one command at the next index.
    pub fn apply(&mut self, command: Command) -> Result<CommandOutput, MvccError> {
        let index = self.next_index;
        self.next_index += 1;
        self.store
            .apply_batch(&[(index, command)])
            .unwrap()
            .pop()
            .unwrap()
    }

    pub fn ok(&mut self, command: Command) -> CommandOutput {
        self.apply(command).unwrap()
    }

    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        match self.ok(Command::Put(put_req(key, value))).response {
            Response::Put(p) => p,
            other => panic!("{other:?}"),
        }
    }

    pub fn del(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        let req = DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: true,
        };
        match self.ok(Command::DeleteRange(req)).response {
            Response::DeleteRange(d) => d,
            other => panic!("{other:?}"),
        }
    }

    pub fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, MvccError> {
        self.apply(Command::Txn(req)).map(|o| match o.response {
            Response::Txn(t) => t,
            other => panic!("{other:?}"),
        })
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.store.range(&range_req(key, "")).unwrap().kvs.pop()
    }

    pub fn rev(&self) -> i64 {
        self.store.current_revision().get()
    }
}

pub fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub fn range_req(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..Default::default()
    }
}

pub fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

pub fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        key: key.into(),
        range_end: Vec::new(),
        result,
        target,
    }
}

/// A DeleteRange of `[key, range_end)` that returns what it deleted.
pub fn del_req(key: &str, range_end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        prev_kv: true,
    }
}

/// A Txn for the batching properties: if `key` is at `version`, put `t`
/// and read everything from `a`; otherwise run `failure`.
pub fn version_txn(key: &str, version: i64, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare: vec![cmp(
            key,
            CompareResult::Equal,
            CompareTarget::Version(version),
        )],
        success: vec![
            RequestOp::Put(put_req("t", key)),
            RequestOp::Range(range_req("a", "\0")),
        ],
        failure,
    }
}
