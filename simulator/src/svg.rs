//! Draws a run's [`Timeline`] as an SVG: one row per node, coloured by
//! whether its digest root agrees with the majority (green), differs
//! (orange) or the node is down (grey); a strip above each row shows which
//! side of a partition the node is on (or pink for a cut link); vertical
//! lines mark faults, the start of the liveness phase (blue) and
//! convergence (dark green). Labels are laid out by [`labels`] so that none
//! overlap and none leave the canvas: faults that touch the whole cluster
//! in lanes above the rows, a node's own marks in lanes under its row, the
//! liveness and convergence labels in lanes under the rows; the canvas
//! grows to hold the lanes (and a long title).

use std::fmt::Write;

use crate::timeline::{Mark, NodeState, Timeline};

pub mod labels;

use labels::{Lanes, Placed, ASCENT, DESCENT};

const LEFT: f64 = 80.0;
const WIDTH: f64 = 1000.0;
/// Canvas right of the plot.
const RIGHT: f64 = 40.0;
/// Labels keep this far from the canvas' edges.
const MARGIN: f64 = 4.0;
const TITLE_SIZE: f64 = 14.0;
const TITLE_Y: f64 = 18.0;
/// Where the lanes above the rows may start: below the title.
const BAND_TOP: f64 = 28.0;
const ROW: f64 = 22.0;
const STRIP: f64 = 6.0;
const GAP: f64 = 8.0;
/// Marks' labels: font size and lane height (the lane holds the font's
/// whole ascent and descent, so lanes never overlap).
const MARK_SIZE: f64 = 9.0;
const MARK_LANE: f64 = 12.0;
/// The liveness and convergence labels (bold).
const PHASE_SIZE: f64 = 11.0;
const PHASE_LANE: f64 = 15.0;
/// Lanes a band may take before a label is left out (its line keeps the
/// label as a tooltip): a flapping link marks hundreds of moments.
const TOP_LANES: usize = 8;
const NODE_LANES: usize = 4;
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

/// The baseline that centres text of `size` in a lane from `lane_top`,
/// `lane` high.
fn baseline(lane_top: f64, lane: f64, size: f64) -> f64 {
    lane_top + (lane - (ASCENT + DESCENT) * size) / 2.0 + ASCENT * size
}

/// A vertical line for the liveness phase or convergence, and its label.
struct Phase {
    at_ms: u64,
    stroke: &'static str,
    width: f64,
    text: String,
    label: Option<Placed>,
}

/// Where everything goes: labels placed first, then the bands made as
/// tall as their lanes.
struct Layout {
    end_ms: f64,
    width: f64,
    /// Top of the first row; the lanes above it end 6 px higher.
    top: f64,
    /// Top of each row, and one more: where the rows end.
    rows: Vec<f64>,
    /// Per mark of the timeline, where its label went (None: left out).
    marks: Vec<Option<Placed>>,
    phases: Vec<Phase>,
    axis: f64,
    height: f64,
}

impl Layout {
    fn new(timeline: &Timeline, title: &str) -> Self {
        let title_width = labels::text_width(title, TITLE_SIZE, true);
        let width = (LEFT + WIDTH + RIGHT).max(LEFT + title_width + MARGIN);
        let mut layout = Self {
            end_ms: timeline.end_ms.max(1) as f64,
            width,
            top: 0.0,
            rows: Vec::new(),
            marks: vec![None; timeline.marks.len()],
            phases: Vec::new(),
            axis: 0.0,
            height: 0.0,
        };
        // In time order, so that each band fills from the left.
        let mut order: Vec<usize> = (0..timeline.marks.len()).collect();
        order.sort_by_key(|i| timeline.marks[*i].at_ms);
        let lanes = |max| Lanes::new(MARGIN, width - MARGIN, max);
        let mut top_band = lanes(TOP_LANES);
        let mut node_bands: Vec<Lanes> = (0..timeline.nodes).map(|_| lanes(NODE_LANES)).collect();
        for i in order {
            let mark = &timeline.marks[i];
            let text = mark_text(mark);
            let w = labels::text_width(&text, MARK_SIZE, false);
            let band = match mark.node {
                Some(node) => node_bands.get_mut(node),
                None => Some(&mut top_band),
            };
            layout.marks[i] = band.and_then(|b| b.place(layout.x(mark.at_ms), w));
        }
        layout.phases.push(Phase {
            at_ms: timeline.liveness_ms,
            stroke: "#1565c0",
            width: 2.0,
            text: "liveness".into(),
            label: None,
        });
        if let Some(at) = timeline.converged_ms {
            layout.phases.push(Phase {
                at_ms: at,
                stroke: "#1b5e20",
                width: 3.0,
                text: format!("converged +{} ms", at.saturating_sub(timeline.liveness_ms)),
                label: None,
            });
        }
        let mut phase_band = lanes(layout.phases.len());
        for i in 0..layout.phases.len() {
            let w = labels::text_width(&layout.phases[i].text, PHASE_SIZE, true);
            layout.phases[i].label = phase_band.place(layout.x(layout.phases[i].at_ms), w);
        }
        layout.top = BAND_TOP + top_band.used() as f64 * MARK_LANE + 6.0;
        let mut y = layout.top;
        for band in &node_bands {
            layout.rows.push(y);
            y += STRIP + ROW + GAP;
            if band.used() > 0 {
                y += 2.0 + band.used() as f64 * MARK_LANE;
            }
        }
        layout.rows.push(y);
        layout.axis = y + phase_band.used() as f64 * PHASE_LANE + 14.0;
        layout.height = layout.axis + 45.0;
        layout
    }

    fn x(&self, t: u64) -> f64 {
        LEFT + t as f64 / self.end_ms * WIDTH
    }

    fn rows_bottom(&self) -> f64 {
        self.rows.last().copied().unwrap_or(self.top)
    }

    /// Top of lane `lane` above the rows (lane 0 is the lowest).
    fn top_lane(&self, lane: usize) -> f64 {
        self.top - 6.0 - (lane + 1) as f64 * MARK_LANE
    }

    /// Top of lane `lane` under node `node`'s row.
    fn node_lane(&self, node: usize, lane: usize) -> f64 {
        self.rows[node] + STRIP + ROW + 2.0 + lane as f64 * MARK_LANE
    }

    fn phase_lane(&self, lane: usize) -> f64 {
        self.rows_bottom() + lane as f64 * PHASE_LANE
    }
}

/// A mark's label: a node's marks sit under its row, where the axis
/// tells when; the others say when.
fn mark_text(mark: &Mark) -> String {
    match mark.node {
        Some(_) => labels::shorten(&mark.label),
        None => labels::shorten(&format!("{} {}", mark.at_ms, mark.label)),
    }
}

/// The SVG document for `timeline`, titled `title`.
pub fn render(timeline: &Timeline, title: &str) -> String {
    let layout = Layout::new(timeline, title);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif" font-size="11">"#,
        layout.width.ceil(),
        layout.height.ceil()
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{TITLE_Y}" font-size="{TITLE_SIZE}" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for i in 0..timeline.nodes {
        draw_row(&mut svg, timeline, i, layout.rows[i], &|t| layout.x(t));
    }
    draw_marks(&mut svg, timeline, &layout);
    draw_axis(&mut svg, timeline, layout.axis, &|t| layout.x(t));
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

fn draw_marks(svg: &mut String, timeline: &Timeline, layout: &Layout) {
    let bottom = layout.rows_bottom();
    for (mark, placed) in timeline.marks.iter().zip(&layout.marks) {
        let mx = layout.x(mark.at_ms);
        let tooltip = escape(&format!("{} {}", mark.at_ms, mark.label));
        // The line reaches its label's lane, so that the two read as one.
        let (y0, y1, label_top) = match (mark.node, placed) {
            // A mark for a node the timeline has no row for: nowhere to go.
            (Some(i), _) if i >= timeline.nodes => continue,
            (Some(i), Some(p)) => {
                let lane = layout.node_lane(i, p.lane);
                (layout.rows[i], lane + MARK_LANE - 2.0, lane)
            }
            (Some(i), None) => (layout.rows[i], layout.rows[i] + STRIP + ROW, 0.0),
            (None, Some(p)) => {
                let lane = layout.top_lane(p.lane);
                (lane + 2.0, bottom - GAP, lane)
            }
            (None, None) => (layout.top - 4.0, bottom - GAP, 0.0),
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{mx:.1}" y1="{y0:.1}" x2="{mx:.1}" y2="{y1:.1}" stroke="#212121" stroke-width="1" stroke-dasharray="3,2"><title>{tooltip}</title></line>"##
        );
        if let Some(p) = placed {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="{MARK_SIZE}" text-anchor="{}">{}<title>{tooltip}</title></text>"#,
                p.x,
                baseline(label_top, MARK_LANE, MARK_SIZE),
                p.anchor(),
                escape(&mark_text(mark)),
            );
        }
    }
    for phase in &layout.phases {
        let lx = layout.x(phase.at_ms);
        let lane_top = phase.label.map_or(bottom, |p| layout.phase_lane(p.lane));
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{lx:.1}" y2="{:.1}" stroke="{}" stroke-width="{}"/>"#,
            layout.top - 4.0,
            lane_top + PHASE_LANE - 2.0,
            phase.stroke,
            phase.width
        );
        if let Some(p) = phase.label {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" fill="{}" font-size="{PHASE_SIZE}" font-weight="bold" text-anchor="{}">{}</text>"#,
                p.x,
                baseline(lane_top, PHASE_LANE, PHASE_SIZE),
                phase.stroke,
                p.anchor(),
                escape(&phase.text)
            );
        }
    }
}

fn draw_axis(svg: &mut String, timeline: &Timeline, y: f64, x: &dyn Fn(u64) -> f64) {
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
