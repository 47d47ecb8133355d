//! The moderator page in a real browser. The real binary indexes a small catalog and
//! serves it; headless Chromium, driven over CDP by `headless_chrome`, uploads an edited
//! copy of a catalog photo and the test checks what a moderator sees: the verdict, the
//! match cards with their thumbnails and confidence, the side-by-side comparison (by
//! mouse and by keyboard) with the evidence drawn on both pictures (the fitted outline,
//! turned with the listing when it is lined up; for a crop, and for a copy with a part
//! replaced, that part), a narrow window, an API error, pasting and dropping an image,
//! and the catalog view down to deleting an entry.
//!
//! Needs Debian's `chromium` package (or `CHROME=/path/to/chrome`); without it the test
//! fails and says so. The screenshot goes to `target/browser-test/moderator.png`;
//! `LOOKALIKE_UPDATE_SCREENSHOT=1` also copies it to `docs/moderator-page.png`.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::Emulation;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

use common::fixture;

const BIN: &str = env!("CARGO_BIN_EXE_lookalike");

const NO_CHROMIUM: &str = "this test drives the moderator page in headless Chromium: install Debian's \
     `chromium` package (apt-get install chromium), or set CHROME to a Chrome/Chromium binary";

/// How long the page gets for any one step (a match takes milliseconds).
const STEP: Duration = Duration::from_secs(15);

/// `lookalike serve`, killed when dropped (also when the test panics).
struct Server {
    child: Child,
    http: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the binary in `dir` to completion; panic with its output if it fails.
fn lookalike(dir: &Path, args: &[&str]) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env_remove("LOOKALIKE_SERVER")
        .env_remove("LOOKALIKE_DATA")
        .stdin(Stdio::null())
        .output()
        .expect("running lookalike");
    assert!(
        out.status.success(),
        "lookalike {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start `lookalike serve` on free loopback ports and wait for its HTTP address.
fn serve(dir: &Path) -> Server {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(["--data", "data", "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .env_remove("LOOKALIKE_SERVER")
        .env_remove("LOOKALIKE_DATA")
        .env("RUST_LOG", "lookalike=info,warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting lookalike serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut server = Server { child, http: String::new() };
    // Keep draining stderr for the server's whole life, so that it never blocks on a full pipe.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    while server.http.is_empty() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(rest) = line.split("moderator page on http://").nth(1) {
                    server.http = rest.split('/').next().unwrap_or_default().to_string();
                }
                log.push(line);
            }
            Err(_) => panic!("lookalike serve did not report its HTTP address; its log:\n{}", log.join("\n")),
        }
    }
    assert!(log.iter().any(|l| l.contains("serving gRPC on ")), "no gRPC address in the log:\n{}", log.join("\n"));
    server
}

/// The Chromium binary: $CHROME, `chromium` on PATH, or Debian's /usr/bin/chromium.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROME").map(PathBuf::from).filter(|p| p.is_file()) {
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file());
    on_path.or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!("no Chromium found (looked at $CHROME, `chromium` on PATH and /usr/bin/chromium): {NO_CHROMIUM}")
    })
}

fn launch_browser() -> Browser {
    let path = chromium();
    // A binary that cannot even print its version (missing, or missing libraries) fails
    // here at once, rather than after the launcher's long wait for a DevTools address.
    let version = Command::new(&path).arg("--version").stdin(Stdio::null()).output();
    match &version {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{} --version failed ({}): {}\n{NO_CHROMIUM}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run {}: {e}\n{NO_CHROMIUM}", path.display()),
    }
    let options = LaunchOptions::default_builder()
        .path(Some(path.clone()))
        // Port 0: Chromium picks a free port and reports it, so no retries on a taken one.
        .port(Some(0))
        .headless(true)
        // CI runs as root, where Chromium's sandbox cannot start.
        .sandbox(false)
        .window_size(Some((1280, 800)))
        .idle_browser_timeout(Duration::from_secs(120))
        .args(vec![
            OsStr::new("--disable-dev-shm-usage"),
            OsStr::new("--hide-scrollbars"),
            OsStr::new("--force-device-scale-factor=1"),
            OsStr::new("--lang=en-US"),
            OsStr::new("--no-default-browser-check"),
            OsStr::new("--disable-extensions"),
        ])
        .build()
        .expect("browser launch options");
    Browser::new(options)
        .unwrap_or_else(|e| panic!("Chromium at {} did not start ({e:#}): {NO_CHROMIUM}", path.display()))
}

/// Make the page's viewport exactly `width` × `height` CSS pixels (the window size that
/// headless Chromium is launched with includes room for browser chrome it does not draw).
fn set_viewport(tab: &Tab, width: u32, height: u32) {
    tab.call_method(Emulation::SetDeviceMetricsOverride {
        width,
        height,
        device_scale_factor: 1.0,
        mobile: false,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })
    .unwrap_or_else(|e| panic!("Emulation.setDeviceMetricsOverride: {e:#}"));
}

/// Evaluate `expr` in the page; it must produce a string (use JSON.stringify for more).
fn eval_string(tab: &Tab, expr: &str) -> String {
    let object = tab.evaluate(expr, true).unwrap_or_else(|e| panic!("evaluating {expr}: {e:#}"));
    match object.value {
        Some(Value::String(s)) => s,
        other => panic!("{expr} gave {other:?} ({:?}), not a string", object.description),
    }
}

fn eval_json(tab: &Tab, expr: &str) -> Value {
    let text = eval_string(tab, &format!("JSON.stringify({expr})"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{expr} gave {text:?}: {e}"))
}

/// Poll until `expr` is truthy in the page.
fn wait_for(tab: &Tab, expr: &str, what: &str) {
    let started = Instant::now();
    loop {
        if eval_json(tab, &format!("!!({expr})")) == Value::Bool(true) {
            return;
        }
        if started.elapsed() > STEP {
            let state = eval_json(
                tab,
                "({result: document.querySelector('#result')?.dataset.state, status: document.querySelector('#status')?.textContent, \
                  error: document.querySelector('#error')?.innerText, url: location.href})",
            );
            panic!("timed out waiting for {what} ({expr}); page state: {state}");
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}

fn click(tab: &Tab, selector: &str) {
    tab.wait_for_element(selector)
        .unwrap_or_else(|e| panic!("no {selector}: {e:#}"))
        .click()
        .unwrap_or_else(|e| panic!("clicking {selector}: {e:#}"));
}

fn upload(tab: &Tab, file: &Path) {
    let path = file.to_str().expect("UTF-8 temp path");
    tab.wait_for_element("#file-input")
        .expect("the page has #file-input")
        .set_input_files(&[path])
        .unwrap_or_else(|e| panic!("DOM.setFileInputFiles: {e:#}"));
}

fn screenshot(tab: &Tab, path: &Path) {
    // Let any image still decoding land first.
    wait_for(tab, "[...document.images].every(i => i.complete)", "images to finish loading");
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap_or_else(|e| panic!("screenshot: {e:#}"));
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => manifest.join(dir), // an absolute CARGO_TARGET_DIR replaces the base
        None => manifest.join("target"),
    }
}

/// Whether `text` reads as the page shows a confidence: "confidence 0.93" (or "> 0.99",
/// "< 0.01" at the ends).
fn is_confidence_text(text: &str) -> bool {
    let Some(value) = text.trim().strip_prefix("confidence ") else { return false };
    let value = value.strip_prefix("> ").or_else(|| value.strip_prefix("< ")).unwrap_or(value);
    value.len() == 4 && value.parse::<f64>().is_ok_and(|c| (0.0..=1.0).contains(&c))
}

/// What the comparison draws over each picture (`listing`, `stored`): the overlay's state
/// and box, the picture's box as object-fit: contain draws it (worked out here from the
/// image's box and natural size, independently of the page), and the points of the
/// fitted outline (`quad`) and of the part that differed (`differed`), in the overlay's
/// own units (CSS px from the picture's top-left corner).
fn overlays(tab: &Tab) -> Value {
    eval_json(
        tab,
        "(() => {
            const out = {};
            const box = (r) => ({left: r.left, top: r.top, width: r.width, height: r.height});
            const points = (el) => el ? el.getAttribute('points').trim().split(/\\s+/).map(p => p.split(',').map(Number)) : null;
            for (const [name, image, overlay] of [['listing', '#compare-query', '#compare-query-overlay'],
                                                  ['stored', '#compare-stored', '#compare-stored-overlay']]) {
                const img = document.querySelector(image);
                const svg = document.querySelector(overlay);
                const r = img.getBoundingClientRect();
                const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
                const [w, h] = [img.naturalWidth * scale, img.naturalHeight * scale];
                out[name] = {
                    state: svg.dataset.state, aligned: svg.dataset.aligned ?? null,
                    shown: getComputedStyle(svg).display !== 'none', label: svg.getAttribute('aria-label'),
                    picture: {left: r.left + (r.width - w) / 2, top: r.top + (r.height - h) / 2, width: w, height: h},
                    svg: box(svg.getBoundingClientRect()),
                    viewBox: svg.getAttribute('viewBox'),
                    quad: points(svg.querySelector('polygon.ov-quad')),
                    differed: points(svg.querySelector('polygon.ov-differed')),
                    shade: !!svg.querySelector('path.ov-outside'),
                    tag: svg.querySelector('text.ov-label')?.textContent ?? null,
                };
            }
            return out;
        })()",
    )
}

/// An overlay `o` (one side of [`overlays`]) is drawn, and lies exactly on its picture.
fn assert_on_picture(o: &Value, what: &str) {
    assert_eq!(o["state"], "shown", "{what}: no overlay drawn: {o:#}");
    assert_eq!(o["shown"], true, "{what}: the overlay is hidden: {o:#}");
    for key in ["left", "top", "width", "height"] {
        let (svg, picture) = (o["svg"][key].as_f64().unwrap(), o["picture"][key].as_f64().unwrap());
        assert!((svg - picture).abs() <= 1.0, "{what}: the overlay's {key} is {svg}, the picture's {picture}: {o:#}");
    }
    assert!(o["picture"]["width"].as_f64().unwrap() > 100.0, "{what}: the picture is tiny: {o:#}");
    // Its units are CSS px from the picture's corner (what [`shares`] divides by).
    let view: Vec<f64> = o["viewBox"].as_str().unwrap().split(' ').map(|v| v.parse().unwrap()).collect();
    assert_eq!(view[..2], [0.0, 0.0], "{what}: {o:#}");
    for (v, key) in view[2..].iter().zip(["width", "height"]) {
        assert!((v - o["picture"][key].as_f64().unwrap()).abs() <= 1.0, "{what}: viewBox {view:?}: {o:#}");
    }
}

/// The points of `o`'s `key` polygon, as shares of its picture's width and height.
fn shares(o: &Value, key: &str) -> Vec<(f64, f64)> {
    let (w, h) = (o["picture"]["width"].as_f64().unwrap(), o["picture"]["height"].as_f64().unwrap());
    let points = o[key].as_array().unwrap_or_else(|| panic!("no {key} polygon: {o:#}"));
    assert_eq!(points.len(), 4, "{key}: {o:#}");
    points.iter().map(|p| (p[0].as_f64().unwrap() / w, p[1].as_f64().unwrap() / h)).collect()
}

fn near(p: (f64, f64), q: (f64, f64), tolerance: f64) -> bool {
    (p.0 - q.0).abs() <= tolerance && (p.1 - q.1).abs() <= tolerance
}

fn centre(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n)
}

/// Open the comparison with the first match card, and wait until both pictures and
/// both overlays are drawn.
fn open_first_comparison(tab: &Tab) {
    click(tab, "#matches .match-card");
    wait_for(tab, "document.querySelector('#compare').open", "the comparison dialog");
    wait_for(
        tab,
        "['#compare-query', '#compare-stored'].every(s => { const i = document.querySelector(s); \
           return i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 100; }) \
         && ['#compare-query-overlay', '#compare-stored-overlay'].every(s => document.querySelector(s).dataset.state === 'shown')",
        "both pictures in the comparison, with their overlays",
    );
}

/// Upload `file` and wait for its result.
fn check_listing(tab: &Tab, file: &Path) {
    upload(tab, file);
    let name = file.file_name().unwrap().to_str().unwrap();
    wait_for(
        tab,
        &format!(
            "document.querySelector('#result').dataset.state === 'done' \
             && document.querySelector('#query-name').textContent === '{name}'"
        ),
        &format!("the result for {name}"),
    );
}

/// A small catalog in `dir/data`: four authentic acme photos and one known fake. Sources
/// are recorded relative to `dir`, so no temp path shows on the page.
fn build_catalog(dir: &Path) {
    let authentic = dir.join("catalog");
    let fakes = dir.join("fakes");
    std::fs::create_dir_all(&authentic).unwrap();
    std::fs::create_dir_all(&fakes).unwrap();
    for name in ["astronaut.jpg", "coffee.jpg", "chelsea.png", "camera_gray.png"] {
        std::fs::copy(fixture(name), authentic.join(name)).unwrap();
    }
    std::fs::copy(fixture("hubble_deep_field_blur.jpg"), fakes.join("hubble_deep_field_blur.jpg")).unwrap();
    lookalike(dir, &["--data", "data", "index", "catalog", "--brand", "acme", "--label", "authentic", "--quiet"]);
    lookalike(
        dir,
        &[
            "--data",
            "data",
            "index",
            "fakes/hubble_deep_field_blur.jpg",
            "--brand",
            "acme",
            "--label",
            "known-fake",
            "--quiet",
        ],
    );
}

#[test]
fn moderator_page_in_headless_chromium() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    build_catalog(tmp.path());

    // The listing: astronaut.jpg mirrored left to right and re-encoded as JPEG q70.
    let listing = tmp.path().join("listing-astronaut-mirrored.jpg");
    let photo = image::open(fixture("astronaut.jpg")).unwrap().to_rgb8();
    std::fs::write(&listing, common::jpeg(&image::imageops::flip_horizontal(&photo), 70)).unwrap();
    // Two more, for the evidence in the comparison: astronaut.jpg cropped (16 px off each
    // side of 512), and astronaut.jpg with another picture's patch (a piece of the cat)
    // pasted over the mission badge on the suit, the kind of detail-rich part a brand's
    // logo is: the matcher compares them part by part and, for the second, names that
    // part as replaced.
    let cropped = tmp.path().join("listing-astronaut-cropped.jpg");
    std::fs::write(&cropped, common::jpeg(&image::imageops::crop_imm(&photo, 16, 16, 480, 480).to_image(), 85))
        .unwrap();
    let patched = tmp.path().join("listing-astronaut-badge-replaced.jpg");
    let mut badge_replaced = photo.clone();
    let cat = image::open(fixture("chelsea.png")).unwrap().to_rgb8();
    let (badge_x, badge_y, badge_side) = (134, 344, 80);
    image::imageops::overlay(
        &mut badge_replaced,
        &image::imageops::crop_imm(&cat, 150, 60, badge_side, badge_side).to_image(),
        i64::from(badge_x),
        i64::from(badge_y),
    );
    std::fs::write(&patched, common::jpeg(&badge_replaced, 90)).unwrap();
    let not_an_image = tmp.path().join("notes.txt");
    std::fs::write(&not_an_image, "this is not an image\n").unwrap();

    let server = serve(tmp.path());
    let browser = launch_browser();
    let tab = browser.new_tab().expect("a browser tab");
    tab.set_default_timeout(STEP);
    set_viewport(&tab, 1280, 800);

    // Every uncaught exception in the page fails the test at the end.
    let exceptions = Arc::new(Mutex::new(Vec::<String>::new()));
    tab.enable_runtime().expect("Runtime.enable");
    let sink = exceptions.clone();
    tab.add_event_listener(Arc::new(move |event: &Event| {
        if let Event::RuntimeExceptionThrown(e) = event {
            let d = &e.params.exception_details;
            let what = d.exception.as_ref().and_then(|x| x.description.clone()).unwrap_or_else(|| d.text.clone());
            sink.lock().unwrap().push(format!("{what} (line {}, column {})", d.line_number, d.column_number));
        }
    }))
    .expect("listening for page exceptions");

    let url = format!("http://{}/", server.http);
    tab.navigate_to(&url).and_then(|t| t.wait_until_navigated()).unwrap_or_else(|e| panic!("opening {url}: {e:#}"));
    wait_for(&tab, "document.readyState === 'complete' && document.querySelector('#drop')", "the page");
    // The catalog summary in the header comes from /api/brands.
    wait_for(&tab, "/5 photos/.test(document.querySelector('#catalog-summary').textContent)", "the summary");

    // --- upload the edited copy through the file input ---
    // The page's own clock: from the file input's change event to the result on screen.
    eval_string(
        &tab,
        "(() => {
            document.querySelector('#file-input').addEventListener('change', () => { window.__picked = performance.now(); },
                {capture: true, once: true});
            const result = document.querySelector('#result');
            new MutationObserver((_, observer) => {
                if (['done', 'error'].includes(result.dataset.state)) {
                    window.__shown = performance.now();
                    observer.disconnect();
                }
            }).observe(result, {attributes: true, attributeFilter: ['data-state']});
            return 'ok';
        })()",
    );
    upload(&tab, &listing);
    wait_for(&tab, "['done', 'error'].includes(document.querySelector('#result').dataset.state)", "the match");
    let shown_ms = eval_json(&tab, "window.__shown - window.__picked").as_f64().expect("timings from the page");
    let result = eval_json(
        &tab,
        "(() => {
            const v = document.querySelector('#verdict');
            const q = document.querySelector('#query-image');
            return {
                state: document.querySelector('#result').dataset.state,
                error: document.querySelector('#error').innerText,
                verdict: v.dataset.verdict, verdictHidden: v.hidden, verdictText: v.innerText,
                query: {src: q.src, width: q.naturalWidth, hidden: document.querySelector('#query').hidden},
                cards: [...document.querySelectorAll('#matches .match-card')].map(c => ({
                    id: c.dataset.id, external: c.dataset.externalId, label: c.dataset.label,
                    distance: Number(c.dataset.distance), text: c.innerText,
                    view: c.querySelector('.match-view').textContent,
                    reading: c.querySelector('.match-reading').textContent,
                    confidence: c.querySelector('.match-confidence')?.textContent ?? null,
                    confidenceValue: c.querySelector('.match-confidence')?.dataset.confidence ?? null,
                    differs: !!c.querySelector('.match-differs'),
                    thumb: c.querySelector('.match-thumb').getAttribute('src'),
                    thumbUrl: c.querySelector('.match-thumb').dataset.src,
                })),
            };
        })()",
    );
    assert_eq!(result["state"], "done", "the match failed: {}", result["error"]);
    assert_eq!(result["verdict"], "BRAND_PHOTO_REUSED", "{result:#}");
    assert_eq!(result["verdictHidden"], false);
    assert!(result["verdictText"].as_str().unwrap().contains("Brand photo reused"), "{result:#}");
    assert!(result["query"]["src"].as_str().unwrap().starts_with("blob:"), "the query image is the local file");
    let cards = result["cards"].as_array().unwrap();
    assert!(!cards.is_empty(), "no match cards: {result:#}");
    let first = &cards[0];
    assert_eq!(first["external"], "astronaut", "best match: {result:#}");
    assert_eq!(first["label"], "authentic");
    assert!(first["distance"].as_u64().unwrap() <= 31, "{first}");
    assert!(first["view"].as_str().unwrap().contains("mirrored left to right"), "view: {}", first["view"]);
    assert!(!first["reading"].as_str().unwrap().is_empty());
    assert!(first["text"].as_str().unwrap().contains("Authentic"), "the label is shown in words: {first}");
    // The confidence is on the card, in words and as data; nothing differed in a mirrored copy.
    assert!(first["confidence"].as_str().is_some_and(is_confidence_text), "no confidence on the card: {first}");
    let confidence: f32 = first["confidenceValue"].as_str().unwrap().parse().unwrap();
    let flag = lookalike::matcher::Thresholds::DEFAULT_FLAG_CONFIDENCE;
    assert!((flag..=1.0).contains(&confidence), "a flagged copy with confidence {confidence}: {first}");
    assert_eq!(first["differs"], false, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    // Without API keys the thumbnail is the API's URL itself (with keys, a blob fetched with the key).
    assert_eq!(first["thumb"], format!("/api/entries/{id}/thumbnail"));
    assert_eq!(first["thumbUrl"], first["thumb"]);
    // The listing preview and the card's thumbnail really loaded.
    wait_for(&tab, "document.querySelector('#query-image').naturalWidth > 0", "the listing preview");
    wait_for(
        &tab,
        "(i => i.complete && i.naturalWidth > 0)(document.querySelector('#matches .match-card .match-thumb'))",
        "the first match's thumbnail",
    );

    let shots = target_dir().join("browser-test");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("moderator.png");
    screenshot(&tab, &shot);

    // --- the side-by-side comparison ---
    open_first_comparison(&tab);
    let compare = eval_json(
        &tab,
        "({query: document.querySelector('#compare-query').src, stored: document.querySelector('#compare-stored').dataset.src, \
          text: document.querySelector('#compare').innerText, confidence: document.querySelector('#compare-confidence').textContent, \
          legend: document.querySelector('#compare-legend').innerText})",
    );
    assert!(compare["query"].as_str().unwrap().starts_with("blob:"), "{compare:#}");
    assert_eq!(compare["stored"], format!("/api/entries/{id}/thumbnail"));
    let text = compare["text"].as_str().unwrap();
    for needle in ["astronaut", "mirrored left to right", "thumbnail", "Authentic", "acme", "catalog/astronaut.jpg"] {
        assert!(text.contains(needle), "the comparison does not mention {needle:?}:\n{text}");
    }
    assert!(compare["confidence"].as_str().is_some_and(is_confidence_text), "{compare:#}");
    assert!(text.contains("Compared part by part"), "{text}");
    assert!(compare["legend"].as_str().unwrap().contains("Matched region"), "{compare:#}");
    assert!(!compare["legend"].as_str().unwrap().contains("differs"), "{compare:#}");
    // The fitted outlines: the whole of each picture, the listing's mirrored (the catalog
    // photo's top-left corner is at the listing's top-right), and nothing differed.
    let o = overlays(&tab);
    assert_on_picture(&o["listing"], "listing");
    assert_on_picture(&o["stored"], "catalog photo");
    assert_eq!(o["listing"]["aligned"], "false", "{o:#}");
    let mirrored = [(1.0, 0.0), (0.0, 0.0), (0.0, 1.0), (1.0, 1.0)];
    for side in ["listing", "stored"] {
        let quad = shares(&o[side], "quad");
        assert!(
            quad.iter().zip(mirrored).all(|(&p, q)| near(p, q, 0.03)),
            "{side}: {quad:?} is not the mirrored frame: {o:#}"
        );
        assert_eq!(o[side]["differed"], Value::Null, "{side}: {o:#}");
    }
    screenshot(&tab, &shots.join("compare.png"));
    // Lined up with the catalog photo (the listing is shown mirrored back), the listing's
    // outline is turned with it: the catalog photo's top-left corner is top-left again.
    click(&tab, "#compare-align");
    wait_for(
        &tab,
        "document.querySelector('#compare-query-overlay').dataset.aligned === 'true' \
         && document.querySelector('#compare-query').src === document.querySelector('#compare-query').currentSrc \
         && document.querySelector('#compare-query').complete",
        "the listing lined up, with its overlay",
    );
    let o = overlays(&tab);
    assert_on_picture(&o["listing"], "lined-up listing");
    let quad = shares(&o["listing"], "quad");
    let upright = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)];
    assert!(quad.iter().zip(upright).all(|(&p, q)| near(p, q, 0.03)), "lined up: {quad:?}: {o:#}");
    assert!(eval_string(&tab, "document.querySelector('#compare-legend').innerText").contains("turned with it"));
    click(&tab, "#compare-align");
    wait_for(
        &tab,
        "document.querySelector('#compare-query-overlay').dataset.aligned === 'false'",
        "the listing as uploaded",
    );
    let quad = shares(&overlays(&tab)["listing"], "quad");
    assert!(near(quad[0], (1.0, 0.0), 0.03), "as uploaded again: {quad:?}");
    tab.press_key("Escape").expect("pressing Escape");
    wait_for(&tab, "!document.querySelector('#compare').open", "Esc to close the comparison");
    // The keyboard way: a focused card opens with Enter, and focus comes back to it after Esc.
    eval_string(&tab, "(document.querySelector('#matches .match-card').focus(), 'ok')");
    tab.press_key("Enter").expect("pressing Enter");
    wait_for(&tab, "document.querySelector('#compare').open", "Enter to open the comparison");
    tab.press_key("Escape").expect("pressing Escape");
    wait_for(
        &tab,
        "!document.querySelector('#compare').open && document.activeElement === document.querySelector('#matches .match-card')",
        "Esc to close the comparison and give focus back to the card",
    );

    // --- a narrow window: one column, nothing wider than the screen ---
    set_viewport(&tab, 390, 800);
    wait_for(&tab, "innerWidth === 390", "the narrow viewport");
    let overflow = eval_json(
        &tab,
        "({page: document.documentElement.scrollWidth, wide: [...document.querySelectorAll('body *')] \
           .filter(e => e.getBoundingClientRect().right > innerWidth + 1 && !e.closest('.visually-hidden, .icon-sprite, dialog:not([open])')) \
           .slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)})",
    );
    assert_eq!(overflow["page"], 390, "the page is wider than a narrow window: {overflow}");
    assert_eq!(overflow["wide"], serde_json::json!([]), "elements stick out of a narrow window: {overflow}");
    screenshot(&tab, &shots.join("moderator-narrow.png"));
    set_viewport(&tab, 1280, 800);

    // --- an API error is shown, not swallowed ---
    upload(&tab, &not_an_image);
    wait_for(&tab, "document.querySelector('#result').dataset.state === 'error'", "the error");
    let error = eval_json(
        &tab,
        "(e => ({hidden: e.hidden, status: e.dataset.status, code: e.dataset.code, text: e.innerText, \
          verdictHidden: document.querySelector('#verdict').hidden}))(document.querySelector('#error'))",
    );
    assert_eq!(error["hidden"], false, "{error:#}");
    assert_eq!(error["status"], "400", "{error:#}");
    assert_eq!(error["code"], "InvalidArgument", "{error:#}");
    assert!(error["text"].as_str().unwrap().contains("not a supported image"), "{error:#}");
    assert_eq!(error["verdictHidden"], true, "no stale verdict beside an error");

    // --- pasting an image (Ctrl+V) and dropping one on the drop zone ---
    // Synthetic clipboard and drag events carrying a File, made from catalog thumbnails.
    let send = |event: &str, external_id: &str, name: &str| {
        eval_string(
            &tab,
            &format!(
                "(async () => {{
                    const list = await (await fetch('/api/entries?brand=acme&limit=50')).json();
                    const entry = list.entries.find(e => e.external_id === '{external_id}');
                    const blob = await (await fetch(entry.thumbnail)).blob();
                    const data = new DataTransfer();
                    data.items.add(new File([blob], '{name}', {{type: 'image/jpeg'}}));
                    if ('{event}' === 'paste') {{
                        document.dispatchEvent(new ClipboardEvent('paste', {{clipboardData: data, bubbles: true}}));
                    }} else {{
                        const drop = document.querySelector('#drop');
                        for (const type of ['dragenter', 'dragover', 'drop']) {{
                            drop.dispatchEvent(new DragEvent(type, {{dataTransfer: data, bubbles: true, cancelable: true}}));
                        }}
                    }}
                    return 'ok';
                }})()"
            ),
        )
    };
    let first_match = "document.querySelector('#matches .match-card')?.dataset.externalId";
    send("paste", "coffee", "image.png");
    wait_for(
        &tab,
        &format!(
            "document.querySelector('#result').dataset.state === 'done' && {first_match} === 'coffee' \
             && document.querySelector('#query-name').textContent === 'Pasted image'"
        ),
        "the pasted image's result",
    );
    send("drop", "chelsea", "dropped-chelsea.jpg");
    wait_for(
        &tab,
        &format!(
            "document.querySelector('#result').dataset.state === 'done' && {first_match} === 'chelsea' \
             && document.querySelector('#query-name').textContent === 'dropped-chelsea.jpg' \
             && !document.querySelector('#drop').classList.contains('is-dragging')"
        ),
        "the dropped image's result",
    );

    // --- the evidence: a crop ---
    // The listing shows the middle of the catalog photo: the listing's outline on the
    // catalog photo is inside it (the rest shaded); the catalog photo's outline on the
    // listing runs past the listing's edges, and the overlay stops at the picture.
    check_listing(&tab, &cropped);
    assert_eq!(eval_string(&tab, "document.querySelector('#matches .match-card').dataset.externalId"), "astronaut");
    open_first_comparison(&tab);
    let o = overlays(&tab);
    assert_on_picture(&o["listing"], "cropped listing");
    assert_on_picture(&o["stored"], "catalog photo of the crop");
    let inner = shares(&o["stored"], "quad");
    let crop = 16.0 / 512.0;
    let expected = [(crop, crop), (1.0 - crop, crop), (1.0 - crop, 1.0 - crop), (crop, 1.0 - crop)];
    assert!(
        inner.iter().zip(expected).all(|(&p, q)| near(p, q, 0.02)),
        "the crop on the catalog photo: {inner:?}: {o:#}"
    );
    assert!(inner.iter().all(|p| (0.0..=1.0).contains(&p.0) && (0.0..=1.0).contains(&p.1)), "{inner:?}");
    assert_eq!(o["stored"]["shade"], true, "{o:#}");
    let outer = shares(&o["listing"], "quad");
    assert!(outer[0].0 < 0.0 && outer[0].1 < 0.0 && outer[2].0 > 1.0 && outer[2].1 > 1.0, "{outer:?}: {o:#}");
    let text = eval_string(&tab, "document.querySelector('#compare').innerText");
    assert!(text.contains("a crop"), "the legend does not say the listing is a crop:\n{text}");
    assert!(is_confidence_text(&eval_string(&tab, "document.querySelector('#compare-confidence').textContent")));
    screenshot(&tab, &shots.join("compare-crop.png"));
    tab.press_key("Escape").expect("pressing Escape");
    wait_for(&tab, "!document.querySelector('#compare').open", "Esc to close the comparison");

    // --- the evidence: a part replaced ---
    // Not flagged: a moderator looks, and is shown which part differs on both pictures.
    check_listing(&tab, &patched);
    let card = eval_json(
        &tab,
        "(c => ({external: c.dataset.externalId, differs: c.querySelector('.match-differs')?.textContent ?? null, \
           confidence: c.querySelector('.match-confidence')?.textContent ?? null, label: c.getAttribute('aria-label'), \
           verdict: document.querySelector('#verdict').dataset.verdict}))(document.querySelector('#matches .match-card'))",
    );
    assert_eq!(card["external"], "astronaut", "{card:#}");
    assert_eq!(card["verdict"], "REVIEW", "a copy with its badge replaced is not to be flagged: {card:#}");
    assert!(card["differs"].as_str().is_some_and(|t| t.contains("a part differs")), "{card:#}");
    assert!(card["confidence"].as_str().is_some_and(is_confidence_text), "{card:#}");
    assert!(card["label"].as_str().unwrap().contains("a part differs"), "{card:#}");
    open_first_comparison(&tab);
    let o = overlays(&tab);
    let badge = [
        badge_x as f64 / 512.0,
        badge_y as f64 / 512.0,
        (badge_x + badge_side) as f64 / 512.0,
        (badge_y + badge_side) as f64 / 512.0,
    ];
    let badge_centre = ((badge[0] + badge[2]) / 2.0, (badge[1] + badge[3]) / 2.0);
    for (side, what) in [("stored", "catalog photo"), ("listing", "listing")] {
        assert_on_picture(&o[side], what);
        let part = shares(&o[side], "differed");
        assert!(part.iter().all(|p| (0.0..=1.0).contains(&p.0) && (0.0..=1.0).contains(&p.1)), "{what}: {part:?}");
        // On the badge (the matcher outlines its cells: within a cell or so of it).
        assert!(
            near(centre(&part), badge_centre, 0.06),
            "{what}: the part {part:?} is not on the badge {badge:?}: {o:#}"
        );
        let (w, h) = (part[1].0 - part[0].0, part[3].1 - part[0].1);
        assert!((0.04..=0.4).contains(&w) && (0.04..=0.4).contains(&h), "{what}: the part is {w} × {h}: {part:?}");
        assert_eq!(o[side]["tag"], "differs", "{what}: {o:#}");
        assert!(o[side]["label"].as_str().unwrap().contains("differs"), "{what}: {o:#}");
        let quad = shares(&o[side], "quad");
        assert!(quad.iter().zip(upright).all(|(&p, q)| near(p, q, 0.03)), "{what}: {quad:?}");
    }
    let text = eval_string(&tab, "document.querySelector('#compare').innerText");
    assert!(text.contains("This part differs: another logo?"), "no legend for the part that differs:\n{text}");
    assert!(text.contains("Part that differs"), "{text}");
    assert!(is_confidence_text(&eval_string(&tab, "document.querySelector('#compare-confidence').textContent")));
    screenshot(&tab, &shots.join("compare-differed.png"));
    tab.press_key("Escape").expect("pressing Escape");
    wait_for(&tab, "!document.querySelector('#compare').open", "Esc to close the comparison");

    // --- the catalog: counts per label, the known fake, deleting it ---
    click(&tab, "#nav-catalog");
    wait_for(&tab, "document.querySelector('.count[data-brand=\"acme\"][data-label=\"known_fake\"]')", "the brands");
    wait_for(
        &tab,
        "document.querySelector('#entries-panel').dataset.state === 'done' && document.querySelectorAll('#entries .entry-card').length === 5",
        "all five entries",
    );
    screenshot(&tab, &shots.join("catalog.png"));
    let counts = eval_json(
        &tab,
        "Object.fromEntries([...document.querySelectorAll('.count[data-brand=\"acme\"]')].map(b => [b.dataset.label, b.textContent]))",
    );
    assert_eq!(counts, serde_json::json!({"authentic": "4", "known_fake": "1"}));
    click(&tab, ".count[data-brand=\"acme\"][data-label=\"known_fake\"]");
    wait_for(
        &tab,
        "document.querySelector('#entries-panel').dataset.state === 'done' && location.hash.includes('label=known_fake') \
         && document.querySelectorAll('#entries .entry-card').length === 1",
        "the known fakes",
    );
    let fake = eval_json(
        &tab,
        "(c => ({label: c.dataset.label, ext: c.dataset.externalId}))(document.querySelector('#entries .entry-card'))",
    );
    assert_eq!(fake, serde_json::json!({"label": "known_fake", "ext": "hubble_deep_field_blur"}));
    click(&tab, "#entries .entry-card");
    wait_for(&tab, "document.querySelector('#entry-dialog').open", "the entry dialog");
    click(&tab, "#entry-delete");
    wait_for(&tab, "document.querySelector('#confirm-dialog').open", "the confirmation");
    click(&tab, "#confirm-ok");
    wait_for(
        &tab,
        "!document.querySelector('#entry-dialog').open && document.querySelector('#entries-panel').dataset.state === 'done' \
         && document.querySelectorAll('#entries .entry-card').length === 0 \
         && document.querySelector('.count[data-brand=\"acme\"][data-label=\"known_fake\"]').textContent === '0'",
        "the catalog to refresh after the delete",
    );

    let exceptions = exceptions.lock().unwrap().clone();
    assert!(exceptions.is_empty(), "uncaught exceptions in the page:\n{}", exceptions.join("\n"));

    if std::env::var("LOOKALIKE_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&shot, docs.join("moderator-page.png")).unwrap();
    }
    eprintln!(
        "browser test: verdict on screen {shown_ms:.0} ms after the file was chosen; whole test {:.1} s; screenshot {}",
        started.elapsed().as_secs_f64(),
        shot.display()
    );
    assert!(shown_ms < 1000.0, "the result took {shown_ms:.0} ms to show (a moderator should see it within a second)");
    drop(browser);
    drop(server);
}
