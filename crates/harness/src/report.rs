//! # Reports: `verdict.txt` and the HTML summary
//!
//! `verdict.txt` starts with the verdict alone on its first line
//! (`linearizable`, `not linearizable`, `unknown`), so scripts can read it
//! with `head -1`; the details follow. The HTML summary shows the run's
//! settings, operations per second by outcome against the faults in force
//! (one band per nemesis), the per-key verdicts and the nemesis log. For a
//! non-linearizable history the page opens with the failing operation in
//! short (what completed just before it, what ran concurrently), then
//! this summary, then the checker's timeline of the smallest failing
//! piece.
//!
//! Invariants: every page is self-contained (inline SVG and CSS, no
//! script) and every string that came from the run is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use concord_check::{Explanation, Operation, Outcome, Verdict};

use crate::nemesis::{NemesisKind, NemesisLog};
use crate::run::{Checked, LockSummary, OpCounts, RunConfig};
use crate::workload::{ErrorTally, SetSummary, WorkloadKind};

/// How an operation ended, for the throughput chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    /// `ok`.
    Ok,
    /// `fail`.
    Fail,
    /// `info`.
    Info,
}

/// One operation on the throughput chart: its invocation and outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Invocation, ns since the run started.
    pub call: u64,
    /// How it ended.
    pub outcome: MarkKind,
}

/// The chart marks of a history.
pub fn marks<I, O>(history: &[Operation<I, O>]) -> Vec<Mark> {
    history
        .iter()
        .map(|op| Mark {
            call: op.call.0,
            outcome: match op.outcome {
                Outcome::Ok(_) => MarkKind::Ok,
                Outcome::Fail => MarkKind::Fail,
                Outcome::Info => MarkKind::Info,
            },
        })
        .collect()
}

/// Fencing violations listed before eliding.
const VIOLATIONS_LISTED_MAX: usize = 10;

fn lock_lines(lock: &LockSummary) -> Vec<String> {
    let mut lines = vec![
        format!(
            "lock: {} acquisitions with a known token, {} holders stalled past their lease",
            lock.acquired, lock.stalls
        ),
        format!(
            "fenced writes: {} applied, {} refused by the fence, {} refused before the log, {} unknown",
            lock.applied, lock.refused, lock.failed, lock.unknown
        ),
    ];
    if lock.violations.is_empty() {
        lines
            .push("fencing: no stale token accepted (real time, and in revision order)".to_owned());
    } else {
        lines.push(format!(
            "fencing: STALE TOKENS ACCEPTED ({} violations)",
            lock.violations.len()
        ));
        for v in lock.violations.iter().take(VIOLATIONS_LISTED_MAX) {
            lines.push(format!("  {v}"));
        }
        if lock.violations.len() > VIOLATIONS_LISTED_MAX {
            lines.push(format!(
                "  ... {} more",
                lock.violations.len() - VIOLATIONS_LISTED_MAX
            ));
        }
    }
    lines
}

fn operations_line(config: &RunConfig, counts: &OpCounts) -> String {
    let mut line = format!(
        "{} ({} ok, {} fail, {} info); ",
        counts.total(),
        counts.ok,
        counts.fail,
        counts.info
    );
    match config.workload {
        WorkloadKind::Lock => line.push_str(&format!(
            "{} acquires, {} releases, {} fenced writes, {} reads",
            counts.acquires, counts.releases, counts.writes, counts.reads
        )),
        _ => line.push_str(&format!(
            "{} reads, {} writes, {} cas",
            counts.reads, counts.writes, counts.cas
        )),
    }
    line
}

/// Width of the throughput chart's plot area.
const CHART_WIDTH_PX: f64 = 900.0;
/// Height of the throughput bars' area.
const CHART_HEIGHT_PX: f64 = 160.0;
/// Height of one nemesis band under the bars.
const BAND_HEIGHT_PX: f64 = 16.0;
/// Room on the left for labels.
const CHART_MARGIN_LEFT_PX: f64 = 70.0;
/// Keys listed by name in `verdict.txt` and the page before eliding (a set
/// run has one key per element).
const KEYS_LISTED_MAX: usize = 20;
/// Lost or unexpected set elements listed by name before eliding.
const ELEMENTS_LISTED_MAX: usize = 20;
/// Operations completed before the failing one that the focus view lists
/// (the most recent ones: with unique values they are what a stale or
/// impossible result contradicts).
const FOCUS_BEFORE_MAX: usize = 6;
/// Distinct client errors listed, most frequent first.
const ERRORS_LISTED_MAX: usize = 12;

/// The most frequent errors, most frequent first.
fn top_errors(errors: &ErrorTally) -> Vec<(&str, usize)> {
    let mut top: Vec<(&str, usize)> = errors.iter().map(|(t, &n)| (t.as_str(), n)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(ERRORS_LISTED_MAX);
    top
}

fn fault_line(log: &NemesisLog) -> String {
    let counts = log.fault_counts();
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn listed(items: &std::collections::BTreeSet<String>) -> String {
    let mut shown: Vec<&str> = items
        .iter()
        .take(ELEMENTS_LISTED_MAX)
        .map(String::as_str)
        .collect();
    if items.len() > ELEMENTS_LISTED_MAX {
        shown.push("...");
    }
    shown.join(" ")
}

fn set_lines(set: &SetSummary) -> Vec<String> {
    let mut lines =
        vec![format!(
        "set: {} adds attempted, {} acknowledged, {} of unknown outcome read back; final read {}",
        set.attempted,
        set.acknowledged,
        set.recovered,
        if set.final_read { "ok" } else { "FAILED (nothing checked)" }
    )];
    if !set.lost.is_empty() {
        lines.push(format!(
            "LOST acknowledged adds ({}): {}",
            set.lost.len(),
            listed(&set.lost)
        ));
    }
    if !set.unexpected.is_empty() {
        lines.push(format!(
            "UNEXPECTED elements ({}): {}",
            set.unexpected.len(),
            listed(&set.unexpected)
        ));
    }
    if !set.failed_but_present.is_empty() {
        lines.push(format!(
            "adds recorded as failed but present ({}): {}",
            set.failed_but_present.len(),
            listed(&set.failed_but_present)
        ));
    }
    lines
}

fn seconds(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// The failing operation of an explanation with what it must be judged
/// against: the last [`FOCUS_BEFORE_MAX`] operations that completed before
/// it was invoked, and every operation concurrent with it. Times are
/// seconds since the run started.
pub fn focus_lines(explanation: &Explanation) -> Vec<String> {
    let Some(failing) = explanation.ops.get(explanation.failing) else {
        return Vec::new();
    };
    let line = |i: usize| {
        let op = &explanation.ops[i];
        let mark = if i == explanation.failing {
            "   <-- cannot be linearized"
        } else {
            ""
        };
        format!(
            "{:>9} .. {:<9} process {:<4} {} -> {}{mark}",
            seconds(op.call.0),
            op.ret
                .map_or_else(|| "(pending)".to_owned(), |t| seconds(t.0)),
            op.process.to_string(),
            op.operation,
            op.result
        )
    };
    let mut before: Vec<usize> = (0..explanation.ops.len())
        .filter(|&i| explanation.ops[i].ret.is_some_and(|r| r < failing.call))
        .collect();
    before.sort_by_key(|&i| explanation.ops[i].ret);
    let skip = before.len().saturating_sub(FOCUS_BEFORE_MAX);
    let mut shown: Vec<usize> = before[skip..].to_vec();
    let failing_ret = failing.ret.map_or(u64::MAX, |t| t.0);
    shown.extend((0..explanation.ops.len()).filter(|&i| {
        let op = &explanation.ops[i];
        op.call.0 <= failing_ret && op.ret.is_none_or(|r| r >= failing.call)
    }));
    shown.sort_by_key(|&i| (explanation.ops[i].call, i));
    shown.dedup();
    shown.into_iter().map(line).collect()
}

/// Everything a report shows about one run.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    /// The run's settings.
    pub config: &'a RunConfig,
    /// The verdict.
    pub verdict: Verdict,
    /// Every operation's invocation and outcome, sorted by invocation.
    pub marks: &'a [Mark],
    /// Operations by outcome.
    pub counts: &'a OpCounts,
    /// Errors behind `fail` and `info`.
    pub errors: &'a ErrorTally,
    /// The checker's reports, one per history.
    pub reports: &'a [Checked],
    /// The set checker's findings (set workload only).
    pub set: Option<&'a SetSummary>,
    /// The lock checks' findings (lock workload only).
    pub lock: Option<&'a LockSummary>,
    /// What the nemeses did.
    pub log: &'a NemesisLog,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// The content of `verdict.txt`.
pub fn verdict_text(facts: &Facts<'_>) -> String {
    let Facts {
        config,
        verdict,
        counts,
        errors,
        reports,
        set,
        lock,
        log,
        elapsed,
        ..
    } = *facts;
    let mut out = format!("{verdict}\n");
    let _ = writeln!(out, "run: {}", config.describe());
    let _ = writeln!(out, "operations: {}", operations_line(config, counts));
    let _ = writeln!(out, "faults: {} (see nemesis.log)", fault_line(log));
    if !errors.is_empty() {
        let _ = writeln!(out, "client errors (behind fail and info):");
        for (text, n) in top_errors(errors) {
            let _ = writeln!(out, "  {n:>6} x {text}");
        }
    }
    if let Some(set) = set {
        for line in set_lines(set) {
            let _ = writeln!(out, "{line}");
        }
    }
    if let Some(lock) = lock {
        for line in lock_lines(lock) {
            let _ = writeln!(out, "{line}");
        }
    }
    for Checked { what, report } in reports {
        let _ = writeln!(
            out,
            "checker ({what}): {} model, {} keys, {}, decided in {:.3} s",
            report.model,
            report.keys.len(),
            report.verdict,
            report.elapsed.as_secs_f64()
        );
        // Failing and undecided keys first: they are what a reader wants.
        let mut keys: Vec<_> = report.keys.iter().collect();
        keys.sort_by_key(|k| k.verdict == Verdict::Linearizable);
        for key in keys.iter().take(KEYS_LISTED_MAX) {
            let _ = writeln!(
                out,
                "  key {:?}: {} ({} ops{})",
                key.key.as_deref().unwrap_or("-"),
                key.verdict,
                key.op_count,
                key.unknown_reason
                    .map_or_else(String::new, |r| format!(", {r}"))
            );
        }
        if keys.len() > KEYS_LISTED_MAX {
            let _ = writeln!(out, "  ... {} more keys", keys.len() - KEYS_LISTED_MAX);
        }
    }
    if let Some(explanation) = reports.iter().find_map(|c| c.report.explanation.as_ref()) {
        let _ = writeln!(
            out,
            "\nthe operation that cannot be linearized, with the last operations that completed \
             before it and those concurrent with it:"
        );
        for line in focus_lines(explanation) {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(
            out,
            "\nsmallest failing piece (times in ns since the start; report.html draws it):"
        );
        out.push_str(&explanation.summary());
    }
    let _ = writeln!(out, "\nwall time: {:.1} s", elapsed.as_secs_f64());
    out
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Operations per second of the run, by outcome, as (ok, fail, info) per
/// one-second bucket of invocation time.
fn per_second(marks: &[Mark]) -> Vec<(usize, usize, usize)> {
    let mut buckets: BTreeMap<u64, (usize, usize, usize)> = BTreeMap::new();
    for mark in marks {
        let b = buckets.entry(mark.call / 1_000_000_000).or_default();
        match mark.outcome {
            MarkKind::Ok => b.0 += 1,
            MarkKind::Fail => b.1 += 1,
            MarkKind::Info => b.2 += 1,
        }
    }
    let last = buckets.keys().next_back().copied().unwrap_or(0);
    (0..=last)
        .map(|s| buckets.get(&s).copied().unwrap_or_default())
        .collect()
}

/// Fault intervals per nemesis, in seconds: a start paired with the next
/// end of the same nemesis (each nemesis runs one fault at a time).
fn fault_intervals(log: &NemesisLog, run_end_s: f64) -> Vec<(NemesisKind, f64, f64, String)> {
    let mut open: BTreeMap<NemesisKind, (f64, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for event in log.events() {
        let Some(kind) = event.nemesis else { continue };
        let t = event.time_ns as f64 / 1e9;
        match event.action {
            "start" => {
                open.insert(kind, (t, event.detail.clone()));
            }
            "end" => {
                if let Some((start, detail)) = open.remove(&kind) {
                    out.push((kind, start, t, detail));
                }
            }
            _ => {}
        }
    }
    for (kind, (start, detail)) in open {
        out.push((kind, start, run_end_s, detail));
    }
    out
}

fn band_color(kind: NemesisKind) -> &'static str {
    match kind {
        NemesisKind::Partition => "#8e6bbf",
        NemesisKind::Kill => "#c0392b",
        NemesisKind::Pause => "#d68910",
        NemesisKind::Clock => "#2e86c1",
        NemesisKind::Member => "#117a65",
    }
}

/// An SVG chart: stacked bars of operations per second (ok green, fail
/// orange, info red) over one band per nemesis showing when its faults
/// were in force.
fn throughput_svg(marks: &[Mark], log: &NemesisLog) -> String {
    let buckets = per_second(marks);
    let seconds = buckets.len().max(1) as f64;
    let peak = buckets
        .iter()
        .map(|(a, b, c)| a + b + c)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let kinds: Vec<NemesisKind> = log.fault_counts().into_iter().map(|(k, _)| k).collect();
    let height = CHART_HEIGHT_PX + 30.0 + BAND_HEIGHT_PX * kinds.len() as f64 + 10.0;
    let width = CHART_MARGIN_LEFT_PX + CHART_WIDTH_PX + 10.0;
    let x = |s: f64| CHART_MARGIN_LEFT_PX + s / seconds * CHART_WIDTH_PX;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    let _ = writeln!(
        svg,
        "<text x=\"4\" y=\"12\">{} ops/s</text><text x=\"4\" y=\"{}\">0</text>",
        peak as usize, CHART_HEIGHT_PX
    );
    let bar_w = (CHART_WIDTH_PX / seconds - 1.0).max(1.0);
    for (s, &(ok, fail, info)) in buckets.iter().enumerate() {
        let mut y = CHART_HEIGHT_PX;
        for (count, color, what) in [
            (ok, "#27ae60", "ok"),
            (fail, "#e67e22", "fail"),
            (info, "#c0392b", "info"),
        ] {
            if count == 0 {
                continue;
            }
            let h = count as f64 / peak * (CHART_HEIGHT_PX - 10.0);
            y -= h;
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{s}-{} s: {count} {what}</title></rect>",
                x(s as f64),
                s + 1
            );
        }
    }
    let axis_y = CHART_HEIGHT_PX + 14.0;
    let step = ((seconds / 10.0).ceil() as usize).max(1);
    for s in (0..=buckets.len()).step_by(step) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{axis_y}\">{s}s</text>",
            x(s as f64)
        );
    }
    for (row, kind) in kinds.iter().enumerate() {
        let y = CHART_HEIGHT_PX + 22.0 + row as f64 * BAND_HEIGHT_PX;
        let _ = writeln!(svg, "<text x=\"4\" y=\"{:.1}\">{kind}</text>", y + 11.0);
        for (k, start, end, detail) in fault_intervals(log, seconds) {
            if k != *kind {
                continue;
            }
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" opacity=\"0.8\"><title>{:.1}-{:.1} s: {}</title></rect>",
                x(start),
                (x(end) - x(start)).max(1.0),
                BAND_HEIGHT_PX - 3.0,
                band_color(k),
                start,
                end,
                escape(&detail)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// The summary as an HTML fragment (no `<html>` around it).
pub fn summary_section(facts: &Facts<'_>) -> String {
    let Facts {
        config,
        verdict,
        marks,
        counts,
        errors,
        reports,
        set,
        lock,
        log,
        ..
    } = *facts;
    let color = match verdict {
        Verdict::Linearizable => "#1e8449",
        Verdict::NotLinearizable => "#c0392b",
        Verdict::Unknown => "#b9770e",
    };
    let mut html = format!(
        "<h2>concord check: <span style=\"color:{color}\">{}</span></h2>\n<p>{}</p>\n",
        escape(&verdict.to_string()),
        escape(&config.describe())
    );
    let checked: Vec<String> = reports
        .iter()
        .map(|c| {
            format!(
                "{} with the {} model ({}, {:.3} s)",
                c.what,
                c.report.model,
                c.report.verdict,
                c.report.elapsed.as_secs_f64()
            )
        })
        .collect();
    let _ = writeln!(
        html,
        "<p>Operations: {} (fail: definitely not applied; info: outcome unknown). Faults: {}. \
         Checked: {}.</p>",
        escape(&operations_line(config, counts)),
        escape(&fault_line(log)),
        escape(&checked.join("; "))
    );
    let mut extra = Vec::new();
    if let Some(set) = set {
        extra.extend(set_lines(set));
    }
    if let Some(lock) = lock {
        extra.extend(lock_lines(lock));
    }
    if !extra.is_empty() {
        html.push_str("<ul>\n");
        for line in extra {
            let _ = writeln!(html, "<li>{}</li>", escape(&line));
        }
        html.push_str("</ul>\n");
    }
    if let Some(explanation) = reports.iter().find_map(|c| c.report.explanation.as_ref()) {
        html.push_str(
            "<h3>In short</h3>\n<p class=\"note\">The operation that cannot be linearized, with \
             the last operations that completed before it was invoked and those concurrent with \
             it (seconds since the start). The whole failing piece is drawn below.</p>\n<pre>",
        );
        for line in focus_lines(explanation) {
            html.push_str(&escape(&line));
            html.push('\n');
        }
        html.push_str("</pre>\n");
    }
    html.push_str(
        "<h3>Operations per second and faults</h3>\n<p class=\"note\">Bars: operations by \
         invocation second, green ok, orange fail, red info. Bands: when each nemesis's faults \
         were in force (hover for details).</p>\n<div class=\"scroll\">\n",
    );
    html.push_str(&throughput_svg(marks, log));
    html.push_str("</div>\n");
    if !errors.is_empty() {
        html.push_str("<h3>Client errors</h3>\n<table>\n<tr><th>count</th><th>error</th></tr>\n");
        for (text, n) in top_errors(errors) {
            let _ = writeln!(html, "<tr><td>{n}</td><td>{}</td></tr>", escape(text));
        }
        html.push_str("</table>\n");
    }
    html.push_str("<h3>Keys</h3>\n<table>\n<tr><th>key</th><th>verdict</th><th>operations</th><th>search time</th></tr>\n");
    let mut keys: Vec<_> = reports.iter().flat_map(|c| c.report.keys.iter()).collect();
    keys.sort_by_key(|k| k.verdict == Verdict::Linearizable);
    for key in keys.iter().take(KEYS_LISTED_MAX) {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1?}</td></tr>",
            escape(key.key.as_deref().unwrap_or("-")),
            escape(&key.verdict.to_string()),
            key.op_count,
            key.elapsed
        );
    }
    if keys.len() > KEYS_LISTED_MAX {
        let _ = writeln!(
            html,
            "<tr><td colspan=\"4\">... {} more keys</td></tr>",
            keys.len() - KEYS_LISTED_MAX
        );
    }
    html.push_str("</table>\n<h3>Nemesis log</h3>\n<pre>");
    html.push_str(&escape(&log.to_text()));
    html.push_str(
        "</pre>\n<p class=\"note\">Files: history.jsonl (check again with <code>concord \
         check-history --format jsonl history.jsonl</code>; for lock also resource.jsonl, \
         and fenced.jsonl with every fenced write), nemesis.log, verdict.txt, cluster/ \
         (member data and logs).</p>\n",
    );
    html
}

/// A standalone page around `section`.
pub fn page(title: &str, section: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
         body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}\n\
         .scroll {{ overflow-x: auto; }}\n\
         table {{ border-collapse: collapse; }}\n\
         td, th {{ border: 1px solid #ccc; padding: 2px 8px; font-family: ui-monospace, monospace; font-size: 13px; text-align: left; }}\n\
         pre {{ background: #f6f6f6; padding: 0.5em; font-size: 12px; }}\n\
         .note {{ color: #555; }}\n\
         </style>\n</head>\n<body>\n{section}</body>\n</html>\n",
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_check::{KeyedInput, Operation, RegisterInput, RegisterOutput};

    #[test]
    fn buckets_count_by_outcome_and_fill_gaps() {
        let history: Vec<crate::workload::RegisterOp> = vec![
            Operation::ok(
                0,
                100,
                200,
                KeyedInput::new("k", RegisterInput::Read),
                RegisterOutput::Read { value: None },
            ),
            Operation::info(
                1,
                2_500_000_000,
                KeyedInput::new("k", RegisterInput::Write { value: 1 }),
            ),
        ];
        assert_eq!(
            per_second(&marks(&history)),
            vec![(1, 0, 0), (0, 0, 0), (0, 0, 1)]
        );
    }

    #[test]
    fn focus_shows_the_failing_op_its_predecessors_and_its_rivals() {
        use concord_check::{ExplainedOp, ProcessId, Time};
        let op = |process: u64, call: u64, ret: Option<u64>, operation: &str, result: &str| {
            ExplainedOp {
                history_index: 0,
                process: ProcessId(process),
                call: Time(call * 1_000_000),
                ret: ret.map(|r| Time(r * 1_000_000)),
                operation: operation.to_owned(),
                result: result.to_owned(),
            }
        };
        let mut ops: Vec<ExplainedOp> = (0..10)
            .map(|i| op(1, i * 10, Some(i * 10 + 5), &format!("write({i})"), "ok"))
            .collect();
        ops.push(op(2, 98, None, "write(99)", "?"));
        ops.push(op(3, 100, Some(101), "read", "3"));
        let explanation = Explanation {
            key: Some("k".into()),
            model: "kv-cas-register".into(),
            ops,
            failing: 11,
            witness: Vec::new(),
            partition_op_count: 12,
            shrunk_fully: true,
        };
        let lines = focus_lines(&explanation);
        // The last six writes, the pending write, the failing read.
        assert_eq!(lines.len(), FOCUS_BEFORE_MAX + 2, "{lines:#?}");
        assert!(lines[0].contains("write(4)"), "{lines:#?}");
        assert!(lines[FOCUS_BEFORE_MAX].contains("(pending)"));
        assert!(lines[FOCUS_BEFORE_MAX + 1].ends_with("<-- cannot be linearized"));
        assert!(lines[FOCUS_BEFORE_MAX + 1].starts_with("   0.100s"));
    }

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
