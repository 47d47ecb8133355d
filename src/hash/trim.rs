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
}
