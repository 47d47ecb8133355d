//! End-to-end tests of the `lookalike` binary: index, query, hash, stats, delete,
//! compact, crash recovery and usage errors. Images are generated in code (seeded),
//! or copied from `tests/fixtures/`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{encode, fixture, jpeg, photo};
use image::{ImageFormat, RgbImage};
use lookalike::hash::Hash256;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lookalike");

trait MakeParent {
    fn make_parent(self) -> Self;
}

impl MakeParent for PathBuf {
    /// Create the parent folder of this path; return the path.
    fn make_parent(self) -> Self {
        std::fs::create_dir_all(self.parent().unwrap()).unwrap();
        self
    }
}

fn save(img: &RgbImage, path: &Path) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    img.save(path).unwrap_or_else(|e| panic!("saving {}: {e}", path.display()));
}

fn save_jpeg(img: &RgbImage, path: &Path, quality: u8) {
    std::fs::write(path, jpeg(img, quality)).unwrap();
}

/// What a finished command printed.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", self.stdout))
    }
    /// One JSON object per line.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\nstdout:\n{}", self.stdout))
            })
            .collect()
    }
}

/// A temporary directory with an index directory `idx` inside.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn data(&self) -> PathBuf {
        self.path("idx")
    }
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data").arg(self.data()).args(args).current_dir(self.dir.path());
        cmd.env_remove("LOOKALIKE_DATA").env_remove("RUST_LOG");
        cmd
    }
    /// Run; panic with everything printed unless it exits with `expect`.
    fn run(&self, args: &[&str], expect: i32) -> Out {
        self.run_with_stdin(args, None, expect)
    }
    /// Run; whatever the exit code.
    fn run_raw(&self, args: &[&str]) -> Out {
        let output = self.command(args).stdin(Stdio::null()).output().unwrap();
        Out {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
    fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>, expect: i32) -> Out {
        let mut cmd = self.command(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let out = Out {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        if out.code != expect {
            panic!(
                "command {cmd:?}\nexited with {} ({}), expected {expect}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.code, output.status, out.stdout, out.stderr
            );
        }
        out
    }
    fn stats(&self) -> Value {
        self.run(&["stats", "--json"], 0).json()
    }
    /// `query --json` of one image, expecting `code`.
    fn query(&self, image: &Path, extra: &[&str], expect: i32) -> Value {
        let mut args = vec!["query", "--json"];
        args.extend_from_slice(extra);
        let image = image.to_str().unwrap();
        args.push(image);
        let out = self.run(&args, expect);
        let mut lines = out.json_lines();
        assert_eq!(lines.len(), 1, "one JSON line per image:\n{}", out.stdout);
        lines.remove(0)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// The numbers of `index`'s summary line: (new, already present, skipped, failed).
fn summary(stdout: &str) -> (u64, u64, u64, u64) {
    let line =
        stdout.lines().find(|l| l.starts_with("indexed ")).unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let nums: Vec<u64> = line
        .split(['—', ','])
        .take(4)
        .map(|part| {
            let n = part.split_whitespace().find_map(|w| w.parse().ok());
            n.unwrap_or_else(|| panic!("no count in {part:?} of {line:?}"))
        })
        .collect();
    (nums[0], nums[1], nums[2], nums[3])
}

/// Is `v` a 256-bit hash as 64 lowercase hex digits?
fn is_hex64(v: &Value) -> bool {
    v.as_str().is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The `by_brand_label` rows of `stats --json` as (brand, label, count).
fn by_brand_label(stats: &Value) -> Vec<(String, String, u64)> {
    stats["by_brand_label"]
        .as_array()
        .unwrap_or_else(|| panic!("no by_brand_label in {stats}"))
        .iter()
        .map(|row| {
            (row[0].as_str().unwrap().to_string(), row[1].as_str().unwrap().to_string(), row[2].as_u64().unwrap())
        })
        .collect()
}

/// (live, deleted, records) from `stats --json`.
fn counts(stats: &Value) -> (u64, u64, u64) {
    (stats["live"].as_u64().unwrap(), stats["deleted"].as_u64().unwrap(), stats["records"].as_u64().unwrap())
}

/// Check the `query --json` contract of one result.
fn check_contract(v: &Value, path: &str) {
    assert_eq!(v["path"], path, "{v}");
    assert!(is_hex64(&v["pdq"]), "pdq must be 64 lowercase hex digits: {v}");
    let q = v["quality"].as_u64().unwrap_or_else(|| panic!("quality must be an integer: {v}"));
    assert!(q <= 100, "{v}");
    assert!(v["verdict"].is_string(), "{v}");
    for m in v["matches"].as_array().unwrap_or_else(|| panic!("matches must be an array: {v}")) {
        assert!(m["id"].is_u64(), "{m}");
        assert!(m["external_id"].is_string(), "{m}");
        assert!(m["brand"].is_string(), "{m}");
        assert!(["authentic", "known_fake"].contains(&m["label"].as_str().unwrap()), "{m}");
        assert!(m["distance"].as_u64().is_some_and(|d| d <= 256), "{m}");
        let orientations =
            ["original", "rotate90", "rotate180", "rotate270", "flip_x", "flip_y", "transpose", "transverse"];
        assert!(orientations.contains(&m["orientation"].as_str().unwrap()), "{m}");
    }
}

fn first_match(v: &Value) -> &Value {
    let m = &v["matches"][0];
    assert!(m.is_object(), "expected at least one match: {v}");
    m
}

const ACME: [&str; 4] = ["--brand", "acme", "--label", "authentic"];

fn index_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["index"];
    args.extend_from_slice(&ACME);
    args.extend_from_slice(extra);
    args
}

// ---------------------------------------------------------------------------------
// 1. Indexing a folder

#[test]
fn index_walks_folders_skips_non_images_reports_broken_files_and_is_idempotent() {
    let env = Env::new();
    let cat = env.path("catalog");
    save(&photo(1, 321, 257), &cat.join("a.png"));
    save_jpeg(&photo(2, 300, 301), &cat.join("b.jpg"), 92);
    save(&photo(3, 257, 333), &cat.join("sub/c.bmp"));
    std::fs::write(cat.join("sub/deeper/d.webp").make_parent(), encode(&photo(4, 280, 280), ImageFormat::WebP))
        .unwrap();
    std::fs::write(cat.join("notes.txt"), "size chart, not an image\n").unwrap();
    std::fs::write(cat.join("sub/empty.png"), b"").unwrap();
    // A JPEG cut off half-way through its image data, as by an interrupted upload.
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&photo(5, 300, 300)).unwrap();
    std::fs::write(cat.join("sub/broken.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();

    let out = env.run(&index_args(&[s(&cat)]), 1);
    let expected = format!(
        "indexed 4 new, 0 already present, 2 skipped (not images), 1 failed — brand acme, into {}",
        env.data().display()
    );
    assert_eq!(out.stdout.trim_end(), expected, "stderr:\n{}", out.stderr);
    let broken = cat.join("sub/broken.jpg");
    let failure = format!("lookalike: {}: corrupt or truncated jpeg image", broken.display());
    assert!(out.stderr.contains(&failure), "stderr must name the broken file:\n{}", out.stderr);
    assert!(out.stderr.contains("lookalike: 1 file(s) failed"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("skipped {}: not an image", cat.join("notes.txt").display())),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("skipped {}: empty file", cat.join("sub/empty.png").display())),
        "{}",
        out.stderr
    );
    for name in ["a.png", "b.jpg", "c.bmp", "d.webp"] {
        assert!(!out.stderr.contains(name), "{name} indexed fine, yet stderr mentions it:\n{}", out.stderr);
    }

    // Idempotent: the same folder again adds nothing.
    let again = env.run(&index_args(&[s(&cat)]), 1);
    assert_eq!(summary(&again.stdout), (0, 4, 2, 1), "{}", again.stdout);

    let st = env.stats();
    assert_eq!(counts(&st), (4, 0, 4), "{st}");
    assert_eq!(by_brand_label(&st), vec![("acme".into(), "authentic".into(), 4)]);

    // The same bytes under another brand and label are separate entries; -q keeps
    // stderr free of per-file lines.
    let out = env.run(&["index", "--brand", "globex", "--label", "known-fake", "-q", s(&cat)], 1);
    assert_eq!(summary(&out.stdout), (4, 0, 2, 1), "{}", out.stdout);
    assert!(!out.stderr.contains("skipped"), "-q must not list skipped files:\n{}", out.stderr);
    assert!(out.stderr.contains("broken.jpg"), "failures are listed even with -q:\n{}", out.stderr);
    let st = env.stats();
    assert_eq!(counts(&st), (8, 0, 8), "{st}");
    assert_eq!(
        by_brand_label(&st),
        vec![("acme".into(), "authentic".into(), 4), ("globex".into(), "known_fake".into(), 4)]
    );
    let text = env.run(&["stats"], 0).stdout;
    assert!(text.contains("entries   8 live, 0 deleted (records in files: 8)"), "{text}");

    // A single good file: exit 0.
    let out = env.run(&index_args(&[s(&cat.join("a.png"))]), 0);
    assert_eq!(summary(&out.stdout), (0, 1, 0, 0), "{}", out.stdout);

    // Stored files are recognised by their SHA-256 before they are decoded: under a
    // pixel limit that would now refuse them, they are still "already present" (an
    // interrupted run of 200,000 photos resumes without hashing the first part again).
    let mut args = vec!["--max-pixels", "16"];
    args.extend(index_args(&[s(&cat)]));
    let out = env.run(&args, 1);
    assert_eq!(summary(&out.stdout), (0, 4, 2, 1), "{}\n{}", out.stdout, out.stderr);
}

// ---------------------------------------------------------------------------------
// 2. Query verdicts and the JSON contract

#[test]
fn query_verdicts_orientations_and_json_contract() {
    let env = Env::new();
    let cat = env.path("catalog");
    let shoe = photo(10, 401, 301);
    let bag = photo(11, 351, 263);
    let watch = photo(12, 333, 517);
    save(&shoe, &cat.join("shoe.png"));
    save_jpeg(&bag, &cat.join("bag.jpg"), 95);
    save(&watch, &cat.join("watch.png"));
    env.run(&index_args(&[s(&cat)]), 0);

    // (a) The catalog file itself.
    let path = cat.join("shoe.png");
    let v = env.query(&path, &[], 0);
    check_contract(&v, s(&path));
    assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED", "{v}");
    assert!(v["quality"].as_u64().unwrap() >= 50, "{v}");
    assert_eq!(v["matches"].as_array().unwrap().len(), 1, "only the shoe is within the review distance: {v}");
    let m = first_match(&v);
    assert_eq!(m["external_id"], "shoe", "{v}");
    assert_eq!(m["brand"], "acme", "{v}");
    assert_eq!(m["label"], "authentic", "{v}");
    assert_eq!(m["distance"], 0, "{v}");
    assert_eq!(m["orientation"], "original", "{v}");
    assert_eq!(m["closeness"], "flag", "{v}");
    assert_eq!(m["source"], s(&path), "{v}");
    let hashed = env.run(&["hash", "--json", s(&path)], 0).json();
    assert_eq!(v["pdq"], hashed["pdq"], "query and hash must agree on the PDQ hash");
    assert_eq!(v["quality"], hashed["quality"]);

    // (b) Mirrored left to right, shrunk and re-encoded as a JPEG at quality 70.
    let listing = env.path("listing/mirrored.jpg").make_parent();
    let mirrored = image::imageops::flip_horizontal(&bag);
    let mirrored = image::imageops::resize(&mirrored, 246, 184, image::imageops::FilterType::Triangle);
    save_jpeg(&mirrored, &listing, 70);
    let v = env.query(&listing, &[], 0);
    check_contract(&v, s(&listing));
    assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED", "{v}");
    let m = first_match(&v);
    assert_eq!(m["external_id"], "bag", "{v}");
    assert_eq!(m["orientation"], "flip_y", "{v}");
    let d = m["distance"].as_u64().unwrap();
    assert!((1..=31).contains(&d), "a re-encoded mirror is near but not identical: {v}");
    let table = env.run(&["query", s(&listing)], 0).stdout;
    assert!(table.starts_with(&format!("{}: BRAND_PHOTO_REUSED  (PDQ quality ", listing.display())), "{table}");
    assert!(table.contains("mirrored left to right"), "{table}");

    // (c) Rotated a quarter turn either way.
    for (name, img, want) in [
        ("cw.png", image::imageops::rotate90(&watch), "rotate90"),
        ("ccw.png", image::imageops::rotate270(&watch), "rotate270"),
        ("half.png", image::imageops::rotate180(&watch), "rotate180"),
    ] {
        let p = env.path(name);
        save(&img, &p);
        let v = env.query(&p, &[], 0);
        check_contract(&v, s(&p));
        assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED", "{name}: {v}");
        let m = first_match(&v);
        assert_eq!(m["external_id"], "watch", "{name}: {v}");
        assert_eq!(m["orientation"], want, "{name}: {v}");
        assert!(m["distance"].as_u64().unwrap() <= 31, "{name}: {v}");
    }
    let table = env.run(&["query", s(&env.path("cw.png"))], 0).stdout;
    assert!(table.contains("rotated 90° clockwise"), "{table}");

    // (d) An unrelated image.
    let other = env.path("other.png");
    save(&photo(999, 400, 300), &other);
    let v = env.query(&other, &[], 1);
    check_contract(&v, s(&other));
    assert_eq!(v["verdict"], "NO_MATCH", "{v}");
    assert_eq!(v["matches"], serde_json::json!([]), "{v}");
    assert!(v["quality"].as_u64().unwrap() >= 50, "{v}");
    // With --nearest the closest entries are listed anyway, far beyond review.
    let v = env.query(&other, &["--nearest", "-k", "2"], 1);
    assert_eq!(v["verdict"], "NO_MATCH", "{v}");
    assert_eq!(v["matches"].as_array().unwrap().len(), 2, "{v}");
    for m in v["matches"].as_array().unwrap() {
        assert!(m["distance"].as_u64().unwrap() > 45, "{v}");
        assert_eq!(m["closeness"], "beyond", "{v}");
    }

    // (e) A flat image has no detail to hash.
    let flat = env.path("flat.png");
    save(&RgbImage::from_pixel(300, 300, image::Rgb([200, 30, 30])), &flat);
    let v = env.query(&flat, &[], 1);
    check_contract(&v, s(&flat));
    assert_eq!(v["verdict"], "LOW_QUALITY", "{v}");
    assert!(v["quality"].as_u64().unwrap() < 50, "{v}");

    // Several images at once: one JSON line each, in order; exit 1 since one matched nothing.
    let out = env.run(&["query", "--json", s(&path), s(&other), s(&listing)], 1);
    let lines = out.json_lines();
    let verdicts: Vec<&str> = lines.iter().map(|v| v["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["BRAND_PHOTO_REUSED", "NO_MATCH", "BRAND_PHOTO_REUSED"], "{}", out.stdout);
    let paths: Vec<&str> = lines.iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [s(&path), s(&other), s(&listing)]);

    // Filters: an unknown brand, or a label nobody has, matches nothing.
    let v = env.query(&path, &["--brand", "globex"], 1);
    assert_eq!(v["verdict"], "NO_MATCH", "{v}");
    let v = env.query(&path, &["--label", "known-fake"], 1);
    assert_eq!(v["verdict"], "NO_MATCH", "{v}");
    let v = env.query(&path, &["--brand", "acme", "--label", "authentic"], 0);
    assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED", "{v}");

    // A file that cannot be read: a JSON error line and exit 1, the others still answered.
    let missing = env.path("missing.jpg");
    let out = env.run(&["query", "--json", s(&missing), s(&path)], 1);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert_eq!(lines[0]["path"], s(&missing));
    assert!(lines[0]["error"].as_str().is_some_and(|e| e.contains("No such file")), "{}", out.stdout);
    assert_eq!(lines[1]["verdict"], "BRAND_PHOTO_REUSED");
    assert!(out.stderr.contains(&format!("lookalike: {}:", missing.display())), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------
// 3. Known fakes win

#[test]
fn known_fake_beats_authentic() {
    let env = Env::new();
    let img = photo(20, 399, 301);
    save(&img, &env.path("genuine/hero.png"));
    save(&photo(21, 399, 301), &env.path("genuine/side.png"));
    save(&img, &env.path("seized/fake-hero.png"));
    env.run(&index_args(&[s(&env.path("genuine"))]), 0);
    let out = env.run(&["index", "--brand", "acme", "--label", "known-fake", s(&env.path("seized"))], 0);
    assert_eq!(summary(&out.stdout), (1, 0, 0, 0), "{}", out.stdout);
    let st = env.stats();
    assert_eq!(
        by_brand_label(&st),
        vec![("acme".into(), "authentic".into(), 2), ("acme".into(), "known_fake".into(), 1)]
    );

    // Same pixels registered as both: at equal distance the known fake comes first.
    let listing = env.path("listing.jpg");
    save_jpeg(&img, &listing, 85);
    let v = env.query(&listing, &[], 0);
    check_contract(&v, s(&listing));
    assert_eq!(v["verdict"], "KNOWN_FAKE", "{v}");
    let matches = v["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 2, "{v}");
    assert_eq!(matches[0]["label"], "known_fake", "{v}");
    assert_eq!(matches[0]["external_id"], "fake-hero", "{v}");
    assert_eq!(matches[1]["label"], "authentic", "{v}");
    assert_eq!(matches[1]["external_id"], "hero", "{v}");
    assert_eq!(matches[0]["distance"], matches[1]["distance"], "{v}");

    // Only the genuine photos: reuse, not a fake.
    let v = env.query(&listing, &["--label", "authentic"], 0);
    assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED", "{v}");
    // The other genuine photo has no fake twin.
    let v = env.query(&env.path("genuine/side.png"), &[], 0);
    assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED", "{v}");
    assert_eq!(first_match(&v)["external_id"], "side", "{v}");

    let text = env.run(&["query", s(&listing)], 0).stdout;
    assert!(text.starts_with(&format!("{}: KNOWN_FAKE  (PDQ quality 100, 2 matches)", listing.display())), "{text}");
}

// ---------------------------------------------------------------------------------
// 4. Manifest

#[test]
fn manifest_sets_external_ids_labels_and_notes() {
    let env = Env::new();
    let dir = env.path("drop");
    save(&photo(30, 300, 280), &dir.join("a.png"));
    save(&photo(31, 300, 280), &dir.join("b.png"));
    save(&photo(32, 300, 280), &dir.join("c.png"));
    let csv = dir.join("manifest.csv");
    std::fs::write(&csv, "path,external_id,label,note\na.png,SKU-001,known_fake,seized at the port\nb.png,SKU-002,,\n")
        .unwrap();

    // With a folder: listed files get the manifest's ids; c.png its stem; the CSV is
    // not an image.
    let out = env.run(&index_args(&[s(&dir), "--manifest", s(&csv)]), 0);
    assert_eq!(summary(&out.stdout), (3, 0, 1, 0), "{}", out.stdout);
    let st = env.stats();
    assert_eq!(
        by_brand_label(&st),
        vec![("acme".into(), "authentic".into(), 2), ("acme".into(), "known_fake".into(), 1)]
    );

    let v = env.query(&dir.join("a.png"), &[], 0);
    assert_eq!(v["verdict"], "KNOWN_FAKE", "{v}");
    let m = first_match(&v);
    assert_eq!(
        (&m["external_id"], &m["label"], &m["note"]),
        (&"SKU-001".into(), &"known_fake".into(), &"seized at the port".into())
    );
    let v = env.query(&dir.join("b.png"), &[], 0);
    assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED", "{v}");
    let m = first_match(&v);
    assert_eq!((&m["external_id"], &m["label"], &m["note"]), (&"SKU-002".into(), &"authentic".into(), &Value::Null));
    let v = env.query(&dir.join("c.png"), &[], 0);
    assert_eq!(first_match(&v)["external_id"], "c", "{v}");

    // Without paths exactly the listed files are indexed; relative paths are relative
    // to the CSV's folder, absolute ones are kept.
    let env2 = Env::new();
    let imgs = env2.path("imgs");
    for name in ["a.png", "b.png", "c.png"] {
        std::fs::create_dir_all(&imgs).unwrap();
        std::fs::copy(dir.join(name), imgs.join(name)).unwrap();
    }
    let csv2 = env2.path("lists/m.csv").make_parent();
    std::fs::write(
        &csv2,
        format!("{},X-1\n../imgs/b.png,X-2,authentic,\"note, with comma\"\n", imgs.join("a.png").display()),
    )
    .unwrap();
    let out = env2.run(&index_args(&["--manifest", s(&csv2)]), 0);
    assert_eq!(summary(&out.stdout), (2, 0, 0, 0), "{}", out.stdout);
    assert_eq!(counts(&env2.stats()), (2, 0, 2));
    let v = env2.query(&imgs.join("a.png"), &[], 0);
    let m = first_match(&v);
    assert_eq!((&m["external_id"], &m["label"]), (&"X-1".into(), &"authentic".into()), "{v}");
    let v = env2.query(&imgs.join("b.png"), &[], 0);
    let m = first_match(&v);
    assert_eq!((&m["external_id"], &m["note"]), (&"X-2".into(), &"note, with comma".into()), "{v}");
    let v = env2.query(&imgs.join("c.png"), &[], 1);
    assert_eq!(v["verdict"], "NO_MATCH", "c.png is not in the manifest: {v}");

    // A bad label is an error naming the line; nothing is written.
    let bad = env.path("bad.csv");
    std::fs::write(&bad, "path,external_id,label\ndrop/a.png,Z-1,counterfeit\n").unwrap();
    let out = env.run(&index_args(&["--manifest", s(&bad)]), 2);
    assert!(out.stderr.contains("line 2") && out.stderr.contains("unknown label \"counterfeit\""), "{}", out.stderr);
    // A listed file that does not exist.
    std::fs::write(&bad, "drop/nope.png,Z-2\n").unwrap();
    let out = env.run(&index_args(&["--manifest", s(&bad)]), 2);
    assert!(out.stderr.contains("line 1") && out.stderr.contains("nope.png"), "{}", out.stderr);
    assert_eq!(counts(&env.stats()), (3, 0, 3));
}

// ---------------------------------------------------------------------------------
// 5. Delete and compact

#[test]
fn delete_by_external_id_then_compact() {
    let env = Env::new();
    let cat = env.path("catalog");
    for (i, name) in ["x", "y", "z"].iter().enumerate() {
        save(&photo(40 + i as u64, 320, 241), &cat.join(format!("{name}.png")));
    }
    env.run(&index_args(&[s(&cat)]), 0);
    let y = cat.join("y.png");
    let before = env.query(&y, &[], 0);
    let y_id = first_match(&before)["id"].as_u64().unwrap();

    let out = env.run(&["delete", "--brand", "acme", "--external-id", "y"], 0);
    assert_eq!(out.stdout.trim_end(), format!("deleted 1 entry (id {y_id}); run `lookalike compact` to reclaim space"));
    let v = env.query(&y, &[], 1);
    assert_eq!(v["verdict"], "NO_MATCH", "a deleted entry must not match: {v}");
    let v = env.query(&y, &["--nearest", "-k", "5"], 1);
    assert!(v["matches"].as_array().unwrap().iter().all(|m| m["external_id"] != "y"), "{v}");

    // Again: nothing left to delete.
    let out = env.run(&["delete", "--brand", "acme", "--external-id", "y"], 1);
    assert!(out.stderr.contains("no live entry matches; nothing deleted"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    env.run(&["delete", "--brand", "nobody", "--external-id", "x"], 1);
    env.run(&["delete", "--id", "9999"], 1);
    assert_eq!(counts(&env.stats()), (2, 1, 3));

    let out = env.run(&["compact"], 0);
    assert_eq!(
        out.stdout.trim_end(),
        format!("compacted {}: dropped 1 deleted records, 2 remain", env.data().display())
    );
    let st = env.stats();
    assert_eq!(counts(&st), (2, 1, 2), "{st}");
    assert_eq!(st["manifest"]["generation"], 2, "compaction writes a new generation: {st}");
    for name in ["x", "z"] {
        let v = env.query(&cat.join(format!("{name}.png")), &[], 0);
        assert_eq!(first_match(&v)["external_id"], name, "{v}");
    }
    env.run(&["query", s(&y)], 1);

    // Deleting by id works too, and re-indexing brings a deleted photo back as a new entry.
    let x_id = first_match(&env.query(&cat.join("x.png"), &[], 0))["id"].as_u64().unwrap();
    let out = env.run(&["delete", "--id", &x_id.to_string()], 0);
    assert!(out.stdout.starts_with(&format!("deleted 1 entry (id {x_id})")), "{}", out.stdout);
    let out = env.run(&index_args(&[s(&cat)]), 0);
    assert_eq!(summary(&out.stdout), (2, 1, 0, 0), "{}", out.stdout);
    let v = env.query(&y, &[], 0);
    let new_id = first_match(&v)["id"].as_u64().unwrap();
    assert!(new_id > y_id, "ids are never reused: {v}");
    let st = env.stats();
    assert_eq!((st["live"].as_u64(), st["deleted"].as_u64()), (Some(3), Some(2)), "{st}");
}

/// Compaction drops the records of deleted entries. If the highest entry id was
/// deleted, the next writable open must not bring its record back.
#[test]
fn compaction_stays_compacted_after_the_next_write() {
    let env = Env::new();
    let cat = env.path("catalog");
    for (i, name) in ["x", "y", "z"].iter().enumerate() {
        save(&photo(50 + i as u64, 301, 257), &cat.join(format!("{name}.png")));
    }
    env.run(&index_args(&[s(&cat)]), 0);
    env.run(&["delete", "--brand", "acme", "--external-id", "z"], 0);
    env.run(&["compact"], 0);
    assert_eq!(counts(&env.stats()), (2, 1, 2));
    // Any writable open, e.g. a delete that deletes nothing.
    env.run(&["delete", "--id", "9999"], 1);
    assert_eq!(counts(&env.stats()), (2, 1, 2), "the deleted entry's record came back");
}

// ---------------------------------------------------------------------------------
// 6. hash

#[test]
fn hash_matches_the_reference_and_reports_unreadable_input() {
    let env = Env::new();
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let astronaut_ref = reference
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["file"] == "astronaut.jpg")
        .expect("reference.json has astronaut.jpg");
    let astronaut = fixture("astronaut.jpg");
    let v = env.run(&["hash", "--json", "--orientations", s(&astronaut)], 0).json();
    // Within a few bits: a JPEG is hashed from its own luminance channel, the reference
    // from Pillow's RGB (tests/pdq_reference.rs holds the exact bounds).
    let bits = |a: &Value, b: &Value| {
        let (a, b) = (a.as_str().unwrap().parse::<Hash256>().unwrap(), b.as_str().unwrap().parse::<Hash256>().unwrap());
        a.distance(&b)
    };
    assert!(bits(&v["pdq"], &astronaut_ref["pdq"]) <= 4, "{v}");
    assert_eq!(v["quality"], astronaut_ref["quality"], "{v}");
    assert_eq!((&v["width"], &v["height"], &v["format"]), (&512.into(), &512.into(), &"jpeg".into()), "{v}");
    assert!(v["phash"].as_str().is_some_and(|p| p.len() == 16), "{v}");
    // The eight orientations, in the reference's order.
    let names = ["original", "rotate90", "rotate180", "rotate270", "flip_x", "flip_y", "transpose", "transverse"];
    for (name, want) in names.iter().zip(astronaut_ref["dihedral"].as_array().unwrap()) {
        assert!(bits(&v["orientations"][name], want) <= 4, "orientation {name}: {v}");
    }

    // Text output.
    let text = env.run(&["hash", s(&astronaut)], 0).stdout;
    assert!(text.contains(&format!("  pdq      {}", v["pdq"].as_str().unwrap())), "{text}");
    assert!(text.contains("  size     512×512 jpeg"), "{text}");

    // Standard input.
    let bytes = std::fs::read(&astronaut).unwrap();
    let out = env.run_with_stdin(&["hash", "--json", "-"], Some(&bytes), 0);
    assert_eq!(out.json()["pdq"], v["pdq"]);
    assert_eq!(out.json()["path"], "-");

    // A zero-byte file and a text file: exit 1, one clear line each, the good file still hashed.
    let empty = env.path("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text_file = env.path("readme.png");
    std::fs::write(&text_file, "this is not a picture\n").unwrap();
    let out = env.run(&["hash", "--json", s(&empty)], 1);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.trim_end(), format!("lookalike: {}: empty input: zero bytes", empty.display()));
    let out = env.run(&["hash", s(&text_file)], 1);
    assert!(
        out.stderr.starts_with(&format!(
            "lookalike: {}: not a supported image (JPEG, PNG, WebP, GIF, BMP or TIFF)",
            text_file.display()
        )),
        "{}",
        out.stderr
    );
    let out = env.run(&["hash", "--json", s(&empty), s(&astronaut), s(&text_file)], 1);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    assert_eq!(lines[0]["pdq"], v["pdq"]);
    assert_eq!(out.stderr.lines().count(), 2, "{}", out.stderr);
    let out = env.run(&["hash", s(&env.path("missing.png"))], 1);
    assert!(out.stderr.contains("missing.png") && out.stderr.contains("No such file"), "{}", out.stderr);
    let out = env.run_with_stdin(&["hash", "-"], Some(b""), 1);
    assert!(out.stderr.contains("lookalike: -: empty input: zero bytes"), "{}", out.stderr);

    // Query from standard input.
    save(&image::open(&astronaut).unwrap().to_rgb8(), &env.path("catalog/astronaut.png"));
    env.run(&index_args(&[s(&env.path("catalog"))]), 0);
    let out = env.run_with_stdin(&["query", "--json", "-"], Some(&bytes), 0);
    let v = out.json();
    check_contract(&v, "-");
    assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED", "{v}");
    assert_eq!(first_match(&v)["external_id"], "astronaut", "{v}");
    assert!(first_match(&v)["distance"].as_u64().unwrap() <= 8, "a PNG copy of the same JPEG: {v}");
    let out = env.run_with_stdin(&["query", "-"], Some(b"GIF89a but not really"), 1);
    assert!(out.stderr.starts_with("lookalike: -: "), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------
// 7. A killed `index` run

/// Records committed to the current `file` ("codes" or "refs"; the header's count), 0
/// if none yet. A batch is appended to the codes file first, then to the refs file.
fn committed_records(data: &Path, file: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(data.join("manifest.json")) else { return 0 };
    let Ok(manifest) = serde_json::from_str::<Value>(&text) else { return 0 };
    let Some(name) = manifest[file].as_str() else { return 0 };
    let Ok(bytes) = std::fs::read(data.join(name)) else { return 0 };
    bytes.get(16..24).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

#[test]
fn index_killed_mid_run_recovers_without_loss_or_duplicates() {
    const N: u64 = 300;
    let env = Env::new();
    let bulk = env.path("bulk");
    std::fs::create_dir_all(&bulk).unwrap();
    for i in 0..N {
        save_jpeg(&photo(10_000 + i, 256, 256), &bulk.join(format!("p{i:03}.jpg")), 85);
    }
    let started = std::time::Instant::now();
    // Kill once the run has committed this many more records to this file than it
    // started with. Watching the refs file, the kill lands after a whole batch (mostly
    // while the next one is hashed); watching the codes file, it lands between the two
    // appends of one batch.
    let mut kills = 0;
    for (file, after) in [("refs", 1), ("refs", 40), ("codes", 90)] {
        let base = committed_records(&env.data(), "refs");
        let mut child = env
            .command(&["index", "--brand", "acme", "--label", "authentic", "--batch", "8", "-q", s(&bulk)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let killed = loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Finished before the kill point: fine, but it must have succeeded.
                assert!(status.success(), "index exited with {status} before being killed");
                break false;
            }
            if committed_records(&env.data(), file) >= base + after {
                child.kill().unwrap();
                let status = child.wait().unwrap();
                break status.code().is_none();
            }
            assert!(std::time::Instant::now() < deadline, "index made no progress in 60 s");
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        kills += usize::from(killed);

        // The index opens read-only right after the crash.
        let out = env.run_raw(&["stats", "--json"]);
        assert_eq!(out.code, 0, "stats after the kill:\n{}", out.stderr);
        let st = out.json();
        let (live, deleted, records) = counts(&st);
        assert_eq!(deleted, 0, "{st}");
        assert!(live <= N && records <= live, "records past the catalog: {st}");
        // Watching the codes file, the kill may land between the codes and refs appends
        // of one batch (8 files): those codes have no refs yet and are not records.
        let in_flight = if file == "codes" { 8 } else { 0 };
        assert!(records + in_flight >= base + after.min(N - base), "{st}");
        // Files are indexed in name order: the first is stored, and findable.
        let v = env.query(&bulk.join("p000.jpg"), &[], 0);
        assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED", "{v}");
        assert_eq!(first_match(&v)["external_id"], "p000", "{v}");
        if live < N {
            let v = env.query(&bulk.join(format!("p{:03}.jpg", N - 1)), &[], 1);
            assert_eq!(v["verdict"], "NO_MATCH", "not indexed yet: {v}");
        }
    }

    // Run to completion: everything is either already there or new, nothing fails.
    let out = env.run(&index_args(&["-q", s(&bulk)]), 0);
    let (new, present, skipped, failed) = summary(&out.stdout);
    assert_eq!((skipped, failed), (0, 0), "{}", out.stdout);
    assert_eq!(new + present, N, "{}", out.stdout);
    let st = env.stats();
    assert_eq!(counts(&st), (N, 0, N), "exactly {N} entries and records, no duplicates: {st}");
    assert_eq!(by_brand_label(&st), vec![("acme".into(), "authentic".into(), N)]);
    for i in [0, N / 2, N - 1] {
        let v = env.query(&bulk.join(format!("p{i:03}.jpg")), &[], 0);
        assert_eq!(v["matches"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(first_match(&v)["external_id"], format!("p{i:03}"), "{v}");
        assert_eq!(first_match(&v)["distance"], 0, "{v}");
    }
    // And once more: all present.
    let out = env.run(&index_args(&["-q", s(&bulk)]), 0);
    assert_eq!(summary(&out.stdout), (0, N, 0, 0), "{}", out.stdout);
    assert!(kills >= 1, "no run was killed mid-way ({:?}): the kill points came too late", started.elapsed());
    eprintln!("killed {kills} of 3 runs in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------
// 8. Usage errors

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    let img = env.path("a.png");
    save(&photo(60, 300, 300), &img);

    // Before any index exists.
    let out = env.run(&["stats"], 2);
    assert!(out.stderr.contains("no index at") && out.stderr.contains("lookalike index"), "{}", out.stderr);
    env.run(&["query", s(&img)], 2);

    let out = env.run(&["index", s(&img)], 2);
    assert!(out.stderr.contains("--brand"), "{}", out.stderr);
    let out = env.run(&["index", "--brand", "acme", s(&img)], 2);
    assert!(out.stderr.contains("--label"), "{}", out.stderr);
    let out = env.run(&["index", "--brand", "acme", "--label", "fake", s(&img)], 2);
    assert!(out.stderr.contains("invalid value 'fake'"), "{}", out.stderr);
    let out = env.run(&["index", "--brand", "  ", "--label", "authentic", s(&img)], 2);
    assert!(out.stderr.contains("--brand is empty"), "{}", out.stderr);
    let out = env.run(&["index", "--brand", "acme", "--label", "authentic"], 2);
    assert!(out.stderr.contains("nothing to index"), "{}", out.stderr);
    let out = env.run(&index_args(&["--batch", "0", s(&img)]), 2);
    assert!(out.stderr.contains("--batch must be at least 1"), "{}", out.stderr);
    let out = env.run(&index_args(&[s(&env.path("nowhere"))]), 2);
    assert!(out.stderr.contains("nowhere"), "{}", out.stderr);
    assert!(!env.data().join("catalog.sqlite").exists(), "a failed command line must not create an index");

    env.run(&index_args(&[s(&img)]), 0);
    let out = env.run(&["query", "--flag", "50", "--review", "40", s(&img)], 2);
    assert!(out.stderr.contains("flag distance 50 is above review distance 40"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let out = env.run(&["query", "--review", "200", s(&img)], 2);
    assert!(out.stderr.contains("review distance 200 is over 128"), "{}", out.stderr);
    let out = env.run(&["query", "-k", "0", s(&img)], 2);
    assert!(out.stderr.contains("-k must be between 1 and 1000"), "{}", out.stderr);
    env.run(&["query", "--min-quality", "101", s(&img)], 2);
    env.run(&["query"], 2);
    env.run(&["query", "--engine", "hnsw", s(&img)], 2);
    // No graph built: reported per image (exit 1), with what to do.
    let out = env.run(&["query", "--nearest", "--engine", "hnsw", s(&img)], 2);
    assert!(out.stderr.contains("build it with `lookalike hnsw`"), "{}", out.stderr);
    env.run(&["query", "--flag", "-3", s(&img)], 2);
    env.run(&["hash"], 2);
    env.run(&["delete"], 2);
    env.run(&["delete", "--brand", "acme"], 2);
    env.run(&["delete", "--external-id", "a"], 2);
    env.run(&["delete", "--id", "1", "--brand", "acme", "--external-id", "a"], 2);
    env.run(&["frobnicate"], 2);
    env.run(&[], 2);
    // Help and version are not errors.
    let out = env.run(&["--help"], 0);
    assert!(out.stdout.contains("Exit codes: 0 ok; 1"), "{}", out.stdout);
    let out = env.run(&["--version"], 0);
    assert!(out.stdout.starts_with("lookalike "), "{}", out.stdout);
    // None of that touched the index.
    assert_eq!(counts(&env.stats()), (1, 0, 1));
}

/// A crash between appending a batch's codes and its refs leaves the codes file one
/// batch ahead. A writable open trims it; read-only opens (stats, query) should cope
/// too, rather than refuse the index until someone runs a writer.
#[test]
fn readers_open_an_index_whose_refs_append_was_interrupted() {
    let env = Env::new();
    let cat = env.path("catalog");
    for (i, name) in ["x", "y", "z"].iter().enumerate() {
        save(&photo(70 + i as u64, 301, 257), &cat.join(format!("{name}.png")));
    }
    env.run(&index_args(&[s(&cat)]), 0);
    // Roll the refs file back by one record, as if the process died before committing it.
    let refs = env.data().join("refs-1.bin");
    let mut b = std::fs::read(&refs).unwrap();
    let count = u64::from_le_bytes(b[16..24].try_into().unwrap());
    assert_eq!(count, 3);
    let crc = crc32fast::hash(&b[4096..4096 + 2 * 16]);
    b[16..24].copy_from_slice(&2u64.to_le_bytes());
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32fast::hash(&b[0..28]);
    b[28..32].copy_from_slice(&header_crc.to_le_bytes());
    std::fs::write(&refs, &b).unwrap();

    assert_eq!(counts(&env.stats()), (3, 0, 2));
    let v = env.query(&cat.join("x.png"), &[], 0);
    assert_eq!(first_match(&v)["external_id"], "x", "{v}");
}

/// A crash while creating a new index, after the record files were created but before
/// the manifest naming them was stored, must not leave a directory that can never be
/// opened again.
#[test]
fn index_creation_interrupted_before_the_manifest_can_be_retried() {
    let env = Env::new();
    let img = env.path("a.png");
    save(&photo(80, 300, 300), &img);
    std::fs::create_dir_all(env.data()).unwrap();
    std::fs::write(env.data().join("codes-1.bin"), b"").unwrap();
    let out = env.run(&index_args(&[s(&img)]), 0);
    assert_eq!(summary(&out.stdout), (1, 0, 0, 0));
}

/// A JPEG cut off in the middle of its image data (a partial upload) is refused, not
/// hashed as the different, half-grey picture a lenient decoder makes of it.
#[test]
fn a_jpeg_truncated_mid_scan_is_a_failure() {
    let env = Env::new();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&photo(90, 384, 320)).unwrap();
    let cut = env.path("cut.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
    let out = env.run(&["hash", s(&cut)], 1);
    assert!(
        out.stderr.starts_with(&format!("lookalike: {}: corrupt or truncated jpeg image", cut.display()))
            && out.stderr.contains("truncated file"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    let out = env.run(&index_args(&[s(&cut)]), 1);
    assert_eq!(summary(&out.stdout), (0, 0, 0, 1));
    // Everything up to the end-of-image marker is there: fine, even with trailing bytes.
    let whole = env.path("whole.jpg");
    let mut padded = jpeg.clone();
    padded.extend_from_slice(b"\0\0trailing junk");
    std::fs::write(&whole, &padded).unwrap();
    let out = env.run(&index_args(&[s(&whole)]), 0);
    assert_eq!(summary(&out.stdout), (1, 0, 0, 0));
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    // `lookalike query --json … | head -1`: once the reader is gone, the rest of the
    // output has nowhere to go; the command stops without a panic, exit code 0.
    let env = Env::new();
    let cat = env.path("catalog");
    save(&photo(7, 320, 240), &cat.join("a.png"));
    env.run(&index_args(&[s(&cat)]), 0);
    let image = cat.join("a.png");
    let mut args = vec!["query", "--json"];
    // Enough images that the command is still writing when the reader leaves.
    args.extend(std::iter::repeat_n(s(&image), 200));
    let mut child = env.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.contains("\"verdict\""), "{first}");
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
