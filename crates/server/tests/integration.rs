//! The service end to end over real HTTP on 127.0.0.1: a tiny untrained model saved as a model
//! directory, a two-brand gallery, and a server started in-process on port 0.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use image::{Rgb, RgbImage};
use proxima_index::{Calibration, Gallery};
use proxima_models::model_dir::{load_model_dir, save_model_dir};
use proxima_models::{BackboneSpec, EmbeddingConfig, EmbeddingModel};
use proxima_server::{BatchConfig, RunningServer, ServerConfig};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tch::Device;

struct Fixture {
    _dir: tempfile::TempDir,
    model: PathBuf,
    gallery: PathBuf,
}

/// A patterned 48×48 logo: `kind` picks colours and stripe direction.
fn logo(kind: u8) -> RgbImage {
    RgbImage::from_fn(48, 48, |x, y| match kind {
        0 => {
            if (x / 6 + y / 6) % 2 == 0 {
                Rgb([220, 20, 20])
            } else {
                Rgb([255, 255, 255])
            }
        }
        1 => Rgb([(x * 5) as u8, 40, 200]),
        _ => {
            if y % 8 < 4 {
                Rgb([10, 160, 30])
            } else {
                Rgb([0, 0, 0])
            }
        }
    })
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn make_model(dir: &Path, seed: i64) {
    tch::manual_seed(seed);
    let model = EmbeddingModel::new(EmbeddingConfig::new(BackboneSpec::SmallCnn { widths: vec![4, 8] }, 8), Device::Cpu).unwrap();
    save_model_dir(&model, 32, dir).unwrap();
}

/// A model and a gallery of brands "red" (logo 0) and "blue" (logo 1), threshold 0.999.
fn fixture() -> Fixture {
    tch::set_num_threads(1);
    // reqwest is built without a default TLS provider (the workspace uses ring, not aws-lc-rs).
    let _ = rustls::crypto::CryptoProvider::install_default(proxima_server::tls::ring_provider());
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    make_model(&model, 7);
    let m = load_model_dir(&model, Device::Cpu).unwrap();
    let emb = m.embed_images(&[logo(0), logo(1)]).unwrap();
    let d = emb.len() / 2;
    let mut g = Gallery::new(d, m.fingerprint().to_string()).unwrap();
    g.add("red", &emb[..d], &["red.png"]).unwrap();
    g.add("blue", &emb[d..], &["blue.png"]).unwrap();
    g.set_calibration(Some(Calibration { threshold: 0.999, target_fmr: 0.01, achieved_fmr: 0.0, fnmr: None, num_genuine: 0, num_impostor: 1 }));
    let gallery = dir.path().join("gallery");
    g.save(&gallery).unwrap();
    Fixture { _dir: dir, model, gallery }
}

fn config() -> ServerConfig {
    ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), ..Default::default() }
}

async fn serve(f: &Fixture, cfg: ServerConfig) -> RunningServer {
    let dir = f.model.clone();
    proxima_server::start(cfg, Box::new(move || load_model_dir(&dir, Device::Cpu)), &f.gallery).await.expect("server starts")
}

fn url(s: &RunningServer, path: &str) -> String {
    format!("http://{}{path}", s.addr)
}

async fn json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}")))
}

fn image_form(field: &str, bytes: Vec<u8>) -> Form {
    Form::new().part(field.to_string(), Part::bytes(bytes).file_name("logo.png"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_compare_and_gallery_crud_round_trip() {
    let f = fixture();
    let s = serve(&f, config()).await;
    let c = reqwest::Client::new();

    let (st, h) = json(c.get(url(&s, "/healthz")).send().await.unwrap()).await;
    assert_eq!((st, h["status"].as_str(), h["brands"].as_u64()), (200, Some("ok"), Some(2)));

    // Raw body: the enrolled red logo is red, with (almost) identical embedding.
    let (st, v) = json(c.post(url(&s, "/v1/identify")).body(png(&logo(0))).send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["decision"], "known", "{v}");
    assert_eq!(v["brand"], "red");
    assert!(v["similarity"].as_f64().unwrap() > 0.999);
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(v["candidates"][1]["brand"], "blue");
    assert!(v["candidates"][1]["similarity"].as_f64().unwrap() < v["similarity"].as_f64().unwrap());

    // Multipart field `image` and top_k.
    let (st, v) = json(c.post(url(&s, "/v1/identify?top_k=1")).multipart(image_form("image", png(&logo(1)))).send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["decision"].as_str(), v["brand"].as_str()), (Some("known"), Some("blue")));
    assert_eq!(v["candidates"].as_array().unwrap().len(), 1);

    // A logo never enrolled is below the 0.999 threshold: unknown.
    let (st, v) = json(c.post(url(&s, "/v1/identify")).body(png(&logo(2))).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(v["decision"], "unknown", "{v}");
    assert!(v["best_similarity"].as_f64().unwrap() < 0.999);

    // Compare: same image → same; different logos → a lower similarity.
    let form = Form::new().part("a", Part::bytes(png(&logo(0)))).part("b", Part::bytes(png(&logo(0))));
    let (st, v) = json(c.post(url(&s, "/v1/compare")).multipart(form).send().await.unwrap()).await;
    assert_eq!((st, v["decision"].as_str()), (200, Some("same")), "{v}");
    let form = Form::new().part("a", Part::bytes(png(&logo(0)))).part("b", Part::bytes(png(&logo(2))));
    let (st, v) = json(c.post(url(&s, "/v1/compare")).multipart(form).send().await.unwrap()).await;
    assert_eq!((st, v["decision"].as_str()), (200, Some("different")), "{v}");
    assert!((v["threshold"].as_f64().unwrap() - 0.999).abs() < 1e-6);

    // Enrol a new brand with two images (no retraining), persisted to the gallery file.
    let form = Form::new().part("file", Part::bytes(png(&logo(2))).file_name("g1.png")).part("file", Part::bytes(png(&logo(2))).file_name("g2.png"));
    let (st, v) = json(c.post(url(&s, "/v1/gallery/green")).multipart(form).send().await.unwrap()).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!((v["added"].as_u64(), v["rows"].as_u64(), v["brands"].as_u64()), (Some(2), Some(2), Some(3)));
    let on_disk = Gallery::load(&f.gallery).unwrap();
    assert_eq!(on_disk.brands(), ["red", "blue", "green"]);
    assert_eq!(on_disk.paths()[3], Path::new("upload/green/g2.png"));
    assert!(on_disk.calibration().is_some(), "enrolment keeps the threshold");
    let (_, v) = json(c.post(url(&s, "/v1/identify")).body(png(&logo(2))).send().await.unwrap()).await;
    assert_eq!((v["decision"].as_str(), v["brand"].as_str()), (Some("known"), Some("green")), "{v}");
    let (st, v) = json(c.get(url(&s, "/v1/gallery")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(v["rows"], 4);
    assert_eq!(v["brands"][2]["brand"], "green");

    // Delete it: gone from the answers and from the file; a second delete is 404.
    let (st, v) = json(c.delete(url(&s, "/v1/gallery/green")).send().await.unwrap()).await;
    assert_eq!((st, v["removed"].as_u64()), (200, Some(2)));
    assert_eq!(Gallery::load(&f.gallery).unwrap().brands(), ["red", "blue"]);
    let (st, v) = json(c.delete(url(&s, "/v1/gallery/green")).send().await.unwrap()).await;
    assert_eq!(st, 404);
    assert!(v["error"].as_str().unwrap().contains("green"));
    let (_, v) = json(c.post(url(&s, "/v1/identify")).body(png(&logo(2))).send().await.unwrap()).await;
    assert_eq!(v["decision"], "unknown");

    // Metrics: counts by route and status, the latency histogram, the queue gauge.
    let m = c.get(url(&s, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("proxima_http_requests_total{route=\"/v1/identify\",status=\"200\"} 5\n"), "{m}");
    assert!(m.contains("proxima_http_requests_total{route=\"/v1/gallery/{brand}\",status=\"404\"} 1\n"), "{m}");
    assert!(m.contains("proxima_http_request_duration_seconds_count{route=\"/v1/compare\"} 2\n"), "{m}");
    assert!(m.contains("proxima_queue_depth 0\n") && m.contains("proxima_gallery_brands 2\n"), "{m}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_client_error_and_the_server_survives() {
    let f = fixture();
    let s = serve(&f, ServerConfig { max_body_bytes: 64 * 1024, max_pixels: 128 * 128, ..config() }).await;
    let c = reqwest::Client::new();
    let identify = url(&s, "/v1/identify");
    let good = png(&logo(0));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("oversize body", c.post(&identify).body(vec![0u8; 100 * 1024]), 413, "length limit"),
        ("oversize multipart", c.post(&identify).multipart(image_form("image", vec![1u8; 100 * 1024])), 413, "limit"),
        ("garbage bytes", c.post(&identify).body("<html>hello</html>"), 415, "not a recognised image format"),
        ("truncated png", c.post(&identify).body(good[..good.len() / 2].to_vec()), 422, "cannot decode"),
        ("empty body", c.post(&identify), 400, "empty body"),
        ("over the pixel limit", c.post(&identify).body(png(&RgbImage::new(200, 200))), 413, "over the limit"),
        ("no image field", c.post(&identify).multipart(image_form("picture", good.clone())), 400, "\"image\" is missing"),
        ("bad top_k", c.post(format!("{identify}?top_k=abc")).body(good.clone()), 400, "top_k"),
        ("zero top_k", c.post(format!("{identify}?top_k=0")).body(good.clone()), 400, "top_k"),
        ("compare without b", c.post(url(&s, "/v1/compare")).multipart(image_form("a", good.clone())), 400, "\"b\" is missing"),
        ("compare raw body", c.post(url(&s, "/v1/compare")).body(good.clone()), 415, "multipart"),
        ("enrol truncated", c.post(url(&s, "/v1/gallery/evil")).multipart(image_form("file", good[..good.len() / 2].to_vec())), 422, "cannot decode"),
        ("enrol bad brand", c.post(url(&s, "/v1/gallery/%20padded")).multipart(image_form("file", good.clone())), 400, "invalid brand"),
        ("enrol nothing", c.post(url(&s, "/v1/gallery/x")).multipart(Form::new()), 400, "multipart"),
        ("delete unknown", c.delete(url(&s, "/v1/gallery/nobody")), 404, "not in the gallery"),
        ("unknown route", c.get(url(&s, "/v2/nothing")), 404, "no such route"),
    ];
    for (what, req, status, needle) in cases {
        let (st, v) = json(req.send().await.unwrap()).await;
        assert_eq!(st, status, "{what}: {v}");
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{what}: no error field in {v}"));
        assert!(msg.contains(needle), "{what}: {msg:?} does not mention {needle:?}");
    }
    // Nothing was enrolled by the failed requests, and the server still answers.
    assert_eq!(Gallery::load(&f.gallery).unwrap().brands(), ["red", "blue"]);
    let (st, v) = json(c.post(&identify).body(good).send().await.unwrap()).await;
    assert_eq!((st, v["brand"].as_str()), (200, Some("red")));
    let m = c.get(url(&s, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("proxima_http_requests_total{route=\"/v1/identify\",status=\"415\"} 1\n"), "{m}");
    assert!(!m.contains("status=\"500\""), "{m}");
    s.shutdown().await.unwrap();
}

/// A gate the model worker waits at before each forward pass; `entered` reports arrivals.
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    entered: Mutex<mpsc::Receiver<usize>>,
}

fn gated(cfg: ServerConfig) -> (ServerConfig, Gate) {
    let open = Arc::new((Mutex::new(false), Condvar::new()));
    let (tx, rx) = mpsc::channel();
    let o = open.clone();
    let tx = Mutex::new(tx);
    let hook = Arc::new(move |n: usize| {
        let _ = tx.lock().unwrap().send(n);
        let (m, cv) = &*o;
        let mut g = m.lock().unwrap();
        while !*g {
            g = cv.wait(g).unwrap();
        }
    });
    (ServerConfig { before_batch: Some(hook), ..cfg }, Gate { open, entered: Mutex::new(rx) })
}

impl Gate {
    /// Waits (off the async threads) until the worker has reached the gate.
    async fn wait_entered(self: &Arc<Self>) {
        let g = self.clone();
        tokio::task::spawn_blocking(move || g.entered.lock().unwrap().recv_timeout(Duration::from_secs(60)).expect("the worker reaches the gate")).await.unwrap();
    }

    fn release(&self) {
        let (m, cv) = &*self.open;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let f = fixture();
    let batch = BatchConfig { queue_capacity: 1, max_batch: 1, batch_wait: Duration::ZERO };
    let (cfg, gate) = gated(ServerConfig { batch, ..config() });
    let gate = Arc::new(gate);
    let s = serve(&f, cfg).await;
    let c = reqwest::Client::new();
    let send = |c: &reqwest::Client| c.post(url(&s, "/v1/identify")).body(png(&logo(0))).send();

    // A is taken by the worker and held at the gate; B waits in the one-slot queue.
    let a = tokio::spawn(send(&c));
    gate.wait_entered().await;
    let b = tokio::spawn(send(&c));
    let mut polls = 0;
    while s.state.queue_depth() < 1 {
        polls += 1;
        assert!(polls < 10_000, "request B never reached the queue");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // C finds the queue full.
    let r = send(&c).await.unwrap();
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let (st, v) = json(r).await;
    assert_eq!(st, 429);
    assert!(v["error"].as_str().unwrap().contains("queue is full"));

    gate.release();
    for r in [a.await.unwrap().unwrap(), b.await.unwrap().unwrap()] {
        let (st, v) = json(r).await;
        assert_eq!((st, v["brand"].as_str()), (200, Some("red")), "{v}");
    }
    let m = c.get(url(&s, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("proxima_http_requests_total{route=\"/v1/identify\",status=\"429\"} 1\n"), "{m}");
    assert!(m.contains("proxima_queue_rejected_total 1\n"), "{m}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_past_its_timeout_gets_503_and_the_next_one_succeeds() {
    let f = fixture();
    let (cfg, gate) = gated(ServerConfig { request_timeout: Duration::from_millis(300), ..config() });
    let gate = Arc::new(gate);
    let s = serve(&f, cfg).await;
    let c = reqwest::Client::new();
    // The worker is held at the gate until after the deadline, however slow the machine.
    let (st, v) = json(c.post(url(&s, "/v1/identify")).body(png(&logo(1))).send().await.unwrap()).await;
    assert_eq!(st, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("timed out"));
    gate.wait_entered().await;
    gate.release();
    let (st, v) = json(c.post(url(&s, "/v1/identify")).body(png(&logo(1))).send().await.unwrap()).await;
    assert_eq!((st, v["brand"].as_str()), (200, Some("blue")), "{v}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gallery_of_another_model_or_without_threshold_is_refused_at_start() {
    let f = fixture();
    let other = f._dir.path().join("other");
    make_model(&other, 8);
    let err = proxima_server::start(config(), Box::new(move || load_model_dir(&other, Device::Cpu)), &f.gallery).await.err().expect("mismatch refused");
    assert!(err.to_string().contains("was built with model"), "{err}");

    let mut g = Gallery::load(&f.gallery).unwrap();
    g.set_calibration(None);
    g.save(&f.gallery).unwrap();
    let dir = f.model.clone();
    let err = proxima_server::start(config(), Box::new(move || load_model_dir(&dir, Device::Cpu)), &f.gallery).await.err().expect("uncalibrated refused");
    assert!(err.to_string().contains("no calibrated threshold"), "{err}");
    // An explicit threshold makes it usable.
    let s = serve(&f, ServerConfig { threshold: Some(0.5), ..config() }).await;
    s.shutdown().await.unwrap();
}

/// With background (non-logo) examples enrolled, an image nearest to them is "unknown" even at a
/// threshold every brand passes, the background is never named nor listed as a candidate, and
/// the brand count leaves it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_nearest_the_background_is_unknown_never_a_brand() {
    let f = fixture();
    let m = load_model_dir(&f.model, Device::Cpu).unwrap();
    let mut g = Gallery::load(&f.gallery).unwrap();
    g.add(proxima_index::BACKGROUND_BRAND, &m.embed_images(&[logo(2)]).unwrap(), &["ui.png"]).unwrap();
    g.save(&f.gallery).unwrap();
    // Any cosine passes -1: only the background rule can make an answer unknown.
    let s = serve(&f, ServerConfig { threshold: Some(-1.0), ..config() }).await;
    let c = reqwest::Client::new();
    let (st, v) = json(c.post(url(&s, "/v1/identify?top_k=5")).body(png(&logo(2))).send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["decision"], "unknown", "{v}");
    assert!(v["brand"].is_null() && v["background_similarity"].as_f64().unwrap() > 0.999, "{v}");
    let cands: Vec<&str> = v["candidates"].as_array().unwrap().iter().map(|c| c["brand"].as_str().unwrap()).collect();
    assert_eq!(cands.len(), 2, "the two brands, not the background: {v}");
    assert!(!cands.contains(&proxima_index::BACKGROUND_BRAND));
    assert!((v["best_similarity"].as_f64().unwrap() - v["candidates"][0]["similarity"].as_f64().unwrap()).abs() < 1e-6);
    // A brand's own logo is still known.
    let (_, v) = json(c.post(url(&s, "/v1/identify")).body(png(&logo(1))).send().await.unwrap()).await;
    assert_eq!((v["decision"].as_str(), v["brand"].as_str()), (Some("known"), Some("blue")), "{v}");
    assert!(v.get("background_similarity").is_none(), "{v}");
    let (_, h) = json(c.get(url(&s, "/healthz")).send().await.unwrap()).await;
    assert_eq!(h["brands"].as_u64(), Some(2), "{h}");
    let (_, l) = json(c.get(url(&s, "/v1/gallery")).send().await.unwrap()).await;
    assert_eq!(l["brands"].as_array().unwrap().len(), 3, "the listing shows what is enrolled: {l}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_answers_like_the_cli_and_is_501_without_a_localiser() {
    let f = fixture();
    // An untrained localiser (random head) at a small input: the route's shape and errors are under
    // test here; what a trained one finds is measured by `proxima localiser eval`.
    let loc_dir = f.model.parent().unwrap().join("localiser");
    let cfg = proxima_detect::LocaliserConfig { input_size: 64, width16: 8, width8: 8, min_score: 0.0, ..Default::default() };
    proxima_detect::Localiser::new(cfg, None, Device::Cpu).unwrap().save(&loc_dir, Default::default(), Value::Null).unwrap();
    let dir = f.model.clone();
    let l = loc_dir.clone();
    let s = proxima_server::start_with_localiser(
        config(),
        Box::new(move || load_model_dir(&dir, Device::Cpu)),
        Some(Box::new(move || proxima_detect::load_localiser(&l, Device::Cpu).map(|(loc, _)| loc))),
        &f.gallery,
    )
    .await
    .expect("server starts");
    let c = reqwest::Client::new();
    // A "screenshot": the red logo on a white page.
    let mut page = RgbImage::from_pixel(160, 120, Rgb([255, 255, 255]));
    image::imageops::overlay(&mut page, &logo(0), 90, 40);
    let (st, v) = json(c.post(url(&s, "/v1/find?whole_image=true")).body(png(&page)).send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["image"], "upload");
    assert_eq!(v["scale"], 1.0);
    assert!((v["threshold"].as_f64().unwrap() - 0.999).abs() < 1e-6);
    let regions = v["regions"].as_array().unwrap();
    assert!(!regions.is_empty(), "the whole image is a region: {v}");
    for r in regions {
        let b: Vec<f64> = r["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert!(b.len() == 4 && b[0] >= 0.0 && b[2] <= 160.0 && b[3] <= 120.0, "{r}");
        assert!(["red", "blue"].contains(&r["best_brand"].as_str().unwrap()));
    }
    let best = regions.iter().map(|r| r["similarity"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert!((v["similarity"].as_f64().unwrap() - best).abs() < 1e-6);
    // Bad input keeps its statuses.
    assert_eq!(c.post(url(&s, "/v1/find")).body(Vec::<u8>::new()).send().await.unwrap().status().as_u16(), 400);
    assert_eq!(c.post(url(&s, "/v1/find")).body(b"not an image".to_vec()).send().await.unwrap().status().as_u16(), 415);
    s.shutdown().await.unwrap();

    let plain = serve(&f, config()).await;
    let (st, v) = json(c.post(url(&plain, "/v1/find")).body(png(&page)).send().await.unwrap()).await;
    assert_eq!(st, 501, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--localiser"));
    plain.shutdown().await.unwrap();
}

/// Starts a server with an untrained localiser (random head, small input) and `cfg`.
async fn serve_with_localiser(f: &Fixture, cfg: ServerConfig) -> RunningServer {
    let loc_dir = f.model.parent().unwrap().join("localiser");
    if !loc_dir.exists() {
        let lc = proxima_detect::LocaliserConfig { input_size: 64, width16: 8, width8: 8, min_score: 0.0, ..Default::default() };
        proxima_detect::Localiser::new(lc, None, Device::Cpu).unwrap().save(&loc_dir, Default::default(), Value::Null).unwrap();
    }
    let dir = f.model.clone();
    proxima_server::start_with_localiser(
        cfg,
        Box::new(move || load_model_dir(&dir, Device::Cpu)),
        Some(Box::new(move || proxima_detect::load_localiser(&loc_dir, Device::Cpu).map(|(loc, _)| loc))),
        &f.gallery,
    )
    .await
    .expect("server starts")
}

fn check_form(page: &RgbImage, url: &str) -> Form {
    Form::new().part("image", Part::bytes(png(page)).file_name("page.png")).text("url", url.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_flags_foreign_domains_keeps_domains_and_refuses_bad_urls() {
    let f = fixture();
    // Threshold -1: every region is a known brand, so the verdict depends on domains alone.
    let s = serve_with_localiser(&f, ServerConfig { threshold: Some(-1.0), ..config() }).await;
    let c = reqwest::Client::new();
    let mut page = RgbImage::from_pixel(160, 120, Rgb([255, 255, 255]));
    image::imageops::overlay(&mut page, &logo(0), 90, 40);
    let check = |url: &str| {
        let (c, u, form) = (c.clone(), self::url(&s, "/v1/check?whole_image=true"), check_form(&page, url));
        async move { json(c.post(u).multipart(form).send().await.unwrap()).await }
    };

    // No domains on record yet.
    let (st, v) = check("https://evil.example.com/login").await;
    assert_eq!((st, v["verdict"].as_str()), (200, Some("unknown_domain")), "{v}");
    // Domains for both brands, stored in the gallery file and listed.
    for (brand, domain) in [("red", "www.red-brand.com"), ("blue", "blue-brand.co.uk")] {
        let (st, v) = json(c.put(url(&s, &format!("/v1/gallery/{brand}/domains"))).json(&serde_json::json!({ "domains": [domain] })).send().await.unwrap()).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["domains"].as_array().unwrap().len(), 1, "{v}");
    }
    let on_disk = Gallery::load(&f.gallery).unwrap();
    assert_eq!(on_disk.domains("red")[0].as_str(), "red-brand.com", "www. is reduced to the registrable domain");
    let (_, listed) = json(c.get(url(&s, "/v1/gallery")).send().await.unwrap()).await;
    let red = listed["brands"].as_array().unwrap().iter().find(|b| b["brand"] == "red").unwrap().clone();
    assert_eq!(red["domains"], serde_json::json!(["red-brand.com"]), "{listed}");

    // The brand found, on a foreign domain: impersonation; on its own domain: consistent.
    let (st, v) = check("https://red-brand.com.login-secure.io/").await;
    assert_eq!((st, v["verdict"].as_str(), v["domain"].as_str()), (200, Some("impersonation"), Some("login-secure.io")), "{v}");
    let brand = v["brand"].as_str().unwrap().to_string();
    let own = on_disk.domains(&brand)[0].to_string();
    assert_eq!(v["brand_domains"], serde_json::json!([own]));
    let region = v["region"].as_u64().unwrap() as usize;
    assert_eq!(v["regions"][region]["brand"].as_str(), Some(brand.as_str()), "the deciding region shows the brand: {v}");
    let (_, v) = check(&format!("https://login.{own}/")).await;
    assert_eq!((v["verdict"].as_str(), v["brand"].as_str()), (Some("consistent"), Some(brand.as_str())), "{v}");
    let (_, v) = check("http://192.0.2.44/").await;
    assert_eq!((v["verdict"].as_str(), v["host_kind"].as_str()), (Some("impersonation"), Some("ip")), "{v}");

    // 64 concurrent clients: every answer a 200 with a verdict.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (c, u, form) = (c.clone(), url(&s, "/v1/check"), check_form(&page, &format!("https://site{i}.example.org/")));
        tasks.push(tokio::spawn(async move { json(c.post(u).multipart(form).send().await.unwrap()).await }));
    }
    for t in tasks {
        let (st, v) = t.await.unwrap();
        assert_eq!(st, 200, "{v}");
        assert!(v["verdict"].is_string(), "{v}");
    }

    // Bad input: a clear 4xx, and nothing is changed.
    let bad_url = |u: &str| Form::new().part("image", Part::bytes(png(&page)).file_name("p.png")).text("url", u.to_string());
    for u in ["", "ftp://red-brand.com/", "http://", "http://exa mple.com/"] {
        let (st, v) = json(c.post(url(&s, "/v1/check")).multipart(bad_url(u)).send().await.unwrap()).await;
        assert_eq!(st, 400, "{u:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains("URL"), "{v}");
    }
    let no_url = Form::new().part("image", Part::bytes(png(&page)).file_name("p.png"));
    assert_eq!(c.post(url(&s, "/v1/check")).multipart(no_url).send().await.unwrap().status().as_u16(), 400);
    let empty = Form::new().part("image", Part::bytes(Vec::new()).file_name("p.png")).text("url", "https://x.com/");
    assert_eq!(c.post(url(&s, "/v1/check")).multipart(empty).send().await.unwrap().status().as_u16(), 400);
    let garbage = Form::new().part("image", Part::bytes(b"<html>".to_vec()).file_name("p.png")).text("url", "https://x.com/");
    assert_eq!(c.post(url(&s, "/v1/check")).multipart(garbage).send().await.unwrap().status().as_u16(), 415);
    assert_eq!(c.post(url(&s, "/v1/check")).body(png(&page)).send().await.unwrap().status().as_u16(), 415);
    let put = |brand: &str, body: Value| c.put(url(&s, &format!("/v1/gallery/{brand}/domains"))).json(&body).send();
    assert_eq!(put("nobody", serde_json::json!({ "domains": ["nobody.com"] })).await.unwrap().status().as_u16(), 404);
    for body in [serde_json::json!({ "domains": ["com"] }), serde_json::json!({ "domains": ["https://red-brand.com/"] }), serde_json::json!({ "domains": ["192.0.2.1"] })]
    {
        let (st, v) = json(put("red", body.clone()).await.unwrap()).await;
        assert_eq!(st, 400, "{body}: {v}");
    }
    assert_eq!(put("red", serde_json::json!({ "names": [] })).await.unwrap().status().as_u16(), 422);
    assert_eq!(Gallery::load(&f.gallery).unwrap().all_domains(), on_disk.all_domains(), "refused changes write nothing");
    s.shutdown().await.unwrap();
}

/// Two replicas share a PostgreSQL + pgvector gallery (scripts/with-postgres.sh provides the
/// server; without PROXIMA_TEST_PG_URL the test prints why and returns): enrol through one,
/// identify through the other; with the database stopped an enrolment answers 503 and leaves
/// nothing behind, and both replicas recover when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_a_database_gallery() {
    let Ok(db_url) = std::env::var("PROXIMA_TEST_PG_URL") else {
        eprintln!("skipped: PROXIMA_TEST_PG_URL is not set (scripts/with-postgres.sh starts PostgreSQL + pgvector; scripts/test.sh runs the tests through it)");
        return;
    };
    let ctl = std::env::var("PROXIMA_TEST_PG_CTL").expect("PROXIMA_TEST_PG_CTL comes with PROXIMA_TEST_PG_URL");
    let pg = |action: &str| assert!(std::process::Command::new(&ctl).arg(action).status().unwrap().success(), "{ctl} {action}");
    let f = fixture();
    let g = Gallery::load(&f.gallery).unwrap();
    // A database of its own, so that other tests using the server are not disturbed.
    let (admin, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.batch_execute("DROP DATABASE IF EXISTS proxima_replicas_test").await.unwrap();
    admin.batch_execute("CREATE DATABASE proxima_replicas_test").await.unwrap();
    let url = format!("{}/proxima_replicas_test", db_url.rsplit_once('/').unwrap().0);
    proxima_gallery_db::GalleryDb::connect(&url).await.unwrap().create(&g, true).await.unwrap();

    let start = |url: String| {
        let dir = f.model.clone();
        let source = proxima_server::GallerySource::Db { url, poll: Duration::from_millis(100) };
        async move { proxima_server::start_with_source(config(), Box::new(move || load_model_dir(&dir, Device::Cpu)), None, source).await.expect("replica starts") }
    };
    let (a, b) = (start(url.clone()).await, start(url.clone()).await);
    let c = reqwest::Client::new();
    let identify = |s: &RunningServer| c.post(url_of(s, "/v1/identify")).body(png(&logo(2))).send();

    // Replica b does not know "green" yet; enrol it through a.
    let (_, v) = json(identify(&b).await.unwrap()).await;
    assert_eq!(v["decision"], "unknown", "{v}");
    let form = Form::new().part("file", Part::bytes(png(&logo(2))).file_name("g1.png"));
    let (st, v) = json(c.post(url_of(&a, "/v1/gallery/green")).multipart(form).send().await.unwrap()).await;
    assert_eq!(st, 201, "{v}");
    // b follows within a few polls.
    let mut seen = Value::Null;
    for _ in 0..50 {
        let (_, v) = json(identify(&b).await.unwrap()).await;
        if v["brand"] == "green" {
            seen = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((seen["decision"].as_str(), seen["brand"].as_str()), (Some("known"), Some("green")), "replica b never saw the enrolment: {seen}");
    // The enrolment is in the database's audit table, readable through either replica.
    let (st, v) = json(c.get(url_of(&b, "/v1/audit")).send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    let last = v["entries"].as_array().unwrap().last().cloned().unwrap_or_default();
    assert_eq!(
        (last["token"].as_str(), last["action"].as_str(), last["brand"].as_str(), last["rows"].as_u64()),
        (Some("anonymous"), Some("enrol"), Some("green"), Some(1)),
        "{v}"
    );

    // The database goes away: enrolment through b is a clear 503 and changes nothing; both
    // replicas keep answering from their copies.
    pg("stop");
    let form = Form::new().part("file", Part::bytes(png(&logo(0))).file_name("x.png"));
    let (st, v) = json(c.post(url_of(&b, "/v1/gallery/outage")).multipart(form).send().await.unwrap()).await;
    assert_eq!(st, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("unavailable"), "{v}");
    let (st, v) = json(identify(&a).await.unwrap()).await;
    assert_eq!((st, v["brand"].as_str()), (200, Some("green")), "{v}");
    pg("start");
    // Back: b enrols (reconnecting), a follows; the failed brand never appears.
    let form = Form::new().part("file", Part::bytes(png(&logo(1))).file_name("b2.png"));
    let (st, v) = json(c.post(url_of(&b, "/v1/gallery/blue")).multipart(form).send().await.unwrap()).await;
    assert_eq!(st, 201, "{v}");
    let mut rows = 0;
    for _ in 0..50 {
        let (_, v) = json(c.get(url_of(&a, "/v1/gallery")).send().await.unwrap()).await;
        rows = v["rows"].as_u64().unwrap();
        if rows == 4 {
            assert!(v["brands"].as_array().unwrap().iter().all(|b| b["brand"] != "outage"), "{v}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows, 4, "replica a follows after the outage (red, blue ×2, green)");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

fn url_of(s: &RunningServer, path: &str) -> String {
    url(s, path)
}

// ---- access control, brand names, audit, rate limit, TLS, console ------------------------------

use proxima_server::auth::{Role, Tokens};

/// Tokens `ops` (admin) and `scanner` (read): the file's text and the two secrets.
fn tokens() -> (Arc<Tokens>, String, String) {
    let (admin, read) = (proxima_server::auth::new_token().unwrap(), proxima_server::auth::new_token().unwrap());
    let text = format!("{}\n{}\n", proxima_server::auth::line("ops", Role::Admin, &admin), proxima_server::auth::line("scanner", Role::Read, &read));
    (Arc::new(Tokens::parse(&text, Path::new("tokens")).unwrap()), admin, read)
}

fn with_tokens(t: &Arc<Tokens>) -> ServerConfig {
    ServerConfig { tokens: Some(t.clone()), ..config() }
}

fn logo_form() -> Form {
    Form::new().part("file", Part::bytes(png(&logo(2))).file_name("g.png"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_route_refuses_missing_wrong_or_read_only_tokens() {
    let f = fixture();
    let (t, admin, read) = tokens();
    let s = serve(&f, with_tokens(&t)).await;
    let c = reqwest::Client::new();
    let wrong = proxima_server::auth::new_token().unwrap();
    // Every admin route and method, on a brand that exists and one that does not: the answer
    // must not depend on the brand.
    let admin_routes: Vec<(reqwest::Method, String)> = ["red", "nobody"]
        .iter()
        .flat_map(|b| {
            [
                (reqwest::Method::POST, format!("/v1/gallery/{b}")),
                (reqwest::Method::DELETE, format!("/v1/gallery/{b}")),
                (reqwest::Method::PUT, format!("/v1/gallery/{b}/domains")),
                (reqwest::Method::PUT, format!("/v1/gallery/{b}")),
                (reqwest::Method::PATCH, format!("/v1/gallery/{b}")),
            ]
        })
        .chain([(reqwest::Method::GET, "/v1/audit".to_string()), (reqwest::Method::POST, "/v1/calibrate".to_string())])
        .collect();
    let mut messages = std::collections::BTreeSet::new();
    for (method, path) in &admin_routes {
        for (who, token, status) in [("no token", None, 401), ("a wrong token", Some(&wrong), 401), ("a read token", Some(&read), 403)] {
            let mut req = c.request(method.clone(), url(&s, path));
            if let Some(tok) = token {
                req = req.bearer_auth(tok);
            }
            if *method == reqwest::Method::POST {
                req = req.multipart(logo_form());
            }
            let r = req.send().await.unwrap();
            let www = r.headers().get("www-authenticate").is_some();
            let (st, v) = json(r).await;
            assert_eq!(st, status, "{method} {path} with {who}: {v}");
            assert_eq!(www, status == 401, "{method} {path}: WWW-Authenticate only with 401");
            messages.insert((status, v["error"].as_str().unwrap().to_string()));
        }
    }
    // One refusal text per status, whatever the route, method or brand: nothing is revealed.
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().all(|(_, m)| !m.contains("nobody") && !m.contains("gallery")), "{messages:?}");
    // The same refusal text whether the brand exists or not.
    let body = |p: &'static str| c.delete(url(&s, p)).bearer_auth(&read).send();
    assert_eq!(body("/v1/gallery/red").await.unwrap().text().await.unwrap(), body("/v1/gallery/nobody").await.unwrap().text().await.unwrap());
    assert_eq!(Gallery::load(&f.gallery).unwrap().brands(), ["red", "blue"], "nothing was changed");

    // Read routes: 401 without a token, served with a read token; /healthz and the console are open.
    for (path, form) in [("/v1/identify", true), ("/v1/find", true), ("/v1/compare", true)] {
        let mut req = c.post(url(&s, path));
        if form {
            req = req.multipart(image_form("image", png(&logo(0))));
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), 401, "{path}");
    }
    for path in ["/v1/gallery", "/metrics"] {
        assert_eq!(c.get(url(&s, path)).send().await.unwrap().status().as_u16(), 401, "{path}");
        assert_eq!(c.get(url(&s, path)).bearer_auth(&read).send().await.unwrap().status().as_u16(), 200, "{path}");
    }
    let (st, v) = json(c.post(url(&s, "/v1/identify")).bearer_auth(&read).body(png(&logo(0))).send().await.unwrap()).await;
    assert_eq!((st, v["brand"].as_str()), (200, Some("red")), "{v}");
    assert_eq!(c.get(url(&s, "/healthz")).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(c.get(url(&s, "/")).send().await.unwrap().status().as_u16(), 200);
    // A malformed header is a 401 too, never a 400 or 500.
    for h in ["Bearer", "Basic abc", "bearer  ", &format!("Bearer {admin}x")] {
        assert_eq!(c.get(url(&s, "/v1/gallery")).header("authorization", h).send().await.unwrap().status().as_u16(), 401, "{h}");
    }

    // The admin token writes, and the audit log names it.
    let (st, v) = json(c.post(url(&s, "/v1/gallery/green")).bearer_auth(&admin).multipart(logo_form()).send().await.unwrap()).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = json(c.delete(url(&s, "/v1/gallery/blue")).bearer_auth(&admin).send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = json(c.get(url(&s, "/v1/audit")).bearer_auth(&admin).send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    let got: Vec<_> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_i64().unwrap(),
                e["token"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["brand"].as_str().unwrap(),
                e["rows"].as_u64().unwrap(),
                e["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![(1, "ops", "enrol", "green", 1, 1), (2, "ops", "remove", "blue", 1, 2)]);
    let (_, v) = json(c.get(url(&s, "/v1/audit?after=1")).bearer_auth(&admin).send().await.unwrap()).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    s.shutdown().await.unwrap();
    // The log on disk agrees with the gallery.
    let log = proxima_server::audit::read_file(&proxima_server::audit::default_path(&f.gallery)).unwrap();
    assert_eq!(log.len(), 2);
    assert!(proxima_server::audit::disagreements(&log, &Gallery::load(&f.gallery).unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_without_tokens_is_refused_unless_no_auth_is_explicit() {
    let f = fixture();
    let open = ServerConfig { addr: "0.0.0.0:0".parse().unwrap(), ..config() };
    let dir = f.model.clone();
    let err = proxima_server::start(open.clone(), Box::new(move || load_model_dir(&dir, Device::Cpu)), &f.gallery).await.err().expect("refused");
    assert!(err.to_string().contains("--no-auth") && err.to_string().contains("--tokens"), "{err}");
    let s = serve(&f, ServerConfig { allow_open: true, ..open }).await;
    s.shutdown().await.unwrap();
    let (t, _, _) = tokens();
    let s = serve(&f, ServerConfig { addr: "0.0.0.0:0".parse().unwrap(), ..with_tokens(&t) }).await;
    s.shutdown().await.unwrap();
}

/// Each rule of the brand-name rule through the server, and a fuzz of generated names: each is
/// refused (400) or stored exactly as its NFC form, and nothing is written but the gallery and
/// its audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brand_names_follow_the_one_rule_and_fuzzed_names_never_escape_the_gallery() {
    let f = fixture();
    let (t, admin, _) = tokens();
    let s = serve(&f, with_tokens(&t)).await;
    let c = reqwest::Client::new();
    let enrol = |path: String| c.post(url(&s, &format!("/v1/gallery/{path}"))).bearer_auth(&admin).multipart(logo_form()).send();
    for (what, path, needle) in [
        ("path traversal", "..%2F..%2Fetc".to_string(), "path separators"),
        ("backslash", "a%5Cb".to_string(), "path separators"),
        ("leading dot", ".hidden".to_string(), "dot"),
        ("control character", "a%0Ab".to_string(), "control"),
        ("invisible character", "pay%E2%80%8Bpal".to_string(), "invisible"),
        ("10 000 characters", "x".repeat(10_000), "longer than 128"),
        ("surrounding space", "%20padded".to_string(), "whitespace"),
    ] {
        let (st, v) = json(enrol(path).await.unwrap()).await;
        assert_eq!(st, 400, "{what}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{what}: {v}");
    }
    // Another normal form is stored as NFC.
    let (st, v) = json(enrol("Cafe%CC%81".into()).await.unwrap()).await;
    assert_eq!((st, v["brand"].as_str()), (201, Some("Caf\u{e9}")), "{v}");
    assert!(Gallery::load(&f.gallery).unwrap().brand_id("Caf\u{e9}").is_some());

    let names = proxima_index::brand_name::tricky_names(7, 10_000);
    let (mut refused, mut stored) = (0, 0);
    for n in &names {
        let seg: String = n.bytes().map(|b| format!("%{b:02X}")).collect();
        let (st, v) = json(enrol(seg).await.unwrap()).await;
        match proxima_index::brand_name::normalize(n) {
            Ok(nfc) => {
                assert_eq!((st, v["brand"].as_str()), (201, Some(nfc.as_str())), "{n:?}: {v}");
                stored += 1;
            }
            Err(_) => {
                // "." and ".." are dot segments: the client's URL parser removes them (→ no route).
                let expected = if n == "." || n == ".." { 404 } else { 400 };
                assert_eq!(st, expected, "{n:?}: {v}");
                refused += 1;
            }
        }
    }
    assert!(refused > 1000 && stored > 1000, "{refused} refused, {stored} stored");
    s.shutdown().await.unwrap();
    let dir = f.gallery.parent().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["gallery", "gallery.audit.jsonl", "model"], "nothing written outside the gallery");
    let g = Gallery::load(&f.gallery).unwrap();
    assert!(proxima_server::audit::disagreements(&proxima_server::audit::read_file(&dir.join("gallery.audit.jsonl")).unwrap(), &g).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_token_with_retry_after_and_spares_other_clients() {
    let f = fixture();
    let (t, admin, read) = tokens();
    let s = serve(&f, ServerConfig { rate_limit: Some(2.0), ..with_tokens(&t) }).await;
    let c = reqwest::Client::new();
    let get = |tok: &str| c.get(url(&s, "/v1/gallery")).bearer_auth(tok).send();
    // A burst of 2 × rate (4) passes, the next request from the same token is 429.
    for i in 0..4 {
        assert_eq!(get(&read).await.unwrap().status().as_u16(), 200, "request {i}");
    }
    let r = get(&read).await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert!(json(r).await.1["error"].as_str().unwrap().contains("rate limit"));
    // Another client is not starved, and /healthz is not limited.
    assert_eq!(get(&admin).await.unwrap().status().as_u16(), 200);
    for _ in 0..10 {
        assert_eq!(c.get(url(&s, "/healthz")).send().await.unwrap().status().as_u16(), 200);
    }
    // Refusals are counted under their own route label.
    let m = c.get(url(&s, "/metrics")).bearer_auth(&admin).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("proxima_http_requests_total{route=\"(refused)\",status=\"429\"} 1\n"), "{m}");
    // After the wait, the first client is served again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(&read).await.unwrap().status().as_u16(), 200);
    s.shutdown().await.unwrap();
}

/// A certificate for 127.0.0.1 and localhost made here; returns (cert PEM path, key PEM path, cert DER).
fn test_certificate(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, ck.cert.der().to_vec())
}

/// A client that trusts only `der`.
fn tls_client(der: &[u8]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(der.to_vec())).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(proxima_server::tls::ring_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(cfg).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_loopback_with_a_certificate_made_in_the_test() {
    let f = fixture();
    let (t, admin, read) = tokens();
    let (cert, key, der) = test_certificate(f.gallery.parent().unwrap());
    let tls = proxima_server::tls::TlsFiles { cert, key };
    let s = serve(&f, ServerConfig { tls: Some(tls), ..with_tokens(&t) }).await;
    let c = tls_client(&der);
    let https = |p: &str| format!("https://{}{p}", s.addr);
    let (st, v) = json(c.post(https("/v1/identify")).bearer_auth(&read).body(png(&logo(0))).send().await.unwrap()).await;
    assert_eq!((st, v["brand"].as_str()), (200, Some("red")), "{v}");
    let (st, _) = json(c.post(https("/v1/gallery/green")).bearer_auth(&admin).multipart(logo_form()).send().await.unwrap()).await;
    assert_eq!(st, 201);
    assert_eq!(c.post(https("/v1/gallery/x")).multipart(logo_form()).send().await.unwrap().status().as_u16(), 401);
    // Plain HTTP to the TLS port gets no answer; a client that does not trust the certificate fails.
    assert!(reqwest::Client::new().get(url(&s, "/healthz")).send().await.is_err());
    let other_dir = tempfile::tempdir().unwrap();
    let (_, _, other) = test_certificate(other_dir.path());
    assert!(tls_client(&other).get(https("/healthz")).send().await.is_err());
    // Many connections at once over TLS.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, u, read) = (c.clone(), https("/v1/identify"), read.clone());
        tasks.push(tokio::spawn(async move { c.post(u).bearer_auth(read).body(png(&logo(1))).send().await.unwrap().status().as_u16() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    s.shutdown().await.unwrap();
    // A wrong file is a clear start-up error.
    let bad = proxima_server::tls::TlsFiles { cert: f.gallery.clone(), key: f.gallery.clone() };
    let dir = f.model.clone();
    let err = proxima_server::start(ServerConfig { tls: Some(bad), ..config() }, Box::new(move || load_model_dir(&dir, Device::Cpu)), &f.gallery).await.err().unwrap();
    assert!(err.to_string().contains("--tls-cert"), "{err}");
}

// ---- the web console in a real browser ----------------------------------------------------------

/// A Chromium binary: `$PROXIMA_CHROMIUM`, else `chromium`, `chromium-browser` or `google-chrome` on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROXIMA_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"].iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n))).find(|p| p.is_file())
}

/// A child process killed when dropped (also when the test panics), so no browser outlives the test.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal Chrome DevTools Protocol client (one page session) over a WebSocket.
struct Cdp {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next: u64,
    session: Option<String>,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let (mut ws, _) = tungstenite::connect(url).expect("connect to the browser's DevTools endpoint");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        Cdp { ws, next: 0, session: None }
    }

    /// Sends a command and waits for its answer (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = serde_json::json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = Value::String(s.clone());
        }
        self.ws.send(tungstenite::Message::text(msg.to_string())).unwrap();
        loop {
            let m = self.ws.read().unwrap_or_else(|e| panic!("{method}: {e}"));
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page (promises awaited) and returns its value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call("Runtime.evaluate", serde_json::json!({ "expression": js, "returnByValue": true, "awaitPromise": true }));
        assert!(r.get("exceptionDetails").is_none(), "{js}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Waits until `js` evaluates to true (at most 30 s).
    fn wait_for(&mut self, what: &str, js: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.eval(js) != Value::Bool(true) {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; page text: {}", self.eval("document.body.innerText"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Puts a file into an `<input type=file>` as a user choosing it would.
    fn set_file(&mut self, selector: &str, path: &Path) {
        let root = self.call("DOM.getDocument", serde_json::json!({ "depth": 0 }))["root"]["nodeId"].clone();
        let node = self.call("DOM.querySelector", serde_json::json!({ "nodeId": root, "selector": selector }))["nodeId"].clone();
        self.call("DOM.setFileInputFiles", serde_json::json!({ "files": [path.to_str().unwrap()], "nodeId": node }));
    }
}

/// The console driven by headless Chromium: set a token, drop an image and see the brand drawn,
/// enrol a brand by uploading a logo and see it listed, read the audit log, remove the brand;
/// a read-only token's enrolment is refused on the page. Saves a screenshot
/// (`$PROXIMA_CONSOLE_SCREENSHOT`, default in the temporary folder). Skips (printing SKIPPED)
/// only when no Chromium can be found; `scripts/setup-chromium.sh` installs it for CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_headless_browser_finds_enrols_lists_and_removes() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED console_in_a_headless_browser_finds_enrols_lists_and_removes: no chromium found (set PROXIMA_CHROMIUM or run scripts/setup-chromium.sh)");
        return;
    };
    let f = fixture();
    let (t, admin, read) = tokens();
    let loc_dir = f.model.parent().unwrap().join("localiser");
    let lcfg = proxima_detect::LocaliserConfig { input_size: 64, width16: 8, width8: 8, min_score: 0.0, ..Default::default() };
    proxima_detect::Localiser::new(lcfg, None, Device::Cpu).unwrap().save(&loc_dir, Default::default(), Value::Null).unwrap();
    let (dir, l) = (f.model.clone(), loc_dir.clone());
    let s = proxima_server::start_with_localiser(
        with_tokens(&t),
        Box::new(move || load_model_dir(&dir, Device::Cpu)),
        Some(Box::new(move || proxima_detect::load_localiser(&l, Device::Cpu).map(|(loc, _)| loc))),
        &f.gallery,
    )
    .await
    .expect("server starts");
    let files = tempfile::tempdir().unwrap();
    let (red_png, green_png) = (files.path().join("page.png"), files.path().join("green-logo.png"));
    std::fs::write(&red_png, png(&logo(0))).unwrap();
    std::fs::write(&green_png, png(&logo(2))).unwrap();
    let shot = std::env::var_os("PROXIMA_CONSOLE_SCREENSHOT").map_or_else(|| std::env::temp_dir().join("proxima-console.png"), PathBuf::from);
    let (base, gallery, profile) = (format!("http://{}/", s.addr), f.gallery.clone(), files.path().join("profile"));

    tokio::task::spawn_blocking(move || {
        let mut child = Killed(std::process::Command::new(&browser)
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", browser.display())));
        let stderr = child.0.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(u) = l.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(u.trim().to_string());
                }
            }
        });
        let ws_url = rx.recv_timeout(Duration::from_secs(60)).expect("chromium prints its DevTools address");
        let mut cdp = Cdp::connect(&ws_url);
        let target = cdp.call("Target.createTarget", serde_json::json!({ "url": "about:blank" }))["targetId"].clone();
        let session = cdp.call("Target.attachToTarget", serde_json::json!({ "targetId": target, "flatten": true }))["sessionId"].as_str().unwrap().to_string();
        cdp.session = Some(session);
        cdp.call("Emulation.setDeviceMetricsOverride", serde_json::json!({ "width": 1280, "height": 860, "deviceScaleFactor": 1, "mobile": false }));
        cdp.call("Page.navigate", serde_json::json!({ "url": base }));
        cdp.wait_for("the page", "document.readyState === 'complete' && !!document.querySelector('#token')");

        // Without a token the list says 401; with the admin token it shows both brands.
        cdp.wait_for("the 401 note", "document.querySelector('#gallery-summary').textContent.includes('401')");
        cdp.eval(&format!("document.querySelector('#token').value = '{admin}'; document.querySelector('#token-save').click(); true"));
        cdp.wait_for("the brand list", "document.querySelectorAll('#brands tbody tr').length === 2");

        // Drop an image: /v1/find's regions are listed and drawn, the enrolled logo's region names
        // red (the untrained localiser's confidence decides known or not, so the test does not).
        cdp.set_file("#image-input", &red_png);
        cdp.wait_for("the verdict", "document.querySelector('#regions').dataset.source === 'find'");
        assert!(cdp.eval("document.querySelector('#verdict').textContent").as_str().unwrap().contains("red"));
        assert!(cdp.eval("[...document.querySelectorAll('#regions tbody tr')].some(tr => tr.children[2].textContent === 'red' && tr.children[3].textContent === '1.000')") == Value::Bool(true));
        assert!(cdp.eval("document.querySelector('#result-canvas').width").as_u64().unwrap() > 0);
        // With a URL, the console asks /v1/check and shows its verdict; on a server without that
        // route (404) it says so and shows find's answer instead.
        cdp.eval("document.querySelector('#url-input').value = 'https://login.example.com/'; document.querySelector('#regions').dataset.source = ''; document.querySelector('#analyse').click(); true");
        cdp.wait_for(
            "the check or its fallback",
            "(() => { const src = document.querySelector('#regions').dataset.source; \
             return src === 'check' || (src === 'find' && document.querySelector('#gallery-status').textContent.includes('/v1/check')); })()",
        );
        cdp.eval("document.querySelector('#url-input').value = ''; true");

        // Enrol a brand by uploading its logo; it is listed.
        cdp.eval("document.querySelector('#enrol-brand').value = 'green'; true");
        cdp.set_file("#enrol-files", &green_png);
        cdp.eval("document.querySelector('#enrol-button').click(); true");
        cdp.wait_for("the enrolled brand", "[...document.querySelectorAll('#brands tbody tr')].some(tr => tr.dataset.brand === 'green')");
        assert!(Gallery::load(&gallery).unwrap().brand_id("green").is_some());
        cdp.eval("document.querySelector('#audit-load').click(); true");
        cdp.wait_for("the audit log", "document.querySelector('#audit tbody').textContent.includes('green')");
        let png_b64 = cdp.call("Page.captureScreenshot", serde_json::json!({ "format": "png" }))["data"].as_str().unwrap().to_string();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png_b64).unwrap();
        assert!(image::load_from_memory(&bytes).unwrap().width() == 1280);
        std::fs::write(&shot, bytes).unwrap();
        eprintln!("console screenshot: {}", shot.display());

        // Remove it (two clicks: arm, confirm); it is gone from the page and the file.
        cdp.eval("document.querySelector('button[data-remove=\"green\"]').click(); document.querySelector('button[data-remove=\"green\"]').click(); true");
        cdp.wait_for("the removal", "![...document.querySelectorAll('#brands tbody tr')].some(tr => tr.dataset.brand === 'green')");
        assert!(Gallery::load(&gallery).unwrap().brand_id("green").is_none());

        // A read-only token may look but not enrol.
        cdp.eval(&format!("document.querySelector('#token').value = '{read}'; document.querySelector('#token-save').click(); true"));
        cdp.eval("document.querySelector('#enrol-brand').value = 'sneaky'; true");
        cdp.set_file("#enrol-files", &green_png);
        cdp.eval("document.querySelector('#enrol-button').click(); true");
        cdp.wait_for("the 403", "document.querySelector('#gallery-status').textContent.includes('403')");
        assert!(Gallery::load(&gallery).unwrap().brand_id("sneaky").is_none());
        let _ = cdp.call("Browser.close", Value::Null);
    })
    .await
    .unwrap();
    s.shutdown().await.unwrap();
}
