//! `etcdserverpb.Watch`: one bidirectional stream carries many watchers.
//!
//! Each stream is served by one task (a [`Session`]) that owns all of the
//! stream's watchers and one subscription to the applied-event broadcast.
//! A watcher is either *synced* (its next events come from the broadcast)
//! or *unsynced* (it reads the store's history in chunks until it reaches
//! the store's revision, then becomes synced): the seam of
//! [`crate::watch_hub`], run for many watchers at once, as etcd's
//! watchable store runs its synced and unsynced groups.
//!
//! ```text
//!  client ──create/cancel/progress──▶ Session ──responses (bounded)──▶ client
//!                                       ▲   ▲
//!          applied batches (broadcast) ─┘   └─ history chunks (events_since)
//! ```
//!
//! Slow clients: responses go through a bounded channel. When the client
//! does not read, the session waits on that channel and stops draining its
//! broadcast receiver, which then lags (the replica loop never waits). On
//! lag every watcher of the stream turns unsynced and catches up from
//! history, so a slow watcher costs bounded memory and loses nothing.
//!
//! Invariants:
//! 1. Per watcher, events are sent in revision order, each exactly once,
//!    and a revision is split across responses only when the watcher asked
//!    for `fragment` and the revision alone exceeds the size limit.
//! 2. `next` of a synced watcher is above every revision the session has
//!    taken from its receiver; an unsynced watcher becomes synced only when
//!    a history read reached the store's revision, which (reads happen in
//!    this task, after every receive) covers everything received.
//! 3. A progress response (`watch_id = -1`) reports a revision P such that
//!    every event <= P of every watcher on the stream has been sent, and P
//!    is >= every event revision already sent on the stream and >= every
//!    earlier progress revision (etcd#15220 reports lower revisions).
//! 4. A start revision below the compacted revision is answered with
//!    `compact_revision` and `canceled`, as etcd does; never skipped.

use super::convert::kv_to_pb;
use super::Api;
use crate::replica::ServerError;
use crate::watch_hub::{event_revision, history, KeyRange, HISTORY_CHUNK_EVENTS};
use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::watch_server::Watch;
use concord_etcd_proto::mvccpb;
use concord_etcd_proto::prost::Message;
use concord_mvcc::{Event, EventKind, MvccError, StoreReader};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Responses queued per stream before the session waits for the client.
pub const WATCH_STREAM_RESPONSES: usize = 128;

/// etcd's `progressReportInterval`: automatic progress notifications.
pub const PROGRESS_NOTIFY_INTERVAL_DEFAULT: Duration = Duration::from_secs(600);

/// etcd's id for "no watcher" (progress responses, failed creations).
const INVALID_WATCH_ID: i64 = -1;

const COMPACTED_REASON: &str = "etcdserver: mvcc: required revision has been compacted";
const DUPLICATE_ID_REASON: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const EMPTY_RANGE_REASON: &str = "mvcc: watcher range is empty";

type Outgoing = mpsc::Sender<Result<pb::WatchResponse, Status>>;

#[tonic::async_trait]
impl Watch for Api {
    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = super::requires_leader(&request);
        if require_leader && self.shared.leader().is_none() {
            return Err(Status::unavailable(ServerError::NoLeader.to_string()));
        }
        let incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(WATCH_STREAM_RESPONSES);
        let mut session = Session::new(self.clone(), tx);
        session.require_leader = require_leader;
        tokio::spawn(session.run(incoming));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The session ends: the client went away (or must reconnect elsewhere).
struct Closed;

/// Election timeouts without a leader after which a stream that requires
/// a leader is ended (etcd's `maxNoLeaderCnt`).
const NO_LEADER_CHECKS_MAX: u32 = 3;

struct Watcher {
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    /// Every event of this watcher below `next` has been sent.
    next: i64,
    synced: bool,
    /// Events were sent since the last automatic progress notification.
    sent_recently: bool,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        match event.kind {
            EventKind::Put if self.no_put => false,
            EventKind::Delete if self.no_delete => false,
            _ => self.range.contains(&event.kv.key),
        }
    }

    /// The event as sent to this watcher. Events, live or from history,
    /// carry no `prev_kv` (the store does not read previous values for
    /// them); a watcher that asked for it gets it read from `reader` here,
    /// as etcd's watch stream does.
    fn to_pb(&self, event: &Event, reader: &StoreReader) -> mvccpb::Event {
        let prev_kv = if !self.prev_kv {
            None
        } else {
            // A failed read leaves prev_kv out, like a compacted one: the
            // event itself must still be delivered.
            reader
                .prev_version(&event.kv.key, event.kv.mod_revision)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "reading a watch event's prev_kv");
                    None
                })
        };
        mvccpb::Event {
            r#type: match event.kind {
                EventKind::Put => mvccpb::event::EventType::Put as i32,
                EventKind::Delete => mvccpb::event::EventType::Delete as i32,
            },
            kv: Some(kv_to_pb(event.kv.clone())),
            prev_kv: prev_kv.map(kv_to_pb),
        }
    }
}

/// One Watch stream. See the module documentation.
struct Session {
    api: Api,
    tx: Outgoing,
    rx: broadcast::Receiver<Arc<Vec<Event>>>,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
    /// Round-robin position among unsynced watchers.
    catch_up_after: i64,
    /// Highest event revision sent on this stream.
    max_sent: i64,
    /// Highest progress revision sent on this stream.
    last_progress: i64,
    /// A progress request waits for the stream to reach this revision.
    progress_wanted: Option<i64>,
    /// The client sent `hasleader: true`: end the stream when this member
    /// stays without a leader.
    require_leader: bool,
    /// Consecutive leader checks that found none.
    no_leader_checks: u32,
}

impl Session {
    fn new(api: Api, tx: Outgoing) -> Session {
        // Subscribe before anything is read from the store (invariant 2).
        let rx = api.shared.events.subscribe();
        Session {
            api,
            tx,
            rx,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
            catch_up_after: i64::MIN,
            max_sent: 0,
            last_progress: 0,
            progress_wanted: None,
            require_leader: false,
            no_leader_checks: 0,
        }
    }

    async fn run<S>(mut self, mut incoming: S)
    where
        S: Stream<Item = Result<pb::WatchRequest, Status>> + Unpin,
    {
        let interval = self.api.coordination.watch_progress_notify_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let election = self
            .api
            .coordination
            .election_timeout
            .max(Duration::from_millis(10));
        let mut leader_check =
            tokio::time::interval_at(tokio::time::Instant::now() + election, election);
        let mut incoming_open = true;
        loop {
            let catching_up = self.watchers.values().any(|w| !w.synced);
            let step = tokio::select! {
                _ = self.tx.closed() => Err(Closed),
                request = incoming.next(), if incoming_open => match request {
                    Some(Ok(request)) => self.on_request(request).await,
                    // The client closed its side (or reset it): like etcd,
                    // keep sending until the response stream goes away.
                    Some(Err(_)) | None => {
                        incoming_open = false;
                        Ok(())
                    }
                },
                _ = std::future::ready(()), if catching_up => self.catch_up_one().await,
                batch = self.rx.recv() => self.on_live(batch).await,
                _ = ticker.tick() => self.on_progress_tick().await,
                _ = leader_check.tick(), if self.require_leader => self.check_leader().await,
            };
            if step.is_err() || self.maybe_send_progress().await.is_err() {
                break;
            }
        }
    }

    fn current_revision(&self) -> i64 {
        self.api
            .shared
            .reader
            .current_revision()
            .map(|r| r.0)
            .unwrap_or(0)
    }

    async fn send(&self, response: pb::WatchResponse) -> Result<(), Closed> {
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }

    fn response(&self, watch_id: i64, revision: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(self.api.header(revision)),
            watch_id,
            ..Default::default()
        }
    }

    async fn on_request(&mut self, request: pb::WatchRequest) -> Result<(), Closed> {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    let mut response = self.response(cancel.watch_id, self.current_revision());
                    response.canceled = true;
                    self.send(response).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let target = self.current_revision();
                self.progress_wanted = Some(self.progress_wanted.unwrap_or(0).max(target));
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> Result<(), Closed> {
        let current = self.current_revision();
        let refuse = |reason: &str| {
            let mut response = self.response(INVALID_WATCH_ID, current);
            response.created = true;
            response.canceled = true;
            response.cancel_reason = reason.to_string();
            response
        };
        let empty_range = !create.range_end.is_empty()
            && create.range_end != [0]
            && create.key >= create.range_end;
        if empty_range {
            return self.send(refuse(EMPTY_RANGE_REASON)).await;
        }
        let id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                return self.send(refuse(DUPLICATE_ID_REASON)).await;
            }
            create.watch_id
        } else {
            // As etcd: the next id not in use, never reusing one.
            while self.watchers.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        };
        let filter = |f: pb::watch_create_request::FilterType| create.filters.contains(&(f as i32));
        // start_revision 0: from the revision after the current one; that
        // watcher is synced at once because the session subscribed before
        // `current` was read (invariant 2).
        let (next, synced) = match create.start_revision {
            0 => (current + 1, true),
            start => (start.max(1), false),
        };
        let watcher = Watcher {
            range: KeyRange::new(create.key, create.range_end),
            no_put: filter(pb::watch_create_request::FilterType::Noput),
            no_delete: filter(pb::watch_create_request::FilterType::Nodelete),
            prev_kv: create.prev_kv,
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            next,
            synced,
            sent_recently: false,
        };
        self.watchers.insert(id, watcher);
        let mut response = self.response(id, current);
        response.created = true;
        self.send(response).await
    }

    /// A batch from the broadcast (or a lag, or the gap marker).
    async fn on_live(&mut self, batch: Result<Arc<Vec<Event>>, RecvError>) -> Result<(), Closed> {
        let batch = match batch {
            Ok(batch) if !batch.is_empty() => batch,
            Ok(_) | Err(RecvError::Lagged(_)) => {
                // Gap marker or lag: live events were lost to us; history
                // has them (invariant 2).
                for watcher in self.watchers.values_mut() {
                    watcher.synced = false;
                }
                return Ok(());
            }
            Err(RecvError::Closed) => return Err(Closed),
        };
        let last = batch.iter().map(event_revision).max().unwrap_or(0);
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(watcher) = self.watchers.get_mut(&id) else {
                continue;
            };
            if !watcher.synced {
                continue;
            }
            let next = watcher.next;
            watcher.next = next.max(last + 1);
            let reader = &self.api.shared.reader;
            let events: Vec<mvccpb::Event> = batch
                .iter()
                .filter(|e| event_revision(e) >= next && watcher.wants(e))
                .map(|e| watcher.to_pb(e, reader))
                .collect();
            if !events.is_empty() {
                self.send_events(id, events).await?;
            }
        }
        Ok(())
    }

    /// One history chunk for one unsynced watcher (round robin).
    async fn catch_up_one(&mut self) -> Result<(), Closed> {
        let pick = self
            .watchers
            .range(self.catch_up_after.saturating_add(1)..)
            .chain(self.watchers.range(..))
            .find(|(_, w)| !w.synced)
            .map(|(id, w)| (*id, w.next, w.range.clone()));
        let Some((id, next, range)) = pick else {
            return Ok(());
        };
        self.catch_up_after = id;
        let batch = match history(&self.api.shared, next, &range, HISTORY_CHUNK_EVENTS).await {
            Ok(batch) => batch,
            Err(e) => {
                self.watchers.remove(&id);
                let mut response = self.response(id, self.current_revision());
                response.canceled = true;
                match e {
                    MvccError::Compacted { compact_revision } => {
                        response.compact_revision = compact_revision;
                        response.cancel_reason = COMPACTED_REASON.to_string();
                    }
                    other => response.cancel_reason = other.to_string(),
                }
                return self.send(response).await;
            }
        };
        let Some(watcher) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        let reader = &self.api.shared.reader;
        let events: Vec<mvccpb::Event> = batch
            .events
            .iter()
            .filter(|e| event_revision(e) >= next && watcher.wants(e))
            .map(|e| watcher.to_pb(e, reader))
            .collect();
        watcher.next = watcher.next.max(batch.next_revision);
        if batch.next_revision > batch.current_revision {
            // The read covers the store's revision, hence everything this
            // session has received (invariant 2).
            watcher.next = watcher.next.max(batch.current_revision + 1);
            watcher.synced = true;
        }
        if events.is_empty() {
            return Ok(());
        }
        self.send_events(id, events).await
    }

    /// Sends one watcher's events, split by size (invariant 1).
    async fn send_events(&mut self, id: i64, events: Vec<mvccpb::Event>) -> Result<(), Closed> {
        let Some(watcher) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        watcher.sent_recently = true;
        let fragment = watcher.fragment;
        let limit = self.api.max_request_bytes;
        let revision_of = |e: &mvccpb::Event| e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0);
        let top = events.iter().map(revision_of).max().unwrap_or(0);
        self.max_sent = self.max_sent.max(top);
        let whole = pb::WatchResponse {
            header: Some(self.api.header(top)),
            watch_id: id,
            events,
            ..Default::default()
        };
        if whole.encoded_len() < limit || whole.events.len() < 2 {
            return self.send(whole).await;
        }
        let header = whole.header;
        let mut pieces: Vec<Vec<mvccpb::Event>> = Vec::new();
        let mut current: Vec<mvccpb::Event> = Vec::new();
        let mut size = 0usize;
        for event in whole.events {
            let len = event.encoded_len() + 8;
            // Without `fragment`, cut only between revisions.
            let boundary = fragment
                || current
                    .last()
                    .is_some_and(|last| revision_of(last) != revision_of(&event));
            if !current.is_empty() && size + len >= limit && boundary {
                pieces.push(std::mem::take(&mut current));
                size = 0;
            }
            size += len;
            current.push(event);
        }
        pieces.push(current);
        let count = pieces.len();
        for (i, events) in pieces.into_iter().enumerate() {
            let rev = events.iter().map(revision_of).max().unwrap_or(0);
            let header = if fragment {
                header
            } else {
                Some(self.api.header(rev))
            };
            self.send(pb::WatchResponse {
                header,
                watch_id: id,
                events,
                fragment: fragment && i + 1 < count,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Answers a pending progress request once invariant 3 allows it.
    async fn maybe_send_progress(&mut self) -> Result<(), Closed> {
        let Some(target) = self.progress_wanted else {
            return Ok(());
        };
        if self.watchers.values().any(|w| !w.synced) {
            return Ok(());
        }
        let floor = target.max(self.max_sent).max(self.last_progress);
        let current = self.current_revision();
        let reached = self
            .watchers
            .values()
            .map(|w| w.next - 1)
            .min()
            .unwrap_or(current)
            .min(current);
        if reached < floor {
            return Ok(());
        }
        self.progress_wanted = None;
        self.last_progress = reached;
        self.send(self.response(INVALID_WATCH_ID, reached)).await
    }

    /// etcd's `monitorLeader` for streams that require a leader.
    async fn check_leader(&mut self) -> Result<(), Closed> {
        if self.api.shared.leader().is_some() {
            self.no_leader_checks = 0;
            return Ok(());
        }
        self.no_leader_checks += 1;
        if self.no_leader_checks < NO_LEADER_CHECKS_MAX {
            return Ok(());
        }
        let _ = self
            .tx
            .send(Err(Status::unavailable(ServerError::NoLeader.to_string())))
            .await;
        Err(Closed)
    }

    /// etcd's periodic progress notification, per watcher that asked for it
    /// and saw no events during the interval.
    async fn on_progress_tick(&mut self) -> Result<(), Closed> {
        let current = self.current_revision();
        let mut due = Vec::new();
        for (id, watcher) in self.watchers.iter_mut() {
            if watcher.progress_notify && watcher.synced && !watcher.sent_recently {
                due.push((*id, (watcher.next - 1).min(current)));
            }
            watcher.sent_recently = false;
        }
        for (id, revision) in due {
            self.send(self.response(id, revision)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The session against a real store and a hand-driven broadcast: the
    //! test plays the replica loop, so it can hold a batch between commit
    //! and broadcast, overflow the channel, or send the gap marker.

    use super::*;
    use crate::api::Coordination;
    use crate::replica::{Request as LoopRequest, Shared};
    use concord_mvcc::Command;
    use concord_mvcc::{
        CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, Store, StoreOptions,
        TxnRequest,
    };
    use pb::watch_create_request::FilterType;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::RwLock;

    struct Harness {
        _dir: tempfile::TempDir,
        store: Store,
        index: u64,
        api: Api,
        _inbox: crate::inbox::InboxReceiver<LoopRequest>,
    }

    struct Client {
        tx: mpsc::Sender<Result<pb::WatchRequest, Status>>,
        rx: mpsc::Receiver<Result<pb::WatchResponse, Status>>,
    }

    impl Harness {
        fn new(channel_batches: usize) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path().join("db"), StoreOptions::default()).unwrap();
            let (inbox, inbox_rx) = crate::inbox::inbox();
            let shared = Arc::new(Shared {
                member_id: 7,
                cluster_id: 9,
                name: "test".into(),
                leader: AtomicU64::new(7),
                term: AtomicU64::new(1),
                commit_index: AtomicU64::new(0),
                applied_index: AtomicU64::new(0),
                is_learner: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                members: RwLock::new(Default::default()),
                reader: store.reader(),
                inbox,
                events: broadcast::channel(channel_batches).0,
                request_timeout: Duration::from_secs(5),
                tick_scale_percent: AtomicU64::new(100),
            });
            let api = Api {
                shared,
                max_request_bytes: crate::api::DEFAULT_MAX_REQUEST_BYTES,
                max_txn_ops: 128,
                cluster_token: "t".into(),
                coordination: Arc::new(Coordination::new(7, Duration::from_millis(50))),
            };
            Harness {
                _dir: dir,
                store,
                index: 0,
                api,
                _inbox: inbox_rx,
            }
        }

        /// Commits a command; its events are returned, not yet broadcast.
        fn commit(&mut self, command: Command) -> Vec<Event> {
            self.index += 1;
            let mut out = self.store.apply_batch(&[(self.index, command)]).unwrap();
            out.pop().unwrap().unwrap().events
        }

        fn broadcast(&self, events: Vec<Event>) {
            let _ = self.api.shared.events.send(Arc::new(events));
        }

        fn apply(&mut self, command: Command) {
            let events = self.commit(command);
            if !events.is_empty() {
                self.broadcast(events);
            }
        }

        fn put(&mut self, key: &str, value: &str) {
            self.apply(put(key, value));
        }

        fn client(&self) -> Client {
            self.client_requiring_leader(false)
        }

        fn client_requiring_leader(&self, require_leader: bool) -> Client {
            let (tx, rx) = mpsc::channel(WATCH_STREAM_RESPONSES);
            let (req_tx, req_rx) = mpsc::channel(16);
            let mut session = Session::new(self.api.clone(), tx);
            session.require_leader = require_leader;
            tokio::spawn(session.run(ReceiverStream::new(req_rx)));
            Client { tx: req_tx, rx }
        }
    }

    fn put(key: &str, value: &str) -> Command {
        Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    fn create(key: &str, start_revision: i64) -> pb::WatchCreateRequest {
        pb::WatchCreateRequest {
            key: key.into(),
            start_revision,
            ..Default::default()
        }
    }

    fn revisions(response: &pb::WatchResponse) -> Vec<i64> {
        response
            .events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect()
    }

    impl Client {
        async fn send(&self, request: pb::watch_request::RequestUnion) {
            self.tx
                .send(Ok(pb::WatchRequest {
                    request_union: Some(request),
                }))
                .await
                .unwrap();
        }

        async fn create(&mut self, create: pb::WatchCreateRequest) -> pb::WatchResponse {
            self.send(pb::watch_request::RequestUnion::CreateRequest(create))
                .await;
            let response = self.recv().await;
            assert!(response.created, "{response:?}");
            response
        }

        async fn recv(&mut self) -> pb::WatchResponse {
            tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .expect("a response in time")
                .expect("stream open")
                .expect("not an error")
        }

        async fn quiet(&mut self) {
            let got = tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await;
            assert!(got.is_err(), "unexpected response {got:?}");
        }

        /// Event revisions for `watch_id` until `last` was seen.
        async fn events_until(&mut self, watch_id: i64, last: i64) -> Vec<i64> {
            let mut seen = Vec::new();
            while seen.last().copied().unwrap_or(0) < last {
                let response = self.recv().await;
                assert_eq!(response.watch_id, watch_id, "{response:?}");
                seen.extend(revisions(&response));
            }
            seen
        }
    }

    #[tokio::test]
    async fn history_then_live_has_no_gap_and_no_duplicate_at_the_seam() {
        let mut h = Harness::new(64);
        h.put("a", "1"); // 2
        h.put("a", "2"); // 3
        let mut client = h.client();
        // Committed but not yet broadcast when the watch is created: the
        // session receives it live AND reads it from history.
        let held = h.commit(put("a", "3")); // 4
        client.create(create("a", 2)).await;
        h.broadcast(held);
        h.put("b", "x"); // 5, another key
        h.put("a", "4"); // 6
        assert_eq!(client.events_until(0, 6).await, vec![2, 3, 4, 6]);
        client.quiet().await;
    }

    #[tokio::test]
    async fn start_revision_zero_starts_after_the_current_revision() {
        let mut h = Harness::new(64);
        h.put("a", "1"); // 2
        let mut client = h.client();
        let created = client.create(create("a", 0)).await;
        assert_eq!(created.header.unwrap().revision, 2);
        h.put("a", "2"); // 3
        assert_eq!(client.events_until(0, 3).await, vec![3]);
    }

    #[tokio::test]
    async fn prev_kv_and_filters() {
        let mut h = Harness::new(64);
        h.put("k", "v1"); // 2
        h.put("k", "v2"); // 3
        h.apply(Command::DeleteRange(DeleteRangeRequest {
            key: "k".into(),
            ..Default::default()
        })); // 4
        let mut client = h.client();
        let mut with_prev = create("k", 2);
        with_prev.prev_kv = true;
        with_prev.watch_id = 100;
        let created = client.create(with_prev).await;
        assert_eq!(created.watch_id, 100);
        let mut events = Vec::new();
        while events.len() < 3 {
            events.extend(client.recv().await.events);
        }
        assert!(events[0].prev_kv.is_none());
        assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b"v1");
        assert_eq!(events[2].r#type, mvccpb::event::EventType::Delete as i32);
        assert_eq!(events[2].prev_kv.as_ref().unwrap().value, b"v2");

        let mut no_put = create("k", 2);
        no_put.filters = vec![FilterType::Noput as i32];
        no_put.watch_id = 101;
        client.create(no_put).await;
        assert_eq!(client.events_until(101, 4).await, vec![4]);
        let response_events = {
            let mut no_delete = create("k", 2);
            no_delete.filters = vec![FilterType::Nodelete as i32];
            no_delete.watch_id = 102;
            client.create(no_delete).await;
            client.events_until(102, 3).await
        };
        assert_eq!(response_events, vec![2, 3]);
        // Without prev_kv, none is sent even though the store has it.
        let plain = client.create(create("k", 3)).await;
        let response = client.recv().await;
        assert_eq!(response.watch_id, plain.watch_id);
        assert!(response.events.iter().all(|e| e.prev_kv.is_none()));
    }

    /// A watch over a prefix that starts in the past gets each event's
    /// previous version read at send time (history carries none).
    #[tokio::test]
    async fn history_prev_kv_over_a_prefix() {
        let mut h = Harness::new(64);
        h.put("p/a", "a1"); // 2
        h.put("p/b", "b1"); // 3
        h.put("p/a", "a2"); // 4
        h.apply(Command::DeleteRange(DeleteRangeRequest {
            key: "p/b".into(),
            ..Default::default()
        })); // 5
        let mut client = h.client();
        let mut request = create("p/", 2);
        request.range_end = b"p0".to_vec();
        request.prev_kv = true;
        client.create(request).await;
        let mut events = Vec::new();
        while events.len() < 4 {
            events.extend(client.recv().await.events);
        }
        let prevs: Vec<Option<&[u8]>> = events
            .iter()
            .map(|e| e.prev_kv.as_ref().map(|p| p.value.as_slice()))
            .collect();
        assert_eq!(
            prevs,
            [None, None, Some(&b"a1"[..]), Some(&b"b1"[..])],
            "{events:?}"
        );
        assert_eq!(events[3].r#type, mvccpb::event::EventType::Delete as i32);
    }

    #[tokio::test]
    async fn cancel_and_duplicate_ids() {
        let mut h = Harness::new(64);
        let mut client = h.client();
        client.create(create("a", 0)).await;
        let mut chosen = create("a", 0);
        chosen.watch_id = 0; // auto: the next free id
        let second = client.create(chosen).await;
        assert_eq!(second.watch_id, 1);
        let mut dup = create("a", 0);
        dup.watch_id = 1;
        let refused = client.create(dup).await;
        assert!(refused.canceled && refused.watch_id == -1, "{refused:?}");
        client
            .send(pb::watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest { watch_id: 0 },
            ))
            .await;
        let canceled = client.recv().await;
        assert!(canceled.canceled && canceled.watch_id == 0);
        h.put("a", "1"); // 2
        let response = client.recv().await;
        assert_eq!((response.watch_id, revisions(&response)), (1, vec![2]));
        client.quiet().await;
        // Empty range.
        let mut empty = create("b", 0);
        empty.range_end = b"a".to_vec();
        let refused = client.create(empty).await;
        assert!(refused.canceled);
    }

    #[tokio::test]
    async fn compacted_start_is_reported_and_canceled() {
        let mut h = Harness::new(64);
        for i in 0..5 {
            h.put("a", &i.to_string()); // 2..=6
        }
        h.apply(Command::Compact(CompactionRequest {
            revision: 5,
            physical: false,
        }));
        let mut client = h.client();
        let created = client.create(create("a", 3)).await;
        let response = client.recv().await;
        assert_eq!(response.watch_id, created.watch_id);
        assert!(response.canceled);
        assert_eq!(response.compact_revision, 5);
        assert_eq!(response.cancel_reason, COMPACTED_REASON);
        // At the compacted revision itself, the watch works.
        client.create(create("a", 5)).await;
        assert_eq!(client.events_until(1, 6).await, vec![5, 6]);
    }

    #[tokio::test]
    async fn a_slow_watcher_lags_and_catches_up_from_history() {
        // Four batches of room: the session lags as soon as the client
        // stops reading and the response channel fills up.
        let mut h = Harness::new(4);
        let mut client = h.client();
        let mut prefix = create("p/", 0);
        prefix.range_end = b"p0".to_vec();
        client.create(prefix).await;
        for i in 0..600 {
            h.put(&format!("p/{}", i % 7), "v"); // 2..=601
            h.put("other", "v"); // 602.., not watched
        }
        let seen = client.events_until(0, 1200).await;
        let expected: Vec<i64> = (0..600).map(|i| 2 + 2 * i).collect();
        assert_eq!(seen, expected);
        client.quiet().await;
    }

    #[tokio::test]
    async fn the_gap_marker_makes_watchers_reread_history() {
        let mut h = Harness::new(64);
        let mut client = h.client();
        client.create(create("a", 0)).await;
        // As if a snapshot was installed: committed, never broadcast.
        h.commit(put("a", "1")); // 2
        h.commit(put("a", "2")); // 3
        h.broadcast(Vec::new());
        h.put("a", "3"); // 4
        assert_eq!(client.events_until(0, 4).await, vec![2, 3, 4]);
        client.quiet().await;
    }

    #[tokio::test]
    async fn fragments_only_when_asked_and_never_splits_a_revision_otherwise() {
        let mut h = Harness::new(64);
        h.api.max_request_bytes = 1024;
        let big = "x".repeat(300);
        let txn = |prefix: &str| {
            Command::Txn(TxnRequest {
                compare: Vec::new(),
                success: (0..10)
                    .map(|i| {
                        RequestOp::Put(PutRequest {
                            key: format!("{prefix}{i}").into_bytes(),
                            value: big.clone().into_bytes(),
                            ..Default::default()
                        })
                    })
                    .collect(),
                failure: Vec::new(),
            })
        };
        h.apply(txn("f/")); // 2: ten events of one revision
        h.apply(txn("f/")); // 3
        let mut client = h.client();
        let mut fragmented = create("f/", 2);
        fragmented.range_end = b"f0".to_vec();
        fragmented.fragment = true;
        client.create(fragmented).await;
        let mut parts = Vec::new();
        let mut total = 0;
        while total < 20 {
            let response = client.recv().await;
            total += response.events.len();
            parts.push(response);
        }
        assert!(parts.len() > 2);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts.last().unwrap().fragment);

        let mut whole = create("f/", 2);
        whole.range_end = b"f0".to_vec();
        client.create(whole).await;
        let first = client.recv().await;
        let second = client.recv().await;
        assert_eq!((first.events.len(), second.events.len()), (10, 10));
        assert!(!first.fragment && !second.fragment);
        assert_eq!(revisions(&first), vec![2; 10]);
    }

    #[tokio::test]
    async fn a_stream_that_requires_a_leader_ends_without_one() {
        let mut h = Harness::new(64);
        let mut relaxed = h.client();
        let mut strict = h.client_requiring_leader(true);
        relaxed.create(create("a", 0)).await;
        strict.create(create("a", 0)).await;
        // A brief loss (under three election timeouts) is tolerated.
        h.api
            .shared
            .leader
            .store(0, std::sync::atomic::Ordering::Release);
        tokio::time::sleep(Duration::from_millis(70)).await;
        h.api
            .shared
            .leader
            .store(7, std::sync::atomic::Ordering::Release);
        h.put("a", "1");
        assert_eq!(strict.events_until(0, 2).await, vec![2]);
        h.api
            .shared
            .leader
            .store(0, std::sync::atomic::Ordering::Release);
        let ended = tokio::time::timeout(Duration::from_secs(5), strict.rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.unwrap_err().message(), "etcdserver: no leader");
        h.put("a", "2");
        assert_eq!(relaxed.events_until(0, 3).await, vec![2, 3]);
    }

    /// etcd#15220: a progress response never reports a revision lower
    /// than an event already sent on the stream, and when it reports P,
    /// every event <= P of every watcher has been sent.
    #[tokio::test]
    async fn progress_never_reports_below_a_sent_event() {
        let mut h = Harness::new(8);
        let mut client = h.client();
        let mut expected: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        let keys = ["a", "b", "c"];
        for (id, key) in keys.iter().enumerate() {
            let mut c = create(key, 0);
            c.watch_id = id as i64 + 1;
            client.create(c).await;
            expected.insert(id as i64 + 1, BTreeSet::new());
        }
        let mut received: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        let mut max_event = 0;
        let mut progress_seen = 0;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..300 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let which = (rng % 3) as usize;
            // Some commits reach the watchers late (held), as between
            // commit and broadcast in the loop.
            let events = h.commit(put(keys[which], "v"));
            let revision = events[0].kv.mod_revision;
            expected
                .get_mut(&(which as i64 + 1))
                .unwrap()
                .insert(revision);
            // A progress request between commit and broadcast: the store
            // is ahead of what the stream has received.
            let progress = || {
                client.send(pb::watch_request::RequestUnion::ProgressRequest(
                    pb::WatchProgressRequest {},
                ))
            };
            if rng.is_multiple_of(5) {
                progress().await;
            }
            h.broadcast(events);
            if round % 7 == 0 {
                progress().await;
            }
            while let Ok(Some(Ok(response))) =
                tokio::time::timeout(Duration::from_millis(2), client.rx.recv()).await
            {
                if response.watch_id == INVALID_WATCH_ID {
                    let p = response.header.unwrap().revision;
                    assert!(p >= max_event, "progress {p} below sent event {max_event}");
                    assert!(p >= progress_seen, "progress went back");
                    progress_seen = p;
                    for (id, want) in &expected {
                        let got = received.entry(*id).or_default();
                        for r in want.range(..=p) {
                            assert!(
                                got.contains(r),
                                "progress {p} before event {r} of watcher {id}"
                            );
                        }
                    }
                } else {
                    for r in revisions(&response) {
                        assert!(received.entry(response.watch_id).or_default().insert(r));
                        max_event = max_event.max(r);
                    }
                }
            }
        }
        assert!(progress_seen > 0);
    }
}
