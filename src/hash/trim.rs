//! Finding the content of an image inside uniform borders: the letterboxing, padding to
//! a square or plain frame a counterfeiter adds, and the white field around a product
//! shot.
//!
//! Each side is trimmed separately, line by line, while the line is "background": at
//! least [`MIN_BACKGROUND_SHARE`] of its pixels within [`TOLERANCE`] levels of the
//! side's outermost line (whose own spread must be small). A price sticker or a caption
//! inside the border therefore stops the trim on that side only where it covers enough
//! of a line.

use std::borrow::Cow;

/// Luma levels (0–255) a background pixel may differ from the border's colour: enough
/// for JPEG noise and gentle vignetting, not for a product's edge.
const TOLERANCE: f32 = 14.0;
/// Share of a line's pixels that must be background for the line to be trimmed.
const MIN_BACKGROUND_SHARE: f32 = 0.985;
/// Trimming that removes less than this share of the area is ignored: the image has no
/// real border, and its whole-image hash already covers it.
const MIN_TRIMMED_AREA: f64 = 0.04;
/// Content smaller than this share of the image (a nearly blank picture) is not trimmed.
const MIN_CONTENT_AREA: f64 = 0.08;

/// A rectangle of a plane, in plane pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// The content rectangle of a `width × height` luma plane, if trimming its uniform
/// borders removes a worthwhile share of it.
pub fn content_rect(luma: &[f32], width: usize, height: usize) -> Option<Rect> {
    if width < 16 || height < 16 {
        return None;
    }
    let px = |x: usize, y: usize| luma[y * width + x];
    let row = |y: usize| (0..width).map(move |x| px(x, y));
    let col = |x: usize| (0..height).map(move |y| px(x, y));
    let top = trim_side(height, row);
    let bottom = trim_side(height, |i| row(height - 1 - i));
    let left = trim_side(width, col);
    let right = trim_side(width, |i| col(width - 1 - i));
    if top + bottom >= height || left + right >= width {
        return None;
    }
    let rect = Rect { x: left, y: top, width: width - left - right, height: height - top - bottom };
    let area = (width * height) as f64;
    let kept = (rect.width * rect.height) as f64 / area;
    (MIN_CONTENT_AREA..=1.0 - MIN_TRIMMED_AREA).contains(&kept).then_some(rect)
}

/// How many lines (from the outside in) of one side are background.
fn trim_side<I: Iterator<Item = f32>>(lines: usize, line: impl Fn(usize) -> I) -> usize {
    let outer: Vec<f32> = line(0).collect();
    let n = outer.len() as f32;
    let mean = outer.iter().sum::<f32>() / n;
    let uniform = outer.iter().filter(|&&v| (v - mean).abs() <= TOLERANCE).count() as f32 >= MIN_BACKGROUND_SHARE * n;
    if !uniform {
        return 0;
    }
    (0..lines)
        .take_while(|&i| line(i).filter(|&v| (v - mean).abs() <= TOLERANCE).count() as f32 >= MIN_BACKGROUND_SHARE * n)
        .count()
}

/// Copy a rectangle out of a plane.
pub fn crop(luma: &[f32], width: usize, rect: Rect) -> Vec<f32> {
    let mut out = Vec::with_capacity(rect.width * rect.height);
    for y in rect.y..rect.y + rect.height {
        out.extend_from_slice(&luma[y * width + rect.x..y * width + rect.x + rect.width]);
    }
    out
}

/// A gutter at most `1 / THIN_GUTTER` of the side is left out of both tiles.
const THIN_GUTTER: usize = 40;

/// The tiles of a collage: the rectangles a `width × height` luma plane splits into
/// along a uniform gutter (a column crossing its whole height, a row crossing its whole
/// width, or both) in its middle half. Empty when there is no such gutter.
///
/// Sellers paste a brand's photo into a grid with their own; each tile alone is a
/// picture a global hash can match, the grid as a whole is not. A line counts as a
/// gutter when [`MIN_BACKGROUND_SHARE`] of it is within [`TOLERANCE`] of its typical
/// level (the median of 15 samples along it); the image splits in the middle of the
/// run of gutter lines nearest its middle.
pub fn collage_tiles(luma: &[f32], width: usize, height: usize) -> Vec<Rect> {
    if width < 32 || height < 32 {
        return Vec::new();
    }
    let px = |x: usize, y: usize| luma[y * width + x];
    // Against the median of 15 samples of the line, stopping as soon as too many
    // pixels differ: most lines of a photo fail within a few dozen pixels.
    let uniform = |n: usize, line: &dyn Fn(usize) -> f32| {
        let mut samples: [f32; 15] = std::array::from_fn(|i| line((2 * i + 1) * n / 30));
        samples.sort_unstable_by(f32::total_cmp);
        let reference = samples[7];
        let allowed = ((1.0 - MIN_BACKGROUND_SHARE) * n as f32) as usize;
        let mut off = 0;
        (0..n).all(|i| {
            off += usize::from((line(i) - reference).abs() > TOLERANCE);
            off <= allowed
        })
    };
    let columns = gutter(width, |x| uniform(height, &|y| px(x, y)));
    let rows = gutter(height, |y| uniform(width, &|x| px(x, y)));
    // A thin run is the gutter alone, which belongs to neither tile (a strip of it
    // left on a tile moves its hash). A wider one spans plain fields of the tiles' own
    // too: split it in the middle, so that each tile keeps its share.
    let spans = |split: Option<(usize, usize)>, len: usize| match split {
        Some((start, end)) if end - start <= len / THIN_GUTTER => vec![(0, start), (end, len)],
        Some((start, end)) => vec![(0, (start + end) / 2), ((start + end) / 2, len)],
        None => vec![(0, len)],
    };
    if columns.is_none() && rows.is_none() {
        return Vec::new();
    }
    let mut tiles = Vec::new();
    for &(y0, y1) in &spans(rows, height) {
        for &(x0, x1) in &spans(columns, width) {
            tiles.push(Rect { x: x0, y: y0, width: x1 - x0, height: y1 - y0 });
        }
    }
    tiles
}

/// The run `[start, end)` of gutter lines (by `is_gutter`) nearest the middle of
/// `len` lines, among those inside its middle half.
fn gutter(len: usize, is_gutter: impl Fn(usize) -> bool) -> Option<(usize, usize)> {
    let (lo, hi) = (len / 4, len - len / 4);
    let mut best: Option<(usize, usize)> = None;
    let mut i = lo;
    while i < hi {
        if !is_gutter(i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < len && is_gutter(i) {
            i += 1;
        }
        let (mid, centre) = ((start + i) as f64 / 2.0, len as f64 / 2.0);
        if best.is_none_or(|(s, e)| (mid - centre).abs() < ((s + e) as f64 / 2.0 - centre).abs()) {
            best = Some((start, i));
        }
    }
    best
}

/// Luma step (0–255) across two pixels that counts as part of a picture's edge: a
/// product shot's off-white field (248–252) pasted on a white page still shows one.
const EDGE_STEP: f32 = 3.0;
/// An edge line may pass this many plane pixels without a step (where the picture meets
/// the page in the same colour for a moment).
const EDGE_GAP: usize = 8;
/// A corner joins two edge lines when one of them ends within this many plane pixels
/// of it.
const CORNER_SLACK: usize = 6;
/// A side's line may fall short of the side by this many plane pixels plus 4% of its
/// length at each end.
const SIDE_SLACK: usize = 3;
/// A framed picture spans at least this share of each side of the image…
const MIN_FRAMED_SIDE: f32 = 0.3;
/// …and leaves at least this share of its area outside.
const MIN_FRAME_AREA: f32 = 0.08;
/// Beside a picture's edge, the page is plain: along at least this share of the edge,
/// consecutive pixels two pixels out differ by at most [`PLAIN_STEP`] levels.
const MIN_PLAIN_SHARE: f32 = 0.6;
const PLAIN_STEP: f32 = 2.0;
/// Edge lines kept per direction (the longest, at least 3 pixels apart).
const MAX_EDGE_LINES: usize = 32;
/// The framed picture is looked for on the plane reduced to this longer side.
pub const FRAME_SIDE: usize = 512;

/// A straight run of steps along one line of a plane: `at` is the line, `[start, end)`
/// the run along it.
#[derive(Debug, Clone, Copy)]
struct EdgeLine {
    at: usize,
    start: usize,
    end: usize,
}

impl EdgeLine {
    fn len(&self) -> usize {
        self.end - self.start
    }

    /// The line runs along the whole of `[lo, hi)`, give or take `slack` pixels and 4%.
    fn covers(&self, lo: usize, hi: usize, slack: usize) -> bool {
        let tolerance = 0.04 * (hi - lo) as f32 + slack as f32;
        (self.start as f32) <= lo as f32 + tolerance && (self.end as f32) >= hi as f32 - tolerance
    }

    /// The line starts or ends within `slack` pixels of `at`.
    fn ends_at(&self, at: usize, slack: usize) -> bool {
        self.start.abs_diff(at) <= slack || self.end.abs_diff(at) <= slack
    }
}

/// The picture framed inside a listing: a rectangle of a `width × height` luma plane
/// bounded by straight edges on at least three sides (the fourth may be the image's
/// own border), covering between 30% of each side and 92% of the area.
///
/// A screenshot of a marketplace page, an app screen or a seller's banner shows the
/// brand's photo as a rectangle among text, buttons and prices: the whole image hashes
/// far from the photo, the rectangle alone close to it. Each edge line is the longest
/// run of two-pixel steps of at least [`EDGE_STEP`] along a row or column (gaps up to
/// [`EDGE_GAP`]); the picture is the largest rectangle with the most such sides, where
/// each side's line runs its whole length and at each corner one of the two lines
/// meeting there ends (so a line through a photo's texture does not make a corner).
#[cfg(test)]
pub fn framed_picture(luma: &[f32], width: usize, height: usize) -> Option<Rect> {
    framed_picture_reduced(luma, width, height, &reduced(luma, width, height, FRAME_SIDE))
}

/// [`framed_picture`] with the plane already reduced by [`reduced`] to [`FRAME_SIDE`]
/// (shared with other passes over the same image).
pub fn framed_picture_reduced(luma: &[f32], width: usize, height: usize, small: &Reduced) -> Option<Rect> {
    if width < 32 || height < 32 {
        return None;
    }
    let (plane, w, h, factor) = (&small.plane, small.width, small.height, small.factor);
    // Distances in plane pixels, on the reduced plane.
    let reduced = |v: usize| v.div_ceil(factor);
    let (gap, corner, side) = (reduced(EDGE_GAP), reduced(CORNER_SLACK), reduced(SIDE_SLACK));
    let (vertical, horizontal) = edge_lines(plane, w, h, gap);
    let sides = |lines: &[EdgeLine], len: usize| {
        let mut s: Vec<(usize, Option<EdgeLine>)> = lines.iter().map(|l| (l.at, Some(*l))).collect();
        s.push((0, None));
        s.push((len, None));
        s.sort_by_key(|&(at, _)| at);
        s
    };
    let (xs, ys) = (sides(&vertical, w), sides(&horizontal, h));
    let (min_w, min_h) = ((MIN_FRAMED_SIDE * w as f32) as usize, (MIN_FRAMED_SIDE * h as f32) as usize);
    let max_area = (1.0 - MIN_FRAME_AREA) * (w * h) as f32;
    // (real sides, area, rectangle) of the best so far.
    let mut best: Option<(usize, usize, Rect)> = None;
    for (i, &(x0, left)) in xs.iter().enumerate() {
        for &(x1, right) in &xs[i + 1..] {
            if x1 - x0 < min_w {
                continue;
            }
            let rows: Vec<&(usize, Option<EdgeLine>)> =
                ys.iter().filter(|(_, l)| l.is_none_or(|l| l.covers(x0, x1, side))).collect();
            for (j, &&(y0, top)) in rows.iter().enumerate() {
                for &&(y1, bottom) in &rows[j + 1..] {
                    if y1 - y0 < min_h {
                        continue;
                    }
                    let real = [left, right, top, bottom].iter().filter(|l| l.is_some()).count();
                    let area = (x1 - x0) * (y1 - y0);
                    if real < 3 || area as f32 > max_area || best.is_some_and(|(r, a, _)| (real, area) <= (r, a)) {
                        continue;
                    }
                    if ![left, right].iter().all(|l| l.is_none_or(|l| l.covers(y0, y1, side))) {
                        continue;
                    }
                    let corners =
                        [(left, top, x0, y0), (right, top, x1, y0), (left, bottom, x0, y1), (right, bottom, x1, y1)];
                    let joined = corners.iter().all(|&(v, hz, x, y)| match (v, hz) {
                        (Some(v), Some(hz)) => v.ends_at(y, corner) || hz.ends_at(x, corner),
                        _ => true,
                    });
                    if joined {
                        best = Some((real, area, Rect { x: x0, y: y0, width: x1 - x0, height: y1 - y0 }));
                    }
                }
            }
        }
    }
    let (_, _, r) = best?;
    // Back to the plane's pixels (the last reduced line stands for the plane's edge),
    // then each side onto the plane's sharpest step nearby: a frame pixel or two left
    // in the picture moves its hash by 10–20 bits.
    let scale = |v: usize, len: usize, full: usize| if v == len { full } else { v * factor };
    let (x0, x1) = (scale(r.x, w, width), scale(r.x + r.width, w, width));
    let (y0, y1) = (scale(r.y, h, height), scale(r.y + r.height, h, height));
    let radius = 2 * factor + 3;
    let inner = |lo: usize, hi: usize| (lo + (hi - lo) / 8, hi - (hi - lo) / 8);
    let (ya, yb) = inner(y0, y1);
    let (xa, xb) = inner(x0, x1);
    // How many pixels along the side step by EDGE_STEP or more, then by how much: text
    // near a faint edge steps further, but on fewer lines.
    let strength = |steps: &mut dyn Iterator<Item = f32>| {
        steps.fold((0u32, 0.0f32), |(n, sum), d| (n + u32::from(d >= EDGE_STEP), sum + d))
    };
    let column = |b: usize| strength(&mut (ya..yb).map(|y| (luma[y * width + b] - luma[y * width + b - 1]).abs()));
    let row = |b: usize| strength(&mut (xa..xb).map(|x| (luma[b * width + x] - luma[(b - 1) * width + x]).abs()));
    let snap = |at: usize, len: usize, strength: &dyn Fn(usize) -> (u32, f32)| {
        if at == 0 || at == len {
            return at;
        }
        let candidates = at.saturating_sub(radius).max(1)..=(at + radius).min(len - 1);
        candidates
            .map(|b| (strength(b), b))
            .max_by(|((n, sum), _), ((m, other), _)| n.cmp(m).then(sum.total_cmp(other)))
            .map_or(at, |(_, b)| b)
    };
    let (x0, x1) = (snap(x0, width, &column), snap(x1, width, &column));
    let (y0, y1) = (snap(y0, height, &row), snap(y1, height, &row));
    (x1 > x0 && y1 > y0).then(|| Rect { x: x0, y: y0, width: x1 - x0, height: y1 - y0 })
}

/// The longest run of steps along one line, gaps up to `gap` allowed.
#[derive(Clone, Copy)]
struct Run {
    gap: usize,
    start: usize,
    last: Option<usize>,
    best: (usize, usize),
}

impl Run {
    /// A step at position `a` (positions come in increasing order).
    #[inline]
    fn step(&mut self, a: usize) {
        match self.last {
            Some(last) if a - last <= self.gap + 1 => {}
            _ => {
                self.close();
                self.start = a;
            }
        }
        self.last = Some(a);
    }

    fn close(&mut self) {
        if let Some(last) = self.last {
            if last + 1 - self.start > self.best.1 - self.best.0 {
                self.best = (self.start, last + 1);
            }
        }
    }
}

/// The edge lines of a `w × h` plane: vertical ones (steps across columns) and
/// horizontal ones (steps across rows), each the longest run of two-pixel steps of at
/// least [`EDGE_STEP`] along its line (gaps up to `gap`) when that run spans
/// [`MIN_FRAMED_SIDE`] of the plane; then the longest [`MAX_EDGE_LINES`] at least 3 lines apart.
fn edge_lines(plane: &[f32], w: usize, h: usize, gap: usize) -> (Vec<EdgeLine>, Vec<EdgeLine>) {
    let empty = Run { gap, start: 0, last: None, best: (0, 0) };
    let mut columns = vec![empty; w];
    let mut rows = vec![empty; h];
    // Steps are marked a row at a time (a loop the compiler vectorises), then only the
    // marked pixels touch the runs: on a product shot's plain field, few are.
    let mut marks = vec![false; w];
    let mark = |marks: &mut [bool], a: &[f32], b: &[f32]| {
        marks.iter_mut().zip(a.iter().zip(b)).for_each(|(m, (a, b))| *m = (a - b).abs() >= EDGE_STEP);
    };
    for y in 0..h {
        let line = &plane[y * w..(y + 1) * w];
        mark(&mut marks[1..w - 1], &line[2..], &line[..w - 2]);
        for (x, _) in marks[1..w - 1].iter().enumerate().filter(|(_, &m)| m) {
            columns[x + 1].step(y);
        }
        if y == 0 || y + 1 == h {
            continue;
        }
        mark(&mut marks, &plane[(y + 1) * w..(y + 2) * w], &plane[(y - 1) * w..y * w]);
        let run = &mut rows[y];
        for (x, _) in marks.iter().enumerate().filter(|(_, &m)| m) {
            run.step(x);
        }
    }
    // A picture's edge has the page on one side: plain along most of the run (but
    // where text or a button comes close), while a line through a photo's texture has
    // detail on both sides.
    let px = |x: usize, y: usize| plane[y * w + x];
    let plain_beside = |line: &EdgeLine, vertical: bool| {
        let len = if vertical { w } else { h };
        [line.at.checked_sub(2), Some(line.at + 2).filter(|&a| a < len)].into_iter().flatten().any(|side| {
            let flat = (line.start.max(1)..line.end)
                .filter(|&a| {
                    let (here, before) =
                        if vertical { (px(side, a), px(side, a - 1)) } else { (px(a, side), px(a - 1, side)) };
                    (here - before).abs() <= PLAIN_STEP
                })
                .count();
            flat as f32 >= MIN_PLAIN_SHARE * line.len() as f32
        })
    };
    let strongest = |runs: &mut [Run], min_len: usize, vertical: bool| {
        let len = if vertical { w } else { h };
        let inset = len / 50 + 1;
        let mut found: Vec<EdgeLine> = runs
            .iter_mut()
            .enumerate()
            .filter_map(|(at, r)| {
                r.close();
                let line = EdgeLine { at, start: r.best.0, end: r.best.1 };
                (line.len() >= min_len.max(1) && (inset..len - inset).contains(&at)).then_some(line)
            })
            .filter(|line| plain_beside(line, vertical))
            .collect();
        found.sort_by_key(|l| (std::cmp::Reverse(l.len()), l.at));
        let mut kept: Vec<EdgeLine> = Vec::new();
        for line in found {
            if kept.iter().all(|k| k.at.abs_diff(line.at) > 3) {
                kept.push(line);
                if kept.len() == MAX_EDGE_LINES {
                    break;
                }
            }
        }
        kept
    };
    let min_side = |len: usize| (MIN_FRAMED_SIDE * len as f32) as usize;
    (strongest(&mut columns, min_side(h), true), strongest(&mut rows, min_side(w), false))
}

/// A plane box-averaged by a whole factor (see [`reduced`]); the plane itself, not a
/// copy, when the factor is 1.
pub struct Reduced<'a> {
    pub plane: Cow<'a, [f32]>,
    pub width: usize,
    pub height: usize,
    /// Plane pixels per reduced pixel, each way.
    pub factor: usize,
}

/// The plane box-averaged by the least whole factor that brings its longer side to
/// `side` or under.
pub fn reduced(luma: &[f32], width: usize, height: usize, side: usize) -> Reduced<'_> {
    let factor = width.max(height).div_ceil(side);
    let (w, h) = (width / factor, height / factor);
    let plane = if factor == 1 { Cow::Borrowed(luma) } else { Cow::Owned(box_reduce(luma, width, w, h, factor)) };
    Reduced { plane, width: w, height: h, factor }
}

/// A `width`-wide plane averaged over `factor × factor` blocks into `w × h`.
fn box_reduce(luma: &[f32], width: usize, w: usize, h: usize, factor: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; w * h];
    let mut sums = vec![0.0f32; width];
    let norm = 1.0 / (factor * factor) as f32;
    for (y, row) in out.chunks_exact_mut(w).enumerate() {
        sums.fill(0.0);
        for src in luma[y * factor * width..].chunks_exact(width).take(factor) {
            sums.iter_mut().zip(src).for_each(|(s, v)| *s += v);
        }
        for (o, block) in row.iter_mut().zip(sums.chunks_exact(factor)) {
            *o = block.iter().sum::<f32>() * norm;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(w: usize, h: usize, content: Rect, background: f32) -> Vec<f32> {
        let mut p = vec![background; w * h];
        for y in content.y..content.y + content.height {
            for x in content.x..content.x + content.width {
                p[y * w + x] = ((x * 7 + y * 13) % 200) as f32 + 20.0;
            }
        }
        p
    }

    #[test]
    fn finds_letterboxed_content() {
        let content = Rect { x: 0, y: 40, width: 200, height: 120 };
        let p = plane(200, 200, content, 0.0);
        assert_eq!(content_rect(&p, 200, 200), Some(content));
    }

    #[test]
    fn finds_a_product_on_white() {
        let content = Rect { x: 50, y: 30, width: 90, height: 130 };
        let p = plane(200, 200, content, 255.0);
        assert_eq!(content_rect(&p, 200, 200), Some(content));
    }

    #[test]
    fn no_border_no_rect() {
        let full = Rect { x: 0, y: 0, width: 200, height: 150 };
        assert_eq!(content_rect(&plane(200, 150, full, 255.0), 200, 150), None);
        // A 1-pixel frame is not worth a second hash.
        let almost = Rect { x: 1, y: 1, width: 198, height: 148 };
        assert_eq!(content_rect(&plane(200, 150, almost, 255.0), 200, 150), None);
    }

    #[test]
    fn blank_image_is_not_trimmed_to_nothing() {
        assert_eq!(content_rect(&vec![255.0; 100 * 100], 100, 100), None);
        let speck = Rect { x: 48, y: 48, width: 4, height: 4 };
        assert_eq!(content_rect(&plane(100, 100, speck, 255.0), 100, 100), None);
    }

    #[test]
    fn a_grid_with_gutters_splits_into_its_tiles() {
        let (w, h) = (300, 200);
        let mut p = vec![255.0; w * h];
        let cells = [(0, 0, 147, 97), (153, 0, 147, 97), (0, 103, 147, 97), (153, 103, 147, 97)];
        for (i, &(x0, y0, cw, ch)) in cells.iter().enumerate() {
            for y in y0..y0 + ch {
                for x in x0..x0 + cw {
                    p[y * w + x] = ((x * (7 + i) + y * 13) % 200) as f32;
                }
            }
        }
        let tiles = collage_tiles(&p, w, h);
        // The 6-px gutter is 2% of the width: thin, left out of both columns. It is 3% of
        // the height: split in the middle, as a run through plain fields would be.
        assert_eq!(
            tiles,
            vec![
                Rect { x: 0, y: 0, width: 147, height: 100 },
                Rect { x: 153, y: 0, width: 147, height: 100 },
                Rect { x: 0, y: 100, width: 147, height: 100 },
                Rect { x: 153, y: 100, width: 147, height: 100 },
            ]
        );
        // One gutter only: two tiles.
        let full = Rect { x: 0, y: 0, width: 300, height: 200 };
        let mut halves = plane(w, h, full, 0.0);
        for y in 0..h {
            for x in 148..152 {
                halves[y * w + x] = 255.0;
            }
        }
        assert_eq!(collage_tiles(&halves, w, h).len(), 2);
    }

    #[test]
    fn a_picture_without_gutters_has_no_tiles() {
        let full = Rect { x: 0, y: 0, width: 300, height: 200 };
        assert!(collage_tiles(&plane(300, 200, full, 0.0), 300, 200).is_empty());
        // A product in the middle of a white field: no line through the middle is plain.
        let product = Rect { x: 60, y: 20, width: 180, height: 160 };
        assert!(collage_tiles(&plane(300, 200, product, 255.0), 300, 200).is_empty());
    }

    /// A page around a picture at `at`: a header bar, "words" (short bars) in a menu
    /// beside it and in rows under it, on a plain page of `page` luma.
    fn screenshot(
        picture: &[f32],
        pw: usize,
        ph: usize,
        at: (usize, usize),
        size: (usize, usize),
        page: f32,
    ) -> Vec<f32> {
        let (w, h) = size;
        let ink = if page > 128.0 { 30.0 } else { 230.0 };
        let mut p = vec![page; w * h];
        let mut fill = |x0: usize, y0: usize, x1: usize, y1: usize, v: f32| {
            for y in y0..y1.min(h) {
                p[y * w + x0..y * w + x1.min(w)].iter_mut().for_each(|q| *q = v);
            }
        };
        fill(0, 0, w, 24, 90.0);
        for (i, y) in (at.1..at.1 + ph).step_by(28).enumerate() {
            fill(4, y, 4 + 20 + (i * 7) % 15, y + 9, ink); // the menu, up to the picture
        }
        for (i, y) in (at.1 + ph + 10..h - 12).step_by(24).enumerate() {
            for x in (8..w - 40).step_by(37 + i % 3) {
                fill(x, y, x + 25, y + 10, ink);
            }
        }
        for y in 0..ph {
            p[(at.1 + y) * w + at.0..(at.1 + y) * w + at.0 + pw].copy_from_slice(&picture[y * pw..(y + 1) * pw]);
        }
        p
    }

    fn textured(w: usize, h: usize, seed: usize) -> Vec<f32> {
        (0..w * h).map(|i| ((i % w * (7 + seed) + i / w * 13) % 180) as f32 + 40.0).collect()
    }

    #[test]
    fn finds_the_picture_framed_in_a_page() {
        let (pw, ph) = (300, 220);
        let picture = textured(pw, ph, 0);
        for page in [255.0, 20.0] {
            let p = screenshot(&picture, pw, ph, (40, 60), (400, 420), page);
            assert_eq!(framed_picture(&p, 400, 420), Some(Rect { x: 40, y: 60, width: pw, height: ph }), "page {page}");
        }
        // A product shot whose off-white field meets a white page: a 4-level step.
        let mut shot = vec![251.0; pw * ph];
        for y in 60..160 {
            shot[y * pw + 100..y * pw + 200].iter_mut().for_each(|v| *v = 80.0);
        }
        let p = screenshot(&shot, pw, ph, (40, 60), (400, 420), 255.0);
        assert_eq!(framed_picture(&p, 400, 420), Some(Rect { x: 40, y: 60, width: pw, height: ph }));
        // Reaching the page's right edge: three sides are enough.
        let p = screenshot(&picture, pw, ph, (100, 60), (400, 420), 20.0);
        assert_eq!(framed_picture(&p, 400, 420), Some(Rect { x: 100, y: 60, width: pw, height: ph }));
        // A card with rounded corners (an app's photo card): its straight edges stop
        // short of the corners by the radius, which the slack of the sides and corners
        // covers up to about 4% of a side. (Looser slack, tried, let larger rectangles
        // through on tools/eval's screenshots and lost more than it found.)
        let radius = 12usize;
        let mut card = picture.clone();
        for y in 0..ph {
            for x in 0..pw {
                let (cx, cy) = (x.clamp(radius, pw - 1 - radius), y.clamp(radius, ph - 1 - radius));
                if (x.abs_diff(cx).pow(2) + y.abs_diff(cy).pow(2)) > radius * radius {
                    card[y * pw + x] = 20.0;
                }
            }
        }
        let p = screenshot(&card, pw, ph, (40, 60), (400, 420), 20.0);
        assert_eq!(framed_picture(&p, 400, 420), Some(Rect { x: 40, y: 60, width: pw, height: ph }));
        // A large page is searched reduced, then each side snaps to the sharpest step.
        let (bw, bh) = (900, 700);
        let big = textured(bw, bh, 2);
        let p = screenshot(&big, bw, bh, (77, 131), (1100, 1000), 20.0);
        assert_eq!(framed_picture(&p, 1100, 1000), Some(Rect { x: 77, y: 131, width: bw, height: bh }));
    }

    #[test]
    fn a_photo_or_a_letterboxed_one_has_no_framed_picture() {
        assert_eq!(framed_picture(&textured(400, 300, 1), 400, 300), None);
        // A boxy product on white is framed by its own outline: the same rectangle as
        // its content inside the white field (which the trimmed view already hashes).
        let product = Rect { x: 100, y: 40, width: 200, height: 220 };
        let p = plane(400, 300, product, 255.0);
        assert_eq!(framed_picture(&p, 400, 300), content_rect(&p, 400, 300));
        // A letterboxed photo: two sides only (padding is the trimmed view's job).
        let bars = Rect { x: 0, y: 60, width: 400, height: 180 };
        assert_eq!(framed_picture(&plane(400, 300, bars, 0.0), 400, 300), None);
    }
}
