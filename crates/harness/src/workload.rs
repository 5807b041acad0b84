//! # Workloads: concurrent clients that record what they did and saw
//!
//! K clients (tokio tasks) run for a time limit. Client `c` talks to member
//! `c mod N` through the etcd v3 KV gRPC API (as Jepsen binds each client
//! to one node), so a partitioned or paused member's clients see exactly
//! what that member does. Every operation is recorded with its invocation
//! and completion times on one monotonic clock ([`Clock`], nanoseconds
//! since the run started) and one of three outcomes:
//!
//! - `ok`: the store answered; for a cas, "compare failed" is an `ok`
//!   whose output says it did not apply.
//! - `fail`: it definitely did not take effect: a read that failed (a read
//!   changes nothing), or a write refused before it could reach the log
//!   (see [`classify_write_error`]).
//! - `info`: unknown (a timeout, a connection lost after sending). The
//!   client then continues as a new process (Jepsen style): its old
//!   process id stays "busy" forever in the history, since the operation
//!   may still take effect at any later time.
//!
//! Workloads:
//! - `register` ([`run_register`]): read / write / cas on
//!   [`REGISTER_KEYS`] keys; reads are linearizable Ranges, or serializable
//!   ones when asked. Written values are unique across the run, and a cas
//!   expects the value its client last saw, so most cas operations can
//!   succeed and any stale read is pinned to one write.
//! - `set` ([`run_set`]): unique adds, each a Put of a distinct key under
//!   [`SET_PREFIX`]; then [`final_set_read`] reads the whole prefix. As a
//!   history for the kv register model, an add is a write of key `set/v`
//!   and the final read becomes one read per key: every acknowledged add
//!   must read back, a failed or never-attempted one must not.
//! - `lock`: in [`crate::lock`] (Lock service, leases, fenced writes).
//!
//! Invariants:
//! 1. Every client loop stops by itself at the time limit; every
//!    operation is bounded by the per-operation deadline.
//! 2. One process has at most one operation outstanding; a process id is
//!    never reused after an `info` (ids grow by K per generation).
//! 3. When in doubt an outcome is `info`, never `fail`: misfiling an
//!    applied write as `fail` would make the checker report a violation
//!    that did not happen.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_check::{
    KeyedInput, Operation, Outcome, ProcessId, RegisterInput, RegisterOutput, Time,
};
use concord_etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use concord_etcd_proto::etcdserverpb::kv_client::KvClient;
use concord_etcd_proto::etcdserverpb::request_op::Request as TxnOp;
use concord_etcd_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use concord_etcd_proto::tonic::transport::{Channel, Endpoint};
use concord_etcd_proto::tonic::{Code, Status};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::HarnessError;

/// Keys of the register workload. Few enough that clients contend on each
/// (cas races, reads racing writes), enough that the per-key checks split
/// the history into independent pieces.
pub const REGISTER_KEYS: usize = 5;

/// Prefix of the register workload's keys.
pub const REGISTER_PREFIX: &str = "register/";

/// Prefix of the set workload's keys.
pub const SET_PREFIX: &str = "set/";

/// Default per-operation deadline. Two election timeouts: an operation
/// caught by a leader change usually completes within it, one stuck on the
/// minority side of a partition gives up and becomes `info`.
pub const OP_TIMEOUT_DEFAULT: Duration = Duration::from_millis(1000);

/// TCP connect budget of a client. Loopback connects take microseconds; a
/// paused member accepts into its backlog, so this rarely bites.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Mean pause between a client's operations; the pause is uniform in
/// `[0, 2 * mean)`, so clients do not march in lockstep. It bounds the
/// history's size (and the checker's work) at about 1/mean operations per
/// second per client.
pub const STAGGER_MEAN: Duration = Duration::from_millis(20);

/// Share of register operations that are reads, writes and cas, in
/// percent (Jepsen's etcd test draws them evenly; reads are favoured here
/// because a stale read is the anomaly partitions provoke).
const READ_PERCENT: u32 = 50;
const WRITE_PERCENT: u32 = 25;
const _: () = assert!(READ_PERCENT + WRITE_PERCENT < 100);

/// Attempts of each final read: a freshly healed cluster may still be
/// electing a leader, and one answer per key is all that is needed.
pub(crate) const FINAL_READ_ATTEMPTS: usize = 20;

/// Pause between final read attempts.
pub(crate) const FINAL_READ_RETRY: Duration = Duration::from_millis(250);

/// A value the store returned that no client could have written (not an
/// integer). Recorded as this impossible value so the checker flags it.
pub const GARBLED_VALUE: i64 = i64::MIN;

/// One operation of the register history (the checker's kv register
/// model).
pub type RegisterOp = Operation<KeyedInput<RegisterInput>, RegisterOutput>;

/// Error texts the clients saw, with how often (for the report: why
/// operations failed or ended unknown).
pub type ErrorTally = BTreeMap<String, usize>;

/// What a workload's clients recorded.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// The operations, unsorted.
    pub history: Vec<RegisterOp>,
    /// The errors behind `fail` and `info` outcomes.
    pub errors: ErrorTally,
}

impl Recorded {
    fn merge(&mut self, other: Recorded) {
        self.history.extend(other.history);
        for (text, n) in other.errors {
            *self.errors.entry(text).or_default() += n;
        }
    }

    fn push(&mut self, op: RegisterOp, error: Option<String>) {
        self.history.push(op);
        if let Some(text) = error {
            *self.errors.entry(text).or_default() += 1;
        }
    }
}

/// The run's single clock: nanoseconds since it was created.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `ns` nanoseconds after the start.
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// Read / write / cas registers.
    Register,
    /// Unique adds, then a final read.
    Set,
    /// Lock / fenced write / unlock through the Lock service
    /// ([`crate::lock`]).
    Lock,
}

impl WorkloadKind {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Set => "set",
            WorkloadKind::Lock => "lock",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkloadKind {
    type Err = HarnessError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "register" => Ok(WorkloadKind::Register),
            "set" => Ok(WorkloadKind::Set),
            "lock" => Ok(WorkloadKind::Lock),
            other => Err(HarnessError::Config(format!(
                "unknown workload {other:?} (expected register, set or lock)"
            ))),
        }
    }
}

/// Knobs shared by the workloads.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// How long clients issue operations.
    pub time_limit: Duration,
    /// Serve reads locally (`serializable`) instead of linearizably.
    pub serializable_reads: bool,
    /// Per-operation deadline.
    pub op_timeout: Duration,
    /// Mean pause between a client's operations.
    pub stagger_mean: Duration,
    /// Seed of the clients' choices (keys, operations, pauses).
    pub seed: u64,
}

/// Whether an error proves the request did not take effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Definitely not applied: record `fail`.
    NotApplied,
    /// May have been applied, now or later: record `info`.
    Unknown,
}

/// Classifies the error of a write (Put or Txn). Only errors that prove
/// the request never reached the Raft log are `NotApplied` (invariant 3):
/// - `etcdserver: no leader`: a member that knows no leader refuses before
///   proposing or forwarding anything;
/// - `etcdserver: too many requests` (back-pressure at the proposal queue);
/// - `InvalidArgument`: request validation, before the log;
/// - a refused TCP connection: nothing was sent.
///
/// Everything else, including timeouts, `leader changed`, `server stopped`
/// and connections lost mid-request, is `Unknown`.
pub fn classify_write_error(status: &Status) -> ErrorClass {
    let text = error_text(status);
    let refused_before_log = text.contains("etcdserver: no leader")
        || text.contains("etcdserver: too many requests")
        || status.code() == Code::InvalidArgument
        || text.contains("Connection refused");
    if refused_before_log {
        ErrorClass::NotApplied
    } else {
        ErrorClass::Unknown
    }
}

/// The status message and its whole source chain (a refused connection is
/// only named deep in the chain).
pub fn error_text(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    // Error chains are finite; the bound only guards against a cyclic one.
    for _ in 0..16 {
        let Some(err) = source else { break };
        // Transport errors repeat their cause in their own message; keep
        // each piece once.
        let piece = err.to_string();
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        source = err.source();
    }
    text
}

/// A lazily connecting client for `url`; it reconnects by itself after the
/// member restarts.
pub fn connect(url: &str, op_timeout: Duration) -> Result<KvClient<Channel>, HarnessError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| HarnessError::Client(format!("{url}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(op_timeout);
    Ok(KvClient::new(endpoint.connect_lazy()))
}

fn encode_value(value: i64) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn decode_value(bytes: &[u8]) -> i64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(GARBLED_VALUE)
}

/// Runs one register operation against the store.
async fn register_call(
    client: &mut KvClient<Channel>,
    key: &str,
    input: RegisterInput,
    serializable: bool,
) -> Result<RegisterOutput, Status> {
    match input {
        RegisterInput::Read => {
            let response = client
                .range(RangeRequest {
                    key: key.as_bytes().to_vec(),
                    serializable,
                    ..RangeRequest::default()
                })
                .await?
                .into_inner();
            let value = response.kvs.first().map(|kv| decode_value(&kv.value));
            Ok(RegisterOutput::Read { value })
        }
        RegisterInput::Write { value } => {
            client
                .put(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: encode_value(value),
                    ..PutRequest::default()
                })
                .await?;
            Ok(RegisterOutput::Write)
        }
        RegisterInput::Cas { expected, new } => {
            let response = client
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: key.as_bytes().to_vec(),
                        range_end: Vec::new(),
                        target_union: Some(TargetUnion::Value(encode_value(expected))),
                    }],
                    success: vec![RequestOp {
                        request: Some(TxnOp::RequestPut(PutRequest {
                            key: key.as_bytes().to_vec(),
                            value: encode_value(new),
                            ..PutRequest::default()
                        })),
                    }],
                    failure: Vec::new(),
                })
                .await?
                .into_inner();
            Ok(RegisterOutput::Cas {
                applied: response.succeeded,
            })
        }
    }
}

/// Runs `input` with the deadline and turns the result into an outcome,
/// with the error text behind a `fail` or `info`.
async fn register_op(
    client: &mut KvClient<Channel>,
    key: &str,
    input: RegisterInput,
    serializable: bool,
    op_timeout: Duration,
) -> (Outcome<RegisterOutput>, Option<String>) {
    let result =
        tokio::time::timeout(op_timeout, register_call(client, key, input, serializable)).await;
    let (class, text) = match result {
        Ok(Ok(output)) => return (Outcome::Ok(output), None),
        Ok(Err(status)) => (classify_write_error(&status), error_text(&status)),
        Err(_elapsed) => (
            ErrorClass::Unknown,
            format!("client deadline ({op_timeout:?}) exceeded"),
        ),
    };
    let outcome = match class {
        // A read changes nothing: whatever went wrong, it did not happen.
        _ if input == RegisterInput::Read => Outcome::Fail,
        ErrorClass::NotApplied => Outcome::Fail,
        ErrorClass::Unknown => Outcome::Info,
    };
    let f = match input {
        RegisterInput::Read => "read",
        RegisterInput::Write { .. } => "write",
        RegisterInput::Cas { .. } => "cas",
    };
    (outcome, Some(format!("{f}: {text}")))
}

/// The key of register `k`.
pub fn register_key(k: usize) -> String {
    format!("{REGISTER_PREFIX}{k}")
}

/// Sleeps a random pause of mean `mean`, never past `end`.
async fn stagger(rng: &mut SmallRng, mean: Duration, end: Instant) {
    let max_ns = u64::try_from(mean.as_nanos() * 2)
        .unwrap_or(u64::MAX)
        .max(1);
    let pause = Duration::from_nanos(rng.gen_range(0..max_ns));
    let until = (Instant::now() + pause).min(end);
    tokio::time::sleep_until(until.into()).await;
}

/// Makes a completed operation from its parts.
fn record<I, O>(
    process: u64,
    call: u64,
    ret: u64,
    input: I,
    outcome: Outcome<O>,
) -> Operation<I, O> {
    Operation {
        process: ProcessId(process),
        call: Time(call),
        ret: Some(Time(ret)),
        input,
        outcome,
    }
}

/// Runs the register workload against `urls` (one per member) and returns
/// the history, unsorted.
pub async fn run_register(
    urls: &[String],
    config: &WorkloadConfig,
    clock: Clock,
) -> Result<Recorded, HarnessError> {
    if urls.is_empty() || config.clients == 0 {
        return Err(HarnessError::Config(
            "need at least one member and one client".into(),
        ));
    }
    // Unique values across the run (starting at 1 so that nothing equals
    // an accidental 0).
    let next_value = Arc::new(AtomicI64::new(1));
    let end = Instant::now() + config.time_limit;
    let mut tasks = Vec::with_capacity(config.clients);
    for c in 0..config.clients {
        let client = connect(&urls[c % urls.len()], config.op_timeout)?;
        let config = config.clone();
        let next_value = Arc::clone(&next_value);
        tasks.push(tokio::spawn(register_client(
            c, client, config, clock, end, next_value,
        )));
    }
    let mut recorded = Recorded::default();
    for task in tasks {
        // A client task only ends by returning (it never panics on the
        // store's answers); a join error would be a harness bug.
        recorded.merge(task.await.unwrap_or_default());
    }
    Ok(recorded)
}

async fn register_client(
    c: usize,
    mut client: KvClient<Channel>,
    config: WorkloadConfig,
    clock: Clock,
    end: Instant,
    next_value: Arc<AtomicI64>,
) -> Recorded {
    let mut rng =
        SmallRng::seed_from_u64(config.seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut process = c as u64;
    let mut last_seen: HashMap<usize, i64> = HashMap::new();
    let mut recorded = Recorded::default();
    // Invariant 1: the loop ends at `end`; each turn is bounded by the
    // deadline and the stagger.
    while Instant::now() < end {
        let k = rng.gen_range(0..REGISTER_KEYS);
        let roll = rng.gen_range(0..100);
        let input = if roll < READ_PERCENT {
            RegisterInput::Read
        } else {
            let value = next_value.fetch_add(1, Ordering::Relaxed);
            match last_seen.get(&k) {
                Some(&expected) if roll >= READ_PERCENT + WRITE_PERCENT => RegisterInput::Cas {
                    expected,
                    new: value,
                },
                _ => RegisterInput::Write { value },
            }
        };
        let key = register_key(k);
        let call = clock.now();
        let (outcome, error) = register_op(
            &mut client,
            &key,
            input,
            config.serializable_reads,
            config.op_timeout,
        )
        .await;
        let ret = clock.now();
        match (&outcome, input) {
            (Outcome::Ok(RegisterOutput::Read { value: Some(v) }), _) => {
                last_seen.insert(k, *v);
            }
            (Outcome::Ok(RegisterOutput::Write), RegisterInput::Write { value })
            | (
                Outcome::Ok(RegisterOutput::Cas { applied: true }),
                RegisterInput::Cas { new: value, .. },
            ) => {
                last_seen.insert(k, value);
            }
            _ => {}
        }
        let info = outcome == Outcome::Info;
        let mut op = record(process, call, ret, KeyedInput::new(key, input), outcome);
        if info {
            op.ret = None;
            // Invariant 2: the old process may still be "running" this
            // operation forever; continue as a new one.
            process += config.clients as u64;
        }
        recorded.push(op, error);
        stagger(&mut rng, config.stagger_mean, end).await;
    }
    recorded
}

/// After the cluster healed: one linearizable read of every register key,
/// retried through every member until it succeeds. Failed attempts are
/// recorded as `fail` (they constrain nothing). Process ids start at
/// `process_base`, one per key.
pub async fn final_register_reads(
    urls: &[String],
    clock: Clock,
    process_base: u64,
    op_timeout: Duration,
) -> Result<Vec<RegisterOp>, HarnessError> {
    let mut clients = urls
        .iter()
        .map(|u| connect(u, op_timeout))
        .collect::<Result<Vec<_>, _>>()?;
    let mut history = Vec::new();
    for k in 0..REGISTER_KEYS {
        let key = register_key(k);
        for attempt in 0..FINAL_READ_ATTEMPTS {
            let client = &mut clients[attempt % urls.len()];
            let call = clock.now();
            let (outcome, _) =
                register_op(client, &key, RegisterInput::Read, false, op_timeout).await;
            let ret = clock.now();
            let done = matches!(outcome, Outcome::Ok(_));
            history.push(record(
                process_base + k as u64,
                call,
                ret,
                KeyedInput::new(key.clone(), RegisterInput::Read),
                outcome,
            ));
            if done {
                break;
            }
            tokio::time::sleep(FINAL_READ_RETRY).await;
        }
    }
    Ok(history)
}

/// The key of set element `v`.
pub fn set_key(v: i64) -> String {
    format!("{SET_PREFIX}{v:012}")
}

/// Runs the set workload's adds; returns them as register writes (key
/// `set/v`, value `v`), unsorted.
pub async fn run_set(
    urls: &[String],
    config: &WorkloadConfig,
    clock: Clock,
) -> Result<Recorded, HarnessError> {
    if urls.is_empty() || config.clients == 0 {
        return Err(HarnessError::Config(
            "need at least one member and one client".into(),
        ));
    }
    let next_value = Arc::new(AtomicI64::new(1));
    let end = Instant::now() + config.time_limit;
    let mut tasks = Vec::with_capacity(config.clients);
    for c in 0..config.clients {
        let mut client = connect(&urls[c % urls.len()], config.op_timeout)?;
        let config = config.clone();
        let next_value = Arc::clone(&next_value);
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(
                config.seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let mut process = c as u64;
            let mut recorded = Recorded::default();
            while Instant::now() < end {
                let value = next_value.fetch_add(1, Ordering::Relaxed);
                let key = set_key(value);
                let input = RegisterInput::Write { value };
                let call = clock.now();
                let (outcome, error) =
                    register_op(&mut client, &key, input, false, config.op_timeout).await;
                let ret = clock.now();
                let info = outcome == Outcome::Info;
                let mut op = record(process, call, ret, KeyedInput::new(key, input), outcome);
                if info {
                    op.ret = None;
                    process += config.clients as u64;
                }
                recorded.push(op, error);
                stagger(&mut rng, config.stagger_mean, end).await;
            }
            recorded
        }));
    }
    let mut recorded = Recorded::default();
    for task in tasks {
        recorded.merge(task.await.unwrap_or_default());
    }
    Ok(recorded)
}

/// The final read of the set: when it ran and what it returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetRead {
    /// Invocation time of the successful attempt.
    pub call: u64,
    /// Its completion time.
    pub ret: u64,
    /// The elements read: key and value.
    pub elements: BTreeMap<String, i64>,
}

/// Reads the whole set prefix linearizably, retrying through every member;
/// `None` if no attempt succeeded.
pub async fn final_set_read(
    urls: &[String],
    clock: Clock,
    op_timeout: Duration,
) -> Option<SetRead> {
    let mut clients = urls
        .iter()
        .map(|u| connect(u, op_timeout))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let mut range_end = SET_PREFIX.as_bytes().to_vec();
    if let Some(last) = range_end.last_mut() {
        *last += 1;
    }
    for attempt in 0..FINAL_READ_ATTEMPTS {
        let client = &mut clients[attempt % urls.len()];
        let call = clock.now();
        let request = RangeRequest {
            key: SET_PREFIX.as_bytes().to_vec(),
            range_end: range_end.clone(),
            ..RangeRequest::default()
        };
        if let Ok(Ok(response)) = tokio::time::timeout(op_timeout, client.range(request)).await {
            let ret = clock.now();
            let elements = response
                .into_inner()
                .kvs
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        decode_value(&kv.value),
                    )
                })
                .collect();
            return Some(SetRead {
                call,
                ret,
                elements,
            });
        }
        tokio::time::sleep(FINAL_READ_RETRY).await;
    }
    None
}

/// What the set's final read says about the adds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetSummary {
    /// Adds attempted.
    pub attempted: usize,
    /// Adds acknowledged (`ok`).
    pub acknowledged: usize,
    /// Adds whose outcome is unknown (`info`) that were read back.
    pub recovered: usize,
    /// Acknowledged adds missing from the final read (lost writes).
    pub lost: BTreeSet<String>,
    /// Keys read that no add attempted, or with a value no add wrote.
    pub unexpected: BTreeSet<String>,
    /// Adds recorded as `fail` that were read back (a misfiled outcome).
    pub failed_but_present: BTreeSet<String>,
    /// Whether the final read succeeded at all.
    pub final_read: bool,
}

impl SetSummary {
    /// Whether the set semantics hold (and could be checked).
    pub fn valid(&self) -> bool {
        self.final_read
            && self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.failed_but_present.is_empty()
    }
}

/// Compares the adds with the final read (Jepsen's set checker), and
/// appends the final read to `adds` as one register read per key (every
/// key attempted or read), so the kv register checker decides the same
/// question on the same history. The per-key reads are one range read in
/// reality, so they all span its interval; each gets its own process id
/// (from `process_base` up), keeping one operation per process at a time.
pub fn finish_set(
    adds: &mut Vec<RegisterOp>,
    read: Option<&SetRead>,
    process_base: u64,
) -> SetSummary {
    let mut summary = SetSummary {
        attempted: adds.len(),
        final_read: read.is_some(),
        ..SetSummary::default()
    };
    let Some(read) = read else {
        return summary;
    };
    let mut keys: BTreeSet<String> = read.elements.keys().cloned().collect();
    for op in adds.iter() {
        let key = &op.input.key;
        keys.insert(key.clone());
        let RegisterInput::Write { value } = op.input.op else {
            continue;
        };
        let present = read.elements.get(key);
        match op.outcome {
            Outcome::Ok(_) => {
                summary.acknowledged += 1;
                if present.is_none() {
                    summary.lost.insert(key.clone());
                }
            }
            Outcome::Info if present.is_some() => summary.recovered += 1,
            Outcome::Info => {}
            Outcome::Fail if present.is_some() => {
                summary.failed_but_present.insert(key.clone());
            }
            Outcome::Fail => {}
        }
        if present.is_some_and(|&v| v != value) {
            summary.unexpected.insert(key.clone());
        }
    }
    let attempted: BTreeSet<&String> = adds.iter().map(|op| &op.input.key).collect();
    for key in read.elements.keys() {
        if !attempted.contains(key) {
            summary.unexpected.insert(key.clone());
        }
    }
    for (n, key) in keys.into_iter().enumerate() {
        let value = read.elements.get(&key).copied();
        adds.push(record(
            process_base + n as u64,
            read.call,
            read.ret,
            KeyedInput::new(key, RegisterInput::Read),
            Outcome::Ok(RegisterOutput::Read { value }),
        ));
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_before_the_log_are_failures() {
        let not_applied = [
            Status::unavailable("etcdserver: no leader"),
            Status::resource_exhausted("etcdserver: too many requests"),
            Status::invalid_argument("etcdserver: request is too large"),
        ];
        for status in &not_applied {
            assert_eq!(
                classify_write_error(status),
                ErrorClass::NotApplied,
                "{status:?}"
            );
        }
        let unknown = [
            Status::unavailable("etcdserver: request timed out"),
            Status::unavailable("etcdserver: leader changed"),
            Status::unavailable("etcdserver: server stopped"),
            Status::unknown("h2 protocol error: connection reset"),
            Status::cancelled("operation was canceled"),
            Status::internal("anything else"),
        ];
        for status in &unknown {
            assert_eq!(
                classify_write_error(status),
                ErrorClass::Unknown,
                "{status:?}"
            );
        }
    }

    fn add(process: u64, value: i64, outcome: Outcome<RegisterOutput>) -> RegisterOp {
        record(
            process,
            value as u64,
            value as u64 + 1,
            KeyedInput::new(set_key(value), RegisterInput::Write { value }),
            outcome,
        )
    }

    #[test]
    fn set_summary_finds_lost_and_invented_elements() {
        let mut adds = vec![
            add(0, 1, Outcome::Ok(RegisterOutput::Write)),
            add(1, 2, Outcome::Ok(RegisterOutput::Write)),
            add(2, 3, Outcome::Info),
            add(3, 4, Outcome::Fail),
        ];
        let read = SetRead {
            call: 100,
            ret: 101,
            elements: [(set_key(1), 1), (set_key(3), 3), (set_key(9), 9)]
                .into_iter()
                .collect(),
        };
        let summary = finish_set(&mut adds, Some(&read), 99);
        assert_eq!(summary.acknowledged, 2);
        assert_eq!(summary.recovered, 1);
        assert_eq!(summary.lost, [set_key(2)].into_iter().collect());
        assert_eq!(summary.unexpected, [set_key(9)].into_iter().collect());
        assert!(summary.failed_but_present.is_empty());
        assert!(!summary.valid());
        // One read per key attempted or read: 1, 2, 3, 4 and 9.
        assert_eq!(adds.len(), 4 + 5);
    }

    #[test]
    fn values_round_trip_and_garbage_is_flagged() {
        assert_eq!(decode_value(&encode_value(-42)), -42);
        assert_eq!(decode_value(b"not a number"), GARBLED_VALUE);
    }
}
