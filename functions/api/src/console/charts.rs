//! Charts as SVG, drawn on the server: no chart library, nothing inline for
//! the Content-Security-Policy to refuse, and each chart carries a title and
//! description for screen readers (the numbers are also in a table beside it).
//! Colours come from classes in `console.css`.

use std::fmt::Write;

/// Escapes text for SVG/HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One bar of a horizontal bar chart.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: i64,
    /// The CSS class that colours it (`bar-sent`, `bar-failed`…).
    pub class: &'static str,
}

const WIDTH: f64 = 640.0;
const LABEL: f64 = 150.0;
const ROW: f64 = 28.0;

/// Horizontal bars scaled to the largest value, each with its count.
pub fn bars(title: &str, bars: &[Bar]) -> String {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1) as f64;
    let height = ROW * bars.len().max(1) as f64 + 8.0;
    let span = WIDTH - LABEL - 90.0;
    let mut desc = String::new();
    for b in bars {
        let _ = write!(desc, "{}: {}. ", b.label, b.value);
    }
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="t-{id} d-{id}" xmlns="http://www.w3.org/2000/svg"><title id="t-{id}">{title}</title><desc id="d-{id}">{desc}</desc>"#,
        id = slug(title),
        title = esc(title),
        desc = esc(desc.trim_end()),
    );
    for (i, b) in bars.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let w = if b.value > 0 {
            (span * b.value as f64 / max).max(2.0)
        } else {
            0.0
        };
        let _ = write!(
            svg,
            r#"<text class="label" x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect class="{class}" x="{LABEL}" y="{y}" width="{w:.1}" height="{h}" rx="3"/><text class="value" x="{vx:.1}" y="{ty}">{value}</text>"#,
            lx = LABEL - 8.0,
            ty = y + ROW * 0.62,
            label = esc(&b.label),
            class = b.class,
            h = ROW - 8.0,
            vx = LABEL + w + 6.0,
            value = b.value,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One line of a time series.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: &'static str,
    pub class: &'static str,
    pub values: Vec<i64>,
}

/// Lines over `labels` (one per point, e.g. hours), with a y axis from 0 and a legend.
pub fn lines(title: &str, labels: &[String], series: &[Series]) -> String {
    let (w, h, left, bottom, top) = (WIDTH, 220.0, 48.0, 28.0, 26.0);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = labels.len().max(2);
    let x = |i: usize| left + (w - left - 10.0) * i as f64 / (n - 1) as f64;
    let y = |v: i64| top + (h - top - bottom) * (1.0 - v as f64 / max);
    let mut desc = String::new();
    for s in series {
        let _ = write!(
            desc,
            "{}: {} in all. ",
            s.name,
            s.values.iter().sum::<i64>()
        );
    }
    let id = slug(title);
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="t-{id} d-{id}" xmlns="http://www.w3.org/2000/svg"><title id="t-{id}">{title}</title><desc id="d-{id}">{desc}</desc>"#,
        title = esc(title),
        desc = esc(desc.trim_end()),
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = (max * frac).round() as i64;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{left}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}"/><text class="axis" x="{tx}" y="{ty:.1}" text-anchor="end">{v}</text>"#,
            x2 = w - 10.0,
            yy = y(v),
            tx = left - 6.0,
            ty = y(v) + 4.0,
        );
    }
    let step = (labels.len() / 6).max(1);
    for (i, label) in labels.iter().enumerate().step_by(step) {
        let _ = write!(
            svg,
            r#"<text class="axis" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(i),
            h - 8.0,
            esc(label)
        );
    }
    for (k, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="{}" points="{}"/><rect class="{}" x="{}" y="6" width="10" height="10"/><text class="axis" x="{}" y="15">{}</text>"#,
            s.class,
            points.join(" "),
            s.class.replace("line-", "key-"),
            left + 110.0 * k as f64,
            left + 14.0 + 110.0 * k as f64,
            esc(s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn slug(title: &str) -> String {
    title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widths(svg: &str) -> Vec<f64> {
        svg.split("width=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next()?.parse().ok())
            .collect()
    }

    #[test]
    fn bars_scale_to_the_largest_and_escape_labels() {
        let svg = bars(
            "Funnel",
            &[
                Bar {
                    label: "queued".into(),
                    value: 100,
                    class: "bar-queued",
                },
                Bar {
                    label: "<read>".into(),
                    value: 50,
                    class: "bar-read",
                },
                Bar {
                    label: "none".into(),
                    value: 0,
                    class: "bar-failed",
                },
            ],
        );
        let w = widths(&svg);
        assert_eq!(w.len(), 3);
        assert!((w[0] - 2.0 * w[1]).abs() < 0.2, "{w:?}");
        assert_eq!(w[2], 0.0);
        assert!(svg.contains("&lt;read&gt;") && !svg.contains("<read>"));
        assert!(svg.contains("<title id=\"t-funnel\">Funnel</title>"));
    }

    #[test]
    fn lines_put_the_peak_at_the_top() {
        let svg = lines(
            "Last 24 hours",
            &["00".into(), "01".into(), "02".into()],
            &[Series {
                name: "sent",
                class: "line-sent",
                values: vec![0, 10, 5],
            }],
        );
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let ys: Vec<f64> = points
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(ys[1] < ys[2] && ys[2] < ys[0], "{ys:?}");
        assert!(svg.contains("sent: 15 in all."));
    }
}
