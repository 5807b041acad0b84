//! The open loop's wait for a request's due time.
//!
//! tokio's timer wheel counts whole milliseconds and rounds a deadline up, so
//! `sleep_until(due)` wakes between a fraction of a millisecond and about two
//! milliseconds late. An open-loop run measures latency from the due time
//! (`schedule.rs`), so that lateness would be charged to the server: at 200
//! requests/s it made a 0.2 ms request read as 2 ms. A timerfd is a kernel
//! high-resolution timer and wakes within microseconds of its deadline.
//!
//! Invariant: [`DueTimer::wait_until`] never returns before `due`. When a
//! timerfd cannot be had, it falls back to tokio's timer, which keeps the
//! invariant and only loses precision.

use std::io;
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;

/// One client's timer (a timerfd registered with the runtime's reactor).
#[derive(Debug)]
pub struct DueTimer {
    timerfd: Option<AsyncFd<OwnedFd>>,
}

impl DueTimer {
    /// A timer on the current tokio runtime's reactor.
    pub fn new() -> DueTimer {
        let timerfd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .ok()
        .and_then(|fd| register(fd).ok());
        DueTimer { timerfd }
    }

    /// Waits until `due` (at once if it has passed).
    pub async fn wait_until(&mut self, due: Instant) {
        loop {
            let now = Instant::now();
            if now >= due {
                return;
            }
            let precise = match &self.timerfd {
                Some(timerfd) => wait_on(timerfd, due - now).await.is_ok(),
                None => false,
            };
            if !precise {
                self.timerfd = None;
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }
}

impl Default for DueTimer {
    fn default() -> DueTimer {
        DueTimer::new()
    }
}

/// Registers `timerfd` with the current runtime's reactor.
///
/// `AsyncFd::new` is deprecated because a generic `T` may hand out a raw fd
/// that someone else closes while it is registered. An `OwnedFd` cannot: it
/// is the fd's only owner, moved into the `AsyncFd`, and closed only when the
/// `AsyncFd` drops, after deregistering. That is the soundness condition the
/// unsafe `AsyncFd::register` asks for, met without `unsafe` in this crate.
#[allow(deprecated)]
fn register(timerfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(timerfd)
}

/// Arms `timerfd` to fire once after `left` and waits until it has.
async fn wait_on(timerfd: &AsyncFd<OwnedFd>, left: Duration) -> io::Result<()> {
    let spec = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            // An all-zero value disarms the timer instead of firing it.
            tv_nsec: i64::from(left.subsec_nanos().max(1)),
        },
    };
    timerfd_settime(timerfd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
    loop {
        let mut guard = timerfd.readable().await?;
        let mut expirations = [0u8; 8];
        match guard.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
            Ok(result) => return result.map(|_| ()),
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn never_wakes_before_the_due_time() {
        let mut timer = DueTimer::new();
        assert!(timer.timerfd.is_some(), "timerfd is available on Linux");
        for micros in [1u64, 50, 300, 1_500, 4_000] {
            let due = Instant::now() + Duration::from_micros(micros);
            timer.wait_until(due).await;
            assert!(Instant::now() >= due, "woke early for a {micros} µs wait");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_past_due_time_returns_and_leaves_the_timer_usable() {
        let mut timer = DueTimer::new();
        timer
            .wait_until(Instant::now() - Duration::from_millis(1))
            .await;
        let due = Instant::now() + Duration::from_micros(200);
        timer.wait_until(due).await;
        assert!(Instant::now() >= due);
        assert!(timer.timerfd.is_some(), "still on the precise path");
    }

    #[test]
    fn without_a_timerfd_falls_back_to_tokio() {
        // Without a timerfd the wait still never returns early.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut timer = DueTimer { timerfd: None };
            let due = Instant::now() + Duration::from_micros(700);
            timer.wait_until(due).await;
            assert!(Instant::now() >= due);
        });
    }
}
