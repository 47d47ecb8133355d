//! After the geometric fit: the stored photo and the listing compared part by part.
//!
//! What tells one brand's product shot from another's is rarely the product: sellers
//! photograph the same stock object on the same white field. It is a compact,
//! detail-rich part of the picture: the logo, the wordmark, the print. A copy keeps that
//! part (recoloured, blurred, cropped around, seen at an angle: still there); another
//! brand's shot of the same object shows something else in its place. Counting matched
//! corners cannot tell the two apart when the object's own texture (fur, fabric, a
//! photo) holds most of them: they agree in both cases, and outvote the few on the logo.
//!
//! So, once [`crate::features::verify`] has fitted a transform, the listing is sampled
//! at every pixel of the stored photo's thumbnail through it, both are smoothed to the
//! coarser of their two resolutions, and they are compared in small overlapping square
//! cells ([`CELL`] thumbnail pixels) by normalised cross-correlation of the gradient
//! magnitude, or of the luma (up to sign) together with its finer detail (the luma less
//! its local average: a cell's luma is often carried by the object's shading, which any
//! shot of it shares, past a faint mark that differs): that ignores brightness,
//! contrast, gamma, a recoloured or inverted print, and costs a cell nothing for blur
//! or noise that spares its structure. Each cell may slide by up to [`SLIDE`]
//! pixels, so a fit that is a pixel or two off somewhere (perspective, a loose
//! homography) does not read as a difference.
//!
//! Only cells where the stored photo has detail count ([`MIN_DETAIL`]): a sticker over
//! a plain part changes nothing the brand owns. The cells in view that disagree are
//! grouped by adjacency; a group that is compact (a small share of the stored photo's
//! detail in view) while the rest agrees is a part replaced: the brand-identifying part
//! of a near-miss, or an overlay that happens to cover detail (a price sticker over the
//! logo), which pixels cannot tell apart from it. Either way the match is not one to act
//! on automatically: [`Parts::differed`] says where, for a person to look.

use crate::features::{invert_transform, map_with};

/// Side of the square cells compared, in thumbnail pixels (the thumbnail's longer side
/// is [`crate::hash::THUMBNAIL_SIDE`], 512): 2% of it, the size of a small logo on a
/// product shot.
pub const CELL: usize = 10;
/// How far (pixels, each axis) a cell may slide to find its best agreement.
pub const SLIDE: isize = 2;
/// Cells within this many pixels of the stored photo's edge, or of the listing's, are not
/// compared.
const EDGE: usize = 4;
/// Least standard deviation of a stored cell's luma (0–255) for it to count as detail.
pub const MIN_DETAIL: f32 = 8.0;
/// A cell agrees when its best correlation reaches this. Set on the tune split of
/// `tools/eval` (variant a), once the listing was read registered to a fraction of a
/// pixel ([`register`]): the strictest of 0.70, 0.75, 0.80 and 0.85 that sends at most
/// 1% of the copies flagged there to review (13 of 1,557 at 0.75; 30 at 0.80). Before
/// that registration, copies read a fraction of a pixel off, and 0.7 was as strict as
/// they allowed.
pub const MIN_AGREEMENT: f32 = 0.75;

/// A row-major luma plane (0–255), borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Plane<'a> {
    pub px: &'a [f32],
    pub width: usize,
    pub height: usize,
}

impl Plane<'_> {
    fn at(&self, x: usize, y: usize) -> f32 {
        self.px[y * self.width + x]
    }

    /// Bilinear sample at a continuous position (pixel `i` spans `[i, i + 1)`), `None`
    /// outside the plane.
    fn sample(&self, x: f32, y: f32) -> Option<f32> {
        let (fx, fy) = (x - 0.5, y - 0.5);
        if !(fx >= 0.0 && fy >= 0.0) {
            return None;
        }
        let (x0, y0) = (fx as usize, fy as usize);
        if x0 + 1 >= self.width || y0 + 1 >= self.height {
            return None;
        }
        let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
        let top = self.at(x0, y0) * (1.0 - ax) + self.at(x0 + 1, y0) * ax;
        let bottom = self.at(x0, y0 + 1) * (1.0 - ax) + self.at(x0 + 1, y0 + 1) * ax;
        Some(top * (1.0 - ay) + bottom * ay)
    }

    /// Box-averaged by a whole `factor` (the last partial row and column dropped): the
    /// pixels and the reduced width and height.
    fn reduced(&self, factor: usize) -> (Vec<f32>, usize, usize) {
        let (w, h) = (self.width / factor, self.height / factor);
        let mut px = vec![0.0; w * h];
        let norm = 1.0 / (factor * factor) as f32;
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for yy in y * factor..(y + 1) * factor {
                    let row = yy * self.width;
                    s += self.px[row + x * factor..row + (x + 1) * factor].iter().sum::<f32>();
                }
                px[y * w + x] = s * norm;
            }
        }
        (px, w, h)
    }
}

/// How the listing relates to the stored photo: the fitted transform and both frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Listing working pixel indices → stored working pixel indices (a pixel's centre at
    /// its index, as keypoints are: [`crate::features::Verification::transform`]).
    pub transform: [f32; 9],
    /// The transform was fitted on the listing mirrored left to right.
    pub mirrored: bool,
    /// The listing's working image size ([`crate::features::working_size`]).
    pub listing_working: (u32, u32),
    /// What lined the two up.
    pub aligned: Aligned,
}

/// What lined a listing up with the stored photo for the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aligned {
    /// A transform the local features fitted (verified, or the exact frame with a part
    /// replaced).
    ByFeatures,
    /// The alignment a hash match implies, where the features fitted nothing
    /// (`matcher::hash_fit`).
    ByHash,
}

/// A part of the stored photo that the listing shows replaced.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Differed {
    /// `[x0, y0, x1, y1]` in the stored photo, as shares of its width and height (0–1).
    pub rect: [f32; 4],
    /// Its share of the stored photo's detail in view (0–1).
    pub share: f32,
}

/// What the part-by-part comparison found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Parts {
    /// Cells of the stored photo with detail that the listing shows.
    pub detail_cells: u32,
    /// Share of them that agree (0–1).
    pub agreement: f32,
    /// Share of the stored photo's detail that the listing shows (0–1): a crop that
    /// leaves out the part of a product shot that tells whose it is (its logo) shows
    /// only what any seller's shot of the stock object has.
    pub detail_in_view: f32,
    /// The largest compact group of detail cells that disagree, when the rest agrees.
    pub differed: Option<Differed>,
    /// Share of the stored photo's area that the listing shows (0–1).
    pub in_view: f32,
    /// The stored photo's outline in the listing: its corners (top-left, top-right,
    /// bottom-right, bottom-left) as shares of the listing's width and height (may fall
    /// outside 0–1 when the listing shows only part of it).
    pub listing_quad: [[f32; 2]; 4],
    /// The listing's outline in the stored photo, the same way.
    pub stored_quad: [[f32; 2]; 4],
    /// What lined the two up ([`Fit::aligned`]).
    pub aligned: Aligned,
}

/// A group of disagreeing cells is a compact part when it holds at most this share of
/// the detail cells in view: a logo, not the picture.
pub const MAX_PART_SHARE: f32 = 0.35;
/// Least share of detail cells that must agree outside the part for it to count as
/// replaced (else the fit or the listing is too far gone to say; see
/// [`Parts::confirmed`]).
pub const MIN_REST_AGREEMENT: f32 = 0.7;
/// Fewest disagreeing cells (overlapping by half) for a part: a few pixels of noise or
/// one edge of a sticker make a single cell.
pub const MIN_PART_CELLS: usize = 2;

impl Parts {
    /// Whether the comparison confirms a copy: enough detail compared, most of it
    /// agreeing, and no compact part replaced.
    pub fn confirmed(&self) -> bool {
        self.differed.is_none() && self.detail_cells >= MIN_DETAIL_CELLS && self.agreement >= MIN_REST_AGREEMENT
    }
}

/// Least share of the stored photo's detail ([`Parts::detail_in_view`]) a listing must
/// show for the match to be acted on automatically. What tells one brand's shot of a
/// stock object from another's can lie in any part of it (a badge in a corner, a
/// wordmark under the object): a crop that cuts part of the detail away shows what any
/// seller of the object could show, and goes to review. (Not 1: a turn, a perspective or
/// a pad leaves a few cells along the picture's edge out of a whole copy.) On the tune
/// split of `tools/eval` (variant a) every copy under 0.95 was a crop, and so were 14
/// of the 15 negatives the confidence alone would have flagged at 0.85.
pub const MIN_DETAIL_SHOWN: f32 = 0.95;

impl Parts {
    /// Whether the listing shows (nearly) all the stored photo's detail: it is not a
    /// crop that may have cut away what identifies the brand ([`MIN_DETAIL_SHOWN`]).
    pub fn shows_all_detail(&self) -> bool {
        self.detail_in_view >= MIN_DETAIL_SHOWN
    }
}

/// Fewest detail cells in view for a comparison to confirm anything.
pub const MIN_DETAIL_CELLS: u32 = 6;

/// Compare the stored photo's thumbnail `stored` (whose working image is
/// `stored_working`) with the listing's luma plane `listing`, through `fit`.
pub fn compare(stored: Plane<'_>, stored_working: (u32, u32), listing: Plane<'_>, fit: &Fit) -> Option<Parts> {
    compare_with(stored, stored_working, listing, fit, &Params::default())
}

/// The comparison's settings (see the constants for the defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub cell: usize,
    pub min_agreement: f32,
    pub min_part_cells: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { cell: CELL, min_agreement: MIN_AGREEMENT, min_part_cells: MIN_PART_CELLS }
    }
}

/// [`compare`] with other settings.
pub fn compare_with(
    stored: Plane<'_>,
    stored_working: (u32, u32),
    listing: Plane<'_>,
    fit: &Fit,
    params: &Params,
) -> Option<Parts> {
    let cell = params.cell;
    let stride = (cell / 2).max(1);
    // The transform maps pixel indices (a pixel's centre at its index, as the features'
    // keypoints are); everything here is continuous (pixel `i` spans `[i, i + 1)`). The
    // half pixel each way matters: a turned copy read a whole pixel off at its far side.
    let forward = continuous(&fit.transform);
    let back = invert_transform(&forward)?;
    let (tw, th) = (stored.width, stored.height);
    if tw < cell + 2 * SLIDE as usize || th < cell + 2 * SLIDE as usize {
        return None;
    }
    let (sww, swh) = (stored_working.0 as f32, stored_working.1 as f32);
    let (lww, lwh) = (fit.listing_working.0 as f32, fit.listing_working.1 as f32);
    let (lpw, lph) = (listing.width as f32, listing.height as f32);
    // The fit was made on the mirrored listing: its x back to the listing's (an
    // involution, so the same both ways).
    let unmirror = |x: f32| if fit.mirrored { lww - x } else { x };
    // Thumbnail → stored working → listing working → listing plane.
    let to_listing = |u: f32, v: f32| -> (f32, f32) {
        let (x, y) = map_with(&back, u * sww / tw as f32, v * swh / th as f32);
        let x = unmirror(x);
        (x * lpw / lww, y * lph / lwh)
    };
    // Listing plane pixels per thumbnail pixel, at the thumbnail's centre.
    let (cx, cy) = (tw as f32 / 2.0, th as f32 / 2.0);
    let c = to_listing(cx, cy);
    let dx = to_listing(cx + 1.0, cy);
    let dy = to_listing(cx, cy + 1.0);
    let ratio = (((dx.0 - c.0).hypot(dx.1 - c.1)) * ((dy.0 - c.0).hypot(dy.1 - c.1))).sqrt();
    if !ratio.is_finite() || ratio <= 0.0 {
        return None;
    }
    // The listing shows the photo smaller than the thumbnail (a half-size copy, a
    // collage tile): compare at the listing's resolution, on the thumbnail box-reduced
    // to it, or detail the listing never had reads as replaced.
    let k = (1.0 / ratio).round() as usize;
    if k >= 2 && tw / k >= cell + 2 * SLIDE as usize && th / k >= cell + 2 * SLIDE as usize {
        let (px, width, height) = stored.reduced(k);
        return compare_with(Plane { px: &px, width, height }, stored_working, listing, fit, params);
    }
    // A listing that shows the photo larger than the thumbnail is box-reduced first by
    // the whole factor, so a thumbnail pixel reads about as many listing pixels as it
    // averages of the photo's.
    let factor = ratio.floor().max(1.0) as usize;
    let reduced;
    let source = if factor > 1 {
        reduced = listing.reduced(factor);
        Plane { px: &reduced.0, width: reduced.1, height: reduced.2 }
    } else {
        listing
    };
    let f = factor as f32;
    // The listing's own frame (a crop's cut, a canvas border) blends like the photo's
    // edge: the pixels next to it are left out of view.
    let inside = |p: f32, side: usize| p >= EDGE as f32 && p <= side.saturating_sub(EDGE) as f32;
    // Both are smoothed by a 3-pixel box; the stored side by a wider one when the listing
    // shows it smaller than the thumbnail and the thumbnail was too small to reduce.
    let stored_radius = if ratio < 1.0 { ((0.5 / ratio).round() as usize).max(1) } else { 1 };
    let a = box_blur(stored.px, tw, th, stored_radius);
    let ga = gradient(&a, tw, th);
    // The listing at a thumbnail position, `None` out of its view.
    let read = |u: f32, v: f32| -> Option<f32> {
        let (x, y) = to_listing(u, v);
        let (x, y) = (x / f, y / f);
        if !(inside(x, source.width) && inside(y, source.height)) {
            return None;
        }
        source.sample(x, y)
    };
    let (ox, oy) = register(stored, &ga, &read);
    let mut sampled = vec![f32::NAN; tw * th];
    let mut shown = 0usize;
    for v in 0..th {
        for u in 0..tw {
            if let Some(p) = read(u as f32 + 0.5 + ox, v as f32 + 0.5 + oy) {
                sampled[v * tw + u] = p;
                shown += 1;
            }
        }
    }
    let b = box_blur(&sampled, tw, th, 1);
    let gb = gradient(&b, tw, th);
    // Both pictures' finer detail ([`band_pass`]), the stored one's read over what the
    // listing shows only: else its average near the view's edge takes in what the
    // listing's cannot.
    let a_in_view: Vec<f32> = a.iter().zip(&b).map(|(&p, q)| if q.is_nan() { f32::NAN } else { p }).collect();
    let ha = band_pass(&a_in_view, tw, th, BAND_RADIUS);
    let hb = band_pass(&b, tw, th, BAND_RADIUS);

    let cols = (tw - cell) / stride + 1;
    let rows = (th - cell) / stride + 1;
    // Per cell: None outside the view or without detail; Some(agrees) otherwise.
    let mut cells: Vec<Option<bool>> = vec![None; cols * rows];
    // Cells with detail in the stored photo as stored, and of those, the ones the
    // listing shows (its four corners in view).
    let (mut detail_all, mut detail_shown) = (0u32, 0u32);
    for r in 0..rows {
        for c in 0..cols {
            let (x0, y0) = (c * stride, r * stride);
            // The photo's own edge: where a turned, pasted or resized copy blends it
            // with what lies around it.
            let edge = x0 < EDGE || y0 < EDGE || x0 + cell + EDGE > tw || y0 + cell + EDGE > th;
            if edge || detail(&a, tw, cell, x0, y0) < MIN_DETAIL {
                continue;
            }
            detail_all += 1;
            let corners = [(x0, y0), (x0 + cell - 1, y0), (x0, y0 + cell - 1), (x0 + cell - 1, y0 + cell - 1)];
            detail_shown += u32::from(corners.iter().all(|&(x, y)| !b[y * tw + x].is_nan()));
            let band = (detail(&ha, tw, cell, x0, y0) >= MIN_BAND_DETAIL).then_some((ha.as_slice(), hb.as_slice()));
            let cmp =
                Cells { a: &a, b: &b, ga: &ga, gb: &gb, band, w: tw, h: th, cell, min_agreement: params.min_agreement };
            cells[r * cols + c] = cmp.agrees(x0, y0);
        }
    }
    let detail_cells = cells.iter().filter(|c| c.is_some()).count();
    let agreeing = cells.iter().filter(|c| **c == Some(true)).count();
    let agreement = if detail_cells == 0 { 0.0 } else { agreeing as f32 / detail_cells as f32 };
    let differed = largest_group(&cells, cols, rows).and_then(|group| {
        let share = group.len() as f32 / detail_cells as f32;
        let rest = detail_cells - group.len();
        let rest_agree = if rest == 0 { 0.0 } else { agreeing as f32 / rest as f32 };
        if group.len() < params.min_part_cells || share > MAX_PART_SHARE || rest_agree < MIN_REST_AGREEMENT {
            return None;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for &i in &group {
            let (c, r) = (i % cols, i / cols);
            (x0, y0) = (x0.min(c * stride), y0.min(r * stride));
            (x1, y1) = (x1.max(c * stride + cell), y1.max(r * stride + cell));
        }
        Some(Differed {
            rect: [x0 as f32 / tw as f32, y0 as f32 / th as f32, x1 as f32 / tw as f32, y1 as f32 / th as f32],
            share,
        })
    });
    let corners = |w: f32, h: f32| [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    let listing_quad = corners(sww, swh).map(|(x, y)| {
        let (x, y) = map_with(&back, x, y);
        [unmirror(x) / lww, y / lwh]
    });
    let stored_quad = corners(lww, lwh).map(|(x, y)| {
        let (x, y) = map_with(&forward, unmirror(x), y);
        [x / sww, y / swh]
    });
    Some(Parts {
        detail_cells: detail_cells as u32,
        detail_in_view: if detail_all == 0 { 0.0 } else { detail_shown as f32 / detail_all as f32 },
        agreement,
        differed,
        in_view: shown as f32 / (tw * th) as f32,
        listing_quad,
        stored_quad,
        aligned: fit.aligned,
    })
}

/// A transform of pixel indices (a pixel's centre at its index) as one of continuous
/// positions (pixel `i` spans `[i, i + 1)`): `T(½) · h · T(−½)`, `T` the translation by
/// half a pixel both ways.
fn continuous(h: &[f32; 9]) -> [f32; 9] {
    let mut m = *h;
    // h · T(−½): the third column less half the first two.
    for r in 0..3 {
        m[r * 3 + 2] -= 0.5 * (h[r * 3] + h[r * 3 + 1]);
    }
    // T(½) · that: the first two rows plus half the third.
    for r in 0..2 {
        for c in 0..3 {
            m[r * 3 + c] += 0.5 * m[6 + c];
        }
    }
    m
}

/// Least gradient magnitude (luma per pixel, on the smoothed thumbnail) of the stored
/// pixels [`register`] lines up: edges, where a fraction of a pixel shows.
const REGISTER_EDGE: f32 = 10.0;
/// Most stored pixels [`register`] reads the listing at, per offset tried.
const REGISTER_POINTS: usize = 2048;

/// The offset (thumbnail pixels, each way, to a quarter pixel within ¾ of one) at which
/// the listing, read through the fit by `read`, best lines up with the stored thumbnail
/// on its edges (by the correlation of the two, up to sign). A fit is a fraction of a
/// pixel off everywhere (keypoints are found to a pixel; a thumbnail pixel is the mean of
/// a whole number of the photo's pixels, which puts its centre up to a photo pixel off
/// its place), and on fine print (text, a barcode, a logo's strokes) that fraction alone
/// reads as a difference: the cells' whole-pixel slides cannot take it up.
fn register(stored: Plane<'_>, ga: &[f32], read: &impl Fn(f32, f32) -> Option<f32>) -> (f32, f32) {
    let (w, h) = (stored.width, stored.height);
    let margin = EDGE + SLIDE as usize;
    let mut points: Vec<(usize, usize)> = (margin..h.saturating_sub(margin))
        .step_by(2)
        .flat_map(|y| (margin..w.saturating_sub(margin)).step_by(2).map(move |x| (x, y)))
        .filter(|&(x, y)| ga[y * w + x] >= REGISTER_EDGE)
        .collect();
    if points.len() > REGISTER_POINTS {
        let step = points.len().div_ceil(REGISTER_POINTS);
        points = points.into_iter().step_by(step).collect();
    }
    const FEWEST: usize = 32;
    if points.len() < FEWEST {
        return (0.0, 0.0);
    }
    let score = |dx: f32, dy: f32| -> f32 {
        let (mut n, mut sa, mut sb, mut saa, mut sbb, mut sab) = (0usize, 0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for &(x, y) in &points {
            let Some(q) = read(x as f32 + 0.5 + dx, y as f32 + 0.5 + dy) else { continue };
            let (p, q) = (f64::from(stored.at(x, y)), f64::from(q));
            n += 1;
            sa += p;
            sb += q;
            saa += p * p;
            sbb += q * q;
            sab += p * q;
        }
        if n < FEWEST {
            return 0.0;
        }
        let nf = n as f64;
        let (va, vb) = (saa - sa * sa / nf, sbb - sb * sb / nf);
        if va <= 0.0 || vb <= 0.0 {
            return 0.0;
        }
        ((sab - sa * sb / nf) / (va * vb).sqrt()).abs() as f32
    };
    let mut best = (0.0, 0.0, score(0.0, 0.0));
    for step in [0.5, 0.25] {
        let (cx, cy) = (best.0, best.1);
        for (i, j) in
            [(-1.0, -1.0), (0.0, -1.0), (1.0, -1.0), (-1.0, 0.0), (1.0, 0.0), (-1.0, 1.0), (0.0, 1.0), (1.0, 1.0)]
        {
            let (dx, dy) = (cx + i * step, cy + j * step);
            let s = score(dx, dy);
            if s > best.2 {
                best = (dx, dy, s);
            }
        }
    }
    (best.0, best.1)
}

/// Standard deviation of the stored plane over the cell at (`x0`, `y0`).
fn detail(a: &[f32], w: usize, cell: usize, x0: usize, y0: usize) -> f32 {
    let (mut s, mut s2) = (0.0f32, 0.0f32);
    for y in y0..y0 + cell {
        for &p in &a[y * w + x0..y * w + x0 + cell] {
            s += p;
            s2 += p * p;
        }
    }
    let n = (cell * cell) as f32;
    let mean = s / n;
    (s2 / n - mean * mean).max(0.0).sqrt()
}

/// The two smoothed planes and their gradient magnitudes, compared cell by cell.
struct Cells<'a> {
    a: &'a [f32],
    b: &'a [f32],
    ga: &'a [f32],
    gb: &'a [f32],
    /// Both planes band-passed ([`band_pass`]), where the stored cell has detail at that
    /// scale ([`MIN_BAND_DETAIL`]).
    band: Option<(&'a [f32], &'a [f32])>,
    w: usize,
    h: usize,
    cell: usize,
    min_agreement: f32,
}

impl Cells<'_> {
    /// Whether the stored cell at (`x0`, `y0`) agrees with the listing's sampled plane
    /// slid by up to [`SLIDE`] pixels (nearest slides first, stopping at the first that
    /// agrees): the gradient magnitude's correlation reaches the agreement level, or the
    /// luma's does (up to sign) and so does its finer detail's ([`band_pass`], at
    /// [`BAND_AGREEMENT`], where the stored cell has such detail). The luma of a cell is
    /// often carried by what any shot of the object shares (its shading, its outline, a
    /// shadow): a faint mark that differs inside it changes the correlation by little,
    /// and only the detail without that shading tells. The gradient magnitude is local
    /// detail already; it keeps agreeing where a recoloured print turns the luma's
    /// relation round on part of a cell only. `None` when the cell is not in view at
    /// every slide.
    fn agrees(&self, x0: usize, y0: usize) -> Option<bool> {
        // Compared only where every slide is in view: a cell at the edge of the view
        // that could slide one way only would read a fit a pixel off as a difference.
        let (lo_x, lo_y) = (x0.checked_sub(SLIDE as usize)?, y0.checked_sub(SLIDE as usize)?);
        let (hi_x, hi_y) = (x0 + self.cell + SLIDE as usize, y0 + self.cell + SLIDE as usize);
        if hi_x > self.w || hi_y > self.h {
            return None;
        }
        let in_view =
            |p: &[f32]| (lo_y..hi_y).all(|y| p[y * self.w + lo_x..y * self.w + hi_x].iter().all(|v| !v.is_nan()));
        if !in_view(self.b) || !in_view(self.gb) {
            return None;
        }
        let agree = slides().any(|(sx, sy)| {
            let (pa, pb) = ((x0, y0), ((x0 as isize + sx) as usize, (y0 as isize + sy) as usize));
            let at_least = |c: Option<f32>, level: f32| c.is_some_and(|c| c.abs() >= level);
            let gradient = || self.correlation(self.ga, self.gb, pa, pb).is_some_and(|g| g >= self.min_agreement);
            let luma = || at_least(self.correlation(self.a, self.b, pa, pb), self.min_agreement);
            let band = || self.band.is_none_or(|(ha, hb)| at_least(self.correlation(ha, hb, pa, pb), BAND_AGREEMENT));
            gradient() || (luma() && band())
        });
        Some(agree)
    }

    /// Normalised cross-correlation of the cell of `a` at `pa` with that of `b` at `pb`;
    /// `None` when `b` has a pixel out of view there, 0 when either is flat.
    fn correlation(&self, a: &[f32], b: &[f32], pa: (usize, usize), pb: (usize, usize)) -> Option<f32> {
        let (w, cell) = (self.w, self.cell);
        let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for dy in 0..cell {
            let ra = &a[(pa.1 + dy) * w + pa.0..(pa.1 + dy) * w + pa.0 + cell];
            let rb = &b[(pb.1 + dy) * w + pb.0..(pb.1 + dy) * w + pb.0 + cell];
            for (&x, &y) in ra.iter().zip(rb) {
                if y.is_nan() {
                    return None;
                }
                sa += x;
                sb += y;
                saa += x * x;
                sbb += y * y;
                sab += x * y;
            }
        }
        let n = (cell * cell) as f32;
        let va = saa - sa * sa / n;
        let vb = sbb - sb * sb / n;
        // A flat listing cell over a detailed stored one: nothing of it is there.
        if va <= 1e-3 || vb <= n * 0.25 {
            return Some(0.0);
        }
        Some((sab - sa * sb / n) / (va * vb).sqrt())
    }
}

/// Radius of the box whose average [`band_pass`] takes away.
pub const BAND_RADIUS: usize = 3;
/// Least standard deviation of a stored cell's band-passed luma for its luma's
/// agreement to need that band's too.
pub const MIN_BAND_DETAIL: f32 = 4.0;
/// The band's correlation (up to sign) at which it agrees: lower than
/// [`MIN_AGREEMENT`], the band holding less of the signal and more of the noise. Chosen
/// with [`BAND_RADIUS`] and the rule's form among 0.5, 0.6 and 0.75 (see
/// [`Cells::agrees`]).
pub const BAND_AGREEMENT: f32 = 0.6;

/// A plane less its `(2r + 1)²` box average: the detail finer than a few pixels, without
/// the shading, the object's outline or the lighting it sits on, which any shot of the
/// same stock object shares and which can carry a cell's correlation past a small mark
/// that differs.
fn band_pass(px: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let low = box_blur(px, w, h, r);
    px.iter().zip(&low).map(|(p, l)| p - l).collect()
}

/// The slides of a cell, nearest first.
fn slides() -> impl Iterator<Item = (isize, isize)> {
    let mut all: Vec<(isize, isize)> = (-SLIDE..=SLIDE).flat_map(|y| (-SLIDE..=SLIDE).map(move |x| (x, y))).collect();
    all.sort_by_key(|&(x, y)| (x * x + y * y, y, x));
    all.into_iter()
}

/// A `(2r + 1)²` box average; a pixel out of view (NaN) stays out of view, and makes
/// out of view nothing else (it is left out of its neighbours' averages). Running sums
/// (in `f64`) over the window, so the cost does not grow with `r`. The two passes are
/// written apart on purpose: the column pass keeps a row of sums and walks the plane row
/// by row; one line-walking helper for both (columns read a row apart) gave the same
/// answers for 18% more CPU per copied listing.
fn box_blur(px: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let value = |p: f32| if p.is_nan() { (0.0, 0u32) } else { (f64::from(p), 1u32) };
    // Along each row.
    let mut across = vec![f32::NAN; w * h];
    for (row, out) in px.chunks_exact(w).zip(across.chunks_exact_mut(w)) {
        let (mut s, mut n) = (0.0f64, 0u32);
        for &p in &row[..(r + 1).min(w)] {
            let (v, c) = value(p);
            (s, n) = (s + v, n + c);
        }
        for x in 0..w {
            if !row[x].is_nan() {
                out[x] = (s / f64::from(n)) as f32;
            }
            if x + r + 1 < w {
                let (v, c) = value(row[x + r + 1]);
                (s, n) = (s + v, n + c);
            }
            if x >= r {
                let (v, c) = value(row[x - r]);
                (s, n) = (s - v, n - c);
            }
        }
    }
    // Down each column, a row of sums at a time.
    let mut out = vec![f32::NAN; w * h];
    let (mut s, mut n) = (vec![0.0f64; w], vec![0u32; w]);
    let add = |y: usize, sign: f64, s: &mut [f64], n: &mut [u32]| {
        for x in 0..w {
            let (v, c) = value(across[y * w + x]);
            s[x] += sign * v;
            n[x] = if sign > 0.0 { n[x] + c } else { n[x] - c };
        }
    };
    for y in 0..(r + 1).min(h) {
        add(y, 1.0, &mut s, &mut n);
    }
    for y in 0..h {
        for x in 0..w {
            if !px[y * w + x].is_nan() {
                out[y * w + x] = (s[x] / f64::from(n[x])) as f32;
            }
        }
        if y + r + 1 < h {
            add(y + r + 1, 1.0, &mut s, &mut n);
        }
        if y >= r {
            add(y - r, -1.0, &mut s, &mut n);
        }
    }
    out
}

/// Gradient magnitude by central differences (NaN where a neighbour is out of view; 0
/// on the image's border).
fn gradient(px: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
                out[y * w + x] = if px[y * w + x].is_nan() { f32::NAN } else { 0.0 };
                continue;
            }
            let gx = px[y * w + x + 1] - px[y * w + x - 1];
            let gy = px[(y + 1) * w + x] - px[(y - 1) * w + x];
            out[y * w + x] = gx.hypot(gy);
        }
    }
    out
}

/// The largest 8-connected group of disagreeing cells (`Some(false)`), as cell indices.
fn largest_group(cells: &[Option<bool>], cols: usize, rows: usize) -> Option<Vec<usize>> {
    let mut seen = vec![false; cells.len()];
    let mut best: Option<Vec<usize>> = None;
    for start in 0..cells.len() {
        if seen[start] || cells[start] != Some(false) {
            continue;
        }
        let mut group = vec![start];
        seen[start] = true;
        let mut i = 0;
        while i < group.len() {
            let (c, r) = ((group[i] % cols) as isize, (group[i] / cols) as isize);
            for (dc, dr) in [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
                let (nc, nr) = (c + dc, r + dr);
                if nc < 0 || nr < 0 || nc as usize >= cols || nr as usize >= rows {
                    continue;
                }
                let n = nr as usize * cols + nc as usize;
                if !seen[n] && cells[n] == Some(false) {
                    seen[n] = true;
                    group.push(n);
                }
            }
            i += 1;
        }
        if best.as_ref().is_none_or(|b| group.len() > b.len()) {
            best = Some(group);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    /// A `side × side` texture at `fine` subpixels a pixel: blocks of random greys, 7
    /// subpixels a side (so they do not line up with the pixels).
    fn texture(side: usize, fine: usize, seed: u64) -> Vec<f32> {
        const BLOCK: usize = 7;
        let n = side * fine;
        let blocks = n / BLOCK + 1;
        let mut rng = SmallRng::seed_from_u64(seed);
        let grey: Vec<f32> = (0..blocks * blocks).map(|_| rng.random_range(0.0..255.0)).collect();
        (0..n * n).map(|i| grey[(i / n / BLOCK) * blocks + (i % n) / BLOCK]).collect()
    }

    /// Each pixel the mean of `fine × fine` subpixels of `tex` (side `n`), starting
    /// `(dx, dy)` subpixels in.
    fn area_sampled(tex: &[f32], n: usize, fine: usize, side: usize, dx: usize, dy: usize) -> Vec<f32> {
        let mut out = vec![0.0; side * side];
        for y in 0..side {
            for x in 0..side {
                let mut s = 0.0;
                for yy in y * fine + dy..(y + 1) * fine + dy {
                    for xx in x * fine + dx..(x + 1) * fine + dx {
                        s += tex[yy.min(n - 1) * n + xx.min(n - 1)];
                    }
                }
                out[y * side + x] = s / (fine * fine) as f32;
            }
        }
        out
    }

    /// The box average written out: each pixel the mean of the in-view pixels of its
    /// `(2r + 1)`-long window along x, then of those along y.
    fn naive_box_blur(px: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
        let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
            let mut out = vec![f32::NAN; w * h];
            for y in 0..h {
                for x in 0..w {
                    if src[y * w + x].is_nan() {
                        continue;
                    }
                    let (mut s, mut n) = (0.0, 0.0);
                    for d in -(r as isize)..=r as isize {
                        let (xx, yy) =
                            if horizontal { (x as isize + d, y as isize) } else { (x as isize, y as isize + d) };
                        if xx < 0 || yy < 0 || xx as usize >= w || yy as usize >= h {
                            continue;
                        }
                        let p = src[yy as usize * w + xx as usize];
                        if !p.is_nan() {
                            s += p;
                            n += 1.0;
                        }
                    }
                    out[y * w + x] = s / n;
                }
            }
            out
        };
        pass(&pass(px, true), false)
    }

    #[test]
    fn box_blur_equals_the_window_mean_out_of_view_pixels_left_out() {
        let (w, h) = (37, 23);
        let mut rng = SmallRng::seed_from_u64(3);
        // A plane with a third of it out of view in a band and scattered pixels.
        let px: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if (10..14).contains(&x) || rng.random_range(0.0..1.0) < 0.1 || y == 0 {
                    f32::NAN
                } else {
                    rng.random_range(0.0..255.0)
                }
            })
            .collect();
        for r in [1, 2, 3, 5, 40] {
            let (fast, slow) = (box_blur(&px, w, h, r), naive_box_blur(&px, w, h, r));
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!(
                    (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-3,
                    "r {r}, pixel ({}, {}): {a} against {b}",
                    i % w,
                    i / w
                );
            }
        }
    }

    #[test]
    fn continuous_maps_pixel_centres_as_the_index_transform_maps_indices() {
        // A perspective transform of pixel indices.
        let h = [0.9, 0.1, 3.0, -0.2, 1.1, -2.0, 0.001, -0.002, 1.0];
        let c = continuous(&h);
        for (x, y) in [(0.0, 0.0), (10.0, 3.0), (-4.0, 7.5), (120.0, 80.0)] {
            let (ix, iy) = map_with(&h, x, y);
            let (cx, cy) = map_with(&c, x + 0.5, y + 0.5);
            assert!((cx - (ix + 0.5)).abs() < 1e-3 && (cy - (iy + 0.5)).abs() < 1e-3, "({x}, {y})");
        }
    }

    #[test]
    fn register_finds_the_fraction_of_a_pixel_a_listing_is_off() {
        let (side, fine) = (96, 4);
        let tex = texture(side, fine, 7);
        let stored = area_sampled(&tex, side * fine, fine, side, 0, 0);
        // A listing at twice the thumbnail's resolution whose pixels start a quarter of
        // a thumbnail pixel right and half a one down, box-reduced by 2 as `compare`
        // reduces it: it must be read that much left and up.
        let listing = area_sampled(&tex, side * fine, fine / 2, side * 2, 1, 2);
        let (listing, width, height) = Plane { px: &listing, width: side * 2, height: side * 2 }.reduced(2);
        let listing = Plane { px: &listing, width, height };
        let read = |u: f32, v: f32| listing.sample(u, v);
        let a = box_blur(&stored, side, side, 1);
        let ga = gradient(&a, side, side);
        let (ox, oy) = register(Plane { px: &stored, width: side, height: side }, &ga, &read);
        assert_eq!((ox, oy), (-0.25, -0.5));
    }
}
