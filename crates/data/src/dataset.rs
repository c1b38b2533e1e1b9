//! Data sets: what images exist, with which class, and (optionally) which box.
//!
//! Why a plain value type: every later stage (splits, samplers, loader) only needs an indexable
//! list of `(path, class index, optional box)` plus class names; keeping it a dumb `Vec` makes it
//! trivially serialisable, sliceable by class and cheap to share across threads. Two sources are
//! supported: a class-per-folder tree (`root/<class>/<image>`) and a manifest (CSV or JSONL).
//! Scanning never aborts on a bad entry: it lists each one with a reason in [`ScanReport::issues`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::decode::{DecodeOptions, decode_file, has_image_extension};
use crate::error::{DataError, Result};

/// An axis-aligned box in pixel coordinates (`x2`, `y2` exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Left.
    pub x1: f32,
    /// Top.
    pub y1: f32,
    /// Right.
    pub x2: f32,
    /// Bottom.
    pub y2: f32,
}

impl BBox {
    /// Width (may be ≤ 0 for degenerate boxes).
    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }
    /// Height (may be ≤ 0 for degenerate boxes).
    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }
}

/// One image of a data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Image file.
    pub path: PathBuf,
    /// Index into [`Dataset::classes`].
    pub label: usize,
    /// Region of interest inside the image, if any (the loader crops to it).
    pub bbox: Option<BBox>,
    /// Samples sharing a group (e.g. crops of one photo) are kept on the same side of
    /// query/gallery splits.
    pub group: Option<String>,
}

/// A list of samples plus class names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// The samples.
    pub samples: Vec<Sample>,
    /// Class names; `samples[i].label` indexes this.
    pub classes: Vec<String>,
}

/// A skipped entry and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// The entry (lossy UTF-8 rendering for non-UTF-8 names).
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

impl Issue {
    /// Builds an issue for `path`.
    pub fn new(path: &Path, reason: impl Into<String>) -> Self {
        Issue { path: path.to_string_lossy().into_owned(), reason: reason.into() }
    }
}

/// Options for [`Dataset::scan_folder`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanOptions {
    /// Fully decode every image (slow, but catches truncated or fake files).
    pub verify: bool,
    /// Decoding options used when `verify` is set.
    pub decode: DecodeOptions,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions { verify: true, decode: DecodeOptions::default() }
    }
}

/// The outcome of a scan: the usable data set plus everything that was skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanReport {
    /// The usable samples.
    pub dataset: Dataset,
    /// Skipped entries with reasons.
    pub issues: Vec<Issue>,
    /// Classes (folders / labels) left with no usable image; they are not in `dataset.classes`.
    pub empty_classes: Vec<String>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Labels of all samples, in order.
    pub fn labels(&self) -> Vec<usize> {
        self.samples.iter().map(|s| s.label).collect()
    }

    /// Number of samples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for s in &self.samples {
            c[s.label] += 1;
        }
        c
    }

    /// Sample indices grouped by class.
    pub fn indices_by_class(&self) -> Vec<Vec<usize>> {
        let mut v = vec![Vec::new(); self.classes.len()];
        for (i, s) in self.samples.iter().enumerate() {
            v[s.label].push(i);
        }
        v
    }

    /// Index of the class called `name`.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == name)
    }

    /// The sub-data-set of the named classes, relabelled 0.. in this data set's class order.
    pub fn select_classes(&self, names: &[String]) -> Result<Dataset> {
        let mut keep = vec![false; self.classes.len()];
        for n in names {
            let i = self.class_index(n).ok_or_else(|| DataError::UnknownClass(n.clone()))?;
            keep[i] = true;
        }
        let mut remap = vec![usize::MAX; self.classes.len()];
        let mut classes = Vec::new();
        for (i, c) in self.classes.iter().enumerate() {
            if keep[i] {
                remap[i] = classes.len();
                classes.push(c.clone());
            }
        }
        let samples = self.samples.iter().filter(|s| keep[s.label]).map(|s| Sample { label: remap[s.label], ..s.clone() }).collect();
        Ok(Dataset { samples, classes })
    }

    /// Builds a data set from `(path, class name, box, group)` records; classes sorted by name.
    pub fn from_records(records: Vec<(PathBuf, String, Option<BBox>, Option<String>)>) -> Dataset {
        let names: std::collections::BTreeSet<&String> = records.iter().map(|r| &r.1).collect();
        let classes: Vec<String> = names.into_iter().cloned().collect();
        let index: BTreeMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let samples = records.iter().map(|(p, l, b, g)| Sample { path: p.clone(), label: index[l.as_str()], bbox: *b, group: g.clone() }).collect();
        Dataset { samples, classes }
    }

    /// Scans a class-per-folder tree `root/<class>/<image>`; bad entries are reported, not fatal.
    pub fn scan_folder(root: &Path, opts: &ScanOptions) -> Result<ScanReport> {
        let mut issues = Vec::new();
        let mut class_dirs: Vec<(String, PathBuf)> = Vec::new();
        for entry in read_dir_sorted(root)? {
            let path = entry;
            let Some(name) = file_name_utf8(&path, &mut issues) else { continue };
            if name.starts_with('.') {
                continue; // hidden entries (e.g. `.DS_Store`, `.cache`) are not data
            }
            match std::fs::metadata(&path) {
                Err(e) => issues.push(Issue::new(&path, format!("cannot stat: {e}"))),
                Ok(m) if m.is_dir() => class_dirs.push((name, path)),
                Ok(_) => issues.push(Issue::new(&path, "file at top level ignored (expected root/<class>/<image>)")),
            }
        }
        let mut candidates: Vec<(usize, PathBuf)> = Vec::new();
        for (ci, (_, dir)) in class_dirs.iter().enumerate() {
            let entries = match read_dir_sorted(dir) {
                Ok(e) => e,
                Err(e) => {
                    issues.push(Issue::new(dir, format!("cannot list class folder: {e}")));
                    continue;
                }
            };
            for path in entries {
                let Some(name) = file_name_utf8(&path, &mut issues) else { continue };
                if name.starts_with('.') {
                    continue;
                }
                match std::fs::metadata(&path) {
                    Err(e) => issues.push(Issue::new(&path, format!("cannot stat: {e}"))),
                    Ok(m) if m.is_dir() => issues.push(Issue::new(&path, "nested folder not scanned (expected root/<class>/<image>)")),
                    Ok(_) if !has_image_extension(&path) => issues.push(Issue::new(&path, "not an image file extension")),
                    Ok(_) => candidates.push((ci, path)),
                }
            }
        }
        let checked: Vec<std::result::Result<(usize, PathBuf), Issue>> =
            candidates.into_par_iter().map(|(ci, path)| check_file(&path, opts).map(|_| (ci, path))).collect();
        let mut records = Vec::new();
        let mut counts = vec![0usize; class_dirs.len()];
        for r in checked {
            match r {
                Ok((ci, path)) => {
                    counts[ci] += 1;
                    records.push((path, class_dirs[ci].0.clone(), None, None));
                }
                Err(issue) => issues.push(issue),
            }
        }
        let empty_classes = class_dirs.iter().zip(&counts).filter(|(_, n)| **n == 0).map(|((c, _), _)| c.clone()).collect();
        Ok(ScanReport { dataset: Dataset::from_records(records), issues, empty_classes })
    }

    /// Loads a manifest: `.csv` (header `path,label[,x1,y1,x2,y2][,group]`) or JSONL
    /// (`{"path", "label", "bbox": [x1,y1,x2,y2]?, "group"?}` per line). Relative paths are
    /// resolved against the manifest's folder. Files are not opened; see [`Dataset::verify`].
    pub fn from_manifest(manifest: &Path) -> Result<Dataset> {
        let base = manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
        let file = std::fs::File::open(manifest).map_err(|e| DataError::io(manifest, e))?;
        let is_csv = manifest.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let records = if is_csv { parse_csv(BufReader::new(file), manifest)? } else { parse_jsonl(BufReader::new(file), manifest)? };
        let records = records.into_iter().map(|(p, l, b, g)| (if p.is_absolute() { p } else { base.join(p) }, l, b, g)).collect();
        Ok(Dataset::from_records(records))
    }

    /// Opens (and with `opts.verify`, decodes) every sample in parallel; returns the usable
    /// subset (classes left empty are dropped and listed).
    pub fn verify(&self, opts: &ScanOptions) -> ScanReport {
        let results: Vec<Option<Issue>> = self.samples.par_iter().map(|s| check_file(&s.path, opts).err()).collect();
        let mut issues = Vec::new();
        let mut records = Vec::new();
        for (s, r) in self.samples.iter().zip(results) {
            match r {
                Some(i) => issues.push(i),
                None => records.push((s.path.clone(), self.classes[s.label].clone(), s.bbox, s.group.clone())),
            }
        }
        let ds = Dataset::from_records(records);
        let empty_classes = self.classes.iter().filter(|c| ds.class_index(c).is_none()).cloned().collect();
        ScanReport { dataset: ds, issues, empty_classes }
    }

    /// Writes the data set as a JSONL manifest; paths are written relative to the manifest's
    /// folder when they lie under it.
    pub fn write_manifest(&self, manifest: &Path) -> Result<()> {
        let base = manifest.parent().unwrap_or(Path::new("."));
        let mut out = Vec::new();
        for s in &self.samples {
            let rel = s.path.strip_prefix(base).unwrap_or(&s.path);
            let rec = ManifestRecord {
                path: rel.to_string_lossy().into_owned(),
                label: serde_json::Value::String(self.classes[s.label].clone()),
                bbox: s.bbox.map(|b| [b.x1, b.y1, b.x2, b.y2]),
                group: s.group.clone(),
            };
            serde_json::to_writer(&mut out, &rec).map_err(|e| DataError::Json { path: manifest.to_path_buf(), source: e })?;
            out.push(b'\n');
        }
        write_file(manifest, &out)
    }
}

/// Writes `bytes` to `path`, creating parent folders.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| DataError::io(p, e))?;
    }
    let mut f = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    f.write_all(bytes).map_err(|e| DataError::io(path, e))
}

/// Encodes `img` as PNG and writes it to `path` ([`write_file`]).
pub(crate) fn write_png(path: &Path, img: image::RgbImage) -> Result<()> {
    let mut buf = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
        .map_err(|e| DataError::Encode { path: path.to_path_buf(), reason: e.to_string() })?;
    write_file(path, &buf)
}

fn check_file(path: &Path, opts: &ScanOptions) -> std::result::Result<(), Issue> {
    if opts.verify {
        decode_file(path, &opts.decode).map(|_| ()).map_err(|e| Issue::new(path, reason_of(&e)))
    } else {
        match std::fs::File::open(path) {
            Err(e) => Err(Issue::new(path, format!("cannot open: {e}"))),
            Ok(f) => match f.metadata() {
                Ok(m) if m.len() == 0 => Err(Issue::new(path, "empty file (0 bytes)")),
                Ok(_) => Ok(()),
                Err(e) => Err(Issue::new(path, format!("cannot stat: {e}"))),
            },
        }
    }
}

/// The reason part of an error, without repeating the path.
pub(crate) fn reason_of(e: &DataError) -> String {
    match e {
        DataError::Io { source, .. } => format!("cannot read: {source}"),
        DataError::Decode { reason, .. } => reason.clone(),
        DataError::UnknownFormat { .. } => DataError::UNKNOWN_FORMAT.to_string(),
        DataError::TooLarge { width, height, limit, .. } => {
            format!("declares {width}x{height} pixels, over the limit of {limit} (decompression-bomb guard)")
        }
        other => other.to_string(),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        v.push(e.path());
    }
    v.sort();
    Ok(v)
}

fn file_name_utf8(path: &Path, issues: &mut Vec<Issue>) -> Option<String> {
    match path.file_name().map(|n| n.to_str()) {
        Some(Some(s)) => Some(s.to_string()),
        _ => {
            issues.push(Issue::new(path, "file name is not valid UTF-8 (cannot be stored in manifests/JSON); rename it"));
            None
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ManifestRecord {
    path: String,
    label: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bbox: Option<[f32; 4]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

type Record = (PathBuf, String, Option<BBox>, Option<String>);

fn label_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_jsonl(r: impl BufRead, path: &Path) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let perr = |msg: String| DataError::Parse { path: path.to_path_buf(), line: i + 1, msg };
        let rec: ManifestRecord = serde_json::from_str(&line).map_err(|e| perr(e.to_string()))?;
        let label = label_string(&rec.label).ok_or_else(|| perr("label must be a non-empty string or a number".into()))?;
        let bbox = rec.bbox.map(|b| BBox { x1: b[0], y1: b[1], x2: b[2], y2: b[3] });
        out.push((PathBuf::from(rec.path), label, bbox, rec.group));
    }
    Ok(out)
}

/// Splits one CSV line (RFC 4180 quoting, no embedded newlines).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields.into_iter().map(|f| f.trim().to_string()).collect()
}

fn parse_csv(r: impl BufRead, path: &Path) -> Result<Vec<Record>> {
    let mut lines = r.lines().enumerate();
    let header = loop {
        match lines.next() {
            None => return Ok(Vec::new()),
            Some((_, l)) => {
                let l = l.map_err(|e| DataError::io(path, e))?;
                if !l.trim().is_empty() {
                    break split_csv(l.trim_start_matches('\u{feff}'));
                }
            }
        }
    };
    let col = |n: &str| header.iter().position(|h| h.eq_ignore_ascii_case(n));
    let herr = |msg: &str| DataError::Parse { path: path.to_path_buf(), line: 1, msg: msg.into() };
    let p = col("path").ok_or_else(|| herr("header has no `path` column"))?;
    let l = col("label").ok_or_else(|| herr("header has no `label` column"))?;
    let bcols = [col("x1"), col("y1"), col("x2"), col("y2")];
    let has_box = match bcols.iter().filter(|c| c.is_some()).count() {
        0 => false,
        4 => true,
        _ => return Err(herr("box columns must be all of x1,y1,x2,y2 or none")),
    };
    let g = col("group");
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let perr = |msg: String| DataError::Parse { path: path.to_path_buf(), line: i + 1, msg };
        let f = split_csv(&line);
        let get = |c: usize| f.get(c).map(String::as_str).unwrap_or("");
        if get(p).is_empty() || get(l).is_empty() {
            return Err(perr("empty path or label".into()));
        }
        let bbox = if has_box && bcols.iter().any(|c| !get(c.unwrap()).is_empty()) {
            let mut v = [0f32; 4];
            for (k, c) in bcols.iter().enumerate() {
                let s = get(c.unwrap());
                v[k] = s.parse().map_err(|_| perr(format!("box coordinate {s:?} is not a number")))?;
            }
            Some(BBox { x1: v[0], y1: v[1], x2: v[2], y2: v[3] })
        } else {
            None
        };
        let group = g.map(get).filter(|s| !s.is_empty()).map(str::to_string);
        out.push((PathBuf::from(get(p)), get(l).to_string(), bbox, group));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_split_handles_quotes() {
        assert_eq!(split_csv(r#"a, "b,c" ,"d""e""#), vec!["a", "b,c", "d\"e"]);
    }

    #[test]
    fn manifests_parse_with_and_without_boxes() {
        let csv = "path,label,x1,y1,x2,y2\nimg/a.jpg,Nike,1,2,3,4\nimg/b.jpg,Adidas,,,,\n";
        let recs = parse_csv(csv.as_bytes(), Path::new("m.csv")).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].2, Some(BBox { x1: 1.0, y1: 2.0, x2: 3.0, y2: 4.0 }));
        assert_eq!(recs[1].2, None);
        let bad = "path,label,x1,y1,x2,y2\na.jpg,N,1,x,3,4\n";
        assert!(matches!(parse_csv(bad.as_bytes(), Path::new("m.csv")), Err(DataError::Parse { line: 2, .. })));
        let jl = "{\"path\":\"a.png\",\"label\":\"B\",\"bbox\":[0,0,5,5]}\n\n{\"path\":\"b.png\",\"label\":3}\n";
        let recs = parse_jsonl(jl.as_bytes(), Path::new("m.jsonl")).unwrap();
        assert_eq!(recs[1].1, "3");
        assert!(matches!(parse_jsonl("{\"path\":1}".as_bytes(), Path::new("m.jsonl")), Err(DataError::Parse { line: 1, .. })));
    }

    #[test]
    fn select_classes_relabels() {
        let ds = Dataset::from_records(vec![("a".into(), "x".into(), None, None), ("b".into(), "y".into(), None, None), ("c".into(), "z".into(), None, None)]);
        let sub = ds.select_classes(&["z".into(), "x".into()]).unwrap();
        assert_eq!(sub.classes, vec!["x", "z"]);
        assert_eq!(sub.labels(), vec![0, 1]);
        assert!(matches!(ds.select_classes(&["q".into()]), Err(DataError::UnknownClass(_))));
    }
}
