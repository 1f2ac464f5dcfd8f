//! The timeline SVG's text, laid out by a real SVG renderer (usvg) with a
//! real font: every label lies inside the canvas and no two overlap, and
//! the document renders to PNG (resvg).
//!
//! The font is DejaVu Sans, embedded by the `dejavu` crate rather than
//! looked up on the machine, so the test is the same everywhere and never
//! passes for want of a font. It is among the widest common sans-serif
//! faces: `svg::labels` estimates widths for it, and a layout that fits it
//! fits the narrower faces a viewer may pick.

use std::path::Path;
use std::sync::Arc;

use chorus_simulator::run::{run, RunOptions};
use chorus_simulator::scenario::Scenario;
use chorus_simulator::svg::{self, labels};
use chorus_simulator::swarm;
use chorus_simulator::timeline::{Mark, NodeState, Sample, Timeline};
use resvg::usvg::{self, fontdb, Node, Rect};

/// One `<text>` as usvg laid it out.
struct Label {
    text: String,
    /// The box its font's ascent, descent and advances span.
    bbox: Rect,
    size: f64,
    bold: bool,
}

fn fonts() -> Arc<fontdb::Database> {
    let mut db = fontdb::Database::new();
    db.load_font_data(dejavu::sans::regular().to_vec());
    db.load_font_data(dejavu::sans::bold().to_vec());
    db.set_sans_serif_family("DejaVu Sans");
    Arc::new(db)
}

fn collect(group: &usvg::Group, out: &mut Vec<Label>) {
    for node in group.children() {
        match node {
            Node::Group(g) => collect(g, out),
            Node::Text(t) => {
                let chunks = t.chunks();
                let span = chunks.first().and_then(|c| c.spans().first());
                out.push(Label {
                    text: chunks.iter().map(|c| c.text()).collect(),
                    bbox: t.abs_bounding_box(),
                    size: span.map_or(0.0, |s| f64::from(s.font_size().get())),
                    bold: span.is_some_and(|s| s.font().weight() >= 600),
                });
            }
            Node::Path(_) | Node::Image(_) => {}
        }
    }
}

fn overlap(a: &Rect, b: &Rect) -> bool {
    a.left() < b.right() && b.left() < a.right() && a.top() < b.bottom() && b.top() < a.bottom()
}

/// Lays `svg` out, checks its labels, renders it into `png`; returns the
/// labels' texts.
fn check(svg: &str, png: &Path) -> Vec<String> {
    let options = usvg::Options {
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).expect("the SVG parses");
    let mut found = Vec::new();
    collect(tree.root(), &mut found);
    // usvg drops a text it has no font for: every one must be there.
    let texts = svg.matches("<text").count();
    assert_eq!(found.len(), texts, "usvg laid out every text with the font");
    // Every fault is listed, not just the first: a failure shows the
    // whole layout's trouble.
    let mut faults = Vec::new();
    let (w, h) = (tree.size().width(), tree.size().height());
    for label in &found {
        let b = &label.bbox;
        if b.left() < 0.0 || b.top() < 0.0 || b.right() > w || b.bottom() > h {
            faults.push(format!(
                "{:?} at {b:?} leaves the {w}x{h} canvas",
                label.text
            ));
        }
        // The layout's estimate must hold for the real font, or it could
        // not keep labels apart in a viewer either.
        let estimate = labels::text_width(&label.text, label.size, label.bold);
        let tall = (labels::ASCENT + labels::DESCENT) * label.size;
        if f64::from(b.width()) > estimate || f64::from(b.height()) > tall {
            faults.push(format!(
                "{:?} at {b:?} is larger than estimated ({estimate:.1} x {tall:.1})",
                label.text
            ));
        }
    }
    for (i, a) in found.iter().enumerate() {
        for b in &found[i + 1..] {
            if overlap(&a.bbox, &b.bbox) {
                faults.push(format!(
                    "{:?} at {:?} overlaps {:?} at {:?}",
                    a.text, a.bbox, b.text, b.bbox
                ));
            }
        }
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
    let size = tree.size().to_int_size();
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(size.width(), size.height()).expect("a non-empty canvas");
    resvg::render(&tree, usvg::Transform::default(), &mut pixmap.as_mut());
    let inked = pixmap.pixels().iter().filter(|p| p.red() < 128).count();
    assert!(
        inked > 1_000,
        "the PNG shows the drawing ({inked} dark pixels)"
    );
    pixmap.save_png(png).expect("the PNG is written");
    found.into_iter().map(|l| l.text).collect()
}

fn png_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// The case reported: "down everywhere" and "calls re-homed" were drawn
/// over each other, and the liveness and convergence labels ran off the
/// right edge.
#[test]
fn media_node_crash_seed_3_labels_are_apart_and_inside() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/media-node-crash.toml");
    let scenario = Scenario::load(&path).expect("the scenario ships");
    let opts = RunOptions {
        timeline: true,
        ..RunOptions::shipped("media-node-crash", 3)
    };
    let result = run(&scenario, &opts);
    let title = "simulator/scenarios/media-node-crash.toml  seed 3  pass";
    let document = svg::render(&result.timeline, title);
    let dir = png_dir();
    let texts = check(&document, &dir.path().join("media-node-crash-3.png"));
    for wanted in [
        "down everywhere",
        "calls re-homed",
        "liveness",
        "converged +",
    ] {
        assert!(
            texts.iter().any(|t| t.starts_with(wanted)),
            "{wanted:?} is drawn: {texts:?}"
        );
    }
}

/// Swarm seeds draw all kinds of faults, on clusters of 2 to 5 nodes.
#[test]
fn swarm_seed_labels_are_apart_and_inside() {
    let dir = png_dir();
    for seed in 0..6 {
        let (_, result) = swarm::run_seed(seed, false, true);
        let document = svg::render(&result.timeline, &format!("swarm  seed {seed}"));
        check(&document, &dir.path().join(format!("swarm-{seed}.png")));
    }
}

/// More than fits: a link flapping every 40 ms up to the very end, long
/// partition labels, a node's marks piled at the right edge, convergence
/// at the last moment and a long title. Labels may be left out (their
/// lines keep them as tooltips), never drawn over each other or cut off.
#[test]
fn a_crowded_timeline_keeps_its_labels_apart_and_inside() {
    let nodes = 20;
    let end_ms = 20_000;
    let mut timeline = Timeline::new(nodes);
    for at_ms in (0..=end_ms).step_by(500) {
        timeline.samples.push(Sample {
            at_ms,
            states: vec![NodeState::Agrees; nodes],
            groups: vec![0; nodes],
            cut: vec![false; nodes],
        });
    }
    let mark = |at_ms, node, label: &str| Mark {
        at_ms,
        node,
        label: label.into(),
    };
    for at_ms in (12_000..=end_ms).step_by(40) {
        let label = if at_ms % 80 == 0 {
            "cut 0→1"
        } else {
            "link 0→1"
        };
        timeline.marks.push(mark(at_ms, None, label));
    }
    let halves: Vec<Vec<usize>> = vec![(0..10).collect(), (10..20).collect()];
    timeline
        .marks
        .push(mark(100, None, &format!("partition {halves:?}")));
    timeline
        .marks
        .push(mark(19_990, None, &format!("split {halves:?}")));
    for (i, label) in ["crash", "down everywhere", "calls re-homed", "restart"]
        .into_iter()
        .enumerate()
    {
        timeline
            .marks
            .push(mark(19_900 + 20 * i as u64, Some(3), label));
    }
    timeline
        .marks
        .push(mark(0, Some(19), "clock +5000ms -200ppm"));
    timeline.liveness_ms = end_ms - 5;
    timeline.converged_ms = Some(end_ms);
    timeline.end_ms = end_ms;
    let title = format!(
        "{}  seed 18446744073709551615  FAIL",
        "scenarios/".repeat(12)
    );
    let document = svg::render(&timeline, &title);
    let texts = check(&document, &png_dir().path().join("crowded.png"));
    for wanted in ["crash", "calls re-homed", "restart", "converged +5 ms"] {
        assert!(texts.iter().any(|t| t == wanted), "{wanted:?}: {texts:?}");
    }
    assert!(
        texts.iter().filter(|t| t.contains("0→1")).count() > 20,
        "the flapping link keeps many of its labels: {texts:?}"
    );
}
