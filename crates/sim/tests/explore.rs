use concord_raft::{Mistakes, Raft};
use concord_sim::{run_seeds, Params, SimOptions};

fn hook(r: &mut Raft) {
    let m = std::env::var("M").unwrap_or_default();
    r.set_mistakes(Mistakes { commit_old_term_by_counting: m == "c", vote_before_durable: m == "v", ack_append_before_fsync: m == "a" });
}
fn harsh(p: &mut Params) {
    p.crash_every_us = 120_000;
    p.down_us = (5_000, 60_000);
    p.fsync_us = (5_000, 60_000);
    p.torn_write = 0.0;
    p.partition_every_us = 200_000;
}
fn base(p: &mut Params) {
    p.crash_every_us = 120_000;
    p.down_us = (5_000, 60_000);
    p.fsync_us = (5_000, 60_000);
    p.torn_write = 0.0;
    p.partition_every_us = 200_000;
    p.max_append_bytes = 1;
    p.max_inflight_appends = 1;
}
fn f(p: &mut Params) {
    base(p);
    p.pre_vote = false; p.check_quorum = false;
    p.crash_every_us = 60_000; p.down_us = (5_000, 40_000);
    p.partition_every_us = 60_000; p.partition_us = (20_000, 200_000);
    p.fsync_us = (5_000, 30_000); p.latency_us = (2_000, 10_000); p.reorder = 0.0;
    p.clients = 5; p.think_us = (0, 5_000); p.read_ratio = 0.0;
}
fn h(p: &mut Params) { f(p); p.tick_us.iter_mut().for_each(|t| *t /= 2); p.fsync_us = (2_000, 10_000); p.latency_us = (1_000, 5_000); }
fn h2(p: &mut Params) { h(p); p.tick_us.iter_mut().for_each(|t| *t = *t * 3 / 5); }
fn v1(p: &mut Params) { harsh(p); p.pre_vote = false; p.check_quorum = false; p.election_ticks = (10, 11); }
fn v2(p: &mut Params) { v1(p); p.crash_every_us = 50_000; p.down_us = (1_000, 10_000); p.fsync_us = (10_000, 40_000); }
fn k(p: &mut Params) { f(p); p.pre_vote = true; p.check_quorum = true; }
#[test]
fn explore() {
    for (name, tune) in [("v1", v1 as fn(&mut Params)), ("v2", v2)] {
        for nodes in [3usize, 5] {
            let mut t = SimOptions::new(0, 3);
            if std::env::var("NOHOOK").is_err() { t.on_raft_created = Some(hook); }
            t.tune = Some(tune);
            let s = run_seeds(0, 600, &[nodes], 2, t, None, 0);
            let kinds: Vec<String> = s.failures.iter().take(6).map(|f| f.violation.as_ref().unwrap().what.chars().take(40).collect()).collect();
            println!("{name} n={nodes}: {} / {} ({:.0}/s) first={:?} {:?}", s.failures.len(), s.seeds, s.seeds_per_second(), s.failures.first().map(|f| f.seed), kinds);
        }
    }
}

#[test]
fn replay() {
    let Ok(seed) = std::env::var("SEED") else { return };
    let mut t = SimOptions::new(seed.parse().unwrap(), std::env::var("NODES").unwrap().parse().unwrap());
    if std::env::var("NOHOOK").is_err() { t.on_raft_created = Some(hook); }
    t.tune = Some(h);
    t.trace = true;
    let o = concord_sim::run(t);
    println!("{}", concord_sim::report(&o, 300));
}
