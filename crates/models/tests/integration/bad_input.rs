//! Bad inputs give typed errors that name the file or parameter, never panics.

use std::path::Path;

use proxima_models::{EmbeddingConfig, EmbeddingModel, ImportOptions, ModelError, SmallCnn, StateDict, load_file};
use tch::{Device, Kind, Tensor, nn};

use crate::common::{fixture, parity_file, values};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn missing_file_names_the_path() {
    let err = StateDict::read("/nonexistent/dir/weights.pth").unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/dir/weights.pth"), "{msg}");
}

#[test]
fn missing_pretrained_file_fails_model_construction() {
    let mut c = EmbeddingConfig::new(proxima_models::BackboneSpec::SmallCnn { widths: vec![2] }, 4);
    c.pretrained = Some("/nonexistent/trunk.pth".into());
    let err = EmbeddingModel::new(c, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/trunk.pth"), "{err}");
}

#[test]
fn empty_and_garbage_files_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("empty.pth", &b""[..]), ("garbage.pth", &b"this is not a checkpoint at all"[..])] {
        let p = write(dir.path(), name, bytes);
        let err = StateDict::read(&p).unwrap_err();
        assert!(matches!(err, ModelError::Corrupt { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn every_truncation_of_both_torch_formats_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny_zip.pth", "tiny_legacy.pth"] {
        let full = std::fs::read(fixture(name)).unwrap();
        for cut in (1..full.len()).step_by(7) {
            let p = write(dir.path(), name, &full[..cut]);
            match StateDict::read(&p) {
                Err(ModelError::Corrupt { path, .. }) => assert_eq!(path, p),
                other => panic!("{name} cut at {cut}/{}: expected a corrupt-file error, got {other:?}", full.len()),
            }
        }
    }
}

#[test]
fn corrupt_bytes_inside_the_zip_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("tiny_zip.pth")).unwrap();
    // Flip a byte inside data.pkl's payload: the CRC or the pickle reader must reject it.
    let at = bytes.windows(8).position(|w| w == b"stages.0").unwrap();
    bytes[at] ^= 0xff;
    let p = write(dir.path(), "flipped.pth", &bytes);
    let err = StateDict::read(&p).unwrap_err();
    assert!(matches!(err, ModelError::Corrupt { .. }), "{err:?}");
}

#[test]
fn truncated_real_checkpoint_is_an_error() {
    let Some(src) = parity_file("resnet18_random.pth") else { return };
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(src).unwrap();
    let p = write(dir.path(), "resnet18_cut.pth", &full[..full.len() / 2]);
    let err = StateDict::read(&p).unwrap_err();
    assert!(err.to_string().contains("resnet18_cut.pth"), "{err}");
}

#[test]
fn wrong_shape_names_the_parameter_and_writes_nothing() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = SmallCnn::new(&vs.root(), &[4], Some(3));
    let before = vs.variables()["stages.0.conv.weight"].copy();
    let err = load_file(&vs, fixture("tiny_zip.pth"), &ImportOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{err:?}");
    assert!(msg.contains("parameter `fc.weight`: expected [3,4], file has [3,2]"), "{msg}");
    assert!(msg.contains("tiny_zip.pth"), "{msg}");
    assert!(vs.variables()["stages.0.conv.weight"].equal(&before), "nothing is written on error");
}

#[test]
fn wrong_shape_on_a_real_checkpoint() {
    let Some(src) = parity_file("resnet18_random.pth") else { return };
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = proxima_models::ResNet::new(&vs.root(), proxima_models::ResNetDepth::R18, Some(10));
    let msg = load_file(&vs, src, &ImportOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("parameter `fc.bias`: expected [10], file has [1000]"), "{msg}");
}

#[test]
fn missing_parameter_is_named() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = SmallCnn::new(&vs.root(), &[2, 4], None);
    let err = load_file(&vs, fixture("tiny_legacy.pth"), &ImportOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::MissingParameter { ref name, .. } if name == "stages.1.bn.bias"), "{msg}");
    assert!(msg.contains("and 4 more"), "{msg}");
}

#[test]
fn unknown_backbone_name_is_a_config_error() {
    let err = EmbeddingConfig::from_toml_str("embedding_size = 64\n[backbone]\ntype = \"resnet19\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Config(_)), "{err:?}");
    assert!(msg.contains("resnet19") && msg.contains("resnet18") && msg.contains("efficientnet_lite0"), "{msg}");
    let err = EmbeddingConfig::from_json_str(r#"{"embedding_size": 64, "backbone": {"type": "vit_b16"}}"#).unwrap_err();
    assert!(err.to_string().contains("vit_b16"), "{err}");
}

#[test]
fn unknown_fields_and_invalid_values_are_config_errors() {
    for doc in [
        "embedding_size = 64\nembeding = 3\n[backbone]\ntype = \"resnet18\"\n",
        "embedding_size = 64\n[backbone]\ntype = \"resnet18\"\ndepth = 18\n",
        "embedding_size = 0\n[backbone]\ntype = \"resnet18\"\n",
        "embedding_size = 8\n[backbone]\ntype = \"small_cnn\"\nwidths = []\n",
        "embedding_size = 8\n[backbone]\ntype = \"resnet18\"\n[head]\ntype = \"mlp\"\nhidden = [0]\n",
    ] {
        assert!(matches!(EmbeddingConfig::from_toml_str(doc), Err(ModelError::Config(_))), "{doc}");
    }
}

#[test]
fn bad_image_batches_are_shape_errors() {
    let m = EmbeddingModel::new(EmbeddingConfig::new(proxima_models::BackboneSpec::SmallCnn { widths: vec![2] }, 4), Device::Cpu).unwrap();
    for xs in [Tensor::zeros([3, 16, 16], (Kind::Float, Device::Cpu)), Tensor::zeros([0, 3, 16, 16], (Kind::Float, Device::Cpu))] {
        assert!(matches!(m.embed(&xs), Err(ModelError::Shape(_))));
    }
    assert_eq!(values(&m.embed(&Tensor::zeros([2, 3, 16, 16], (Kind::Float, Device::Cpu))).unwrap().sum(Kind::Float)).len(), 1);
}
