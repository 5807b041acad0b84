//! The replica loop's inbox: many senders (API tasks, the peer transport,
//! the snapshotter), one receiver, the loop thread.
//!
//! Why not a channel crate: the loop takes everything queued at once, in one
//! lock, and sleeps in the kernel when there is nothing to do. The channel
//! it replaces spun with `sched_yield` before parking; on a 2-core machine
//! running three members and a load generator each yield gave away a whole
//! time slice (about 1 s of every 15 s of the loop thread under load).
//!
//! Invariants:
//! 1. Items are received in the order they were sent (per sender and, as
//!    the queue is one `VecDeque` behind one lock, globally).
//! 2. A sender wakes the receiver only when it is asleep, so a busy loop is
//!    not charged a futex call per request.
//! 3. Once the receiver is dropped every send fails and hands the item back,
//!    so callers answer "stopped" instead of waiting for a deadline.
//! 4. The receiver sleeps in `poll(2)` on an eventfd, so it can wait for
//!    other file descriptors in the same sleep (the replica loop's inbound
//!    peer sockets): one wake-up, whichever comes first. A send to a
//!    sleeping receiver writes the eventfd; the receiver resets it only
//!    while holding the lock with the queue observed, so no wake is lost.

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct State<T> {
    items: VecDeque<T>,
    receiver_asleep: bool,
    receiver_alive: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Readable while a wake-up is pending (invariant 4).
    wake: OwnedFd,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the queue half
        // updated (every critical section is one push or one drain).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side; cheap to clone.
pub struct InboxSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for InboxSender<T> {
    fn clone(&self) -> Self {
        InboxSender {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The receiving side, owned by the loop thread.
pub struct InboxReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// The receiver is gone; the item comes back.
#[derive(Debug)]
pub struct Closed<T>(pub T);

/// Creates an unbounded inbox. It is bounded in practice by the callers:
/// every API request waits for its answer and the API limits requests in
/// flight (see `replica` invariant 3).
///
/// # Panics
/// If the kernel refuses an eventfd (out of file descriptors at start).
pub fn inbox<T>() -> (InboxSender<T>, InboxReceiver<T>) {
    let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .expect("eventfd for the replica inbox");
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            receiver_asleep: false,
            receiver_alive: true,
        }),
        wake,
    });
    (
        InboxSender {
            shared: Arc::clone(&shared),
        },
        InboxReceiver { shared },
    )
}

impl<T> InboxSender<T> {
    /// Queues `item` for the loop.
    pub fn send(&self, item: T) -> Result<(), Closed<T>> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(Closed(item));
        }
        state.items.push_back(item);
        let wake = state.receiver_asleep;
        state.receiver_asleep = false;
        drop(state);
        if wake {
            // Cannot fail but by overflowing the counter, and then a wake
            // is pending anyway.
            let _ = rustix::io::write(&self.shared.wake, &1u64.to_ne_bytes());
        }
        Ok(())
    }
}

impl<T> InboxReceiver<T> {
    /// Moves up to `max` queued items into `out`, waiting until `deadline`
    /// if there are none. Returns how many were moved (0 at the deadline).
    pub fn recv_until(&self, out: &mut Vec<T>, max: usize, deadline: Instant) -> usize {
        self.recv_or_readable(out, max, deadline, &[], &mut Vec::new())
    }

    /// Like [`recv_until`](Self::recv_until), but also returns, without
    /// an item, as soon as one of `others` is readable (or closed).
    /// `readable[i]` tells whether `poll(2)` reported `others[i]`; when the
    /// call returns items without sleeping, all are false, and a
    /// descriptor may be readable all the same.
    pub fn recv_or_readable(
        &self,
        out: &mut Vec<T>,
        max: usize,
        deadline: Instant,
        others: &[BorrowedFd<'_>],
        readable: &mut Vec<bool>,
    ) -> usize {
        readable.clear();
        readable.resize(others.len(), false);
        let mut state = self.shared.lock();
        loop {
            if !state.items.is_empty() {
                let n = state.items.len().min(max);
                out.extend(state.items.drain(..n));
                return n;
            }
            let now = Instant::now();
            if now >= deadline {
                return 0;
            }
            state.receiver_asleep = true;
            drop(state);
            let (woken, others_ready) = self.sleep(deadline - now, others, readable);
            state = self.shared.lock();
            state.receiver_asleep = false;
            if woken {
                // A send from now on sees the receiver awake and does not
                // write; one before wrote already: resetting with the lock
                // held loses nothing (invariant 4). A write that lands
                // after this read costs one spurious wake, no more.
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(&self.shared.wake, &mut counter);
            }
            if others_ready && state.items.is_empty() {
                return 0;
            }
        }
    }

    /// Sleeps in `poll` until the eventfd or one of `others` is readable
    /// or `timeout` passes. Returns whether the eventfd was readable and
    /// whether any of `others` was (marked in `readable`).
    fn sleep(
        &self,
        timeout: Duration,
        others: &[BorrowedFd<'_>],
        readable: &mut [bool],
    ) -> (bool, bool) {
        let mut fds = Vec::with_capacity(others.len() + 1);
        fds.push(self.shared.wake.as_fd());
        fds.extend_from_slice(others);
        let mut ready = Vec::new();
        poll_readable(&fds, Some(timeout), &mut ready);
        readable.copy_from_slice(&ready[1..]);
        (ready[0], ready[1..].contains(&true))
    }

    /// Like [`recv_until`](Self::recv_until) with a timeout.
    pub fn recv_timeout(&self, out: &mut Vec<T>, max: usize, timeout: Duration) -> usize {
        self.recv_until(out, max, Instant::now() + timeout)
    }
}

/// Waits at most `timeout` (`None`: forever) until one of `fds` has input
/// or hung up, and sets `readable[i]` for each that has. An error (EINTR
/// and the like) marks them all readable: a needless read costs one
/// `EAGAIN`, a missed one would stall the connection.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>, readable: &mut Vec<bool>) {
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .collect();
    // A timeout too large for a Timespec is as good as forever.
    let timeout = timeout.and_then(|t| Timespec::try_from(t).ok());
    let ok = rustix::event::poll(&mut polled, timeout.as_ref()).is_ok();
    readable.clear();
    readable.extend(polled.iter().map(|fd| !ok || !fd.revents().is_empty()));
}

impl<T> Drop for InboxReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        // Queued items are dropped here, which drops their reply senders:
        // their waiters see "stopped" at once.
        state.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_and_in_batches_of_at_most_max() {
        let (tx, rx) = inbox();
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(rx.recv_timeout(&mut out, 4, Duration::ZERO), 4);
        assert_eq!(rx.recv_timeout(&mut out, 100, Duration::ZERO), 6);
        assert_eq!(out, (0..10).collect::<Vec<_>>());
        assert_eq!(rx.recv_timeout(&mut out, 100, Duration::from_millis(5)), 0);
    }

    #[test]
    fn a_sleeping_receiver_is_woken_by_a_send_from_another_thread() {
        let (tx, rx) = inbox();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(7u32).unwrap();
        });
        let mut out = Vec::new();
        // Far longer than the sender's delay: returning at all with the
        // item shows the wake-up (a missed one would time out with 0).
        let n = rx.recv_timeout(&mut out, 10, Duration::from_secs(30));
        assert_eq!((n, out), (1, vec![7]));
        sender.join().unwrap();
    }

    #[test]
    fn a_readable_descriptor_ends_the_wait_without_an_item() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let (tx, rx) = inbox::<u32>();
        let (mut writer, idle) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_quiet_writer, quiet) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut out = Vec::new();
        let mut readable = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        writer.write_all(b"x").unwrap();
        let n = rx.recv_or_readable(
            &mut out,
            10,
            deadline,
            &[quiet.as_fd(), idle.as_fd()],
            &mut readable,
        );
        assert_eq!((n, readable.clone()), (0, vec![false, true]));

        // With nothing readable, an item still wakes the wait, and queued
        // items come first without sleeping.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(9).unwrap();
            tx
        });
        let n = rx.recv_or_readable(&mut out, 10, deadline, &[quiet.as_fd()], &mut readable);
        assert_eq!((n, &out, readable.clone()), (1, &vec![9], vec![false]));
        let tx = sender.join().unwrap();
        tx.send(10).unwrap();
        let n = rx.recv_or_readable(&mut out, 10, deadline, &[quiet.as_fd()], &mut readable);
        assert_eq!((n, out), (1, vec![9, 10]));
    }

    #[test]
    fn sends_fail_after_the_receiver_is_dropped() {
        let (tx, rx) = inbox();
        tx.send(1).unwrap();
        drop(rx);
        assert!(matches!(tx.send(2), Err(Closed(2))));
    }
}
