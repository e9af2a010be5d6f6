//! Server-rendered SVG charts of usage buckets: a key's sparkline in the
//! keys list, and its requests (allowed and refused) and cost over time.

use crate::clock;
use crate::store::usage::{UsageBucket, ALLOWED};
use maud::{html, Markup};

/// One point of a series: bucket start, allowed and refused requests, cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Point {
    pub start: u64,
    pub allowed: u64,
    pub refused: u64,
    pub cost_micros: u64,
}

impl Point {
    fn total(self) -> u64 {
        self.allowed.saturating_add(self.refused)
    }
}

/// Every bucket of `step` seconds in `[from, to)`, zero where `buckets`
/// has none.
pub fn series(buckets: &[UsageBucket], from: u64, to: u64, step: u64) -> Vec<Point> {
    let step = step.max(1);
    let mut points = Vec::new();
    let mut start = from / step * step;
    while start < to {
        let mut point = Point {
            start,
            ..Point::default()
        };
        for b in buckets.iter().filter(|b| b.start == start) {
            for (outcome, count) in &b.outcomes {
                if outcome == ALLOWED {
                    point.allowed += count;
                } else {
                    point.refused += count;
                }
            }
            point.cost_micros += b.cost_micros;
        }
        points.push(point);
        start += step;
    }
    points
}

/// A y coordinate for `value` of `max` in a chart `height` high.
fn y(value: u64, max: u64, height: f64) -> f64 {
    height - (value as f64 / max.max(1) as f64) * height
}

/// The requests of `points` as a small line, 120 × 24.
pub fn sparkline(points: &[Point]) -> Markup {
    let (w, h) = (120.0, 24.0);
    let max = points.iter().map(|p| p.total()).max().unwrap_or(0);
    let dx = w / (points.len().max(2) - 1) as f64;
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * dx,
                y(p.total(), max, h - 2.0) + 1.0
            )
        })
        .collect();
    let total: u64 = points.iter().map(|p| p.total()).sum();
    html! {
        svg.sparkline width="120" height="24" viewBox="0 0 120 24" role="img"
            aria-label=(format!("{total} requests")) {
            title { (total) " requests" }
            polyline points=(line.join(" ")) fill="none" stroke="#2563eb" stroke-width="1.5" {}
        }
    }
}

/// A bar chart of requests per bucket (allowed and refused stacked) and
/// a line of cost, with their scales and time range.
pub fn usage_chart(points: &[Point]) -> Markup {
    let (w, h, left, bottom) = (720.0, 200.0, 56.0, 20.0);
    let plot = w - left;
    let max = points.iter().map(|p| p.total()).max().unwrap_or(0);
    let max_cost = points.iter().map(|p| p.cost_micros).max().unwrap_or(0);
    let bar = plot / points.len().max(1) as f64;
    let first = points.first().map_or(0, |p| p.start);
    let last = points.last().map_or(0, |p| p.start);
    let cost_line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let x = left + (i as f64 + 0.5) * bar;
            format!("{x:.1},{:.1}", y(p.cost_micros, max_cost, h - bottom))
        })
        .collect();
    html! {
        svg.chart width="720" height="200" viewBox="0 0 720 200" role="img"
            aria-label="Requests and cost over time" {
            text x="0" y="12" class="axis" { (max) " req" }
            text x="0" y=(h - bottom) class="axis" { "0" }
            line x1=(left) y1=(h - bottom) x2=(w) y2=(h - bottom) stroke="#9ca3af" {}
            @for (i, p) in points.iter().enumerate() {
                @let x = left + i as f64 * bar;
                @let allowed_top = y(p.allowed, max, h - bottom);
                @let total_top = y(p.total(), max, h - bottom);
                rect x=(format!("{x:.1}")) y=(format!("{allowed_top:.1}"))
                    width=(format!("{:.1}", (bar - 1.0).max(1.0)))
                    height=(format!("{:.1}", h - bottom - allowed_top)) fill="#16a34a" {
                    title { (clock::rfc3339(p.start)) ": " (p.allowed) " allowed, "
                            (p.refused) " refused, cost " (p.cost_micros) " µ" }
                }
                rect x=(format!("{x:.1}")) y=(format!("{total_top:.1}"))
                    width=(format!("{:.1}", (bar - 1.0).max(1.0)))
                    height=(format!("{:.1}", allowed_top - total_top)) fill="#dc2626" {}
            }
            polyline points=(cost_line.join(" ")) fill="none" stroke="#7c3aed" stroke-width="2" {}
            text x=(left) y=(h - 4.0) class="axis" { (clock::rfc3339(first)) }
            text x=(w) y=(h - 4.0) class="axis" text-anchor="end" { (clock::rfc3339(last)) }
            text x=(w) y="12" class="axis" text-anchor="end" { "cost max " (max_cost) " µ" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn series_fills_gaps_and_splits_outcomes() {
        let b = UsageBucket {
            start: 7200,
            outcomes: BTreeMap::from([("allowed".into(), 5), ("invalid_key".into(), 2)]),
            cost_micros: 9,
        };
        let s = series(&[b], 3600, 4 * 3600, 3600);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[1],
            Point {
                start: 7200,
                allowed: 5,
                refused: 2,
                cost_micros: 9
            }
        );
        assert_eq!(s[0].total(), 0);
        assert!(sparkline(&s).into_string().contains("7 requests"));
        assert!(usage_chart(&s).into_string().contains("<svg"));
    }
}
