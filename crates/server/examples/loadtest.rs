//! Load test of a running `proxima serve`: identify (or, with `--check-url URL`, check: the image
//! is then a page screenshot, sent with that URL) latency (p50/p99) and throughput at several
//! client concurrencies, plus the server's peak RSS (from its `/metrics`).
//!
//! Why a separate client process: measuring the server's memory and latency from inside the same
//! process would count the client too. Only loopback addresses are accepted, and every level is
//! bounded in request count and in time, so this cannot turn into a load generator against
//! somebody else's machine or run away.
//!
//! With `--secure-addr` (a second server with `--tls-cert/--tls-key` and `--tokens`), each level
//! runs against the plain server and then the secure one, so the cost of TLS and tokens is read
//! from two rows of the same run. `--ca` is the certificate to trust (PEM) and `--token-file`
//! holds tokens, one per line; client `i` uses token `i mod n` (one token per client, as separate
//! scanners would, so the per-token rate limit applies to each client).
//!
//! ```text
//! cargo run --release -p proxima-server --example loadtest -- \
//!     --addr 127.0.0.1:8080 --image logo.png [--requests 400] [--max-seconds 30] [--concurrency 1,8,64] \
//!     [--secure-addr 127.0.0.1:8443 --ca cert.pem --token-file tokens.txt] [--check-url https://example.com/]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What each request asks.
#[derive(Clone)]
enum Route {
    /// `POST /v1/identify` with the image as the body.
    Identify,
    /// `POST /v1/check` with the image as a page screenshot and this URL.
    Check(String),
}

impl Route {
    fn path(&self) -> &'static str {
        match self {
            Route::Identify => "/v1/identify",
            Route::Check(_) => "/v1/check",
        }
    }

    /// `req` with this route's body for `image`.
    fn with_body(&self, req: reqwest::RequestBuilder, image: &[u8]) -> reqwest::RequestBuilder {
        match self {
            Route::Identify => req.body(image.to_vec()),
            Route::Check(url) => {
                let form = reqwest::multipart::Form::new().part("image", reqwest::multipart::Part::bytes(image.to_vec()).file_name("page.png")).text("url", url.clone());
                req.multipart(form)
            }
        }
    }
}

struct Opts {
    route: Route,
    addr: Option<SocketAddr>,
    secure: Option<(SocketAddr, PathBuf, PathBuf)>,
    image: PathBuf,
    requests: usize,
    max_seconds: f64,
    concurrency: Vec<usize>,
}

fn parse() -> Result<Opts> {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut image, mut requests, mut max_seconds, mut concurrency) = (None, None, 400usize, 30.0f64, vec![1usize, 8, 64]);
    let (mut secure_addr, mut ca, mut token_file) = (None, None, None);
    let mut route = Route::Identify;
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => addr = Some(val()?.parse::<SocketAddr>().context("--addr")?),
            "--secure-addr" => secure_addr = Some(val()?.parse::<SocketAddr>().context("--secure-addr")?),
            "--ca" => ca = Some(PathBuf::from(val()?)),
            "--token-file" => token_file = Some(PathBuf::from(val()?)),
            "--image" => image = Some(PathBuf::from(val()?)),
            "--check-url" => route = Route::Check(val()?),
            "--requests" => requests = val()?.parse().context("--requests")?,
            "--max-seconds" => max_seconds = val()?.parse().context("--max-seconds")?,
            "--concurrency" => concurrency = val()?.split(',').map(|c| c.trim().parse::<usize>()).collect::<Result<_, _>>().context("--concurrency")?,
            other => bail!(
                "unknown argument {other}; usage: --addr 127.0.0.1:PORT --image FILE [--requests N] [--max-seconds S] [--concurrency 1,8,64] [--secure-addr 127.0.0.1:PORT --ca CERT.pem --token-file FILE] [--check-url URL]"
            ),
        }
    }
    let secure = match (secure_addr, ca, token_file) {
        (Some(a), Some(c), Some(t)) => Some((a, c, t)),
        (None, None, None) => None,
        _ => bail!("--secure-addr, --ca and --token-file go together"),
    };
    if addr.is_none() && secure.is_none() {
        bail!("give --addr, --secure-addr or both");
    }
    for a in addr.iter().chain(secure.as_ref().map(|s| &s.0)) {
        if !a.ip().is_loopback() {
            bail!("{a} is not a loopback address; this load test only targets this machine");
        }
    }
    if requests == 0 || requests > 100_000 || concurrency.iter().any(|&c| c == 0 || c > 1024) || !(max_seconds > 0.0 && max_seconds <= 600.0) {
        bail!("bounds: 1 ≤ --requests ≤ 100000, 1 ≤ concurrency ≤ 1024, 0 < --max-seconds ≤ 600");
    }
    Ok(Opts { route, addr, secure, image: image.context("--image is required")?, requests, max_seconds, concurrency })
}

/// A value of a plain (label-free) series in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// One server under test.
struct Target {
    mode: &'static str,
    base: String,
    client: reqwest::Client,
    tokens: Vec<String>,
}

impl Target {
    fn request(&self, path: &str, client_index: usize) -> reqwest::RequestBuilder {
        let r = self.client.post(format!("{}{path}", self.base));
        match self.tokens.get(client_index % self.tokens.len().max(1)) {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn metrics(&self) -> Result<String> {
        let mut r = self.client.get(format!("{}/metrics", self.base));
        if let Some(t) = self.tokens.first() {
            r = r.bearer_auth(t);
        }
        Ok(r.send().await?.text().await?)
    }
}

#[allow(deprecated)] // ring lacks post-quantum key exchange; chosen because aws-lc-rs needs cmake
fn ring() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn targets(o: &Opts) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    if let Some(a) = o.addr {
        let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
        out.push(Target { mode: "plain", base: format!("http://{a}"), client, tokens: Vec::new() });
    }
    if let Some((a, ca, token_file)) = &o.secure {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(c.with_context(|| format!("{}: not a PEM certificate", ca.display()))?)?;
        }
        let cfg =
            rustls::ClientConfig::builder_with_provider(Arc::new(ring())).with_safe_default_protocol_versions()?.with_root_certificates(roots).with_no_client_auth();
        let client = reqwest::Client::builder().pool_max_idle_per_host(1024).tls_backend_preconfigured(cfg).build()?;
        let tokens: Vec<String> = std::fs::read_to_string(token_file)
            .with_context(|| format!("reading {}", token_file.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if tokens.is_empty() {
            bail!("{}: no tokens", token_file.display());
        }
        out.push(Target { mode: "tls+tokens", base: format!("https://{a}"), client, tokens });
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse()?;
    // reqwest is built without a default TLS provider (the workspace uses ring, not aws-lc-rs).
    let _ = ring().install_default();
    let body = std::fs::read(&o.image).with_context(|| format!("reading {}", o.image.display()))?;
    let targets = targets(&o)?;
    for t in &targets {
        let r = o.route.with_body(t.request(o.route.path(), 0), &body).send().await.with_context(|| format!("POST {}{}", t.base, o.route.path()))?;
        if !r.status().is_success() {
            bail!("warm-up request to {} answered {}: {}", t.base, r.status(), r.text().await.unwrap_or_default());
        }
    }
    println!(
        "{:>11} {:>10} {:>9} {:>6} {:>10} {:>10} {:>10} {:>11} {:>14}",
        "concurrency", "mode", "requests", "errors", "p50 ms", "p99 ms", "req/s", "mean batch", "peak RSS MiB"
    );
    for &c in &o.concurrency {
        for t in &targets {
            level(t, &o.route, c, &body, o.requests, o.max_seconds).await?;
        }
    }
    Ok(())
}

/// Runs one concurrency level against one server and prints its row.
async fn level(t: &Target, route: &Route, c: usize, body: &[u8], total: usize, max_seconds: f64) -> Result<()> {
    let before = t.metrics().await?;
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(max_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..c {
        let (req, body, next, route) = (t.request(route.path(), i), body.to_vec(), next.clone(), route.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t = Instant::now();
                match route.with_body(req.try_clone().expect("a request without a body clones"), &body).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await?;
        lat.extend(l);
        errors += e;
    }
    let wall = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let after = t.metrics().await?;
    let diff = |n: &str| metric(&after, n).unwrap_or(0.0) - metric(&before, n).unwrap_or(0.0);
    let mean_batch = diff("proxima_batch_images_total") / diff("proxima_batches_total").max(1.0);
    let peak = metric(&after, "process_peak_resident_memory_bytes").map_or(f64::NAN, |b| b / (1024.0 * 1024.0));
    println!(
        "{c:>11} {:>10} {:>9} {errors:>6} {:>10.2} {:>10.2} {:>10.1} {mean_batch:>11.2} {peak:>14.1}",
        t.mode,
        lat.len(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.len() as f64 / wall
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_metric_lines() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.99), percentile(&v, 1.0)), (50.0, 99.0, 100.0));
        let text = "# TYPE proxima_batches_total counter\nproxima_batches_total 12\nproxima_batches_total_x 3\n";
        assert_eq!(metric(text, "proxima_batches_total"), Some(12.0));
        assert_eq!(metric(text, "missing"), None);
    }
}
