//! The request schedule shared by all clients: which request comes next,
//! when it is due, and when the run stops issuing.
//!
//! Closed loop: a request is due the moment a client asks for it. Open loop:
//! request `i` is due at `start + i * interval`, whatever happened before,
//! and its latency is counted from that due time. A client that picks up a
//! request late (because every client was busy waiting for the server)
//! therefore charges the wait to the server, which is what a real user
//! arriving at that time would have seen.
//!
//! Invariants: ticket indexes are handed out once each, in order; no ticket
//! is handed out at or after the deadline or beyond the total.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One request to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// 0-based position in the run.
    pub index: u64,
    /// When it is due; latency is measured from here.
    pub due: Instant,
}

/// Hands out tickets to clients.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    interval: Option<Duration>,
    total: Option<u64>,
    deadline: Option<Instant>,
    next: AtomicU64,
}

impl Schedule {
    /// A schedule starting at `start`.
    pub fn new(
        start: Instant,
        interval: Option<Duration>,
        total: Option<u64>,
        duration: Option<Duration>,
    ) -> Schedule {
        Schedule {
            start,
            interval,
            total,
            deadline: duration.map(|d| start + d),
            next: AtomicU64::new(0),
        }
    }

    /// The next ticket, or `None` once the run is over (at `now`).
    pub fn take(&self, now: Instant) -> Option<Ticket> {
        if self.deadline.is_some_and(|d| now >= d) {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|t| index >= t) {
            return None;
        }
        let due = match self.interval {
            None => now,
            Some(interval) => self.due_time(index, interval),
        };
        if self.deadline.is_some_and(|d| due >= d) {
            return None;
        }
        Some(Ticket { index, due })
    }

    fn due_time(&self, index: u64, interval: Duration) -> Instant {
        let nanos = interval.as_nanos().saturating_mul(index as u128);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Open loop only: requests that were due before `now` but never issued
    /// because the run stopped (offered load above what was served).
    pub fn backlog(&self, now: Instant) -> u64 {
        let Some(interval) = self.interval else {
            return 0;
        };
        let end = self.deadline.map_or(now, |d| d.min(now));
        let elapsed = end.saturating_duration_since(self.start).as_nanos();
        let mut due = (elapsed / interval.as_nanos().max(1)) as u64;
        if let Some(total) = self.total {
            due = due.min(total);
        }
        // `next` counts every fetch, including refused ones past the end.
        let issued = self.next.load(Ordering::Relaxed).min(due);
        due - issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_loop_hands_out_total_tickets_due_now() {
        let start = Instant::now();
        let s = Schedule::new(start, None, Some(3), None);
        let now = start + Duration::from_millis(7);
        let got: Vec<_> = std::iter::from_fn(|| s.take(now)).collect();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|t| t.due == now));
        assert_eq!(
            got.iter().map(|t| t.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(s.take(now), None);
        assert_eq!(s.backlog(now), 0);
    }

    #[test]
    fn open_loop_due_times_follow_the_rate() {
        let start = Instant::now();
        let s = Schedule::new(start, Some(Duration::from_millis(2)), Some(4), None);
        let dues: Vec<_> = std::iter::from_fn(|| s.take(start))
            .map(|t| t.due)
            .collect();
        let offsets: Vec<_> = dues.iter().map(|d| *d - start).collect();
        assert_eq!(
            offsets,
            vec![0, 2, 4, 6]
                .into_iter()
                .map(Duration::from_millis)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn nothing_is_issued_at_or_after_the_deadline() {
        let start = Instant::now();
        let s = Schedule::new(start, None, None, Some(Duration::from_secs(1)));
        assert!(s.take(start + Duration::from_millis(999)).is_some());
        assert!(s.take(start + Duration::from_secs(1)).is_none());
        // Open loop: a ticket due at the deadline is refused even if asked early.
        let s = Schedule::new(
            start,
            Some(Duration::from_millis(500)),
            None,
            Some(Duration::from_secs(1)),
        );
        assert!(s.take(start).is_some());
        assert!(s.take(start).is_some());
        assert!(s.take(start).is_none());
    }

    #[test]
    fn backlog_counts_due_but_unissued_requests() {
        let start = Instant::now();
        let s = Schedule::new(
            start,
            Some(Duration::from_millis(10)),
            None,
            Some(Duration::from_secs(1)),
        );
        for _ in 0..30 {
            s.take(start).unwrap();
        }
        // 100 were due within the second; 30 were issued.
        assert_eq!(s.backlog(start + Duration::from_secs(5)), 70);
        // Bounded by the total, too.
        let s = Schedule::new(start, Some(Duration::from_millis(10)), Some(50), None);
        s.take(start).unwrap();
        assert_eq!(s.backlog(start + Duration::from_secs(5)), 49);
    }
}
