//! The process's memory allocator: mimalloc, and the one setting of it that
//! Concord changes. This is the only module of the workspace that uses
//! `unsafe`, for the two calls into mimalloc's C API below.
//!
//! Invariant: [`tune`] runs first thing in `main`, and a user's own
//! `MIMALLOC_PURGE_DELAY` in the environment always wins over it.

/// mimalloc instead of glibc's malloc: the hot paths allocate and free many
/// small buffers across threads (a request on a tokio worker, its command on
/// the replica loop, its record in the WAL writer), where glibc spent 11% of
/// the loop's time in `_int_malloc`/`unlink_chunk`/`malloc_consolidate`
/// (BENCHMARKS.md, "Where Concord's time goes").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long memory that mimalloc holds free stays mapped before it is given
/// back to the OS, in milliseconds (mimalloc's default: 1,000). Why longer:
/// under a steady write load a member frees and re-allocates the same
/// amount within seconds (the storage engine's page buffers, the log
/// between snapshots), and with a 1 s delay every cycle returned the memory
/// and then faulted it in again, zeroing each page (10% of a follower's CPU
/// at 64 clients was `clear_page`). With 30 s: no page faults under load,
/// 4-8% less CPU per put and 4-7% more puts/s at 64 clients (interleaved
/// runs, BENCHMARKS.md session 10); an idle member still returns what it
/// freed after 30 s.
pub const PURGE_DELAY_MS: i64 = 30_000;

/// The variable through which mimalloc reads the same setting.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (include/mimalloc.h);
/// `purge_delay_option_is_the_one_documented` pins it to its default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies [`PURGE_DELAY_MS`] unless the environment sets it already.
pub fn tune() {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        set_purge_delay(PURGE_DELAY_MS);
    }
}

fn set_purge_delay(ms: i64) {
    // SAFETY: mi_option_set only stores a number in mimalloc's option
    // table (an atomic write), for an option index that exists (checked by
    // the test below); the purge logic reads it on each decision.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms as std::ffi::c_long)
    }
}

#[cfg(test)]
fn purge_delay() -> i64 {
    // SAFETY: as above, a read of the same option.
    #[allow(unsafe_code)]
    let ms = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    ms as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_option_is_the_one_documented() {
        // Before anything sets it, the option holds mimalloc 3's documented
        // default for purge_delay (or what the environment says): a wrong
        // index would name another option with another value.
        let expected = std::env::var(PURGE_DELAY_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000);
        assert_eq!(purge_delay(), expected);
        set_purge_delay(PURGE_DELAY_MS);
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }
}
