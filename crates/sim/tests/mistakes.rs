//! Teeth: each classic Raft mistake, switched on in the core, must be caught
//! by the very same checker that passes the correct core.
//!
//! The hook exists only because `concord-raft`'s `mistakes` feature is
//! enabled through this crate's dev-dependencies; the binaries never see it.
//! Each test may harshen the fault mix (more crashes, slower fsync), which is
//! what makes the mistake observable, but the checks are unchanged.

use concord_raft::{Mistakes, Raft};
use concord_sim::{report, run_seeds, Params, SimOptions};

/// Seeds each hunt may use. Every mistake is found far sooner (see the
/// printed seed counts); the budget only bounds a regression's cost.
const SEED_BUDGET: u64 = 3_000;

/// Seeds of the control run (the correct core under the same mixes).
const CONTROL_SEEDS: u64 = 300;

/// Worker threads: the target machine has two cores.
const THREADS: usize = 2;

/// Crash-heavy, slow-disk mix shared by the hunts: many elections, and a
/// wide window between a write and its fsync.
fn harsh(p: &mut Params) {
    p.crash_every_us = 120_000;
    p.down_us = (5_000, 60_000);
    p.fsync_us = (5_000, 60_000);
    p.torn_write = 0.0;
    p.partition_every_us = 200_000;
}

fn hunt(name: &str, hook: fn(&mut Raft), tune: fn(&mut Params), nodes: &[usize]) {
    let mut template = SimOptions::new(0, 3);
    template.on_raft_created = Some(hook);
    template.tune = Some(tune);
    let summary = run_seeds(0, SEED_BUDGET, nodes, THREADS, template, None, 1);
    let first = summary
        .failures
        .first()
        .unwrap_or_else(|| panic!("{name}: no violation in {} seeds", summary.seeds));
    let v = first.violation.as_ref().expect("failures have violations");
    println!(
        "{name}: caught at seed {} ({} seeds run, {:.0} seeds/s): {}",
        first.seed,
        summary.seeds,
        summary.seeds_per_second(),
        v.what
    );
    // The catch must come from a cluster-wide property, not from a core
    // assertion tripping over the damage.
    assert!(!v.what.starts_with("panic"), "{}", report(first, 0));
}

#[test]
fn commit_by_counting_an_old_term_is_caught() {
    fn hook(r: &mut Raft) {
        r.set_mistakes(Mistakes {
            commit_old_term_by_counting: true,
            ..Mistakes::default()
        });
    }
    fn tune(p: &mut Params) {
        harsh(p);
        // One entry per append, so a follower can hold an old-term entry
        // without the new leader's entry that would commit it legitimately.
        p.max_append_bytes = 1;
        p.max_inflight_appends = 1;
    }
    hunt("commit_old_term_by_counting", hook, tune, &[5]);
}

#[test]
fn voting_before_the_vote_is_durable_is_caught() {
    fn hook(r: &mut Raft) {
        r.set_mistakes(Mistakes {
            vote_before_durable: true,
            ..Mistakes::default()
        });
    }
    fn tune(p: &mut Params) {
        harsh(p);
        p.pre_vote = false;
        p.check_quorum = false;
    }
    hunt("vote_before_durable", hook, tune, &[3, 5]);
}

#[test]
fn acknowledging_appends_before_fsync_is_caught() {
    fn hook(r: &mut Raft) {
        r.set_mistakes(Mistakes {
            ack_append_before_fsync: true,
            ..Mistakes::default()
        });
    }
    hunt("ack_append_before_fsync", hook, harsh, &[3, 5]);
}

/// Control: the harsh mixes alone, with the correct core, find nothing.
#[test]
fn harsh_mix_passes_without_mistakes() {
    fn one_entry(p: &mut Params) {
        harsh(p);
        p.max_append_bytes = 1;
        p.max_inflight_appends = 1;
    }
    for tune in [harsh as fn(&mut Params), one_entry] {
        let mut template = SimOptions::new(0, 3);
        template.tune = Some(tune);
        let summary = run_seeds(0, CONTROL_SEEDS, &[3, 5], THREADS, template, None, 1);
        if let Some(f) = summary.failures.first() {
            panic!("{}", report(f, 60));
        }
    }
}
