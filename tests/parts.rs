//! The brand-identity check (issue: precision on products never seen): a textured real
//! object (the cat photo's fur) with a small logo. Another logo on the same shot is a
//! near-miss, to review, never to flag, whatever the transform; the brand's own logo
//! recoloured, or a sticker over a plain part, is still a copy.

mod common;

use common::{fixture, jpeg};
use image::{imageops, Rgb, RgbImage};
use lookalike::hash::DecodeLimits;
use lookalike::index::{Index, OpenOptions};
use lookalike::matcher::{match_image, Closeness, MatchResult, Query, Verdict};

fn add(index: &mut Index, name: &str, bytes: &[u8]) {
    common::add_authentic(index, name, name, bytes);
}

/// A logo drawn in `colour` inside a `side × side` square at (`x`, `y`): `shape` 0 is a
/// ring with a bar through it, 1 a triangle with three dots, 2 a stack of stripes.
fn draw_logo(img: &mut RgbImage, x: u32, y: u32, side: u32, shape: u8, colour: [u8; 3]) {
    let s = side as f32;
    for dy in 0..side {
        for dx in 0..side {
            let (u, v) = (dx as f32 / s - 0.5, dy as f32 / s - 0.5);
            let r = u.hypot(v);
            let ink = match shape {
                0 => (0.32..0.45).contains(&r) || (u.abs() < 0.08 && v.abs() < 0.4),
                1 => {
                    let inside = v > -0.4 && v < 0.3 && u.abs() < (v + 0.4) * 0.6;
                    let dots =
                        [(-0.3, 0.42), (0.0, 0.42), (0.3, 0.42)].iter().any(|&(a, b)| (u - a).hypot(v - b) < 0.06);
                    inside || dots
                }
                _ => ((v + 0.5) * 7.0) as i32 % 2 == 0 && u.abs() < 0.45 - (v + 0.5) * 0.3,
            };
            if ink {
                img.put_pixel(x + dx, y + dy, Rgb(colour));
            }
        }
    }
}

/// The cat photo cut to its middle (a textured object), 510 × 390, placed at (140, 90)
/// of the 800 × 640 shots.
fn fur() -> RgbImage {
    let cat = image::open(fixture("chelsea.png")).unwrap().to_rgb8();
    let object = imageops::crop_imm(&cat, 60, 20, 340, 260).to_image();
    imageops::resize(&object, 510, 390, imageops::FilterType::Lanczos3)
}

/// [`fur`] on a white 800 × 640 field, with a logo badge on the fur of side `logo_side`.
fn product_shot(shape: u8, colour: [u8; 3], logo_side: u32) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(800, 640, Rgb([255, 255, 255]));
    imageops::overlay(&mut canvas, &fur(), 140, 90);
    // The badge sits on a plain card on the fur, as brand badges do.
    let card = RgbImage::from_pixel(logo_side + 12, logo_side + 12, Rgb([245, 240, 230]));
    imageops::overlay(&mut canvas, &card, 520, 370);
    draw_logo(&mut canvas, 526, 376, logo_side, shape, colour);
    canvas
}

/// Keystone: the top edge shrunk by `shrink` of the width (inverse-mapped, bilinear
/// enough for a test: nearest pixel), on white.
fn perspective(img: &RgbImage, shrink: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for y in 0..h {
        let t = y as f32 / h as f32;
        let inset = shrink * w as f32 * (1.0 - t) / 2.0;
        let width = w as f32 - 2.0 * inset;
        for x in 0..w {
            let xf = x as f32;
            if xf < inset || xf >= inset + width {
                continue;
            }
            let sx = ((xf - inset) / width * w as f32) as u32;
            out.put_pixel(x, y, *img.get_pixel(sx.min(w - 1), y));
        }
    }
    out
}

fn query(index: &Index, img: &RgbImage) -> MatchResult {
    match_image(index, &jpeg(img, 85), &DecodeLimits::default(), &Query::default()).unwrap()
}

fn indexed() -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(dir.path(), OpenOptions::writable()).unwrap();
    add(&mut index, "acme", &jpeg(&product_shot(0, [200, 30, 30], 64), 92));
    (dir, index)
}

fn describe(r: &MatchResult) -> String {
    r.matches
        .iter()
        .map(|m| {
            format!(
                "{} {:?} d={} verified={:?} parts={:?}",
                m.entry.brand, m.closeness, m.distance, m.verified, m.parts
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_flagged(r: &MatchResult) -> bool {
    matches!(r.verdict, Verdict::BrandPhotoReused | Verdict::KnownFake)
}

#[test]
fn another_logo_on_the_same_textured_shot_goes_to_review_under_crop_and_perspective() {
    let (_dir, index) = indexed();
    // Another brand's logo, in the same colour, at the same place on the same shot.
    let other = product_shot(1, [200, 30, 30], 64);
    let edits: [(&str, RgbImage); 3] = [
        ("exact frame", other.clone()),
        ("cropped", imageops::crop_imm(&other, 90, 40, 640, 560).to_image()),
        ("perspective", perspective(&other, 0.12)),
    ];
    for (edit, img) in edits {
        let r = query(&index, &img);
        println!("{edit}: {:?}\n{}", r.verdict, describe(&r));
        assert!(!is_flagged(&r), "{edit}: another logo on the shot was flagged:\n{}", describe(&r));
        // It is seen, and a moderator is shown which part differed.
        let m = r.matches.iter().find(|m| m.entry.brand == "acme");
        if let Some(m) = m.filter(|m| m.parts.is_some()) {
            let d = m.parts.as_ref().unwrap().differed.expect("the logo's part is named");
            // The badge is at x 520–596, y 370–446 of 800 × 640.
            let centre = ((d.rect[0] + d.rect[2]) / 2.0 * 800.0, (d.rect[1] + d.rect[3]) / 2.0 * 640.0);
            assert!((500.0..620.0).contains(&centre.0) && (350.0..470.0).contains(&centre.1), "{edit}: {d:?}");
        }
    }
}

#[test]
fn the_brands_own_logo_recoloured_is_still_a_copy() {
    let (_dir, index) = indexed();
    for (edit, img) in [
        ("recoloured", product_shot(0, [30, 60, 200], 64)),
        (
            "recoloured and cropped",
            imageops::crop_imm(&product_shot(0, [20, 140, 40], 64), 90, 40, 640, 560).to_image(),
        ),
    ] {
        let r = query(&index, &img);
        println!("{edit}: {:?}\n{}", r.verdict, describe(&r));
        assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{edit}:\n{}", describe(&r));
        assert_eq!(r.matches[0].entry.brand, "acme");
    }
}

#[test]
fn a_sticker_over_a_plain_part_is_still_a_copy() {
    let (_dir, index) = indexed();
    let mut img = product_shot(0, [200, 30, 30], 64);
    // A price sticker on the white field, with "text" strokes.
    let mut sticker = RgbImage::from_pixel(170, 60, Rgb([250, 210, 0]));
    for x in (12..158).step_by(9) {
        for y in 18..42 {
            sticker.put_pixel(x, y, Rgb([20, 20, 20]));
            sticker.put_pixel(x + 1, y, Rgb([20, 20, 20]));
        }
    }
    imageops::overlay(&mut img, &sticker, 20, 540);
    let r = query(&index, &img);
    println!("sticker: {:?}\n{}", r.verdict, describe(&r));
    assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{}", describe(&r));
    let m = &r.matches[0];
    assert_eq!(m.closeness, Closeness::Flag);
}

/// A plain product (a smooth shaded body with soft edges: next to no corners) on a white
/// 800 × 640 field, with the badge of `product_shot` at the same place.
fn plain_product_shot(shape: u8) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(800, 640, Rgb([255, 255, 255]));
    let (cx, cy, rx, ry) = (400.0f32, 320.0f32, 260.0f32, 200.0f32);
    for (x, y, p) in canvas.enumerate_pixels_mut() {
        let (u, v) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
        let r = u.hypot(v);
        // Opaque inside, fading to the field over the outer tenth.
        let alpha = ((1.0 - r) / 0.1).clamp(0.0, 1.0);
        let shade = 90.0 + 70.0 * (0.5 - 0.5 * v) + 30.0 * u;
        let body = [shade * 0.8, shade * 0.9, shade];
        *p = Rgb(body.map(|c| (255.0 * (1.0 - alpha) + c * alpha).round().clamp(0.0, 255.0) as u8));
    }
    let card = RgbImage::from_pixel(76, 76, Rgb([245, 240, 230]));
    imageops::overlay(&mut canvas, &card, 520, 370);
    draw_logo(&mut canvas, 526, 376, 64, shape, [200, 30, 30]);
    canvas
}

fn grey(img: &RgbImage) -> RgbImage {
    image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(img.clone()).to_luma8()).to_rgb8()
}

#[test]
fn a_hash_match_the_features_cannot_fit_is_compared_through_the_hash_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(dir.path(), OpenOptions::writable()).unwrap();
    add(&mut index, "acme", &jpeg(&plain_product_shot(0), 92));
    // Another brand's badge on the same plain shot, turned a quarter and in grey: the
    // hash finds it a few bits away; the body has no corners for the features to fit.
    let other = grey(&imageops::rotate90(&plain_product_shot(1)));
    let r = query(&index, &other);
    println!("other logo: {:?}\n{}", r.verdict, describe(&r));
    assert!(!is_flagged(&r), "another logo on the plain shot was flagged:\n{}", describe(&r));
    let m = r.matches.iter().find(|m| m.entry.brand == "acme").expect("the hash finds the shot");
    assert!(m.verified.is_none(), "the features fitted it (the test needs a shot they cannot fit):\n{}", describe(&r));
    let parts = m.parts.as_ref().expect("compared through the hash's alignment");
    let d = parts.differed.expect("the badge's part is named");
    // In the stored photo, the badge is at x 520–596, y 370–446 of 800 × 640.
    let centre = ((d.rect[0] + d.rect[2]) / 2.0 * 800.0, (d.rect[1] + d.rect[3]) / 2.0 * 640.0);
    assert!((500.0..620.0).contains(&centre.0) && (350.0..470.0).contains(&centre.1), "{d:?}");

    // The brand's own shot through the same edits is a copy, confirmed part by part.
    let copy = grey(&imageops::rotate90(&plain_product_shot(0)));
    let r = query(&index, &copy);
    println!("copy: {:?}\n{}", r.verdict, describe(&r));
    let m = r.matches.iter().find(|m| m.entry.brand == "acme").expect("the copy is found");
    assert!(m.parts.as_ref().is_some_and(|p| p.confirmed()), "{}", describe(&r));
    assert_ne!(r.verdict, Verdict::NoMatch, "{}", describe(&r));
}

#[test]
fn a_crop_that_cuts_away_detail_goes_to_review() {
    let (_dir, index) = indexed();
    // The brand's own shot with its right third (the badge and part of the fur) cut
    // away: what is left is what any seller of the object could show.
    let shot = product_shot(0, [200, 30, 30], 64);
    let crop = imageops::crop_imm(&shot, 0, 0, 500, 640).to_image();
    let r = query(&index, &crop);
    println!("crop: {:?}\n{}", r.verdict, describe(&r));
    assert!(!is_flagged(&r), "{}", describe(&r));
    let m = r.matches.iter().find(|m| m.entry.brand == "acme").expect("the crop is found");
    assert_eq!(m.closeness, Closeness::Review, "{}", describe(&r));
    assert!(m.parts.as_ref().is_some_and(|p| p.confirmed() && !p.shows_all_detail()), "{}", describe(&r));
}

/// [`fur`] under strong shading (a cylinder lit from the left, turning to its shadow
/// side around x 470) on a white 800 × 640 field, with a faint logo of side `logo_side`
/// printed on the fur across the shading's turn: the ink only darkens what it covers by
/// 12% (a print in nearly the object's own colour).
fn shaded_shot(shape: u8, logo_side: u32) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(800, 640, Rgb([255, 255, 255]));
    for (x, y, p) in fur().enumerate_pixels() {
        let cx = 140 + x;
        // Lit to the left, in shadow to the right, the turn soft over x 440–500.
        let t = ((cx as f32 - 440.0) / 60.0).clamp(0.0, 1.0);
        let lit = 1.2 - 0.75 * t * t * (3.0 - 2.0 * t);
        // The fur's texture kept at a quarter of its contrast, so the shading dominates.
        let texture = p.0.map(|c| 170.0 + (f32::from(c) - 128.0) / 4.0);
        canvas.put_pixel(cx, 90 + y, Rgb(texture.map(|c| (c * lit).clamp(0.0, 255.0) as u8)));
    }
    let mut mark = RgbImage::from_pixel(logo_side, logo_side, Rgb([0, 0, 0]));
    draw_logo(&mut mark, 0, 0, logo_side, shape, [255, 255, 255]);
    let (x0, y0) = (470 - logo_side / 2, 300);
    for (x, y, m) in mark.enumerate_pixels() {
        if m.0[0] > 0 {
            let p = canvas.get_pixel_mut(x0 + x, y0 + y);
            *p = Rgb(p.0.map(|c| (f32::from(c) * 0.88) as u8));
        }
    }
    canvas
}

#[test]
fn another_faint_logo_across_the_shading_of_a_textured_object_is_not_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(dir.path(), OpenOptions::writable()).unwrap();
    add(&mut index, "acme", &jpeg(&shaded_shot(0, 40), 92));
    // Another faint mark at the same place: the shading's edge through both cells
    // correlates whatever the mark; only the detail finer than the shading tells.
    let r = query(&index, &shaded_shot(1, 40));
    println!("other mark: {:?}\n{}", r.verdict, describe(&r));
    assert!(!is_flagged(&r), "another mark on the shaded shot was flagged:\n{}", describe(&r));
    let m = r.matches.iter().find(|m| m.entry.brand == "acme").expect("the shot is found");
    let d = m.parts.as_ref().and_then(|p| p.differed).expect("the mark's part is named");
    // The mark is at x 450–490, y 300–340 of 800 × 640.
    let centre = ((d.rect[0] + d.rect[2]) / 2.0 * 800.0, (d.rect[1] + d.rect[3]) / 2.0 * 640.0);
    assert!((430.0..510.0).contains(&centre.0) && (280.0..360.0).contains(&centre.1), "{d:?}");

    // The brand's own shot, recompressed and a little blurred, is still a copy.
    let copy = image::imageops::blur(&shaded_shot(0, 40), 0.8);
    let r = query(&index, &copy);
    println!("copy: {:?}\n{}", r.verdict, describe(&r));
    assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{}", describe(&r));
}
