//! Load test of a running `proxima serve`: identify latency (p50/p99) and throughput at several
//! client concurrencies, plus the server's peak RSS (from its `/metrics`).
//!
//! Why a separate client process: measuring the server's memory and latency from inside the same
//! process would count the client too. Only loopback addresses are accepted, and every level is
//! bounded in request count and in time, so this cannot turn into a load generator against
//! somebody else's machine or run away.
//!
//! ```text
//! cargo run --release -p proxima-server --example loadtest -- \
//!     --addr 127.0.0.1:8080 --image logo.png [--requests 400] [--max-seconds 30] [--concurrency 1,8,64]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

struct Opts {
    addr: SocketAddr,
    image: PathBuf,
    requests: usize,
    max_seconds: f64,
    concurrency: Vec<usize>,
}

fn parse() -> Result<Opts> {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut image, mut requests, mut max_seconds, mut concurrency) = (None, None, 400usize, 30.0f64, vec![1usize, 8, 64]);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => addr = Some(val()?.parse::<SocketAddr>().context("--addr")?),
            "--image" => image = Some(PathBuf::from(val()?)),
            "--requests" => requests = val()?.parse().context("--requests")?,
            "--max-seconds" => max_seconds = val()?.parse().context("--max-seconds")?,
            "--concurrency" => concurrency = val()?.split(',').map(|c| c.trim().parse::<usize>()).collect::<Result<_, _>>().context("--concurrency")?,
            other => bail!("unknown argument {other}; usage: --addr 127.0.0.1:PORT --image FILE [--requests N] [--max-seconds S] [--concurrency 1,8,64]"),
        }
    }
    let addr = addr.context("--addr is required")?;
    if !addr.ip().is_loopback() {
        bail!("--addr {addr} is not a loopback address; this load test only targets this machine");
    }
    if requests == 0 || requests > 100_000 || concurrency.iter().any(|&c| c == 0 || c > 1024) || !(max_seconds > 0.0 && max_seconds <= 600.0) {
        bail!("bounds: 1 ≤ --requests ≤ 100000, 1 ≤ concurrency ≤ 1024, 0 < --max-seconds ≤ 600");
    }
    Ok(Opts { addr, image: image.context("--image is required")?, requests, max_seconds, concurrency })
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

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse()?;
    let body = std::fs::read(&o.image).with_context(|| format!("reading {}", o.image.display()))?;
    let url = format!("http://{}/v1/identify", o.addr);
    let metrics_url = format!("http://{}/metrics", o.addr);
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
    let r = client.post(&url).body(body.clone()).send().await.with_context(|| format!("POST {url}"))?;
    if !r.status().is_success() {
        bail!("warm-up request answered {}: {}", r.status(), r.text().await.unwrap_or_default());
    }
    println!("{:>11} {:>9} {:>6} {:>10} {:>10} {:>10} {:>11} {:>14}", "concurrency", "requests", "errors", "p50 ms", "p99 ms", "req/s", "mean batch", "peak RSS MiB");
    for &c in &o.concurrency {
        let before = client.get(&metrics_url).send().await?.text().await?;
        let next = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs_f64(o.max_seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..c {
            let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
            let total = o.requests;
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0usize;
                while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                    let t = Instant::now();
                    match client.post(&url).body(body.clone()).send().await {
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
        for t in tasks {
            let (l, e) = t.await?;
            lat.extend(l);
            errors += e;
        }
        let wall = started.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let after = client.get(&metrics_url).send().await?.text().await?;
        let diff = |n: &str| metric(&after, n).unwrap_or(0.0) - metric(&before, n).unwrap_or(0.0);
        let mean_batch = diff("proxima_batch_images_total") / diff("proxima_batches_total").max(1.0);
        let peak = metric(&after, "process_peak_resident_memory_bytes").map_or(f64::NAN, |b| b / (1024.0 * 1024.0));
        println!(
            "{c:>11} {:>9} {errors:>6} {:>10.2} {:>10.2} {:>10.1} {mean_batch:>11.2} {peak:>14.1}",
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.len() as f64 / wall
        );
    }
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
