//! Parity with pytorch-metric-learning 2.9: every case of every reference file is run and must
//! match within 1e-4 relative / 1e-5 absolute. The directory comes from `PROXIMA_PARITY_DIR`
//! (default `../shared/parity` beside the workspace). A case that cannot be run is a failure.
//!
//! `PROXIMA_TEST_DEVICE` (`cpu`, the default, `cuda` or `cuda:N`) is where inputs, loss weights and
//! every computation live, with the same tolerances; CUDA needs the test binary built with
//! `--features cuda` (it links `libtorch_cuda.so`) and a visible GPU, else the tests fail.

use std::path::PathBuf;

use proxima_core::loss::BuildContext;
use proxima_core::{Batch, Distance, LossSpec, MinerSpec, Tuples};
use serde_json::{Map, Value, json};
use tch::{Device, Kind, Tensor, nn};

const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

/// The device of the parity tests, from `PROXIMA_TEST_DEVICE` (default `cpu`).
pub fn test_device() -> Device {
    let s = std::env::var("PROXIMA_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = match s.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => {
            s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).unwrap_or_else(|| panic!("PROXIMA_TEST_DEVICE must be cpu, cuda or cuda:N, got '{s}'"))
        }
    };
    if let Device::Cuda(i) = device {
        assert!(tch::Cuda::is_available(), "PROXIMA_TEST_DEVICE={s} but CUDA is not available (build the tests with --features cuda; is a GPU visible?)");
        assert!((i as i64) < tch::Cuda::device_count(), "PROXIMA_TEST_DEVICE={s} but only {} CUDA device(s) are visible", tch::Cuda::device_count());
    }
    device
}

/// The parity directory, or None (with a message) when it is absent.
pub fn parity_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PROXIMA_PARITY_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/parity"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: parity directory {} not found (set PROXIMA_PARITY_DIR)", dir.display());
        None
    }
}

/// The cases of one reference file (None when the directory or file is absent).
pub fn cases(file: &str) -> Option<Vec<Value>> {
    let path = parity_dir()?.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    Some(doc["cases"].as_array().unwrap_or_else(|| panic!("{} has no cases", path.display())).clone())
}

/// A row-major nested list as a float tensor.
pub fn matrix(v: &Value) -> Tensor {
    let rows = v.as_array().expect("matrix rows");
    let cols = rows.first().and_then(Value::as_array).map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("number") as f32)).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, cols as i64])
}

/// A nested list of numbers of any shape, flattened, with its shape.
pub fn flat(v: &Value) -> (Vec<f64>, Vec<i64>) {
    fn walk(v: &Value, out: &mut Vec<f64>, shape: &mut Vec<i64>, depth: usize) {
        match v {
            Value::Array(a) => {
                if shape.len() == depth {
                    shape.push(a.len() as i64);
                }
                a.iter().for_each(|x| walk(x, out, shape, depth + 1));
            }
            x => out.push(x.as_f64().expect("number")),
        }
    }
    let (mut out, mut shape) = (Vec::new(), Vec::new());
    walk(v, &mut out, &mut shape, 0);
    (out, shape)
}

pub fn labels(v: &Value) -> Tensor {
    let l: Vec<i64> = v.as_array().expect("labels").iter().map(|x| x.as_i64().expect("integer label")).collect();
    Tensor::from_slice(&l)
}

/// Compares element-wise; returns a description of the worst mismatch.
#[allow(clippy::neg_cmp_op_on_partial_ord)] // `!(excess <= 0.0)` counts a NaN excess as a failure.
pub fn compare(what: &str, got: &[f64], want: &[f64]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()));
    }
    let mut worst: Option<(usize, f64)> = None;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (ATOL + RTOL * w.abs());
        if !(excess <= 0.0) && worst.is_none_or(|(_, e)| excess > e || excess.is_nan()) {
            worst = Some((i, excess));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!("{what}[{i}] = {} but expected {}", got[i], want[i])),
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double).flatten(0, -1)).expect("tensor values")
}

/// `{name, params}` of the reference as this crate's tagged JSON configuration.
fn component(c: &Value, drop: &[&str]) -> Value {
    let mut m: Map<String, Value> = c["params"].as_object().cloned().unwrap_or_default();
    for k in drop {
        m.remove(*k);
    }
    m.insert("type".into(), c["name"].clone());
    Value::Object(m)
}

/// The distance of a case in this crate's configuration.
fn distance(c: &Value) -> Result<Distance, String> {
    let name = match c["name"].as_str().unwrap_or_default() {
        "LpDistance" => "lp",
        "CosineSimilarity" => "cosine",
        "DotProductSimilarity" => "dot_product",
        "SNRDistance" => "snr",
        other => return Err(format!("unknown distance {other}")),
    };
    let mut v = component(c, &[]);
    v["type"] = json!(name);
    let d: Distance = serde_json::from_value(v).map_err(|e| format!("distance config: {e}"))?;
    if d.is_inverted() != c["is_inverted"].as_bool().unwrap_or(false) {
        return Err("is_inverted differs from the reference".into());
    }
    Ok(d)
}

fn run_run(what: &str, cases: &[Value], run: impl Fn(&Value) -> Result<(), String>) {
    let mut failures = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(case)));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{id}: {e}")),
            Err(p) => failures.push(format!("{id}: panicked: {:?}", p.downcast_ref::<String>().map(String::as_str).or(p.downcast_ref::<&str>().copied()))),
        }
    }
    eprintln!("{what}: {} cases, {} failed", cases.len(), failures.len());
    assert!(failures.is_empty(), "{what} parity failures ({} of {}):\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn parity_distances() {
    let Some(cases) = cases("distances.json") else { return };
    let device = test_device();
    run_run("distances", &cases, |case| {
        let d = distance(&case["distance"])?;
        let q = matrix(&case["inputs"]["query"]).to_device(device);
        let r = matrix(&case["inputs"]["reference"]).to_device(device);
        let m = d.matrix(&q, Some(&r)).map_err(|e| e.to_string())?;
        let (want, shape) = flat(&case["expected"]["matrix"]);
        if m.size() != shape {
            return Err(format!("shape {:?}, expected {shape:?}", m.size()));
        }
        compare("matrix", &values(&m), &want)
    });
}

fn mined(case: &Value, emb: &Tensor, labels: &Tensor) -> Result<Option<Tuples>, String> {
    let Some(m) = case.get("miner").filter(|m| !m.is_null()) else { return Ok(None) };
    let mut spec = component(m, &[]);
    spec["distance"] = serde_json::to_value(distance(&m["distance"])?).unwrap();
    let spec: MinerSpec = serde_json::from_value(spec).map_err(|e| format!("miner config: {e}"))?;
    let miner = spec.build().map_err(|e| e.to_string())?;
    Ok(Some(miner.mine(&Batch::new(emb, labels)).map_err(|e| e.to_string())?))
}

#[test]
fn parity_losses() {
    let Some(cases) = cases("losses.json") else { return };
    let device = test_device();
    run_run("losses", &cases, |case| {
        let loss_cfg = &case["loss"];
        let mut spec = component(loss_cfg, &["num_classes", "embedding_size"]);
        if case["distance_was_default"].as_bool() == Some(false) {
            spec["distance"] = serde_json::to_value(distance(&case["distance"])?).unwrap();
        }
        if case["reducer"]["name"].as_str() != Some("default") {
            spec["reducer"] = component(&case["reducer"], &[]);
        }
        let spec: LossSpec = serde_json::from_value(spec).map_err(|e| format!("loss config: {e}"))?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let ctx = BuildContext { num_classes: loss_cfg["params"]["num_classes"].as_i64(), embedding_size: loss_cfg["params"]["embedding_size"].as_i64(), vars: &root };
        let loss = spec.build(&ctx).map_err(|e| e.to_string())?;
        let params = loss.parameters();
        if let Some(w) = case["weights"].as_object() {
            for (name, value) in w {
                let (_, p) = params.iter().find(|(n, _)| n == name).ok_or_else(|| format!("the loss has no parameter '{name}'"))?;
                let (data, shape) = flat(value);
                if p.size() != shape {
                    return Err(format!("parameter '{name}' has shape {:?}, the reference {shape:?}", p.size()));
                }
                let src = Tensor::from_slice(&data).to_kind(p.kind()).view(shape.as_slice()).to_device(p.device());
                tch::no_grad(|| p.shallow_clone().copy_(&src));
            }
        }
        let emb = matrix(&case["inputs"]["embeddings"]).to_device(device).set_requires_grad(true);
        let lab = labels(&case["inputs"]["labels"]).to_device(device);
        let tuples = mined(case, &emb, &lab)?;
        let value = loss.forward(&Batch::new(&emb, &lab), tuples.as_ref()).map_err(|e| e.to_string())?;
        let exp = &case["expected"];
        compare("loss", &[value.double_value(&[])], &[exp["loss"].as_f64().ok_or("no expected loss")?])?;
        if value.requires_grad() {
            value.backward();
        }
        let grad = |t: &Tensor| {
            let g = t.grad();
            if g.defined() { g } else { t.zeros_like() }
        };
        compare("grad_embeddings", &values(&grad(&emb)), &flat(&exp["grad_embeddings"]).0)?;
        if let Some(gw) = exp.get("grad_weights").and_then(Value::as_object) {
            for (name, want) in gw {
                let (_, p) = params.iter().find(|(n, _)| n == name).ok_or_else(|| format!("the loss has no parameter '{name}'"))?;
                compare(&format!("grad_{name}"), &values(&grad(p)), &flat(want).0)?;
            }
        }
        Ok(())
    });
}

#[test]
fn parity_miners() {
    let Some(cases) = cases("miners.json") else { return };
    let device = test_device();
    run_run("miners", &cases, |case| {
        let emb = matrix(&case["inputs"]["embeddings"]).to_device(device);
        let lab = labels(&case["inputs"]["labels"]).to_device(device);
        let mut mcase = case["miner"].clone();
        mcase["distance"] = case["distance"].clone();
        let wrapper = json!({ "miner": mcase });
        let tuples = mined(&wrapper, &emb, &lab)?.expect("miner present");
        let exp = &case["expected"];
        let as_pairs = |v: &Value| -> Vec<(i64, i64)> {
            let mut out: Vec<(i64, i64)> = v.as_array().map(|a| a.iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap())).collect()).unwrap_or_default();
            out.sort();
            out
        };
        match (exp["kind"].as_str(), tuples) {
            (Some("triplets"), Tuples::Triplets(t)) => {
                let mut want: Vec<(i64, i64, i64)> =
                    exp["tuples"].as_array().ok_or("no tuples")?.iter().map(|t| (t[0].as_i64().unwrap(), t[1].as_i64().unwrap(), t[2].as_i64().unwrap())).collect();
                want.sort();
                let got = t.to_vec();
                if got != want {
                    return Err(format!(
                        "{} triplets, expected {}; first differences: got {:?} want {:?}",
                        got.len(),
                        want.len(),
                        got.iter().filter(|x| !want.contains(x)).take(3).collect::<Vec<_>>(),
                        want.iter().filter(|x| !got.contains(x)).take(3).collect::<Vec<_>>()
                    ));
                }
                Ok(())
            }
            (Some("pairs"), Tuples::Pairs(p)) => {
                let (pos, neg) = p.to_vecs();
                let (wp, wn) = (as_pairs(&exp["tuples"]["positive"]), as_pairs(&exp["tuples"]["negative"]));
                if pos != wp || neg != wn {
                    return Err(format!("pairs differ: {} / {} positive, {} / {} negative (got / expected)", pos.len(), wp.len(), neg.len(), wn.len()));
                }
                Ok(())
            }
            (k, _) => Err(format!("miner returned the wrong kind of tuples (expected {k:?})")),
        }
    });
}
