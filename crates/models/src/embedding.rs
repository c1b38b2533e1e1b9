//! The embedding model: backbone trunk + embedding head (+ optional L2 normalisation).
//!
//! Metric learning fine-tunes a pretrained trunk and learns a small head from scratch. Early on
//! the head's gradients are noise and would wreck the pretrained features, hence the option to
//! freeze the trunk for the first `freeze_trunk_epochs` epochs. A frozen trunk also runs its
//! BatchNorm layers in eval mode: the weights are fixed, so the statistics they were trained
//! with must stay fixed too.
//!
//! The model owns its `VarStore`: trunk variables live under `trunk.` (with exactly the names of
//! the backbone's PyTorch state dict after that prefix), head variables under `head.`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn, nn::ModuleT};

use crate::backbone::{Backbone, BackboneSpec, Normalization};
use crate::error::{ModelError, Result};
use crate::weights::{self, ImportOptions, ImportReport};

fn default_true() -> bool {
    true
}

/// The embedding head, as a tagged configuration (`type = "linear"`).
///
/// With `batch_norm`, every linear layer (hidden and output) is followed by BatchNorm1d.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HeadSpec {
    /// One linear layer from the pooled features to the embedding.
    Linear {
        #[serde(default)]
        batch_norm: bool,
    },
    /// Linear–[BN]–ReLU–[dropout] per hidden width, then a linear layer to the embedding.
    Mlp {
        hidden: Vec<i64>,
        #[serde(default)]
        batch_norm: bool,
        #[serde(default)]
        dropout: f64,
    },
    /// No head: the pooled features are the embedding (`embedding_size` must equal their width).
    Identity,
}

impl Default for HeadSpec {
    fn default() -> Self {
        HeadSpec::Linear { batch_norm: false }
    }
}

/// Configuration of an [`EmbeddingModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// The trunk.
    pub backbone: BackboneSpec,
    /// Width of the embedding.
    pub embedding_size: i64,
    /// The head on top of the pooled trunk features.
    #[serde(default)]
    pub head: HeadSpec,
    /// L2-normalise the embeddings.
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// Backbone weights to load into the trunk (`.pth`, legacy `.pth` or `.safetensors`).
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
    /// Number of initial epochs during which the trunk is frozen.
    #[serde(default)]
    pub freeze_trunk_epochs: usize,
    /// Run the trunk in inference mode while its weights train: BatchNorm normalises with its
    /// running statistics (which stay fixed) instead of the batch's, and stochastic depth is off.
    /// The usual choice when fine-tuning a pretrained trunk on small batches; it also makes a
    /// data-parallel run compute exactly what one process with the global batch computes.
    #[serde(default)]
    pub freeze_batch_norm: bool,
}

impl EmbeddingConfig {
    /// A config with a linear head, normalisation on, no pretrained weights, no freezing.
    pub fn new(backbone: BackboneSpec, embedding_size: i64) -> Self {
        EmbeddingConfig { backbone, embedding_size, head: HeadSpec::default(), normalize: true, pretrained: None, freeze_trunk_epochs: 0, freeze_batch_norm: false }
    }

    /// Parses and validates a TOML document.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let c: Self = toml::from_str(s).map_err(|e| ModelError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Parses and validates a JSON document.
    pub fn from_json_str(s: &str) -> Result<Self> {
        let c: Self = serde_json::from_str(s).map_err(|e| ModelError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        self.backbone.validate()?;
        if self.embedding_size <= 0 {
            return Err(ModelError::Config(format!("embedding_size must be positive, got {}", self.embedding_size)));
        }
        match &self.head {
            HeadSpec::Identity if self.embedding_size != self.backbone.feature_dim() => Err(ModelError::Config(format!(
                "an identity head needs embedding_size = {} (the backbone's feature width), got {}",
                self.backbone.feature_dim(),
                self.embedding_size
            ))),
            HeadSpec::Mlp { hidden, dropout, .. } if hidden.iter().any(|&h| h <= 0) || !(0.0..1.0).contains(dropout) => {
                Err(ModelError::Config(format!("mlp head needs positive hidden widths and dropout in [0, 1), got {hidden:?}, {dropout}")))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Layer {
    linear: nn::Linear,
    bn: Option<nn::BatchNorm>,
    hidden: bool,
}

#[derive(Debug)]
struct Head {
    layers: Vec<Layer>,
    dropout: f64,
}

impl Head {
    fn new(p: &nn::Path, spec: &HeadSpec, c_in: i64, out: i64) -> Self {
        let (widths, batch_norm, dropout) = match spec {
            HeadSpec::Identity => (vec![], false, 0.0),
            HeadSpec::Linear { batch_norm } => (vec![out], *batch_norm, 0.0),
            HeadSpec::Mlp { hidden, batch_norm, dropout } => (hidden.iter().copied().chain(std::iter::once(out)).collect(), *batch_norm, *dropout),
        };
        let mut c = c_in;
        let n = widths.len();
        let layers = widths
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let lp = p / i.to_string();
                let layer = Layer {
                    linear: nn::linear(&lp / "linear", c, w, Default::default()),
                    bn: batch_norm.then(|| nn::batch_norm1d(&lp / "bn", w, Default::default())),
                    hidden: i + 1 < n,
                };
                c = w;
                layer
            })
            .collect();
        Head { layers, dropout }
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.shallow_clone();
        for l in &self.layers {
            ys = ys.apply(&l.linear);
            if let Some(bn) = &l.bn {
                ys = ys.apply_t(bn, train);
            }
            if l.hidden {
                ys = ys.relu().dropout(self.dropout, train);
            }
        }
        ys
    }
}

/// Trunk + head producing (optionally L2-normalised) embeddings.
#[derive(Debug)]
pub struct EmbeddingModel {
    config: EmbeddingConfig,
    vs: nn::VarStore,
    trunk: Box<dyn Backbone>,
    head: Head,
    training: bool,
    trunk_frozen: bool,
    trunk_params: Vec<Tensor>,
    import_report: Option<ImportReport>,
}

impl EmbeddingModel {
    /// Builds the model on `device` and loads `config.pretrained` into the trunk if set.
    pub fn new(config: EmbeddingConfig, device: Device) -> Result<Self> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let trunk = config.backbone.build(&(vs.root() / "trunk"), None)?;
        let head = Head::new(&(vs.root() / "head"), &config.head, trunk.feature_dim(), config.embedding_size);
        let trunk_params = vs.variables().into_iter().filter(|(k, t)| k.starts_with("trunk.") && t.requires_grad()).map(|(_, t)| t).collect();
        let mut model = EmbeddingModel { config, vs, trunk, head, training: true, trunk_frozen: false, trunk_params, import_report: None };
        if let Some(path) = model.config.pretrained.clone() {
            model.load_pretrained(&path)?;
        }
        if model.config.freeze_trunk_epochs > 0 {
            model.freeze_trunk();
        }
        Ok(model)
    }

    /// Loads backbone weights (a torchvision-style state dict) into the trunk.
    pub fn load_pretrained(&mut self, path: impl AsRef<Path>) -> Result<ImportReport> {
        let opts = ImportOptions { store_prefix: "trunk.".into(), file_prefix: String::new() };
        let report = weights::load_file(&self.vs, path, &opts)?;
        self.import_report = Some(report.clone());
        Ok(report)
    }

    /// What the last pretrained import did.
    pub fn import_report(&self) -> Option<&ImportReport> {
        self.import_report.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &EmbeddingConfig {
        &self.config
    }
    /// The variables (for optimisers and checkpoints).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    /// The variables, mutably (to load a checkpoint or change device).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
    /// The trunk.
    pub fn trunk(&self) -> &dyn Backbone {
        self.trunk.as_ref()
    }
    /// Width of the embeddings.
    pub fn embedding_size(&self) -> i64 {
        self.config.embedding_size
    }
    /// The input normalisation the trunk's pretrained weights expect.
    pub fn normalization(&self) -> Normalization {
        self.config.backbone.normalization()
    }

    /// Switches to training mode (BatchNorm batch statistics, dropout).
    pub fn train(&mut self) {
        self.training = true;
    }
    /// Switches to evaluation mode.
    pub fn eval(&mut self) {
        self.training = false;
    }
    /// True in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Stops gradients to the trunk's parameters and runs its BatchNorm layers in eval mode.
    pub fn freeze_trunk(&mut self) {
        for t in &mut self.trunk_params {
            let _ = t.set_requires_grad(false);
        }
        self.trunk_frozen = true;
    }
    /// Makes the trunk trainable again.
    pub fn unfreeze_trunk(&mut self) {
        for t in &mut self.trunk_params {
            let _ = t.set_requires_grad(true);
        }
        self.trunk_frozen = false;
    }
    /// True while the trunk is frozen.
    pub fn is_trunk_frozen(&self) -> bool {
        self.trunk_frozen
    }
    /// Applies the freezing schedule at the start of `epoch` (0-based): frozen while
    /// `epoch < freeze_trunk_epochs`.
    pub fn begin_epoch(&mut self, epoch: usize) {
        let frozen = epoch < self.config.freeze_trunk_epochs;
        if frozen != self.trunk_frozen {
            if frozen { self.freeze_trunk() } else { self.unfreeze_trunk() }
        }
    }

    /// The trunk's trainable parameters (e.g. for a separate learning rate).
    pub fn trunk_parameters(&self) -> Vec<Tensor> {
        self.trunk_params.iter().map(Tensor::shallow_clone).collect()
    }
    /// The head's trainable parameters.
    pub fn head_parameters(&self) -> Vec<Tensor> {
        self.vs.variables().into_iter().filter(|(k, t)| k.starts_with("head.") && t.requires_grad()).map(|(_, t)| t).collect()
    }

    /// Pooled trunk features.
    ///
    /// # Shapes
    /// `xs`: `[N, 3, H, W]` → `[N, feature_dim]`.
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.trunk.features(xs, train && !self.trunk_frozen && !self.config.freeze_batch_norm)
    }

    /// Embeddings in the given mode.
    ///
    /// # Shapes
    /// `xs`: `[N, 3, H, W]` → `[N, embedding_size]`.
    pub fn embed_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = self.head.forward(&self.features_t(xs, train), train);
        if self.config.normalize {
            // Same epsilon as torch.nn.functional.normalize.
            let norm = ys.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
            ys / norm
        } else {
            ys
        }
    }

    /// Embeddings in the current mode, after checking the input shape.
    ///
    /// # Shapes
    /// `xs`: `[N, 3, H, W]` (float) → `[N, embedding_size]`.
    pub fn embed(&self, xs: &Tensor) -> Result<Tensor> {
        let size = xs.size();
        if size.len() != 4 || size[1] != 3 || size[0] == 0 {
            return Err(ModelError::Shape(format!("images must be [N>0, 3, H, W], got {size:?}")));
        }
        if !matches!(xs.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
            return Err(ModelError::Shape(format!("images must be floating point, got {:?}", xs.kind())));
        }
        if self.training && size[0] == 1 && self.has_batch_norm_in_head() {
            return Err(ModelError::Shape("a BatchNorm head needs more than one image per batch in training mode".into()));
        }
        Ok(self.embed_t(xs, self.training))
    }

    fn has_batch_norm_in_head(&self) -> bool {
        self.head.layers.iter().any(|l| l.bn.is_some())
    }
}

impl ModuleT for EmbeddingModel {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.embed_t(xs, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> EmbeddingConfig {
        EmbeddingConfig::new(BackboneSpec::SmallCnn { widths: vec![4, 8] }, 6)
    }

    #[test]
    fn config_round_trips_through_toml() {
        let c = EmbeddingConfig::from_toml_str(
            "embedding_size = 128\nfreeze_trunk_epochs = 2\n[backbone]\ntype = \"resnet18\"\n[head]\ntype = \"mlp\"\nhidden = [512]\nbatch_norm = true\n",
        )
        .unwrap();
        assert_eq!(c.backbone, BackboneSpec::Resnet18 {});
        assert_eq!(c.head, HeadSpec::Mlp { hidden: vec![512], batch_norm: true, dropout: 0.0 });
        assert!(c.normalize);
        let again = EmbeddingConfig::from_toml_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn identity_head_must_match_the_feature_width() {
        let mut c = small();
        c.head = HeadSpec::Identity;
        assert!(matches!(c.validate(), Err(ModelError::Config(m)) if m.contains("embedding_size = 8")));
        c.embedding_size = 8;
        c.validate().unwrap();
    }

    #[test]
    fn embeddings_are_normalised() {
        let m = EmbeddingModel::new(small(), Device::Cpu).unwrap();
        let e = m.embed(&Tensor::rand([5, 3, 16, 16], (Kind::Float, Device::Cpu))).unwrap();
        assert_eq!(e.size(), [5, 6]);
        let norms: Vec<f32> = Vec::try_from(e.norm_scalaropt_dim(2.0, [1], false)).unwrap();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
    }

    #[test]
    fn bad_input_shapes_are_errors() {
        let m = EmbeddingModel::new(small(), Device::Cpu).unwrap();
        assert!(m.embed(&Tensor::rand([2, 1, 16, 16], (Kind::Float, Device::Cpu))).is_err());
        assert!(m.embed(&Tensor::zeros([2, 3, 16, 16], (Kind::Uint8, Device::Cpu))).is_err());
    }
}
