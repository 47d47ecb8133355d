//! Finding the content of an image inside uniform borders: the letterboxing, padding to
//! a square or plain frame a counterfeiter adds, and the white field around a product
//! shot.
//!
//! Each side is trimmed separately, line by line, while the line is "background": at
//! least [`MIN_BACKGROUND_SHARE`] of its pixels within [`TOLERANCE`] levels of the
//! side's outermost line (whose own spread must be small). A price sticker or a caption
//! inside the border therefore stops the trim on that side only where it covers enough
//! of a line.

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
    // Split in the middle of the gutter: where tiles have plain fields of their own,
    // the run spans those too, and each tile keeps its share.
    let spans = |split: Option<(usize, usize)>, len: usize| match split {
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
        assert_eq!(
            tiles,
            vec![
                Rect { x: 0, y: 0, width: 150, height: 100 },
                Rect { x: 150, y: 0, width: 150, height: 100 },
                Rect { x: 0, y: 100, width: 150, height: 100 },
                Rect { x: 150, y: 100, width: 150, height: 100 },
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
}
