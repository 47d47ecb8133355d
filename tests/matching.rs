//! Match quality on counterfeiters' edits that a plain global hash misses: padding and
//! letterboxing (with mirroring on top), a product shot re-framed on its white field —
//! and the false-positive guard: different products in the same white layout.

mod common;

use common::{jpeg, photo};
use image::{imageops, Rgb, RgbImage};
use lookalike::hash::{hash_image, DecodeLimits};
use lookalike::index::{Index, OpenOptions};
use lookalike::matcher::{match_image, MatchResult, Query, Thresholds, Verdict};

fn add(index: &mut Index, name: &str, bytes: &[u8]) {
    common::add_authentic(index, "acme", name, bytes);
}

fn query(index: &Index, img: &RgbImage) -> MatchResult {
    match_image(index, &jpeg(img, 85), &DecodeLimits::default(), &Query::default()).unwrap()
}

/// `img` centred on a `w × h` canvas of `fill`.
fn on_canvas(img: &RgbImage, w: u32, h: u32, fill: [u8; 3]) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(w, h, Rgb(fill));
    imageops::overlay(&mut canvas, img, i64::from((w - img.width()) / 2), i64::from((h - img.height()) / 2));
    canvas
}

fn best<'a>(r: &'a MatchResult, name: &str) -> Option<&'a lookalike::matcher::Match> {
    r.matches.iter().find(|m| m.entry.external_id == name)
}

#[test]
fn letterboxed_and_mirrored_copy_matches_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(dir.path(), OpenOptions::writable()).unwrap();
    let source = photo(11, 640, 400);
    add(&mut index, "source", &jpeg(&source, 90));
    add(&mut index, "other", &jpeg(&photo(12, 640, 400), 90));

    // Padded to a black square, then mirrored: the whole-image hash is far away...
    let edited = imageops::flip_horizontal(&on_canvas(&source, 640, 640, [0, 0, 0]));
    let whole = hash_image(&jpeg(&edited, 85), &DecodeLimits::default()).unwrap();
    let stored = hash_image(&jpeg(&source, 90), &DecodeLimits::default()).unwrap();
    let plain = (0..8).map(|o| whole.pdq.dihedral[o].distance(&stored.pdq.hash())).min().unwrap();
    assert!(plain > 31, "the test needs an edit plain PDQ misses; it is {plain} bits away");

    // ...but its content, trimmed of the bars, is the stored photo mirrored.
    let r = query(&index, &edited);
    assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
    let m = &r.matches[0];
    assert_eq!(m.entry.external_id, "source");
    assert!(m.distance <= 16, "{m:?}");
    assert_eq!(m.query_view, 1);
    assert!(m.describe().contains("mirrored left to right"), "{}", m.describe());
    assert!(m.describe().contains("borders"), "{}", m.describe());
}

#[test]
fn product_shot_reframed_on_white_matches_and_a_different_product_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(dir.path(), OpenOptions::writable()).unwrap();
    let white = [255, 255, 255];
    let product_a = photo(21, 300, 420);
    let product_b = photo(22, 300, 420);
    // The brand's catalog shot: the product on a wide white field.
    let shot_a = on_canvas(&product_a, 900, 700, white);
    add(&mut index, "product-a", &jpeg(&shot_a, 90));

    // A seller crops the field away and pads to a square instead: found.
    let reframed = on_canvas(&imageops::resize(&product_a, 240, 336, imageops::FilterType::Triangle), 500, 500, white);
    let r = query(&index, &reframed);
    assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
    assert!(best(&r, "product-a").is_some_and(|m| m.distance <= 16), "{r:?}");

    // The tight crop of the product alone, too.
    let r = query(&index, &product_a);
    assert!(best(&r, "product-a").is_some_and(|m| m.distance <= 16), "{r:?}");

    // A different product in exactly the same layout: most pixels are the same white
    // field, yet it must not be called a copy.
    let shot_b = on_canvas(&product_b, 900, 700, white);
    let r = query(&index, &shot_b);
    assert!(
        matches!(r.verdict, Verdict::NoMatch | Verdict::Review),
        "a different product on the same white layout was flagged: {r:?}"
    );
    assert!(best(&r, "product-a").is_none_or(|m| m.distance > 31), "{r:?}");
}

#[test]
fn images_without_borders_keep_one_view() {
    let h = hash_image(&jpeg(&photo(31, 500, 400), 90), &DecodeLimits::default()).unwrap();
    assert!(h.trimmed.is_none(), "a photo with no plain border gets no trimmed view: {:?}", h.trimmed);
    assert!(h.extra_views().is_empty());
    let padded = on_canvas(&photo(31, 500, 400), 500, 600, [255, 255, 255]);
    let h = hash_image(&jpeg(&padded, 90), &DecodeLimits::default()).unwrap();
    let t = h.trimmed.expect("a padded photo gets a trimmed view");
    assert!(t.rect[1].abs_diff(100) <= 2 && t.rect[3].abs_diff(400) <= 4, "{:?}", t.rect);
}

fn fixture_image(name: &str) -> RgbImage {
    image::open(common::fixture(name)).unwrap().to_rgb8()
}

/// An index of the real fixture photos (the brand's catalog).
fn fixture_index(dir: &std::path::Path) -> Index {
    let mut index = Index::open(dir, OpenOptions::writable()).unwrap();
    for name in ["astronaut.jpg", "coffee.jpg", "chelsea.png", "camera_gray.png", "rocket_exif6.jpg"] {
        add(&mut index, name, &std::fs::read(common::fixture(name)).unwrap());
    }
    index
}

/// The best match of `r` is `name`, found by the local-feature check (the global hash
/// alone is beyond the review distance) and confirmed part by part; it is flagged when
/// its confidence reaches the flag level and the listing shows all the stored photo's
/// detail, and goes to review otherwise (a crop may have cut away the part that tells
/// whose product it is: see `parts::MIN_DETAIL_SHOWN`).
fn verified_as(r: &MatchResult, name: &str) -> lookalike::matcher::Match {
    let m = r.matches.first().unwrap_or_else(|| panic!("no match: {r:?}"));
    assert_eq!(m.entry.external_id, name, "{r:?}");
    assert!(m.verified.is_some(), "expected a verified match: {m:?}");
    assert!(m.parts.as_ref().is_some_and(|p| p.confirmed()), "the copy confirmed part by part: {m:?}");
    let c = m.confidence.expect("an image query's match has a confidence");
    assert!(c >= Thresholds::DEFAULT_REVIEW_CONFIDENCE, "{m:?}");
    let whole = m.parts.as_ref().is_some_and(|p| p.shows_all_detail());
    let expected =
        if c >= Thresholds::DEFAULT_FLAG_CONFIDENCE && whole { Verdict::BrandPhotoReused } else { Verdict::Review };
    assert_eq!(r.verdict, expected, "{r:?}");
    m.clone()
}

#[test]
fn hard_crop_and_small_rotation_are_found_by_local_features() {
    let dir = tempfile::tempdir().unwrap();
    let index = fixture_index(dir.path());
    let coffee = fixture_image("coffee.jpg");
    let (w, h) = coffee.dimensions();

    // Off-centre crop keeping 70% of each side: no global hash survives it.
    let crop = imageops::crop_imm(&coffee, w * 28 / 100, h * 4 / 100, w * 70 / 100, h * 70 / 100).to_image();
    let plain = hash_image(&jpeg(&crop, 85), &DecodeLimits::default()).unwrap();
    let stored = hash_image(&std::fs::read(common::fixture("coffee.jpg")).unwrap(), &DecodeLimits::default()).unwrap();
    let d = (0..8).map(|o| plain.pdq.dihedral[o].distance(&stored.pdq.hash())).min().unwrap();
    assert!(d > 45, "the test needs an edit PDQ misses; it is {d} bits away");
    let m = verified_as(&query(&index, &crop), "coffee.jpg");
    assert!(m.describe().contains("crop"), "{}", m.describe());

    // Turned 7° (the corners filled with black) and mirrored.
    let turned = rotated(&imageops::flip_horizontal(&coffee), 7.0);
    let m = verified_as(&query(&index, &turned), "coffee.jpg");
    let v = m.verified.as_ref().unwrap();
    assert!(v.mirrored, "{v:?}");
    assert!((v.rotation_deg.abs() - 7.0).abs() < 3.0, "{v:?}");
}

#[test]
fn screenshot_and_collage_are_found_by_local_features() {
    let dir = tempfile::tempdir().unwrap();
    let index = fixture_index(dir.path());
    let astronaut = fixture_image("astronaut.jpg");

    // A screenshot: the photo at 60% of a 1000×800 app frame with a header bar and text.
    let mut frame = RgbImage::from_pixel(1000, 800, Rgb([245, 245, 245]));
    for y in 0..90 {
        for x in 0..1000 {
            frame.put_pixel(x, y, Rgb([30, 60, 140]));
        }
    }
    let small = imageops::resize(&astronaut, 480, 480, imageops::FilterType::Triangle);
    imageops::overlay(&mut frame, &small, 60, 150);
    for (i, x) in (600..960).step_by(12).enumerate() {
        let y0 = 200 + (i % 5) as u32 * 40;
        for y in y0..y0 + 14 {
            frame.put_pixel(x, y, Rgb([20, 20, 20]));
        }
    }
    verified_as(&query(&index, &frame), "astronaut.jpg");

    // A 2×2 collage of the astronaut with three photos that are not in the index.
    let tile = |img: &RgbImage| imageops::resize(img, 400, 400, imageops::FilterType::Triangle);
    let mut collage = RgbImage::new(800, 800);
    imageops::overlay(&mut collage, &tile(&photo(41, 400, 400)), 0, 0);
    imageops::overlay(&mut collage, &tile(&photo(42, 400, 400)), 400, 0);
    imageops::overlay(&mut collage, &tile(&photo(43, 400, 400)), 0, 400);
    imageops::overlay(&mut collage, &tile(&astronaut), 400, 400);
    let m = verified_as(&query(&index, &collage), "astronaut.jpg");
    let v = m.verified.as_ref().unwrap();
    assert!(v.scale > 1.5, "the photo is a quarter of the collage: {v:?}");
}

#[test]
fn unrelated_photos_are_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    let index = fixture_index(dir.path());
    // Photos of other things, and the fixtures' own kind of content (grey camera-man,
    // blurred galaxies): nothing may be flagged or verified.
    let mut others: Vec<RgbImage> = (50..62).map(|s| photo(s, 640, 480)).collect();
    others.push(fixture_image("hubble_deep_field_blur.jpg"));
    others.push(fixture_image("retina_rgba.png"));
    for img in &others {
        let r = query(&index, img);
        assert!(r.matches.iter().all(|m| m.verified.is_none()), "{r:?}");
        assert_ne!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
    }
}

/// A catalog-style product shot: a package with a printed pattern (`body`) on a white
/// 800 × 800 field, with `logo` (a crop of a real photo) in its middle.
fn product_shot(body: &RgbImage, logo: &RgbImage) -> RgbImage {
    let mut shot = RgbImage::from_pixel(800, 800, Rgb([255, 255, 255]));
    imageops::overlay(&mut shot, &imageops::resize(body, 340, 500, imageops::FilterType::Triangle), 230, 180);
    imageops::overlay(&mut shot, &imageops::resize(logo, 160, 160, imageops::FilterType::Triangle), 320, 350);
    shot
}

/// A red price sticker with white "lettering" (bars of glyph width) over `img` at (x, y).
fn with_sticker(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    let mut out = img.clone();
    for yy in y..y + h {
        for xx in x..x + w {
            let glyph =
                (xx - x) % 22 < 12 && (yy - y) > h / 4 && (yy - y) < h * 3 / 4 && (xx - x) > 10 && (xx - x) < w - 10;
            out.put_pixel(xx, yy, if glyph { Rgb([255, 255, 255]) } else { Rgb([200, 20, 30]) });
        }
    }
    out
}

#[test]
fn a_price_sticker_on_a_copy_is_found_but_another_logo_on_its_layout_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(dir.path(), OpenOptions::writable()).unwrap();
    for name in ["chelsea.png", "rocket_exif6.jpg"] {
        add(&mut index, name, &std::fs::read(common::fixture(name)).unwrap());
    }
    // The package and the logos are photos that are not in the index.
    let body = fixture_image("coffee.jpg");
    let logo_a = imageops::crop_imm(&fixture_image("astronaut.jpg"), 120, 20, 260, 260).to_image();
    let logo_b = imageops::crop_imm(&fixture_image("camera_gray.png"), 150, 40, 260, 260).to_image();
    let shot_a = product_shot(&body, &logo_a);
    add(&mut index, "shot-a", &jpeg(&shot_a, 90));
    let stored = hash_image(&jpeg(&shot_a, 90), &DecodeLimits::default()).unwrap();
    let pdq_distance = |img: &RgbImage| {
        let h = hash_image(&jpeg(img, 85), &DecodeLimits::default()).unwrap();
        (0..8).map(|o| h.pdq.dihedral[o].distance(&stored.pdq.hash())).min().unwrap()
    };

    // The brand's exact shot with a seller's price stickers on the white field: the
    // global hash moves past the flag distance; the corners of the product remain, and
    // so does the package's outline, which frames the same picture as the stored shot's
    // trimmed view (identical hashes: the corners are not needed).
    let stickered = with_sticker(&with_sticker(&shot_a, 30, 30, 740, 130), 400, 700, 370, 80);
    let d = pdq_distance(&stickered);
    assert!(d > 31, "the test needs a sticker that moves PDQ past the flag distance; it is {d} bits away");
    let r = query(&index, &stickered);
    let m = r.matches.first().unwrap_or_else(|| panic!("no match: {r:?}"));
    assert_eq!(m.entry.external_id, "shot-a", "{r:?}");
    assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
    match &m.verified {
        Some(v) => assert!(v.stored_coverage > 0.8 && (v.scale - 1.0).abs() < 0.1, "the same frame: {v:?}"),
        None => assert!(m.query_view == lookalike::matcher::FRAMED_VIEW && m.distance == 0, "{m:?}"),
    }

    // A price banner across the middle, over part of the logo: compared part by part,
    // the logo's place shows something else, which pixels cannot tell from another
    // logo: it goes to review (never flagged), with the part named, inside the banner.
    let bannered = with_sticker(&with_sticker(&shot_a, 30, 30, 740, 130), 0, 430, 800, 130);
    let r = query(&index, &bannered);
    assert_eq!(r.verdict, Verdict::Review, "{r:?}");
    let m = best(&r, "shot-a").unwrap_or_else(|| panic!("{r:?}"));
    let d = m.parts.as_ref().and_then(|p| p.differed).unwrap_or_else(|| panic!("a part named: {m:?}"));
    assert!(d.rect[1] * 800.0 >= 400.0 && d.rect[3] * 800.0 <= 590.0, "within the banner (y 430–560): {d:?}");

    // Another logo in exactly the same layout: its frame lines up just as well, but the
    // part of the stored shot where its corners crowd (the logo) is gone.
    let sibling = product_shot(&body, &logo_b);
    let r = query(&index, &sibling);
    assert!(r.matches.iter().all(|m| m.verified.is_none()), "{r:?}");
    // Even with a flag distance loose enough for its hash (real siblings are often 14–30
    // bits apart), the replaced logo sends it to review.
    let d = pdq_distance(&sibling);
    assert!(d <= 60, "{d} bits");
    let loose = Query { thresholds: Thresholds { flag: 60, review: 70, ..Thresholds::default() }, ..Query::default() };
    let r = match_image(&index, &jpeg(&sibling, 85), &DecodeLimits::default(), &loose).unwrap();
    let m = best(&r, "shot-a").unwrap_or_else(|| panic!("{r:?}"));
    assert!(m.replaced.is_some_and(|lost| lost > 0.15), "{m:?}");
    assert_eq!(r.verdict, Verdict::Review, "{r:?}");
    assert!(m.describe().contains("replaced"), "{}", m.describe());
    // ...and with a sticker too, so that the hash alone cannot flag it either.
    let r = query(&index, &with_sticker(&with_sticker(&sibling, 30, 30, 740, 130), 400, 700, 370, 80));
    assert!(r.matches.iter().all(|m| m.verified.is_none()), "{r:?}");
    assert_ne!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
}

/// `img` turned by `degrees` about its centre, same canvas size, black corners
/// (nearest-neighbour sampling: enough for a test edit).
fn rotated(img: &RgbImage, degrees: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (s, c) = degrees.to_radians().sin_cos();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let (sx, sy) = (c * dx + s * dy + cx, -s * dx + c * dy + cy);
        if sx >= 0.0 && sy >= 0.0 && (sx as u32) < w && (sy as u32) < h {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            Rgb([0, 0, 0])
        }
    })
}

/// The low frequencies of `a` (all a global hash sees) with the high frequencies of
/// `b` (where its corners are), both the same size.
fn hybrid(a: &RgbImage, b: &RgbImage, sigma: f32) -> RgbImage {
    let (low_a, low_b) = (imageops::blur(a, sigma), imageops::blur(b, sigma));
    RgbImage::from_fn(a.width(), a.height(), |x, y| {
        let at = |img: &RgbImage, c: usize| f32::from(img.get_pixel(x, y)[c]);
        Rgb(std::array::from_fn(|c| (at(&low_a, c) + at(b, c) - at(&low_b, c)).round().clamp(0.0, 255.0) as u8))
    })
}

#[test]
fn another_logo_within_the_flag_distance_of_a_stored_shot_goes_to_review() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = fixture_index(dir.path());
    // A dark package with a printed band at the top: its logo holds many of its corners.
    let mut body = RgbImage::from_pixel(340, 500, Rgb([40, 40, 44]));
    let band = imageops::crop_imm(&fixture_image("coffee.jpg"), 0, 0, 340, 90).to_image();
    imageops::overlay(&mut body, &band, 0, 20);
    let square = |img: &RgbImage, x, y| {
        imageops::resize(&imageops::crop_imm(img, x, y, 260, 260).to_image(), 160, 160, imageops::FilterType::Triangle)
    };
    let logo_a = square(&fixture_image("astronaut.jpg"), 120, 20);
    let shot_a = product_shot(&body, &logo_a);
    add(&mut index, "shot-a", &jpeg(&shot_a, 90));
    let stored = hash_image(&jpeg(&shot_a, 90), &DecodeLimits::default()).unwrap();

    // Another logo that a global hash cannot tell from the stored one (a thin or faint
    // logo on a large package does this to PDQ: tools/eval's report split has one 8
    // bits away): it keeps the stored logo's coarse shading, with other fine detail.
    let logo_b = hybrid(&logo_a, &square(&fixture_image("camera_gray.png"), 150, 40), 10.0);
    let sibling = product_shot(&body, &logo_b);
    let h = hash_image(&jpeg(&sibling, 85), &DecodeLimits::default()).unwrap();
    let d = h.pdq.hash().distance(&stored.pdq.hash());
    assert!(d > 0 && d <= 10, "the test needs a sibling 1–10 bits away; it is {d} bits away");
    let r = query(&index, &sibling);
    let m = best(&r, "shot-a").unwrap_or_else(|| panic!("{r:?}"));
    assert!(m.verified.is_none() && m.replaced.is_some(), "{m:?}");
    assert_eq!(r.verdict, Verdict::Review, "{r:?}");

    // The brand's own shot, re-encoded, is still flagged, and so is a blurred copy.
    for copy in [shot_a.clone(), imageops::blur(&shot_a, 1.0)] {
        let r = query(&index, &copy);
        let m = best(&r, "shot-a").unwrap_or_else(|| panic!("{r:?}"));
        assert!(m.replaced.is_none(), "{m:?}");
        assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
    }
}

#[test]
fn a_mirrored_copy_of_a_product_shot_with_a_symmetric_band_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = fixture_index(dir.path());
    // A package whose printed band is symmetric, with a logo that is not.
    let mut body = RgbImage::from_pixel(340, 500, Rgb([200, 170, 120]));
    let half = imageops::crop_imm(&fixture_image("coffee.jpg"), 0, 0, 170, 90).to_image();
    imageops::overlay(&mut body, &half, 0, 20);
    imageops::overlay(&mut body, &imageops::flip_horizontal(&half), 170, 20);
    let logo = imageops::crop_imm(&fixture_image("astronaut.jpg"), 120, 20, 260, 260).to_image();
    let shot = product_shot(&body, &logo);
    add(&mut index, "shot", &jpeg(&shot, 90));
    // Mirrored, the band still fits the stored shot unmirrored, where the logo is not
    // what was stored; the copy must not be taken for another logo on the layout.
    let r = query(&index, &imageops::flip_horizontal(&shot));
    let m = best(&r, "shot").unwrap_or_else(|| panic!("{r:?}"));
    assert!(m.replaced.is_none(), "{m:?}");
    assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
}

#[test]
fn a_crop_of_a_product_shot_is_found_though_another_catalog_shot_shows_the_same_package() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(dir.path(), OpenOptions::writable()).unwrap();
    add(&mut index, "rocket", &std::fs::read(common::fixture("rocket_exif6.jpg")).unwrap());
    // Two catalog shots of one package, placed differently on the white field: every
    // corner of one has an exact twin in the other, but not at the same place.
    let logo = imageops::crop_imm(&fixture_image("astronaut.jpg"), 120, 20, 260, 260).to_image();
    let shot = product_shot(&RgbImage::from_pixel(340, 500, Rgb([90, 60, 40])), &logo);
    let package = imageops::crop_imm(&shot, 230, 180, 340, 500).to_image();
    add(&mut index, "shot", &jpeg(&shot, 90));
    for (name, x, y) in [("other", 440, 280), ("pair", 30, 150)] {
        let mut other = RgbImage::from_pixel(800, 800, Rgb([255, 255, 255]));
        imageops::overlay(&mut other, &package, x, y);
        if name == "pair" {
            imageops::overlay(&mut other, &package, x + 400, y);
        }
        add(&mut index, name, &jpeg(&other, 90));
    }
    // A crop of the first around its logo: no global hash finds it. It leaves out
    // detail of the stored shot, so it goes to review rather than being flagged.
    let listing = imageops::crop_imm(&shot, 250, 250, 330, 400).to_image();
    let r = query(&index, &listing);
    let m = r.matches.first().unwrap_or_else(|| panic!("no match: {r:?}"));
    assert!(["shot", "other", "pair"].contains(&m.entry.external_id.as_str()), "{r:?}");
    assert_eq!(r.verdict, Verdict::Review, "{r:?}");
    assert!(m.parts.as_ref().is_some_and(|p| p.confirmed() && !p.shows_all_detail()), "{m:?}");
    let v = m.verified.as_ref().unwrap_or_else(|| panic!("{m:?}"));
    assert!(v.distinct >= lookalike::matcher::MIN_OWN_IN_PLACE_INTACT, "{v:?}");
}

#[test]
fn a_collage_with_gutters_is_matched_tile_by_tile() {
    let dir = tempfile::tempdir().unwrap();
    let index = fixture_index(dir.path());
    // A 2×2 grid on white with 8-px gutters: the brand's photo in one cell, three
    // photos that are not in the index in the others.
    let cell = |img: &RgbImage| imageops::resize(img, 396, 396, imageops::FilterType::Triangle);
    let mut collage = RgbImage::from_pixel(800, 800, Rgb([255, 255, 255]));
    imageops::overlay(&mut collage, &cell(&photo(41, 400, 400)), 0, 0);
    imageops::overlay(&mut collage, &cell(&photo(42, 400, 400)), 404, 0);
    imageops::overlay(&mut collage, &cell(&fixture_image("astronaut.jpg")), 0, 404);
    imageops::overlay(&mut collage, &cell(&photo(43, 400, 400)), 404, 404);
    let r = query(&index, &collage);
    let m = best(&r, "astronaut.jpg").unwrap_or_else(|| panic!("{r:?}"));
    // The hash of its tile finds it (the whole collage's hash is nowhere near).
    assert_eq!(m.query_view, lookalike::matcher::TILE_VIEW, "{m:?}");
    assert!(m.distance <= Thresholds::DEFAULT_REVIEW, "{m:?}");
    assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
    assert!(m.describe().contains("collage"), "{}", m.describe());
}

/// A marketplace page around `picture` placed at `at`: a header bar, a menu of "words"
/// (short bars) down its left side, rows of words and buttons under the picture.
fn page_around(picture: &RgbImage, at: (u32, u32), size: (u32, u32), dark: bool) -> RgbImage {
    let (page, ink) = if dark { ([24, 24, 28], [230, 230, 230]) } else { ([255, 255, 255], [30, 30, 30]) };
    let mut p = RgbImage::from_pixel(size.0, size.1, Rgb(page));
    let mut fill = |x0: u32, y0: u32, w: u32, h: u32, c: [u8; 3]| {
        for y in y0..(y0 + h).min(size.1) {
            for x in x0..(x0 + w).min(size.0) {
                p.put_pixel(x, y, Rgb(c));
            }
        }
    };
    fill(0, 0, size.0, 30, [20, 50, 160]);
    for (i, y) in (at.1..at.1 + picture.height()).step_by(30).enumerate() {
        fill(6, y, 30 + (i as u32 * 7) % 20, 11, ink);
    }
    for (i, y) in (at.1 + picture.height() + 12..size.1 - 20).step_by(28).enumerate() {
        let color = if i % 2 == 0 { [250, 180, 0] } else { ink };
        for x in (10..size.0 - 60).step_by(45 + i % 3 * 6) {
            fill(x, y, 30, 13, color);
        }
    }
    imageops::overlay(&mut p, picture, i64::from(at.0), i64::from(at.1));
    p
}

#[test]
fn a_screenshot_is_matched_by_the_picture_framed_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let index = fixture_index(dir.path());
    let astronaut = imageops::resize(&fixture_image("astronaut.jpg"), 500, 500, imageops::FilterType::Triangle);
    for dark in [true, false] {
        let listing = page_around(&astronaut, (90, 120), (680, 900), dark);
        let analysis = lookalike::hash::analyze(&jpeg(&listing, 85), &DecodeLimits::default()).unwrap();
        assert!(!analysis.hashes.framed.is_empty(), "dark {dark}: no framed picture found");
        let r = query(&index, &listing);
        let m = best(&r, "astronaut.jpg").unwrap_or_else(|| panic!("dark {dark}: {r:?}"));
        // The picture's own hash finds it: the page's is far away.
        assert_eq!(m.query_view, lookalike::matcher::FRAMED_VIEW, "{m:?}");
        assert!(m.distance <= Thresholds::DEFAULT_FLAG, "dark {dark}: {m:?}");
        assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
        // Said in words: by the hash ("framed inside") or by the corners ("a screenshot").
        let said = m.describe();
        assert!(said.contains("framed") || said.contains("screenshot"), "{said}");
    }
    // The same page around a photo that is not in the catalog matches nothing close.
    let other = page_around(&photo(44, 500, 500), (90, 120), (680, 900), true);
    let r = query(&index, &other);
    assert!(r.matches.iter().all(|m| m.distance > Thresholds::DEFAULT_REVIEW && m.verified.is_none()), "{r:?}");
}

/// `img` turned by `degrees` (counter-clockwise) on a canvas grown to hold all of it,
/// bilinear, the corners filled with `fill` — what an editor's "rotate" does.
fn turned_on_canvas(img: &RgbImage, degrees: f32, fill: [u8; 3]) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (s, c) = degrees.to_radians().sin_cos();
    let (cw, ch) = ((w * c.abs() + h * s.abs()).ceil() as u32, (w * s.abs() + h * c.abs()).ceil() as u32);
    let (icx, icy, ocx, ocy) = (w / 2.0, h / 2.0, cw as f32 / 2.0, ch as f32 / 2.0);
    RgbImage::from_fn(cw, ch, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - ocx, y as f32 + 0.5 - ocy);
        // Counter-clockwise on screen (y down): the source is turned the other way.
        let (sx, sy) = (c * dx - s * dy + icx - 0.5, s * dx + c * dy + icy - 0.5);
        if sx < 0.0 || sy < 0.0 || sx > w - 1.0 || sy > h - 1.0 {
            return Rgb(fill);
        }
        let (x0, y0) = (sx as u32, sy as u32);
        let (x1, y1) = ((x0 + 1).min(img.width() - 1), (y0 + 1).min(img.height() - 1));
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let px = |x, y, k: usize| f32::from(img.get_pixel(x, y)[k]);
        Rgb(std::array::from_fn(|k| {
            let top = px(x0, y0, k) * (1.0 - fx) + px(x1, y0, k) * fx;
            let bottom = px(x0, y1, k) * (1.0 - fx) + px(x1, y1, k) * fx;
            (top * (1.0 - fy) + bottom * fy).round() as u8
        }))
    })
}

#[test]
fn a_photo_turned_a_few_degrees_is_matched_once_turned_upright() {
    let dir = tempfile::tempdir().unwrap();
    let index = fixture_index(dir.path());
    let stored = hash_image(&std::fs::read(common::fixture("coffee.jpg")).unwrap(), &DecodeLimits::default())
        .unwrap()
        .pdq
        .hash();
    let coffee = fixture_image("coffee.jpg");
    for (degrees, fill) in [(7.0, [0, 0, 0]), (-5.0, [255, 255, 255])] {
        let listing = jpeg(&turned_on_canvas(&coffee, degrees, fill), 85);
        let analysis = lookalike::hash::analyze(&listing, &DecodeLimits::default()).unwrap();
        let whole = (0..8).map(|o| analysis.hashes.pdq.dihedral[o].distance(&stored)).min().unwrap();
        assert!(whole > 45, "the test needs a turn PDQ misses; it is {whole} bits away");
        // Turned back upright and trimmed of the fill, the photo's hash is close again.
        let upright = analysis.hashes.upright.iter().flat_map(|v| v.pdq.dihedral).map(|c| c.distance(&stored)).min();
        assert!(upright.is_some_and(|d| d <= Thresholds::DEFAULT_FLAG), "{degrees}°: upright view at {upright:?} bits");
        let r = match_image(&index, &listing, &DecodeLimits::default(), &Query::default()).unwrap();
        let m = best(&r, "coffee.jpg").unwrap_or_else(|| panic!("{r:?}"));
        assert_eq!(r.verdict, Verdict::BrandPhotoReused, "{r:?}");
        assert_eq!(m.query_view, lookalike::matcher::UPRIGHT_VIEW, "{m:?}");
    }
    // An upright photo shows no turn: no extra view.
    let plain = lookalike::hash::analyze(&jpeg(&coffee, 85), &DecodeLimits::default()).unwrap();
    assert!(plain.hashes.upright.is_empty());
}
