//! `anning report`: one self-contained HTML page about a stretch of traffic and the actions
//! taken on it, with SVG plots, readable without the tool (no scripts needed to see it; one
//! small script only counts the plots for automated checks).

use std::fmt::Write as _;

use anning_rules::time::format_rfc3339;

use super::output::rows;
use super::{Desk, SqlError};

/// Everything the page shows, computed by SQL over `traffic` and `actions`.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub title: String,
    pub inputs: Vec<String>,
    pub records: u64,
    pub rejected: u64,
    pub pack: String,
    pub limit: u64,
    pub band_lo: u64,
    /// (rule, hour start ms, actions).
    pub per_rule_hour: Vec<(String, i64, u64)>,
    /// (bucket of 5 messages, sender-hours), subscriber senders only.
    pub hourly_histogram: Vec<(u64, u64)>,
    /// Subscriber senders with near-limit hours (count) and hours over the limit.
    pub near_senders: u64,
    pub over_senders: u64,
    pub top_sigs: Vec<(String, u64)>,
    pub top_ports: Vec<(String, u64)>,
    pub complained_sigs: Vec<(String, u64)>,
    pub complained_ports: Vec<(String, u64)>,
    /// (ts, action, dim, key (masked unless raw), rule, level, reason).
    pub actions: Vec<[String; 7]>,
    pub actions_total: u64,
}

fn pairs(desk: &Desk, sql: &str, raw: bool) -> Result<Vec<(String, u64)>, SqlError> {
    Ok(rows(&desk.query(sql, raw)?)?
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap_or(0)))
        .collect())
}

/// Computes the figures; `traffic` and `actions` must be registered.
pub fn figures(desk: &Desk, raw: bool, top: usize, table_rows: usize) -> Result<Figures, SqlError> {
    let mut f = Figures {
        limit: desk.limit,
        band_lo: desk.band_lo,
        ..Figures::default()
    };
    f.per_rule_hour = rows(&desk.query(
        "SELECT rule, to_unixtime(date_trunc('hour', ts)) * 1000 AS hour_ms, count(*) AS n \
         FROM actions GROUP BY rule, date_trunc('hour', ts) ORDER BY rule, hour_ms",
        true,
    )?)?
    .into_iter()
    .map(|r| (r[0].clone(), r[1].parse().unwrap_or(0), r[2].parse().unwrap_or(0)))
    .collect();
    f.hourly_histogram = rows(&desk.query("SELECT bucket, sender_hours FROM hourly_histogram ORDER BY bucket", true)?)?
        .into_iter()
        .map(|r| (r[0].parse().unwrap_or(0), r[1].parse().unwrap_or(0)))
        .collect();
    let counts = rows(&desk.query(
        "SELECT sum(CASE WHEN near_hours > 0 THEN 1 ELSE 0 END), sum(CASE WHEN over_hours > 0 THEN 1 ELSE 0 END) \
         FROM near_limit",
        true,
    )?)?;
    if let Some(r) = counts.first() {
        f.near_senders = r[0].parse().unwrap_or(0);
        f.over_senders = r[1].parse().unwrap_or(0);
    }
    // Top `col` values among records of `kind` matching `cond`.
    let top_of = |col: &str, kind: &str, cond: &str| {
        pairs(
            desk,
            &format!(
                "SELECT {col}, count(*) AS n FROM traffic WHERE type = '{kind}' AND {cond} \
                 GROUP BY {col} ORDER BY n DESC, {col} LIMIT {top}"
            ),
            raw,
        )
    };
    f.top_sigs = top_of("sig", "sms", "sig IS NOT NULL")?;
    f.top_ports = top_of("src", "sms", "src_class = 'port'")?;
    f.complained_sigs = top_of("sig", "complaint", "sig IS NOT NULL")?;
    f.complained_ports = top_of("src", "complaint", "src IS NOT NULL")?;
    let total = rows(&desk.query("SELECT count(*) FROM actions", true)?)?;
    f.actions_total = total.first().and_then(|r| r[0].parse().ok()).unwrap_or(0);
    f.actions = rows(&desk.query(
        &format!(
            "SELECT ts, action, dim, key, rule, level, reason FROM actions \
             ORDER BY ts, dim, key, rule LIMIT {table_rows}"
        ),
        raw,
    )?)?
    .into_iter()
    .map(|r| {
        [
            r[0].clone(),
            r[1].clone(),
            r[2].clone(),
            r[3].clone(),
            r[4].clone(),
            r[5].clone(),
            r[6].clone(),
        ]
    })
    .collect();
    Ok(f)
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Twenty distinguishable colours (Tableau 20), so a full pack's rules do not share one.
const PALETTE: [&str; 20] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78",
    "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
];

/// A round upper bound for an axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// Per-rule actions per hour: one line per rule.
fn rule_lines(f: &Figures) -> String {
    let (w, h, l, r, t, b) = (900.0, 340.0, 60.0, 220.0, 20.0, 40.0);
    let mut s = format!(
        "<svg data-plot=\"per-rule\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"actions per rule per hour\">"
    );
    if f.per_rule_hour.is_empty() {
        s.push_str("<text x=\"20\" y=\"40\">no actions</text></svg>");
        return s;
    }
    let t0 = f.per_rule_hour.iter().map(|x| x.1).min().unwrap_or(0);
    let t1 = f.per_rule_hour.iter().map(|x| x.1).max().unwrap_or(0).max(t0 + 3_600_000);
    let ymax = nice_max(f.per_rule_hour.iter().map(|x| x.2).max().unwrap_or(1) as f64);
    let x = |ts: i64| l + (ts - t0) as f64 / (t1 - t0) as f64 * (w - l - r);
    let y = |v: f64| h - b - v / ymax * (h - t - b);
    axes(&mut s, l, t, w - r, h - b, ymax, "actions per hour");
    for k in 0..=4 {
        let ts = t0 + (t1 - t0) * k / 4;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x(ts),
            h - b + 16.0,
            &format_rfc3339(ts)[5..16].replace('T', " ")
        );
    }
    let mut rules: Vec<&str> = f.per_rule_hour.iter().map(|x| x.0.as_str()).collect();
    rules.dedup();
    for (i, rule) in rules.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        // Every hour of the span, zero where the rule took no action.
        let counts: std::collections::BTreeMap<i64, u64> = f.per_rule_hour.iter().filter(|p| p.0 == *rule).map(|p| (p.1, p.2)).collect();
        let pts: Vec<String> = (0..=(t1 - t0) / 3_600_000)
            .map(|k| t0 + k * 3_600_000)
            .filter(|ts| *ts <= t1)
            .map(|ts| format!("{:.1},{:.1}", x(ts), y(counts.get(&ts).copied().unwrap_or(0) as f64)))
            .collect();
        let _ = write!(
            s,
            "<polyline class=\"mark\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            pts.join(" "),
            esc(rule)
        );
        for (ts, n) in &counts {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{color}\"><title>{}: {n} at {}</title></circle>",
                x(*ts),
                y(*n as f64),
                esc(rule),
                format_rfc3339(*ts)
            );
        }
        let ly = t + 14.0 * i as f64 + 8.0;
        let _ = write!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            w - r + 10.0,
            ly - 9.0,
            w - r + 24.0,
            ly,
            esc(rule)
        );
    }
    s.push_str("</svg>");
    s
}

fn axes(s: &mut String, x0: f64, y0: f64, x1: f64, y1: f64, ymax: f64, label: &str) {
    let _ = write!(
        s,
        "<line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#333\"/><line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#333\"/>"
    );
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let yy = y1 - (y1 - y0) * k as f64 / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{x0}\" y1=\"{yy:.1}\" x2=\"{x1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            x0 - 4.0,
            yy + 4.0,
            if v >= 10.0 { format!("{v:.0}") } else { format!("{v:.1}") }
        );
    }
    let _ = write!(
        s,
        "<text x=\"14\" y=\"{:.1}\" font-size=\"11\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>",
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        esc(label)
    );
}

/// Histogram of subscriber senders' hourly counts, log scale, the limit and band marked.
fn histogram(f: &Figures) -> String {
    let (w, h, l, r, t, b) = (900.0, 320.0, 60.0, 20.0, 20.0, 40.0);
    let mut s = format!(
        "<svg data-plot=\"hourly-histogram\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"hourly counts per subscriber sender\">"
    );
    let xmax = f.hourly_histogram.iter().map(|x| x.0 + 5).max().unwrap_or(0).max(f.limit + 20) as f64;
    let top = f.hourly_histogram.iter().map(|x| x.1).max().unwrap_or(1).max(1) as f64;
    let ymax = nice_max(top).log10().ceil().max(1.0);
    let x = |v: f64| l + v / xmax * (w - l - r);
    let y = |n: f64| h - b - ((n.max(1.0)).log10() + 0.0) / ymax * (h - t - b);
    let _ = write!(
        s,
        "<rect x=\"{:.1}\" y=\"{t}\" width=\"{:.1}\" height=\"{}\" fill=\"#fde2c8\"><title>near band {}–{}</title></rect>",
        x(f.band_lo as f64),
        x(f.limit as f64) - x(f.band_lo as f64),
        h - t - b,
        f.band_lo,
        f.limit - 1
    );
    let _ = write!(
        s,
        "<line x1=\"{x0:.1}\" y1=\"{t}\" x2=\"{x0:.1}\" y2=\"{}\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"12\" fill=\"#d62728\" text-anchor=\"end\">published limit {}/h</text>",
        h - b,
        x(f.band_lo as f64) - 4.0,
        t + 12.0,
        f.limit,
        x0 = x(f.limit as f64)
    );
    let _ = write!(
        s,
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/><line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"#333\"/>",
        h - b,
        w - r,
        h - b,
        h - b
    );
    for k in 0..=(ymax as i32) {
        let n = 10f64.powi(k);
        let _ = write!(
            s,
            "<line x1=\"{l}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{n}</text>",
            w - r,
            l - 4.0,
            y(n) + 4.0,
            yy = y(n)
        );
    }
    let step = if xmax > 400.0 { 100 } else { 50 };
    let mut v = 0;
    while (v as f64) <= xmax {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{v}</text>",
            x(v as f64),
            h - b + 16.0
        );
        v += step;
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">messages in one hour (buckets of 5)</text><text x=\"14\" y=\"{:.1}\" font-size=\"11\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">sender-hours (log)</text>",
        (l + w - r) / 2.0,
        h - 4.0,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    );
    for (bucket, n) in &f.hourly_histogram {
        let x0 = x(*bucket as f64);
        let bw = (x(*bucket as f64 + 5.0) - x0 - 0.5).max(0.5);
        let y0 = y(*n as f64);
        let hot = *bucket >= f.band_lo && *bucket < f.limit;
        let _ = write!(
            s,
            "<rect class=\"mark\" x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}–{}: {n} sender-hours</title></rect>",
            (h - b - y0).max(0.5),
            if hot { "#d62728" } else { "#1f77b4" },
            bucket,
            bucket + 4
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars of (label, value).
fn bars(id: &str, title: &str, data: &[(String, u64)]) -> String {
    let row = 18.0;
    let (w, l, r) = (440.0, 150.0, 60.0);
    let h = 30.0 + row * data.len().max(1) as f64;
    let mut s = format!(
        "<svg data-plot=\"{id}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\"><text x=\"0\" y=\"14\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(title),
        esc(title)
    );
    if data.is_empty() {
        s.push_str("<text x=\"0\" y=\"36\" font-size=\"12\">none</text></svg>");
        return s;
    }
    let max = data.iter().map(|d| d.1).max().unwrap_or(1).max(1) as f64;
    for (i, (label, v)) in data.iter().enumerate() {
        let y = 22.0 + row * i as f64;
        let bw = *v as f64 / max * (w - l - r);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text><rect class=\"mark\" x=\"{l}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{}\" fill=\"#1f77b4\"><title>{}: {v}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{v}</text>",
            l - 6.0,
            y + 12.0,
            esc(label),
            row - 4.0,
            esc(label),
            l + bw + 4.0,
            y + 12.0
        );
    }
    s.push_str("</svg>");
    s
}

/// The page.
pub fn html(f: &Figures) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}}\
h1{{font-size:22px}}h2{{font-size:17px;margin-top:32px;border-bottom:1px solid #ccc}}\
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}}\
th{{background:#f4f4f4}}.grid{{display:flex;flex-wrap:wrap;gap:16px}}.note{{color:#555;font-size:13px}}\
</style></head><body>\n",
        esc(&f.title)
    );
    let _ = write!(
        o,
        "<h1>{}</h1>\n<p class=\"note\">Input: {}. {} records read, {} rejected. Pack {}. {} actions. Subscriber numbers are masked unless the report was made with --raw.</p>\n",
        esc(&f.title),
        esc(&f.inputs.join(", ")),
        f.records,
        f.rejected,
        esc(&f.pack),
        f.actions_total
    );
    let _ = write!(o, "<h2>Actions per rule per hour</h2>\n{}\n", rule_lines(f));
    let _ = write!(
        o,
        "<h2>Hourly counts of subscriber senders</h2>\n<p class=\"note\">How many (sender, hour) pairs sent each number of messages. The published limit is {}/h; the shaded band {}–{} is where threshold dodgers live: a cliff just under the limit is what dodging looks like. {} senders had at least one hour in the band, {} went over the limit.</p>\n{}\n",
        f.limit,
        f.band_lo,
        f.limit - 1,
        f.near_senders,
        f.over_senders,
        histogram(f)
    );
    let _ = write!(
        o,
        "<h2>Top signatures and ports</h2>\n<div class=\"grid\">{}{}{}{}</div>\n",
        bars("top-signatures", "Signatures by messages", &f.top_sigs),
        bars("top-ports", "Ports by messages", &f.top_ports),
        bars("complained-signatures", "Signatures by complaints", &f.complained_sigs),
        bars("complained-ports", "Originators by complaints", &f.complained_ports)
    );
    let _ = write!(
        o,
        "<h2>Actions</h2>\n<p class=\"note\">{} of {} actions, in time order.</p>\n<table id=\"actions\"><tr><th>time (UTC)</th><th>action</th><th>dim</th><th>key</th><th>rule</th><th>level</th><th>reason</th></tr>\n",
        f.actions.len(),
        f.actions_total
    );
    for a in &f.actions {
        o.push_str("<tr>");
        for c in a {
            let _ = write!(o, "<td>{}</td>", esc(c));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</table>\n");
    // For automated checks only: how many plots drew marks.
    o.push_str(
        "<script>document.body.dataset.plots=String([...document.querySelectorAll('svg[data-plot]')].filter(s=>s.querySelector('.mark')).length);</script>\n",
    );
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_rounds() {
        assert_eq!(esc("<a href='x'>&</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;");
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(2100.0), 2500.0);
    }
}
