//! Containers written by `torch.save`: the zip format (PyTorch ≥ 1.6) and the legacy format.
//!
//! Both store a pickled state dict whose tensors point into raw storages; they differ only in
//! where the storages live. The zip format has `<prefix>/data.pkl` plus one `<prefix>/data/<key>`
//! entry per storage (the prefix is the archive name, not always `archive`). The legacy format is
//! a stream: magic-number, protocol and sys-info pickles, the state-dict pickle, the pickled list
//! of storage keys, then each storage as an 8-byte little-endian element count and raw bytes
//! (`torch/serialization.py`, `_legacy_load`).

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use tch::Tensor;

use super::pickle::{self, StorageRef, TensorRef, Value};
use crate::error::{ModelError, Result};

/// The legacy format's magic number 0x1950a86a20f9469cfc6c as LONG1 bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

/// Builds the contiguous tensor a [`TensorRef`] describes from its storage's raw bytes.
fn materialize(path: &Path, name: &str, t: &TensorRef, bytes: &[u8], cache: &mut HashMap<String, Tensor>) -> Result<Tensor> {
    let kind = t.storage.kind;
    let elem = kind.elt_size_in_bytes() as i64;
    let numel = t.storage.numel;
    if numel < 0 || (bytes.len() as i64) < numel * elem {
        return Err(ModelError::corrupt(path, format!("storage `{}` of `{name}` has {} bytes, needs {}", t.storage.key, bytes.len(), numel.max(0) * elem)));
    }
    if t.size.iter().any(|&s| s < 0) || t.stride.iter().any(|&s| s < 0) {
        return Err(ModelError::corrupt(path, format!("`{name}` has a negative size or stride")));
    }
    if t.size.contains(&0) {
        return Ok(Tensor::zeros(t.size.as_slice(), (kind, tch::Device::Cpu)));
    }
    let offset = t.offset + t.storage.view_offset;
    let last = t.size.iter().zip(&t.stride).try_fold(offset, |acc, (&s, &st)| acc.checked_add((s - 1).checked_mul(st)?));
    if offset < 0 || last.is_none_or(|l| l >= numel) {
        return Err(ModelError::corrupt(
            path,
            format!("`{name}` (offset {offset}, size {:?}, stride {:?}) reaches past its storage of {numel} elements", t.size, t.stride),
        ));
    }
    let storage = match cache.get(&t.storage.key) {
        Some(s) => s.shallow_clone(),
        None => {
            let s = Tensor::f_from_data_size(&bytes[..(numel * elem) as usize], &[numel], kind)?;
            cache.insert(t.storage.key.clone(), s.shallow_clone());
            s
        }
    };
    Ok(storage.f_as_strided(t.size.as_slice(), t.stride.as_slice(), offset)?.contiguous())
}

/// True when the bytes start like a zip archive.
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// True when the bytes start like a legacy torch pickle (PROTO 2, LONG1 magic number).
pub fn is_legacy(bytes: &[u8]) -> bool {
    bytes.len() >= 14 && bytes[0] == 0x80 && bytes[2] == 0x8a && bytes[3] == 10 && bytes[4..14] == LEGACY_MAGIC
}

/// Reads a zip-format `torch.save` file.
pub fn read_zip(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let corrupt = |reason: String| ModelError::corrupt(path, reason);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| corrupt(format!("bad zip archive: {e}")))?;
    let pkl_name = zip
        .file_names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len())
        .map(str::to_owned)
        .ok_or_else(|| corrupt("the zip archive has no data.pkl (not a torch.save file)".into()))?;
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_owned();
    let mut read_entry = |name: &str| -> Result<Option<Vec<u8>>> {
        let mut f = match zip.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(corrupt(format!("cannot open `{name}` in the archive: {e}"))),
        };
        let mut out = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut out).map_err(|e| corrupt(format!("cannot read `{name}` in the archive: {e}")))?;
        Ok(Some(out))
    };
    if let Some(order) = read_entry(&format!("{prefix}byteorder"))?
        && order.trim_ascii() != b"little"
    {
        return Err(corrupt(format!("byte order `{}` is not supported", String::from_utf8_lossy(&order))));
    }
    let pkl = read_entry(&pkl_name)?.ok_or_else(|| corrupt("data.pkl vanished".into()))?;
    let mut pos = 0;
    let root = pickle::load(&pkl, &mut pos).map_err(|e| corrupt(format!("data.pkl: {e}")))?;
    let entries = pickle::state_dict_entries(&root).map_err(corrupt)?;
    let mut raw: HashMap<String, Vec<u8>> = HashMap::new();
    let mut cache = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        if !raw.contains_key(&t.storage.key) {
            let entry = format!("{prefix}data/{}", t.storage.key);
            let data = read_entry(&entry)?.ok_or_else(|| corrupt(format!("storage `{entry}` of `{name}` is missing")))?;
            raw.insert(t.storage.key.clone(), data);
        }
        let tensor = materialize(path, &name, &t, &raw[&t.storage.key], &mut cache)?;
        out.push((name, tensor));
    }
    Ok(out)
}

/// Reads a legacy (pre-zip) `torch.save` file.
pub fn read_legacy(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let corrupt = |reason: String| ModelError::corrupt(path, reason);
    let mut pos = 0;
    match pickle::load(bytes, &mut pos).map_err(|e| corrupt(format!("magic number: {e}")))? {
        Value::BigInt(b) if b == LEGACY_MAGIC => {}
        _ => return Err(corrupt("invalid magic number".into())),
    }
    let protocol = pickle::load(bytes, &mut pos).map_err(|e| corrupt(format!("protocol version: {e}")))?;
    if protocol.as_int() != Some(LEGACY_PROTOCOL) {
        return Err(corrupt(format!("unsupported legacy protocol version {protocol:?}")));
    }
    let sys_info = pickle::load(bytes, &mut pos).map_err(|e| corrupt(format!("sys info: {e}")))?;
    if let Value::Dict(d) = &sys_info {
        let little = d.borrow().iter().find(|(k, _)| k.as_str() == Some("little_endian")).map(|(_, v)| v.as_int());
        if little == Some(Some(0)) {
            return Err(corrupt("big-endian checkpoints are not supported".into()));
        }
    }
    let (root, referenced) = pickle::load_with_storages(bytes, &mut pos).map_err(|e| corrupt(format!("state dict: {e}")))?;
    let entries = pickle::state_dict_entries(&root).map_err(corrupt)?;
    let keys = pickle::load(bytes, &mut pos).map_err(|e| corrupt(format!("storage key list: {e}")))?;
    let Value::List(keys) = keys else {
        return Err(corrupt("the storage key list is not a list".into()));
    };
    // Element type of each root storage, from the persistent ids that reference it.
    let kinds: HashMap<&str, &StorageRef> = referenced.iter().map(|s| (s.key.as_str(), s)).collect();
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in keys.borrow().iter() {
        let key = match key {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => return Err(corrupt(format!("storage key {other:?} is not a string"))),
        };
        let elem = kinds.get(key.as_str()).ok_or_else(|| corrupt(format!("storage `{key}` is listed but never referenced")))?.kind.elt_size_in_bytes();
        let count_bytes = bytes.get(pos..pos + 8).ok_or_else(|| corrupt(format!("file ends before storage `{key}` (truncated?)")))?;
        let count = i64::from_le_bytes(count_bytes.try_into().unwrap());
        pos += 8;
        let len = usize::try_from(count).ok().and_then(|c| c.checked_mul(elem)).ok_or_else(|| corrupt(format!("storage `{key}` has a bad size {count}")))?;
        let data = bytes
            .get(pos..pos + len)
            .ok_or_else(|| corrupt(format!("storage `{key}` needs {len} bytes but only {} remain (truncated?)", bytes.len().saturating_sub(pos))))?;
        pos += len;
        storages.insert(key, data);
    }
    let mut cache = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let data = storages.get(&t.storage.key).ok_or_else(|| corrupt(format!("storage `{}` of `{name}` is missing", t.storage.key)))?;
        out.push((name.clone(), materialize(path, &name, &t, data, &mut cache)?));
    }
    Ok(out)
}
