//! Where the timeline's text labels go. Each label sits beside the line it
//! names, in the first *lane* (a row of text) where it overlaps no label
//! placed before it; near the canvas' right edge it turns to the line's
//! left. The drawing then makes each band as tall as its lanes.
//!
//! No font is at hand when the SVG is written (a viewer draws it with the
//! sans-serif it has), so widths and heights are estimates that err wide:
//! the per-character table holds for DejaVu Sans, among the widest common
//! sans-serif faces, and so for narrower ones (Arial, Helvetica,
//! Liberation Sans). `tests/svg_labels.rs` checks that against DejaVu.

/// Space between a line and its label, and between labels in a lane.
pub const PAD: f64 = 3.0;

/// How high a glyph can reach above the baseline, and below it, as a
/// fraction of the font size (DejaVu Sans: 0.93 and 0.24).
pub const ASCENT: f64 = 0.95;
pub const DESCENT: f64 = 0.25;

/// A label longer than this is cut, with an ellipsis (a partition of
/// twenty nodes would run over half the canvas); its full text stays in
/// the SVG as a tooltip.
pub const MAX_CHARS: usize = 56;

/// An estimate, never short, of how wide `text` is drawn at `size` px.
pub fn text_width(text: &str, size: f64, bold: bool) -> f64 {
    let em: f64 = text.chars().map(char_em).sum();
    // DejaVu Sans Bold is at most 12 % wider than the regular face.
    em * size * if bold { 1.12 } else { 1.0 }
}

/// A character's advance in ems, rounded up from DejaVu Sans.
fn char_em(c: char) -> f64 {
    match c {
        ' ' | '.' | ',' | ':' | ';' | '\'' | '|' | 'i' | 'j' | 'l' => 0.36,
        'f' | 't' | 'r' | 'I' | 'J' | '!' | '"' | '(' | ')' | '[' | ']' | '-' | '/' | '\\' => 0.5,
        'm' | 'w' | 'M' | 'W' | '@' | '%' | '&' | '+' | '=' | '<' | '>' | '~' | '#' | '^' => 1.05,
        'A'..='Z' => 0.82,
        // Digits and most lower case letters: 0.52 to 0.64 in DejaVu Sans.
        _ if c.is_ascii() => 0.66,
        // Arrows, ellipses and the rest: at most an em in DejaVu Sans.
        _ => 1.05,
    }
}

/// `text`, cut to [`MAX_CHARS`] characters.
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Where a label went: its SVG `x` and anchor, its lane, and the span it
/// covers (estimated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub x: f64,
    /// `text-anchor="end"`: the label ends at `x`, left of its line.
    pub end: bool,
    pub lane: usize,
    pub left: f64,
    pub right: f64,
}

impl Placed {
    pub fn anchor(&self) -> &'static str {
        if self.end {
            "end"
        } else {
            "start"
        }
    }
}

/// The lanes of one band, filled from the lowest index up.
#[derive(Debug)]
pub struct Lanes {
    min_x: f64,
    max_x: f64,
    max_lanes: usize,
    taken: Vec<Vec<(f64, f64)>>,
}

impl Lanes {
    /// Labels must stay within `[min_x, max_x]`; at most `max_lanes` rows.
    pub fn new(min_x: f64, max_x: f64, max_lanes: usize) -> Self {
        Self {
            min_x,
            max_x,
            max_lanes,
            taken: Vec::new(),
        }
    }

    /// Lanes used so far.
    pub fn used(&self) -> usize {
        self.taken.len()
    }

    /// Places a label `width` wide for the line at `at`: right of it where
    /// it fits in the canvas, else left of it, else against the nearest
    /// edge; in the first lane where it overlaps nothing. `None` when every
    /// lane is full there (the caller keeps the line and its tooltip).
    pub fn place(&mut self, at: f64, width: f64) -> Option<Placed> {
        let (x, end, left) = if at + PAD + width <= self.max_x {
            (at + PAD, false, at + PAD)
        } else if at - PAD - width >= self.min_x {
            (at - PAD, true, at - PAD - width)
        } else {
            let left = (self.max_x - width).max(self.min_x);
            (left, false, left)
        };
        let right = left + width;
        let free = |spans: &Vec<(f64, f64)>| {
            spans
                .iter()
                .all(|(l, r)| right + PAD <= *l || *r + PAD <= left)
        };
        let lane = match self.taken.iter().position(free) {
            Some(lane) => lane,
            None if self.taken.len() < self.max_lanes => {
                self.taken.push(Vec::new());
                self.taken.len() - 1
            }
            None => return None,
        };
        self.taken[lane].push((left, right));
        Some(Placed {
            x,
            end,
            lane,
            left,
            right,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_labels_take_separate_lanes() {
        let mut lanes = Lanes::new(0.0, 1000.0, 4);
        let a = lanes.place(640.0, 90.0).expect("room");
        let b = lanes.place(642.7, 80.0).expect("room");
        assert_eq!((a.lane, b.lane), (0, 1));
        let c = lanes.place(800.0, 50.0).expect("room");
        assert_eq!(c.lane, 0, "a label clear of the others reuses lane 0");
    }

    #[test]
    fn labels_turn_left_at_the_right_edge_and_stay_inside() {
        let mut lanes = Lanes::new(4.0, 1116.0, 4);
        let p = lanes.place(1080.0, 100.0).expect("room");
        assert!(p.end && p.right <= 1080.0 && p.left >= 4.0, "{p:?}");
        // Fits neither side of its line: against the right edge.
        let wide = lanes.place(500.0, 900.0).expect("room");
        assert!(wide.left >= 4.0 && wide.right <= 1116.0, "{wide:?}");
    }

    #[test]
    fn a_full_band_refuses() {
        let mut lanes = Lanes::new(0.0, 1000.0, 2);
        assert!(lanes.place(10.0, 100.0).is_some());
        assert!(lanes.place(10.0, 100.0).is_some());
        assert_eq!(lanes.place(10.0, 100.0), None);
        assert_eq!(lanes.used(), 2);
    }

    #[test]
    fn long_labels_are_cut() {
        let long = "x".repeat(200);
        assert_eq!(shorten(&long).chars().count(), MAX_CHARS);
        assert_eq!(shorten("crash"), "crash");
    }
}
