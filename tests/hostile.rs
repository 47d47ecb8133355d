//! Hostile input and running out of storage, against the real `lookalike serve` binary.
//!
//! 1. `hostile_images_get_exact_answers_and_the_server_stays_small`: images built to cost
//!    the server (an animated GIF of 2,001 frames at 2048×2048, a JPEG carrying 10 MB of
//!    APP1/APP2 segments, a PNG with a 10 MB text chunk, 1×1 images, a GIF declaring a
//!    65535×65535 screen, a 60000×60000 PNG bomb through `AddImages`, a truncated PNG,
//!    random bytes). Each gets its exact status or verdict, the server's peak memory
//!    (`VmHWM` of the child process) stays within a bound derived from what the image
//!    legitimately needs, and a normal `Match` still answers after each.
//! 2. Storage running out under `AddImages`, in two ways:
//!    - `disk_full_on_a_small_tmpfs_…`: the data directory on a 1 MiB tmpfs (a real
//!      `ENOSPC`). Needs permission to mount (root with CAP_SYS_ADMIN); where mounting is
//!      refused (an unprivileged container) the test says so on stderr and passes.
//!    - `file_size_limit_…`: `RLIMIT_FSIZE` on the server process (`EFBIG`, with SIGXFSZ
//!      ignored), which works anywhere.
//!
//!    Both: the failing items get a status and the stream goes on; reads keep working;
//!    once space is back the same process stores the failed items; after a restart
//!    without the limit every acknowledged entry is there exactly once (by id, by external
//!    id, and as one distance-0 match), the record files hold one record per entry, the
//!    audit log is whole, and new adds succeed.
//! 3. Two ignored tests reproduce product bugs found here (see their comments; they need
//!    a tmpfs): `entry_committed_before_a_failed_record_append_…` (an entry that is never
//!    searchable) and `failed_audit_append_…` (a stored item reported as not written, and
//!    a torn audit log). Run them with `cargo test --test hostile -- --ignored`.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{encode, fixture, jpeg, photo, png_declaring};
use image::{GrayImage, ImageFormat, RgbImage};
use lookalike::grpc::client::{connect, CatalogClient, MatcherClient};
use lookalike::grpc::pb::{self, add_image_request, get_request, match_request};
use lookalike::hash::{hash_image, DecodeLimits};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const BIN: &str = env!("CARGO_BIN_EXE_lookalike");
const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// The real server as a child process.
// ---------------------------------------------------------------------------------------

struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// `lookalike serve` on `data`, optionally with `RLIMIT_FSIZE` = `file_size_limit`.
    fn start(data: &Path, file_size_limit: Option<u64>) -> Server {
        let mut cmd = Command::new(BIN);
        for var in ["RUST_LOG", "LOOKALIKE_DATA", "LOOKALIKE_SERVER", "LOOKALIKE_API_KEY"] {
            cmd.env_remove(var);
        }
        cmd.args(["--data", data.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0", "--no-http", "--grace", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(limit) = file_size_limit {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // Soft limit only: the test raises it again with prlimit(2) to "free space".
                    let r = libc::rlimit { rlim_cur: limit, rlim_max: libc::RLIM_INFINITY };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Otherwise the first write past the limit kills the server; ignored, the
                    // write fails with EFBIG instead. SIG_IGN survives exec.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {BIN}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            // Reads the whole log, so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split("serving gRPC on ").nth(1) {
                        let _ = tx.send(format!("http://{}", rest.split_whitespace().next().unwrap()));
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => Server { child, url, log },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!("the server did not start ({status}):\n{}", log.lock().unwrap().join("\n"));
            }
        }
    }

    async fn channel(&self) -> Channel {
        connect(&self.url).await.unwrap()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether the log has a line containing `needle`, waiting a while for it: the log is
    /// read from a pipe by another thread, so a line can arrive after the answer it
    /// belongs to.
    fn logged(&self, needle: &str) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// A field of `/proc/PID/status`, in kB (`VmHWM` is the peak resident set).
    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn peak_bytes(&self) -> u64 {
        self.status_kb("VmHWM:") * 1024
    }

    /// SIGTERM: the server must exit 0.
    fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit after SIGTERM: {status}\n{}", self.log());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the server did not exit within 20 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed assertion must not leave a server running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------

fn add_image(bytes: Vec<u8>, external_id: &str) -> pb::AddImageRequest {
    pb::AddImageRequest {
        content: Some(add_image_request::Content::Image(bytes)),
        brand: "acme".into(),
        label: pb::Label::Authentic as i32,
        external_id: external_id.into(),
        note: String::new(),
        source: String::new(),
    }
}

fn add_hash(pdq: String, external_id: &str) -> pb::AddImageRequest {
    pb::AddImageRequest {
        content: Some(add_image_request::Content::Hash(pb::PrecomputedHash { pdq, quality: Some(100) })),
        ..add_image(Vec::new(), external_id)
    }
}

fn match_image(bytes: Vec<u8>) -> pb::MatchRequest {
    pb::MatchRequest { query: Some(match_request::Query::Image(bytes)), ..Default::default() }
}

fn match_hash(pdq: String) -> pb::MatchRequest {
    let hash = pb::PrecomputedHash { pdq, quality: None };
    pb::MatchRequest { query: Some(match_request::Query::Hash(hash)), k: Some(50), ..Default::default() }
}

fn status_of(r: &pb::AddImageResult) -> pb::AddStatus {
    pb::AddStatus::try_from(r.status).unwrap()
}

fn verdict_of(r: &pb::MatchResponse) -> pb::Verdict {
    pb::Verdict::try_from(r.verdict).unwrap()
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// One `AddImages` stream fed one item at a time: each item is its own write batch.
struct Uploader {
    tx: tokio::sync::mpsc::Sender<pb::AddImageRequest>,
    results: Streaming<pb::AddImageResult>,
}

impl Uploader {
    async fn open(channel: &Channel) -> Uploader {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let results = CatalogClient::new(channel.clone()).add_images(ReceiverStream::new(rx)).await.unwrap();
        Uploader { tx, results: results.into_inner() }
    }

    async fn add(&mut self, item: pb::AddImageRequest) -> pb::AddImageResult {
        let external_id = item.external_id.clone();
        self.tx.send(item).await.unwrap();
        let r = self.results.message().await.expect("the stream must go on").expect("a result per item");
        assert_eq!(r.external_id, external_id);
        r
    }
}

async fn add_one(channel: &Channel, item: pb::AddImageRequest) -> pb::AddImageResult {
    Uploader::open(channel).await.add(item).await
}

/// A plain request the server must still answer correctly after a hostile one.
async fn still_serving(matcher: &mut MatcherClient<Channel>, coffee_id: u64, after: &str) {
    let r = matcher
        .r#match(match_image(read("coffee.jpg")))
        .await
        .unwrap_or_else(|s| panic!("after {after}: a normal Match failed: {s:?}"))
        .into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::BrandPhotoReused, "after {after}: {r:?}");
    assert_eq!((r.matches[0].id, r.matches[0].distance), (coffee_id, 0), "after {after}");
}

fn expect_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, words: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert!(status.message().contains(words), "{what}: {:?} lacks {words:?}", status.message());
}

// ---------------------------------------------------------------------------------------
// Hostile images, built here.
// ---------------------------------------------------------------------------------------

/// GIF LZW (8-bit literals, codes up to 12 bits, LSB first), a port of Go's
/// `compress/lzw` writer. `table[code << 8 | byte]` is the code extending `code` by `byte`.
fn gif_lzw(pixels: &[u8]) -> Vec<u8> {
    const CLEAR: u32 = 256;
    const END: u32 = 257;
    const MAX_CODE: u32 = 4095;
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, code: u32, width: u32) {
            self.acc |= u64::from(code) << self.n;
            self.n += width;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
    }
    let mut bits = Bits { out: Vec::new(), acc: 0, n: 0 };
    let (mut width, mut hi, mut overflow) = (9u32, END, 512u32);
    let mut table = vec![0u16; 4096 * 256];
    // The next code to be assigned; false when the table is full and was just cleared.
    let next = |width: &mut u32, hi: &mut u32, overflow: &mut u32, bits: &mut Bits| -> bool {
        *hi += 1;
        if *hi == *overflow {
            *width += 1;
            *overflow <<= 1;
        }
        if *hi == MAX_CODE {
            bits.put(CLEAR, *width);
            (*width, *hi, *overflow) = (9, END, 512);
            return false;
        }
        true
    };
    bits.put(CLEAR, width);
    let mut code = u32::from(pixels[0]);
    for &byte in &pixels[1..] {
        let key = (code << 8 | u32::from(byte)) as usize;
        if table[key] != 0 {
            code = u32::from(table[key]);
            continue;
        }
        bits.put(code, width);
        code = u32::from(byte);
        if next(&mut width, &mut hi, &mut overflow, &mut bits) {
            table[key] = hi as u16;
        } else {
            table.fill(0);
        }
    }
    bits.put(code, width);
    next(&mut width, &mut hi, &mut overflow, &mut bits);
    bits.put(END, width);
    if bits.n > 0 {
        bits.out.push(bits.acc as u8);
    }
    bits.out
}

/// An animated GIF89a (looping, 256 grey levels as the global palette) of `frames`, each
/// `(left, top, width, height, LZW data)`.
fn animated_gif(screen: (u16, u16), frames: &[(u16, u16, u16, u16, &[u8])]) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&screen.0.to_le_bytes());
    out.extend_from_slice(&screen.1.to_le_bytes());
    out.extend_from_slice(&[0xF7, 0, 0]); // global palette of 256 colours
    for g in 0..=255u8 {
        out.extend_from_slice(&[g, g, g]);
    }
    out.extend_from_slice(b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\x00\x00\x00"); // loop forever
    for &(left, top, w, h, data) in frames {
        out.extend_from_slice(&[0x21, 0xF9, 4, 0x04, 10, 0, 0, 0]); // 0.1 s, keep the frame
        out.push(0x2C);
        for v in [left, top, w, h] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0, 8]); // no local palette; LZW minimum code size 8
        for block in data.chunks(255) {
            out.push(block.len() as u8);
            out.extend_from_slice(block);
        }
        out.push(0);
    }
    out.push(0x3B);
    out
}

/// `jpeg` with `segments` (marker, payload ≤ 65,533 bytes) inserted right after SOI.
fn with_app_segments(jpeg: &[u8], segments: &[(u8, Vec<u8>)]) -> Vec<u8> {
    assert_eq!(jpeg[..2], [0xFF, 0xD8]);
    let mut out = jpeg[..2].to_vec();
    for (marker, payload) in segments {
        out.extend_from_slice(&[0xFF, *marker]);
        out.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
    }
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// An APP1 EXIF payload: a little-endian TIFF header and one IFD with orientation 1.
fn exif_orientation_normal() -> Vec<u8> {
    let mut p = b"Exif\0\0II\x2A\0\x08\0\0\0".to_vec();
    p.extend_from_slice(&1u16.to_le_bytes()); // one entry
    p.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0]); // 0x0112 SHORT ×1 = 1
    p.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    p
}

/// About 10 MB of metadata for a JPEG: a real EXIF block, then 80 APP1 extended-XMP
/// segments and an 80-chunk APP2 ICC profile, all full-size (64 KB) and full of noise.
fn ten_megabytes_of_app_segments() -> Vec<(u8, Vec<u8>)> {
    let mut rng = SmallRng::seed_from_u64(10);
    let mut full = |head: &[u8]| {
        let mut p = head.to_vec();
        p.extend((p.len()..65_533).map(|_| rng.random::<u8>()));
        p
    };
    let mut segments = vec![(0xE1, exif_orientation_normal())];
    for _ in 0..80 {
        segments.push((0xE1, full(b"http://ns.adobe.com/xmp/extension/\0")));
    }
    for chunk in 1..=80u8 {
        segments.push((0xE2, full(&[b"ICC_PROFILE\0".as_slice(), &[chunk, 80]].concat())));
    }
    segments
}

/// `png` with a `tEXt` chunk of `text_bytes` bytes inserted after IHDR.
fn with_text_chunk(png: &[u8], text_bytes: usize) -> Vec<u8> {
    const AFTER_IHDR: usize = 8 + 4 + 4 + 13 + 4;
    assert_eq!(&png[12..16], b"IHDR");
    let mut body = b"tEXtComment\0".to_vec();
    body.extend(std::iter::repeat_n(b'x', text_bytes));
    let mut out = png[..AFTER_IHDR].to_vec();
    out.extend_from_slice(&u32::try_from(body.len() - 4).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&png[AFTER_IHDR..]);
    out
}

fn one_pixel() -> RgbImage {
    RgbImage::from_pixel(1, 1, image::Rgb([10, 200, 30]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_images_get_exact_answers_and_the_server_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let channel = server.channel().await;
    let mut matcher = MatcherClient::new(channel.clone()).max_encoding_message_size(usize::MAX);

    // The catalog: two fixtures, and the GIF's first frame as a precomputed hash (so the
    // server never decodes a large image before the GIF and its peak memory is the GIF's).
    let side = 2048u16;
    let first_frame: GrayImage = image::DynamicImage::ImageRgb8(photo(3, side.into(), side.into())).to_luma8();
    let frame_png = encode(&image::DynamicImage::ImageLuma8(first_frame.clone()).to_rgb8(), ImageFormat::Png);
    let frame_hash = hash_image(&frame_png, &DecodeLimits::default()).unwrap();
    assert!(frame_hash.pdq.quality >= 90, "the first frame is a detailed picture");
    let mut ids = HashMap::new();
    let mut up = Uploader::open(&channel).await;
    for (item, name) in [
        (add_image(read("coffee.jpg"), "coffee"), "coffee"),
        (add_image(read("chelsea.png"), "chelsea"), "chelsea"),
        (add_hash(frame_hash.pdq.hash().to_string(), "gif-first-frame"), "gif-first-frame"),
    ] {
        let r = up.add(item).await;
        assert_eq!(status_of(&r), pb::AddStatus::Added, "{r:?}");
        ids.insert(name, r.id);
    }
    let coffee = ids["coffee"];
    still_serving(&mut matcher, coffee, "start-up").await;

    // 1. An animated GIF: 2048×2048 screen, a photograph as frame 1, then 2,000 more
    // full-screen frames of flat grey (8.4 gigapixels of animation in ~9 MB). Only the
    // first frame is decoded: the answer is the photograph's match (a flat frame would be
    // LOW_QUALITY), and the peak memory is one frame's, not thousands.
    let photo_lzw = gif_lzw(first_frame.as_raw());
    let flat_lzw = gif_lzw(&vec![200u8; usize::from(side) * usize::from(side)]);
    let mut frames: Vec<(u16, u16, u16, u16, &[u8])> = vec![(0, 0, side, side, &photo_lzw)];
    frames.extend(std::iter::repeat_n((0, 0, side, side, flat_lzw.as_slice()), 2000));
    let gif = animated_gif((side, side), &frames);
    assert!(gif.len() < 16 * MIB as usize, "{}", gif.len());
    // The file really is what it claims to be (checked with the image crate's own decoder).
    {
        use image::AnimationDecoder;
        let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&gif[..])).unwrap();
        let two: Vec<_> = decoder.into_frames().take(2).collect::<Result<_, _>>().unwrap();
        assert!(two[0].buffer().pixels().zip(first_frame.pixels()).all(|(a, b)| a.0 == [b.0[0], b.0[0], b.0[0], 255]));
        assert!(two[1].buffer().pixels().all(|p| p.0 == [200, 200, 200, 255]));
    }
    let before = server.peak_bytes();
    let r = matcher.r#match(match_image(gif.clone())).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::BrandPhotoReused, "{r:?}");
    assert_eq!(r.matches[0].id, ids["gif-first-frame"]);
    // Grey RGBA and grey PNG give the same luma up to float rounding.
    assert!(r.matches[0].distance <= 2, "{r:?}");
    assert!(r.quality >= 90, "{r:?}");
    let grew = server.peak_bytes().saturating_sub(before);
    // One frame: RGBA (4 bytes a pixel) and its luma plane (4 more), plus the message a
    // few times over. All 2,001 frames would be 33 GB.
    let pixels = u64::from(side) * u64::from(side);
    let bound = 12 * pixels + 4 * gif.len() as u64 + 32 * MIB;
    assert!(grew <= bound, "a {}-byte animated GIF raised the peak by {grew} bytes (bound {bound})", gif.len());
    eprintln!("GIF of 2001 frames, {} bytes: peak +{} MiB", gif.len(), grew / MIB);
    still_serving(&mut matcher, coffee, "an animated GIF of 2,001 frames").await;

    // 2. A JPEG carrying 10 MB of APP1/APP2 segments around the pixels of coffee.jpg: a
    // real image, decoded and matched to its source at distance 0, its metadata skipped
    // or held at most once.
    let bloated = with_app_segments(&read("coffee.jpg"), &ten_megabytes_of_app_segments());
    assert!(bloated.len() > 10_000_000 && bloated.len() < 11_000_000, "{}", bloated.len());
    let before = server.peak_bytes();
    let r = matcher.r#match(match_image(bloated.clone())).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::BrandPhotoReused, "{r:?}");
    assert_eq!((r.matches[0].id, r.matches[0].distance), (coffee, 0));
    let grew = server.peak_bytes().saturating_sub(before);
    // The message is held a few times over (HTTP/2 buffer, decoded request); the pixels
    // are 512×341: nothing else should be large.
    let bound = 4 * bloated.len() as u64 + 32 * MIB;
    assert!(grew <= bound, "a 10 MB-metadata JPEG raised the peak by {grew} bytes (bound {bound})");
    eprintln!("JPEG with {} bytes of APPn: peak +{} MiB", bloated.len(), grew / MIB);
    still_serving(&mut matcher, coffee, "a JPEG with 10 MB of APPn segments").await;

    // ...and the same file can be added: it is stored under its own bytes.
    let r = add_one(&channel, pb::AddImageRequest { brand: "globex".into(), ..add_image(bloated, "bloated") }).await;
    assert_eq!(status_of(&r), pb::AddStatus::Added, "{r:?}");
    assert_eq!(
        r.quality,
        Some(u32::from(hash_image(&read("coffee.jpg"), &DecodeLimits::default()).unwrap().pdq.quality))
    );

    // 3. A PNG with a 10 MB tEXt chunk before its pixels: decoded, matched at distance 0.
    let texty = with_text_chunk(&read("chelsea.png"), 10_000_000);
    let before = server.peak_bytes();
    let r = matcher.r#match(match_image(texty.clone())).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::BrandPhotoReused, "{r:?}");
    assert_eq!((r.matches[0].id, r.matches[0].distance), (ids["chelsea"], 0));
    let grew = server.peak_bytes().saturating_sub(before);
    let bound = 4 * texty.len() as u64 + 32 * MIB;
    assert!(grew <= bound, "a PNG with a 10 MB text chunk raised the peak by {grew} bytes (bound {bound})");
    eprintln!("PNG with a {}-byte tEXt chunk: peak +{} MiB", texty.len(), grew / MIB);
    still_serving(&mut matcher, coffee, "a PNG with a 10 MB tEXt chunk").await;

    // 4. A GIF whose screen alone is over the pixel limit: refused from its header.
    let tiny_frame = gif_lzw(&[7u8; 64]);
    let huge_screen = animated_gif((65_535, 65_535), &[(0, 0, 8, 8, &tiny_frame)]);
    expect_status(
        matcher.r#match(match_image(huge_screen)).await,
        Code::InvalidArgument,
        "image declares 65535×65535 = 4294836225 pixels, over the limit of 100000000 pixels",
        "GIF screen 65535×65535",
    );
    still_serving(&mut matcher, coffee, "a GIF declaring 65535×65535").await;

    // 5. 1×1 images: hashed (quality 0), so the verdict is LOW_QUALITY, not an error.
    let one_png = encode(&one_pixel(), ImageFormat::Png);
    let one_jpeg = jpeg(&one_pixel(), 90);
    for (what, bytes) in [("1×1 PNG", &one_png), ("1×1 JPEG", &one_jpeg)] {
        let r = matcher.r#match(match_image(bytes.clone())).await.unwrap().into_inner();
        assert_eq!((verdict_of(&r), r.quality), (pb::Verdict::LowQuality, 0), "{what}: {r:?}");
        assert_eq!(r.pdq.len(), 64, "{what}: {r:?}");
        still_serving(&mut matcher, coffee, what).await;
    }
    // A 1×1 image is accepted into the catalog (quality 0 is stored, not refused)...
    let r = add_one(&channel, add_image(one_png.clone(), "one-pixel")).await;
    assert_eq!((status_of(&r), r.quality), (pb::AddStatus::Added, Some(0)), "{r:?}");
    // ...and a 1×1 query stays LOW_QUALITY even with that very image stored: quality
    // decides before any match does.
    let r = matcher.r#match(match_image(one_png)).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::LowQuality, "{r:?}");
    assert_eq!((r.matches[0].external_id.as_str(), r.matches[0].distance), ("one-pixel", 0), "{r:?}");

    // 6. Cases tests/grpc.rs does not cover over gRPC: a truncated PNG, a 60000×60000 PNG
    // bomb (Match, and one AddImages item among good ones), seeded random bytes.
    let chelsea = read("chelsea.png");
    expect_status(
        matcher.r#match(match_image(chelsea[..chelsea.len() / 2].to_vec())).await,
        Code::InvalidArgument,
        "image: corrupt or truncated png image",
        "truncated PNG",
    );
    let bomb_words = "image declares 60000×60000 = 3600000000 pixels, over the limit of 100000000 pixels";
    expect_status(
        matcher.r#match(match_image(png_declaring(60_000, 60_000))).await,
        Code::InvalidArgument,
        bomb_words,
        "60000×60000 PNG",
    );
    let mut up = Uploader::open(&channel).await;
    let r = up.add(add_image(png_declaring(60_000, 60_000), "bomb")).await;
    assert_eq!(status_of(&r), pb::AddStatus::Failed, "{r:?}");
    let e = r.error.unwrap();
    assert_eq!(e.code, Code::InvalidArgument as i32, "{e:?}");
    assert!(e.message.contains(bomb_words), "{e:?}");
    let r = up.add(add_image(jpeg(&photo(8, 96, 96), 90), "after-bomb")).await;
    assert_eq!(status_of(&r), pb::AddStatus::Added, "{r:?}");
    let mut rng = SmallRng::seed_from_u64(4);
    let noise: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
    expect_status(
        matcher.r#match(match_image(noise)).await,
        Code::InvalidArgument,
        "not a supported image (JPEG, PNG, WebP, GIF, BMP or TIFF): unrecognised signature",
        "random bytes",
    );
    still_serving(&mut matcher, coffee, "truncated, bomb and random inputs").await;
    eprintln!("server peak resident set: {} MiB", server.peak_bytes() / MIB);
    server.stop();
}

// ---------------------------------------------------------------------------------------
// Running out of storage.
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted on a directory for the life of this value.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    /// Mount a tmpfs of `bytes` on `path`, or say why not (EPERM without CAP_SYS_ADMIN).
    fn mount(path: &Path, bytes: u64) -> std::io::Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let (target, options) = (Self::c(path.to_str().unwrap()), Self::c(&format!("size={bytes},mode=0700")));
        let (tmpfs, flags) = (Self::c("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV);
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let rc =
            unsafe { libc::mount(tmpfs.as_ptr(), target.as_ptr(), tmpfs.as_ptr(), flags, options.as_ptr().cast()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Tmpfs { path: path.to_owned() })
    }

    /// Change the size of the mounted tmpfs.
    fn resize(&self, bytes: u64) {
        let (target, options) = (Self::c(self.path.to_str().unwrap()), Self::c(&format!("size={bytes}")));
        let tmpfs = Self::c("tmpfs");
        let flags = libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
        // SAFETY: as in `mount`.
        let rc =
            unsafe { libc::mount(tmpfs.as_ptr(), target.as_ptr(), tmpfs.as_ptr(), flags, options.as_ptr().cast()) };
        assert_eq!(rc, 0, "remounting {}: {}", self.path.display(), std::io::Error::last_os_error());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = Self::c(self.path.to_str().unwrap());
        // SAFETY: as in `mount`. Lazy, so a still-running child cannot keep it mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Mount a tmpfs for a test, or explain on stderr why the test cannot run here.
fn tmpfs_or_skip(path: &Path, bytes: u64, test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(path, bytes) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("SKIPPED {test}: cannot mount a tmpfs here ({e}); it needs root with CAP_SYS_ADMIN");
            None
        }
    }
}

/// How storage runs out for the server, and how it comes back.
enum Storage {
    /// The data directory is on a small tmpfs, with `ballast` taking part of it.
    Tmpfs { mount: Tmpfs, ballast: PathBuf },
    /// `RLIMIT_FSIZE` of this many bytes on the server process.
    FileSize(u64),
}

impl Storage {
    fn start(&self, data: &Path) -> Server {
        match self {
            Storage::Tmpfs { .. } => Server::start(data, None),
            Storage::FileSize(limit) => Server::start(data, Some(*limit)),
        }
    }

    /// Give the running server room again.
    fn free(&self, server: &Server) {
        match self {
            Storage::Tmpfs { ballast, .. } => std::fs::remove_file(ballast).unwrap(),
            Storage::FileSize(_) => {
                let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
                let pid = server.child.id() as libc::pid_t;
                // SAFETY: prlimit(2) on our own child, with a valid new limit and no old one.
                let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &unlimited, std::ptr::null_mut()) };
                assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
            }
        }
    }

    /// Lift the limit for good (before a restart).
    fn unlimit(&self) {
        if let Storage::Tmpfs { mount, .. } = self {
            mount.resize(64 * MIB);
        }
    }
}

/// What a write refused for lack of storage must say: to the client, and in the log.
struct Refusal {
    code: Code,
    message: &'static str,
    log: &'static str,
}

/// Item `seed` of the storage tests: a distinct 64×64 photograph.
fn storage_item(seed: u64) -> pb::AddImageRequest {
    add_image(jpeg(&photo(7000 + seed, 64, 64), 90), &format!("p{seed}"))
}

/// The one entry at distance 0 from item `seed`'s image must be `id`.
async fn found_once(matcher: &mut MatcherClient<Channel>, seed: u64, id: u64) {
    let mut req = match_image(jpeg(&photo(7000 + seed, 64, 64), 90));
    req.k = Some(50);
    let r = matcher.r#match(req).await.unwrap().into_inner();
    let exact: Vec<_> = r.matches.iter().filter(|m| m.distance == 0).map(|m| (m.id, m.external_id.as_str())).collect();
    assert_eq!(exact, vec![(id, format!("p{seed}").as_str())], "item {seed}");
}

/// Get by id and by brand + external id both give exactly this live entry.
async fn stored_once(catalog: &mut CatalogClient<Channel>, seed: u64, id: u64) {
    let external_id = format!("p{seed}");
    let by_id = catalog.get(pb::GetRequest { target: Some(get_request::Target::Id(id)) }).await;
    let by_id = by_id.unwrap_or_else(|s| panic!("entry {id} (item {seed}) is missing: {s:?}")).into_inner().entries;
    assert_eq!(by_id.len(), 1);
    assert_eq!((by_id[0].external_id.as_str(), by_id[0].deleted_at_ms), (external_id.as_str(), None));
    let external = pb::ExternalRef { brand: "acme".into(), external_id };
    let by_ext = catalog.get(pb::GetRequest { target: Some(get_request::Target::External(external)) }).await;
    let ids: Vec<_> = by_ext.unwrap().into_inner().entries.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![id], "item {seed} by external id");
}

fn assert_refused(r: &pb::AddImageResult, refusal: &Refusal) {
    assert_eq!(status_of(r), pb::AddStatus::Failed, "{r:?}");
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.code, refusal.code as i32, "{e:?}");
    assert!(e.message.contains(refusal.message), "{e:?} lacks {:?}", refusal.message);
}

/// Add until storage runs out, check the refusals and that reads go on; give room back
/// and store the refused items in the same process; restart without a limit and check
/// every entry, the record files and the audit log.
async fn run_out_of_storage(data: &Path, storage: Storage, refusal: Refusal) {
    let server = storage.start(data);
    let channel = server.channel().await;
    let mut matcher = MatcherClient::new(channel.clone());
    let mut up = Uploader::open(&channel).await;
    // Item seed → id, for every item acknowledged as stored.
    let mut stored: HashMap<u64, u64> = HashMap::new();
    let mut refused = Vec::new();
    let mut seed = 0;
    while refused.is_empty() {
        assert!(seed < 500, "storage never ran out:\n{}", server.log());
        let r = up.add(storage_item(seed)).await;
        match status_of(&r) {
            pb::AddStatus::Added => assert!(stored.insert(seed, r.id).is_none()),
            _ => {
                assert_refused(&r, &refusal);
                refused.push(seed);
            }
        }
        seed += 1;
    }
    assert!(stored.len() >= 3, "storage ran out after {} items: the test needs more room", stored.len());
    // Still full: the next items are refused the same way, and the stream goes on.
    for _ in 0..3 {
        assert_refused(&up.add(storage_item(seed)).await, &refusal);
        refused.push(seed);
        seed += 1;
    }
    assert!(server.logged(refusal.log), "the log lacks {:?}:\n{}", refusal.log, server.log());

    // Reads go on: matches, gets, stats.
    let mut catalog = CatalogClient::new(channel.clone());
    let acked: Vec<u64> = {
        let mut s: Vec<u64> = stored.keys().copied().collect();
        s.sort_unstable();
        s
    };
    for &s in [acked[0], acked[acked.len() / 2], acked[acked.len() - 1]].iter() {
        found_once(&mut matcher, s, stored[&s]).await;
        stored_once(&mut catalog, s, stored[&s]).await;
    }
    let stats = catalog.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!((stats.live, stats.records), (stored.len() as u64, stored.len() as u64), "refused items left traces");

    // Room again, same process: the refused items and new ones are stored.
    storage.free(&server);
    for s in refused.iter().copied().chain(seed..seed + 3) {
        let r = up.add(storage_item(s)).await;
        assert_eq!(status_of(&r), pb::AddStatus::Added, "item {s} once there is room: {r:?}\n{}", server.log());
        assert!(stored.insert(s, r.id).is_none());
    }
    let all: Vec<(u64, u64)> = {
        let mut v: Vec<_> = stored.iter().map(|(&s, &id)| (s, id)).collect();
        v.sort_unstable();
        v
    };
    for &(s, id) in &all {
        found_once(&mut matcher, s, id).await;
    }
    drop(up);
    server.stop();

    // Restart without any limit: the index opens as it is, everything is there once.
    storage.unlimit();
    let server = Server::start(data, None);
    let channel = server.channel().await;
    let mut matcher = MatcherClient::new(channel.clone());
    let mut catalog = CatalogClient::new(channel.clone());
    for &(s, id) in &all {
        stored_once(&mut catalog, s, id).await;
        found_once(&mut matcher, s, id).await;
    }
    let stats = catalog.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    let n = all.len() as u64;
    assert_eq!((stats.live, stats.deleted, stats.records), (n, 0, n), "{stats:?}");
    // The audit log is whole: every line is JSON, one "add" line per stored entry.
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    let mut audited = Vec::new();
    for line in audit.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("audit line {line:?}: {e}"));
        if v["action"] == "add" {
            audited.push(v["id"].as_u64().unwrap());
        }
    }
    audited.sort_unstable();
    let mut ids: Vec<u64> = all.iter().map(|&(_, id)| id).collect();
    ids.sort_unstable();
    assert_eq!(audited, ids, "audit log add lines");
    // New adds work.
    let r = add_one(&channel, storage_item(10_000)).await;
    assert_eq!(status_of(&r), pb::AddStatus::Added, "{r:?}");
    found_once(&mut matcher, 10_000, r.id).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_a_small_tmpfs_is_resource_exhausted_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = tmpfs_or_skip(&dir.path().join("mnt"), MIB, "disk_full_on_a_small_tmpfs") else { return };
    // Half the disk is taken by something else; freeing it is how room comes back.
    let ballast = mount.path.join("ballast");
    std::fs::File::create(&ballast).unwrap().write_all(&vec![1u8; 512 * 1024]).unwrap();
    let data = mount.path.join("data");
    let storage = Storage::Tmpfs { mount, ballast };
    let refusal = Refusal {
        code: Code::ResourceExhausted,
        message: "storage is full; the write may be incomplete, and resending it is safe (what was stored is \
                  reported as already present): catalog: committing: database or disk is full",
        log: "storage is full",
    };
    run_out_of_storage(&data, storage, refusal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_size_limit_fails_items_cleanly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // EFBIG is not a full disk, and SQLite reports it as SQLITE_IOERR_WRITE ("disk I/O
    // error"), the same code as a failing device: the server cannot tell the two apart,
    // so the item fails as INTERNAL with the cause in the log.
    let refusal = Refusal {
        code: Code::Internal,
        message: "internal error (logged on the server)",
        log: "error=catalog: committing: disk I/O error",
    };
    run_out_of_storage(&dir.path().join("data"), Storage::FileSize(512 * 1024), refusal).await;
}

/// Fill the file system holding `path` with a file there, to the last byte.
fn fill_up(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xAAu8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// A distinct PDQ hash for item `i` of the repro below.
fn pdq_of(i: u64) -> String {
    let mut rng = SmallRng::seed_from_u64(90_000 + i);
    (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

/// Was a product bug (fixed: `Index::add` first appends what an earlier failed append
/// left out): `Index::add` commits to the catalog, then appends to the
/// record files. If that append fails (ENOSPC on codes-1.bin), the item is reported
/// FAILED ("storage is full, nothing was written") although the catalog holds it; once
/// a later add succeeds in the same process, the entry is never appended: re-sending it
/// says ALREADY_PRESENT, yet no Match finds it, and a restart does not help either
/// (`catch_up` only looks past the last record's entry). `lookalike repair` is the only cure.
///
/// To get the failure exactly there: 384 entries (their codes end on a page boundary, so
/// the next append needs a new page), added one per transaction so SQLite has
/// checkpointed and is rewriting its WAL in place (a small commit needs no new space);
/// then the disk is filled to the last byte and one more hash is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_committed_before_a_failed_record_append_becomes_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let test = "entry_committed_before_a_failed_record_append";
    let Some(mount) = tmpfs_or_skip(&dir.path().join("mnt"), 16 * MIB, test) else { return };
    let data = mount.path.join("data");
    let server = Server::start(&data, None);
    let channel = server.channel().await;
    let mut up = Uploader::open(&channel).await;
    let n = 384;
    for i in 0..n {
        let r = up.add(add_hash(pdq_of(i), &format!("h{i}"))).await;
        assert_eq!(status_of(&r), pb::AddStatus::Added, "{r:?}");
    }
    let codes = std::fs::metadata(data.join("codes-1.bin")).unwrap().len();
    assert_eq!(codes, 4096 + n * 32);
    assert_eq!(codes % 4096, 0, "the next append needs a new page");
    fill_up(&mount.path.join("filler"));

    let r = up.add(add_hash(pdq_of(n), "victim")).await;
    assert_eq!(status_of(&r), pb::AddStatus::Failed, "{r:?}");
    let e = r.error.unwrap();
    assert_eq!(e.code, Code::ResourceExhausted as i32, "{e:?}");
    assert!(e.message.contains("codes-1.bin"), "precondition: the record append must be what failed: {e:?}");

    std::fs::remove_file(mount.path.join("filler")).unwrap();
    let r = up.add(add_hash(pdq_of(n + 1), "after")).await;
    assert_eq!(status_of(&r), pb::AddStatus::Added, "{r:?}");
    let again = up.add(add_hash(pdq_of(n), "victim")).await;
    eprintln!("re-sent: {:?} id {}", status_of(&again), again.id);
    assert!(matches!(status_of(&again), pb::AddStatus::Added | pb::AddStatus::AlreadyPresent), "{again:?}");
    let mut matcher = MatcherClient::new(channel.clone());
    let found = |r: pb::MatchResponse| r.matches.iter().filter(|m| m.distance == 0).map(|m| m.id).collect::<Vec<_>>();
    let r = matcher.r#match(match_hash(pdq_of(n))).await.unwrap().into_inner();
    let stats = CatalogClient::new(channel.clone()).stats(pb::StatsRequest {}).await.unwrap().into_inner();
    eprintln!("after re-send: live {} records {}", stats.live, stats.records);
    assert_eq!(found(r), vec![again.id], "the re-sent entry {} must be searchable", again.id);
    drop(up);
    server.stop();

    let server = Server::start(&data, None);
    let mut matcher = MatcherClient::new(server.channel().await);
    let r = matcher.r#match(match_hash(pdq_of(n))).await.unwrap().into_inner();
    assert_eq!(found(r), vec![again.id], "after a restart");
    server.stop();
}

/// Was a product bug (fixed: a failed audit append is cut back to the last whole line,
/// and the refusal says resending is safe): `Engine::add` stores entries (catalog, then record files),
/// then appends the audit log. If that append fails (ENOSPC on audit.jsonl), the item is
/// reported FAILED with "storage is full, nothing was written" although it is stored and
/// searchable; the audit log keeps the part of the line that fit, so the next line is
/// glued to it and the file is no longer JSON lines; re-sending the item says
/// ALREADY_PRESENT, so its add is never audited.
///
/// To get the failure exactly there: past SQLite's first checkpoint (a small commit
/// rewrites the WAL in place and needs no new space), with the record files not on a page
/// boundary and the audit log's last page nearly full, the disk is filled to the last byte
/// and one more hash is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_audit_append_neither_misreports_the_item_nor_tears_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let test = "failed_audit_append";
    let Some(mount) = tmpfs_or_skip(&dir.path().join("mnt"), 16 * MIB, test) else { return };
    let data = mount.path.join("data");
    let server = Server::start(&data, None);
    let channel = server.channel().await;
    let mut up = Uploader::open(&channel).await;
    let mut n = 0u64;
    loop {
        let r = up.add(add_hash(pdq_of(n), &format!("h{n}"))).await;
        assert_eq!(status_of(&r), pb::AddStatus::Added, "{r:?}");
        n += 1;
        let audit = std::fs::metadata(data.join("audit.jsonl")).unwrap().len();
        let room = (4096 - audit % 4096) % 4096;
        if n > 400 && !n.is_multiple_of(128) && room < 100 {
            break;
        }
        assert!(n < 2000, "the audit log never came near a page boundary");
    }
    fill_up(&mount.path.join("filler"));
    let r = up.add(add_hash(pdq_of(n), "victim")).await;
    assert_eq!(status_of(&r), pb::AddStatus::Failed, "{r:?}");
    let e = r.error.unwrap();
    assert!(e.message.contains("audit.jsonl"), "precondition: the audit append must be what failed: {e:?}");
    eprintln!("victim refused with {:?}: {}", Code::from_i32(e.code), e.message);
    std::fs::remove_file(mount.path.join("filler")).unwrap();
    let after = up.add(add_hash(pdq_of(n + 1), "after")).await;
    assert_eq!(status_of(&after), pb::AddStatus::Added, "{after:?}");
    let again = up.add(add_hash(pdq_of(n), "victim")).await;
    eprintln!("re-sent: {:?} id {}", status_of(&again), again.id);

    let torn: Vec<String> = std::fs::read_to_string(data.join("audit.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .map(String::from)
        .collect();
    let victim = pb::ExternalRef { brand: "acme".into(), external_id: "victim".into() };
    let mut catalog = CatalogClient::new(channel.clone());
    let stored = catalog.get(pb::GetRequest { target: Some(get_request::Target::External(victim)) }).await;
    eprintln!("victim in the catalog after its FAILED: {:?}", stored.as_ref().map(|r| r.get_ref().entries.len()));
    assert!(torn.is_empty(), "audit.jsonl has lines that are not JSON: {torn:?}");
    // The refusal does not claim nothing was stored, and re-sending is answered honestly.
    assert!(!e.message.contains("nothing was written"), "{e:?}");
    assert!(e.message.contains("resending it is safe"), "{e:?}");
    let stored = stored.unwrap().into_inner().entries;
    assert_eq!(stored.len(), 1, "the victim is stored");
    assert_eq!((status_of(&again), again.id), (pb::AddStatus::AlreadyPresent, stored[0].id), "{again:?}");
    drop(up);
    server.stop();
}
