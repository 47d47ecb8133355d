//! Fuzz regressions, replayed by plain `cargo test`.
//!
//! Every file in `tests/fuzz-regressions/` (crashes saved by `tools/fuzz.sh`, and the
//! hand-made nasty seeds written by `tools/fuzz_seeds.py`) goes through both fuzz
//! harnesses: decode + hash with the fuzzer's limits, and decoding as each gRPC request
//! with the server's checks. Each must return a clean `Ok` or `Err`: no panic, no hang.
//! The harness is `fuzz/src/lib.rs` itself, so an input is replayed through exactly the
//! code that found it. Built-in cases keep the test meaningful without the directory.

mod common;
#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::png_declaring;
use lookalike::grpc::pb;
use lookalike::hash::{ImageError, ImageHashes};
use prost::Message;

/// Far above what any input takes in a debug build; a hang fails instead of blocking.
const PER_INPUT: Duration = Duration::from_secs(120);

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions")
}

fn saved_inputs() -> Vec<(String, Vec<u8>)> {
    let Ok(dir) = std::fs::read_dir(regressions_dir()) else {
        return Vec::new();
    };
    let mut inputs: Vec<(String, Vec<u8>)> = dir
        .map(|entry| entry.expect("listing tests/fuzz-regressions").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {name}: {e}"));
            (name, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

fn saved(name: &str) -> Option<Vec<u8>> {
    std::fs::read(regressions_dir().join(name)).ok()
}

type Replay = (Result<ImageHashes, ImageError>, Vec<(&'static str, harness::Outcome)>);

/// Both harnesses on `bytes`, on a thread of its own: a panic or a run over
/// [`PER_INPUT`] is returned as an error naming what happened.
fn replay(bytes: Vec<u8>) -> Result<Replay, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let run = std::panic::catch_unwind(|| (harness::decode_hash(&bytes), harness::grpc_request(&bytes)));
        let _ = tx.send(run.map_err(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("panicked: {message}")
        }));
    });
    match rx.recv_timeout(PER_INPUT) {
        Ok(run) => run,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("still running after {PER_INPUT:?}")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the replay thread died".into()),
    }
}

fn replay_ok(what: &str, bytes: Vec<u8>) -> Replay {
    replay(bytes).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The outcome for message type `kind`, which the bytes must decode as.
fn outcome<'a>(outcomes: &'a [(&'static str, harness::Outcome)], kind: &str) -> &'a harness::Outcome {
    &outcomes.iter().find(|(k, _)| *k == kind).unwrap_or_else(|| panic!("did not decode as a {kind}: {outcomes:?}")).1
}

fn assert_refused(outcome: &harness::Outcome, needle: &str) {
    match outcome {
        Err(message) => assert!(message.contains(needle), "refused, but for another reason: {message}"),
        Ok(()) => panic!("accepted; expected a refusal mentioning {needle:?}"),
    }
}

#[test]
fn every_saved_input_returns_cleanly_through_both_harnesses() {
    let inputs = saved_inputs();
    let mut failures = Vec::new();
    for (name, bytes) in &inputs {
        let started = Instant::now();
        match replay(bytes.clone()) {
            Ok((image, requests)) => {
                let requests: Vec<String> = requests.iter().map(|(kind, o)| format!("{kind} {o:?}")).collect();
                let image = image.map(|h| format!("{} {}×{}", h.format, h.width, h.height));
                eprintln!("{name} ({:.2?}): image {image:?}; requests {requests:?}", started.elapsed());
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} saved inputs failed:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

const PDQ: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

fn match_image(image: Vec<u8>, k: Option<u32>) -> Vec<u8> {
    pb::MatchRequest { query: Some(pb::match_request::Query::Image(image)), k, ..Default::default() }.encode_to_vec()
}

fn add_image(image: Vec<u8>) -> Vec<u8> {
    pb::AddImageRequest {
        content: Some(pb::add_image_request::Content::Image(image)),
        brand: "acme".into(),
        label: pb::Label::Authentic as i32,
        external_id: "sku-1".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn built_in_cases_need_no_saved_files() {
    let (image, requests) = replay_ok("zero bytes", Vec::new());
    assert_eq!(image, Err(ImageError::Empty));
    assert_refused(outcome(&requests, "MatchRequest"), "set either image or hash");
    assert_refused(outcome(&requests, "GetRequest"), "set either id or external");

    // A decompression bomb is refused from its header, as an image and inside requests.
    let bomb = png_declaring(60_000, 60_000);
    let (image, _) = replay_ok("PNG bomb", bomb.clone());
    assert!(matches!(image, Err(ImageError::TooManyPixels { width: 60_000, height: 60_000, .. })), "{image:?}");
    let (_, requests) = replay_ok("MatchRequest with a PNG bomb", match_image(bomb.clone(), None));
    assert_refused(outcome(&requests, "MatchRequest"), "over the limit of 4000000 pixels");
    let (_, requests) = replay_ok("AddImageRequest with a PNG bomb", add_image(bomb));
    assert_refused(outcome(&requests, "AddImageRequest"), "over the limit of 4000000 pixels");

    let tiny = fixture("coffee_tiny.png");
    let (_, requests) = replay_ok("MatchRequest with k = u32::MAX", match_image(tiny.clone(), Some(u32::MAX)));
    assert_refused(outcome(&requests, "MatchRequest"), "k must be 1-1000, got 4294967295");
    let (_, requests) = replay_ok("MatchRequest with k = 0", match_image(tiny.clone(), Some(0)));
    assert_refused(outcome(&requests, "MatchRequest"), "k must be 1-1000, got 0");
    let (_, requests) = replay_ok("MatchRequest with k = 1000", match_image(tiny.clone(), Some(1000)));
    assert_eq!(outcome(&requests, "MatchRequest"), &Ok(()));
    let (_, requests) = replay_ok("AddImageRequest with a real image", add_image(tiny));
    assert_eq!(outcome(&requests, "AddImageRequest"), &Ok(()));

    let hash = |pdq: &str, quality| pb::MatchRequest {
        query: Some(pb::match_request::Query::Hash(pb::PrecomputedHash { pdq: pdq.into(), quality })),
        ..Default::default()
    };
    let (_, requests) = replay_ok("a precomputed hash", hash(PDQ, Some(100)).encode_to_vec());
    assert_eq!(outcome(&requests, "MatchRequest"), &Ok(()));
    let (_, requests) = replay_ok("quality 101", hash(PDQ, Some(101)).encode_to_vec());
    assert_refused(outcome(&requests, "MatchRequest"), "hash.quality must be 0-100");
    // 64 bytes, 32 characters: the length check counts bytes, slicing must not split one.
    let (_, requests) = replay_ok("a multibyte PDQ", hash(&"é".repeat(32), None).encode_to_vec());
    assert_refused(outcome(&requests, "MatchRequest"), "not a PDQ hash");

    // Not protobuf: a field length of 4 GiB must not be believed.
    let (_, requests) = replay_ok("a 4 GiB length", b"\x0a\xff\xff\xff\xff\x0f\x00".to_vec());
    assert!(requests.is_empty(), "{requests:?}");
}

/// Every fixture cut short and with bytes flipped: refused or hashed, never a panic.
#[test]
fn damaged_fixtures_return_cleanly() {
    let names = ["astronaut.jpg", "coffee_tiny.png", "hubble_deep_field_blur.jpg", "rocket_exif6.jpg", "chelsea.png"];
    for name in names {
        let bytes = fixture(name);
        let (image, _) = replay_ok(name, bytes.clone());
        assert!(image.is_ok(), "{name}: {image:?}");
        for cut in [1, 8, 64, bytes.len() / 3, bytes.len() - 1] {
            let _ = replay_ok(&format!("{name} cut to {cut} bytes"), bytes[..cut].to_vec());
            let mut with_end = bytes[..cut].to_vec();
            with_end.extend_from_slice(&[0xFF, 0xD9]);
            let _ = replay_ok(&format!("{name} cut to {cut} bytes, then FF D9"), with_end);
        }
        let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ bytes.len() as u64;
        for round in 0..8 {
            let mut flipped = bytes.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = 8 + (state as usize) % (flipped.len() - 8); // keep the signature
                flipped[at] ^= (state >> 56) as u8 | 1;
            }
            let _ = replay_ok(&format!("{name} with flipped bytes, round {round}"), flipped);
        }
    }
}

enum Expect {
    /// The image is refused from its header.
    TooManyPixels,
    /// The image is refused as corrupt.
    Corrupt,
    /// The image is decoded and hashed, to this size.
    Hashed(u32, u32),
    /// The bytes decode as this request, which is refused with a message containing this.
    Refused(&'static str, &'static str),
    /// The bytes decode as this request, which is accepted (its image hashed).
    Accepted(&'static str),
}

/// What the hand-made seeds of `tools/fuzz_seeds.py` must give (each checked when its
/// file is present).
const EXPECTED: &[(&str, Expect)] = &[
    ("decode_hash-png-60000x60000", Expect::TooManyPixels),
    ("decode_hash-png-1x4294967295", Expect::TooManyPixels),
    ("decode_hash-png-2000x2000-at-limit", Expect::Hashed(2000, 2000)),
    ("decode_hash-png-2001x2000-over-limit", Expect::TooManyPixels),
    ("decode_hash-gif-screen-65535x65535", Expect::TooManyPixels),
    ("decode_hash-jpeg-sof-65500x65500", Expect::TooManyPixels),
    ("decode_hash-jpeg-truncated", Expect::Corrupt),
    ("decode_hash-gif-frame-beyond-screen", Expect::Corrupt),
    ("decode_hash-tiff-absurd-strip-count", Expect::Corrupt),
    ("decode_hash-tiff-strip-bytes-4gib", Expect::Corrupt),
    ("decode_hash-tiff-rows-per-strip-zero", Expect::Corrupt),
    ("decode_hash-bmp-100000x-100000", Expect::Corrupt),
    ("decode_hash-webp-vp8x-16777216x16777216", Expect::Corrupt),
    ("decode_hash-valid-jpeg-24x16-progressive-exif6", Expect::Hashed(16, 24)),
    ("decode_hash-valid-gif-24x16-2-frames", Expect::Hashed(24, 16)),
    ("decode_hash-valid-bmp-24x16", Expect::Hashed(24, 16)),
    ("decode_hash-valid-tiff-24x16-lzw", Expect::Hashed(24, 16)),
    ("decode_hash-valid-webp-24x16-lossy", Expect::Hashed(24, 16)),
    ("decode_hash-valid-webp-24x16-lossless-alpha", Expect::Hashed(24, 16)),
    ("grpc_request-match-huge-k", Expect::Refused("MatchRequest", "k must be 1-1000, got 4294967295")),
    ("grpc_request-match-k-zero", Expect::Refused("MatchRequest", "k must be 1-1000, got 0")),
    ("grpc_request-match-k-1000-distances-128", Expect::Accepted("MatchRequest")),
    ("grpc_request-match-distance-u32-max", Expect::Refused("MatchRequest", "flag_distance must be 0-128")),
    ("grpc_request-match-flag-above-review", Expect::Refused("MatchRequest", "flag must be ≤ review")),
    ("grpc_request-match-pdq-multibyte", Expect::Refused("MatchRequest", "not a PDQ hash")),
    ("grpc_request-match-png-bomb", Expect::Refused("MatchRequest", "over the limit of 4000000 pixels")),
    ("grpc_request-match-gif-huge-screen", Expect::Refused("MatchRequest", "over the limit of 4000000 pixels")),
    ("grpc_request-match-request-id-600-bytes", Expect::Refused("MatchRequest", "over the limit of 500")),
    ("grpc_request-match-valid-gif", Expect::Accepted("MatchRequest")),
    ("grpc_request-add-png-bomb", Expect::Refused("AddImageRequest", "over the limit of 4000000 pixels")),
    ("grpc_request-add-valid-tiny-png", Expect::Accepted("AddImageRequest")),
    ("grpc_request-add-valid-webp", Expect::Accepted("AddImageRequest")),
    ("grpc_request-add-brand-control-chars", Expect::Refused("AddImageRequest", "control characters")),
    ("grpc_request-add-label-unknown", Expect::Refused("AddImageRequest", "unknown value 7")),
    ("grpc_request-delete-external-blank", Expect::Refused("DeleteRequest", "external.brand is empty")),
    ("grpc_request-get-id-u64-max", Expect::Accepted("GetRequest")),
];

#[test]
fn hand_made_seeds_give_the_expected_outcome() {
    let mut checked = 0;
    for (name, expect) in EXPECTED {
        let Some(bytes) = saved(name) else {
            eprintln!("{name}: not in tests/fuzz-regressions, skipped");
            continue;
        };
        checked += 1;
        let (image, requests) = replay_ok(name, bytes);
        match expect {
            Expect::TooManyPixels => {
                assert!(matches!(image, Err(ImageError::TooManyPixels { .. })), "{name}: {image:?}")
            }
            Expect::Corrupt => assert!(matches!(image, Err(ImageError::Corrupt { .. })), "{name}: {image:?}"),
            Expect::Hashed(w, h) => match &image {
                Ok(hashes) => assert_eq!((hashes.width, hashes.height), (*w, *h), "{name}"),
                Err(e) => panic!("{name}: {e}"),
            },
            Expect::Refused(kind, needle) => assert_refused(outcome(&requests, kind), needle),
            Expect::Accepted(kind) => assert_eq!(outcome(&requests, kind), &Ok(()), "{name}"),
        }
    }
    eprintln!("{checked} of {} hand-made seeds present and as expected", EXPECTED.len());
    // Valid images of every format decode, whatever seeds were added since.
    for (name, bytes) in saved_inputs() {
        if name.starts_with("decode_hash-valid-") {
            let (image, _) = replay_ok(&name, bytes);
            assert!(image.is_ok(), "{name}: {image:?}");
        }
    }
}
