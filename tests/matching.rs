//! Match quality on counterfeiters' edits that a plain global hash misses: padding and
//! letterboxing (with mirroring on top), a product shot re-framed on its white field —
//! and the false-positive guard: different products in the same white layout.

mod common;

use common::{jpeg, photo};
use image::{imageops, Rgb, RgbImage};
use lookalike::hash::{hash_image, DecodeLimits};
use lookalike::index::{Index, Label, NewEntry, OpenOptions};
use lookalike::matcher::{match_image, MatchResult, Query, Verdict};

fn add(index: &mut Index, name: &str, bytes: &[u8]) {
    let h = hash_image(bytes, &DecodeLimits::default()).unwrap();
    let entry = NewEntry {
        brand: "acme".into(),
        label: Label::Authentic,
        external_id: name.into(),
        source: name.into(),
        sha256: lookalike::hash::sha256(bytes),
        pdq: h.pdq.hash(),
        quality: Some(h.pdq.quality),
        phash: Some(h.phash),
        note: None,
        thumbnail: None,
        views: h.extra_views(),
    };
    index.add(&[entry]).unwrap();
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
