//! Reading embeddings and labels from the files people actually have: NumPy `.npy` arrays
//! and plain `.csv`/`.tsv`/text files.
//!
//! Why a hand-written `.npy` reader: the format needed here is tiny (a magic string, a Python
//! dict header, then raw little-endian data), and writing it out keeps the error messages
//! specific (wrong dtype, wrong shape, truncated data — each naming the file) without another
//! dependency. Supported: format versions 1–3, C order, little-endian `f4`/`f8` embeddings
//! (2-D) and `i4`/`i8` labels (1-D, or 2-D with one column).
//!
//! Labels from text files are names: when every name of every label file is an integer the
//! integers are the class ids; otherwise names get ids in first-seen order (queries first,
//! then references), so the same name means the same class in both files.
//!
//! Every non-finite embedding value is rejected here with its row, so the error names the
//! file and the row a person must look at.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

/// A row-major `rows × dim` embedding matrix read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Number of rows.
    pub rows: usize,
    /// Values per row.
    pub dim: usize,
    /// Row-major values, all finite.
    pub data: Vec<f32>,
}

/// Labels as read, before class ids are assigned.
#[derive(Debug, Clone, PartialEq)]
pub enum RawLabels {
    /// Integer labels from a `.npy` file.
    Ints(Vec<i64>),
    /// One name per line from a text file.
    Names(Vec<String>),
}

impl RawLabels {
    /// Number of labels.
    pub fn len(&self) -> usize {
        match self {
            RawLabels::Ints(v) => v.len(),
            RawLabels::Names(v) => v.len(),
        }
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Class ids of one or more label files, and the name of every class.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedLabels {
    /// Class ids, one vector per input file, in input order.
    pub ids: Vec<Vec<i64>>,
    /// `(id, name)` of every class, by id.
    pub names: Vec<(i64, String)>,
    /// True when the ids were assigned to non-numeric names (first-seen order).
    pub assigned: bool,
}

impl ResolvedLabels {
    /// The name of class `id` (its number when it has none).
    pub fn name_of(&self, id: i64) -> String {
        match self.names.binary_search_by_key(&id, |(i, _)| *i) {
            Ok(p) => self.names[p].1.clone(),
            Err(_) => id.to_string(),
        }
    }
}

/// Read an embedding matrix from `.npy`, `.csv` or `.tsv` (by extension; other extensions are
/// read as text with commas, tabs or spaces between values).
pub fn read_embeddings(path: &Path) -> Result<EmbeddingFile> {
    let ext = extension(path);
    let (rows, dim, data) = if ext == "npy" {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read embeddings file {}", path.display()))?;
        let arr = parse_npy(&bytes).with_context(|| format!("embeddings file {}", path.display()))?;
        embeddings_from_npy(arr).with_context(|| format!("embeddings file {}", path.display()))?
    } else {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read embeddings file {}", path.display()))?;
        parse_text_matrix(&text, &ext).with_context(|| format!("embeddings file {}", path.display()))?
    };
    if let Some(p) = data.iter().position(|v| !v.is_finite()) {
        bail!("embeddings file {}: row {} (0-based) has a non-finite value {} in column {}", path.display(), p / dim, data[p], p % dim);
    }
    Ok(EmbeddingFile { path: path.to_path_buf(), rows, dim, data })
}

/// Read labels from `.npy` (int32/int64) or a text file (one label per line).
pub fn read_labels(path: &Path) -> Result<RawLabels> {
    if extension(path) == "npy" {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read labels file {}", path.display()))?;
        let arr = parse_npy(&bytes).with_context(|| format!("labels file {}", path.display()))?;
        return labels_from_npy(arr).map(RawLabels::Ints).with_context(|| format!("labels file {}", path.display()));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read labels file {}", path.display()))?;
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        ensure!(!name.is_empty(), "labels file {}: line {} is empty", path.display(), i + 1);
        names.push(name.to_string());
    }
    ensure!(!names.is_empty(), "labels file {} has no labels", path.display());
    Ok(RawLabels::Names(names))
}

/// Assign class ids to several label files jointly (see the module docs for the rule).
pub fn resolve_labels(files: &[&RawLabels]) -> ResolvedLabels {
    let all_ints = files.iter().all(|f| match f {
        RawLabels::Ints(_) => true,
        RawLabels::Names(n) => n.iter().all(|s| s.parse::<i64>().is_ok()),
    });
    if all_ints {
        let ids: Vec<Vec<i64>> = files
            .iter()
            .map(|f| match f {
                RawLabels::Ints(v) => v.clone(),
                RawLabels::Names(n) => n.iter().map(|s| s.parse().expect("checked above")).collect(),
            })
            .collect();
        let mut distinct: Vec<i64> = ids.iter().flatten().copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let names = distinct.into_iter().map(|i| (i, i.to_string())).collect();
        return ResolvedLabels { ids, names, assigned: false };
    }
    let mut map: HashMap<String, i64> = HashMap::new();
    let mut names = Vec::new();
    let mut id_of = |name: String| {
        let next = map.len() as i64;
        *map.entry(name.clone()).or_insert_with(|| {
            names.push((next, name));
            next
        })
    };
    let ids = files
        .iter()
        .map(|f| match f {
            RawLabels::Ints(v) => v.iter().map(|i| id_of(i.to_string())).collect(),
            RawLabels::Names(n) => n.iter().map(|s| id_of(s.clone())).collect(),
        })
        .collect();
    ResolvedLabels { ids, names, assigned: true }
}

fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// Parse a text matrix: one row per line; `,` for csv, tab for tsv, else any of `,`, tab,
/// space. A first line with no number at all is a header and skipped.
fn parse_text_matrix(text: &str, ext: &str) -> Result<(usize, usize, Vec<f32>)> {
    let split = |line: &str| -> Vec<String> {
        match ext {
            "csv" => line.split(',').map(|s| s.trim().to_string()).collect(),
            "tsv" => line.split('\t').map(|s| s.trim().to_string()).collect(),
            _ => line.split([',', '\t', ' ']).filter(|s| !s.is_empty()).map(|s| s.trim().to_string()).collect(),
        }
    };
    let mut data = Vec::new();
    let mut dim = 0;
    let mut rows = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            bail!("line {} is empty", i + 1);
        }
        let fields = split(line);
        if i == 0 && fields.iter().all(|f| f.parse::<f64>().is_err()) {
            continue;
        }
        if dim == 0 {
            dim = fields.len();
        } else if fields.len() != dim {
            bail!("wrong shape: line {} (row {rows}, 0-based) has {} values but earlier rows have {dim}", i + 1, fields.len());
        }
        for (j, f) in fields.iter().enumerate() {
            let v: f64 = f.parse().map_err(|_| anyhow::anyhow!("line {}, column {}: {f:?} is not a number", i + 1, j + 1))?;
            if v.is_finite() && !(v as f32).is_finite() {
                bail!("line {}, column {}: {v} does not fit in float32", i + 1, j + 1);
            }
            data.push(v as f32);
        }
        rows += 1;
    }
    ensure!(rows > 0, "no rows");
    Ok((rows, dim, data))
}

/// Element types this reader supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
    I32,
    I64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }
}

/// A parsed `.npy` array: dtype, shape and the raw little-endian data bytes.
#[derive(Debug)]
struct NpyArray<'a> {
    dtype: Dtype,
    descr: String,
    shape: Vec<usize>,
    data: &'a [u8],
}

/// Parse the header of a `.npy` file and check the data length.
fn parse_npy(bytes: &[u8]) -> Result<NpyArray<'_>> {
    ensure!(bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY", "not a .npy file (missing the \\x93NUMPY magic)");
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "truncated .npy header");
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => bail!("unsupported .npy format version {v}"),
    };
    ensure!(bytes.len() >= start + header_len, "truncated .npy header");
    let header = std::str::from_utf8(&bytes[start..start + header_len]).context(".npy header is not text")?;
    let descr = dict_value(header, "descr").context("the .npy header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"').to_string();
    let fortran = dict_value(header, "fortran_order").context("the .npy header has no 'fortran_order'")?;
    let shape_text = dict_value(header, "shape").context("the .npy header has no 'shape'")?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().with_context(|| format!("bad shape {shape_text}")))
        .collect::<Result<_>>()?;
    let dtype = match descr.as_str() {
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        "<i4" => Dtype::I32,
        "<i8" => Dtype::I64,
        d if d.starts_with('>') => bail!("big-endian dtype {d} is not supported; save little-endian (e.g. arr.astype('<f4'))"),
        d => bail!("unsupported dtype {d}; expected float32/float64 embeddings or int32/int64 labels"),
    };
    let big = shape.iter().filter(|&&n| n > 1).count() > 1;
    if fortran.trim() == "True" && big {
        bail!("Fortran-ordered (column-major) arrays are not supported; save with np.ascontiguousarray(arr)");
    }
    let count = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).context("shape overflows")?;
    let need = count.checked_mul(dtype.size()).context("shape overflows")?;
    let data = &bytes[start + header_len..];
    ensure!(data.len() >= need, "truncated: the shape {shape:?} of {descr} needs {need} data bytes but the file has {}", data.len());
    ensure!(data.len() == need, "{} bytes of trailing data after the array of shape {shape:?}", data.len() - need);
    Ok(NpyArray { dtype, descr, shape, data })
}

/// The text of the value of `key` in a Python dict literal (up to the next top-level comma).
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

fn embeddings_from_npy(arr: NpyArray<'_>) -> Result<(usize, usize, Vec<f32>)> {
    ensure!(arr.shape.len() == 2, "wrong shape {:?}: embeddings must be a 2-D array (rows × dimension)", arr.shape);
    let (rows, dim) = (arr.shape[0], arr.shape[1]);
    ensure!(rows > 0 && dim > 0, "wrong shape {:?}: no rows or zero dimension", arr.shape);
    let data: Vec<f32> = match arr.dtype {
        Dtype::F32 => arr.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
        Dtype::F64 => {
            let mut out = Vec::with_capacity(rows * dim);
            for (p, b) in arr.data.chunks_exact(8).enumerate() {
                let v = f64::from_le_bytes(b.try_into().expect("8 bytes"));
                if v.is_finite() && !(v as f32).is_finite() {
                    bail!("row {} (0-based), column {}: {v} does not fit in float32", p / dim, p % dim);
                }
                out.push(v as f32);
            }
            out
        }
        Dtype::I32 | Dtype::I64 => bail!("embeddings must be float32 or float64, found {}", arr.descr),
    };
    Ok((rows, dim, data))
}

fn labels_from_npy(arr: NpyArray<'_>) -> Result<Vec<i64>> {
    let ok_shape = arr.shape.len() == 1 || (arr.shape.len() == 2 && arr.shape[1] == 1);
    ensure!(ok_shape, "wrong shape {:?}: labels must be a 1-D array (or one column)", arr.shape);
    ensure!(arr.shape[0] > 0, "no labels");
    match arr.dtype {
        Dtype::I32 => Ok(arr.data.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64).collect()),
        Dtype::I64 => Ok(arr.data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()),
        Dtype::F32 | Dtype::F64 => bail!("labels must be int32 or int64, found {}", arr.descr),
    }
}

/// A float32 `[n, d]` matrix as `.npy` bytes.
pub fn npy_f32(data: &[f32], n: usize, d: usize) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    npy_bytes("<f4", &[n, d], &bytes)
}

/// Minimal `.npy` (version 1.0) writer.
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_text = match shape {
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn npy_float32_and_float64_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let v = [1.0f32, -2.5, 3.0, 4.0, 5.0, 6.0];
        let p = write(dir.path(), "e.npy", &npy_bytes("<f4", &[3, 2], &f32_bytes(&v)));
        let e = read_embeddings(&p).unwrap();
        assert_eq!((e.rows, e.dim, e.data.as_slice()), (3, 2, &v[..]));
        let d: Vec<u8> = v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect();
        let p = write(dir.path(), "e64.npy", &npy_bytes("<f8", &[2, 3], &d));
        let e = read_embeddings(&p).unwrap();
        assert_eq!((e.rows, e.dim, e.data.as_slice()), (2, 3, &v[..]));
    }

    #[test]
    fn npy_errors_are_specific_and_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let one_d = write(dir.path(), "one_d.npy", &npy_bytes("<f4", &[4], &f32_bytes(&[1.0; 4])));
        let e = format!("{:#}", read_embeddings(&one_d).unwrap_err());
        assert!(e.contains("one_d.npy") && e.contains("wrong shape [4]"), "{e}");
        let trunc = write(dir.path(), "trunc.npy", &npy_bytes("<f4", &[2, 2], &f32_bytes(&[1.0; 3])));
        let e = format!("{:#}", read_embeddings(&trunc).unwrap_err());
        assert!(e.contains("trunc.npy") && e.contains("truncated"), "{e}");
        let big = write(dir.path(), "big.npy", &npy_bytes(">f4", &[1, 1], &[0; 4]));
        assert!(format!("{:#}", read_embeddings(&big).unwrap_err()).contains("big-endian"));
        let ints = write(dir.path(), "ints.npy", &npy_bytes("<i8", &[1, 1], &[0; 8]));
        assert!(format!("{:#}", read_embeddings(&ints).unwrap_err()).contains("must be float32 or float64"));
        let nan = write(dir.path(), "nan.npy", &npy_bytes("<f4", &[3, 2], &f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, f32::NAN])));
        let e = format!("{:#}", read_embeddings(&nan).unwrap_err());
        assert!(e.contains("nan.npy") && e.contains("row 2 (0-based)") && e.contains("column 1"), "{e}");
        let junk = write(dir.path(), "junk.npy", b"hello world, not numpy");
        assert!(format!("{:#}", read_embeddings(&junk).unwrap_err()).contains("not a .npy file"));
        let missing = dir.path().join("missing.npy");
        let e = format!("{:#}", read_embeddings(&missing).unwrap_err());
        assert!(e.contains("cannot read embeddings file") && e.contains("missing.npy"), "{e}");
        let huge = write(dir.path(), "huge.npy", &npy_bytes("<f8", &[1, 1], &1e300f64.to_le_bytes()));
        assert!(format!("{:#}", read_embeddings(&huge).unwrap_err()).contains("does not fit in float32"));
    }

    #[test]
    fn npy_header_parsing_handles_versions_and_spacing() {
        let h = "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }";
        assert_eq!(dict_value(h, "shape"), Some("(3,)"));
        assert_eq!(dict_value(h, "descr"), Some("'<i4'"));
        assert_eq!(dict_value(h, "fortran_order"), Some("False"));
        // Version 2.0 header (u32 length).
        let header = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\n";
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        b.extend_from_slice(&(header.len() as u32).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[7, 0, 0, 0, 255, 255, 255, 255]);
        assert_eq!(labels_from_npy(parse_npy(&b).unwrap()).unwrap(), vec![7, -1]);
    }

    #[test]
    fn text_matrices_with_header_and_shape_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "e.csv", b"a,b,c\n1,2,3\n4, 5 ,6e0\n");
        let e = read_embeddings(&p).unwrap();
        assert_eq!((e.rows, e.dim), (2, 3));
        assert_eq!(e.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let p = write(dir.path(), "e.tsv", b"1\t2\n3\t4\n");
        assert_eq!(read_embeddings(&p).unwrap().data, vec![1.0, 2.0, 3.0, 4.0]);
        let p = write(dir.path(), "ragged.csv", b"1,2\n3\n");
        let e = format!("{:#}", read_embeddings(&p).unwrap_err());
        assert!(e.contains("ragged.csv") && e.contains("line 2") && e.contains("wrong shape"), "{e}");
        let p = write(dir.path(), "nan.csv", b"1,2\n3,4\nnan,5\n");
        let e = format!("{:#}", read_embeddings(&p).unwrap_err());
        assert!(e.contains("row 2 (0-based)"), "{e}");
        let p = write(dir.path(), "word.csv", b"1,2\n3,x\n");
        assert!(format!("{:#}", read_embeddings(&p).unwrap_err()).contains("line 2, column 2: \"x\" is not a number"));
    }

    #[test]
    fn labels_from_npy_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let d: Vec<u8> = [3i64, 1, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
        let p = write(dir.path(), "l.npy", &npy_bytes("<i8", &[3], &d));
        assert_eq!(read_labels(&p).unwrap(), RawLabels::Ints(vec![3, 1, 3]));
        let p = write(dir.path(), "lf.npy", &npy_bytes("<f4", &[1], &f32_bytes(&[1.0])));
        assert!(format!("{:#}", read_labels(&p).unwrap_err()).contains("int32 or int64"));
        let p = write(dir.path(), "l.txt", b"nike\r\nadidas\nnike\n");
        assert_eq!(read_labels(&p).unwrap(), RawLabels::Names(vec!["nike".into(), "adidas".into(), "nike".into()]));
        let p = write(dir.path(), "gap.txt", b"a\n\nb\n");
        assert!(format!("{:#}", read_labels(&p).unwrap_err()).contains("line 2 is empty"));
    }

    #[test]
    fn label_resolution_shares_ids_across_files() {
        let q = RawLabels::Names(vec!["puma".into(), "nike".into(), "puma".into()]);
        let r = RawLabels::Names(vec!["nike".into(), "adidas".into()]);
        let res = resolve_labels(&[&q, &r]);
        assert_eq!(res.ids, vec![vec![0, 1, 0], vec![1, 2]]);
        assert!(res.assigned);
        assert_eq!(res.name_of(2), "adidas");
        // Integer names stay integers, and agree with npy integer labels.
        let q = RawLabels::Names(vec!["10".into(), "-3".into()]);
        let r = RawLabels::Ints(vec![-3, 7]);
        let res = resolve_labels(&[&q, &r]);
        assert_eq!(res.ids, vec![vec![10, -3], vec![-3, 7]]);
        assert!(!res.assigned);
        assert_eq!(res.names, vec![(-3, "-3".into()), (7, "7".into()), (10, "10".into())]);
    }
}
