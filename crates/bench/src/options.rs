//! Command-line options of `concord bench` and their validation.
//!
//! [`BenchArgs`] is what clap parses (flag names follow etcd's
//! `tools/benchmark` where one exists: `--endpoints`, `--conns`,
//! `--clients`, `--total`, `--key-size`, `--val-size`, `--key-space-size`
//! is spelled `--key-space` here). [`BenchArgs::validate`] turns it into a
//! [`BenchConfig`] whose invariants the runner relies on:
//!
//! 1. at least one endpoint, connection and client;
//! 2. the run is bounded: `--total` or `--duration` (or both) is set, and
//!    `--duration` never exceeds [`MAX_DURATION`];
//! 3. every key of the key space fits in `--key-size` digits;
//! 4. `watch-latency` values are long enough to carry a timestamp.

use crate::error::BenchError;
use std::time::Duration;

/// Longest run accepted: a typo in `--duration` must not tie up a shared
/// machine for a day.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Per-request deadline by default: longer than etcd's own request timeout
/// (5 s plus twice the election timeout) so the server's answer, not ours,
/// is what the report shows.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of a `watch-latency` value taken by the send timestamp.
pub const STAMP_BYTES: usize = 8;

/// Most clients accepted: each is a task plus an HTTP/2 stream; beyond this
/// the client machine, not the server, is what gets measured.
pub const MAX_CLIENTS: usize = 100_000;

/// The operation each request performs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// `KV.Put` of one key.
    Put,
    /// Linearizable `KV.Range` of one key.
    Range,
    /// Serializable `KV.Range` of one key (served from the local replica).
    RangeSerializable,
    /// Compare-and-swap with `KV.Txn`: if the key's mod_revision is the one
    /// last seen, put; else read it and retry (one op = one swap).
    TxnCas,
    /// Puts whose events are delivered to `--watchers` watch streams; the
    /// latency is from the put's send (or scheduled) time to the event.
    WatchLatency,
    /// One keep-alive round trip on a `Lease.LeaseKeepAlive` stream.
    LeaseKeepalive,
    /// Local disk: append `--val-size` bytes and fdatasync, repeatedly.
    FsyncProbe,
    /// Local threads and disk: the least a replicated put does (client ->
    /// leader -> two followers, three concurrent syncs, first ack ->
    /// client), repeatedly.
    ChainProbe,
}

impl Op {
    /// The name used on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Range => "range",
            Op::RangeSerializable => "range-serializable",
            Op::TxnCas => "txn-cas",
            Op::WatchLatency => "watch-latency",
            Op::LeaseKeepalive => "lease-keepalive",
            Op::FsyncProbe => "fsync-probe",
            Op::ChainProbe => "chain-probe",
        }
    }
}

/// Flags of `concord bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Comma-separated gRPC endpoints (host:port or http://host:port).
    /// Connections are spread over them round-robin.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// gRPC connections (HTTP/2) to open; clients share them round-robin.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send in total (0: no count bound; then --duration is
    /// required).
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Time bound, e.g. 10s, 500ms, 2m (default: none, --total bounds).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Key length in bytes (keys are zero-padded decimal indexes).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value length in bytes (also the block size of fsync-probe).
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys used; each request picks one uniformly at random.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Pick keys in order (request i uses key i mod key-space) instead of
    /// at random: loads a key space exactly.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Open-loop offered load in requests per second (0: closed loop).
    /// Latency is then measured from each request's scheduled time.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// What each request does.
    #[arg(long, value_enum, default_value_t = Op::Put)]
    pub op: Op,
    /// Watch streams receiving the events (watch-latency).
    #[arg(long, default_value_t = 1)]
    pub watchers: usize,
    /// Lease TTL in seconds (lease-keepalive).
    #[arg(long, default_value_t = 60)]
    pub lease_ttl: i64,
    /// Per-request deadline, e.g. 10s.
    #[arg(long, value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
    /// Folder for the fsync-probe and chain-probe files (use the disk the data lives on).
    #[arg(long, default_value = ".")]
    pub probe_dir: std::path::PathBuf,
    /// Client threads (0: one per CPU). Unary ops give each thread its
    /// own share of the connections and their clients.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Seed of the key choice, so runs are repeatable.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Validated options (see the module invariants).
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `host:port` of each endpoint, scheme stripped.
    pub endpoints: Vec<String>,
    /// Connections.
    pub conns: usize,
    /// Clients.
    pub clients: usize,
    /// Count bound (`None`: unbounded by count).
    pub total: Option<u64>,
    /// Time bound (`None`: unbounded by time).
    pub duration: Option<Duration>,
    /// Key length.
    pub key_size: usize,
    /// Value length.
    pub val_size: usize,
    /// Distinct keys.
    pub key_space: u64,
    /// Keys in order rather than random.
    pub sequential_keys: bool,
    /// Interval between scheduled requests (`None`: closed loop).
    pub interval: Option<Duration>,
    /// Offered load, requests per second (0: closed loop).
    pub rate: f64,
    /// Operation.
    pub op: Op,
    /// Watch streams.
    pub watchers: usize,
    /// Lease TTL (s).
    pub lease_ttl: i64,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Folder of the fsync probe file.
    pub probe_dir: std::path::PathBuf,
    /// Client worker threads (at least 1).
    pub threads: usize,
    /// Seed of the key choice.
    pub seed: u64,
}

/// Parses `10s`, `250ms`, `2m`, `1.5s`, `100us` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Decimal digits needed to write `n`.
pub fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl BenchArgs {
    /// Checks the options and resolves defaults.
    pub fn validate(self) -> Result<BenchConfig, BenchError> {
        let bad = |s: String| Err(BenchError::Options(s));
        let endpoints: Vec<String> = self
            .endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        if endpoints.is_empty() && self.op != Op::FsyncProbe {
            return bad("--endpoints is empty".into());
        }
        if let Some(e) = endpoints.iter().find(|e| e.starts_with("https://")) {
            return bad(format!(
                "{e}: TLS endpoints are not supported by the bench yet"
            ));
        }
        if self.conns == 0 || self.clients == 0 {
            return bad("--conns and --clients must be at least 1".into());
        }
        if self.clients > MAX_CLIENTS {
            return bad(format!("--clients is at most {MAX_CLIENTS}"));
        }
        if self.total == 0 && self.duration.is_none() {
            return bad("the run must be bounded: set --total or --duration".into());
        }
        if let Some(d) = self.duration {
            if d.is_zero() || d > MAX_DURATION {
                return bad(format!(
                    "--duration must be in (0, {}s]",
                    MAX_DURATION.as_secs()
                ));
            }
        }
        if self.key_space == 0 {
            return bad("--key-space must be at least 1".into());
        }
        let needed = digits(self.key_space - 1);
        if self.key_size < needed {
            return bad(format!(
                "--key-size {} cannot hold {} distinct keys (needs {needed} digits)",
                self.key_size, self.key_space
            ));
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return bad("--rate must be a non-negative number".into());
        }
        if self.op == Op::WatchLatency && self.val_size < STAMP_BYTES {
            return bad(format!("watch-latency needs --val-size >= {STAMP_BYTES}"));
        }
        if self.op == Op::WatchLatency && self.watchers == 0 {
            return bad("watch-latency needs --watchers >= 1".into());
        }
        if matches!(self.op, Op::FsyncProbe | Op::ChainProbe) && self.val_size == 0 {
            return bad(format!("{} needs --val-size >= 1", self.op.name()));
        }
        if self.op == Op::LeaseKeepalive && self.lease_ttl <= 0 {
            return bad("--lease-ttl must be positive".into());
        }
        let interval = (self.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.rate));
        let threads = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(BenchConfig {
            endpoints,
            conns: self.conns,
            clients: self.clients,
            total: (self.total > 0).then_some(self.total),
            duration: self.duration,
            key_size: self.key_size,
            val_size: self.val_size,
            key_space: self.key_space,
            sequential_keys: self.sequential_keys,
            interval,
            rate: self.rate,
            op: self.op,
            watchers: self.watchers,
            lease_ttl: self.lease_ttl,
            request_timeout: self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            probe_dir: self.probe_dir,
            threads,
            seed: self.seed,
        })
    }
}

/// Parses and validates `concord bench` flags, for the crate's tests.
#[cfg(test)]
pub(crate) fn parse(argv: &[&str]) -> Result<BenchConfig, String> {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    let mut full = vec!["bench"];
    full.extend_from_slice(argv);
    let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
    cli.args.validate().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_etcd_benchmark_habits() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.endpoints, vec!["127.0.0.1:2379"]);
        assert_eq!((c.conns, c.clients), (1, 1));
        assert_eq!(c.total, Some(10_000));
        assert_eq!(c.duration, None);
        assert_eq!((c.key_size, c.val_size, c.key_space), (8, 256, 10_000));
        assert_eq!(c.op, Op::Put);
        assert!(c.interval.is_none());
        assert_eq!(c.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(c.threads >= 1);
    }

    #[test]
    fn endpoints_are_split_and_schemes_stripped() {
        let c = parse(&["--endpoints", "http://a:1/, b:2 ,,c:3"]).unwrap();
        assert_eq!(c.endpoints, vec!["a:1", "b:2", "c:3"]);
        assert!(parse(&["--endpoints", " , "]).is_err());
        assert!(parse(&["--endpoints", "https://a:1"]).is_err());
    }

    #[test]
    fn every_op_name_parses_back() {
        for op in [
            Op::Put,
            Op::Range,
            Op::RangeSerializable,
            Op::TxnCas,
            Op::WatchLatency,
            Op::LeaseKeepalive,
            Op::FsyncProbe,
        ] {
            assert_eq!(parse(&["--op", op.name()]).unwrap().op, op);
        }
        assert!(parse(&["--op", "delete"]).is_err());
    }

    #[test]
    fn rate_gives_the_schedule_interval() {
        let c = parse(&["--rate", "2000"]).unwrap();
        assert_eq!(c.interval, Some(Duration::from_micros(500)));
        assert!(parse(&["--rate", "-1"]).is_err());
        assert!(parse(&["--rate", "NaN"]).is_err());
    }

    #[test]
    fn the_run_must_be_bounded() {
        assert!(parse(&["--total", "0"]).is_err());
        let c = parse(&["--total", "0", "--duration", "5s"]).unwrap();
        assert_eq!((c.total, c.duration), (None, Some(Duration::from_secs(5))));
        assert!(parse(&["--duration", "0s"]).is_err());
        assert!(parse(&["--duration", "2h"]).is_err());
    }

    #[test]
    fn key_size_must_hold_the_key_space() {
        assert!(parse(&["--key-space", "1000000", "--key-size", "6"]).is_ok());
        assert!(parse(&["--key-space", "1000001", "--key-size", "6"]).is_err());
        assert!(parse(&["--key-space", "0"]).is_err());
        assert!(parse(&["--key-space", "1", "--key-size", "1"]).is_ok());
    }

    #[test]
    fn op_specific_limits() {
        assert!(parse(&["--op", "watch-latency", "--val-size", "7"]).is_err());
        assert!(parse(&["--op", "watch-latency", "--watchers", "0"]).is_err());
        assert!(parse(&["--op", "watch-latency", "--val-size", "8"]).is_ok());
        assert!(parse(&["--op", "lease-keepalive", "--lease-ttl", "0"]).is_err());
        assert!(parse(&["--op", "fsync-probe", "--val-size", "0"]).is_err());
        assert!(parse(&["--clients", "0"]).is_err());
        assert!(parse(&["--conns", "0"]).is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn digit_counts() {
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(999_999), 6);
        assert_eq!(digits(u64::MAX), 20);
    }
}
