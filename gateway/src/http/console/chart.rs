//! The gap view's timeline as a server-drawn SVG: one column per time bucket, stacked per
//! outcome (confirmed at the bottom, resolved by an operator on it, then unknown, failed on
//! top), so an outage stands out as a block of unknown, and one closed by hand as resolved. Each column is a link that selects its span (or widens the
//! selection to it), so a span can be picked with a keyboard and without script; the script
//! adds picking by dragging across columns.

use time::OffsetDateTime;
use time::macros::format_description;

use crate::http::summary::Counts;

/// The drawing's size in SVG units (it scales to the page's width, keeping its proportions).
pub const WIDTH: f64 = 960.0;
const PLOT_HEIGHT: f64 = 200.0;
const TOP: f64 = 14.0;
pub const HEIGHT: f64 = TOP + PLOT_HEIGHT + 22.0;
const TICKS: usize = 6;

pub struct Segment {
    /// `confirmed`, `resolved`, `unknown` or `failed`: the CSS class that colours it.
    pub class: &'static str,
    pub y: String,
    pub height: String,
}

pub struct Column {
    pub x: String,
    pub width: String,
    pub hit_width: String,
    /// Unix ms, the bucket's start and end.
    pub start: i64,
    pub end: i64,
    pub href: String,
    /// What a screen reader says, and the tooltip.
    pub label: String,
    pub segments: Vec<Segment>,
    pub selected: bool,
}

pub struct Tick {
    pub x: String,
    pub text: String,
}

pub struct Chart {
    pub columns: Vec<Column>,
    pub ticks: Vec<Tick>,
    /// The tallest column's count (the top of the scale).
    pub max: i64,
    pub plot_top: String,
    pub plot_bottom: String,
    pub tick_y: String,
    /// The selected span's shading, when a span is selected.
    pub shade: Option<(String, String)>,
}

/// A time as the console shows it, in UTC: `HH:MM`, with the date when `with_date`.
pub fn clock_time(ms: i64, with_date: bool) -> String {
    label_time(ms, with_date, false)
}

/// A time as `HH:MM:SS`, in UTC.
pub fn clock_time_seconds(ms: i64) -> String {
    label_time(ms, false, true)
}

/// `HH:MM`, with the date when `with_date`, with seconds when `with_seconds`.
fn label_time(ms: i64, with_date: bool, with_seconds: bool) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return String::new();
    };
    let text = match (with_date, with_seconds) {
        (true, _) => t.format(format_description!("[month repr:short] [day] [hour]:[minute]")),
        (false, true) => t.format(format_description!("[hour]:[minute]:[second]")),
        (false, false) => t.format(format_description!("[hour]:[minute]")),
    };
    text.unwrap_or_default()
}

fn num(v: f64) -> String {
    format!("{v:.1}")
}

/// Draws `buckets` (start, counts), each `bucket_ms` long. `selection` is the selected span
/// (unix ms, start inclusive, end exclusive); `link(start, end)` is where selecting a span goes.
pub fn draw(
    buckets: &[(i64, Counts)],
    bucket_ms: i64,
    selection: Option<(i64, i64)>,
    link: impl Fn(i64, i64) -> String,
) -> Chart {
    let n = buckets.len().max(1) as f64;
    let step = WIDTH / n;
    let gap = if step > 4.0 { 1.0 } else { 0.0 };
    let max = buckets.iter().map(|(_, c)| c.confirmed + c.resolved + c.unknown + c.failed).max().unwrap_or(0);
    let with_date = buckets.last().zip(buckets.first()).is_some_and(|(l, f)| l.0 - f.0 >= 86_400_000);
    let with_seconds = bucket_ms < 60_000;
    let time = |ms: i64| label_time(ms, with_date, with_seconds);
    let scale = |count: i64| {
        if max == 0 || count == 0 { 0.0 } else { (count as f64 / max as f64 * PLOT_HEIGHT).max(1.5) }
    };
    let columns = buckets
        .iter()
        .enumerate()
        .map(|(i, (start, c))| {
            let end = start + bucket_ms;
            let selected = selection.is_some_and(|(from, to)| *start >= from && end <= to);
            // A column extends the selection to itself; in an empty selection it selects itself.
            let (from, to) = match selection {
                Some((from, to)) if !selected => (from.min(*start), to.max(end)),
                _ => (*start, end),
            };
            let mut y = TOP + PLOT_HEIGHT;
            let mut segments = Vec::new();
            let layers =
                [("confirmed", c.confirmed), ("resolved", c.resolved), ("unknown", c.unknown), ("failed", c.failed)];
            for (class, count) in layers {
                let h = scale(count);
                if h > 0.0 {
                    y -= h;
                    segments.push(Segment { class, y: num(y), height: num(h) });
                }
            }
            let overdue = if c.overdue > 0 { format!(" ({} overdue)", c.overdue) } else { String::new() };
            Column {
                x: num(i as f64 * step),
                width: num((step - gap).max(0.5)),
                hit_width: num(step),
                start: *start,
                end,
                href: link(from, to),
                label: format!(
                    "{}–{} UTC: {} confirmed, {} unknown{overdue}, {} failed{}{}",
                    time(*start),
                    label_time(end, false, with_seconds),
                    c.confirmed,
                    c.unknown,
                    c.failed,
                    if c.resolved > 0 { format!(", {} resolved", c.resolved) } else { String::new() },
                    if selected { " (selected)" } else { "" },
                ),
                segments,
                selected,
            }
        })
        .collect::<Vec<_>>();
    let every = buckets.len().div_ceil(TICKS).max(1);
    let ticks = buckets
        .iter()
        .enumerate()
        .step_by(every)
        .map(|(i, (start, _))| Tick { x: num(i as f64 * step), text: time(*start) })
        .collect();
    let shade = {
        let picked: Vec<&Column> = columns.iter().filter(|c| c.selected).collect();
        match (picked.first(), picked.last()) {
            (Some(first), Some(_)) => {
                let x0: f64 = first.x.parse().unwrap_or(0.0);
                Some((num(x0), num(picked.len() as f64 * step)))
            }
            _ => None,
        }
    };
    Chart {
        columns,
        ticks,
        max,
        plot_top: num(TOP),
        plot_bottom: num(TOP + PLOT_HEIGHT),
        tick_y: num(TOP + PLOT_HEIGHT + 16.0),
        shade,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(confirmed: i64, unknown: i64, failed: i64) -> Counts {
        Counts { confirmed, unknown, failed, resolved: 0, overdue: 0, total: confirmed + unknown + failed }
    }

    const M15: i64 = 15 * 60_000;

    #[test]
    fn columns_stack_confirmed_unknown_failed_scaled_to_the_tallest() {
        let buckets = vec![(0, counts(10, 0, 0)), (M15, counts(0, 30, 10)), (2 * M15, counts(0, 0, 0))];
        let chart = draw(&buckets, M15, None, |a, b| format!("?from={a}&to={b}"));
        assert_eq!(chart.max, 40);
        let tall = &chart.columns[1];
        let classes: Vec<_> = tall.segments.iter().map(|s| s.class).collect();
        assert_eq!(classes, ["unknown", "failed"]);
        assert_eq!(tall.segments[0].height, "150.0");
        assert_eq!(tall.segments[1].height, "50.0");
        assert_eq!(tall.segments[1].y, num(TOP));
        assert!(chart.columns[2].segments.is_empty());
        assert_eq!(tall.label, "00:15–00:30 UTC: 0 confirmed, 30 unknown, 10 failed");
        assert_eq!(tall.href, format!("?from={M15}&to={}", 2 * M15));
    }

    #[test]
    fn resolved_events_are_a_layer_of_their_own_between_confirmed_and_unknown() {
        let mut c = counts(10, 5, 5);
        c.resolved = 20;
        c.total += 20;
        let chart = draw(&[(0, c)], M15, None, |a, b| format!("{a}-{b}"));
        assert_eq!(chart.max, 40, "resolved ones count in the column's height");
        let layers: Vec<_> = chart.columns[0].segments.iter().map(|s| (s.class, s.height.as_str())).collect();
        assert_eq!(layers, [("confirmed", "50.0"), ("resolved", "100.0"), ("unknown", "25.0"), ("failed", "25.0")]);
        assert!(chart.columns[0].label.ends_with("5 failed, 20 resolved"), "{}", chart.columns[0].label);
    }

    #[test]
    fn a_column_widens_the_selection_to_itself() {
        let buckets: Vec<_> = (0..4).map(|i| (i * M15, counts(1, 1, 0))).collect();
        let chart = draw(&buckets, M15, Some((M15, 2 * M15)), |a, b| format!("{a}-{b}"));
        assert!(chart.columns[1].selected && !chart.columns[3].selected);
        assert_eq!(chart.columns[3].href, format!("{M15}-{}", 4 * M15));
        assert_eq!(chart.columns[0].href, format!("0-{}", 2 * M15));
        assert_eq!(chart.columns[1].href, format!("{M15}-{}", 2 * M15));
        assert_eq!(chart.shade, Some((num(WIDTH / 4.0), num(WIDTH / 4.0))));
    }
}
