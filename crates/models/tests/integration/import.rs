//! Weight import: the tiny zip and legacy fixtures (strided, shared and offset storages, an int64
//! counter, an unused entry), safetensors round trips, and prefix mapping.

use proxima_models::{Backbone, ImportOptions, SmallCnn, StateDict, WeightFormat, load_file, load_into};
use tch::{Device, Kind, Tensor, nn};

use crate::common::{fixture, values};

fn check_tiny(sd: &StateDict) {
    assert_eq!(sd.len(), 9);
    assert_eq!(values(sd.get("stages.0.conv.weight").unwrap()), (0..54).map(|i| f64::from(i as f32 / 10.0)).collect::<Vec<_>>());
    assert_eq!(values(sd.get("stages.0.bn.weight").unwrap()), [1.0, 2.0]);
    assert_eq!(values(sd.get("stages.0.bn.bias").unwrap()), [3.0, 4.0], "storage offset 2 of a shared storage");
    let w = sd.get("fc.weight").unwrap();
    assert_eq!(w.size(), [3, 2]);
    assert!(w.is_contiguous());
    assert_eq!(values(w), [0.0, 1.0, 10.0, 11.0, 20.0, 21.0], "transposed strides (1, 3)");
    let n = sd.get("stages.0.bn.num_batches_tracked").unwrap();
    assert_eq!((n.kind(), n.size(), n.int64_value(&[])), (Kind::Int64, vec![], 7));
    assert_eq!(sd.keys().next(), Some("stages.0.conv.weight"), "file order is kept");
}

#[test]
fn reads_zip_format() {
    let sd = StateDict::read(fixture("tiny_zip.pth")).unwrap();
    assert_eq!(sd.format(), WeightFormat::TorchZip);
    check_tiny(&sd);
}

#[test]
fn reads_legacy_format() {
    let sd = StateDict::read(fixture("tiny_legacy.pth")).unwrap();
    assert_eq!(sd.format(), WeightFormat::TorchLegacy);
    check_tiny(&sd);
}

#[test]
fn loads_by_name_and_reports_unused_and_ignored() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = SmallCnn::new(&vs.root(), &[2], Some(3));
    let report = load_file(&vs, fixture("tiny_legacy.pth"), &ImportOptions::default()).unwrap();
    assert_eq!(report.loaded.len(), 7);
    assert_eq!(report.unused, ["extra.weight"]);
    assert_eq!(report.ignored, ["stages.0.bn.num_batches_tracked"]);
    assert_eq!(values(&vs.variables()["fc.weight"]), [0.0, 1.0, 10.0, 11.0, 20.0, 21.0]);
    // The running statistics are used in eval mode: a zero image gives relu(bias - mean·w/√var) pooled.
    let f = net.features(&Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu)), false);
    let want = [(3.0 - 1.0 * 0.5 / (2.0f64 + 1e-5).sqrt()), (4.0 + 2.0 * 0.5 / (4.0f64 + 1e-5).sqrt())];
    let got = values(&f);
    assert!((got[0] - want[0]).abs() < 1e-5 && (got[1] - want[1]).abs() < 1e-5, "{got:?} vs {want:?}");
}

#[test]
fn store_and_file_prefixes() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = SmallCnn::new(&(vs.root() / "trunk"), &[2], None);
    let _ = nn::linear(vs.root() / "head", 2, 2, Default::default());
    let opts = ImportOptions { store_prefix: "trunk.".into(), file_prefix: String::new() };
    let report = load_file(&vs, fixture("tiny_zip.pth"), &opts).unwrap();
    assert_eq!(report.loaded.len(), 5, "head variables are outside the prefix");
    assert_eq!(report.unused, ["fc.weight", "fc.bias", "extra.weight"]);
    assert_eq!(values(&vs.variables()["trunk.stages.0.bn.bias"]), [3.0, 4.0]);
}

#[test]
fn safetensors_round_trip_with_dtype_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let src = nn::VarStore::new(Device::Cpu);
    let net = SmallCnn::new(&src.root(), &[4, 8], Some(3));
    // Half-precision file: values are converted to the variables' dtype on import.
    let mut named: Vec<(String, Tensor)> = src.variables().into_iter().map(|(k, v)| (k, v.to_kind(Kind::Half))).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let path = dir.path().join("small.safetensors");
    Tensor::write_safetensors(&named, &path).unwrap();

    let dst = nn::VarStore::new(Device::Cpu);
    let net2 = SmallCnn::new(&dst.root(), &[4, 8], Some(3));
    let sd = StateDict::read(&path).unwrap();
    assert_eq!(sd.format(), WeightFormat::Safetensors);
    let report = load_into(&dst, &sd, &ImportOptions::default()).unwrap();
    assert!(report.unused.is_empty() && report.ignored.is_empty());
    for (k, v) in dst.variables() {
        assert_eq!(v.kind(), Kind::Float, "{k}");
        let want = src.variables()[&k].to_kind(Kind::Half).to_kind(Kind::Float);
        assert!(v.equal(&want), "{k}");
    }
    let xs = Tensor::rand([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let a = net.logits(&xs, false).unwrap();
    let b = net2.logits(&xs, false).unwrap();
    assert!(a.allclose(&b, 1e-2, 1e-2, false));
}
