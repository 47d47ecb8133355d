//! Descriptor matching and geometric verification.
//!
//! Pipeline: mutual nearest neighbours by Hamming distance with a ratio test → RANSAC
//! over 2-point similarity hypotheses (deterministic sampling) → least-squares
//! refinement on the inliers: similarity, then affine, then homography (each kept only
//! if it keeps at least as many inliers and stays plausible) → acceptance rules.
//!
//! A match is an inlier when the model puts it within `inlier_px` *and* its two
//! keypoints' orientation and pyramid level agree with the model's local rotation and
//! scale there (from the model's Jacobian), which removes most chance agreements.

use std::f32::consts::TAU;

use super::{hamming, Feature, Model, VerifyParams, SCALE_FACTOR};

/// A geometric match between two feature sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// Matches consistent with `transform`, counting once a corner matched at several
    /// pyramid levels (pairs within 2 working pixels of each other on both sides).
    pub inliers: usize,
    /// Descriptor matches that went into RANSAC (after distance, ratio and mutual tests).
    pub matches: usize,
    /// Map from query to candidate working pixels, a row-major 3×3 homography `H`
    /// (`H[8]` = 1): `x' = (H0·x + H1·y + H2) / w`, `y' = (H3·x + H4·y + H5) / w`,
    /// `w = H6·x + H7·y + H8`. An affine or similarity model has `H6 = H7 = 0`.
    pub transform: [f32; 9],
    /// Which model `transform` is.
    pub model: Model,
    /// Scale of the transform at the centre of the query's inliers (√|det J|): > 1 when
    /// the picture is bigger in the candidate.
    pub scale: f32,
    /// Rotation there, degrees, y down (positive turns +x towards +y).
    pub rotation_deg: f32,
    /// Bounding boxes `[x0, y0, x1, y1]` of the inliers in query and candidate working
    /// pixels: where the shared picture is in each.
    pub query_box: [f32; 4],
    pub candidate_box: [f32; 4],
    /// How much of each whole image the inliers cover: the smaller of the inlier box's
    /// width and height as a share of the box around all that image's features (0–1).
    /// A crop covers most of the query; a collage tile, a screenshot's photo or a placed
    /// logo most of the candidate; one or two letters that two wordmarks in one font
    /// have in common cover a fraction of either word.
    pub query_coverage: f32,
    pub candidate_coverage: f32,
    /// The same measure against the region the images share under `transform` (where
    /// the query's feature box and the mapped candidate's overlap; the larger of the two
    /// frames' measures): a shared letter in the middle of two aligned words spans a
    /// fraction of the word.
    pub span: f32,
    /// Inliers per feature that could have matched: (inlier matches) / (features of the
    /// image with fewer of them inside the shared region). A copy matches a good share of
    /// what it shares; two different images aligned by chance (repeated strokes of text
    /// in one font) a few percent.
    pub inlier_ratio: f32,
    /// `(query index, candidate index)` of each inlier.
    pub pairs: Vec<(u32, u32)>,
}

impl Verification {
    /// Whether this model passes `params`' acceptance rules (what [`super::verify`] checks).
    pub fn accepted(&self, params: &VerifyParams) -> bool {
        self.inliers >= params.min_inliers
            && self.query_coverage.max(self.candidate_coverage) >= params.min_coverage
            && self.span >= params.min_span
            && self.inlier_ratio >= params.min_inlier_ratio
    }

    /// Where `transform` puts the query point (`x`, `y`) in the candidate (working pixels).
    pub fn map(&self, x: f32, y: f32) -> (f32, f32) {
        apply(&self.transform, (x, y))
    }

    /// Share of the candidate's features (0–1) that lie in regions of it where none
    /// matched: square cells of [`LOST_CELL`] working pixels holding at least
    /// [`LOST_CELL_MIN`] features and no inlier.
    ///
    /// When the query shows the candidate's whole frame, this tells what was changed in
    /// it. A sticker or a price tag over a plain part of a photo loses little (the
    /// corners it hides were few); a different logo on the same product layout loses
    /// the logo, where a product shot's corners crowd.
    pub fn lost_share(&self, candidate: &[Feature]) -> f32 {
        self.lost_share_of(candidate, |_| true)
    }

    /// [`Self::lost_share`] over the candidate's features that the transform puts inside
    /// the query's working image of `query_size` (at least [`VIEW_MARGIN`] pixels in):
    /// what a crop, a turn or a perspective view keeps of the candidate, and of that,
    /// what was replaced.
    pub fn lost_share_in_view(&self, candidate: &[Feature], query_size: (u32, u32)) -> f32 {
        let Some(back) = invert(&self.transform) else { return 0.0 };
        let (w, h) = (query_size.0 as f32 - VIEW_MARGIN, query_size.1 as f32 - VIEW_MARGIN);
        self.lost_share_of(candidate, |f| {
            let (x, y) = apply(&back, f.pos());
            (VIEW_MARGIN..w).contains(&x) && (VIEW_MARGIN..h).contains(&y)
        })
    }

    /// What covers the candidate's corners that the query lost, when the query shows
    /// the candidate's exact frame: (share of the query's features that appeared over
    /// plain parts of the candidate, [`Self::lost_share`] without the lost cells next to
    /// such a part).
    ///
    /// Cells as for [`Self::lost_share`], the query's features put in them through
    /// `transform`; a plain part is a cell where the query has at least
    /// [`LOST_CELL_MIN`] features, the candidate fewer, and none matched. A sticker or a
    /// price banner over the logo spills onto the plain parts around it (the white
    /// field, an unprinted package): the first share is large and the second small.
    /// Another logo swapped in for the stored one lands where the stored logo was (the
    /// first share small), and stickers elsewhere on it leave the second share large.
    pub fn overlay_shares(&self, query: &[Feature], candidate: &[Feature]) -> (f32, f32) {
        if query.is_empty() || candidate.is_empty() {
            return (0.0, 0.0);
        }
        let (mut stored, mut added, matched) = ([0u32; CELLS], [0u32; CELLS], self.matched_cells(candidate));
        for f in candidate {
            stored[cell_of(f.pos())] += 1;
        }
        for f in query {
            let (x, y) = f.pos();
            added[cell_of(self.map(x, y))] += 1;
        }
        let over_plain = |c: usize| added[c] >= LOST_CELL_MIN && stored[c] < LOST_CELL_MIN && !matched[c];
        let beside_overlay = |c: usize| {
            let (cx, cy) = ((c % LOST_GRID) as isize, (c / LOST_GRID) as isize);
            (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (cx + dx, cy + dy))).any(|(x, y)| {
                (0..LOST_GRID as isize).contains(&x)
                    && (0..LOST_GRID as isize).contains(&y)
                    && over_plain(x as usize + LOST_GRID * y as usize)
            })
        };
        let added_over_plain: u32 = (0..CELLS).filter(|&c| over_plain(c)).map(|c| added[c]).sum();
        let unexplained: u32 = (0..CELLS)
            .filter(|&c| stored[c] >= LOST_CELL_MIN && !matched[c] && !beside_overlay(c))
            .map(|c| stored[c])
            .sum();
        (added_over_plain as f32 / query.len() as f32, unexplained as f32 / candidate.len() as f32)
    }

    /// The cells (see [`cell_of`]) where some inlier of the candidate lies.
    fn matched_cells(&self, candidate: &[Feature]) -> [bool; CELLS] {
        let mut matched = [false; CELLS];
        for &(_, ci) in &self.pairs {
            matched[cell_of(candidate[ci as usize].pos())] = true;
        }
        matched
    }

    fn lost_share_of(&self, candidate: &[Feature], keep: impl Fn(&Feature) -> bool) -> f32 {
        let mut count = [0u32; CELLS];
        let mut total = 0u32;
        for f in candidate.iter().filter(|f| keep(f)) {
            count[cell_of(f.pos())] += 1;
            total += 1;
        }
        if total == 0 {
            return 0.0;
        }
        let matched = self.matched_cells(candidate);
        let lost: u32 = count.iter().zip(&matched).filter(|&(&n, &m)| n >= LOST_CELL_MIN && !m).map(|(&n, _)| n).sum();
        lost as f32 / total as f32
    }
}

/// The [`LOST_CELL`] cell holding working-pixel position (`x`, `y`) (positions
/// outside the image go to the nearest cell).
fn cell_of((x, y): (f32, f32)) -> usize {
    let at = |v: f32| ((v / LOST_CELL).max(0.0) as usize).min(LOST_GRID - 1);
    at(x) + LOST_GRID * at(y)
}

/// How far inside the query's frame a candidate feature must land to count as in view
/// (working pixels: FAST finds nothing nearer the border than its patch).
pub const VIEW_MARGIN: f32 = 16.0;

/// Cell side for [`Verification::lost_share`], working pixels (an 8 × 8 grid over the
/// 512-pixel working image).
pub const LOST_CELL: f32 = 64.0;
const LOST_GRID: usize = 8;
const CELLS: usize = LOST_GRID * LOST_GRID;
/// Fewest features in a cell for its having no inlier to count as lost (fewer go
/// unmatched by chance).
pub const LOST_CELL_MIN: u32 = 4;

/// A tentative correspondence.
#[derive(Clone, Copy, Debug)]
struct Match {
    q: (f32, f32),
    c: (f32, f32),
    /// Candidate orientation minus query orientation, radians.
    dangle: f32,
    /// Candidate level minus query level.
    dlevel: f32,
    qi: u32,
    ci: u32,
}

/// For each query feature its nearest candidate: `(best distance, second best, index)`
/// (first index among equals; `u32::MAX` for a missing second); and for each candidate
/// its nearest query feature: `(distance, index)`, first among equals.
type Nearest = (Vec<(u32, u32, usize)>, Vec<(u32, u32)>);

fn nearest(query: &[Feature], candidate: &[Feature]) -> Nearest {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has the features the kernel is compiled for.
        return unsafe { avx512::nearest(query, candidate) };
    }
    nearest_portable(query, candidate)
}

fn nearest_portable(query: &[Feature], candidate: &[Feature]) -> Nearest {
    let mut col_best = vec![(u32::MAX, u32::MAX); candidate.len()]; // (distance, query index)
    let mut rows = Vec::with_capacity(query.len()); // (best, second, candidate index)
    let cdesc: Vec<[u64; 4]> = candidate.iter().map(|f| f.desc).collect();
    for (qi, qf) in query.iter().enumerate() {
        let (mut best, mut second, mut arg) = (u32::MAX, u32::MAX, 0usize);
        for (ci, cd) in cdesc.iter().enumerate() {
            let d = hamming(&qf.desc, cd);
            if d < best {
                second = best;
                best = d;
                arg = ci;
            } else if d < second {
                second = d;
            }
            if d < col_best[ci].0 {
                col_best[ci] = (d, qi as u32);
            }
        }
        rows.push((best, second, arg));
    }
    (rows, col_best)
}

/// [`nearest`] with AVX-512 VPOPCNTDQ (detected at run time): 8 candidates per 512-bit
/// register, each lane keeping the best, second best and argument of its own candidates,
/// merged per query feature. Same answers as the portable loop (tested).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Feature, Nearest};

    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vpopcntdq")
    }

    /// Distance of padding lanes (past the last candidate): never a best, and the
    /// portable loop's "no second best".
    const NONE: u64 = u32::MAX as u64;

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(lanes: &[u64; 8]) -> __m512i {
        // SAFETY: reads 64 bytes from a 64-byte array; unaligned loads are allowed.
        unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes(v: __m512i) -> [u64; 8] {
        let mut out = [0u64; 8];
        // SAFETY: writes 64 bytes to a 64-byte array; unaligned stores are allowed.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) };
        out
    }

    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub fn nearest(query: &[Feature], candidate: &[Feature]) -> Nearest {
        let groups = candidate.len().div_ceil(8);
        let lane = |g: usize, l: usize| candidate.get(g * 8 + l);
        // Candidates 8 at a time, one register per descriptor word, and the padding.
        let words: Vec<[__m512i; 4]> = (0..groups)
            .map(|g| std::array::from_fn(|w| load(&std::array::from_fn(|l| lane(g, l).map_or(0, |f| f.desc[w])))))
            .collect();
        let pads: Vec<__m512i> =
            (0..groups).map(|g| load(&std::array::from_fn(|l| if lane(g, l).is_some() { 0 } else { NONE }))).collect();
        let mut col_d = vec![_mm512_set1_epi64(NONE as i64); groups];
        let mut col_q = vec![_mm512_set1_epi64(NONE as i64); groups];
        let lane_no = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
        let mut rows = Vec::with_capacity(query.len());
        for (qi, qf) in query.iter().enumerate() {
            let q = qf.desc.map(|w| _mm512_set1_epi64(w as i64));
            let qi_v = _mm512_set1_epi64(qi as i64);
            let (mut best, mut second, mut arg) =
                (_mm512_set1_epi64(NONE as i64), _mm512_set1_epi64(NONE as i64), _mm512_setzero_si512());
            for (g, c) in words.iter().enumerate() {
                let word = |w: usize| _mm512_popcnt_epi64(_mm512_xor_si512(c[w], q[w]));
                let d = _mm512_add_epi64(_mm512_add_epi64(word(0), word(1)), _mm512_add_epi64(word(2), word(3)));
                let d = _mm512_max_epu64(d, pads[g]);
                // Per lane, as the portable loop: a new best pushes the old one to second.
                let better = _mm512_cmplt_epu64_mask(d, best);
                second = _mm512_mask_blend_epi64(better, _mm512_min_epu64(second, d), best);
                best = _mm512_mask_blend_epi64(better, best, d);
                let index = _mm512_add_epi64(_mm512_set1_epi64((g * 8) as i64), lane_no);
                arg = _mm512_mask_blend_epi64(better, arg, index);
                let closer = _mm512_cmplt_epu64_mask(d, col_d[g]);
                col_d[g] = _mm512_mask_blend_epi64(closer, col_d[g], d);
                col_q[g] = _mm512_mask_blend_epi64(closer, col_q[g], qi_v);
            }
            // Merge the lanes: the best (first index among equals), and the second
            // smallest of all lanes' bests and seconds, which holds the overall second.
            let (best, second, arg) = (lanes(best), lanes(second), lanes(arg));
            let (mut b, mut s, mut a) = (NONE, NONE, 0u64);
            for l in 0..8 {
                if best[l] < b || (best[l] == b && arg[l] < a) {
                    s = s.min(b);
                    (b, a) = (best[l], arg[l]);
                } else {
                    s = s.min(best[l]);
                }
                s = s.min(second[l]);
            }
            rows.push((b as u32, s as u32, a as usize));
        }
        let mut col_best = Vec::with_capacity(candidate.len());
        for (d, q) in col_d.into_iter().zip(col_q) {
            col_best.extend(lanes(d).into_iter().zip(lanes(q)).map(|(d, q)| (d as u32, q as u32)));
        }
        col_best.truncate(candidate.len());
        (rows, col_best)
    }
}

/// Nearest neighbours by Hamming distance, filtered by distance, ratio and mutuality.
fn match_descriptors(query: &[Feature], candidate: &[Feature], p: &VerifyParams) -> Vec<Match> {
    if query.is_empty() || candidate.is_empty() {
        return Vec::new();
    }
    let (rows, col_best) = nearest(query, candidate);
    let mut out = Vec::new();
    for (qi, &(best, second, ci)) in rows.iter().enumerate() {
        if best > p.max_distance {
            continue;
        }
        if p.ratio < 1.0 && second != u32::MAX && best as f32 >= p.ratio * second as f32 {
            continue;
        }
        if p.mutual && col_best[ci].1 != qi as u32 {
            continue;
        }
        let (qf, cf) = (&query[qi], &candidate[ci]);
        out.push(Match {
            q: qf.pos(),
            c: cf.pos(),
            dangle: cf.angle_rad() - qf.angle_rad(),
            dlevel: f32::from(cf.level) - f32::from(qf.level),
            qi: qi as u32,
            ci: ci as u32,
        });
    }
    out
}

// ---- transforms ------------------------------------------------------------------------

/// Row-major 3×3 homography.
type H = [f32; 9];

/// A least-squares fit of a model to matches.
type Fit = fn(&[&Match]) -> Option<H>;

/// Where the row-major 3×3 homography `h` (as [`Verification::transform`]) puts (`x`, `y`).
pub fn map_with(h: &[f32; 9], x: f32, y: f32) -> (f32, f32) {
    apply(h, (x, y))
}

/// The inverse of the homography `h`, if it is invertible.
pub fn invert_transform(h: &[f32; 9]) -> Option<[f32; 9]> {
    invert(h)
}

pub(super) fn apply(h: &H, (x, y): (f32, f32)) -> (f32, f32) {
    let w = h[6] * x + h[7] * y + h[8];
    ((h[0] * x + h[1] * y + h[2]) / w, (h[3] * x + h[4] * y + h[5]) / w)
}

/// The Jacobian `[[∂x'/∂x, ∂x'/∂y], [∂y'/∂x, ∂y'/∂y]]` at a point.
fn jacobian(h: &H, (x, y): (f32, f32)) -> [f32; 4] {
    let w = h[6] * x + h[7] * y + h[8];
    let (u, v) = apply(h, (x, y));
    [(h[0] - u * h[6]) / w, (h[1] - u * h[7]) / w, (h[3] - v * h[6]) / w, (h[4] - v * h[7]) / w]
}

/// Local scale (√|det J|) and rotation (radians) at a point.
fn scale_rotation(h: &H, at: (f32, f32)) -> (f32, f32) {
    let j = jacobian(h, at);
    let det = j[0] * j[3] - j[1] * j[2];
    (det.abs().sqrt(), (j[2] - j[1]).atan2(j[0] + j[3]))
}

/// The inverse map, if invertible.
pub(super) fn invert(h: &H) -> Option<H> {
    let m = h.map(f64::from);
    let c = [
        m[4] * m[8] - m[5] * m[7],
        m[2] * m[7] - m[1] * m[8],
        m[1] * m[5] - m[2] * m[4],
        m[5] * m[6] - m[3] * m[8],
        m[0] * m[8] - m[2] * m[6],
        m[2] * m[3] - m[0] * m[5],
        m[3] * m[7] - m[4] * m[6],
        m[1] * m[6] - m[0] * m[7],
        m[0] * m[4] - m[1] * m[3],
    ];
    let det = m[0] * c[0] + m[1] * c[3] + m[2] * c[6];
    if det.abs() < 1e-12 || c[8] == 0.0 {
        return None;
    }
    // Normalise so that H[8] = 1 (the adjugate over its own corner is the inverse up to scale).
    Some(c.map(|v| (v / c[8]) as f32))
}

fn affine(a: f32, b: f32, c: f32, d: f32, e: f32, f: f32) -> H {
    [a, b, c, d, e, f, 0.0, 0.0, 1.0]
}

/// The similarity taking q1 → c1 and q2 → c2 (z' = α z + β in complex numbers).
fn similarity_from_two(m1: &Match, m2: &Match) -> Option<H> {
    let (qx, qy) = (m2.q.0 - m1.q.0, m2.q.1 - m1.q.1);
    let (cx, cy) = (m2.c.0 - m1.c.0, m2.c.1 - m1.c.1);
    let n = qx * qx + qy * qy;
    if n < 1.0 {
        return None;
    }
    // α = (cx + i cy) / (qx + i qy)
    let a = (cx * qx + cy * qy) / n;
    let b = (cy * qx - cx * qy) / n;
    let tx = m1.c.0 - (a * m1.q.0 - b * m1.q.1);
    let ty = m1.c.1 - (b * m1.q.0 + a * m1.q.1);
    Some(affine(a, -b, tx, b, a, ty))
}

/// Least-squares similarity over the given matches.
fn fit_similarity(ms: &[&Match]) -> Option<H> {
    if ms.len() < 2 {
        return None;
    }
    let n = ms.len() as f64;
    let (mut qx, mut qy, mut cx, mut cy) = (0f64, 0f64, 0f64, 0f64);
    for m in ms {
        qx += f64::from(m.q.0);
        qy += f64::from(m.q.1);
        cx += f64::from(m.c.0);
        cy += f64::from(m.c.1);
    }
    let (qx, qy, cx, cy) = (qx / n, qy / n, cx / n, cy / n);
    let (mut sa, mut sb, mut sn) = (0f64, 0f64, 0f64);
    for m in ms {
        let (ux, uy) = (f64::from(m.q.0) - qx, f64::from(m.q.1) - qy);
        let (vx, vy) = (f64::from(m.c.0) - cx, f64::from(m.c.1) - cy);
        sa += ux * vx + uy * vy;
        sb += ux * vy - uy * vx;
        sn += ux * ux + uy * uy;
    }
    if sn < 1e-6 {
        return None;
    }
    let (a, b) = (sa / sn, sb / sn);
    let h = [a, -b, cx - (a * qx - b * qy), b, a, cy - (b * qx + a * qy)].map(|v| v as f32);
    Some(affine(h[0], h[1], h[2], h[3], h[4], h[5]))
}

/// Solve `a · x = b` (n×n, row-major) by Gaussian elimination with partial pivoting.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (top, rest) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (k, row) in rest.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[col + 1 + k] -= f * b[col];
        }
    }
    let mut x = [0f64; N];
    for row in (0..N).rev() {
        let s: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// Translation and scale taking points to mean 0 and mean distance √2 (Hartley).
fn normaliser(pts: impl Iterator<Item = (f32, f32)> + Clone) -> (f64, f64, f64) {
    let n = pts.clone().count().max(1) as f64;
    let (mx, my) = pts.clone().fold((0f64, 0f64), |(a, b), (x, y)| (a + f64::from(x), b + f64::from(y)));
    let (mx, my) = (mx / n, my / n);
    let d = pts.map(|(x, y)| (f64::from(x) - mx).hypot(f64::from(y) - my)).sum::<f64>() / n;
    (mx, my, if d > 1e-9 { std::f64::consts::SQRT_2 / d } else { 1.0 })
}

/// Least-squares affine map over the given matches.
fn fit_affine(ms: &[&Match]) -> Option<H> {
    if ms.len() < 3 {
        return None;
    }
    let (mx, my, s) = normaliser(ms.iter().map(|m| m.q));
    // Per output row r: [x y 1] · (a, b, c) = u_r, in normalised query coordinates.
    let mut ata = [[0f64; 3]; 3];
    let (mut atu, mut atv) = ([0f64; 3], [0f64; 3]);
    for m in ms {
        let row = [(f64::from(m.q.0) - mx) * s, (f64::from(m.q.1) - my) * s, 1.0];
        for i in 0..3 {
            for j in 0..3 {
                ata[i][j] += row[i] * row[j];
            }
            atu[i] += row[i] * f64::from(m.c.0);
            atv[i] += row[i] * f64::from(m.c.1);
        }
    }
    let (r1, r2) = (solve(ata, atu)?, solve(ata, atv)?);
    // Undo the normalisation: x_n = s (x − mx).
    let row = |r: [f64; 3]| [r[0] * s, r[1] * s, r[2] - r[0] * s * mx - r[1] * s * my];
    let (a, b) = (row(r1), row(r2));
    Some(affine(a[0] as f32, a[1] as f32, a[2] as f32, b[0] as f32, b[1] as f32, b[2] as f32))
}

/// Least-squares homography over the given matches (normalised DLT with H8 = 1).
fn fit_homography(ms: &[&Match]) -> Option<H> {
    if ms.len() < 5 {
        return None;
    }
    let (qmx, qmy, qs) = normaliser(ms.iter().map(|m| m.q));
    let (cmx, cmy, cs) = normaliser(ms.iter().map(|m| m.c));
    let mut ata = [[0f64; 8]; 8];
    let mut atb = [0f64; 8];
    for m in ms {
        let (x, y) = ((f64::from(m.q.0) - qmx) * qs, (f64::from(m.q.1) - qmy) * qs);
        let (u, v) = ((f64::from(m.c.0) - cmx) * cs, (f64::from(m.c.1) - cmy) * cs);
        for (row, rhs) in
            [([x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u], u), ([0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v], v)]
        {
            for i in 0..8 {
                for j in 0..8 {
                    ata[i][j] += row[i] * row[j];
                }
                atb[i] += row[i] * rhs;
            }
        }
    }
    let h = solve(ata, atb)?;
    let hn = [h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0];
    // H = Tc⁻¹ · Hn · Tq with Tq = [[qs, 0, −qs·qmx], [0, qs, −qs·qmy], [0, 0, 1]].
    let tq = [qs, 0.0, -qs * qmx, 0.0, qs, -qs * qmy, 0.0, 0.0, 1.0];
    let tc_inv = [1.0 / cs, 0.0, cmx, 0.0, 1.0 / cs, cmy, 0.0, 0.0, 1.0];
    let mul = |a: &[f64; 9], b: &[f64; 9]| {
        let mut o = [0f64; 9];
        for r in 0..3 {
            for c in 0..3 {
                o[r * 3 + c] = (0..3).map(|k| a[r * 3 + k] * b[k * 3 + c]).sum();
            }
        }
        o
    };
    let full = mul(&tc_inv, &mul(&hn, &tq));
    if full[8].abs() < 1e-12 {
        return None;
    }
    Some(full.map(|v| (v / full[8]) as f32))
}

/// Whether a transform is plausible for a copy of a picture over the region `region`
/// of the query (its inliers' box): finite, in front (w > 0), not mirrored, scale
/// within bounds and not too stretched at the region's corners and centre.
fn plausible(h: &H, region: &[f32; 4], p: &VerifyParams) -> bool {
    if !h.iter().all(|v| v.is_finite()) {
        return false;
    }
    let (cx, cy) = ((region[0] + region[2]) / 2.0, (region[1] + region[3]) / 2.0);
    let points =
        [(region[0], region[1]), (region[2], region[1]), (region[0], region[3]), (region[2], region[3]), (cx, cy)];
    points.iter().all(|&(x, y)| {
        if h[6] * x + h[7] * y + h[8] <= 0.0 {
            return false;
        }
        let j = jacobian(h, (x, y));
        let det = j[0] * j[3] - j[1] * j[2];
        if det.is_nan() || det <= 0.0 {
            return false;
        }
        // Singular values of J.
        let s = j.iter().map(|v| v * v).sum::<f32>();
        let root = ((s * s) / 4.0 - det * det).max(0.0).sqrt();
        let (smax, smin) = ((s / 2.0 + root).sqrt(), (s / 2.0 - root).max(0.0).sqrt());
        let scale = det.sqrt();
        smin > 0.0 && smax / smin <= p.max_anisotropy && scale >= p.min_scale && scale <= p.max_scale
    })
}

/// The matches consistent with `h`: position within `inlier_px`, orientation and level
/// within tolerance of the transform's local rotation and scale.
fn inliers<'a>(h: &H, ms: &'a [Match], p: &VerifyParams) -> Vec<&'a Match> {
    let consistent = consistency(h, p);
    ms.iter().filter(|m| consistent(m)).collect()
}

/// How many of `ms` [`inliers`] would return (without collecting them: RANSAC counts
/// up to `max_iterations` hypotheses).
fn count_inliers(h: &H, ms: &[Match], p: &VerifyParams) -> usize {
    let consistent = consistency(h, p);
    ms.iter().filter(|m| consistent(m)).count()
}

/// The test [`inliers`] applies to each match.
#[inline]
fn consistency<'h>(h: &'h H, p: &VerifyParams) -> impl Fn(&Match) -> bool + 'h {
    let tol2 = p.inlier_px * p.inlier_px;
    let angle_tol = p.angle_tolerance_deg.to_radians();
    let level_tolerance = p.level_tolerance;
    let projective = h[6] != 0.0 || h[7] != 0.0;
    let levels = |scale: f32| scale.ln() / SCALE_FACTOR.ln();
    let (global_scale, global_rot) = scale_rotation(h, (0.0, 0.0));
    let global_levels = levels(global_scale);
    move |m: &Match| {
        let (x, y) = apply(h, m.q);
        let (dx, dy) = (x - m.c.0, y - m.c.1);
        if dx * dx + dy * dy > tol2 {
            return false;
        }
        let (dlevel, rot) = if projective {
            let (scale, rot) = scale_rotation(h, m.q);
            (levels(scale), rot)
        } else {
            (global_levels, global_rot)
        };
        if (m.dlevel - dlevel).abs() > level_tolerance {
            return false;
        }
        let da = m.dangle - rot;
        (da - TAU * (da / TAU).round()).abs() <= angle_tol
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Matching, RANSAC and refinement; the best model whatever its inlier count, or `None`
/// with fewer than `min_matches` (at least 2) descriptor matches. A model's inliers are
/// some of the matches, so [`VerifyParams::min_inliers`] as `min_matches` drops only
/// models that [`Verification::accepted`] would refuse, without fitting them.
pub(crate) fn verify(
    query: &[Feature],
    candidate: &[Feature],
    p: &VerifyParams,
    min_matches: usize,
) -> Option<Verification> {
    let ms = match_descriptors(query, candidate, p);
    if ms.len() < min_matches.max(2) {
        return None;
    }
    let query_all = bbox(query.iter().map(Feature::pos));
    let candidate_all = bbox(candidate.iter().map(Feature::pos));
    let n = ms.len();
    let mut rng = p.seed ^ (n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut best: Option<(H, usize)> = None;
    let mut needed = p.max_iterations;
    let mut it = 0;
    // Few matches: try every pair instead of sampling.
    let exhaustive = n * (n - 1) / 2 <= p.max_iterations;
    let mut pairs = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j)));
    while it < needed {
        let (i, j) = if exhaustive {
            match pairs.next() {
                Some(ij) => ij,
                None => break,
            }
        } else {
            let i = (splitmix64(&mut rng) % n as u64) as usize;
            let j = (splitmix64(&mut rng) % (n as u64 - 1)) as usize;
            (i, if j >= i { j + 1 } else { j })
        };
        it += 1;
        let Some(h) = similarity_from_two(&ms[i], &ms[j]) else { continue };
        if !plausible(&h, &query_all, p) {
            continue;
        }
        let count = count_inliers(&h, &ms, p);
        if best.is_none_or(|(_, b)| count > b) {
            best = Some((h, count));
            if !exhaustive {
                // Enough hypotheses to draw an all-inlier pair with 99.9 % confidence.
                let e = count as f64 / n as f64;
                let k = (0.001f64).ln() / (1.0 - e * e).max(1e-12).ln();
                needed = needed.min(k.ceil().max(50.0) as usize);
            }
        }
    }
    let (mut h, _) = best?;
    let mut model = Model::Similarity;
    let mut set = inliers(&h, &ms, p);
    // Refine on the inliers, a few rounds per model, from the stiffest to the model
    // asked for; a refinement is kept when it is plausible and keeps at least as many.
    let steps: &[(Model, Fit)] =
        &[(Model::Similarity, fit_similarity), (Model::Affine, fit_affine), (Model::Homography, fit_homography)];
    for &(step, fit) in steps.iter().filter(|(m, _)| *m <= p.model) {
        // A projective fit needs enough support not to bend towards chance matches.
        if step == Model::Homography && set.len() < 2 * p.min_inliers {
            break;
        }
        for _ in 0..3 {
            let Some(refined) = fit(&set) else { break };
            if !plausible(&refined, &bbox(set.iter().map(|m| m.q)), p) {
                break;
            }
            let next = inliers(&refined, &ms, p);
            if next.len() < set.len() {
                break;
            }
            h = refined;
            model = step;
            let grew = next.len() > set.len();
            set = next;
            if !grew {
                break;
            }
        }
    }

    let query_box = bbox(set.iter().map(|m| m.q));
    let candidate_box = bbox(set.iter().map(|m| m.c));
    let inverse = invert(&h);
    let (scale, rot) = scale_rotation(&h, ((query_box[0] + query_box[2]) / 2.0, (query_box[1] + query_box[3]) / 2.0));
    // The shared region, in each frame: own feature box ∩ the other's, mapped.
    let shared = |own: &[f32; 4], other: &[f32; 4], to_own: &H| {
        let corners = [(other[0], other[1]), (other[2], other[1]), (other[0], other[3]), (other[2], other[3])];
        let mapped = bbox(corners.into_iter().map(|c| apply(to_own, c)));
        [own[0].max(mapped[0]), own[1].max(mapped[1]), own[2].min(mapped[2]), own[3].min(mapped[3])]
    };
    let inside =
        |b: &[f32; 4], (x, y): (f32, f32)| x >= b[0] - 1.0 && x <= b[2] + 1.0 && y >= b[1] - 1.0 && y <= b[3] + 1.0;
    let shared_c = shared(&candidate_all, &query_all, &h);
    let mut span_value = extent_share(&candidate_box, &shared_c);
    let in_c = query.iter().filter(|f| inside(&candidate_all, apply(&h, f.pos()))).count();
    let mut in_q = candidate.len();
    if let Some(inv) = inverse {
        let shared_q = shared(&query_all, &candidate_all, &inv);
        span_value = span_value.max(extent_share(&query_box, &shared_q));
        in_q = candidate.iter().filter(|f| inside(&query_all, apply(&inv, f.pos()))).count();
    }
    let inlier_ratio = (set.len() as f32 / in_c.min(in_q).max(1) as f32).min(1.0);
    Some(Verification {
        inliers: distinct(&set),
        matches: n,
        transform: h,
        model,
        scale,
        rotation_deg: rot.to_degrees(),
        query_box,
        candidate_box,
        query_coverage: extent_share(&query_box, &query_all),
        candidate_coverage: extent_share(&candidate_box, &candidate_all),
        span: span_value,
        inlier_ratio,
        pairs: set.iter().map(|m| (m.qi, m.ci)).collect(),
    })
}

/// `[x0, y0, x1, y1]` around the points.
fn bbox(pts: impl Iterator<Item = (f32, f32)>) -> [f32; 4] {
    pts.fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |b, (x, y)| [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)])
}

/// The smaller of `inner`'s width and height as a share of `outer`'s (each at least 8
/// pixels, so a sliver does not count as a region), 0–1.
fn extent_share(inner: &[f32; 4], outer: &[f32; 4]) -> f32 {
    let share = |lo: usize, hi: usize| (inner[hi] - inner[lo]).max(0.0) / (outer[hi] - outer[lo]).max(8.0);
    share(0, 2).min(share(1, 3)).clamp(0.0, 1.0)
}

/// Inliers counted once per corner: a match within 2 pixels of an already counted one on
/// both sides (the same corner found at another pyramid level) is not counted again.
fn distinct(set: &[&Match]) -> usize {
    const NEAR2: f32 = 2.0 * 2.0;
    let near = |a: (f32, f32), b: (f32, f32)| (a.0 - b.0).powi(2) + (a.1 - b.1).powi(2) <= NEAR2;
    let mut kept: Vec<&Match> = Vec::with_capacity(set.len());
    for m in set {
        if !kept.iter().any(|k| near(k.q, m.q) && near(k.c, m.c)) {
            kept.push(m);
        }
    }
    kept.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(q: (f32, f32), c: (f32, f32)) -> Match {
        Match { q, c, dangle: 0.0, dlevel: 0.0, qi: 0, ci: 0 }
    }

    const PTS: [(f32, f32); 8] = [
        (10.0, 10.0),
        (200.0, 40.0),
        (90.0, 300.0),
        (400.0, 380.0),
        (250.0, 120.0),
        (480.0, 20.0),
        (30.0, 470.0),
        (300.0, 250.0),
    ];

    fn close(a: &H, b: &H, tol: f32) -> bool {
        PTS.iter().all(|&p| {
            let (x, y) = (apply(a, p), apply(b, p));
            (x.0 - y.0).hypot(x.1 - y.1) < tol
        })
    }

    #[test]
    fn the_avx512_nearest_neighbours_agree_with_the_portable_loop() {
        #[cfg(target_arch = "x86_64")]
        {
            if !avx512::available() {
                eprintln!("no AVX-512 VPOPCNTDQ here: nothing to compare");
                return;
            }
            let mut state = 0x1234_5678_9ABC_DEF1u64;
            // Descriptors with few set bits, so that equal distances (ties) are common.
            let mut feature = |bits: u64| {
                let desc = std::array::from_fn(|_| (0..bits).fold(0u64, |d, _| d | 1 << (splitmix64(&mut state) % 64)));
                Feature { x: 0, y: 0, level: 0, angle: 0, desc }
            };
            for (nq, nc, bits) in
                [(1, 1, 3), (5, 7, 2), (9, 8, 1), (33, 9, 2), (100, 17, 4), (512, 256, 20), (64, 300, 0)]
            {
                let query: Vec<Feature> = (0..nq).map(|_| feature(bits)).collect();
                let candidate: Vec<Feature> = (0..nc).map(|_| feature(bits)).collect();
                // SAFETY: checked above.
                let fast = unsafe { avx512::nearest(&query, &candidate) };
                assert_eq!(fast, nearest_portable(&query, &candidate), "{nq} × {nc}, {bits} bits");
            }
        }
    }

    #[test]
    fn fits_recover_the_transform() {
        // 10° rotation, scale 1.5, shift (20, −7).
        let (s, r) = (1.5f32, 10f32.to_radians());
        let t = affine(s * r.cos(), -s * r.sin(), 20.0, s * r.sin(), s * r.cos(), -7.0);
        let ms: Vec<Match> = PTS.iter().map(|&q| m(q, apply(&t, q))).collect();
        let refs: Vec<&Match> = ms.iter().collect();
        let fits = [
            similarity_from_two(&ms[0], &ms[3]).unwrap(),
            fit_similarity(&refs).unwrap(),
            fit_affine(&refs).unwrap(),
            fit_homography(&refs).unwrap(),
        ];
        for fit in fits {
            assert!(close(&fit, &t, 0.05), "{fit:?} vs {t:?}");
            let (scale, rot) = scale_rotation(&fit, (100.0, 100.0));
            assert!((scale - s).abs() < 1e-3 && (rot - r).abs() < 1e-3);
        }
        // A real perspective: only the homography reproduces it.
        let p: H = [0.9, 0.05, 12.0, -0.02, 1.1, 5.0, 2e-4, -3e-4, 1.0];
        let ms: Vec<Match> = PTS.iter().map(|&q| m(q, apply(&p, q))).collect();
        let refs: Vec<&Match> = ms.iter().collect();
        assert!(close(&fit_homography(&refs).unwrap(), &p, 0.05));
        assert!(!close(&fit_affine(&refs).unwrap(), &p, 1.0));
        let inv = invert(&p).unwrap();
        for &q in &PTS {
            let back = apply(&inv, apply(&p, q));
            assert!((back.0 - q.0).hypot(back.1 - q.1) < 0.01);
        }
    }

    #[test]
    fn implausible_transforms_are_refused() {
        let p = VerifyParams::default();
        let region = [0.0, 0.0, 500.0, 400.0];
        assert!(plausible(&affine(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), &region, &p));
        assert!(!plausible(&affine(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0), &region, &p), "mirror");
        assert!(!plausible(&affine(10.0, 0.0, 0.0, 0.0, 10.0, 0.0), &region, &p), "scale");
        assert!(!plausible(&affine(3.0, 0.0, 0.0, 0.0, 1.0, 0.0), &region, &p), "stretch");
        assert!(!plausible(&affine(f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.0), &region, &p));
        // The horizon inside the region (w ≤ 0 there).
        assert!(!plausible(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, -0.004, 0.0, 1.0], &region, &p), "behind");
    }

    #[test]
    fn the_linear_solver_solves_and_refuses_singular_systems() {
        let x = solve([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]], [3.0, 5.0, 5.0]).unwrap();
        for (v, e) in x.iter().zip([1.0, 1.0, 1.0]) {
            assert!((v - e).abs() < 1e-12);
        }
        assert!(solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0]).is_none());
    }
}
