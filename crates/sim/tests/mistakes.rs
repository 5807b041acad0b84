//! Teeth: each classic Raft mistake, switched on in the core, must be caught
//! by the very same checker that passes the correct core.
//!
//! The hook exists only because `concord-raft`'s `mistakes` feature is
//! enabled through this crate's dev-dependencies; the binaries never see it.
//! Each hunt may harshen the fault mix (more crashes, slower fsync, faster
//! elections), which is what makes its mistake observable, but the checks
//! are unchanged; a control test runs the same mixes on the correct core and
//! must find nothing at all, liveness included.
//!
//! A hunt counts only safety violations (election safety, log matching,
//! leader completeness, state machine safety, linearizability, durability):
//! a stalled cluster or a core assertion is not the evidence we want.

use concord_raft::{Mistakes, Raft};
use concord_sim::{report, run_seeds, Outcome, Params, SimOptions};

/// Seeds each hunt may use. Runs are deterministic, so each mistake is
/// caught at a fixed seed (printed, and well inside the budget); the budget
/// bounds the cost of a regression.
const SEED_BUDGET: u64 = 3_000;

/// Seeds per batch: the hunt stops at the first batch holding a catch.
const BATCH: u64 = 100;

/// Seeds of each control run (the correct core under the hunts' mixes).
const CONTROL_SEEDS: u64 = 150;

/// Worker threads: the target machine has two cores.
const THREADS: usize = 2;

/// Crash-heavy, slow-disk mix: many elections, and a wide window between a
/// write and its fsync. Unsynced writes are lost outright (no torn prefix
/// survives), which is the case the durability mistakes get wrong.
fn harsh(p: &mut Params) {
    p.crash_every_us = 120_000;
    p.down_us = (5_000, 60_000);
    p.fsync_us = (5_000, 60_000);
    p.torn_write = 0.0;
    p.partition_every_us = 200_000;
}

/// `harsh` with real elections only: pre-vote and check-quorum would hide
/// most of the same-term contests a lost vote needs.
fn harsh_elections(p: &mut Params) {
    harsh(p);
    p.pre_vote = false;
    p.check_quorum = false;
}

/// Figure 8 needs three leaders in quick succession, each failing before
/// its own entry reaches a majority: elections about three times faster
/// than the default mix (ticks of ~3 ms, still well above fsync and
/// latency), busy writers, and one entry per append so an old-term entry
/// can reach a majority ahead of the new leader's own.
fn figure8(p: &mut Params) {
    harsh_elections(p);
    p.crash_every_us = 60_000;
    p.down_us = (5_000, 40_000);
    p.partition_every_us = 60_000;
    p.partition_us = (20_000, 200_000);
    p.reorder = 0.0;
    p.clients = 5;
    p.think_us = (0, 5_000);
    p.read_ratio = 0.0;
    p.max_append_bytes = 1;
    p.max_inflight_appends = 1;
    p.tick_us.iter_mut().for_each(|t| *t = *t * 3 / 10);
    p.fsync_us = (2_000, 10_000);
    p.latency_us = (1_000, 5_000);
}

fn is_safety(outcome: &Outcome) -> bool {
    outcome.violation.as_ref().is_some_and(|v| {
        !["liveness", "panic", "message storm"]
            .iter()
            .any(|kind| v.what.starts_with(kind))
    })
}

/// Runs seeds from 0 until a safety violation; returns the lowest catching
/// seed. Panics if the budget runs out.
fn hunt(name: &str, hook: fn(&mut Raft), tune: fn(&mut Params), nodes: &[usize]) -> u64 {
    let mut template = SimOptions::new(0, nodes[0]);
    template.on_raft_created = Some(hook);
    template.tune = Some(tune);
    let mut first = 0;
    while first < SEED_BUDGET {
        let summary = run_seeds(first, BATCH, nodes, THREADS, template, None, 0);
        if let Some(caught) = summary.failures.iter().find(|o| is_safety(o)) {
            let what = &caught.violation.as_ref().expect("a failure").what;
            println!(
                "{name}: caught at seed {} ({} seeds, {:.0} seeds/s): {what}",
                caught.seed,
                caught.seed + 1,
                summary.seeds_per_second()
            );
            return caught.seed;
        }
        first += BATCH;
    }
    panic!("{name}: no safety violation in {SEED_BUDGET} seeds");
}

fn with(mistakes: Mistakes) -> impl Fn(&mut Raft) {
    move |r: &mut Raft| r.set_mistakes(mistakes)
}

#[test]
fn commit_by_counting_an_old_term_is_caught() {
    fn hook(r: &mut Raft) {
        with(Mistakes {
            commit_old_term_by_counting: true,
            ..Mistakes::default()
        })(r)
    }
    hunt("commit_old_term_by_counting", hook, figure8, &[3]);
}

#[test]
fn voting_before_the_vote_is_durable_is_caught() {
    fn hook(r: &mut Raft) {
        with(Mistakes {
            vote_before_durable: true,
            ..Mistakes::default()
        })(r)
    }
    hunt("vote_before_durable", hook, harsh_elections, &[3]);
}

#[test]
fn acknowledging_appends_before_fsync_is_caught() {
    fn hook(r: &mut Raft) {
        with(Mistakes {
            ack_append_before_fsync: true,
            ..Mistakes::default()
        })(r)
    }
    hunt("ack_append_before_fsync", hook, harsh, &[3]);
}

/// Control: the hunts' mixes on the correct core find nothing at all.
#[test]
fn hunting_mixes_pass_without_mistakes() {
    for tune in [harsh as fn(&mut Params), harsh_elections, figure8] {
        let mut template = SimOptions::new(0, 3);
        template.tune = Some(tune);
        let summary = run_seeds(0, CONTROL_SEEDS, &[3, 5], THREADS, template, None, 1);
        if let Some(f) = summary.failures.first() {
            panic!("{}", report(f, 60));
        }
    }
}
