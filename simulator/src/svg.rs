//! Draws a run's [`Timeline`] as an SVG: one row per node, coloured by
//! whether its digest root agrees with the majority (green), differs
//! (orange) or the node is down (grey); a strip above each row shows which
//! side of a partition the node is on (or pink for a cut link); vertical
//! lines mark faults, the start of the liveness phase (blue) and
//! convergence (dark green).

use std::fmt::Write;

use crate::timeline::{NodeState, Timeline};

const LEFT: f64 = 80.0;
const TOP: f64 = 90.0;
const WIDTH: f64 = 1000.0;
const ROW: f64 = 22.0;
const STRIP: f64 = 6.0;
const GAP: f64 = 8.0;
const GROUP_COLOURS: [&str; 6] = [
    "#1e88e5", "#8e24aa", "#00897b", "#f4511e", "#6d4c41", "#3949ab",
];

fn colour(state: NodeState) -> &'static str {
    match state {
        NodeState::Agrees => "#43a047",
        NodeState::Differs => "#fb8c00",
        NodeState::Down => "#9e9e9e",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG document for `timeline`, titled `title`.
pub fn render(timeline: &Timeline, title: &str) -> String {
    let end = timeline.end_ms.max(1) as f64;
    let x = |t: u64| LEFT + t as f64 / end * WIDTH;
    let row_y = |i: usize| TOP + i as f64 * (ROW + STRIP + GAP);
    let height = row_y(timeline.nodes) + 70.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="11">"#,
        w = LEFT + WIDTH + 40.0
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for i in 0..timeline.nodes {
        draw_row(&mut svg, timeline, i, row_y(i), &x);
    }
    draw_marks(&mut svg, timeline, &x, &row_y);
    draw_axis(&mut svg, timeline, row_y(timeline.nodes), &x);
    let _ = writeln!(svg, "</svg>");
    svg
}

fn draw_row(svg: &mut String, timeline: &Timeline, i: usize, y: f64, x: &dyn Fn(u64) -> f64) {
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end">node {i}</text>"#,
        LEFT - 8.0,
        y + STRIP + ROW * 0.7
    );
    let samples = &timeline.samples;
    let mut start = 0;
    while start < samples.len() {
        let state = samples[start].states[i];
        let group = (samples[start].groups[i], samples[start].cut[i]);
        let mut stop = start + 1;
        while stop < samples.len()
            && samples[stop].states[i] == state
            && (samples[stop].groups[i], samples[stop].cut[i]) == group
        {
            stop += 1;
        }
        let from = x(samples[start].at_ms);
        let to = samples.get(stop).map_or(x(timeline.end_ms), |s| x(s.at_ms));
        let w = (to - from).max(0.5);
        let _ = writeln!(
            svg,
            r#"<rect x="{from:.1}" y="{:.1}" width="{w:.1}" height="{ROW}" fill="{}"/>"#,
            y + STRIP,
            colour(state)
        );
        let strip = match group {
            (0, false) => None,
            (0, true) => Some("#f48fb1"),
            (g, _) => Some(GROUP_COLOURS[g as usize % GROUP_COLOURS.len()]),
        };
        if let Some(fill) = strip {
            let _ = writeln!(
                svg,
                r#"<rect x="{from:.1}" y="{y:.1}" width="{w:.1}" height="{}" fill="{fill}"/>"#,
                STRIP - 1.0
            );
        }
        start = stop;
    }
}

fn draw_marks(
    svg: &mut String,
    timeline: &Timeline,
    x: &dyn Fn(u64) -> f64,
    row_y: &dyn Fn(usize) -> f64,
) {
    let bottom = row_y(timeline.nodes);
    let mut last_label_x = f64::NEG_INFINITY;
    for mark in &timeline.marks {
        let mx = x(mark.at_ms);
        let (y0, y1) = match mark.node {
            Some(i) => (row_y(i), row_y(i) + STRIP + ROW),
            None => (TOP - 4.0, bottom - GAP),
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{mx:.1}" y1="{y0:.1}" x2="{mx:.1}" y2="{y1:.1}" stroke="#212121" stroke-width="1" stroke-dasharray="3,2"/>"##
        );
        let label = format!("{} {}", mark.at_ms, mark.label);
        let title = format!("<title>{}</title>", escape(&label));
        if mark.node.is_some() {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="9">{}{title}</text>"#,
                mx + 2.0,
                y0 + STRIP + ROW * 0.65,
                escape(&mark.label)
            );
        } else if mx - last_label_x > 12.0 {
            last_label_x = mx;
            let _ = writeln!(
                svg,
                r#"<text x="{mx:.1}" y="{:.1}" font-size="9" transform="rotate(-35 {mx:.1} {:.1})">{}{title}</text>"#,
                TOP - 8.0,
                TOP - 8.0,
                escape(&label)
            );
        }
    }
    let mut line = |t: u64, stroke: &str, width: f64, text: String| {
        let lx = x(t);
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{lx:.1}" y2="{:.1}" stroke="{stroke}" stroke-width="{width}"/>"#,
            TOP - 4.0,
            bottom
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" fill="{stroke}" font-weight="bold">{}</text>"#,
            lx + 3.0,
            bottom + 4.0,
            escape(&text)
        );
    };
    line(timeline.liveness_ms, "#1565c0", 2.0, "liveness".to_string());
    if let Some(at) = timeline.converged_ms {
        let text = format!("converged +{} ms", at.saturating_sub(timeline.liveness_ms));
        line(at, "#1b5e20", 3.0, text);
    }
}

fn draw_axis(svg: &mut String, timeline: &Timeline, y: f64, x: &dyn Fn(u64) -> f64) {
    let y = y + 16.0;
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#424242"/>"##,
        LEFT + WIDTH
    );
    let step = tick_step(timeline.end_ms);
    let mut t = 0;
    while t <= timeline.end_ms {
        let tx = x(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{tx:.1}" y1="{y}" x2="{tx:.1}" y2="{}" stroke="#424242"/><text x="{tx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y + 4.0,
            y + 15.0,
            seconds(t)
        );
        t += step;
    }
    let legend = [
        ("#43a047", "root = majority"),
        ("#fb8c00", "root differs"),
        ("#9e9e9e", "down"),
        ("#f48fb1", "a link cut"),
        ("#1e88e5", "partition side"),
    ];
    let mut lx = LEFT;
    for (fill, text) in legend {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{fill}"/><text x="{}" y="{}">{text}</text>"#,
            y + 26.0,
            lx + 14.0,
            y + 35.0
        );
        lx += 130.0;
    }
}

fn tick_step(end_ms: u64) -> u64 {
    let target = (end_ms / 10).max(1);
    [
        10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 60_000, 300_000,
    ]
    .into_iter()
    .find(|s| *s >= target)
    .unwrap_or(600_000)
}

fn seconds(ms: u64) -> String {
    if ms % 1_000 == 0 {
        format!("{} s", ms / 1_000)
    } else {
        format!("{:.1} s", ms as f64 / 1_000.0)
    }
}
