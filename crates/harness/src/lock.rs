//! # The `lock` workload: etcd's Lock service with fencing tokens
//!
//! K clients contend for [`LOCKS`] named locks (`lock/0`, ...) through the
//! `v3lockpb.Lock` service, each lock guarding one resource key
//! (`resource/0`, ...). One turn of a client:
//!
//! ```text
//!  LeaseGrant(TTL 2 s) + keep-alive task      (once per session)
//!  Lock(lock/i, lease) -> owner key            ┐ acquire: the token is the
//!  Range(owner key)    -> create_revision = t  ┘ owner key's create revision
//!  Range(resource/i)                             a read of the register
//!  Txn(if CreateRevision(owner key) == t          the fenced write
//!      then Put(resource/i, "v:t:client"))
//!  Unlock(owner key)                             release
//! ```
//!
//! Now and then ([`STALL_PERCENT`]) a holder stalls inside its critical
//! section with its keep-alives stopped for longer than the lease TTL, as
//! a client in a long GC pause does (Kleppmann, "How to do distributed
//! locking", 2016): its lease expires, the lock passes on, and its fenced
//! write afterwards must be refused.
//!
//! ## What is recorded, and the properties checked
//!
//! Three records, three checks ([`check_lock_run`]):
//!
//! 1. **The mutex history** (`kv-mutex` model, one mutex per lock name):
//!    `acquire -> token` and `release(token)`. No two acquisitions hold a
//!    lock at once, and tokens strictly increase in acquisition order. A
//!    lock is held from its acquisition until its owner key is deleted,
//!    by Unlock *or by the lease expiring*, which the client cannot
//!    observe as it happens. So a release is recorded over the interval in
//!    which the key is known to have disappeared: from `last_held` (the
//!    invocation of the last operation that proved the key existed: the
//!    token read, or a fenced write that applied) to the completion of the
//!    operation that proved it gone (Unlock answered, or a fenced write
//!    refused). When nothing proved it gone (Unlock timed out), the release
//!    is `info` from `last_held`. A paused or partitioned ex-holder whose
//!    lease expired is therefore not a violation, but an ex-holder whose
//!    write applied after the next holder's acquisition completed is.
//! 2. **The fenced writes**: per lock, (a) every fenced write that applied
//!    carries a token at least as large as every applied fenced write that
//!    completed before it was invoked (no stale holder's write accepted,
//!    judged on real time only), and (b) ordered by the revision the store
//!    applied them at, tokens never decrease.
//! 3. **The resource registers** (`kv-cas-register` model): reads in the
//!    critical sections, the fenced writes (applied: `ok` write; refused or
//!    refused before the log: `fail`; unknown: `info`) and a final read
//!    after healing are linearizable.
//!
//! Outcomes follow [`crate::workload`]: `info` whenever in doubt. An
//! acquire whose Lock call timed out is `info` (it may hold the lock, with
//! a token nobody learns); the client then revokes its lease, which frees
//! whatever it may hold, and starts a new session.
//!
//! Invariants:
//! 1. Every loop ends by the time limit plus one bounded turn
//!    ([`LOCK_WAIT_MAX`], the per-operation deadline, [`STALL`]).
//! 2. A lease serves at most one acquisition that could still hold a key:
//!    after any uncertain outcome the session is revoked and replaced, so
//!    an acquisition never returns an older key of the same lease.
//! 3. Within each history a process has one operation at a time, and a
//!    process with an `info` operation is never used again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_check::{
    KeyedInput, MutexInput, MutexOutput, Operation, Outcome, ProcessId, RegisterInput,
    RegisterOutput, Time,
};
use concord_etcd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use concord_etcd_proto::etcdserverpb::kv_client::KvClient;
use concord_etcd_proto::etcdserverpb::lease_client::LeaseClient;
use concord_etcd_proto::etcdserverpb::request_op::Request as TxnOp;
use concord_etcd_proto::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use concord_etcd_proto::tonic::codegen::tokio_stream;
use concord_etcd_proto::tonic::transport::{Channel, Endpoint};
use concord_etcd_proto::tonic::Code;
use concord_etcd_proto::v3lockpb::lock_client::LockClient;
use concord_etcd_proto::v3lockpb::{LockRequest, UnlockRequest};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::HarnessError;
use crate::workload::{
    classify_write_error, error_text, Clock, ErrorClass, ErrorTally, RegisterOp, WorkloadConfig,
};

/// Named locks the clients contend for. Two: each sees contention from
/// half the clients, and the two mutex histories are checked apart.
pub const LOCKS: usize = 2;

/// Prefix of the lock names (`lock/0`, ...); owner keys live below them
/// (`lock/0/<lease hex>`).
pub const LOCK_PREFIX: &str = "lock/";

/// Prefix of the resource keys the locks guard (`resource/0`, ...).
pub const RESOURCE_PREFIX: &str = "resource/";

/// TTL of a client's lease (seconds). Short, so that a holder cut off from
/// the cluster (or stalled) loses its lock within the run; above the
/// members' minimum TTL (1.5 election timeouts, rounded up to 1 s).
pub const LEASE_TTL_SECS: i64 = 2;

/// Between two keep-alives: a quarter of the TTL, so one lost keep-alive
/// costs nothing.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);

/// The longest a client waits in a lock's queue before giving up (the
/// acquire is then `info`). Covers a holder's lease running out (the TTL)
/// plus an election, with room for a queue of a few clients.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(5);

/// Percent of critical sections in which the holder stalls.
pub const STALL_PERCENT: u32 = 4;

/// How long a stalled holder sleeps with its keep-alives stopped: the TTL
/// and a second, so the lease has surely expired by the time it wakes.
pub const STALL: Duration = Duration::from_millis(LEASE_TTL_SECS as u64 * 1000 + 1000);

/// Longest pause inside a critical section between the read and the
/// fenced write (uniform from zero), so holders overlap with waiters.
const HOLD_MAX: Duration = Duration::from_millis(20);

/// One operation of the mutex history (the checker's `kv-mutex` model).
pub type MutexOp = Operation<KeyedInput<MutexInput>, MutexOutput>;

/// The name of lock `i`.
pub fn lock_name(i: usize) -> String {
    format!("{LOCK_PREFIX}{i}")
}

/// The resource key lock `i` guards.
pub fn resource_key(i: usize) -> String {
    format!("{RESOURCE_PREFIX}{i}")
}

/// How a fenced write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceOutcome {
    /// The Txn answered `succeeded`: the resource was written.
    Applied,
    /// The Txn answered "compare failed": the owner key was gone, nothing
    /// was written.
    Refused,
    /// Refused before reaching the log (no leader, ...): nothing written.
    Failed,
    /// Unknown (timeout, connection lost): may apply later, or never.
    Unknown,
}

/// One fenced write, as the fencing checks see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FencedWrite {
    /// The client process that issued it.
    pub process: u64,
    /// Which lock (and resource) it belongs to.
    pub lock: usize,
    /// The token it was fenced with.
    pub token: u64,
    /// The (unique) value it wrote.
    pub value: i64,
    /// Invocation, ns on the run's clock.
    pub call: u64,
    /// Completion, if it completed.
    pub ret: Option<u64>,
    /// The revision it applied at (header of the Txn response), if applied.
    pub revision: Option<i64>,
    /// How it ended.
    pub outcome: FenceOutcome,
}

/// What the lock workload's clients recorded.
#[derive(Clone, Debug, Default)]
pub struct LockRecorded {
    /// Acquires and releases, unsorted.
    pub mutex: Vec<MutexOp>,
    /// Reads and fenced writes of the resource keys, unsorted.
    pub resource: Vec<RegisterOp>,
    /// Every fenced write with its token.
    pub fenced: Vec<FencedWrite>,
    /// Errors behind `fail` and `info` outcomes (and lease troubles).
    pub errors: ErrorTally,
    /// Critical sections in which the holder stalled past its lease.
    pub stalls: usize,
}

impl LockRecorded {
    fn merge(&mut self, other: LockRecorded) {
        self.mutex.extend(other.mutex);
        self.resource.extend(other.resource);
        self.fenced.extend(other.fenced);
        for (text, n) in other.errors {
            *self.errors.entry(text).or_default() += n;
        }
        self.stalls += other.stalls;
    }

    fn error(&mut self, what: &str, text: String) {
        *self.errors.entry(format!("{what}: {text}")).or_default() += 1;
    }
}

/// Knobs of the lock workload beyond [`WorkloadConfig`].
#[derive(Clone, Copy, Debug)]
pub struct LockOptions {
    /// Guard the writes with the owner key's create revision. `false`
    /// drops the compare (a deliberately broken client, to show that the
    /// checks catch stale writes): only for testing the test.
    pub fenced: bool,
    /// Percent of critical sections in which the holder stalls.
    pub stall_percent: u32,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            fenced: true,
            stall_percent: STALL_PERCENT,
        }
    }
}

/// Process ids of one client in one history (invariant 3): a new id after
/// an `info` operation, and for an operation that must start before the
/// previous one ended (a release reaching back to `last_held`).
#[derive(Clone, Copy, Debug)]
struct Procs {
    current: u64,
    step: u64,
    last_ret: u64,
}

impl Procs {
    fn new(first: u64, step: u64) -> Self {
        Self {
            current: first,
            step,
            last_ret: 0,
        }
    }

    /// The process for an operation invoked at `call`.
    fn for_call(&mut self, call: u64) -> u64 {
        if call < self.last_ret {
            self.current += self.step;
            self.last_ret = 0;
        }
        self.current
    }

    /// The operation just recorded ended at `ret` (`None`: pending).
    fn ended(&mut self, ret: Option<u64>) {
        match ret {
            Some(ret) => self.last_ret = ret,
            None => {
                self.current += self.step;
                self.last_ret = 0;
            }
        }
    }
}

/// The clients' connection to their member: one channel, three services.
#[derive(Clone)]
struct Clients {
    kv: KvClient<Channel>,
    lock: LockClient<Channel>,
    lease: LeaseClient<Channel>,
}

impl Clients {
    fn connect(url: &str) -> Result<Clients, HarnessError> {
        // No channel-wide timeout: a Lock call may wait for seconds and a
        // keep-alive is a stream. Every call gets its own deadline.
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| HarnessError::Client(format!("{url}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
        Ok(Clients {
            kv: KvClient::new(channel.clone()),
            lock: LockClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
        })
    }
}

/// A lease and the task keeping it alive; revoked (best effort) and the
/// task stopped when dropped through [`Session::end`].
struct Session {
    lease: i64,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn grant(clients: &Clients, op_timeout: Duration) -> Result<Session, String> {
        let mut lease = clients.lease.clone();
        let granted = tokio::time::timeout(
            op_timeout,
            lease.lease_grant(LeaseGrantRequest {
                ttl: LEASE_TTL_SECS,
                id: 0,
            }),
        )
        .await
        .map_err(|_| format!("client deadline ({op_timeout:?}) exceeded"))?
        .map_err(|s| error_text(&s))?
        .into_inner();
        if !granted.error.is_empty() {
            return Err(granted.error);
        }
        let id = granted.id;
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(KEEPALIVE_INTERVAL).await;
                let request = tokio_stream::iter([LeaseKeepAliveRequest { id }]);
                let answer = tokio::time::timeout(KEEPALIVE_INTERVAL, async {
                    let mut stream = lease.lease_keep_alive(request).await?.into_inner();
                    stream.message().await
                })
                .await;
                if let Ok(Ok(Some(response))) = answer {
                    if response.ttl <= 0 {
                        // The lease is gone; nothing left to keep alive.
                        return;
                    }
                }
            }
        });
        Ok(Session {
            lease: id,
            keepalive,
        })
    }

    /// Stops the keep-alives (a stalled client sends none).
    fn stall(&self) {
        self.keepalive.abort();
    }

    /// Stops the keep-alives and revokes the lease, freeing any key it may
    /// still hold (invariant 2). Errors are ignored: the lease then expires.
    async fn end(self, clients: &Clients, op_timeout: Duration) {
        self.keepalive.abort();
        let mut lease = clients.lease.clone();
        let _ = tokio::time::timeout(
            op_timeout,
            lease.lease_revoke(LeaseRevokeRequest { id: self.lease }),
        )
        .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // However the client's turn ended, no keep-alive task outlives it.
        self.keepalive.abort();
    }
}

/// The resource value written by fenced writes: `value:token:client`.
fn encode_resource(value: i64, token: u64, client: usize) -> Vec<u8> {
    format!("{value}:{token}:{client}").into_bytes()
}

/// The value part of a resource value; [`crate::workload::GARBLED_VALUE`]
/// if it is not one we wrote.
pub fn decode_resource(bytes: &[u8]) -> i64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.split(':').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::workload::GARBLED_VALUE)
}

fn deadline_text(timeout: Duration) -> String {
    format!("client deadline ({timeout:?}) exceeded")
}

/// Runs the lock workload against `urls` (one per member).
pub async fn run_lock(
    urls: &[String],
    config: &WorkloadConfig,
    options: LockOptions,
    clock: Clock,
) -> Result<LockRecorded, HarnessError> {
    if urls.is_empty() || config.clients == 0 {
        return Err(HarnessError::Config(
            "need at least one member and one client".into(),
        ));
    }
    let next_value = Arc::new(AtomicI64::new(1));
    let end = Instant::now() + config.time_limit;
    let mut tasks = Vec::with_capacity(config.clients);
    for c in 0..config.clients {
        let clients = Clients::connect(&urls[c % urls.len()])?;
        let config = config.clone();
        let next_value = Arc::clone(&next_value);
        tasks.push(tokio::spawn(lock_client(
            c, clients, config, options, clock, end, next_value,
        )));
    }
    let mut recorded = LockRecorded::default();
    for task in tasks {
        recorded.merge(task.await.unwrap_or_default());
    }
    Ok(recorded)
}

/// Where a client stands with the lock it asked for.
struct Held {
    lock: usize,
    key: Vec<u8>,
    token: u64,
    /// Invocation of the last operation that proved the key existed.
    last_held: u64,
}

#[allow(clippy::too_many_arguments)]
async fn lock_client(
    c: usize,
    clients: Clients,
    config: WorkloadConfig,
    options: LockOptions,
    clock: Clock,
    end: Instant,
    next_value: Arc<AtomicI64>,
) -> LockRecorded {
    let mut rng =
        SmallRng::seed_from_u64(config.seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let step = config.clients as u64;
    let mut mutex_procs = Procs::new(c as u64, step);
    let mut resource_procs = Procs::new(c as u64, step);
    let mut recorded = LockRecorded::default();
    let mut session: Option<Session> = None;
    let op_timeout = config.op_timeout;
    while Instant::now() < end {
        let current = match session.take() {
            Some(s) => s,
            None => match Session::grant(&clients, op_timeout).await {
                Ok(s) => s,
                Err(text) => {
                    recorded.error("lease grant", text);
                    pause(&mut rng, config.stagger_mean, end).await;
                    continue;
                }
            },
        };
        let lock = rng.gen_range(0..LOCKS);
        let Some(held) = acquire(
            &clients,
            lock,
            current.lease,
            op_timeout,
            clock,
            &mut mutex_procs,
            &mut recorded,
        )
        .await
        else {
            // Invariant 2: whatever the Lock call left behind goes with
            // the lease.
            current.end(&clients, op_timeout).await;
            pause(&mut rng, config.stagger_mean, end).await;
            continue;
        };
        let keep = critical_section(
            c,
            &clients,
            held,
            &current,
            &config,
            options,
            clock,
            &mut rng,
            &next_value,
            (&mut mutex_procs, &mut resource_procs),
            &mut recorded,
        )
        .await;
        if keep {
            session = Some(current);
        } else {
            current.end(&clients, op_timeout).await;
        }
        pause(&mut rng, config.stagger_mean, end).await;
    }
    if let Some(s) = session {
        s.end(&clients, op_timeout).await;
    }
    recorded
}

async fn pause(rng: &mut SmallRng, mean: Duration, end: Instant) {
    let max_ns = u64::try_from(mean.as_nanos() * 2)
        .unwrap_or(u64::MAX)
        .max(1);
    let until = (Instant::now() + Duration::from_nanos(rng.gen_range(0..max_ns))).min(end);
    tokio::time::sleep_until(until.into()).await;
}

/// Lock, then read the owner key's create revision. Records the acquire;
/// returns the lock if it is held with a known token.
async fn acquire(
    clients: &Clients,
    lock: usize,
    lease: i64,
    op_timeout: Duration,
    clock: Clock,
    procs: &mut Procs,
    recorded: &mut LockRecorded,
) -> Option<Held> {
    let name = lock_name(lock);
    let input = KeyedInput::new(name.clone(), MutexInput::Acquire);
    let call = clock.now();
    let process = procs.for_call(call);
    let mut lock_client = clients.lock.clone();
    let locked = tokio::time::timeout(
        LOCK_WAIT_MAX,
        lock_client.lock(LockRequest {
            name: name.clone().into_bytes(),
            lease,
        }),
    )
    .await;
    let key = match locked {
        Ok(Ok(response)) => response.into_inner().key,
        Ok(Err(status)) => {
            let ret = clock.now();
            // Not acquired for sure: refused before the log, our lease was
            // gone (the enqueueing Txn fails as a whole), or our key
            // vanished while we waited (the service then never says we own
            // the lock).
            let refused = classify_write_error(&status) == ErrorClass::NotApplied
                || status.code() == Code::Aborted
                || status.message().contains("requested lease not found");
            recorded.error("acquire", error_text(&status));
            if refused {
                push_op(
                    recorded,
                    procs,
                    op(process, call, Some(ret), input, Outcome::Fail),
                );
            } else {
                push_op(
                    recorded,
                    procs,
                    op(process, call, None, input, Outcome::Info),
                );
            }
            return None;
        }
        Err(_) => {
            recorded.error("acquire", deadline_text(LOCK_WAIT_MAX));
            push_op(
                recorded,
                procs,
                op(process, call, None, input, Outcome::Info),
            );
            return None;
        }
    };
    // The Lock answer carries the key, not its revision: read it. The key
    // existed at some point in this read, after the call.
    let read_call = clock.now();
    let mut kv = clients.kv.clone();
    let read = tokio::time::timeout(
        op_timeout,
        kv.range(RangeRequest {
            key: key.clone(),
            ..RangeRequest::default()
        }),
    )
    .await;
    let token = match read {
        Ok(Ok(response)) => response
            .into_inner()
            .kvs
            .first()
            .and_then(|kv| u64::try_from(kv.create_revision).ok()),
        Ok(Err(status)) => {
            recorded.error("acquire (token read)", error_text(&status));
            None
        }
        Err(_) => {
            recorded.error("acquire (token read)", deadline_text(op_timeout));
            None
        }
    };
    let ret = clock.now();
    match token {
        Some(token) => {
            let output = MutexOutput::Acquire { token };
            push_op(
                recorded,
                procs,
                op(process, call, Some(ret), input, Outcome::Ok(output)),
            );
            Some(Held {
                lock,
                key,
                token,
                last_held: read_call,
            })
        }
        None => {
            // Granted, but the token is unknown (the read failed, or the
            // lease already expired and took the key): held for an unknown
            // time under an unknown token.
            recorded.error(
                "acquire",
                "granted, but the owner key could not be read".to_owned(),
            );
            push_op(
                recorded,
                procs,
                op(process, call, None, input, Outcome::Info),
            );
            None
        }
    }
}

/// Read, (maybe stall,) fenced write, Unlock. Records everything; returns
/// whether the session may serve another acquisition.
#[allow(clippy::too_many_arguments)]
async fn critical_section(
    c: usize,
    clients: &Clients,
    mut held: Held,
    session: &Session,
    config: &WorkloadConfig,
    options: LockOptions,
    clock: Clock,
    rng: &mut SmallRng,
    next_value: &AtomicI64,
    (mutex_procs, resource_procs): (&mut Procs, &mut Procs),
    recorded: &mut LockRecorded,
) -> bool {
    let op_timeout = config.op_timeout;
    let resource = resource_key(held.lock);
    let mut kv = clients.kv.clone();

    // A read of the register, under the lock.
    let call = clock.now();
    let process = resource_procs.for_call(call);
    let read = tokio::time::timeout(
        op_timeout,
        kv.range(RangeRequest {
            key: resource.clone().into_bytes(),
            ..RangeRequest::default()
        }),
    )
    .await;
    let ret = clock.now();
    let input = KeyedInput::new(resource.clone(), RegisterInput::Read);
    let outcome = match read {
        Ok(Ok(response)) => Outcome::Ok(RegisterOutput::Read {
            value: response
                .into_inner()
                .kvs
                .first()
                .map(|kv| decode_resource(&kv.value)),
        }),
        Ok(Err(status)) => {
            recorded.error("read", error_text(&status));
            Outcome::Fail
        }
        Err(_) => {
            recorded.error("read", deadline_text(op_timeout));
            Outcome::Fail
        }
    };
    recorded
        .resource
        .push(op(process, call, Some(ret), input, outcome));
    resource_procs.ended(Some(ret));

    let stalled = rng.gen_range(0..100) < options.stall_percent;
    if stalled {
        // A long GC pause: no keep-alives, the lease runs out.
        recorded.stalls += 1;
        session.stall();
        tokio::time::sleep(STALL).await;
    } else {
        tokio::time::sleep(Duration::from_nanos(
            rng.gen_range(0..=u64::try_from(HOLD_MAX.as_nanos()).unwrap_or(0)),
        ))
        .await;
    }

    // The fenced write.
    let value = next_value.fetch_add(1, Ordering::Relaxed);
    let compare = if options.fenced {
        vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: held.key.clone(),
            range_end: Vec::new(),
            target_union: Some(TargetUnion::CreateRevision(
                i64::try_from(held.token).unwrap_or(i64::MAX),
            )),
        }]
    } else {
        Vec::new()
    };
    let call = clock.now();
    let process = resource_procs.for_call(call);
    let txn = tokio::time::timeout(
        op_timeout,
        kv.txn(TxnRequest {
            compare,
            success: vec![RequestOp {
                request: Some(TxnOp::RequestPut(PutRequest {
                    key: resource.clone().into_bytes(),
                    value: encode_resource(value, held.token, c),
                    ..PutRequest::default()
                })),
            }],
            failure: Vec::new(),
        }),
    )
    .await;
    let ret = clock.now();
    let (fence, revision) = match txn {
        Ok(Ok(response)) => {
            let response = response.into_inner();
            let revision = response.header.map(|h| h.revision);
            if response.succeeded {
                (FenceOutcome::Applied, revision)
            } else {
                (FenceOutcome::Refused, None)
            }
        }
        Ok(Err(status)) => {
            recorded.error("fenced write", error_text(&status));
            match classify_write_error(&status) {
                ErrorClass::NotApplied => (FenceOutcome::Failed, None),
                ErrorClass::Unknown => (FenceOutcome::Unknown, None),
            }
        }
        Err(_) => {
            recorded.error("fenced write", deadline_text(op_timeout));
            (FenceOutcome::Unknown, None)
        }
    };
    let input = KeyedInput::new(resource.clone(), RegisterInput::Write { value });
    let (outcome, write_ret) = match fence {
        FenceOutcome::Applied => (Outcome::Ok(RegisterOutput::Write), Some(ret)),
        FenceOutcome::Refused | FenceOutcome::Failed => (Outcome::Fail, Some(ret)),
        FenceOutcome::Unknown => (Outcome::Info, None),
    };
    recorded
        .resource
        .push(op(process, call, write_ret, input, outcome));
    resource_procs.ended(write_ret);
    recorded.fenced.push(FencedWrite {
        process,
        lock: held.lock,
        token: held.token,
        value,
        call,
        ret: write_ret,
        revision,
        outcome: fence,
    });
    let name = lock_name(held.lock);
    let release = KeyedInput::new(name, MutexInput::Release { token: held.token });
    match fence {
        FenceOutcome::Applied => held.last_held = call,
        FenceOutcome::Refused => {
            // The owner key was gone when the write was applied: the lock
            // was lost (lease expired) between `last_held` and now.
            let process = mutex_procs.for_call(held.last_held);
            push_op(
                recorded,
                mutex_procs,
                op(
                    process,
                    held.last_held,
                    Some(ret),
                    release,
                    Outcome::Ok(MutexOutput::Release),
                ),
            );
            return false;
        }
        FenceOutcome::Failed | FenceOutcome::Unknown => {}
    }
    // Unlock.
    let mut lock_client = clients.lock.clone();
    let unlocked = tokio::time::timeout(
        op_timeout,
        lock_client.unlock(UnlockRequest {
            key: held.key.clone(),
        }),
    )
    .await;
    let ret = clock.now();
    let gone_by = match unlocked {
        Ok(Ok(_)) => Some(ret),
        Ok(Err(status)) => {
            recorded.error("release", error_text(&status));
            None
        }
        Err(_) => {
            recorded.error("release", deadline_text(op_timeout));
            None
        }
    };
    // The key disappeared, by this Unlock or by its lease expiring, after
    // `last_held`; by `ret` if Unlock answered.
    let process = mutex_procs.for_call(held.last_held);
    let outcome = match gone_by {
        Some(_) => Outcome::Ok(MutexOutput::Release),
        None => Outcome::Info,
    };
    push_op(
        recorded,
        mutex_procs,
        op(process, held.last_held, gone_by, release, outcome),
    );
    gone_by.is_some() && !stalled && fence == FenceOutcome::Applied
}

fn op<I, O>(
    process: u64,
    call: u64,
    ret: Option<u64>,
    input: I,
    outcome: Outcome<O>,
) -> Operation<I, O> {
    Operation {
        process: ProcessId(process),
        call: Time(call),
        ret: ret.map(Time),
        input,
        outcome,
    }
}

fn push_op(recorded: &mut LockRecorded, procs: &mut Procs, op: MutexOp) {
    procs.ended(op.ret.map(|t| t.0));
    recorded.mutex.push(op);
}

/// After the cluster healed: one linearizable read of every resource key,
/// retried through every member until it succeeds (failed attempts are
/// `fail`). Process ids start at `process_base`, one per key.
pub async fn final_resource_reads(
    urls: &[String],
    clock: Clock,
    process_base: u64,
    op_timeout: Duration,
) -> Result<Vec<RegisterOp>, HarnessError> {
    let mut clients = urls
        .iter()
        .map(|u| Clients::connect(u).map(|c| c.kv))
        .collect::<Result<Vec<_>, _>>()?;
    let mut history = Vec::new();
    for lock in 0..LOCKS {
        let key = resource_key(lock);
        for attempt in 0..crate::workload::FINAL_READ_ATTEMPTS {
            let client = &mut clients[attempt % urls.len()];
            let call = clock.now();
            let read = tokio::time::timeout(
                op_timeout,
                client.range(RangeRequest {
                    key: key.clone().into_bytes(),
                    ..RangeRequest::default()
                }),
            )
            .await;
            let ret = clock.now();
            let input = KeyedInput::new(key.clone(), RegisterInput::Read);
            let process = process_base + lock as u64;
            if let Ok(Ok(response)) = read {
                let value = response
                    .into_inner()
                    .kvs
                    .first()
                    .map(|kv| decode_resource(&kv.value));
                history.push(op(
                    process,
                    call,
                    Some(ret),
                    input,
                    Outcome::Ok(RegisterOutput::Read { value }),
                ));
                break;
            }
            history.push(op(process, call, Some(ret), input, Outcome::Fail));
            tokio::time::sleep(crate::workload::FINAL_READ_RETRY).await;
        }
    }
    Ok(history)
}

/// A violation of the fencing properties (module docs, check 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceViolation {
    /// Which lock.
    pub lock: usize,
    /// The earlier write (in real time, or in revision order).
    pub earlier: FencedWrite,
    /// The later write, whose token is smaller.
    pub later: FencedWrite,
    /// `real time` or `revision order`.
    pub order: &'static str,
}

impl std::fmt::Display for FenceViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |w: &FencedWrite| {
            format!(
                "process {} wrote {} with token {} at {:.3}s..{} (revision {})",
                w.process,
                w.value,
                w.token,
                w.call as f64 / 1e9,
                w.ret
                    .map_or_else(|| "?".to_owned(), |r| format!("{:.3}s", r as f64 / 1e9)),
                w.revision.map_or_else(|| "?".to_owned(), |r| r.to_string()),
            )
        };
        write!(
            f,
            "{}: a stale token was accepted ({}): {} after {}",
            lock_name(self.lock),
            self.order,
            show(&self.later),
            show(&self.earlier)
        )
    }
}

/// The fencing checks (module docs, check 2), on every lock. Returns every
/// violating pair found: for each applied write, the one with the largest
/// token among those it must not precede.
pub fn check_fencing(writes: &[FencedWrite]) -> Vec<FenceViolation> {
    let mut violations = Vec::new();
    let mut by_lock: BTreeMap<usize, Vec<&FencedWrite>> = BTreeMap::new();
    for w in writes {
        if w.outcome == FenceOutcome::Applied {
            by_lock.entry(w.lock).or_default().push(w);
        }
    }
    for (lock, applied) in by_lock {
        // (a) Real time: sweep writes by invocation, keeping the largest
        // token among those completed before it.
        let mut by_ret: Vec<&FencedWrite> = applied.clone();
        by_ret.sort_by_key(|w| w.ret);
        let mut by_call: Vec<&FencedWrite> = applied.clone();
        by_call.sort_by_key(|w| w.call);
        let mut newest: Option<&FencedWrite> = None;
        let mut next = 0;
        for w in &by_call {
            while next < by_ret.len() && by_ret[next].ret.is_some_and(|r| r < w.call) {
                let done = by_ret[next];
                if newest.is_none_or(|n| done.token > n.token) {
                    newest = Some(done);
                }
                next += 1;
            }
            if let Some(n) = newest {
                if n.token > w.token {
                    violations.push(FenceViolation {
                        lock,
                        earlier: n.clone(),
                        later: (*w).clone(),
                        order: "real time",
                    });
                }
            }
        }
        // (b) Revision order: tokens never decrease.
        let mut by_revision: Vec<&FencedWrite> = applied
            .iter()
            .copied()
            .filter(|w| w.revision.is_some())
            .collect();
        by_revision.sort_by_key(|w| w.revision);
        let mut newest: Option<&FencedWrite> = None;
        for w in by_revision {
            if let Some(n) = newest {
                if n.token > w.token {
                    violations.push(FenceViolation {
                        lock,
                        earlier: n.clone(),
                        later: w.clone(),
                        order: "revision order",
                    });
                    continue;
                }
            }
            newest = Some(w);
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(process: u64, token: u64, value: i64, call: u64, ret: u64, rev: i64) -> FencedWrite {
        FencedWrite {
            process,
            lock: 0,
            token,
            value,
            call,
            ret: Some(ret),
            revision: Some(rev),
            outcome: FenceOutcome::Applied,
        }
    }

    #[test]
    fn fencing_accepts_increasing_tokens_and_concurrent_equal_ones() {
        let writes = vec![
            applied(0, 10, 1, 0, 10, 11),
            applied(0, 10, 2, 20, 30, 12),
            applied(1, 13, 3, 25, 40, 14),
            // Refused and unknown writes are not judged.
            FencedWrite {
                outcome: FenceOutcome::Refused,
                revision: None,
                ..applied(0, 10, 4, 50, 60, 0)
            },
            FencedWrite {
                outcome: FenceOutcome::Unknown,
                revision: None,
                ret: None,
                ..applied(0, 10, 5, 70, 0, 0)
            },
        ];
        assert!(check_fencing(&writes).is_empty());
    }

    #[test]
    fn a_stale_write_after_a_newer_one_is_caught_both_ways() {
        // Token 13's write completed at 40; token 10's write was invoked
        // at 50 and applied (at a later revision): stale.
        let writes = vec![applied(1, 13, 3, 25, 40, 14), applied(0, 10, 4, 50, 60, 15)];
        let violations = check_fencing(&writes);
        let orders: Vec<&str> = violations.iter().map(|v| v.order).collect();
        assert_eq!(
            orders,
            vec!["real time", "revision order"],
            "{violations:?}"
        );
        assert_eq!(violations[0].later.token, 10);
        assert!(violations[0].to_string().contains("stale token"));
        // Concurrent in real time but applied after the newer one: only the
        // revision order sees it.
        let writes = vec![applied(1, 13, 3, 25, 40, 14), applied(0, 10, 4, 30, 60, 15)];
        let violations = check_fencing(&writes);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].order, "revision order");
    }

    fn acquire_op(process: u64, call: u64, ret: u64, token: u64) -> MutexOp {
        op(
            process,
            call,
            Some(ret),
            KeyedInput::new(lock_name(0), MutexInput::Acquire),
            Outcome::Ok(MutexOutput::Acquire { token }),
        )
    }

    fn release_op(process: u64, call: u64, ret: Option<u64>, token: u64) -> MutexOp {
        let outcome = match ret {
            Some(_) => Outcome::Ok(MutexOutput::Release),
            None => Outcome::Info,
        };
        op(
            process,
            call,
            ret,
            KeyedInput::new(lock_name(0), MutexInput::Release { token }),
            outcome,
        )
    }

    fn mutex_verdict(history: &[MutexOp]) -> concord_check::Verdict {
        concord_check::check(
            &concord_check::Keyed::new(concord_check::MutexModel),
            history,
            &concord_check::CheckOptions::default(),
        )
        .expect("well-formed")
        .verdict
    }

    /// Process 0 takes the lock (token 10) and stalls; its lease expires
    /// and process 1 takes it (token 13). What the workload records for
    /// process 0 depends on what its fenced write saw afterwards.
    #[test]
    fn a_fenced_ex_holder_is_no_violation_but_a_stale_write_is() {
        use concord_check::Verdict;
        // Refused by the fence at [50, 52]: the lock was lost somewhere in
        // [last_held = 5 (the token read), 52]. Process 1's acquisition at
        // [20, 30] fits inside: no violation.
        let fenced = vec![
            acquire_op(0, 0, 8, 10),
            acquire_op(1, 20, 30, 13),
            release_op(2, 5, Some(52), 10),
            release_op(1, 40, Some(45), 13),
        ];
        assert_eq!(mutex_verdict(&fenced), Verdict::Linearizable);
        // Without the fence the write applied at [50, 52], "proving" the
        // lock still held at 50, after process 1's acquisition completed:
        // the release cannot start before 50, so two held it at once.
        let stale = vec![
            acquire_op(0, 0, 8, 10),
            acquire_op(1, 20, 30, 13),
            release_op(0, 50, Some(60), 10),
            release_op(1, 40, Some(45), 13),
        ];
        assert_eq!(mutex_verdict(&stale), Verdict::NotLinearizable);
        // The fencing check sees the same stale write from the resource's
        // side: token 13 wrote at [32, 35] before token 10's write.
        let writes = vec![applied(1, 13, 1, 32, 35, 20), applied(0, 10, 2, 50, 52, 21)];
        assert_eq!(check_fencing(&writes).len(), 2);
        // An Unlock that timed out leaves the release pending from
        // last_held: never a violation by itself.
        let unknown = vec![
            acquire_op(0, 0, 8, 10),
            release_op(2, 5, None, 10),
            acquire_op(1, 20, 30, 13),
        ];
        assert_eq!(mutex_verdict(&unknown), Verdict::Linearizable);
        // Tokens must grow with acquisition order.
        let backwards = vec![
            acquire_op(0, 0, 8, 13),
            release_op(0, 10, Some(12), 13),
            acquire_op(1, 20, 30, 10),
        ];
        assert_eq!(mutex_verdict(&backwards), Verdict::NotLinearizable);
    }

    #[test]
    fn process_ids_move_on_after_info_and_overlap() {
        let mut p = Procs::new(2, 6);
        assert_eq!(p.for_call(0), 2);
        p.ended(Some(10));
        assert_eq!(
            p.for_call(5),
            8,
            "an operation reaching back gets a new process"
        );
        p.ended(None);
        assert_eq!(
            p.for_call(20),
            14,
            "never reuse a process with a pending operation"
        );
    }

    #[test]
    fn resource_values_round_trip() {
        assert_eq!(decode_resource(&encode_resource(42, 7, 3)), 42);
        assert_eq!(decode_resource(b"junk"), crate::workload::GARBLED_VALUE);
    }
}
