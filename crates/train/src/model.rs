//! What the trainer needs from a model, independent of the architecture.
//!
//! The trainer only needs embeddings of an image batch and the model's variables split into
//! trunk and embedder (head) groups, which get their own learning rates. By convention a model
//! creates its trunk variables under `trunk.` and its head under `head.` in its `VarStore`.

use tch::{Tensor, nn};

/// A network mapping images to embeddings.
pub trait EmbeddingNet: Send {
    /// Embeddings of a batch.
    ///
    /// # Shapes
    /// `images` [B, 3, H, W] → [B, E].
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor;
    /// The embedding size E.
    fn embedding_size(&self) -> i64;
    /// Called at the start of every epoch (0-based), e.g. to freeze or unfreeze the trunk.
    fn begin_epoch(&mut self, _epoch: usize) {}
    /// Every variable (parameters and buffers) by name, for checkpoints.
    fn variables(&self) -> Vec<(String, Tensor)>;
}

impl EmbeddingNet for proxima_models::EmbeddingModel {
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        self.embed_t(images, train)
    }
    fn embedding_size(&self) -> i64 {
        proxima_models::EmbeddingModel::embedding_size(self)
    }
    fn begin_epoch(&mut self, epoch: usize) {
        proxima_models::EmbeddingModel::begin_epoch(self, epoch)
    }
    fn variables(&self) -> Vec<(String, Tensor)> {
        self.var_store().variables().into_iter().collect()
    }
}

/// The trainable variables of `vs` (not buffers such as BatchNorm statistics) whose names start
/// with `prefix`, sorted by name.
pub fn trainable_with_prefix(vs: &nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let trainable: std::collections::HashSet<usize> = vs.trainable_variables().iter().map(|t| t.data_ptr() as usize).collect();
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(n, t)| n.starts_with(prefix) && trainable.contains(&(t.data_ptr() as usize))).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Turns gradients on or off for the trainable variables under `prefix` (trunk freezing).
pub fn set_trainable(vs: &nn::VarStore, prefix: &str, trainable: bool) {
    for (_, t) in trainable_with_prefix(vs, prefix) {
        let _ = t.set_requires_grad(trainable);
    }
}
