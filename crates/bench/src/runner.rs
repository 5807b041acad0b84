//! Drives the load: connections, one task per client, the watchers of
//! `watch-latency`, and the merge of every client's tally into a report.
//!
//! ```text
//!   Schedule --ticket--> client 0 --request--> conn 0 --> endpoint 0
//!            --ticket--> client 1 --request--> conn 1 --> endpoint 1
//!            ...                    (clients share conns round-robin)
//!   watch-latency only:  watcher w <--events-- conn w % conns
//! ```
//!
//! Each client has exactly one request in flight; it takes the next ticket
//! only after the previous answer (or its deadline). Nothing is shared on
//! the hot path but the schedule's atomic counter.

use crate::error::BenchError;
use crate::keys::{self, KeyPicker};
use crate::options::{BenchConfig, Op};
use crate::report::{status_kind, ClientTally, Report};
use crate::schedule::Schedule;
use crate::timer::DueTimer;
use crate::unary::UnaryChannel;
use concord_etcd_proto::etcdserverpb::{
    compare, lease_client::LeaseClient, request_op, response_op, watch_client::WatchClient,
    watch_request, Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use concord_etcd_proto::tonic::codec::Streaming;
use concord_etcd_proto::tonic::transport::{Channel, Endpoint};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long connecting to an endpoint, creating a watch or granting a
/// lease may take before the run is abandoned as a setup failure.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// After the last put of `watch-latency`, how long watchers may still wait
/// for its events before the missing ones count as errors.
pub const WATCH_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Error kind of a request that outlived `--request-timeout`.
pub const CLIENT_TIMEOUT: &str = "client timeout";

/// Error kind of a watch event that never arrived.
pub const WATCH_EVENT_MISSING: &str = "watch event not received";

/// Whether `op` streams (a lease keep-alive, watches): those go through
/// tonic; unary KV calls go over [`UnaryChannel`]s.
pub fn uses_streams(op: Op) -> bool {
    matches!(op, Op::LeaseKeepalive | Op::WatchLatency)
}

/// Whether `op` sends unary KV calls.
fn uses_unary(op: Op) -> bool {
    !matches!(op, Op::LeaseKeepalive)
}

/// Opens connection `i` of the unary KV calls (endpoint `i` modulo their
/// number).
async fn connect_unary_at(config: &BenchConfig, i: usize) -> Result<UnaryChannel, BenchError> {
    let endpoint = &config.endpoints[i % config.endpoints.len()];
    UnaryChannel::connect(endpoint, SETUP_TIMEOUT)
        .await
        .map_err(|reason| BenchError::Connect {
            endpoint: endpoint.clone(),
            reason,
        })
}

/// Opens `config.conns` bare HTTP/2 connections for unary KV calls, spread
/// over the endpoints.
async fn connect_unary(config: &BenchConfig) -> Result<Vec<UnaryChannel>, BenchError> {
    let mut channels = Vec::with_capacity(config.conns);
    for i in 0..config.conns {
        channels.push(connect_unary_at(config, i).await?);
    }
    Ok(channels)
}

/// Opens `config.conns` tonic connections (for streams), spread over the
/// endpoints.
async fn connect(config: &BenchConfig) -> Result<Vec<Channel>, BenchError> {
    let mut channels = Vec::with_capacity(config.conns);
    for i in 0..config.conns {
        let endpoint = &config.endpoints[i % config.endpoints.len()];
        let failed = |reason: String| BenchError::Connect {
            endpoint: endpoint.clone(),
            reason,
        };
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| failed(e.to_string()))?
            .tcp_nodelay(true)
            .connect_timeout(SETUP_TIMEOUT)
            .connect()
            .await
            .map_err(|e| failed(format!("{e:?}")))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// gRPC paths of the unary KV calls (etcd's `etcdserverpb.KV` service).
const RANGE: &str = "/etcdserverpb.KV/Range";
const PUT: &str = "/etcdserverpb.KV/Put";
const TXN: &str = "/etcdserverpb.KV/Txn";

/// A client's share of the connections: the kinds its op uses.
struct Conn {
    grpc: Option<Channel>,
    unary: Option<UnaryChannel>,
}

impl Conn {
    fn unary(self) -> Result<UnaryChannel, BenchError> {
        self.unary
            .ok_or_else(|| BenchError::Setup("no unary connection for this op".into()))
    }

    fn grpc(self) -> Result<Channel, BenchError> {
        self.grpc
            .ok_or_else(|| BenchError::Setup("no gRPC connection for this op".into()))
    }
}

/// What a successful request reports besides its latency.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    /// txn-cas: failed compares before the swap succeeded.
    cas_misses: u64,
}

/// txn-cas: compares tried per op before it counts as an error. Misses come
/// from keys not seen yet and from other clients' swaps; a streak this long
/// means heavy contention on one key, which the report should show.
pub const MAX_CAS_ATTEMPTS: u64 = 8;

/// One client's connection and op-specific state.
enum Worker {
    /// put, range, range-serializable and the puts of watch-latency.
    Kv {
        client: UnaryChannel,
        picker: KeyPicker,
        value: Vec<u8>,
        /// Nanoseconds since this instant are stamped into watch values.
        stamp_base: Option<Instant>,
    },
    /// txn-cas, remembering the last mod_revision seen per key.
    Cas {
        client: UnaryChannel,
        picker: KeyPicker,
        value: Vec<u8>,
        seen: HashMap<u64, i64>,
    },
    /// lease-keepalive on its own stream.
    Lease(Box<LeaseStream>),
}

/// A lease and its keep-alive stream.
struct LeaseStream {
    client: LeaseClient<Channel>,
    id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
    /// A request timed out: its answer may still come, so the stream is
    /// replaced before the next one.
    stale: bool,
}

impl LeaseStream {
    /// Grants a lease and opens its stream, with one warm-up round trip.
    async fn open(mut client: LeaseClient<Channel>, ttl: i64) -> Result<LeaseStream, String> {
        let grant = client
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await
            .map_err(|s| format!("lease grant: {}", status_kind(&s)))?
            .into_inner();
        if !grant.error.is_empty() {
            return Err(format!("lease grant: {}", grant.error));
        }
        let (requests, responses) = Self::stream(&mut client, grant.id).await?;
        let mut lease = LeaseStream {
            client,
            id: grant.id,
            requests,
            responses,
            stale: false,
        };
        lease.read_one().await?;
        Ok(lease)
    }

    /// Opens a keep-alive stream. The first request is queued before the
    /// call: a gRPC server may send its headers only with its first answer.
    async fn stream(
        client: &mut LeaseClient<Channel>,
        id: i64,
    ) -> Result<
        (
            mpsc::Sender<LeaseKeepAliveRequest>,
            Streaming<LeaseKeepAliveResponse>,
        ),
        String,
    > {
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(LeaseKeepAliveRequest { id })
            .expect("a fresh channel has room for one");
        let responses = client
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .map_err(|s| status_kind(&s))?
            .into_inner();
        Ok((tx, responses))
    }

    async fn read_one(&mut self) -> Result<(), String> {
        match self.responses.message().await {
            Ok(Some(r)) if r.ttl > 0 => Ok(()),
            Ok(Some(_)) => Err("lease expired or not found".into()),
            Ok(None) => Err("keep-alive stream ended".into()),
            Err(s) => Err(status_kind(&s)),
        }
    }

    async fn keep_alive(&mut self) -> Result<(), String> {
        if self.stale {
            let (tx, rx) = Self::stream(&mut self.client, self.id).await?;
            self.requests = tx;
            self.responses = rx;
            self.stale = false;
            // The queued request is this call's.
            return self.read_one().await;
        }
        self.requests
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| "keep-alive stream closed".to_string())?;
        self.read_one().await
    }
}

impl Worker {
    async fn call(
        &mut self,
        op: Op,
        ticket: crate::schedule::Ticket,
        key_size: usize,
    ) -> Result<Outcome, String> {
        match self {
            Worker::Kv {
                client,
                picker,
                value,
                stamp_base,
            } => {
                let key = keys::key(picker.pick(ticket.index), key_size);
                match op {
                    Op::Range | Op::RangeSerializable => {
                        let request = RangeRequest {
                            key,
                            serializable: op == Op::RangeSerializable,
                            ..Default::default()
                        };
                        client
                            .call::<_, RangeResponse>(RANGE, &request)
                            .await
                            .map_err(|s| status_kind(&s))?;
                    }
                    _ => {
                        let mut value = value.clone();
                        if let Some(base) = stamp_base {
                            let nanos = ticket.due.saturating_duration_since(*base).as_nanos();
                            keys::stamp(&mut value, u64::try_from(nanos).unwrap_or(u64::MAX));
                        }
                        let request = PutRequest {
                            key,
                            value,
                            ..Default::default()
                        };
                        client
                            .call::<_, PutResponse>(PUT, &request)
                            .await
                            .map_err(|s| status_kind(&s))?;
                    }
                }
                Ok(Outcome::default())
            }
            Worker::Cas {
                client,
                picker,
                value,
                seen,
            } => {
                // One op is one successful swap: a failed compare returns the
                // key's current mod_revision (the else branch reads it) and
                // the swap is retried with it, as a read-modify-write client
                // does. A key this client has not seen yet costs one miss.
                let index = picker.pick(ticket.index);
                let key = keys::key(index, key_size);
                let mut misses = 0;
                while misses < MAX_CAS_ATTEMPTS {
                    let expected = seen.get(&index).copied().unwrap_or(0);
                    let request = cas_request(key.clone(), value.clone(), expected);
                    let response: TxnResponse = client
                        .call(TXN, &request)
                        .await
                        .map_err(|s| status_kind(&s))?;
                    if response.succeeded {
                        let revision = response.header.map_or(0, |h| h.revision);
                        seen.insert(index, revision);
                        return Ok(Outcome { cas_misses: misses });
                    }
                    let current = response
                        .responses
                        .into_iter()
                        .find_map(|r| match r.response {
                            Some(response_op::Response::ResponseRange(range)) => Some(range),
                            _ => None,
                        })
                        .and_then(|range| range.kvs.into_iter().next())
                        .map_or(0, |kv| kv.mod_revision);
                    seen.insert(index, current);
                    misses += 1;
                }
                Err(format!("cas: no swap in {MAX_CAS_ATTEMPTS} attempts"))
            }
            Worker::Lease(lease) => {
                lease.keep_alive().await?;
                Ok(Outcome::default())
            }
        }
    }

    fn timed_out(&mut self) {
        if let Worker::Lease(lease) = self {
            lease.stale = true;
        }
    }
}

/// `if mod_revision(key) == expected then put(key, value) else get(key)`.
/// `expected == 0` means "the key does not exist yet".
pub fn cas_request(key: Vec<u8>, value: Vec<u8>, expected: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.clone(),
            range_end: Vec::new(),
            target_union: Some(compare::TargetUnion::ModRevision(expected)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value,
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

/// One client: take a ticket, wait until it is due, send, record.
async fn client_loop(
    mut worker: Worker,
    config: Arc<BenchConfig>,
    schedule: Arc<Schedule>,
) -> ClientTally {
    let mut tally = ClientTally::default();
    // Open loop only (closed-loop tickets are due when taken).
    let mut timer = (config.rate > 0.0).then(DueTimer::new);
    while let Some(ticket) = schedule.take(Instant::now()) {
        if let Some(timer) = &mut timer {
            timer.wait_until(ticket.due).await;
        }
        let call = worker.call(config.op, ticket, config.key_size);
        match tokio::time::timeout(config.request_timeout, call).await {
            Ok(Ok(outcome)) => {
                let latency = ticket.due.elapsed();
                if config.op == Op::WatchLatency {
                    tally.secondary.record(latency);
                } else {
                    tally.latencies.record(latency);
                }
                tally.cas_misses += outcome.cas_misses;
            }
            Ok(Err(kind)) => tally.errors.add(&kind),
            Err(_) => {
                worker.timed_out();
                tally.errors.add(CLIENT_TIMEOUT);
            }
        }
    }
    if let Worker::Lease(lease) = &mut worker {
        let revoke = lease
            .client
            .lease_revoke(LeaseRevokeRequest { id: lease.id });
        let _ = tokio::time::timeout(SETUP_TIMEOUT, revoke).await;
    }
    tally
}

async fn make_worker(
    config: &BenchConfig,
    channel: Conn,
    client: usize,
    stamp_base: Option<Instant>,
) -> Result<Worker, BenchError> {
    let picker = KeyPicker::new(
        config.seed,
        client,
        config.key_space,
        config.sequential_keys,
    );
    let value = keys::value(config.val_size);
    Ok(match config.op {
        Op::Put | Op::Range | Op::RangeSerializable | Op::WatchLatency => Worker::Kv {
            client: channel.unary()?,
            picker,
            value,
            stamp_base,
        },
        Op::TxnCas => Worker::Cas {
            client: channel.unary()?,
            picker,
            value,
            seen: HashMap::new(),
        },
        Op::LeaseKeepalive => {
            let open = LeaseStream::open(LeaseClient::new(channel.grpc()?), config.lease_ttl);
            let lease = tokio::time::timeout(SETUP_TIMEOUT, open)
                .await
                .map_err(|_| BenchError::Setup("lease grant or keep-alive timed out".into()))?
                .map_err(BenchError::Setup)?;
            Worker::Lease(Box::new(lease))
        }
        Op::FsyncProbe | Op::ChainProbe => unreachable!("the probes need no server"),
    })
}

/// Opens a watch on every bench key, waiting for its `created` answer.
async fn open_watch(
    channel: Channel,
) -> Result<(mpsc::Sender<WatchRequest>, Streaming<WatchResponse>), BenchError> {
    let setup = |what: String| BenchError::Setup(format!("watch: {what}"));
    let (tx, rx) = mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: keys::KEY_RANGE_START.to_vec(),
                range_end: keys::KEY_RANGE_END.to_vec(),
                ..Default::default()
            },
        )),
    };
    // Queued before the call: the server may answer headers only with data.
    tx.try_send(create)
        .expect("a fresh channel has room for one");
    let opened = async {
        let mut stream = WatchClient::new(channel)
            .watch(ReceiverStream::new(rx))
            .await
            .map_err(|s| setup(status_kind(&s)))?
            .into_inner();
        match stream.message().await {
            Ok(Some(r)) if r.created && !r.canceled => Ok(stream),
            Ok(Some(r)) => Err(setup(format!("not created: {}", r.cancel_reason))),
            Ok(None) => Err(setup("stream ended".into())),
            Err(s) => Err(setup(status_kind(&s))),
        }
    };
    let stream = tokio::time::timeout(SETUP_TIMEOUT, opened)
        .await
        .map_err(|_| setup("no created answer in time".into()))??;
    Ok((tx, stream))
}

/// Receives events until `stop` says how many to expect and they arrived,
/// or its grace deadline passes.
async fn watcher_loop(
    _requests: mpsc::Sender<WatchRequest>,
    mut stream: Streaming<WatchResponse>,
    stamp_base: Instant,
    mut stop: tokio::sync::watch::Receiver<Option<(u64, Instant)>>,
) -> ClientTally {
    let mut tally = ClientTally::default();
    let mut received = 0u64;
    let mut target: Option<(u64, Instant)> = None;
    loop {
        if target.is_some_and(|(n, _)| received >= n) {
            break;
        }
        let grace_end = target.map_or_else(Instant::now, |(_, d)| d);
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => {
                    if response.canceled {
                        tally.errors.add(&format!("watch canceled: {}", response.cancel_reason));
                        break;
                    }
                    let now = stamp_base.elapsed().as_nanos();
                    for event in response.events {
                        let Some(stamp) = event.kv.as_ref().and_then(|kv| keys::read_stamp(&kv.value)) else {
                            continue;
                        };
                        let nanos = u64::try_from(now.saturating_sub(u128::from(stamp))).unwrap_or(u64::MAX);
                        tally.latencies.record(Duration::from_nanos(nanos));
                        received += 1;
                    }
                }
                Ok(None) => {
                    tally.errors.add("watch stream ended");
                    break;
                }
                Err(status) => {
                    tally.errors.add(&status_kind(&status));
                    break;
                }
            },
            changed = stop.changed(), if target.is_none() => {
                if changed.is_err() {
                    break;
                }
                target = *stop.borrow();
            }
            _ = tokio::time::sleep_until(grace_end.into()), if target.is_some() => break,
        }
    }
    if let Some((n, _)) = target {
        tally
            .errors
            .add_n(WATCH_EVENT_MISSING, n.saturating_sub(received));
    }
    tally
}

/// Runs the configured load and returns the report.
pub async fn run(config: BenchConfig) -> Result<Report, BenchError> {
    let config = Arc::new(config);
    let channels = if uses_streams(config.op) {
        connect(&config).await?
    } else {
        Vec::new()
    };
    let unary = if uses_unary(config.op) {
        connect_unary(&config).await?
    } else {
        Vec::new()
    };
    let stamp_base = Instant::now();

    let mut watchers = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    if config.op == Op::WatchLatency {
        for w in 0..config.watchers {
            let (requests, stream) = open_watch(channels[w % channels.len()].clone()).await?;
            watchers.push(tokio::spawn(watcher_loop(
                requests,
                stream,
                stamp_base,
                stop_rx.clone(),
            )));
        }
    }

    let mut workers = Vec::with_capacity(config.clients);
    let base = (config.op == Op::WatchLatency).then_some(stamp_base);
    for c in 0..config.clients {
        let conn = Conn {
            grpc: (!channels.is_empty()).then(|| channels[c % channels.len()].clone()),
            unary: (!unary.is_empty()).then(|| unary[c % unary.len()].clone()),
        };
        workers.push(make_worker(&config, conn, c, base).await?);
    }

    let (start, schedule) = schedule_from_now(&config);
    let mut tally = run_clients(workers, &config, &schedule).await;
    let backlog = schedule.backlog(Instant::now());

    if config.op == Op::WatchLatency {
        // The put tally's count is in `secondary`; every watcher expects
        // one event per successful put.
        let puts_ok = tally.secondary.count();
        let _ = stop_tx.send(Some((puts_ok, Instant::now() + WATCH_DRAIN_GRACE)));
        for watcher in watchers {
            match watcher.await {
                Ok(t) => tally.merge(&t),
                Err(e) => tally.errors.add(&format!("watcher task failed: {e}")),
            }
        }
    }
    let elapsed = start.elapsed();
    Ok(Report::new(&config, &tally, backlog, elapsed))
}

/// Runs a unary op (put, range, txn-cas) on `config.threads` threads, each
/// with a single-threaded runtime that owns its share of the connections
/// and the clients on them (connection `i` belongs to thread
/// `i % threads`, client `c` to connection `c % conns`). A response then
/// wakes its client on the thread that read it: no work stealing and no
/// cross-thread wake-ups between a connection and its clients, which on a
/// 2-core machine shared with the servers under test cost more CPU than
/// the requests themselves (BENCHMARKS.md, session 8). All threads start
/// on one schedule once every connection is up.
pub fn run_sharded(config: BenchConfig) -> Result<Report, BenchError> {
    assert!(!uses_streams(config.op), "streaming ops run on one runtime");
    let config = Arc::new(config);
    let shards = config.threads.clamp(1, config.conns);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), BenchError>>();
    let mut starts = Vec::with_capacity(shards);
    let mut threads = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (start_tx, start_rx) = tokio::sync::oneshot::channel::<Arc<Schedule>>();
        starts.push(start_tx);
        let config = Arc::clone(&config);
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("concord-bench-{shard}"))
            .spawn(move || run_shard(&config, shard, shards, &ready, start_rx))
            .map_err(|e| BenchError::Runtime(e.to_string()))?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut setup = Ok(());
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                setup = Err(e);
                break;
            }
            Err(_) => {
                setup = Err(BenchError::Runtime("a client thread stopped".into()));
                break;
            }
        }
    }
    let (start, schedule) = schedule_from_now(&config);
    if setup.is_ok() {
        for start_tx in starts {
            let _ = start_tx.send(Arc::clone(&schedule));
        }
    } else {
        // Dropping the senders tells every thread to stop.
        drop(starts);
    }
    let mut tally = ClientTally::default();
    for thread in threads {
        match thread.join() {
            Ok(t) => tally.merge(&t),
            Err(_) => tally.errors.add("client thread panicked"),
        }
    }
    setup?;
    let backlog = schedule.backlog(Instant::now());
    Ok(Report::new(&config, &tally, backlog, start.elapsed()))
}

/// One thread of [`run_sharded`]: connects its connections, makes its
/// workers, reports ready, waits for the schedule and runs its clients.
fn run_shard(
    config: &Arc<BenchConfig>,
    shard: usize,
    shards: usize,
    ready: &std::sync::mpsc::Sender<Result<(), BenchError>>,
    start: tokio::sync::oneshot::Receiver<Arc<Schedule>>,
) -> ClientTally {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(BenchError::Runtime(e.to_string())));
            return ClientTally::default();
        }
    };
    runtime.block_on(async {
        let setup = async {
            let mut conns = HashMap::new();
            for i in (shard..config.conns).step_by(shards) {
                conns.insert(i, connect_unary_at(config, i).await?);
            }
            let mut workers = Vec::new();
            for c in (0..config.clients).filter(|c| (c % config.conns) % shards == shard) {
                let conn = Conn {
                    grpc: None,
                    unary: conns.get(&(c % config.conns)).cloned(),
                };
                workers.push(make_worker(config, conn, c, None).await?);
            }
            Ok::<_, BenchError>(workers)
        };
        let workers = match setup.await {
            Ok(workers) => {
                let _ = ready.send(Ok(()));
                workers
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return ClientTally::default();
            }
        };
        let Ok(schedule) = start.await else {
            return ClientTally::default();
        };
        run_clients(workers, config, &schedule).await
    })
}

/// The run's schedule, starting now.
fn schedule_from_now(config: &BenchConfig) -> (Instant, Arc<Schedule>) {
    let start = Instant::now();
    let schedule = Schedule::new(start, config.interval, config.total, config.duration);
    (start, Arc::new(schedule))
}

/// Runs every worker as a task of the current runtime on `schedule` and
/// merges their tallies.
async fn run_clients(
    workers: Vec<Worker>,
    config: &Arc<BenchConfig>,
    schedule: &Arc<Schedule>,
) -> ClientTally {
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|w| tokio::spawn(client_loop(w, Arc::clone(config), Arc::clone(schedule))))
        .collect();
    let mut tally = ClientTally::default();
    for task in tasks {
        match task.await {
            Ok(t) => tally.merge(&t),
            Err(e) => tally.errors.add(&format!("client task failed: {e}")),
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_compares_mod_revision_then_puts_else_reads() {
        let t = cas_request(b"k".to_vec(), b"v".to_vec(), 42);
        assert_eq!(t.compare.len(), 1);
        let c = &t.compare[0];
        assert_eq!(c.target, compare::CompareTarget::Mod as i32);
        assert_eq!(c.result, compare::CompareResult::Equal as i32);
        assert_eq!(c.target_union, Some(compare::TargetUnion::ModRevision(42)));
        assert!(matches!(
            &t.success[0].request,
            Some(request_op::Request::RequestPut(p)) if p.key == b"k" && p.value == b"v"
        ));
        assert!(matches!(
            &t.failure[0].request,
            Some(request_op::Request::RequestRange(r)) if r.key == b"k" && !r.serializable
        ));
    }
}
