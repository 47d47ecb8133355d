//! Luma → working image → pyramid → oriented FAST keypoints → steered BRIEF.

use std::sync::OnceLock;

use super::pattern::{PATTERN, PATTERN_RADIUS};
use super::{quantize_angle, quantize_coord, ExtractParams, Feature, SCALE_FACTOR};

/// Radius of the disc whose intensity centroid gives a keypoint's orientation.
const ORIENTATION_RADIUS: i32 = 15;
/// Keypoints keep this far from a level's edges: the orientation disc and the steered
/// pattern (plus rounding) stay inside the image.
const BORDER: usize =
    (if ORIENTATION_RADIUS > PATTERN_RADIUS + 1 { ORIENTATION_RADIUS } else { PATTERN_RADIUS + 1 }) as usize + 1;
/// Bresenham circle of radius 3, clockwise from the top: FAST's 16 ring pixels.
const RING: [(i32, i32); 16] = [
    (0, -3),
    (1, -3),
    (2, -2),
    (3, -1),
    (3, 0),
    (3, 1),
    (2, 2),
    (1, 3),
    (0, 3),
    (-1, 3),
    (-2, 2),
    (-3, 1),
    (-3, 0),
    (-3, -1),
    (-2, -2),
    (-1, -3),
];
/// Harris corner response constant and half window (7×7, as ORB).
const HARRIS_K: f32 = 0.04;
const HARRIS_HALF: i32 = 3;

/// An 8-bit grey image.
pub(crate) struct Gray {
    pub w: usize,
    pub h: usize,
    pub px: Vec<u8>,
}

/// Size of the working image: longer side `side`, aspect kept, at least 1 pixel.
pub(crate) fn working_size(width: u32, height: u32, side: u32) -> (usize, usize) {
    let long = width.max(height).max(1) as f64;
    let s = f64::from(side) / long;
    let w = (f64::from(width) * s).round().max(1.0) as usize;
    let h = (f64::from(height) * s).round().max(1.0) as usize;
    (w, h)
}

/// Weights of a 1-D resampling from `src` to `dst` samples: a triangle (linear) filter
/// widened to the scale when shrinking, so shrinking averages instead of aliasing.
/// One `(first source index, weights)` per destination sample.
fn resample_weights(src: usize, dst: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = src as f32 / dst as f32;
    let support = scale.max(1.0);
    (0..dst)
        .map(|i| {
            let centre = (i as f32 + 0.5) * scale - 0.5;
            let lo = ((centre - support).floor() as isize + 1).max(0) as usize;
            let hi = ((centre + support).ceil() as isize - 1).min(src as isize - 1).max(lo as isize) as usize;
            let mut weights: Vec<f32> =
                (lo..=hi).map(|j| (1.0 - (j as f32 - centre).abs() / support).max(0.0)).collect();
            let sum: f32 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            } else {
                weights.iter_mut().for_each(|w| *w = 0.0);
                weights[0] = 1.0;
            }
            (lo, weights)
        })
        .collect()
}

/// Separable resize of a float plane to `dw`×`dh`.
fn resize(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let xs = resample_weights(sw, dw);
    let ys = resample_weights(sh, dh);
    // Columns first (per source row), then rows.
    let mut tmp = vec![0f32; dw * sh];
    // Rows in blocks of LANES, interleaved so that one output column of the whole block
    // is a run of vector operations. Each output is still its own sum, term by term in
    // the order `Iterator::sum` adds them (from −0.0), so the values are the same.
    const LANES: usize = 8;
    let blocked = sh / LANES * LANES;
    let mut block = vec![[0f32; LANES]; sw];
    for y0 in (0..blocked).step_by(LANES) {
        for (x, column) in block.iter_mut().enumerate() {
            for (r, v) in column.iter_mut().enumerate() {
                *v = src[(y0 + r) * sw + x];
            }
        }
        for (ox, (lo, weights)) in xs.iter().enumerate() {
            let mut acc = [-0.0f32; LANES];
            for (column, &wgt) in block[*lo..*lo + weights.len()].iter().zip(weights) {
                for (a, &v) in acc.iter_mut().zip(column) {
                    *a += v * wgt;
                }
            }
            for (r, &a) in acc.iter().enumerate() {
                tmp[(y0 + r) * dw + ox] = a;
            }
        }
    }
    let rest = src[blocked * sw..].chunks_exact(sw).zip(tmp[blocked * dw..].chunks_exact_mut(dw));
    for (row, out) in rest {
        for (o, (lo, weights)) in out.iter_mut().zip(&xs) {
            *o = row[*lo..*lo + weights.len()].iter().zip(weights).map(|(a, b)| a * b).sum();
        }
    }
    let mut out = vec![0f32; dw * dh];
    for (y, (lo, weights)) in ys.iter().enumerate() {
        let line = &mut out[y * dw..(y + 1) * dw];
        for (k, &wgt) in weights.iter().enumerate() {
            let srow = &tmp[(lo + k) * dw..(lo + k + 1) * dw];
            for (o, &v) in line.iter_mut().zip(srow) {
                *o += wgt * v;
            }
        }
    }
    out
}

fn to_gray(plane: &[f32], w: usize, h: usize) -> Gray {
    Gray { w, h, px: plane.iter().map(|&v| round_to_u8(v)).collect() }
}

/// `v.round().clamp(0.0, 255.0) as u8` in operations that vectorise (`round` is a
/// library call): clamping first changes nothing (0 and 255 are whole), `as i32`
/// truncates a non-negative value, and the fraction it drops is exact.
#[inline]
fn round_to_u8(v: f32) -> u8 {
    let v = v.clamp(0.0, 255.0); // NaN stays NaN, and `NaN as i32` is 0, as `NaN as u8` is
    let whole = v as i32;
    (whole + i32::from(v - whole as f32 >= 0.5)) as u8
}

/// Gaussian blur (σ = 2, 7 taps as ORB) of an 8-bit image, for the BRIEF tests.
fn blur(img: &Gray) -> Gray {
    const K: [u32; 7] = [71, 131, 189, 214, 189, 131, 71]; // σ = 2, sums to 996
    const SUM: u32 = 996;
    let (w, h) = (img.w, img.h);
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    // Rows: an unclamped interior, clamped edges; kept ×SUM in u32.
    let mut tmp = vec![0u32; w * h];
    let edges = || (0..w.min(3)).chain(w.saturating_sub(3).max(w.min(3))..w);
    for (row, out) in img.px.chunks_exact(w).zip(tmp.chunks_exact_mut(w)) {
        if w > 6 {
            // The interior a tap at a time, which vectorises (integer sums: any order).
            let interior = &mut out[3..w - 3];
            for (k, &c) in K.iter().enumerate() {
                for (o, &v) in interior.iter_mut().zip(&row[k..]) {
                    *o += c * u32::from(v);
                }
            }
        }
        for x in edges() {
            out[x] =
                K.iter().enumerate().map(|(k, &c)| c * u32::from(row[clamp(x as isize + k as isize - 3, w)])).sum();
        }
    }
    // Columns, a row at a time.
    let mut acc = vec![0u32; w];
    let mut out = vec![0u8; w * h];
    for (y, line) in out.chunks_exact_mut(w).enumerate() {
        acc.iter_mut().for_each(|a| *a = 0);
        for (k, &c) in K.iter().enumerate() {
            let src = &tmp[clamp(y as isize + k as isize - 3, h) * w..][..w];
            for (a, &v) in acc.iter_mut().zip(src) {
                *a += c * v;
            }
        }
        for (o, &a) in line.iter_mut().zip(&acc) {
            *o = ((a + SUM * SUM / 2) / (SUM * SUM)) as u8;
        }
    }
    Gray { w, h, px: out }
}

/// A FAST corner at a pyramid level, with its ranking response.
#[derive(Clone, Copy)]
struct Corner {
    x: usize,
    y: usize,
    response: f32,
}

/// Whether a circular 16-bit mask has a run of at least 9 set bits.
#[inline]
fn has_arc9(mask: u32) -> bool {
    let mut m = mask | (mask << 16);
    // After k steps bit i is set iff bits i..=i+k all were.
    for _ in 0..8 {
        m &= m >> 1;
    }
    m & 0xFFFF != 0
}

/// FAST-9 corners with threshold `t`, 3×3 non-maximum suppressed on the FAST score
/// (sum of absolute differences beyond `t` on the ring), inside the border.
fn fast9(img: &Gray, t: u8) -> Vec<(usize, usize)> {
    let (w, h) = (img.w, img.h);
    if w <= 2 * BORDER || h <= 2 * BORDER {
        return Vec::new();
    }
    let offsets: [isize; 16] = RING.map(|(dx, dy)| dy as isize * w as isize + dx as isize);
    let px = &img.px[..];
    let mut score = vec![0u16; w * h];
    // Pixels with a nonzero score, in row-major order.
    let mut scored: Vec<usize> = Vec::new();
    let inner = w - 2 * BORDER;
    let mut pass = vec![0u8; inner.next_multiple_of(8)];
    for y in BORDER..h - BORDER {
        let row = |dy: usize, dx: isize| {
            let start = ((y + dy - 3) * w + BORDER) as isize + dx;
            &px[start as usize..start as usize + inner]
        };
        // A 9-arc of the 16-ring holds ring pixel 0 or 8, and ring pixel 4 or 12: those
        // four decide, for a whole row at once, which pixels are worth the full test.
        // (In u8, `p + t` and `p − t` saturate where no pixel could pass anyway.)
        let (centre, up, down, right, left) = (row(3, 0), row(0, 0), row(6, 0), row(3, 3), row(3, -3));
        for (k, flag) in pass[..inner].iter_mut().enumerate() {
            let p = centre[k];
            let (hi, lo) = (p.saturating_add(t), p.saturating_sub(t));
            let (v0, v8, v4, v12) = (up[k], down[k], right[k], left[k]);
            let bright = ((v0 > hi) | (v8 > hi)) & ((v4 > hi) | (v12 > hi));
            let dark = ((v0 < lo) | (v8 < lo)) & ((v4 < lo) | (v12 < lo));
            *flag = u8::from(bright | dark);
        }
        for (c, chunk) in pass.chunks_exact(8).enumerate() {
            if u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) == 0 {
                continue;
            }
            for k in (0..8).filter(|&k| chunk[k] != 0) {
                let i = y * w + BORDER + c * 8 + k;
                let p = i16::from(px[i]);
                let (hi, lo) = (p + i16::from(t), p - i16::from(t));
                // Without branches (which ring pixels pass is unpredictable): brighter
                // and darker exclude each other (hi ≥ lo), and a pixel that is neither
                // adds nothing to either sum.
                let ring: [i16; 16] = offsets.map(|o| i16::from(px[(i as isize + o) as usize]));
                let (mut bmask, mut dmask, mut bsum, mut dsum) = (0u32, 0u32, 0i32, 0i32);
                for (k, &v) in ring.iter().enumerate() {
                    bmask |= u32::from(v > hi) << k;
                    dmask |= u32::from(v < lo) << k;
                    bsum += i32::from((v - hi).max(0));
                    dsum += i32::from((lo - v).max(0));
                }
                let s = if has_arc9(bmask) { bsum } else { 0 }.max(if has_arc9(dmask) { dsum } else { 0 });
                if s > 0 {
                    score[i] = s.min(i32::from(u16::MAX)) as u16;
                    scored.push(i);
                }
            }
        }
    }
    let mut out = Vec::new();
    for i in scored {
        let s = score[i];
        // Strictly greater than later neighbours, at least equal to earlier ones:
        // exactly one of a plateau survives.
        let earlier = [i - w - 1, i - w, i - w + 1, i - 1];
        let later = [i + 1, i + w - 1, i + w, i + w + 1];
        if earlier.iter().all(|&j| s >= score[j]) && later.iter().all(|&j| s > score[j]) {
            out.push((i % w, i / w));
        }
    }
    out
}

/// Harris response `det − k·trace²` over a 7×7 window of central differences.
fn harris(img: &Gray, x: usize, y: usize) -> f32 {
    // Sums of squared differences of 8-bit pixels over 49 pixels fit an i32 exactly.
    const HALF: usize = HARRIS_HALF as usize;
    const SIDE: usize = 2 * HALF + 1;
    let w = img.w;
    let (mut a, mut b, mut c) = (0i32, 0i32, 0i32);
    for yy in y - HALF..=y + HALF {
        let at = |row: usize, dx: isize| {
            let start = (row * w + x - HALF) as isize + dx;
            &img.px[start as usize..start as usize + SIDE]
        };
        let (left, right, up, down) = (at(yy, -1), at(yy, 1), at(yy - 1, 0), at(yy + 1, 0));
        for k in 0..SIDE {
            let ix = i32::from(right[k]) - i32::from(left[k]);
            let iy = i32::from(down[k]) - i32::from(up[k]);
            a += ix * ix;
            b += iy * iy;
            c += ix * iy;
        }
    }
    let (a, b, c) = (f64::from(a), f64::from(b), f64::from(c));
    ((a * b - c * c) - f64::from(HARRIS_K) * (a + b) * (a + b)) as f32
}

/// Up to `budget` corners spread over the level: the level is cut into square cells of
/// `cell` pixels; every cell's best corner (by Harris response) comes before any cell's
/// second best, and so on, strongest first within each round.
fn spread(corners: Vec<Corner>, w: usize, h: usize, cell: usize, budget: usize) -> Vec<Corner> {
    let cols = w.div_ceil(cell).max(1);
    let rows = h.div_ceil(cell).max(1);
    let mut cells: Vec<Vec<Corner>> = vec![Vec::new(); cols * rows];
    for c in corners {
        cells[(c.y / cell) * cols + c.x / cell].push(c);
    }
    let mut ranked: Vec<(usize, Corner)> = Vec::new();
    for mut list in cells {
        list.sort_by(|a, b| b.response.total_cmp(&a.response).then((a.y, a.x).cmp(&(b.y, b.x))));
        ranked.extend(list.into_iter().enumerate());
    }
    ranked.sort_by(|(ra, a), (rb, b)| {
        ra.cmp(rb).then(b.response.total_cmp(&a.response)).then((a.y, a.x).cmp(&(b.y, b.x)))
    });
    ranked.into_iter().take(budget).map(|(_, c)| c).collect()
}

/// Half-width of each row of the orientation disc, from `dy = −r` down:
/// `⌊√(r² − dy²)⌋`.
const DISC: [i32; 2 * ORIENTATION_RADIUS as usize + 1] = {
    let r = ORIENTATION_RADIUS;
    let mut out = [0i32; 2 * ORIENTATION_RADIUS as usize + 1];
    let mut k = 0;
    while k < out.len() {
        let dy = k as i32 - r;
        out[k] = (r * r - dy * dy).unsigned_abs().isqrt() as i32;
        k += 1;
    }
    out
};

/// Orientation by intensity centroid over a disc of radius [`ORIENTATION_RADIUS`], in
/// radians, y down (so a positive angle turns from +x towards +y).
fn orientation(img: &Gray, x: usize, y: usize) -> f32 {
    // Moments of 8-bit pixels over ~700 pixels at |dx|, |dy| ≤ 15 fit an i32 exactly.
    let (mut m10, mut m01) = (0i32, 0i32);
    for (k, &half) in DISC.iter().enumerate() {
        let dy = k as i32 - ORIENTATION_RADIUS;
        let start = (y as i32 + dy) as usize * img.w + x - half as usize;
        let (mut sum, mut moment) = (0i32, 0i32);
        for (j, &v) in img.px[start..=start + 2 * half as usize].iter().enumerate() {
            sum += i32::from(v);
            moment += (j as i32 - half) * i32::from(v);
        }
        m10 += moment;
        m01 += dy * sum;
    }
    (m01 as f32).atan2(m10 as f32)
}

/// The pattern steered by a stored angle (1/256 turns): `[x1, y1, x2, y2]` per bit,
/// rounded to pixels. Computed once per angle.
fn steered(angle: u8) -> &'static [[i8; 4]; 256] {
    static TABLES: [OnceLock<[[i8; 4]; 256]>; 256] = [const { OnceLock::new() }; 256];
    TABLES[usize::from(angle)].get_or_init(|| {
        let (s, c) = (f32::from(angle) * std::f32::consts::TAU / 256.0).sin_cos();
        // Within PATTERN_RADIUS + 1 of the keypoint: fits an i8.
        let turn = |px: i8, py: i8| {
            let (px, py) = (f32::from(px), f32::from(py));
            [(px * c - py * s).round() as i8, (px * s + py * c).round() as i8]
        };
        PATTERN.map(|p| {
            let ([x1, y1], [x2, y2]) = (turn(p[0], p[1]), turn(p[2], p[3]));
            [x1, y1, x2, y2]
        })
    })
}

/// The 256-bit steered BRIEF descriptor of the keypoint at (`x`, `y`) with orientation
/// `angle` (1/256 turns) on the smoothed level image.
fn describe(smooth: &Gray, x: usize, y: usize, angle: u8) -> [u64; 4] {
    let w = smooth.w as isize;
    let centre = y as isize * w + x as isize;
    let at = |dx: i8, dy: i8| smooth.px[(centre + isize::from(dy) * w + isize::from(dx)) as usize];
    let mut desc = [0u64; 4];
    for (i, p) in steered(angle).iter().enumerate() {
        if at(p[0], p[1]) < at(p[2], p[3]) {
            desc[i / 64] |= 1 << (i % 64);
        }
    }
    desc
}

/// The whole extraction; see [`super::extract`].
pub(crate) fn extract(luma: &[f32], width: u32, height: u32, params: &ExtractParams) -> Vec<Feature> {
    let (sw, sh) = (width as usize, height as usize);
    assert_eq!(luma.len(), sw * sh, "luma plane is {} values, not {width}×{height}", luma.len());
    if sw == 0 || sh == 0 || params.max_features == 0 {
        return Vec::new();
    }
    let side = params.working_side.clamp(super::MIN_WORKING_SIDE, super::MAX_WORKING_SIDE);
    let (w0, h0) = working_size(width, height, side);
    let base = if (w0, h0) == (sw, sh) { luma.to_vec() } else { resize(luma, sw, sh, w0, h0) };

    let levels = usize::from(params.levels.clamp(1, super::MAX_LEVELS));
    // Budget per level ∝ level_weight^level (1 = equal shares, 0.5 = ∝ area).
    let weights: Vec<f64> = (0..levels).map(|l| f64::from(params.level_weight).powi(l as i32)).collect();
    let total: f64 = weights.iter().sum();

    let mut features = Vec::with_capacity(params.max_features);
    let mut carry = 0usize; // budget a level could not use goes to the next
    for (level, weight) in weights.iter().enumerate() {
        let remaining = params.max_features - features.len();
        let mut budget = ((params.max_features as f64 * weight / total).round() as usize + carry).min(remaining);
        if level + 1 == levels {
            budget = remaining;
        }
        let scale = SCALE_FACTOR.powi(level as i32);
        let lw = ((w0 as f32 / scale).round() as usize).max(1);
        let lh = ((h0 as f32 / scale).round() as usize).max(1);
        let img = if level == 0 { to_gray(&base, w0, h0) } else { to_gray(&resize(&base, w0, h0, lw, lh), lw, lh) };
        let mut found = fast9(&img, params.fast_threshold);
        if found.len() < budget && params.fast_threshold > params.fast_threshold_low {
            found = fast9(&img, params.fast_threshold_low);
        }
        let corners: Vec<Corner> =
            found.into_iter().map(|(x, y)| Corner { x, y, response: harris(&img, x, y) }).collect();
        let chosen = spread(corners, lw, lh, params.cell, budget);
        carry = budget - chosen.len();
        if chosen.is_empty() {
            continue;
        }
        let smooth = blur(&img);
        // Level pixel centres → working-image coordinates.
        let (fx, fy) = (w0 as f32 / lw as f32, h0 as f32 / lh as f32);
        for c in chosen {
            // The stored (quantised) angle is the one the pattern is steered by.
            let angle = quantize_angle(orientation(&img, c.x, c.y));
            features.push(Feature {
                x: quantize_coord((c.x as f32 + 0.5) * fx - 0.5),
                y: quantize_coord((c.y as f32 + 0.5) * fy - 0.5),
                level: level as u8,
                angle,
                desc: describe(&smooth, c.x, c.y, angle),
            });
        }
    }
    features
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arc_of_nine_is_found_anywhere_on_the_ring() {
        for start in 0..16 {
            let run = |n: u32| (0..n).fold(0u32, |m, k| m | 1 << ((start + k) % 16));
            assert!(has_arc9(run(9)), "start {start}");
            assert!(has_arc9(run(12)), "start {start}");
            assert!(!has_arc9(run(8)), "start {start}");
        }
        assert!(!has_arc9(0b0101_0101_0101_0101));
    }

    #[test]
    fn rounding_to_u8_matches_round_then_clamp() {
        let plain = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        let edges = [0.49999997f32, 0.5, 1.5, 2.5, 254.49998, 254.5, 255.5, -0.5, -0.0, 1e-40, f32::NAN, f32::INFINITY];
        let edges = edges.into_iter().chain(edges.map(|v| -v));
        for v in edges.chain((0..u32::MAX).step_by(97).map(f32::from_bits)) {
            assert_eq!(round_to_u8(v), plain(v), "{v:e}");
        }
    }

    #[test]
    fn disc_rows_are_the_floor_of_the_root() {
        let r = ORIENTATION_RADIUS;
        for (k, &half) in DISC.iter().enumerate() {
            let dy = k as i32 - r;
            assert_eq!(half, ((r * r - dy * dy) as f64).sqrt() as i32);
        }
    }

    #[test]
    fn resize_keeps_a_flat_image_flat_and_averages_when_shrinking() {
        let flat = vec![100f32; 37 * 23];
        let out = resize(&flat, 37, 23, 16, 10);
        assert!(out.iter().all(|&v| (v - 100.0).abs() < 1e-3));
        // A 1-pixel checkerboard shrunk 4× becomes mid-grey, not aliased stripes.
        let checker: Vec<f32> = (0..64 * 64).map(|i| if (i % 64 + i / 64) % 2 == 0 { 0.0 } else { 255.0 }).collect();
        let out = resize(&checker, 64, 64, 16, 16);
        assert!(out.iter().all(|&v| (v - 127.5).abs() < 20.0), "{out:?}");
    }

    #[test]
    fn fast_finds_the_corners_of_a_square_and_nothing_on_flat_ground() {
        let (w, h) = (96, 96);
        let mut px = vec![200u8; w * h];
        for y in 30..66 {
            for x in 30..66 {
                px[y * w + x] = 40;
            }
        }
        let img = Gray { w, h, px };
        let corners = fast9(&img, 20);
        assert!(!corners.is_empty());
        for &(x, y) in &corners {
            let near = |a: usize, b: usize| a.abs_diff(b) <= 2;
            assert!((near(x, 30) || near(x, 65)) && (near(y, 30) || near(y, 65)), "({x}, {y})");
        }
        let flat = Gray { w, h, px: vec![128u8; w * h] };
        assert!(fast9(&flat, 5).is_empty());
    }

    #[test]
    fn orientation_points_towards_the_bright_side() {
        let (w, h) = (64, 64);
        // Bright to the right of column 40: the centroid of (32, 32) is to its right.
        let img = Gray { w, h, px: (0..w * h).map(|i| if i % w > 40 { 255 } else { 0 }).collect() };
        assert!(orientation(&img, 32, 32).abs() < 1e-3);
        // Bright below row 40: +90° (y down).
        let img = Gray { w, h, px: (0..w * h).map(|i| if i / w > 40 { 255 } else { 0 }).collect() };
        assert!((orientation(&img, 32, 32) - std::f32::consts::FRAC_PI_2).abs() < 1e-3);
    }
}

#[cfg(test)]
mod stage_costs {
    use super::*;

    /// Not a check: CPU time per stage on a 512 × 512 level.
    /// `cargo test --release --lib features::detect::stage_costs -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn stage_costs() {
        let cpu_us = || -> f64 {
            let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
            stat.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1e3
        };
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.jpg");
        let img = image::open(path).unwrap().resize_exact(1000, 1000, image::imageops::FilterType::Triangle).to_luma8();
        let luma: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v)).collect();
        let runs = 20;
        let stage = |what: &str, f: &mut dyn FnMut()| {
            let start = cpu_us();
            for _ in 0..runs {
                f();
            }
            eprintln!("{what:40} {:8.1} µs cpu", (cpu_us() - start) / f64::from(runs));
        };
        let base = resize(&luma, 1000, 1000, 512, 512);
        let g = to_gray(&base, 512, 512);
        stage("resize 1000² → 512²", &mut || drop(std::hint::black_box(resize(&luma, 1000, 1000, 512, 512))));
        stage("resize 512² → 362²", &mut || drop(std::hint::black_box(resize(&base, 512, 512, 362, 362))));
        stage("to_gray 512²", &mut || drop(std::hint::black_box(to_gray(&base, 512, 512))));
        stage("fast9 512², t = 20", &mut || drop(std::hint::black_box(fast9(&g, 20))));
        let corners = fast9(&g, 20);
        stage("harris on every fast9 corner", &mut || {
            std::hint::black_box(corners.iter().map(|&(x, y)| harris(&g, x, y)).sum::<f32>());
        });
        stage("blur 512²", &mut || drop(std::hint::black_box(blur(&g))));
        let smooth = blur(&g);
        stage("orientation + describe × 100", &mut || {
            for &(x, y) in corners.iter().take(100) {
                std::hint::black_box(describe(&smooth, x, y, quantize_angle(orientation(&g, x, y))));
            }
        });
        stage("extract (all of it)", &mut || {
            drop(std::hint::black_box(extract(&luma, 1000, 1000, &ExtractParams::default())));
        });
        eprintln!("{} corners at t = 20", corners.len());
    }
}
