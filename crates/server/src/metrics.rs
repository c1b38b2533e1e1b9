//! Request counters, latency histograms and batch statistics in Prometheus text format.
//!
//! Why by hand instead of a metrics crate: the service needs a handful of series (requests by
//! route and status, latency by route, queue depth, batch sizes, memory), and writing the text
//! exposition format for them is a few dozen lines with no global registry to manage in tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

/// Process-wide counters of one server.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    batches: AtomicU64,
    batch_images: AtomicU64,
    rejected_full: AtomicU64,
}

/// Gauges read at scrape time.
pub struct Gauges {
    /// Jobs waiting for the model.
    pub queue_depth: usize,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// Enrolled brands (background examples are no brand: `Gallery::num_brands`).
    pub brands: usize,
    /// Enrolled rows.
    pub rows: usize,
}

impl Metrics {
    /// Counts one finished request.
    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        let s = elapsed.as_secs_f64();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g.requests.entry((route.to_string(), status)).or_default() += 1;
        let h = g.latency.entry(route.to_string()).or_default();
        for (c, &b) in h.counts.iter_mut().zip(&LATENCY_BUCKETS) {
            if s <= b {
                *c += 1;
            }
        }
        h.sum += s;
        h.count += 1;
    }

    /// Counts one forward pass of `images` images.
    pub fn record_batch(&self, images: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_images.fetch_add(images as u64, Ordering::Relaxed);
    }

    /// Counts one request refused because the queue was full.
    pub fn record_queue_full(&self) {
        self.rejected_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests seen so far with this route and status.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.requests.get(&(route.to_string(), status)).copied().unwrap_or(0)
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut o = String::new();
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(o, "# HELP proxima_http_requests_total HTTP requests by route and status.\n# TYPE proxima_http_requests_total counter");
        for ((route, status), n) in &g.requests {
            let _ = writeln!(o, "proxima_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
        let _ = writeln!(o, "# HELP proxima_http_request_duration_seconds Request latency by route.\n# TYPE proxima_http_request_duration_seconds histogram");
        for (route, h) in &g.latency {
            let r = escape(route);
            for (c, b) in h.counts.iter().zip(&LATENCY_BUCKETS) {
                let _ = writeln!(o, "proxima_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {c}");
            }
            let _ = writeln!(o, "proxima_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(o, "proxima_http_request_duration_seconds_sum{{route=\"{r}\"}} {}", h.sum);
            let _ = writeln!(o, "proxima_http_request_duration_seconds_count{{route=\"{r}\"}} {}", h.count);
        }
        drop(g);
        let gauge = |o: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        gauge(&mut o, "proxima_queue_depth", "Jobs waiting for the model worker.", "gauge", gauges.queue_depth as u64);
        gauge(&mut o, "proxima_queue_capacity", "Jobs the queue holds before answering 429.", "gauge", gauges.queue_capacity as u64);
        gauge(&mut o, "proxima_queue_rejected_total", "Requests answered 429 because the queue was full.", "counter", self.rejected_full.load(Ordering::Relaxed));
        gauge(&mut o, "proxima_batches_total", "Forward passes of the model worker.", "counter", self.batches.load(Ordering::Relaxed));
        gauge(&mut o, "proxima_batch_images_total", "Images embedded by the model worker.", "counter", self.batch_images.load(Ordering::Relaxed));
        gauge(&mut o, "proxima_gallery_brands", "Enrolled brands (background examples not counted).", "gauge", gauges.brands as u64);
        gauge(&mut o, "proxima_gallery_rows", "Enrolled embeddings.", "gauge", gauges.rows as u64);
        if let Some((rss, peak)) = process_memory() {
            gauge(&mut o, "process_resident_memory_bytes", "Resident set size.", "gauge", rss);
            gauge(&mut o, "process_peak_resident_memory_bytes", "Peak resident set size (VmHWM).", "gauge", peak);
        }
        o
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Current and peak resident memory in bytes (Linux `/proc/self/status`), if available.
pub fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_by_route_and_status() {
        let m = Metrics::default();
        m.record_request("/v1/identify", 200, Duration::from_millis(3));
        m.record_request("/v1/identify", 200, Duration::from_millis(40));
        m.record_request("/v1/identify", 429, Duration::from_micros(100));
        m.record_batch(5);
        let text = m.render(&Gauges { queue_depth: 2, queue_capacity: 8, brands: 3, rows: 9 });
        assert!(text.contains("proxima_http_requests_total{route=\"/v1/identify\",status=\"200\"} 2\n"), "{text}");
        assert!(text.contains("proxima_http_requests_total{route=\"/v1/identify\",status=\"429\"} 1\n"));
        // 0.1 ms and 3 ms are <= 5 ms; 40 ms is not.
        assert!(text.contains("_bucket{route=\"/v1/identify\",le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("_bucket{route=\"/v1/identify\",le=\"0.05\"} 3\n"));
        assert!(text.contains("_bucket{route=\"/v1/identify\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("proxima_queue_depth 2\n") && text.contains("proxima_batch_images_total 5\n"));
        assert_eq!(m.requests("/v1/identify", 200), 2);
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
