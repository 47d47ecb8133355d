//! Hashing throughput per image size: file bytes → PDQ (+ 8 orientations) + pHash.
//! Images are real photographs (the test fixtures) scaled to each size and re-encoded.
//! Run: `cargo bench --bench hashing`.

use std::io::Cursor;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat};
use lookalike::hash::{decode, hash_decoded, hash_image, DecodeLimits};

fn photo(w: u32, h: u32) -> DynamicImage {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/astronaut.jpg");
    image::open(path).expect("fixture decodes").resize_exact(w, h, FilterType::Triangle)
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        ImageFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
            img.to_rgb8().write_with_encoder(enc).expect("jpeg encodes");
        }
        other => img.write_to(&mut Cursor::new(&mut out), other).expect("encodes"),
    }
    out
}

fn bench_hashing(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("hash_file");
    group.sample_size(20);
    let cases = [
        ("jpeg", 800, 800, ImageFormat::Jpeg),
        ("jpeg", 1000, 1000, ImageFormat::Jpeg),
        ("jpeg", 1500, 1500, ImageFormat::Jpeg),
        ("jpeg", 3000, 2000, ImageFormat::Jpeg),
        ("png", 1000, 1000, ImageFormat::Png),
        ("webp", 1000, 1000, ImageFormat::WebP),
    ];
    for (name, w, h, format) in cases {
        let bytes = encode(&photo(w, h), format);
        let id = format!("{name}_{w}x{h}");
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("decode+hash", &id), &bytes, |b, bytes| {
            b.iter(|| hash_image(bytes, &limits).expect("hashes"))
        });
        group.bench_with_input(BenchmarkId::new("decode", &id), &bytes, |b, bytes| {
            b.iter(|| decode(bytes, &limits).expect("decodes"))
        });
        let decoded = decode(&bytes, &limits).expect("decodes");
        group.bench_with_input(BenchmarkId::new("hash_only", &id), &decoded, |b, decoded| {
            b.iter(|| hash_decoded(decoded))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_hashing);
criterion_main!(benches);
