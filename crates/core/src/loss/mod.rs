//! Metric-learning losses, composable as in pytorch-metric-learning: loss × distance × reducer
//! (× miner, × regularizers).
//!
//! A loss implementation ([`MetricLoss`]) only computes named, typed [`LossTerm`]s; the [`Loss`]
//! wrapper validates the batch, adds regularization terms and applies the reducer (the loss's
//! default, or the one configured). Configuration is one tagged enum, [`LossKind`], whose `type`
//! is the snake-case name (`triplet_margin`) or the reference class name (`TripletMarginLoss`) and
//! whose parameters have the reference library's names and defaults.

mod checks;

// Pair, triplet and embedding-based losses.
pub mod angular;
pub(crate) mod contrastive;
pub mod dynamic_soft_margin;
pub mod manifold;
pub mod margin;
pub(crate) mod pair_common;
pub mod pair_margin;
pub mod pair_softmax;
pub mod ranking;
pub mod tcm;
pub(crate) mod triplet;
pub mod vicreg;
// End of pair, triplet and embedding-based losses.

// Classification and proxy losses.
pub mod class_common;
mod large_margin;
mod proxy;
pub use large_margin::{MarginSoftmaxLoss, MarginVariant, NormalizedSoftmaxLoss, P2SGradLoss};
pub use proxy::{ProxyAnchorLoss, ProxyNcaLoss, SoftTripleLoss};
// End of classification and proxy losses.

// Wrappers.
mod wrappers;
pub use wrappers::{CrossBatchMemory, MultipleLosses, SelfSupervisedLoss};
// End of wrappers.

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn};

pub use contrastive::ContrastiveLoss;
pub use triplet::{TripletMarginLoss, TripletsPerAnchor};

use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::reducer::{LossTerm, Reducer};
use crate::regularizer::Regularizer;
use crate::tuples::{Batch, Tuples};

/// One loss implementation: computes its terms for a batch. (Its name is the registry's, see
/// [`LossKind::reference_name`].)
pub trait MetricLoss: Send {
    /// The unreduced terms of the loss for `batch` and optional mined `tuples` (None = all).
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>>;
    /// The reducer used when none is configured.
    fn default_reducer(&self) -> Reducer {
        Reducer::Mean
    }
    /// The learnable parameters by name (shallow clones that share storage and gradients).
    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        Vec::new()
    }
    /// The weight matrix a weight regularizer applies to, if the loss has one.
    fn regularized_weights(&self) -> Option<Tensor> {
        None
    }
}

/// What a loss needs to know to be built: the classes and embedding size for losses with
/// learnable weights, and where to create those weights.
pub struct BuildContext<'a> {
    pub num_classes: Option<i64>,
    pub embedding_size: Option<i64>,
    /// Where learnable weights are created (so an optimizer can see them).
    pub vars: &'a nn::Path<'a>,
}

impl BuildContext<'_> {
    /// The device weights are created on.
    pub fn device(&self) -> Device {
        self.vars.device()
    }
}

/// A loss configuration: the loss with its parameters, plus an optional distance, reducer and
/// regularizers. In TOML:
///
/// ```toml
/// [loss]
/// type = "triplet_margin"
/// margin = 0.1
/// distance = { type = "cosine" }
/// reducer = { type = "threshold", low = 0.1 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossSpec {
    #[serde(flatten)]
    pub kind: LossKind,
    /// Replaces the loss's default distance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<Distance>,
    /// Replaces the loss's default reducer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reducer: Option<Reducer>,
    /// A regularizer on the embeddings, added as the term `embedding_reg_loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_regularizer: Option<Regularizer>,
    #[serde(default = "one")]
    pub embedding_reg_weight: f64,
    /// A regularizer on the loss's weight matrix, added as the term `weight_reg_loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_regularizer: Option<Regularizer>,
    #[serde(default = "one")]
    pub weight_reg_weight: f64,
}

fn one() -> f64 {
    1.0
}

macro_rules! loss_kinds {
    ($( $(#[$doc:meta])* $variant:ident($params:ty) = $snake:literal, $pml:literal; )*) => {
        /// Every loss, by name, with its parameters.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum LossKind {
            $( $(#[$doc])* #[serde(rename = $snake, alias = $pml)] $variant($params), )*
        }

        impl LossKind {
            /// The reference library's class name.
            pub fn reference_name(&self) -> &'static str {
                match self { $( LossKind::$variant(_) => $pml, )* }
            }
            /// Every (snake-case name, reference class name) pair.
            pub fn names() -> &'static [(&'static str, &'static str)] {
                &[ $( ($snake, $pml), )* ]
            }
            /// The parameter type of every entry of [`Self::names`], as written in the registry
            /// (`module::Params`, the module being the file that implements it).
            pub fn param_types() -> &'static [&'static str] {
                &[ $( stringify!($params), )* ]
            }
            fn params(&self) -> &dyn LossParams {
                match self { $( LossKind::$variant(p) => p, )* }
            }
        }
    };
}

/// The parameters of one loss: validated, then built into the loss.
///
/// A loss that holds nothing but its parameters and a distance implements
/// [`DistanceLossParams`] instead, and gets this trait from it.
pub trait LossParams {
    /// Checks the parameters (called when a configuration is loaded).
    fn validate(&self) -> Result<()>;
    /// The distance used when none is configured; None for a loss that uses no distance
    /// ([`LossSpec::validate`] then refuses a configured one).
    fn default_distance(&self) -> Option<Distance>;
    /// Builds the loss. `distance` is already resolved by [`LossSpec::build`]: the configured
    /// distance, else [`LossParams::default_distance`] (so None only for a loss that uses none).
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>>;
}

/// A loss that holds nothing but its parameters and its distance: most pair, triplet and ranking
/// losses (`ContrastiveLoss` is `DistanceLoss<ContrastiveParams>`). The math of each is its
/// `impl MetricLoss for DistanceLoss<…Params>`, next to the parameters.
#[derive(Debug, Clone)]
pub struct DistanceLoss<P> {
    pub params: P,
    pub distance: Distance,
}

/// The parameters of a [`DistanceLoss`]; [`LossParams`] follows from these.
pub trait DistanceLossParams: Clone + Send + 'static {
    /// The distance used when none is configured.
    fn default_distance() -> Distance;
    /// Checks the parameters (called when a configuration is loaded).
    fn validate(&self) -> Result<()>;
    /// Refuses a distance the loss is not defined for (by default, every distance is accepted).
    fn check_distance(_distance: &Distance) -> Result<()> {
        Ok(())
    }
}

impl<P: DistanceLossParams> LossParams for P
where
    DistanceLoss<P>: MetricLoss,
{
    fn validate(&self) -> Result<()> {
        DistanceLossParams::validate(self)
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(P::default_distance())
    }
    fn build(&self, distance: Option<Distance>, _ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let distance = distance.unwrap_or_else(P::default_distance);
        P::check_distance(&distance)?;
        Ok(Box::new(DistanceLoss { params: self.clone(), distance }))
    }
}

loss_kinds! {
    // Pair, triplet and embedding-based losses.
    /// Contrastive (Siamese) loss on positive and negative pairs.
    Contrastive(contrastive::ContrastiveParams) = "contrastive", "ContrastiveLoss";
    /// Triplet margin loss.
    TripletMargin(triplet::TripletMarginParams) = "triplet_margin", "TripletMarginLoss";
    /// Multi-similarity loss.
    MultiSimilarity(pair_margin::MultiSimilarityParams) = "multi_similarity", "MultiSimilarityLoss";
    /// NT-Xent (InfoNCE) loss, per-anchor formulation.
    NTXent(pair_softmax::NTXentParams) = "ntxent", "NTXentLoss";
    /// Supervised contrastive loss.
    SupCon(pair_softmax::SupConParams) = "supcon", "SupConLoss";
    /// Circle loss.
    Circle(pair_margin::CircleParams) = "circle", "CircleLoss";
    /// Lifted structure loss.
    LiftedStructure(pair_margin::LiftedStructureParams) = "lifted_structure", "LiftedStructureLoss";
    /// Generalised lifted structure loss.
    GeneralizedLiftedStructure(pair_margin::GeneralizedLiftedStructureParams) = "generalized_lifted_structure", "GeneralizedLiftedStructureLoss";
    /// Tuplet margin loss.
    TupletMargin(pair_margin::TupletMarginParams) = "tuplet_margin", "TupletMarginLoss";
    /// Intra-pair variance loss.
    IntraPairVariance(pair_margin::IntraPairVarianceParams) = "intra_pair_variance", "IntraPairVarianceLoss";
    /// Signal-to-noise-ratio contrastive loss.
    SignalToNoiseRatioContrastive(pair_margin::SnrContrastiveParams) = "signal_to_noise_ratio_contrastive", "SignalToNoiseRatioContrastiveLoss";
    /// Neighbourhood components analysis loss.
    NCA(pair_softmax::NCAParams) = "nca", "NCALoss";
    /// N-pairs loss.
    NPairs(pair_softmax::NPairsParams) = "n_pairs", "NPairsLoss";
    /// Instance loss.
    Instance(pair_softmax::InstanceParams) = "instance", "InstanceLoss";
    /// Margin loss with an optional learnable boundary `beta`.
    Margin(margin::MarginParams) = "margin", "MarginLoss";
    /// Angular loss.
    Angular(angular::AngularParams) = "angular", "AngularLoss";
    /// FastAP loss.
    FastAP(ranking::FastAPParams) = "fast_ap", "FastAPLoss";
    /// Histogram loss.
    Histogram(ranking::HistogramParams) = "histogram", "HistogramLoss";
    /// Ranked list loss.
    RankedList(ranking::RankedListParams) = "ranked_list", "RankedListLoss";
    /// PNP loss.
    PNP(ranking::PNPParams) = "pnp", "PNPLoss";
    /// Smooth-AP loss.
    SmoothAP(ranking::SmoothAPParams) = "smooth_ap", "SmoothAPLoss";
    /// VICReg loss of two views (the second view is the batch's reference set).
    VICReg(vicreg::VICRegParams) = "vicreg", "VICRegLoss";
    /// Dynamic soft margin loss (CDF-weighted triplet margins; keeps a histogram between calls).
    DynamicSoftMargin(dynamic_soft_margin::DynamicSoftMarginParams) = "dynamic_soft_margin", "DynamicSoftMarginLoss";
    /// Threshold-consistent margin loss (a regulariser of pair similarities).
    ThresholdConsistentMargin(tcm::ThresholdConsistentMarginParams) = "threshold_consistent_margin", "ThresholdConsistentMarginLoss";
    /// Manifold loss with random meta-classes and learnable proxies.
    Manifold(manifold::ManifoldParams) = "manifold", "ManifoldLoss";
    // End of pair, triplet and embedding-based losses.

    // Classification and proxy losses.
    /// Proxy-Anchor loss (one learnable proxy per class).
    ProxyAnchor(proxy::ProxyAnchorParams) = "proxy_anchor", "ProxyAnchorLoss";
    /// ProxyNCA: NCA against one learnable proxy per class.
    ProxyNca(proxy::ProxyNcaParams) = "proxy_nca", "ProxyNCALoss";
    /// Cross-entropy on temperature-scaled cosines to normalised class weights.
    NormalizedSoftmax(large_margin::NormalizedSoftmaxParams) = "normalized_softmax", "NormalizedSoftmaxLoss";
    /// Additive angular margin softmax.
    ArcFace(large_margin::ArcFaceParams) = "arcface", "ArcFaceLoss";
    /// ArcFace with several centres per class.
    SubCenterArcFace(large_margin::SubCenterArcFaceParams) = "sub_center_arcface", "SubCenterArcFaceLoss";
    /// Additive cosine margin softmax.
    CosFace(large_margin::CosFaceParams) = "cosface", "CosFaceLoss";
    /// Multiplicative angular margin softmax on normalised weights.
    SphereFace(large_margin::SphereFaceParams) = "sphereface", "SphereFaceLoss";
    /// Multiplicative angular margin softmax (L-Softmax).
    LargeMarginSoftmax(large_margin::LargeMarginSoftmaxParams) = "large_margin_softmax", "LargeMarginSoftmaxLoss";
    /// SoftTriple: softmax over classes with several centres each.
    SoftTriple(proxy::SoftTripleParams) = "soft_triple", "SoftTripleLoss";
    /// P2SGrad: MSE between cosines to unit class weights and the one-hot target.
    P2SGrad(large_margin::P2SGradParams) = "p2s_grad", "P2SGradLoss";
    // End of classification and proxy losses.

    // Wrappers.
    /// A memory bank of past embeddings that the inner loss compares the batch with.
    CrossBatchMemory(wrappers::CrossBatchMemoryParams) = "cross_batch_memory", "CrossBatchMemory";
    /// Two views of each input as positives of each other (labels are ignored).
    SelfSupervised(wrappers::SelfSupervisedParams) = "self_supervised", "SelfSupervisedLoss";
    /// A weighted sum of losses, each with its own reducer and optional miner.
    MultipleLosses(wrappers::MultipleLossesParams) = "multiple_losses", "MultipleLosses";
    // End of wrappers.
}

impl LossSpec {
    /// A spec with the loss's own distance, reducer and no regularizer.
    pub fn new(kind: LossKind) -> Self {
        LossSpec { kind, distance: None, reducer: None, embedding_regularizer: None, embedding_reg_weight: 1.0, weight_regularizer: None, weight_reg_weight: 1.0 }
    }

    /// Checks every parameter (called when a configuration is loaded, not mid-epoch).
    pub fn validate(&self) -> Result<()> {
        let params = self.kind.params();
        params.validate()?;
        if let Some(d) = &self.distance {
            if params.default_distance().is_none() {
                return Err(invalid(self.kind.reference_name(), "this loss uses no distance (for a wrapper, set it on the inner loss)"));
            }
            d.validate()?;
        }
        if let Some(r) = &self.reducer {
            r.validate()?;
        }
        for reg in [&self.embedding_regularizer, &self.weight_regularizer].into_iter().flatten() {
            reg.validate()?;
        }
        Ok(())
    }

    /// Builds the loss.
    pub fn build(&self, ctx: &BuildContext) -> Result<Loss> {
        self.validate()?;
        let params = self.kind.params();
        let distance = self.distance.clone().or_else(|| params.default_distance());
        let inner = params.build(distance, ctx)?;
        Ok(Loss {
            name: self.kind.reference_name(),
            inner,
            reducer: self.reducer.clone(),
            embedding_regularizer: self.embedding_regularizer.clone().map(|r| (r, self.embedding_reg_weight)),
            weight_regularizer: self.weight_regularizer.clone().map(|r| (r, self.weight_reg_weight)),
        })
    }
}

/// A built loss: call [`Loss::forward`] with a batch (and optional mined tuples).
pub struct Loss {
    /// The reference library's class name, from the registry ([`LossKind::reference_name`]).
    name: &'static str,
    inner: Box<dyn MetricLoss>,
    reducer: Option<Reducer>,
    embedding_regularizer: Option<(Regularizer, f64)>,
    weight_regularizer: Option<(Regularizer, f64)>,
}

impl Loss {
    /// Wraps a loss implementation, named `name`, with its default reducer.
    pub fn from_impl(name: &'static str, inner: Box<dyn MetricLoss>) -> Self {
        Loss { name, inner, reducer: None, embedding_regularizer: None, weight_regularizer: None }
    }

    /// The reference library's class name of the loss.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The reducer in use.
    pub fn reducer(&self) -> Reducer {
        self.reducer.clone().unwrap_or_else(|| self.inner.default_reducer())
    }

    /// The loss's terms before reduction (the loss's own, then regularization terms).
    pub fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        batch.validate()?;
        let mut terms = self.inner.terms(batch, tuples)?;
        if let Some((reg, w)) = &self.embedding_regularizer {
            terms.push(reg.term("embedding_reg_loss", batch.embeddings, *w)?);
        }
        if let Some((reg, w)) = &self.weight_regularizer
            && let Some(weights) = self.inner.regularized_weights()
        {
            terms.push(reg.term("weight_reg_loss", &weights, *w)?);
        }
        Ok(terms)
    }

    /// The reduced loss (a scalar tensor that can be back-propagated).
    pub fn forward(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Tensor> {
        let terms = self.terms(batch, tuples)?;
        self.reducer().reduce_terms(terms, batch)
    }

    /// The learnable parameters by name.
    pub fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        self.inner.parameters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered name, given as the only key of a table, deserialises (by its snake-case and
    /// its reference name) to its parameters' `Default`, so the field defaults and `Default` cannot
    /// drift apart. The exceptions need a field: the ranked list loss (`margin`, required as in the
    /// reference) and the wrappers (their inner losses).
    #[test]
    fn every_name_deserialises_from_an_empty_table_to_its_default() {
        use LossKind as K;
        let defaults = [
            K::Contrastive(Default::default()),
            K::TripletMargin(Default::default()),
            K::MultiSimilarity(Default::default()),
            K::NTXent(Default::default()),
            K::SupCon(Default::default()),
            K::Circle(Default::default()),
            K::LiftedStructure(Default::default()),
            K::GeneralizedLiftedStructure(Default::default()),
            K::TupletMargin(Default::default()),
            K::IntraPairVariance(Default::default()),
            K::SignalToNoiseRatioContrastive(Default::default()),
            K::NCA(Default::default()),
            K::NPairs(Default::default()),
            K::Instance(Default::default()),
            K::Margin(Default::default()),
            K::Angular(Default::default()),
            K::FastAP(Default::default()),
            K::Histogram(Default::default()),
            K::PNP(Default::default()),
            K::SmoothAP(Default::default()),
            K::VICReg(Default::default()),
            K::DynamicSoftMargin(Default::default()),
            K::ThresholdConsistentMargin(Default::default()),
            K::Manifold(Default::default()),
            K::ProxyAnchor(Default::default()),
            K::ProxyNca(Default::default()),
            K::NormalizedSoftmax(Default::default()),
            K::ArcFace(Default::default()),
            K::SubCenterArcFace(Default::default()),
            K::CosFace(Default::default()),
            K::SphereFace(Default::default()),
            K::LargeMarginSoftmax(Default::default()),
            K::SoftTriple(Default::default()),
            K::P2SGrad(Default::default()),
        ];
        let needs_a_field = ["ranked_list", "cross_batch_memory", "self_supervised", "multiple_losses"];
        for (snake, reference) in LossKind::names() {
            for name in [snake, reference] {
                let parsed = toml::from_str::<LossKind>(&format!("type = \"{name}\""));
                if needs_a_field.contains(snake) {
                    assert!(parsed.is_err(), "{name} should need a field");
                    continue;
                }
                let parsed = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
                let expected = defaults.iter().find(|k| k.reference_name() == *reference).unwrap_or_else(|| panic!("{name}: no Default listed"));
                assert_eq!(&parsed, expected, "{name}");
            }
        }
        assert_eq!(defaults.len() + needs_a_field.len(), LossKind::names().len());
    }
}
