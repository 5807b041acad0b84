//! Latency histograms, error counts and the final report.
//!
//! Latencies are recorded in microseconds in an HDR histogram with
//! [`SIGNIFICANT_DIGITS`] significant digits (0.1% relative error at any
//! magnitude), so p99.9 of a run mixing 100 µs and 10 s answers is exact
//! enough and the memory per client stays small. Each client owns its
//! histogram; they are merged once at the end (no locks on the hot path).

use crate::options::{BenchConfig, Op};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Significant decimal digits kept by the histograms.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Longest latency the histogram holds without saturating (1 hour, in µs);
/// longer ones are clamped to it, which no request deadline allows anyway.
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// Longest error description kept as a kind (server messages can embed
/// keys or addresses; the start is what tells kinds apart).
pub const MAX_ERROR_KIND_CHARS: usize = 120;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(
            Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGNIFICANT_DIGITS)
                .expect("constant bounds are valid"),
        )
    }
}

impl Latencies {
    /// Records one latency (sub-microsecond ones count as 1 µs).
    pub fn record(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_TRACKABLE_US);
        self.0
            .record(us)
            .expect("clamped into the histogram's bounds");
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        self.0.add(&other.0).expect("histograms share their bounds");
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The summary in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1e3;
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            min: ms(self.0.min()),
            mean: self.0.mean() / 1e3,
            p50: ms(self.0.value_at_quantile(0.50)),
            p90: ms(self.0.value_at_quantile(0.90)),
            p99: ms(self.0.value_at_quantile(0.99)),
            p999: ms(self.0.value_at_quantile(0.999)),
            max: ms(self.0.max()),
        }
    }
}

/// Latency percentiles in milliseconds (all 0 with no samples).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Smallest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Failed requests grouped by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorCounts(BTreeMap<String, u64>);

impl ErrorCounts {
    /// Counts one error of `kind` (cut to [`MAX_ERROR_KIND_CHARS`]).
    pub fn add(&mut self, kind: &str) {
        let kind: String = kind.chars().take(MAX_ERROR_KIND_CHARS).collect();
        *self.0.entry(kind).or_default() += 1;
    }

    /// Counts `n` errors of `kind`.
    pub fn add_n(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.0.entry(kind.to_string()).or_default() += n;
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for (kind, n) in &other.0 {
            *self.0.entry(kind.clone()).or_default() += n;
        }
    }

    /// Total errors.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Kinds and counts, by kind.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, n)| (k.as_str(), *n))
    }
}

/// The kind of a gRPC failure: its code and the server's message.
pub fn status_kind(status: &concord_etcd_proto::tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// What one client measured.
#[derive(Debug, Default, Clone)]
pub struct ClientTally {
    /// Latency of successful requests.
    pub latencies: Latencies,
    /// Failures by kind.
    pub errors: ErrorCounts,
    /// A second latency of the same requests, if the op has one (the put
    /// latency of `watch-latency`).
    pub secondary: Latencies,
    /// `txn-cas`: failed compares, each retried with the revision it read.
    pub cas_misses: u64,
}

impl ClientTally {
    /// Adds another client's tally.
    pub fn merge(&mut self, other: &ClientTally) {
        self.latencies.merge(&other.latencies);
        self.errors.merge(&other.errors);
        self.secondary.merge(&other.secondary);
        self.cas_misses += other.cas_misses;
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Operation.
    pub op: Op,
    /// Endpoints, as given.
    pub endpoints: Vec<String>,
    /// Connections.
    pub conns: usize,
    /// Clients.
    pub clients: usize,
    /// Offered load (0: closed loop).
    pub rate: f64,
    /// Key and value sizes.
    pub key_size: usize,
    /// Value size.
    pub val_size: usize,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Failures by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// Open loop: requests due but never sent because the run ended.
    pub backlog: u64,
    /// From the first request to the last answer, in seconds.
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub ops_per_s: f64,
    /// Latency of successful requests, ms (for watch-latency: put send to
    /// event received; for fsync-probe: write + fdatasync).
    pub latency_ms: LatencySummary,
    /// watch-latency only: the puts' own latency, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub put_latency_ms: Option<LatencySummary>,
    /// watch-latency only: successful puts (`ok` counts events received,
    /// one per put per watcher).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub puts_ok: Option<u64>,
    /// txn-cas only: failed compares (extra Txn round trips) behind the
    /// `ok` swaps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_misses: Option<u64>,
}

impl Report {
    /// Builds the report of a run that took `elapsed`.
    pub fn new(
        config: &BenchConfig,
        tally: &ClientTally,
        backlog: u64,
        elapsed: Duration,
    ) -> Report {
        let ok = tally.latencies.count();
        let elapsed_s = elapsed.as_secs_f64();
        Report {
            op: config.op,
            // The probes talk to no server.
            endpoints: if matches!(config.op, Op::FsyncProbe | Op::ChainProbe) {
                Vec::new()
            } else {
                config.endpoints.clone()
            },
            conns: config.conns,
            clients: config.clients,
            rate: config.rate,
            key_size: config.key_size,
            val_size: config.val_size,
            ok,
            errors: tally.errors.total(),
            error_kinds: tally
                .errors
                .iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            backlog,
            elapsed_s,
            ops_per_s: throughput(ok, elapsed),
            latency_ms: tally.latencies.summary(),
            put_latency_ms: (config.op == Op::WatchLatency).then(|| tally.secondary.summary()),
            puts_ok: (config.op == Op::WatchLatency).then(|| tally.secondary.count()),
            cas_misses: (config.op == Op::TxnCas).then_some(tally.cas_misses),
        }
    }

    /// The one-line JSON form (the last line the bench prints).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let load = if self.rate > 0.0 {
            format!("open loop at {} req/s", self.rate)
        } else {
            "closed loop".to_string()
        };
        if self.op == Op::FsyncProbe {
            let _ = writeln!(s, "op fsync-probe  {} B appends + fdatasync", self.val_size);
        } else {
            let _ = writeln!(
                s,
                "op {}  endpoints {}  conns {}  clients {}  {}",
                self.op.name(),
                self.endpoints.join(","),
                self.conns,
                self.clients,
                load
            );
        }
        let _ = writeln!(
            s,
            "ok {}  errors {}  elapsed {:.3} s  throughput {:.1} ops/s",
            self.ok, self.errors, self.elapsed_s, self.ops_per_s
        );
        let line = |name: &str, l: &LatencySummary| {
            format!(
                "{name} ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            )
        };
        let _ = writeln!(s, "{}", line("latency", &self.latency_ms));
        if let Some(put) = &self.put_latency_ms {
            let _ = writeln!(s, "{}", line("put latency", put));
        }
        if let Some(puts) = self.puts_ok {
            let _ = writeln!(
                s,
                "puts ok {puts} (ok counts events received by all watchers)"
            );
        }
        if let Some(misses) = self.cas_misses {
            let _ = writeln!(s, "failed compares retried: {misses}");
        }
        if self.backlog > 0 {
            let _ = writeln!(
                s,
                "warning: {} requests were due but never sent: the offered load exceeds what was served",
                self.backlog
            );
        }
        for (kind, n) in &self.error_kinds {
            let _ = writeln!(s, "error x{n}: {kind}");
        }
        s
    }
}

/// Successful requests per second over `elapsed` (0 for an empty run).
pub fn throughput(ok: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        ok as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::BenchArgs;
    use clap::Parser;

    fn config(op: &str) -> BenchConfig {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        Cli::parse_from(["bench", "--op", op])
            .args
            .validate()
            .unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 1e-3 + 1e-9
    }

    #[test]
    fn percentiles_of_one_to_a_thousand_ms() {
        let mut l = Latencies::default();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(l.count(), 1000);
        assert!(close(s.min, 1.0), "{s:?}");
        assert!(close(s.p50, 500.0), "{s:?}");
        assert!(close(s.p90, 900.0), "{s:?}");
        assert!(close(s.p99, 990.0), "{s:?}");
        assert!(close(s.p999, 999.0), "{s:?}");
        assert!(close(s.max, 1000.0), "{s:?}");
        assert!(close(s.mean, 500.5), "{s:?}");
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        let mut all = Latencies::default();
        for us in 1..=500u64 {
            let d = Duration::from_micros(us * 37);
            if us % 3 == 0 {
                a.record(d)
            } else {
                b.record(d)
            }
            all.record(d);
        }
        a.merge(&b);
        assert_eq!(a.summary(), all.summary());
    }

    #[test]
    fn extremes_are_clamped_not_lost() {
        let mut l = Latencies::default();
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(10 * 3600));
        assert_eq!(l.count(), 2);
        let s = l.summary();
        assert!(close(s.min, 0.001));
        assert!(close(s.max, MAX_TRACKABLE_US as f64 / 1e3));
    }

    #[test]
    fn empty_histogram_summarizes_to_zero() {
        assert_eq!(Latencies::default().summary(), LatencySummary::default());
    }

    #[test]
    fn errors_group_by_kind_and_merge() {
        let mut a = ErrorCounts::default();
        a.add("Unavailable: etcdserver: no leader");
        a.add("Unavailable: etcdserver: no leader");
        a.add(&"x".repeat(500));
        let mut b = ErrorCounts::default();
        b.add("client timeout");
        b.add_n("client timeout", 2);
        b.add_n("nothing", 0);
        a.merge(&b);
        let kinds: Vec<_> = a.iter().collect();
        assert_eq!(kinds.len(), 3);
        assert_eq!(a.total(), 6);
        assert!(kinds
            .iter()
            .all(|(k, _)| k.chars().count() <= MAX_ERROR_KIND_CHARS));
        assert!(kinds.contains(&("client timeout", 3)));
    }

    #[test]
    fn throughput_is_ok_over_elapsed() {
        assert!(close(throughput(5000, Duration::from_millis(2500)), 2000.0));
        assert_eq!(throughput(10, Duration::ZERO), 0.0);
    }

    #[test]
    fn report_counts_and_json_line() {
        let cfg = config("txn-cas");
        let mut tally = ClientTally::default();
        for _ in 0..300 {
            tally.latencies.record(Duration::from_millis(2));
        }
        tally.errors.add("client timeout");
        tally.cas_misses = 12;
        let r = Report::new(&cfg, &tally, 0, Duration::from_secs(3));
        assert_eq!((r.ok, r.errors), (300, 1));
        assert!(close(r.ops_per_s, 100.0));
        assert_eq!(r.cas_misses, Some(12));
        assert!(r.put_latency_ms.is_none());
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["op"], "txn-cas");
        assert_eq!(json["ok"], 300);
        assert_eq!(json["error_kinds"]["client timeout"], 1);
        assert!(close(json["latency_ms"]["p50"].as_f64().unwrap(), 2.0));
        assert!(!r.to_json().contains('\n'));
        assert!(r.to_text().contains("error x1: client timeout"));
    }

    #[test]
    fn watch_report_has_put_latency() {
        let cfg = config("watch-latency");
        let r = Report::new(&cfg, &ClientTally::default(), 5, Duration::from_secs(1));
        assert!(r.put_latency_ms.is_some());
        assert!(r.cas_misses.is_none());
        assert!(r.to_text().contains("5 requests were due but never sent"));
    }
}
