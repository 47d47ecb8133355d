//! Behaviour on real decoded images: the test fixtures (photographs), transformed as
//! counterfeit listings transform them, encoded, and decoded again through
//! [`crate::hash::decode`].

use image::imageops::{self, FilterType};
use image::{ImageFormat, Rgb, RgbImage};

use super::*;
use crate::hash::{decode, DecodeLimits};

// ---- images ----------------------------------------------------------------------

fn fixture_rgb(name: &str) -> RgbImage {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// The photographs among the fixtures (distinct pictures).
const PHOTOS: [&str; 6] =
    ["astronaut.jpg", "coffee.jpg", "chelsea.png", "camera_gray.png", "hubble_deep_field_blur.jpg", "rocket_exif6.jpg"];

/// Encode (JPEG q 85, as listings are, or PNG), decode through the crate, extract.
fn features_of(img: &RgbImage, params: &ExtractParams) -> Vec<Feature> {
    features_of_encoded(img, ImageFormat::Jpeg, params)
}

fn features_of_encoded(img: &RgbImage, format: ImageFormat, params: &ExtractParams) -> Vec<Feature> {
    let mut bytes = Vec::new();
    if format == ImageFormat::Jpeg {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85).encode_image(img).unwrap();
    } else {
        img.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
    }
    let decoded = decode(&bytes, &DecodeLimits::default()).expect("decodes");
    extract_decoded(&decoded, params)
}

fn index_features(img: &RgbImage) -> Vec<Feature> {
    features_of(img, &ExtractParams::default())
}

fn query_features(img: &RgbImage) -> Vec<Feature> {
    features_of(img, &ExtractParams::query())
}

/// `img` resized to `w`×`h`.
fn resized(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    imageops::resize(img, w, h, FilterType::Triangle)
}

/// The region `[x0, x0 + fw·W) × [y0, y0 + fh·H)` (fractions of the size).
fn crop(img: &RgbImage, fx: f32, fy: f32, fw: f32, fh: f32) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    imageops::crop_imm(img, (fx * w) as u32, (fy * h) as u32, (fw * w) as u32, (fh * h) as u32).to_image()
}

/// `tiles` (row-major) in a 2×2 grid of `side`×`side` cells with a 6-pixel white gutter,
/// each scaled to fit its cell (aspect kept) and centred.
fn collage(tiles: [&RgbImage; 4], side: u32) -> RgbImage {
    let gutter = 6;
    let mut out = RgbImage::from_pixel(2 * side + 3 * gutter, 2 * side + 3 * gutter, Rgb([255, 255, 255]));
    for (k, tile) in tiles.iter().enumerate() {
        let (x, y) = ((k as u32 % 2) * (side + gutter) + gutter, (k as u32 / 2) * (side + gutter) + gutter);
        let fit = side as f32 / tile.width().max(tile.height()) as f32;
        let (w, h) = ((tile.width() as f32 * fit).round() as u32, (tile.height() as f32 * fit).round() as u32);
        imageops::overlay(&mut out, &resized(tile, w, h), i64::from(x + (side - w) / 2), i64::from(y + (side - h) / 2));
    }
    out
}

/// Bilinear sample with a fill colour outside.
fn sample(img: &RgbImage, x: f32, y: f32, fill: [u8; 3]) -> Rgb<u8> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    let (ax, ay) = (x - x0 as f32, y - y0 as f32);
    let px = |xx: i64, yy: i64| -> [f32; 3] {
        if xx < 0 || yy < 0 || xx >= w || yy >= h {
            fill.map(f32::from)
        } else {
            img.get_pixel(xx as u32, yy as u32).0.map(f32::from)
        }
    };
    let (p00, p10, p01, p11) = (px(x0, y0), px(x0 + 1, y0), px(x0, y0 + 1), px(x0 + 1, y0 + 1));
    Rgb([0, 1, 2].map(|c| {
        let top = p00[c] * (1.0 - ax) + p10[c] * ax;
        let bottom = p01[c] * (1.0 - ax) + p11[c] * ax;
        (top * (1.0 - ay) + bottom * ay).round() as u8
    }))
}

/// Turned `deg` degrees clockwise (y down) about the centre, same canvas, white corners.
fn rotated(img: &RgbImage, deg: f32) -> RgbImage {
    let (s, c) = deg.to_radians().sin_cos();
    let (cx, cy) = (img.width() as f32 / 2.0, img.height() as f32 / 2.0);
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
        // Inverse rotation: where this output pixel comes from.
        sample(img, c * dx + s * dy + cx - 0.5, -s * dx + c * dy + cy - 0.5, [255, 255, 255])
    })
}

/// A perspective view (a photo of the print taken from below): the picture becomes a
/// trapezoid whose top edge is narrowed by `squeeze` of the width on each side and
/// lowered by `squeeze` / 2 of the height, by a true projective map, on white.
fn perspective(img: &RgbImage, squeeze: f32) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    // Unit square (source, u right, v down) → trapezoid (output pixels): Heckbert's
    // square-to-quad homography; corners (0,0), (1,0), (1,1), (0,1) in order.
    let quad = [(squeeze * w, squeeze / 2.0 * h), ((1.0 - squeeze) * w, squeeze / 2.0 * h), (w, h), (0.0, h)];
    let [(x0, y0), (x1, y1), (x2, y2), (x3, y3)] = quad;
    let (sx, sy) = (x0 - x1 + x2 - x3, y0 - y1 + y2 - y3);
    let (dx1, dx2, dy1, dy2) = (x1 - x2, x3 - x2, y1 - y2, y3 - y2);
    let den = dx1 * dy2 - dx2 * dy1;
    let (g, hh) = ((sx * dy2 - dx2 * sy) / den, (dx1 * sy - sx * dy1) / den);
    let m = [x1 - x0 + g * x1, x3 - x0 + hh * x3, x0, y1 - y0 + g * y1, y3 - y0 + hh * y3, y0, g, hh, 1.0];
    // Output pixel → (u, v) by the inverse map.
    let inv = matching::invert(&m).expect("a trapezoid's homography is invertible");
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let (u, v) = matching::apply(&inv, (x as f32 + 0.5, y as f32 + 0.5));
        if (0.0..=1.0).contains(&u) && (0.0..=1.0).contains(&v) {
            sample(img, u * w - 0.5, v * h - 0.5, [255, 255, 255])
        } else {
            Rgb([255, 255, 255])
        }
    })
}

/// A screenshot of a listing page: `photo` covering `share` of the canvas (the canvas
/// is the photo's size / √share on each side), under a status bar and a title, above
/// lines of "text" and a button.
fn screenshot(photo: &RgbImage, share: f32) -> RgbImage {
    let grow = 1.0 / share.sqrt();
    let (pw, ph) = (photo.width(), photo.height());
    let (cw, ch) = ((pw as f32 * grow).round() as u32, (ph as f32 * grow).round() as u32);
    let mut out = RgbImage::from_pixel(cw, ch, Rgb([250, 250, 250]));
    let top = (ch - ph) * 3 / 5;
    fill_rect(&mut out, 0, 0, cw, top / 3, [30, 30, 30]); // status bar
    draw_text(&mut out, "SHOP", 12, top / 3 + 8, (top / 3) as f32, 3.0, [20, 20, 20]);
    imageops::overlay(&mut out, photo, i64::from((cw - pw) / 2), i64::from(top));
    let below = top + ph + 8;
    let line = (ch.saturating_sub(below) / 8).max(4);
    for k in 0..3 {
        fill_rect(&mut out, 12, below + k * 2 * line, cw / 2 + (k % 2) * cw / 5, line, [120, 120, 120]);
    }
    fill_rect(&mut out, 12, below + 6 * line, cw - 24, ch.saturating_sub(below + 6 * line + 4), [0, 110, 230]);
    out
}

fn fill_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, Rgb(colour));
        }
    }
}

// ---- a stroke font for logos -------------------------------------------------------

/// Polylines per letter on a 4 × 6 grid (x right, y down).
fn glyph(ch: char) -> Vec<Vec<(f32, f32)>> {
    let p = |pts: &[(f32, f32)]| pts.to_vec();
    match ch {
        'A' => vec![p(&[(0., 6.), (2., 0.), (4., 6.)]), p(&[(1., 3.5), (3., 3.5)])],
        'E' => vec![p(&[(4., 0.), (0., 0.), (0., 6.), (4., 6.)]), p(&[(0., 3.), (3., 3.)])],
        'F' => vec![p(&[(4., 0.), (0., 0.), (0., 6.)]), p(&[(0., 3.), (3., 3.)])],
        'H' => vec![p(&[(0., 0.), (0., 6.)]), p(&[(4., 0.), (4., 6.)]), p(&[(0., 3.), (4., 3.)])],
        'I' => vec![p(&[(2., 0.), (2., 6.)]), p(&[(1., 0.), (3., 0.)]), p(&[(1., 6.), (3., 6.)])],
        'K' => vec![p(&[(0., 0.), (0., 6.)]), p(&[(4., 0.), (0., 3.5), (4., 6.)])],
        'L' => vec![p(&[(0., 0.), (0., 6.), (4., 6.)])],
        'M' => vec![p(&[(0., 6.), (0., 0.), (2., 3.), (4., 0.), (4., 6.)])],
        'N' => vec![p(&[(0., 6.), (0., 0.), (4., 6.), (4., 0.)])],
        'O' => vec![p(&[(1., 0.), (3., 0.), (4., 1.), (4., 5.), (3., 6.), (1., 6.), (0., 5.), (0., 1.), (1., 0.)])],
        'R' => {
            vec![p(&[(0., 6.), (0., 0.), (3., 0.), (4., 1.), (4., 2.), (3., 3.), (0., 3.)]), p(&[(2., 3.), (4., 6.)])]
        }
        'S' => vec![p(&[
            (4., 0.5),
            (3., 0.),
            (1., 0.),
            (0., 1.),
            (0., 2.),
            (1., 3.),
            (3., 3.),
            (4., 4.),
            (4., 5.),
            (3., 6.),
            (1., 6.),
            (0., 5.5),
        ])],
        'T' => vec![p(&[(0., 0.), (4., 0.)]), p(&[(2., 0.), (2., 6.)])],
        'U' => vec![p(&[(0., 0.), (0., 5.), (1., 6.), (3., 6.), (4., 5.), (4., 0.)])],
        'V' => vec![p(&[(0., 0.), (2., 6.), (4., 0.)])],
        'W' => vec![p(&[(0., 0.), (1., 6.), (2., 2.), (3., 6.), (4., 0.)])],
        'X' => vec![p(&[(0., 0.), (4., 6.)]), p(&[(4., 0.), (0., 6.)])],
        'Y' => vec![p(&[(0., 0.), (2., 3.), (4., 0.)]), p(&[(2., 3.), (2., 6.)])],
        'Z' => vec![p(&[(0., 0.), (4., 0.), (0., 6.), (4., 6.)])],
        _ => vec![],
    }
}

/// Anti-aliased thick polylines (`pen` pixels wide) in `colour`.
fn draw_polylines(img: &mut RgbImage, lines: &[Vec<(f32, f32)>], pen: f32, colour: [u8; 3]) {
    let half = pen / 2.0;
    for line in lines {
        for seg in line.windows(2) {
            let ((x1, y1), (x2, y2)) = (seg[0], seg[1]);
            let x0 = (x1.min(x2) - half - 1.0).max(0.0) as u32;
            let y0 = (y1.min(y2) - half - 1.0).max(0.0) as u32;
            let xe = ((x1.max(x2) + half + 2.0) as u32).min(img.width());
            let ye = ((y1.max(y2) + half + 2.0) as u32).min(img.height());
            let (dx, dy) = (x2 - x1, y2 - y1);
            let len2 = (dx * dx + dy * dy).max(1e-6);
            for y in y0..ye {
                for x in x0..xe {
                    let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                    let t = (((px - x1) * dx + (py - y1) * dy) / len2).clamp(0.0, 1.0);
                    let (ex, ey) = (x1 + t * dx - px, y1 + t * dy - py);
                    let cover = (half + 0.5 - (ex * ex + ey * ey).sqrt()).clamp(0.0, 1.0);
                    if cover > 0.0 {
                        let old = img.get_pixel(x, y).0;
                        let new = [0, 1, 2]
                            .map(|c| (f32::from(old[c]) * (1.0 - cover) + f32::from(colour[c]) * cover).round() as u8);
                        img.put_pixel(x, y, Rgb(new));
                    }
                }
            }
        }
    }
}

/// `text` with its top-left at (`x`, `y`), letters `size` pixels tall.
fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, size: f32, pen: f32, colour: [u8; 3]) {
    let unit = size / 6.0;
    for (k, ch) in text.chars().enumerate() {
        let ox = x as f32 + k as f32 * unit * 6.0;
        let lines: Vec<Vec<(f32, f32)>> = glyph(ch)
            .iter()
            .map(|l| l.iter().map(|&(gx, gy)| (ox + gx * unit, y as f32 + gy * unit)).collect())
            .collect();
        draw_polylines(img, &lines, pen, colour);
    }
}

/// The emblem `kind` (0–3: star, hexagon with a peak, ring with a cross, square with a
/// diamond) centred at (`cx`, `cy`), `r` pixels in radius.
fn emblem(kind: u32, cx: f32, cy: f32, r: f32) -> Vec<Vec<(f32, f32)>> {
    let polygon = |n: usize, radius: f32, turn: f32| -> Vec<(f32, f32)> {
        (0..=n)
            .map(|k| {
                let a = k as f32 * std::f32::consts::TAU / n as f32 + turn;
                (cx + radius * a.cos(), cy + radius * a.sin())
            })
            .collect()
    };
    match kind % 4 {
        0 => vec![(0..=10)
            .map(|k| {
                let a = k as f32 * std::f32::consts::PI / 5.0 - std::f32::consts::FRAC_PI_2;
                let rr = if k % 2 == 0 { r } else { r * 0.42 };
                (cx + rr * a.cos(), cy + rr * a.sin())
            })
            .collect()],
        1 => vec![
            polygon(6, r, 0.0),
            vec![(cx - 0.45 * r, cy + 0.45 * r), (cx, cy - 0.55 * r), (cx + 0.45 * r, cy + 0.45 * r)],
        ],
        2 => vec![polygon(40, r, 0.0), vec![(cx - r, cy), (cx + r, cy)], vec![(cx, cy - r), (cx, cy + r)]],
        _ => vec![polygon(4, r, std::f32::consts::FRAC_PI_4), polygon(4, r * 0.6, 0.0)],
    }
}

/// A brand logo on white: emblem `kind` (none: a wordmark alone) above `word`.
fn logo(word: &str, kind: Option<u32>) -> RgbImage {
    let (w, h) = (640u32, 400u32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    if let Some(kind) = kind {
        draw_polylines(&mut img, &emblem(kind, 320.0, 120.0, 88.0), 10.0, [200, 20, 20]);
    }
    let size = 90.0;
    let width = word.len() as f32 * size - size / 3.0;
    draw_text(&mut img, word, ((w as f32 - width) / 2.0).max(0.0) as u32, 250, size, 14.0, [10, 10, 10]);
    img
}

// ---- checks -------------------------------------------------------------------------

/// Textured photographs (the blurred Hubble field has too few corners; see
/// `low_texture_images_have_few_features`).
const TEXTURED: [&str; 5] = ["astronaut.jpg", "coffee.jpg", "chelsea.png", "camera_gray.png", "rocket_exif6.jpg"];

/// A point given in `w`×`h` image pixels (continuous, 0 at the left edge) in working
/// pixels (pixel centres at integers).
fn to_work(w: u32, h: u32, (x, y): (f32, f32)) -> (f32, f32) {
    let (ww, wh) = working_size(w, h, &ExtractParams::default());
    (x * ww as f32 / w as f32 - 0.5, y * wh as f32 / h as f32 - 0.5)
}

/// `v`'s transform takes `q` within `tol` working pixels of `c`.
fn assert_maps(v: &Verification, q: (f32, f32), c: (f32, f32), tol: f32, what: &str) {
    let (x, y) = v.map(q.0, q.1);
    let err = ((x - c.0).powi(2) + (y - c.1).powi(2)).sqrt();
    assert!(err <= tol, "{what}: {q:?} maps to ({x:.1}, {y:.1}), expected {c:?} (off by {err:.1} px); {v:?}");
}

fn verified(q: &[Feature], c: &[Feature], what: &str) -> Verification {
    match verify(q, c, &VerifyParams::default()) {
        Some(v) => v,
        None => panic!("{what}: did not verify; best model {:?}", best_model(q, c, &VerifyParams::default())),
    }
}

fn assert_rejected(q: &[Feature], c: &[Feature], what: &str) {
    let v = verify(q, c, &VerifyParams::default());
    assert!(v.is_none(), "{what}: verified {v:?}");
}

#[test]
fn an_off_centre_crop_verifies_against_its_source() {
    for name in TEXTURED {
        let photo = fixture_rgb(name);
        let stored = index_features(&photo);
        let (w, h) = (photo.width() as f32, photo.height() as f32);
        // 75 % × 75 % from the top-right corner (25 % cut off on the left and bottom),
        // and a harder 60 % × 60 % from the bottom-left.
        for (fx, fy, f) in [(0.25, 0.0, 0.75), (0.0, 0.4, 0.6)] {
            let what = format!("{name} crop {f} at ({fx}, {fy})");
            let part = crop(&photo, fx, fy, f, f);
            let v = verified(&query_features(&part), &stored, &what);
            assert!((v.scale - f).abs() < 0.05 * f, "{what}: scale {}", v.scale);
            assert!(v.rotation_deg.abs() < 1.5, "{what}: rotation {}", v.rotation_deg);
            // The crop's centre is the source's point (fx + f/2, fy + f/2).
            let q = to_work(part.width(), part.height(), (part.width() as f32 / 2.0, part.height() as f32 / 2.0));
            let c = to_work(photo.width(), photo.height(), ((fx + f / 2.0) * w, (fy + f / 2.0) * h));
            assert_maps(&v, q, c, 4.0, &what);
            // The other way round too (the stored image is the crop, the listing shows
            // more), for the milder crop: a 60 % crop stored can cover too little of
            // itself with inliers (chelsea: 0.48 < `min_coverage`).
            if f > 0.7 {
                let back = verified(&query_features(&photo), &index_features(&part), &format!("{what}, reversed"));
                assert!((back.scale - 1.0 / f).abs() < 0.05 / f, "{what} reversed: scale {}", back.scale);
            }
        }
    }
}

#[test]
fn a_two_by_two_collage_containing_the_photo_verifies() {
    let photos: Vec<RgbImage> = PHOTOS.iter().map(|n| fixture_rgb(n)).collect();
    for (k, name) in PHOTOS.iter().enumerate().filter(|(_, n)| TEXTURED.contains(n)) {
        let others: Vec<&RgbImage> = photos.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, p)| p).collect();
        // The photo in the bottom-left cell of a 1018 × 1018 collage of 500-pixel cells.
        let side = 500;
        let grid = collage([others[0], others[1], &photos[k], others[2]], side);
        let v = verified(&query_features(&grid), &index_features(&photos[k]), &format!("{name} in a collage"));
        // Its cell is 500 of 1018 pixels: the photo is ≈ 2.04× bigger on its own.
        let expected = grid.width() as f32 / side as f32;
        assert!((v.scale - expected).abs() < 0.06 * expected, "{name}: scale {} vs {expected}", v.scale);
        let cell_centre = (6.0 + side as f32 / 2.0, (2 * 6 + side) as f32 + side as f32 / 2.0);
        let q = to_work(grid.width(), grid.height(), cell_centre);
        let p = &photos[k];
        let c = to_work(p.width(), p.height(), (p.width() as f32 / 2.0, p.height() as f32 / 2.0));
        assert_maps(&v, q, c, 6.0, name);
        // The inliers lie in the photo's cell of the query.
        let cell =
            [to_work(grid.width(), grid.height(), (6.0, 512.0)), to_work(grid.width(), grid.height(), (506.0, 1012.0))];
        let b = v.query_box;
        assert!(
            b[0] >= cell[0].0 - 2.0 && b[1] >= cell[0].1 - 2.0 && b[2] <= cell[1].0 + 2.0 && b[3] <= cell[1].1 + 2.0,
            "{name}: {b:?} not in {cell:?}"
        );
    }
}

#[test]
fn small_rotations_verify_with_their_angle() {
    for name in TEXTURED {
        let photo = fixture_rgb(name);
        let stored = index_features(&photo);
        for deg in [3.0f32, 7.0, -10.0] {
            let what = format!("{name} turned {deg}°");
            let v = verified(&query_features(&rotated(&photo, deg)), &stored, &what);
            // The transform turns the listing back onto the stored photo.
            assert!((v.rotation_deg + deg).abs() < 1.0, "{what}: rotation {}", v.rotation_deg);
            assert!((v.scale - 1.0).abs() < 0.03, "{what}: scale {}", v.scale);
            let centre =
                to_work(photo.width(), photo.height(), (photo.width() as f32 / 2.0, photo.height() as f32 / 2.0));
            assert_maps(&v, centre, centre, 4.0, &what);
        }
    }
}

#[test]
fn a_screenshot_with_the_photo_on_70_percent_of_it_verifies() {
    for name in TEXTURED {
        let photo = fixture_rgb(name);
        let shot = screenshot(&photo, 0.7);
        let covered = (photo.width() * photo.height()) as f32 / (shot.width() * shot.height()) as f32;
        assert!((covered - 0.7).abs() < 0.02, "{name}: the photo covers {covered} of the screenshot");
        let v = verified(&query_features(&shot), &index_features(&photo), &format!("{name} screenshot"));
        let expected = shot.width() as f32 / photo.width() as f32; // ≈ 1 / √0.7
        assert!((v.scale - expected).abs() < 0.04 * expected, "{name}: scale {} vs {expected}", v.scale);
        // The photo sits centred horizontally, 3/5 of the spare height from the top.
        let left = ((shot.width() - photo.width()) / 2) as f32;
        let top = ((shot.height() - photo.height()) * 3 / 5) as f32;
        let (pw, ph) = (photo.width() as f32, photo.height() as f32);
        let q = to_work(shot.width(), shot.height(), (left + pw / 2.0, top + ph / 2.0));
        let c = to_work(photo.width(), photo.height(), (pw / 2.0, ph / 2.0));
        assert_maps(&v, q, c, 5.0, name);
    }
}

#[test]
fn perspective_quarter_turns_and_lossless_formats_verify() {
    for name in ["astronaut.jpg", "coffee.jpg", "camera_gray.png"] {
        let photo = fixture_rgb(name);
        let stored = index_features(&photo);
        let v = verified(&query_features(&perspective(&photo, 0.12)), &stored, &format!("{name} perspective"));
        assert!(v.rotation_deg.abs() < 3.0, "{name}: {v:?}");
        for (turned, deg) in [(imageops::rotate90(&photo), -90.0f32), (imageops::rotate180(&photo), 180.0)] {
            let v = verified(&query_features(&turned), &stored, &format!("{name} turned {deg}"));
            let off = (v.rotation_deg - deg + 540.0).rem_euclid(360.0) - 180.0;
            assert!(off.abs() < 1.0, "{name} turned {deg}: rotation {}", v.rotation_deg);
        }
        let png = features_of_encoded(&crop(&photo, 0.1, 0.1, 0.8, 0.8), ImageFormat::Png, &ExtractParams::query());
        verified(&png, &stored, &format!("{name} PNG crop"));
    }
}

#[test]
fn a_mirrored_copy_verifies_through_mirrored_features() {
    for name in ["astronaut.jpg", "chelsea.png", "rocket_exif6.jpg"] {
        let photo = fixture_rgb(name);
        let stored = index_features(&photo);
        let flipped = imageops::flip_horizontal(&rotated(&photo, 5.0));
        let listing = query_features(&flipped);
        // A mirror is not a rotation: the plain pass does not find it…
        assert_rejected(&listing, &stored, &format!("{name} mirrored, plain pass"));
        // …the mirrored features do.
        let (ww, _) = working_size(flipped.width(), flipped.height(), &ExtractParams::query());
        let v = verified(&mirrored(&listing, ww), &stored, &format!("{name} mirrored"));
        assert!((v.rotation_deg + 5.0).abs() < 1.0, "{name}: rotation {}", v.rotation_deg);
    }
}

#[test]
fn mirroring_features_equals_extracting_from_the_mirror() {
    let photo = fixture_rgb("astronaut.jpg");
    let params = ExtractParams::default();
    let direct = features_of_encoded(&imageops::flip_horizontal(&photo), ImageFormat::Png, &params);
    let (ww, _) = working_size(photo.width(), photo.height(), &params);
    let derived = mirrored(&features_of_encoded(&photo, ImageFormat::Png, &params), ww);
    // Same corners at the same places (up to the grid's tie-breaks), same descriptors.
    let mut same = 0;
    for d in &derived {
        let twin = direct.iter().find(|f| f.level == d.level && f.x.abs_diff(d.x) <= 16 && f.y.abs_diff(d.y) <= 16);
        if let Some(t) = twin {
            let turn = t.angle.wrapping_sub(d.angle);
            assert!(turn.min(turn.wrapping_neg()) <= 3, "{t:?} vs {d:?}");
            assert!(t.distance(d) <= 24, "descriptor distance {} at {:?}", t.distance(d), d.pos());
            same += 1;
        }
    }
    assert!(same * 10 >= derived.len() * 8, "only {same} of {} mirrored features found", derived.len());
}

#[test]
fn unrelated_photos_do_not_verify() {
    let photos: Vec<RgbImage> = PHOTOS.iter().map(|n| fixture_rgb(n)).collect();
    let queries: Vec<Vec<Feature>> = photos.iter().map(query_features).collect();
    let stored: Vec<Vec<Feature>> = photos.iter().map(index_features).collect();
    for (i, q) in queries.iter().enumerate() {
        for (j, c) in stored.iter().enumerate().filter(|(j, _)| *j != i) {
            let what = format!("{} vs {}", PHOTOS[i], PHOTOS[j]);
            assert_rejected(q, c, &what);
            // Not a near miss: chance agreement is a handful of matches.
            if let Some(v) = best_model(q, c, &VerifyParams::default()) {
                assert!(v.inliers <= 5, "{what}: {} inliers", v.inliers);
            }
        }
        // And a crop of one is not found in another.
        let part = query_features(&crop(&photos[i], 0.2, 0.2, 0.7, 0.7));
        for (j, c) in stored.iter().enumerate().filter(|(j, _)| *j != i) {
            assert_rejected(&part, c, &format!("crop of {} vs {}", PHOTOS[i], PHOTOS[j]));
        }
    }
}

#[test]
fn different_logos_on_white_do_not_verify() {
    // Same font, same stroke, same layout, shared letters (A, E, I, K, N, O, R, S, T, X,
    // Y…): what two different brands' marks look like to a corner detector.
    //
    // Known limit, left out here and measured by `report`: two wordmarks that share two
    // or more letters in the same arrangement (KRUSTY / VAULT: "U" and "T" at the same
    // places; MINT / TWIN: "IN"; FLAME / WHEAT, shifted by a letter, where this stick
    // font's F, L, E and H share most strokes) can verify: they do share that part.
    let marks: Vec<(&str, RgbImage)> = [
        ("FLAME", Some(0)),
        ("NOVIX", Some(1)),
        ("TAXI", Some(2)),
        ("KRUSTY", Some(3)),
        ("NOVIX", None),
        ("TAXI", None),
        ("KRUSTY", None),
        ("TWIN", None),
        ("HOTEL", None),
        ("ZERO", None),
        ("STORY", None),
    ]
    .into_iter()
    .map(|(word, kind)| (word, logo(word, kind)))
    .collect();
    let queries: Vec<Vec<Feature>> = marks.iter().map(|(_, m)| query_features(m)).collect();
    let stored: Vec<Vec<Feature>> = marks.iter().map(|(_, m)| index_features(m)).collect();
    let mut wrong = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        for (j, c) in stored.iter().enumerate() {
            // A wordmark is part of the logo with the same word: that verifies.
            let same = marks[i].0 == marks[j].0;
            let v = verify(q, c, &VerifyParams::default());
            if v.is_some() != same {
                wrong.push(format!("{} ({i}) vs {} ({j}): {v:?}", marks[i].0, marks[j].0));
            }
        }
    }
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
    // The same mark does verify when it is re-used: shrunk onto a grey page…
    let mut page = RgbImage::from_pixel(900, 700, Rgb([235, 235, 235]));
    let marks: Vec<RgbImage> = marks.into_iter().map(|(_, m)| m).collect();
    imageops::overlay(&mut page, &resized(&marks[1], 448, 280), 300, 260);
    let v = verified(&query_features(&page), &stored[1], "logo on a page");
    assert!((v.scale - 1.0 / 0.7 * 512.0 / 640.0 * 900.0 / 512.0).abs() < 0.15, "{v:?}");
    // …or on a card pasted onto a different photo.
    let mut placed = fixture_rgb("coffee.jpg");
    imageops::overlay(&mut placed, &resized(&marks[0], 256, 160), 200, 120);
    verified(&query_features(&placed), &stored[0], "logo card on a photo");
    assert_rejected(&query_features(&placed), &stored[2], "another logo vs the logo card on a photo");
}

#[test]
fn low_texture_images_have_few_features() {
    // A flat image has no corners at all; a blurred one only a few. Verification then
    // has little to work with: such images are the global hashes' to judge.
    let flat = vec![128f32; 300 * 200];
    assert!(extract(&flat, 300, 200, &ExtractParams::default()).is_empty());
    let blurred = index_features(&fixture_rgb("hubble_deep_field_blur.jpg"));
    assert!(!blurred.is_empty() && blurred.len() < 128, "{}", blurred.len());
}

#[test]
fn extraction_is_bounded_spread_and_deterministic() {
    let photo = fixture_rgb("astronaut.jpg");
    for max in [1, 64, 256, 1000] {
        let params = ExtractParams { max_features: max, ..ExtractParams::default() };
        let f = features_of(&photo, &params);
        assert!(f.len() <= max && f.len() >= max.min(400), "{max}: {}", f.len());
    }
    let params = ExtractParams::default();
    let features = index_features(&photo);
    assert_eq!(features.len(), 256);
    assert_eq!(features, index_features(&photo), "same input, same features");
    // All four pyramid levels contribute, and the features spread over the image.
    for level in 0..4 {
        assert!(features.iter().filter(|f| f.level == level).count() >= 16, "level {level}");
    }
    let (ww, wh) = working_size(photo.width(), photo.height(), &params);
    assert_eq!((ww, wh), (512, 512));
    let mut cells = [0usize; 16];
    for f in &features {
        let (x, y) = f.pos();
        assert!(x >= 0.0 && y >= 0.0 && x < ww as f32 && y < wh as f32, "{f:?}");
        cells[((y / wh as f32 * 4.0) as usize).min(3) * 4 + ((x / ww as f32 * 4.0) as usize).min(3)] += 1;
    }
    assert!(cells.iter().filter(|&&n| n > 0).count() >= 14, "{cells:?}");
    assert!(*cells.iter().max().unwrap() <= 256 / 4, "{cells:?}");
    // Any size works: large, tiny, degenerate.
    let big = resized(&photo, 2400, 1600);
    let f = features_of(&big, &params);
    assert!(f.len() == 256 && f.iter().all(|f| f.pos().0 < 512.0 && f.pos().1 < 342.0));
    for (w, h) in [(1, 1), (8, 8), (3000, 2), (2, 3000), (40, 40)] {
        let luma: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 251) as f32).collect();
        let f = extract(&luma, w as u32, h as u32, &params);
        assert!(f.len() <= 256, "{w}×{h}");
    }
    assert!(extract(&[], 0, 0, &params).is_empty());
}

#[test]
#[should_panic(expected = "luma plane")]
fn extraction_refuses_a_plane_of_the_wrong_size() {
    extract(&[0.0; 10], 4, 4, &ExtractParams::default());
}

#[test]
fn verification_is_deterministic_and_survives_storage() {
    let photo = fixture_rgb("chelsea.png");
    let stored = from_bytes(&to_bytes(&index_features(&photo))).unwrap();
    let listing = query_features(&crop(&photo, 0.2, 0.1, 0.75, 0.75));
    let a = verify(&listing, &stored, &VerifyParams::default());
    assert!(a.is_some());
    assert_eq!(a, verify(&listing, &stored, &VerifyParams::default()));
    let other_seed = VerifyParams { seed: 7, ..VerifyParams::default() };
    let b = verify(&listing, &stored, &other_seed).expect("any seed finds it");
    assert!(b.inliers.abs_diff(a.unwrap().inliers) <= 3);
    // Nothing to match: no answer, no panic.
    assert!(verify(&[], &stored, &VerifyParams::default()).is_none());
    assert!(verify(&listing, &[], &VerifyParams::default()).is_none());
    assert!(verify(&listing[..1], &stored, &VerifyParams::default()).is_none());
}

#[test]
fn storage_round_trips_exactly_in_38_bytes_a_feature() {
    let features = index_features(&fixture_rgb("coffee.jpg"));
    let bytes = to_bytes(&features);
    assert_eq!(bytes.len(), HEADER_BYTES + BYTES_PER_FEATURE * features.len());
    assert_eq!(bytes.len(), 5 + 38 * 256);
    assert_eq!(from_bytes(&bytes).unwrap(), features);
    assert_eq!(from_bytes(&to_bytes(&[])).unwrap(), Vec::<Feature>::new());

    assert_eq!(from_bytes(b""), Err(FeaturesError::BadMagic));
    assert_eq!(from_bytes(b"XX\x01\x00\x00"), Err(FeaturesError::BadMagic));
    let mut other_version = bytes.clone();
    other_version[2] = FORMAT_VERSION + 1;
    assert_eq!(from_bytes(&other_version), Err(FeaturesError::Version(FORMAT_VERSION + 1)));
    let cut = &bytes[..bytes.len() - 1];
    assert!(matches!(from_bytes(cut), Err(FeaturesError::Length { count: 256, .. })));
    let mut bad_level = bytes.clone();
    bad_level[HEADER_BYTES + 5] = MAX_LEVELS;
    assert_eq!(from_bytes(&bad_level), Err(FeaturesError::Level { index: 0, level: MAX_LEVELS }));
}

/// Not a check: prints every case's numbers, to tune the parameters against.
/// `cargo test --release --lib features::tests::report -- --ignored --nocapture`
#[test]
#[ignore]
fn report() {
    let line = |name: &str, q: &[Feature], c: &[Feature]| {
        match best_model(q, c, &VerifyParams::default()) {
        Some(v) => eprintln!(
            "{name:44} feats {:3}/{:3} matches {:3} inliers {:3} prec {:.2} ratio {:.2} cov {:.2}/{:.2} span {:.2} scale {:.2} rot {:6.1} {:?} {}",
            q.len(),
            c.len(),
            v.matches,
            v.inliers,
            v.pairs.len() as f32 / v.matches as f32,
            v.inlier_ratio,
            v.query_coverage,
            v.candidate_coverage,
            v.span,
            v.scale,
            v.rotation_deg,
            v.model,
            if v.accepted(&VerifyParams::default()) { "VERIFIED" } else { "-" }
        ),
        None => eprintln!("{name:44} feats {:3}/{:3} no model -", q.len(), c.len()),
    }
    };
    let photos: Vec<RgbImage> = PHOTOS.iter().map(|n| fixture_rgb(n)).collect();
    perspective(&photos[0], 0.2).save("/tmp/persp.png").unwrap();
    let stored: Vec<Vec<Feature>> = photos.iter().map(index_features).collect();
    for (k, p) in photos.iter().enumerate() {
        let name = PHOTOS[k];
        let others: Vec<&RgbImage> = photos.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, o)| o).collect();
        let (ww, _) = working_size(p.width(), p.height(), &ExtractParams::query());
        let cases = [
            ("crop 75% top-right", crop(p, 0.25, 0.0, 0.75, 0.75)),
            ("crop 60% bottom-left", crop(p, 0.0, 0.4, 0.6, 0.6)),
            ("collage 2x2", collage([others[0], others[1], p, others[2]], 500)),
            ("rotated 7", rotated(p, 7.0)),
            ("rotated -10", rotated(p, -10.0)),
            ("screenshot 70%", screenshot(p, 0.7)),
            ("screenshot 60%", screenshot(p, 0.6)),
            ("perspective 0.12", perspective(p, 0.12)),
            ("perspective 0.2", perspective(p, 0.2)),
            ("rotated 90", imageops::rotate90(p)),
        ];
        for (what, img) in cases {
            line(&format!("{name} {what}"), &query_features(&img), &stored[k]);
        }
        let flipped = query_features(&imageops::flip_horizontal(p));
        line(&format!("{name} mirrored"), &mirrored(&flipped, ww), &stored[k]);
        for (j, c) in stored.iter().enumerate().filter(|(j, _)| *j != k) {
            line(&format!("NEG {name} vs {}", PHOTOS[j]), &query_features(p), c);
        }
    }
    let words =
        ["FLAME", "NOVIX", "TAXI", "KRUSTY", "WHEAT", "AXLE", "TWIN", "MINT", "HOTEL", "ZERO", "STORY", "VAULT"];
    let mut marks: Vec<(String, RgbImage)> = Vec::new();
    for (k, w) in words.iter().enumerate() {
        marks.push((format!("{w}+{k}"), logo(w, Some(k as u32 % 4))));
        marks.push((w.to_string(), logo(w, None)));
    }
    let lq: Vec<Vec<Feature>> = marks.iter().map(|(_, m)| query_features(m)).collect();
    let ls: Vec<Vec<Feature>> = marks.iter().map(|(_, m)| index_features(m)).collect();
    let (mut pairs, mut verified) = (0, Vec::new());
    for (i, q) in lq.iter().enumerate() {
        for (j, c) in ls.iter().enumerate() {
            line(&format!("LOGO {} vs {}", marks[i].0, marks[j].0), q, c);
            let word = |k: usize| marks[k].0.split('+').next().unwrap().to_string();
            let emblem = |k: usize| marks[k].0.split('+').nth(1).map(|e| e.parse::<u32>().unwrap() % 4);
            let same_emblem = emblem(i).is_some() && emblem(i) == emblem(j);
            if word(i) != word(j) && !same_emblem {
                pairs += 1;
                if verify(q, c, &VerifyParams::default()).is_some() {
                    verified.push(format!("{} vs {}", marks[i].0, marks[j].0));
                }
            }
        }
    }
    eprintln!(
        "pairs of marks sharing neither word nor emblem that verified: {} of {pairs}: {verified:?}",
        verified.len()
    );
}

/// Not a check: costs on this machine. Run in release, single-threaded:
/// `cargo test --release --lib features::tests::costs -- --ignored --nocapture --test-threads 1`
#[test]
#[ignore]
fn costs() {
    use std::time::Instant;
    let photo = resized(&fixture_rgb("astronaut.jpg"), 1000, 1000);
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&photo).unwrap();
    let decoded = decode(&bytes, &DecodeLimits::default()).unwrap();
    // The machine may be shared: besides wall time (best and median of 9 batches), the
    // thread's own CPU time (Linux schedstat), which does not count time spent waiting
    // for a core.
    let cpu_ns = || -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        stat.split_whitespace().next()?.parse().ok()
    };
    let time = |what: &str, runs: u32, f: &mut dyn FnMut()| {
        f();
        let mut cpu = Vec::new();
        let mut batches: Vec<f64> = (0..9)
            .map(|_| {
                let (start, cpu0) = (Instant::now(), cpu_ns());
                for _ in 0..runs {
                    f();
                }
                if let (Some(a), Some(b)) = (cpu0, cpu_ns()) {
                    cpu.push((b - a) / 1e3 / f64::from(runs));
                }
                start.elapsed().as_secs_f64() * 1e6 / f64::from(runs)
            })
            .collect();
        batches.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let cpu = cpu.get(cpu.len() / 2).map_or("-".to_string(), |c| format!("{c:.1}"));
        eprintln!("{what:56} wall best {:>8.1} µs, median {:>8.1} µs; cpu median {cpu:>8} µs", batches[0], batches[4]);
    };
    let (index, query) = (ExtractParams::default(), ExtractParams::query());
    time("decode 1000×1000 JPEG (for scale, not part of extract)", 5, &mut || {
        std::hint::black_box(decode(&bytes, &DecodeLimits::default()).unwrap());
    });
    time("extract 1000×1000, index params (256 features)", 10, &mut || {
        std::hint::black_box(extract_decoded(&decoded, &index));
    });
    time("extract 1000×1000, query params (512 features)", 10, &mut || {
        std::hint::black_box(extract_decoded(&decoded, &query));
    });
    let stored = extract_decoded(&decoded, &index);
    let listing = query_features(&crop(&photo, 0.25, 0.0, 0.75, 0.75));
    let other = index_features(&fixture_rgb("coffee.jpg"));
    let p = VerifyParams::default();
    time("verify 512 vs 256, a match (crop)", 100, &mut || {
        std::hint::black_box(verify(&listing, &stored, &p));
    });
    time("verify 512 vs 256, unrelated", 100, &mut || {
        std::hint::black_box(verify(&listing, &other, &p));
    });
    let small = index_features(&crop(&photo, 0.25, 0.0, 0.75, 0.75));
    time("verify 256 vs 256, a match (crop)", 100, &mut || {
        std::hint::black_box(verify(&small, &stored, &p));
    });
    time("verify 256 vs 256, unrelated", 100, &mut || {
        std::hint::black_box(verify(&small, &other, &p));
    });
    let encoded = to_bytes(&stored);
    time("to_bytes + from_bytes, 256 features", 2000, &mut || {
        std::hint::black_box(from_bytes(&to_bytes(&stored)).unwrap());
    });
    eprintln!(
        "stored bytes per image: {} ({} features × {BYTES_PER_FEATURE} + {HEADER_BYTES})",
        encoded.len(),
        stored.len()
    );
}

#[test]
fn lost_share_tells_a_sticker_on_a_plain_part_from_a_replaced_centre() {
    // A product-style shot: a photo in the middle of a plain white field.
    let astronaut = resized(&fixture_rgb("astronaut.jpg"), 260, 260);
    let mut shot = RgbImage::from_pixel(640, 640, Rgb([255, 255, 255]));
    imageops::overlay(&mut shot, &astronaut, 190, 190);
    let stored = index_features(&shot);

    // A sticker on the white field hides no corners: nothing is lost.
    let mut stickered = shot.clone();
    fill_rect(&mut stickered, 20, 20, 200, 70, [200, 20, 30]);
    fill_rect(&mut stickered, 40, 45, 150, 20, [255, 255, 255]);
    let v = verified(&query_features(&stickered), &stored, "sticker");
    let lost = v.lost_share(&stored);
    assert!(lost < 0.05, "a sticker over white lost {lost}");

    // The centre of the photo replaced by another photo: what was there is lost.
    let mut replaced = shot.clone();
    imageops::overlay(&mut replaced, &resized(&fixture_rgb("coffee.jpg"), 150, 150), 245, 245);
    let v = verified(&query_features(&replaced), &stored, "replaced centre");
    let lost = v.lost_share(&stored);
    assert!(lost > 0.2, "replacing the middle of the photo lost only {lost}");
    assert!(v.lost_share(&[]) == 0.0);
}

#[test]
fn lost_share_in_view_counts_only_what_a_crop_shows() {
    let photo = fixture_rgb("astronaut.jpg");
    let stored = index_features(&photo);
    // An off-centre crop keeping 60% of each side: most of the photo is outside it, but
    // what it shows is intact.
    let cropped = crop(&photo, 0.35, 0.05, 0.6, 0.6);
    let q = query_features(&cropped);
    let v = verified(&q, &stored, "crop");
    let size = working_size(cropped.width(), cropped.height(), &ExtractParams::query());
    let (all, in_view) = (v.lost_share(&stored), v.lost_share_in_view(&stored, size));
    assert!(all > 0.3, "the parts cropped away count as lost overall: {all}");
    assert!(in_view < 0.1, "nothing inside the crop was replaced: {in_view}");

    // Replace the middle ninth of the crop with another photo: lost in view, past what
    // the matcher accepts as intact (0.10).
    let mut replaced = cropped.clone();
    let (w, h) = replaced.dimensions();
    imageops::overlay(
        &mut replaced,
        &resized(&fixture_rgb("chelsea.png"), w / 3, h / 3),
        i64::from(w / 3),
        i64::from(h / 3),
    );
    let v = verified(&query_features(&replaced), &stored, "replaced crop");
    let in_view = v.lost_share_in_view(&stored, size);
    assert!(in_view > 0.12, "the replaced middle of the crop: {in_view}");
}
