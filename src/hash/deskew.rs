//! Turning a slightly rotated listing upright again, so that its hash can meet the
//! stored photo's: a counterfeiter turns a brand's photo by a few degrees (the corners
//! filled with black or white) because that alone moves PDQ by 80 bits or more.
//!
//! [`skew`] reads the rotation from the image's own straight edges (the photo's border
//! against the fill, a product's outline): the orientation of strong gradients near the
//! axes, in a histogram weighted by gradient strength, must have a clear peak a few
//! degrees off the axes and far above the axis-aligned mass. [`rotate`] turns the plane
//! back, filling what falls outside with the border's colour, so that the uniform-border
//! trim then finds the photo itself.

use super::trim;

/// Rotations looked for: at least this many degrees…
const MIN_SKEW: f32 = 2.0;
/// …and at most this many (beyond, the local-feature stage is the tool).
const MAX_SKEW: f32 = 12.0;
/// Histogram bins per degree.
const BINS_PER_DEGREE: f32 = 4.0;
/// Gradients weaker than this (luma levels across two pixels, after smoothing) are noise.
const MIN_GRADIENT: f32 = 6.0;
/// The peak (over ±0.5°) must outweigh the axis-aligned mass this many times…
const MIN_PEAK_OVER_AXES: f32 = 5.0;
/// …and the mean of the histogram's window (±13°) this many times.
const MIN_PEAKINESS: f32 = 3.0;
/// The skew is read on the plane reduced to this longer side.
const SKEW_SIDE: usize = 512;

/// The rotation, in degrees counter-clockwise as the image is seen, that the image's
/// straight edges show, when it is clear and between [`MIN_SKEW`] and [`MAX_SKEW`].
pub fn skew(luma: &[f32], width: usize, height: usize) -> Option<f32> {
    if width < 32 || height < 32 {
        return None;
    }
    let trim::Reduced { plane, width: w, height: h, .. } = trim::reduced(luma, width, height, SKEW_SIDE);
    // Smooth (two 5-pixel box passes ≈ a Gaussian of σ ≈ 2): a rotated edge drawn
    // without antialiasing is a staircase whose own steps are axis-aligned.
    let plane = box_blur(&box_blur(&plane, w, h, 2), w, h, 2);
    let half = (MAX_SKEW + 1.0) * BINS_PER_DEGREE;
    let bins = 2 * half as usize + 1;
    let mut histogram = vec![0f32; bins];
    let limit = (MAX_SKEW + 1.0).to_radians().tan();
    // Every other pixel of every other line is plenty for a histogram.
    for y in (1..h - 1).step_by(2) {
        for x in (1..w - 1).step_by(2) {
            let gx = plane[y * w + x + 1] - plane[y * w + x - 1];
            let gy = plane[(y + 1) * w + x] - plane[(y - 1) * w + x];
            let (ax, ay) = (gx.abs(), gy.abs());
            if ax.max(ay) < MIN_GRADIENT {
                continue;
            }
            // Normals turn with the picture: (1, 0) to (cos t, sin t), (0, 1) to
            // (-sin t, cos t); both read t. Only normals near an axis count.
            let ratio = if ax >= ay { gy / gx } else { -gx / gy };
            if ratio.abs() > limit {
                continue;
            }
            let degrees = ratio.atan().to_degrees();
            let bin = (degrees * BINS_PER_DEGREE + half).round() as usize;
            histogram[bin.min(bins - 1)] += ax.max(ay);
        }
    }
    // Over ±0.5°.
    let span = (BINS_PER_DEGREE / 2.0) as usize;
    let smooth: Vec<f32> =
        (0..bins).map(|i| histogram[i.saturating_sub(span)..(i + span + 1).min(bins)].iter().sum()).collect();
    let axis = smooth[half as usize];
    let (peak, &mass) = smooth
        .iter()
        .enumerate()
        .filter(|&(i, _)| (i as f32 - half).abs() / BINS_PER_DEGREE >= MIN_SKEW - 0.5)
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let mean = smooth.iter().sum::<f32>() / bins as f32;
    if mass < MIN_PEAK_OVER_AXES * axis || mass < MIN_PEAKINESS * mean || mass <= 0.0 {
        return None;
    }
    // The centre of mass of the raw histogram around the peak.
    let around = peak.saturating_sub(span)..(peak + span + 1).min(bins);
    let weight: f32 = histogram[around.clone()].iter().sum();
    let centre = around.map(|i| i as f32 * histogram[i]).sum::<f32>() / weight;
    // In these coordinates (y down) a normal at +t is a picture turned clockwise on
    // screen: counter-clockwise is the other sign.
    let degrees = (half - centre) / BINS_PER_DEGREE;
    (MIN_SKEW..=MAX_SKEW).contains(&degrees.abs()).then_some(degrees)
}

/// The plane turned by `degrees` (counter-clockwise as the image is seen) about its
/// centre on a canvas of the same size, bilinear; what falls outside is `fill`.
pub fn rotate(luma: &[f32], width: usize, height: usize, degrees: f32, fill: f32) -> Vec<f32> {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = ((width as f32 - 1.0) / 2.0, (height as f32 - 1.0) / 2.0);
    let mut out = vec![fill; width * height];
    for (y, row) in out.chunks_exact_mut(width).enumerate() {
        let dy = y as f32 - cy;
        for (x, o) in row.iter_mut().enumerate() {
            let dx = x as f32 - cx;
            // The source of an output pixel: turned back (y points down, so a turn
            // counter-clockwise on screen is clockwise in these coordinates).
            let sx = cx + dx * cos - dy * sin;
            let sy = cy + dx * sin + dy * cos;
            if sx < 0.0 || sy < 0.0 || sx > (width - 1) as f32 || sy > (height - 1) as f32 {
                continue;
            }
            let (x0, y0) = (sx as usize, sy as usize);
            let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            let at = |x: usize, y: usize| luma[y * width + x];
            let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
            let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
            *o = top + (bottom - top) * fy;
        }
    }
    out
}

/// The typical colour of a plane's outermost pixels (the median of its border).
pub fn border_level(luma: &[f32], width: usize, height: usize) -> f32 {
    let mut ring: Vec<f32> = luma[..width].to_vec();
    ring.extend_from_slice(&luma[(height - 1) * width..]);
    ring.extend((1..height - 1).flat_map(|y| [luma[y * width], luma[y * width + width - 1]]));
    let mid = ring.len() / 2;
    *ring.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// A box blur of radius `r` along rows, then columns (edges clamped), by running sums.
fn box_blur(plane: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let norm = 1.0 / (2 * r + 1) as f32;
    // One line (or a line of line sums) blurred along itself into `dst`.
    let along = |src: &[f32], dst: &mut [f32]| {
        let n = src.len();
        let at = |i: isize| src[i.clamp(0, n as isize - 1) as usize];
        let mut sum: f32 = (-(r as isize)..=r as isize).map(at).sum();
        for (x, d) in dst.iter_mut().enumerate() {
            *d = sum * norm;
            let (add, sub) = (x + r + 1, x as isize - r as isize);
            sum += if add < n { src[add] } else { src[n - 1] } - if sub >= 0 { src[sub as usize] } else { src[0] };
        }
    };
    let mut rows = vec![0f32; w * h];
    for (src, dst) in plane.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
        along(src, dst);
    }
    // Columns: a running sum of whole rows (vector adds).
    let row = |i: isize| &rows[i.clamp(0, h as isize - 1) as usize * w..][..w];
    let mut out = vec![0f32; w * h];
    let mut sum = vec![0f32; w];
    for i in -(r as isize)..=r as isize {
        sum.iter_mut().zip(row(i)).for_each(|(s, v)| *s += v);
    }
    for y in 0..h {
        out[y * w..(y + 1) * w].iter_mut().zip(&sum).for_each(|(o, s)| *o = s * norm);
        let (add, sub) = (row(y as isize + r as isize + 1), row(y as isize - r as isize));
        sum.iter_mut().zip(add.iter().zip(sub)).for_each(|(s, (a, b))| *s += a - b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured photo of `w × h` turned by `degrees` on a larger canvas of `fill`.
    fn turned_photo(w: usize, h: usize, degrees: f32, fill: f32) -> (Vec<f32>, usize, usize) {
        let photo: Vec<f32> = (0..w * h)
            .map(|i| 60.0 + 40.0 * ((i % w) as f32 / 23.0).sin() + 50.0 * ((i / w) as f32 / 37.0).cos())
            .collect();
        let (cw, ch) = (w + w / 4, h + h / 4);
        let mut canvas = vec![fill; cw * ch];
        for y in 0..h {
            canvas[(y + h / 8) * cw + w / 8..(y + h / 8) * cw + w / 8 + w].copy_from_slice(&photo[y * w..(y + 1) * w]);
        }
        (rotate(&canvas, cw, ch, degrees, fill), cw, ch)
    }

    #[test]
    fn reads_the_turn_of_a_photo_on_a_fill() {
        for (degrees, fill) in [(6.0, 0.0), (-8.5, 255.0), (3.0, 255.0)] {
            let (plane, w, h) = turned_photo(400, 300, degrees, fill);
            let found = skew(&plane, w, h).unwrap_or_else(|| panic!("{degrees}° on {fill}: no skew found"));
            assert!((found - degrees).abs() < 0.5, "{degrees}° on {fill}: read {found}°");
        }
    }

    #[test]
    fn an_upright_photo_or_a_flat_image_has_no_skew() {
        let (plane, w, h) = turned_photo(400, 300, 0.0, 0.0);
        assert_eq!(skew(&plane, w, h), None);
        assert_eq!(skew(&vec![128.0; 200 * 200], 200, 200), None);
    }

    #[test]
    fn turning_back_restores_the_plane() {
        let (plane, w, h) = turned_photo(200, 160, 0.0, 255.0);
        let there = rotate(&plane, w, h, 7.0, 255.0);
        let back = rotate(&there, w, h, -7.0, 255.0);
        // Away from the edges, two bilinear passes change a smooth photo a little.
        let (x0, y0) = (w / 4, h / 4);
        for y in y0..h - y0 {
            for x in x0..w - x0 {
                assert!((back[y * w + x] - plane[y * w + x]).abs() < 6.0, "({x}, {y})");
            }
        }
        assert_eq!(border_level(&there, w, h), 255.0);
    }
}
