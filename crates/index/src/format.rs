//! The gallery file format: versioned, self-describing, checksummed, written atomically.
//!
//! Why binary + JSON header: the rows are the bulk (100 000 × 128 f32 = 51 MB) and must
//! load fast and exactly (raw little-endian f32, no text round-trip); the metadata is
//! small and must stay readable and extensible, so it is JSON. Why a checksum over
//! everything: a gallery silently corrupted on disk would still produce similarities —
//! wrong ones — and therefore wrong brand decisions; CRC32 catches torn writes and bit
//! rot. Why atomic writes: a crash mid-save must leave the old gallery, never half a new
//! one (temp file in the same directory, fsync, rename, fsync the directory).
//!
//! Layout (all integers little-endian):
//!
//! | offset          | size        | content                                            |
//! |-----------------|-------------|----------------------------------------------------|
//! | 0               | 8           | magic `\x89PXGAL\r\n` (PNG-style: the high byte catches 7-bit transfers, CR-LF catches newline translation) |
//! | 8               | 4           | format version, `u32` (currently 1)                |
//! | 12              | 8           | header length `h` in bytes, `u64`                  |
//! | 20              | `h`         | UTF-8 JSON header ([`Header`])                      |
//! | 20 + h          | `4·rows·dim`| rows, row-major `f32`                              |
//! | end − 4         | 4           | CRC32 (IEEE) of every preceding byte, `u32`        |
//!
//! Loading checks, in order: magic, version, that the file is exactly as long as its
//! header implies, the checksum, then the header's consistency (labels, paths, brands,
//! finite rows, backend) — each failure a distinct [`IndexError`] naming the path.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proxima_domain::Domain;
use proxima_eval::Metric;
use serde::{Deserialize, Serialize};

use crate::backend::BackendConfig;
use crate::background::is_background;
use crate::brand_name::check_stored;
use crate::calibrate::Calibration;
use crate::error::{IndexError, Result, io};
use crate::gallery::Gallery;

/// The first 8 bytes of every gallery file.
pub const MAGIC: [u8; 8] = *b"\x89PXGAL\r\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the JSON header: magic, version, header length.
const PREFIX: usize = 8 + 4 + 8;
/// Headers larger than this are refused before allocation (paths of ~10 M rows).
const MAX_HEADER: u64 = 1 << 31;

/// The JSON header of a gallery file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Crate name and version that wrote the file.
    pub writer: String,
    /// Similarity metric.
    pub metric: Metric,
    /// Embedding dimension.
    pub dim: usize,
    /// Number of rows.
    pub rows: usize,
    /// Fingerprint of the model that produced the rows.
    pub model_fingerprint: String,
    /// Brand names, indexed by brand id.
    pub brands: Vec<String>,
    /// Brand id of every row.
    pub labels: Vec<u32>,
    /// Source path of every row.
    pub paths: Vec<PathBuf>,
    /// Decision threshold, if calibrated.
    pub calibration: Option<Calibration>,
    /// Search backend.
    pub backend: BackendConfig,
    /// Each brand's legitimate registrable domains (brands without any are absent). Absent
    /// from files written before brands had domains, which load with none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub domains: BTreeMap<String, Vec<Domain>>,
}

/// CRC32 of everything written through it.
struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Gallery {
    /// The gallery's metadata as a [`Header`]: what a storage backend other than the file
    /// format (a database) keeps besides the rows.
    pub fn to_header(&self) -> Header {
        self.header()
    }

    /// A gallery from a header and its rows (row-major, `rows × dim`), with every check a
    /// loaded file gets; `source` names where they came from in errors (a path or a database).
    pub fn from_header(source: &Path, header: Header, data: Vec<f32>) -> Result<Gallery> {
        if header.dim == 0 || data.len() != header.rows * header.dim {
            return Err(IndexError::BadHeader { path: source.to_path_buf(), reason: format!("{} values for {} rows of dim {}", data.len(), header.rows, header.dim) });
        }
        validate(source, header, data)
    }

    fn header(&self) -> Header {
        Header {
            writer: concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")).to_string(),
            metric: self.metric,
            dim: self.dim,
            rows: self.len(),
            model_fingerprint: self.model_fingerprint.clone(),
            brands: self.brands.clone(),
            labels: self.labels.clone(),
            paths: self.paths.clone(),
            calibration: self.calibration.clone(),
            backend: self.backend,
            domains: self.domains.clone(),
        }
    }

    /// Write the gallery to `path` atomically (temp file in the same directory, fsync, rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("gallery");
        let header = serde_json::to_vec(&self.header()).map_err(|e| IndexError::BadHeader { path: path.to_path_buf(), reason: format!("cannot serialise: {e}") })?;
        let mut tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir).map_err(io(dir))?;
        let tmp_path = tmp.path().to_path_buf();
        {
            let mut w = CrcWriter { inner: BufWriter::with_capacity(1 << 20, tmp.as_file_mut()), crc: crc32fast::Hasher::new() };
            let mut body = || -> std::io::Result<()> {
                w.write_all(&MAGIC)?;
                w.write_all(&FORMAT_VERSION.to_le_bytes())?;
                w.write_all(&(header.len() as u64).to_le_bytes())?;
                w.write_all(&header)?;
                let mut buf = Vec::with_capacity(1 << 16);
                for chunk in self.data.chunks(1 << 14) {
                    buf.clear();
                    buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                    w.write_all(&buf)?;
                }
                let crc = w.crc.clone().finalize();
                w.inner.write_all(&crc.to_le_bytes())?;
                w.inner.flush()
            };
            body().map_err(io(&tmp_path))?;
        }
        tmp.as_file().sync_all().map_err(io(&tmp_path))?;
        tmp.persist(path).map_err(|e| IndexError::Io { path: path.to_path_buf(), source: e.error })?;
        // Make the rename itself durable.
        #[cfg(unix)]
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        Ok(())
    }

    /// Read a gallery file, whatever model it was built with.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(io(path))?;
        decode(path, &bytes)
    }

    /// Read a gallery file and check it was built with the caller's model.
    pub fn load_for_model(path: impl AsRef<Path>, model_fingerprint: &str) -> Result<Self> {
        let path = path.as_ref();
        let g = Self::load(path)?;
        if g.model_fingerprint != model_fingerprint {
            return Err(IndexError::FingerprintMismatch { path: path.to_path_buf(), gallery: g.model_fingerprint, expected: model_fingerprint.to_string() });
        }
        Ok(g)
    }
}

/// Parse and validate the bytes of a gallery file.
fn decode(path: &Path, bytes: &[u8]) -> Result<Gallery> {
    let p = || path.to_path_buf();
    let min = (PREFIX + 4) as u64;
    if bytes.len() < 8 || bytes[..8] != MAGIC {
        return Err(IndexError::BadMagic { path: p(), found: bytes[..bytes.len().min(8)].to_vec() });
    }
    if (bytes.len() as u64) < min {
        return Err(IndexError::LengthMismatch { path: p(), expected: min, actual: bytes.len() as u64 });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(IndexError::UnsupportedVersion { path: p(), found: version, supported: FORMAT_VERSION });
    }
    let stored_crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    let checksum = || {
        let computed = crc32fast::hash(&bytes[..bytes.len() - 4]);
        if computed != stored_crc { Err(IndexError::ChecksumMismatch { path: p(), stored: stored_crc, computed }) } else { Ok(()) }
    };
    let hlen = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    if hlen > MAX_HEADER || PREFIX as u64 + hlen + 4 > bytes.len() as u64 {
        // A truncated file (the usual case) or a corrupted length field: the checksum
        // cannot be trusted to tell them apart, since a truncated file fails it too.
        return Err(IndexError::LengthMismatch { path: p(), expected: PREFIX as u64 + hlen + 4, actual: bytes.len() as u64 });
    }
    let hend = PREFIX + hlen as usize;
    let header: Header = match serde_json::from_slice(&bytes[PREFIX..hend]) {
        Ok(h) => h,
        Err(e) => {
            checksum()?;
            return Err(IndexError::BadHeader { path: p(), reason: e.to_string() });
        }
    };
    let values = header.rows.checked_mul(header.dim).filter(|v| *v <= (usize::MAX - hend - 4) / 4);
    let Some(values) = values else {
        return Err(IndexError::BadHeader { path: p(), reason: format!("{} rows × {} dims overflows", header.rows, header.dim) });
    };
    let expected = (hend + 4 * values + 4) as u64;
    if expected != bytes.len() as u64 {
        return Err(IndexError::LengthMismatch { path: p(), expected, actual: bytes.len() as u64 });
    }
    checksum()?;
    let data: Vec<f32> = bytes[hend..hend + 4 * values].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    validate(path, header, data)
}

/// Check a decoded header and rows against the gallery's invariants.
fn validate(path: &Path, h: Header, data: Vec<f32>) -> Result<Gallery> {
    let bad = |reason: String| IndexError::BadHeader { path: path.to_path_buf(), reason };
    if h.dim == 0 {
        return Err(bad("dim is 0".into()));
    }
    if h.labels.len() != h.rows || h.paths.len() != h.rows {
        return Err(bad(format!("{} rows but {} labels and {} paths", h.rows, h.labels.len(), h.paths.len())));
    }
    let mut counts = vec![0usize; h.brands.len()];
    for (i, &l) in h.labels.iter().enumerate() {
        *counts.get_mut(l as usize).ok_or_else(|| bad(format!("row {i} has brand id {l}, only {} brands", h.brands.len())))? += 1;
    }
    if let Some(b) = counts.iter().position(|&c| c == 0) {
        return Err(bad(format!("brand {:?} has no rows", h.brands[b])));
    }
    let mut names = std::collections::HashSet::new();
    for b in &h.brands {
        check_stored(b).map_err(|e| bad(e.to_string()))?;
        if !names.insert(b) {
            return Err(bad(format!("brand {b:?} appears twice")));
        }
    }
    if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("non-finite value at row {}, column {}", pos / h.dim, pos % h.dim)));
    }
    if h.metric == Metric::Cosine
        && let Some(r) = data.chunks(h.dim).position(|r| (r.iter().map(|&v| v as f64 * v as f64).sum::<f64>() - 1.0).abs() > 1e-3)
    {
        return Err(bad(format!("cosine gallery row {r} is not unit-norm")));
    }
    if let Some(c) = &h.calibration
        && !c.threshold.is_finite()
    {
        return Err(bad(format!("calibrated threshold {} is not finite", c.threshold)));
    }
    h.backend.validate(h.metric).map_err(|e| bad(e.to_string()))?;
    for (brand, domains) in &h.domains {
        if !names.contains(brand) || is_background(brand) {
            return Err(bad(format!("domains are listed for {brand:?}, which is not an enrolled brand")));
        }
        if domains.is_empty() || domains.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(format!("the domains of {brand:?} must be a non-empty, sorted list without repeats")));
        }
    }
    Ok(Gallery {
        metric: h.metric,
        dim: h.dim,
        model_fingerprint: h.model_fingerprint,
        brands: h.brands,
        labels: h.labels,
        paths: h.paths,
        data,
        calibration: h.calibration,
        backend: h.backend,
        domains: h.domains,
        index: OnceLock::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Gallery {
        let mut g = Gallery::new(3, "sha256:abc").unwrap();
        g.add("acme", &[1.0, 2.0, 3.0, 0.5, 0.0, 0.1], &["acme/1.png", "acme/2.png"]).unwrap();
        g.add("globex", &[-1.0, 0.25, 7.0], &["globex/x.jpg"]).unwrap();
        g.calibrate_from_scores(&[0.9, 0.8], &[0.1, 0.2, 0.3, 0.5], 0.25).unwrap();
        g
    }

    fn encode(g: &Gallery) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.pxg");
        g.save(&p).unwrap();
        std::fs::read(&p).unwrap()
    }

    #[test]
    fn layout_is_as_documented() {
        let g = sample();
        let b = encode(&g);
        assert_eq!(&b[..8], &MAGIC);
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 1);
        let h = u64::from_le_bytes(b[12..20].try_into().unwrap()) as usize;
        let header: Header = serde_json::from_slice(&b[20..20 + h]).unwrap();
        assert_eq!((header.rows, header.dim, header.metric), (3, 3, Metric::Cosine));
        assert_eq!(b.len(), 20 + h + 3 * 3 * 4 + 4);
        let first = f32::from_le_bytes(b[20 + h..24 + h].try_into().unwrap());
        assert_eq!(first, g.row(0)[0]);
        assert_eq!(u32::from_le_bytes(b[b.len() - 4..].try_into().unwrap()), crc32fast::hash(&b[..b.len() - 4]));
    }

    #[test]
    fn decode_round_trips_bit_exactly() {
        let g = sample();
        let back = decode(Path::new("mem"), &encode(&g)).unwrap();
        assert_eq!(back.data(), g.data());
        assert_eq!(back.header(), g.header());
    }

    #[test]
    fn inconsistent_headers_are_rejected_even_with_a_valid_checksum() {
        // Rewrite the header, then fix the checksum: only the consistency checks can catch it.
        let g = sample();
        let reencode = |edit: &dyn Fn(&mut Header)| {
            let mut h = g.header();
            edit(&mut h);
            let hj = serde_json::to_vec(&h).unwrap();
            let mut b = MAGIC.to_vec();
            b.extend(FORMAT_VERSION.to_le_bytes());
            b.extend((hj.len() as u64).to_le_bytes());
            b.extend(&hj);
            b.extend(g.data().iter().flat_map(|v| v.to_le_bytes()));
            let crc = crc32fast::hash(&b);
            b.extend(crc.to_le_bytes());
            decode(Path::new("x.pxg"), &b)
        };
        assert!(reencode(&|_| {}).is_ok());
        type Edit<'a> = &'a dyn Fn(&mut Header);
        let cases: [(Edit, &str); 8] = [
            (&|h: &mut Header| drop(h.domains.insert("initech".into(), vec![Domain::parse("initech.com").unwrap()])), "not an enrolled brand"),
            (&|h: &mut Header| drop(h.domains.insert("acme".into(), vec![])), "non-empty, sorted"),
            (&|h: &mut Header| h.labels[0] = 9, "brand id 9"),
            (&|h: &mut Header| drop(h.paths.pop()), "labels and"),
            (&|h: &mut Header| h.brands.push("initech".into()), "has no rows"),
            (&|h: &mut Header| h.brands[1] = "acme".into(), "appears twice"),
            (
                &|h: &mut Header| {
                    h.metric = Metric::Dot;
                    h.backend = BackendConfig::Hnsw(Default::default());
                },
                "does not support",
            ),
            (&|h: &mut Header| h.rows = 2, "expected"),
        ];
        for (edit, needle) in cases {
            let e = reencode(edit).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("x.pxg"), "{e}");
        }
    }

    #[test]
    fn domains_round_trip_and_files_without_them_load() {
        let mut g = sample();
        let d = |s: &str| Domain::parse(s).unwrap();
        g.set_domains("acme", &[d("acme.com"), d("acme.co.uk")]).unwrap();
        let back = decode(Path::new("x.pxg"), &encode(&g)).unwrap();
        assert_eq!(back.domains("acme"), [d("acme.co.uk"), d("acme.com")]);
        assert!(back.domains("globex").is_empty());
        // A header without the field (files written before brands had domains) has none.
        let plain = sample();
        let hj = serde_json::to_string(&plain.to_header()).unwrap();
        assert!(!hj.contains("domains"), "{hj}");
        assert!(decode(Path::new("x.pxg"), &encode(&plain)).unwrap().all_domains().is_empty());
    }
}
