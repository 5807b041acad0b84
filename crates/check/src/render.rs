//! # Rendering an explanation as a self-contained HTML page
//!
//! One row per process, one bar per operation from invocation to
//! completion, labelled with the operation and its result; a pending
//! operation's bar runs off to the right, dashed; the operation that cannot
//! be linearized is red. Below the picture: the witness linearization with
//! the state after each step, and the operations as a table.
//!
//! Invariants:
//! 1. The page is self-contained: inline SVG and CSS, no script, no
//!    external resource, so it can be attached to a CI run or an issue.
//! 2. Every string from the history is escaped; a value such as
//!    `</svg><script>` renders as text.
//! 3. The horizontal axis is the order of distinct event times, not their
//!    magnitudes: nanosecond histories with long idle gaps stay readable,
//!    and real-time order (all that linearizability looks at) is exact.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::explain::Explanation;

/// Width of one event-time column. Wide enough for a short label such as
/// `cas(1, 4) -> fail` to sit over a one-column bar.
const COLUMN_WIDTH_PX: u64 = 64;
/// Height of one process row: a label line above a bar.
const ROW_HEIGHT_PX: u64 = 46;
/// Bar thickness.
const BAR_HEIGHT_PX: u64 = 16;
/// Room on the left for "process NN".
const MARGIN_LEFT_PX: u64 = 96;
/// Room above the first row and below the last.
const MARGIN_Y_PX: u64 = 12;
/// A zero-length operation (invoked and completed at one instant) still
/// gets a visible bar.
const BAR_WIDTH_MIN_PX: u64 = 8;

/// Renders `explanation` as a standalone HTML page (see the module docs).
pub fn render_timeline_html(explanation: &Explanation) -> String {
    let title = match &explanation.key {
        Some(key) => format!("Not linearizable: key {key:?}"),
        None => "Not linearizable".to_owned(),
    };
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
         body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}\n\
         .scroll {{ overflow-x: auto; border: 1px solid #ddd; }}\n\
         table {{ border-collapse: collapse; margin-top: 0.5em; }}\n\
         td, th {{ border: 1px solid #ccc; padding: 2px 8px; font-family: ui-monospace, monospace; font-size: 13px; text-align: left; }}\n\
         tr.failing td {{ background: #f8d0d0; }}\n\
         .note {{ color: #555; }}\n\
         </style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let _ = write!(
        html,
        "<p>{} of the partition's {} operations ({} model) cannot be linearized together. \
         The red operation cannot be placed in any order consistent with real time{}.</p>\n\
         <p class=\"note\">Dashed bars are pending: they had not completed (or never did) when \
         the red operation completed, so here their result is unknown and they may have taken \
         effect at any point after their invocation, or not at all. Columns are the order of \
         event times, not their magnitudes.{}</p>\n",
        explanation.ops.len(),
        explanation.partition_op_count,
        escape(&explanation.model),
        if explanation.ops.len() < explanation.partition_op_count {
            "; every other operation of the partition was removed or cut"
        } else {
            ""
        },
        if explanation.shrunk_fully {
            ""
        } else {
            " Shrinking ran out of time: a smaller failing sub-history may exist."
        }
    );
    html.push_str("<div class=\"scroll\">\n");
    html.push_str(&render_svg(explanation));
    html.push_str("</div>\n");

    if !explanation.witness.is_empty() {
        html.push_str(
            "<h2>A linearization if the red operation's result were unknown</h2>\n\
             <table>\n<tr><th>#</th><th>process</th><th>operation</th><th>result</th><th>state after</th></tr>\n",
        );
        for (n, step) in explanation.witness.iter().enumerate() {
            let op = &explanation.ops[step.op];
            let failing = step.op == explanation.failing;
            let _ = writeln!(
                html,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if failing { " class=\"failing\"" } else { "" },
                n + 1,
                op.process,
                escape(&op.operation),
                if failing {
                    format!("? (observed {})", escape(&op.result))
                } else {
                    escape(&op.result)
                },
                escape(&step.state_after)
            );
        }
        html.push_str("</table>\n");
    }

    html.push_str(
        "<h2>Operations</h2>\n<table>\n<tr><th>history index</th><th>process</th><th>invoked</th>\
         <th>completed</th><th>operation</th><th>result</th></tr>\n",
    );
    for (i, op) in explanation.ops.iter().enumerate() {
        let _ = writeln!(
            html,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if i == explanation.failing {
                " class=\"failing\""
            } else {
                ""
            },
            op.history_index,
            op.process,
            op.call,
            op.ret
                .map_or_else(|| "pending".to_owned(), |t| t.to_string()),
            escape(&op.operation),
            escape(&op.result)
        );
    }
    html.push_str("</table>\n</body>\n</html>\n");
    html
}

fn render_svg(explanation: &Explanation) -> String {
    // Columns: distinct event times, in order (invariant 3).
    let mut times: Vec<u64> = explanation
        .ops
        .iter()
        .flat_map(|op| std::iter::once(op.call.0).chain(op.ret.map(|t| t.0)))
        .collect();
    times.sort_unstable();
    times.dedup();
    let column = |t: u64| times.partition_point(|&x| x < t) as u64;
    let x_of = |col: u64| MARGIN_LEFT_PX + col * COLUMN_WIDTH_PX + COLUMN_WIDTH_PX / 2;
    let pending_end_col = times.len() as u64;

    let mut rows: BTreeMap<u64, u64> = BTreeMap::new();
    for op in &explanation.ops {
        rows.insert(op.process.0, 0);
    }
    for (row, slot) in rows.values_mut().enumerate() {
        *slot = row as u64;
    }
    let y_of = |row: u64| MARGIN_Y_PX + row * ROW_HEIGHT_PX;

    let width = MARGIN_LEFT_PX + (pending_end_col + 2) * COLUMN_WIDTH_PX;
    let height = 2 * MARGIN_Y_PX + rows.len() as u64 * ROW_HEIGHT_PX;
    let order_of: BTreeMap<usize, usize> = explanation
        .witness
        .iter()
        .enumerate()
        .map(|(n, step)| (step.op, n + 1))
        .collect();

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"ui-monospace, monospace\" font-size=\"11\">"
    );
    for (process, row) in &rows {
        let y = y_of(*row);
        let _ = writeln!(
            svg,
            "<line x1=\"0\" y1=\"{y0}\" x2=\"{width}\" y2=\"{y0}\" stroke=\"#eee\"/>\
             <text x=\"8\" y=\"{ty}\" font-size=\"12\" fill=\"#444\">process {process}</text>",
            y0 = y + ROW_HEIGHT_PX,
            ty = y + 18 + BAR_HEIGHT_PX / 2,
        );
    }
    for (i, op) in explanation.ops.iter().enumerate() {
        let row = rows.get(&op.process.0).copied().unwrap_or_default();
        let y = y_of(row);
        let x0 = x_of(column(op.call.0));
        let x1 = match op.ret {
            Some(t) => x_of(column(t.0)),
            None => x_of(pending_end_col) + COLUMN_WIDTH_PX / 2,
        };
        let bar_width = x1.saturating_sub(x0).max(BAR_WIDTH_MIN_PX);
        let failing = i == explanation.failing;
        let (fill, stroke, dash) = match (failing, op.ret.is_some()) {
            (true, _) => ("#f8d0d0", "#c0392b", ""),
            (false, true) => ("#dbe8f6", "#3b6ea5", ""),
            (false, false) => ("#f0f0f0", "#888", " stroke-dasharray=\"4 3\""),
        };
        let label = format!("{} -> {}", op.operation, op.result);
        let tooltip = format!(
            "process {}: {} -> {}, invoked at {}, {}{}",
            op.process,
            op.operation,
            op.result,
            op.call,
            op.ret
                .map_or_else(|| "pending".to_owned(), |t| format!("completed at {t}")),
            order_of
                .get(&i)
                .map_or_else(String::new, |n| format!(", linearized #{n} in the witness")),
        );
        let _ = writeln!(
            svg,
            "<g><title>{}</title>\
             <rect x=\"{x0}\" y=\"{by}\" width=\"{bar_width}\" height=\"{BAR_HEIGHT_PX}\" rx=\"3\" \
             fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"{dash}/>\
             <text x=\"{x0}\" y=\"{ly}\" fill=\"{tc}\"{weight}>{}</text>{badge}</g>",
            escape(&tooltip),
            escape(&label),
            by = y + 18,
            sw = if failing { 2 } else { 1 },
            ly = y + 14,
            tc = if failing { "#c0392b" } else { "#222" },
            weight = if failing { " font-weight=\"bold\"" } else { "" },
            badge = order_of.get(&i).map_or_else(String::new, |n| format!(
                "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#555\">#{n}</text>",
                x0 + 3,
                y + 18 + BAR_HEIGHT_PX - 4
            )),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Escapes text for HTML element content and double-quoted attributes.
fn escape(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::{ExplainedOp, WitnessStep};
    use crate::history::{ProcessId, Time};

    #[test]
    fn history_text_is_escaped() {
        let explanation = Explanation {
            key: Some("</svg><script>".to_owned()),
            model: "kv".to_owned(),
            ops: vec![ExplainedOp {
                history_index: 0,
                process: ProcessId(1),
                call: Time(1),
                ret: Some(Time(2)),
                operation: "put(\"<b>\")".to_owned(),
                result: "ok".to_owned(),
            }],
            failing: 0,
            witness: vec![WitnessStep {
                op: 0,
                state_after: "\"<b>\"".to_owned(),
            }],
            partition_op_count: 1,
            shrunk_fully: true,
        };
        let html = render_timeline_html(&explanation);
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("&lt;/svg&gt;&lt;script&gt;"));
    }
}
