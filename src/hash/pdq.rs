//! A port of Meta's PDQ perceptual hash (ThreatExchange `pdq/cpp`, `pdqhashing.cpp`).
//!
//! The steps follow the reference exactly, in `f32` like the reference, so that a
//! full-resolution input hashes to the same bits (give or take a rounding-order bit):
//!
//! 1. luminance `0.299 R + 0.587 G + 0.114 B` (done by the caller, see [`super::decode`]);
//! 2. two passes of a Jarosz (box-of-boxes) filter along rows then columns, window
//!    `(old + 2·64 − 1) / (2·64)`, then decimation to 64×64 by sampling cell centres;
//! 3. quality: the sum of |neighbour differences| on the 64×64 buffer, scaled to 0–100;
//! 4. a 16×16 DCT of the 64×64 buffer (rows 1..=16 of the DCT-II basis: DC dropped);
//! 5. bit `i·16 + j` is set when coefficient `[i][j]` exceeds the median of all 256.
//!
//! The eight dihedral variants (rotations and mirrors) come from sign changes and a
//! transpose of the one 16×16 coefficient block, as the reference does, so the extra
//! seven hashes cost almost nothing.

use super::Hash256;

/// Side of the downsampled buffer the DCT runs on.
pub const DOWNSAMPLE: usize = 64;
/// Side of the kept DCT coefficient block.
const DCT_SIDE: usize = 16;
/// Passes of the box filter (the reference's `PDQ_NUM_JAROSZ_XY_PASSES`).
const JAROSZ_PASSES: usize = 2;

/// One of the eight rotations/mirrors of a square, in the order of the reference's
/// `pdqDihedralHash256esFromFloatLuma` (and of PyPI `pdqhash.compute_dihedral`).
///
/// The variant `t` of an image's hash is (up to filter rounding) the hash of `t`
/// applied to the image's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Orientation {
    /// The image as it is.
    Original = 0,
    /// Rotated a quarter turn counter-clockwise.
    Rotate90 = 1,
    /// Rotated a half turn.
    Rotate180 = 2,
    /// Rotated three quarter turns counter-clockwise (a quarter turn clockwise).
    Rotate270 = 3,
    /// Mirrored top to bottom (each column reversed).
    FlipX = 4,
    /// Mirrored left to right (each row reversed).
    FlipY = 5,
    /// Transposed: mirrored about the main diagonal.
    FlipPlus1 = 6,
    /// Mirrored about the anti-diagonal.
    FlipMinus1 = 7,
}

impl Orientation {
    /// All eight, in index order.
    pub const ALL: [Orientation; 8] = [
        Orientation::Original,
        Orientation::Rotate90,
        Orientation::Rotate180,
        Orientation::Rotate270,
        Orientation::FlipX,
        Orientation::FlipY,
        Orientation::FlipPlus1,
        Orientation::FlipMinus1,
    ];

    /// The orientation with index `i` (0–7).
    pub fn from_index(i: u8) -> Option<Orientation> {
        Self::ALL.get(usize::from(i)).copied()
    }

    /// Stable machine name, used in JSON output and the API.
    pub fn name(self) -> &'static str {
        match self {
            Orientation::Original => "original",
            Orientation::Rotate90 => "rotate90",
            Orientation::Rotate180 => "rotate180",
            Orientation::Rotate270 => "rotate270",
            Orientation::FlipX => "flip_x",
            Orientation::FlipY => "flip_y",
            Orientation::FlipPlus1 => "transpose",
            Orientation::FlipMinus1 => "transverse",
        }
    }

    /// The transform that undoes this one.
    pub fn inverse(self) -> Orientation {
        match self {
            Orientation::Rotate90 => Orientation::Rotate270,
            Orientation::Rotate270 => Orientation::Rotate90,
            other => other,
        }
    }

    /// Where a point of an image lands once this transform is applied to it, both in
    /// shares of the width and height (0–1, `y` down): how a listing whose variant in
    /// this orientation matched maps onto the stored photo.
    pub fn map(self, u: f32, v: f32) -> (f32, f32) {
        match self {
            Orientation::Original => (u, v),
            Orientation::Rotate90 => (v, 1.0 - u),
            Orientation::Rotate180 => (1.0 - u, 1.0 - v),
            Orientation::Rotate270 => (1.0 - v, u),
            Orientation::FlipX => (u, 1.0 - v),
            Orientation::FlipY => (1.0 - u, v),
            Orientation::FlipPlus1 => (v, u),
            Orientation::FlipMinus1 => (1.0 - v, 1.0 - u),
        }
    }

    /// Plain words for a person: how a listing relates to the stored photo when the
    /// listing's hash had to be turned by `self` to match.
    pub fn describe_match(self) -> &'static str {
        match self.inverse() {
            Orientation::Original => "same orientation",
            Orientation::Rotate90 => "rotated 90° counter-clockwise",
            Orientation::Rotate180 => "rotated 180°",
            Orientation::Rotate270 => "rotated 90° clockwise",
            Orientation::FlipX => "mirrored top to bottom",
            Orientation::FlipY => "mirrored left to right",
            Orientation::FlipPlus1 => "mirrored about the diagonal",
            Orientation::FlipMinus1 => "mirrored about the anti-diagonal",
        }
    }
}

/// PDQ output for one image: the hash, its quality and all eight dihedral variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdqHashes {
    /// Quality score 0–100: how much gradient the image has. Below ~50 the hash is
    /// unreliable (flat or nearly blank images).
    pub quality: u8,
    /// Hash of each orientation, indexed by `Orientation as usize`; `[0]` is the hash.
    pub dihedral: [Hash256; 8],
}

/// Images narrower or shorter than this get the reference's answer for "too small to
/// hash": an all-zero hash of quality 0 (`MIN_HASHABLE_DIM` in `pdqhashing.cpp`).
pub const MIN_HASHABLE_SIDE: usize = 5;

impl PdqHashes {
    /// What the reference returns for an image under [`MIN_HASHABLE_SIDE`] on a side.
    pub fn too_small() -> PdqHashes {
        PdqHashes { quality: 0, dihedral: [Hash256::default(); 8] }
    }

    /// The hash of the image as it is.
    pub fn hash(&self) -> Hash256 {
        self.dihedral[0]
    }
}

/// Reusable work buffers, so that hashing many images does not reallocate.
#[derive(Default)]
pub struct PdqScratch {
    /// `DOWNSAMPLE` rows of the plane's width: the plane filtered along its columns and
    /// sampled at the 64 output rows.
    rows: Vec<f32>,
    vertical: AxisKernel,
    horizontal: AxisKernel,
}

/// Hash a luminance plane (row-major, `width * height` values in 0–255).
pub fn hash_luma(luma: &[f32], width: usize, height: usize, scratch: &mut PdqScratch) -> PdqHashes {
    if width < MIN_HASHABLE_SIDE || height < MIN_HASHABLE_SIDE {
        return PdqHashes::too_small();
    }
    hash_64x64(&filter_and_decimate(luma, width, height, scratch))
}

/// Step 2 of the algorithm: the Jarosz filter and decimation to a 64×64 buffer, which
/// the pHash also starts from.
///
/// The reference filters the whole plane (two box passes along rows, then columns,
/// twice) and then keeps only 64×64 samples of it. Both passes are linear, so each
/// sample is a fixed weighted sum of the pixels near it: the weights along one axis are
/// a row of `B·B` (`B` the box operator, with the reference's shrinking window at the
/// edges), and the 2-D weights are the product of the two axes'. This computes those
/// weights exactly and applies them directly: one multiply-add per pixel for the 64
/// sampled rows (a contiguous sweep), then a small 64 × width pass, instead of eight
/// divisions and a dozen memory passes per pixel. The result equals the reference's up
/// to `f32` rounding order.
pub fn filter_and_decimate(
    luma: &[f32],
    width: usize,
    height: usize,
    scratch: &mut PdqScratch,
) -> Box<[f32; DOWNSAMPLE * DOWNSAMPLE]> {
    assert_eq!(luma.len(), width * height, "luma plane size does not match its dimensions");
    assert!(width > 0 && height > 0, "empty luma plane");
    scratch.vertical.build(height);
    scratch.horizontal.build(width);
    let rows = &mut scratch.rows;
    rows.clear();
    rows.resize(DOWNSAMPLE * width, 0.0);
    // Along the columns: output row i = sum over plane rows r of weight(i, r) · row r.
    for (i, acc) in rows.chunks_exact_mut(width).enumerate() {
        let (first, weights) = scratch.vertical.taps(i);
        for (r, &k) in (first..).zip(weights) {
            let row = &luma[r * width..(r + 1) * width];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += k * v;
            }
        }
    }
    // Along the rows, on the 64 sampled rows only.
    let mut out = Box::new([0.0f32; DOWNSAMPLE * DOWNSAMPLE]);
    for (acc, out_row) in rows.chunks_exact(width).zip(out.chunks_exact_mut(DOWNSAMPLE)) {
        for (j, o) in out_row.iter_mut().enumerate() {
            let (first, weights) = scratch.horizontal.taps(j);
            *o = acc[first..first + weights.len()].iter().zip(weights).map(|(&v, &k)| v * k).sum();
        }
    }
    out
}

/// The Jarosz filter along one axis of length `len`, restricted to the 64 positions
/// decimation samples: for each, the first input index and the weights from there on.
#[derive(Default)]
struct AxisKernel {
    len: usize,
    /// Per sample: the first input index, and the `(start, end)` of its weights in
    /// `weights`.
    taps: Vec<(usize, usize, usize)>,
    weights: Vec<f32>,
}

impl AxisKernel {
    fn taps(&self, i: usize) -> (usize, &[f32]) {
        let (first, start, end) = self.taps[i];
        (first, &self.weights[start..end])
    }

    /// Weights for an axis of `len` pixels (kept when `len` has not changed).
    fn build(&mut self, len: usize) {
        if self.len == len && !self.weights.is_empty() {
            return;
        }
        self.len = len;
        self.weights.clear();
        self.taps.clear();
        let window = jarosz_window(len, DOWNSAMPLE);
        // The reference's box1DFloat averages, for output o, the inputs
        // o + half - window ..= o + half - 1, clipped to the axis.
        let half = (window + 2) / 2;
        let range = |o: usize| ((o + half).saturating_sub(window), (o + half - 1).min(len - 1));
        let mut dense = Vec::new();
        for i in 0..DOWNSAMPLE {
            let sample = (((i as f64 + 0.5) * len as f64) / DOWNSAMPLE as f64) as usize;
            // Start from the unit vector at `sample` and apply the box (transposed)
            // once per pass: v ← Σ_k v[k] · (uniform over range(k)).
            let (mut lo, mut hi) = (sample, sample);
            dense.clear();
            dense.push(1.0f64);
            for _ in 0..JAROSZ_PASSES {
                let (new_lo, new_hi) = (range(lo).0, range(hi).1);
                let mut next = vec![0.0f64; new_hi - new_lo + 1];
                for (k, &v) in (lo..=hi).zip(&dense) {
                    let (a, b) = range(k);
                    let share = v / (b - a + 1) as f64;
                    next[a - new_lo..=b - new_lo].iter_mut().for_each(|x| *x += share);
                }
                (lo, hi, dense) = (new_lo, new_hi, next);
            }
            let start = self.weights.len();
            self.weights.extend(dense.iter().map(|&v| v as f32));
            self.taps.push((lo, start, self.weights.len()));
        }
    }
}

/// Hash an already filtered and decimated 64×64 buffer (steps 3–5).
pub fn hash_64x64(buf: &[f32; DOWNSAMPLE * DOWNSAMPLE]) -> PdqHashes {
    let quality = quality_64x64(buf);
    let coeffs = dct_64_to_16(buf);
    let dihedral = Orientation::ALL.map(|o| bits_above_median(&transform_coefficients(&coeffs, o)));
    PdqHashes { quality, dihedral }
}

/// The reference's `computeJaroszFilterWindowSize`.
fn jarosz_window(old: usize, new: usize) -> usize {
    old.div_ceil(2 * new)
}

#[cfg(test)]
/// The reference filters each column separately (`box_1d` with a stride of a whole
/// row), which walks memory against the grain. This sweeps rows instead, keeping one
/// running sum per column: every column sees the same additions, subtractions and
/// divisions in the same order as the reference, so the result is bit-identical, but
/// memory is read sequentially (about 5× faster on large photos).
fn box_along_cols(input: &[f32], output: &mut [f32], rows: usize, cols: usize, window: usize, sums: &mut Vec<f32>) {
    let half_window = (window + 2) / 2;
    let (phase1, phase2, phase3, phase4) = (half_window - 1, window - half_window + 1, rows - window, half_window - 1);
    sums.clear();
    sums.resize(cols, 0.0);
    let row = |r: usize| &input[r * cols..(r + 1) * cols];
    let (mut li, mut ri, mut oi, mut current) = (0usize, 0usize, 0usize, 0usize);
    let emit = |output: &mut [f32], oi: usize, sums: &[f32], current: usize| {
        for (o, s) in output[oi * cols..(oi + 1) * cols].iter_mut().zip(sums) {
            *o = s / current as f32;
        }
    };
    for _ in 0..phase1 {
        sums.iter_mut().zip(row(ri)).for_each(|(s, v)| *s += v);
        current += 1;
        ri += 1;
    }
    for _ in 0..phase2 {
        sums.iter_mut().zip(row(ri)).for_each(|(s, v)| *s += v);
        current += 1;
        emit(output, oi, sums, current);
        ri += 1;
        oi += 1;
    }
    for _ in 0..phase3 {
        sums.iter_mut().zip(row(ri)).zip(row(li)).for_each(|((s, add), sub)| {
            *s += add;
            *s -= sub;
        });
        emit(output, oi, sums, current);
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..phase4 {
        sums.iter_mut().zip(row(li)).for_each(|(s, v)| *s -= v);
        current -= 1;
        emit(output, oi, sums, current);
        li += 1;
        oi += 1;
    }
}

#[cfg(test)]
/// The reference's `box1DFloat`: a centred running mean whose window shrinks at the ends.
fn box_1d(input: &[f32], output: &mut [f32], len: usize, stride: usize, full_window: usize) {
    // As in the reference: 7 -> 4, 8 -> 5.
    let half_window = (full_window + 2) / 2;
    let phase1 = half_window - 1;
    let phase2 = full_window - half_window + 1;
    let phase3 = len - full_window;
    let phase4 = half_window - 1;
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut sum = 0.0f32;
    let mut current = 0usize;
    for _ in 0..phase1 {
        sum += input[ri];
        current += 1;
        ri += stride;
    }
    for _ in 0..phase2 {
        sum += input[ri];
        current += 1;
        output[oi] = sum / current as f32;
        ri += stride;
        oi += stride;
    }
    for _ in 0..phase3 {
        sum += input[ri];
        sum -= input[li];
        output[oi] = sum / current as f32;
        li += stride;
        ri += stride;
        oi += stride;
    }
    for _ in 0..phase4 {
        sum -= input[li];
        current -= 1;
        output[oi] = sum / current as f32;
        li += stride;
        oi += stride;
    }
}

#[cfg(test)]
/// The reference's `decimateFloat`: sample the centre of each of 64×64 cells.
fn decimate(input: &[f32], rows: usize, cols: usize) -> Box<[f32; DOWNSAMPLE * DOWNSAMPLE]> {
    let mut out = Box::new([0.0f32; DOWNSAMPLE * DOWNSAMPLE]);
    for i in 0..DOWNSAMPLE {
        let ini = (((i as f64 + 0.5) * rows as f64) / DOWNSAMPLE as f64) as usize;
        for j in 0..DOWNSAMPLE {
            let inj = (((j as f64 + 0.5) * cols as f64) / DOWNSAMPLE as f64) as usize;
            out[i * DOWNSAMPLE + j] = input[ini * cols + inj];
        }
    }
    out
}

/// The reference's `computePDQImageDomainQualityMetric`.
fn quality_64x64(buf: &[f32; DOWNSAMPLE * DOWNSAMPLE]) -> u8 {
    let step = |u: f32, v: f32| -> i64 { (((u - v) * 100.0) / 255.0) as i32 as i64 };
    let mut gradient_sum: i64 = 0;
    for i in 0..DOWNSAMPLE - 1 {
        for j in 0..DOWNSAMPLE {
            gradient_sum += step(buf[i * DOWNSAMPLE + j], buf[(i + 1) * DOWNSAMPLE + j]).abs();
        }
    }
    for i in 0..DOWNSAMPLE {
        for j in 0..DOWNSAMPLE - 1 {
            gradient_sum += step(buf[i * DOWNSAMPLE + j], buf[i * DOWNSAMPLE + j + 1]).abs();
        }
    }
    (gradient_sum / 90).min(100) as u8
}

/// `D[i][j] = sqrt(2/64) · cos(π/128 · (i+1) · (2j+1))`, 16×64 (the DC row is skipped).
fn dct_matrix() -> &'static [[f32; DOWNSAMPLE]; DCT_SIDE] {
    static MATRIX: std::sync::OnceLock<[[f32; DOWNSAMPLE]; DCT_SIDE]> = std::sync::OnceLock::new();
    MATRIX.get_or_init(|| {
        let scale = (2.0f64 / DOWNSAMPLE as f64).sqrt();
        let mut m = [[0.0f32; DOWNSAMPLE]; DCT_SIDE];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let angle = std::f64::consts::PI / 2.0 / DOWNSAMPLE as f64 * (i + 1) as f64 * (2 * j + 1) as f64;
                *v = (scale * angle.cos()) as f32;
            }
        }
        m
    })
}

/// `B = D · A · Dᵀ`, summed in the reference's order.
fn dct_64_to_16(a: &[f32; DOWNSAMPLE * DOWNSAMPLE]) -> [[f32; DCT_SIDE]; DCT_SIDE] {
    let d = dct_matrix();
    let mut t = [[0.0f32; DOWNSAMPLE]; DCT_SIDE];
    for i in 0..DCT_SIDE {
        for j in 0..DOWNSAMPLE {
            let mut sum = 0.0f32;
            for k in 0..DOWNSAMPLE {
                sum += d[i][k] * a[k * DOWNSAMPLE + j];
            }
            t[i][j] = sum;
        }
    }
    let mut b = [[0.0f32; DCT_SIDE]; DCT_SIDE];
    for i in 0..DCT_SIDE {
        for j in 0..DCT_SIDE {
            let mut sum = 0.0f32;
            for k in 0..DOWNSAMPLE {
                sum += t[i][k] * d[j][k];
            }
            b[i][j] = sum;
        }
    }
    b
}

/// The reference's `dct16OriginalTo*`: a DCT basis row of frequency `i+1` is odd or even
/// under reversal, so mirroring an image negates every other coefficient row/column, and
/// a transpose of the image transposes the block.
fn transform_coefficients(a: &[[f32; DCT_SIDE]; DCT_SIDE], o: Orientation) -> [[f32; DCT_SIDE]; DCT_SIDE] {
    let mut b = [[0.0f32; DCT_SIDE]; DCT_SIDE];
    for i in 0..DCT_SIDE {
        for j in 0..DCT_SIDE {
            let v = a[i][j];
            let (odd_i, odd_j, odd_sum) = (i & 1 == 1, j & 1 == 1, (i + j) & 1 == 1);
            let signed = |keep: bool| if keep { v } else { -v };
            match o {
                Orientation::Original => b[i][j] = v,
                Orientation::Rotate90 => b[j][i] = signed(odd_j),
                Orientation::Rotate180 => b[i][j] = signed(!odd_sum),
                Orientation::Rotate270 => b[j][i] = signed(odd_i),
                Orientation::FlipX => b[i][j] = signed(odd_i),
                Orientation::FlipY => b[i][j] = signed(odd_j),
                Orientation::FlipPlus1 => b[j][i] = v,
                Orientation::FlipMinus1 => b[j][i] = signed(!odd_sum),
            }
        }
    }
    b
}

/// Bit `i·16 + j` set when `b[i][j]` is above the median (the reference's `torben`,
/// which for 256 values returns the 128th smallest).
fn bits_above_median(b: &[[f32; DCT_SIDE]; DCT_SIDE]) -> Hash256 {
    let mut sorted: Vec<f32> = b.iter().flatten().copied().collect();
    sorted.sort_unstable_by(f32::total_cmp);
    let median = sorted[(DCT_SIDE * DCT_SIDE - 1) / 2];
    let mut words = [0u64; 4];
    for (k, &v) in b.iter().flatten().enumerate() {
        if v > median {
            words[k / 64] |= 1 << (k % 64);
        }
    }
    Hash256(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient_image(w: usize, h: usize) -> Vec<f32> {
        (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    let (x, y) = (x as f32, y as f32);
                    128.0
                        + 60.0 * (x / 9.0).sin() * (y / 13.0).cos()
                        + 40.0 * ((x + 2.0 * y) / 17.0).sin()
                        + 20.0 * ((x * x + y) / 300.0).cos()
                })
            })
            .collect()
    }

    #[test]
    fn box_filter_of_a_constant_is_that_constant() {
        let input = vec![5.0f32; 37];
        let mut out = vec![0.0f32; 37];
        for window in [1, 2, 3, 7, 8, 37] {
            box_1d(&input, &mut out, 37, 1, window);
            assert!(out.iter().all(|&v| (v - 5.0).abs() < 1e-5), "window {window}: {out:?}");
        }
    }

    #[test]
    fn box_filter_matches_a_naive_centred_mean() {
        let input: Vec<f32> = (0..20).map(|i| (i * i % 17) as f32).collect();
        let mut out = vec![0.0f32; 20];
        let window = 5;
        box_1d(&input, &mut out, 20, 1, window);
        // Window of 5 centred: [i-2, i+2] clipped to the vector.
        for (i, &got) in out.iter().enumerate() {
            let lo = i.saturating_sub(2);
            let hi = (i + 2).min(19);
            let want: f32 = input[lo..=hi].iter().sum::<f32>() / (hi - lo + 1) as f32;
            assert!((got - want).abs() < 1e-4, "at {i}: {got} vs {want}");
        }
    }

    #[test]
    fn column_sweep_equals_the_reference_column_filter_bit_for_bit() {
        let (rows, cols) = (53, 17);
        let input: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 251) as f32 * 1.37).collect();
        for window in [1, 2, 3, 6, 7, 53] {
            let mut reference = vec![0.0f32; rows * cols];
            for c in 0..cols {
                box_1d(&input[c..], &mut reference[c..], rows, cols, window);
            }
            let mut swept = vec![0.0f32; rows * cols];
            box_along_cols(&input, &mut swept, rows, cols, window, &mut Vec::new());
            assert!(reference.iter().zip(&swept).all(|(a, b)| a.to_bits() == b.to_bits()), "window {window}");
        }
    }

    /// The reference's whole pipeline (filter every pixel in place, then sample).
    fn reference_filter_and_decimate(luma: &[f32], width: usize, height: usize) -> Box<[f32; DOWNSAMPLE * DOWNSAMPLE]> {
        let mut plane = luma.to_vec();
        let mut tmp = vec![0.0f32; plane.len()];
        let mut sums = Vec::new();
        let (along_rows, along_cols) = (jarosz_window(width, DOWNSAMPLE), jarosz_window(height, DOWNSAMPLE));
        for _ in 0..JAROSZ_PASSES {
            for r in 0..height {
                let range = r * width..(r + 1) * width;
                box_1d(&plane[range.clone()], &mut tmp[range], width, 1, along_rows);
            }
            box_along_cols(&tmp, &mut plane, height, width, along_cols, &mut sums);
        }
        decimate(&plane, height, width)
    }

    #[test]
    fn direct_weights_equal_the_reference_filter() {
        let mut scratch = PdqScratch::default();
        for (w, h) in
            [(1, 1), (3, 7), (64, 64), (63, 65), (100, 37), (300, 200), (129, 1000), (1500, 1000), (1023, 1537)]
        {
            let luma = gradient_image(w, h);
            let want = reference_filter_and_decimate(&luma, w, h);
            let got = filter_and_decimate(&luma, w, h, &mut scratch);
            let worst = want.iter().zip(got.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 2e-3, "{w}×{h}: differs by up to {worst}");
        }
    }

    #[test]
    fn half_the_bits_are_set() {
        let (w, h) = (300, 200);
        let luma = gradient_image(w, h);
        let hashes = hash_luma(&luma, w, h, &mut PdqScratch::default());
        for variant in hashes.dihedral {
            assert_eq!(variant.count_ones(), 128);
        }
    }

    #[test]
    fn flat_image_has_zero_quality() {
        let luma = vec![128.0f32; 100 * 100];
        let hashes = hash_luma(&luma, 100, 100, &mut PdqScratch::default());
        assert_eq!(hashes.quality, 0);
    }

    /// Applying a transform to the pixels and hashing must give (nearly) the variant
    /// computed from the coefficients: this pins down which variant is which.
    #[test]
    fn dihedral_variants_match_transformed_pixels() {
        // At 64×64 the filter is the identity and decimation keeps every pixel, so a
        // transform of the pixels is exactly a transform of the buffer the DCT sees.
        let n = 64;
        let base = gradient_image(n, n);
        let at = |x: usize, y: usize| base[y * n + x];
        type PixelAt<'a> = Box<dyn Fn(usize, usize) -> f32 + 'a>;
        let transforms: [(Orientation, PixelAt); 8] = [
            (Orientation::Original, Box::new(at)),
            // Counter-clockwise quarter turn: new(x, y) = old(n-1-y, x).
            (Orientation::Rotate90, Box::new(|x, y| at(n - 1 - y, x))),
            (Orientation::Rotate180, Box::new(|x, y| at(n - 1 - x, n - 1 - y))),
            (Orientation::Rotate270, Box::new(|x, y| at(y, n - 1 - x))),
            (Orientation::FlipX, Box::new(|x, y| at(x, n - 1 - y))),
            (Orientation::FlipY, Box::new(|x, y| at(n - 1 - x, y))),
            (Orientation::FlipPlus1, Box::new(|x, y| at(y, x))),
            (Orientation::FlipMinus1, Box::new(|x, y| at(n - 1 - y, n - 1 - x))),
        ];
        let mut scratch = PdqScratch::default();
        let plane = base.clone();
        let original = hash_luma(&plane, n, n, &mut scratch);
        let mut worst = 0;
        for (o, f) in transforms {
            let moved: Vec<f32> = (0..n).flat_map(|y| (0..n).map(move |x| (x, y))).map(|(x, y)| f(x, y)).collect();
            // `map` says where each pixel went.
            for (old_y, old_x) in (0..n).flat_map(|y| (0..n).map(move |x| (y, x))) {
                let share = |p: usize| (p as f32 + 0.5) / n as f32;
                let (u, v) = o.map(share(old_x), share(old_y));
                let (x, y) = ((u * n as f32) as usize, (v * n as f32) as usize);
                assert_eq!(moved[y * n + x], at(old_x, old_y), "{o:?}: ({old_x}, {old_y}) → ({x}, {y})");
            }
            let direct = hash_luma(&moved, n, n, &mut scratch).hash();
            let distance = direct.distance(&original.dihedral[o as usize]);
            worst = worst.max(distance);
        }
        assert!(worst <= 2, "a transformed image's hash is {worst} bits from its variant");
    }

    #[test]
    fn images_under_five_pixels_on_a_side_get_the_reference_zero_hash() {
        // pdqhash (the reference) on random 3×3 and 4×10 images: all-zero, quality 0;
        // on 5×5, a real hash.
        let mut scratch = PdqScratch::default();
        for (w, h) in [(3, 3), (4, 10), (10, 4), (1, 1)] {
            let plane = gradient_image(w, h);
            assert_eq!(hash_luma(&plane, w, h, &mut scratch), PdqHashes::too_small(), "{w}×{h}");
        }
        let plane = gradient_image(5, 5);
        assert_ne!(hash_luma(&plane, 5, 5, &mut scratch).hash(), Hash256::default());
    }
}
