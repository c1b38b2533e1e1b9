//! Parity with PyTorch on `chelsea_224.png`: pooled features and ImageNet logits of torchvision
//! ResNet-18 (random weights, zip `.pth`) and EfficientNet-Lite0 (pretrained, legacy `.pth`) must
//! match the reference JSON within its stated tolerance.

use std::path::PathBuf;

use proxima_models::{Backbone, BackboneSpec, ImportOptions, StateDict, WeightFormat, load_into};
use serde_json::Value;
use tch::{Device, nn};

use crate::common::{floats, load_image, max_abs_diff, parity_file, values, workspace};

fn reference(name: &str) -> Option<Value> {
    let path = parity_file(name)?;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display())))
}

/// Builds `spec` with a 1000-class head, loads `weights` strictly, and returns (features, logits).
fn run(spec: &BackboneSpec, weights: &PathBuf, format: WeightFormat) -> (Vec<f64>, Vec<f64>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net: Box<dyn Backbone> = spec.build(&vs.root(), Some(1000)).unwrap();
    let sd = StateDict::read(weights).unwrap();
    assert_eq!(sd.format(), format);
    let report = load_into(&vs, &sd, &ImportOptions::default()).unwrap();
    assert!(report.unused.is_empty(), "unused keys: {:?}", report.unused);
    assert!(report.ignored.iter().all(|k| k.ends_with("num_batches_tracked")));
    let image = crate::common::parity_file("chelsea_224.png").expect("chelsea_224.png beside the reference");
    let xs = load_image(&image, &spec.normalization());
    tch::no_grad(|| {
        let f = net.features(&xs, false);
        let l = net.classify(&f, false).unwrap();
        (values(&f), values(&l))
    })
}

#[test]
fn resnet18_random_weights_parity() {
    let (Some(doc), Some(weights)) = (reference("resnet18_random.json"), parity_file("resnet18_random.pth")) else { return };
    let (features, logits) = run(&BackboneSpec::Resnet18 {}, &weights, WeightFormat::TorchZip);
    // Tolerance: max abs difference 1e-3 relative to the largest magnitude.
    for (what, got, want) in [("pooled features", features, floats(&doc["expected"]["pooled_features_512"])), ("logits", logits, floats(&doc["expected"]["logits_1000"]))]
    {
        let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        let diff = max_abs_diff(&got, &want);
        eprintln!("resnet18 parity: {what}: max abs diff {diff:.3e} (largest magnitude {scale:.4}, allowed {:.3e})", 1e-3 * scale);
        assert!(diff <= 1e-3 * scale, "resnet18 {what}: max abs diff {diff} > 1e-3 × {scale}");
    }
}

/// The EfficientNet-Lite0 weights: `PROXIMA_EFFNET_LITE0_PTH`, else what `scripts/fetch-weights.sh`
/// downloads into `<workspace>/.weights/`.
fn effnet_weights() -> Option<PathBuf> {
    let path = std::env::var_os("PROXIMA_EFFNET_LITE0_PTH").map(PathBuf::from).unwrap_or_else(|| workspace().join(".weights/efficientnet-lite0-57934424.pth"));
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("SKIPPED: EfficientNet-Lite0 weights not found at {}; run scripts/fetch-weights.sh (or set PROXIMA_EFFNET_LITE0_PTH)", path.display());
        None
    }
}

#[test]
fn efficientnet_lite0_pretrained_parity() {
    let (Some(doc), Some(weights)) = (reference("efficientnet_lite0.json"), effnet_weights()) else { return };
    let (features, logits) = run(&BackboneSpec::EfficientnetLite0 {}, &weights, WeightFormat::TorchLegacy);
    // Tolerance: max abs difference 2e-3 on features and logits.
    for (what, got, want) in
        [("pooled features", &features, floats(&doc["expected"]["pooled_features_1280"])), ("logits", &logits, floats(&doc["expected"]["logits_1000"]))]
    {
        let diff = max_abs_diff(got, &want);
        eprintln!("efficientnet_lite0 parity: {what}: max abs diff {diff:.3e} (allowed 2e-3)");
        assert!(diff <= 2e-3, "efficientnet_lite0 {what}: max abs diff {diff} > 2e-3");
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let want: Vec<usize> = doc["expected"]["top5_classes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(order[..5], want[..], "top-5 classes");
}

#[test]
fn resnet18_parity_through_the_embedding_model_trunk() {
    let Some(weights) = parity_file("resnet18_random.pth") else { return };
    let Some(doc) = reference("resnet18_random.json") else { return };
    let mut config = proxima_models::EmbeddingConfig::new(BackboneSpec::Resnet18 {}, 64);
    config.pretrained = Some(weights);
    let mut model = proxima_models::EmbeddingModel::new(config, Device::Cpu).unwrap();
    model.eval();
    let report = model.import_report().unwrap();
    assert_eq!(report.unused, ["fc.weight", "fc.bias"], "the ImageNet head is reported as unused");
    assert_eq!(report.ignored.len(), 20, "20 BatchNorm layers have a num_batches_tracked counter");
    let image = parity_file("chelsea_224.png").unwrap();
    let xs = load_image(&image, &model.normalization());
    let features = values(&tch::no_grad(|| model.features_t(&xs, false)));
    let want = floats(&doc["expected"]["pooled_features_512"]);
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    assert!(max_abs_diff(&features, &want) <= 1e-3 * scale);
}
