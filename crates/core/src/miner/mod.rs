//! Miners: choose the informative pairs or triplets of a batch before the loss sees it.
//!
//! A miner returns a typed [`Tuples`] value (pairs or triplets) that any pair or triplet loss
//! accepts. Mining never needs gradients, so it runs under `no_grad` on the detached embeddings;
//! the exhaustive miners work block by block over anchor–positive pairs so that they never hold
//! all B³ candidate triplets at once.

mod angular;
mod batch_easy_hard;
mod batch_hard;
mod blocks;
mod distance_weighted;
mod hdc;
mod multi_similarity;
mod pair_margin;
mod triplet_margin;
mod uniform_histogram;

use serde::{Deserialize, Serialize};

pub use angular::{AngularMiner, AngularMinerParams};
pub use batch_easy_hard::{BatchEasyHardMiner, BatchEasyHardParams, Strategy};
pub use batch_hard::BatchHardMiner;
pub use distance_weighted::{DistanceWeightedMiner, DistanceWeightedMinerParams};
pub use hdc::{HDCMiner, HdcMinerParams};
pub use multi_similarity::{MultiSimilarityMiner, MultiSimilarityMinerParams};
pub use pair_margin::{PairMarginMiner, PairMarginMinerParams};
pub use triplet_margin::{TripletMarginMiner, TripletMarginMinerParams, TypeOfTriplets};
pub use uniform_histogram::{UniformHistogramMiner, UniformHistogramMinerParams};

use crate::distance::Distance;
use crate::error::Result;
use crate::tuples::{Batch, Tuples};

/// One miner implementation.
pub trait Miner: Send {
    /// The reference library's class name (e.g. `BatchHardMiner`).
    fn name(&self) -> &'static str;
    /// Mines the tuples of a (validated, detached) batch.
    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples>;
}

/// The parameters of one miner: validated, then built.
pub trait MinerParams {
    /// Checks the parameters (called when a configuration is loaded).
    fn validate(&self) -> Result<()>;
    /// The miner's default distance.
    fn default_distance(&self) -> Distance {
        Distance::lp()
    }
    /// Builds the miner with the given distance.
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>>;
}

/// A miner configuration: the miner with its parameters and an optional distance. In TOML:
///
/// ```toml
/// [miner]
/// type = "triplet_margin"
/// margin = 0.2
/// type_of_triplets = "semihard"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinerSpec {
    #[serde(flatten)]
    pub kind: MinerKind,
    /// Replaces the miner's default distance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<Distance>,
}

macro_rules! miner_kinds {
    ($( $(#[$doc:meta])* $variant:ident($params:ty) = $snake:literal, $pml:literal; )*) => {
        /// Every miner, by name, with its parameters.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum MinerKind {
            $( $(#[$doc])* #[serde(rename = $snake, alias = $pml)] $variant($params), )*
        }

        impl MinerKind {
            /// The reference library's class name.
            pub fn reference_name(&self) -> &'static str {
                match self { $( MinerKind::$variant(_) => $pml, )* }
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
            fn params(&self) -> &dyn MinerParams {
                match self { $( MinerKind::$variant(p) => p, )* }
            }
        }
    };
}

miner_kinds! {
    /// The hardest positive and hardest negative of every anchor.
    BatchHard(batch_hard::BatchHardParams) = "batch_hard", "BatchHardMiner";
    /// One positive and one negative per anchor, each easy, semihard, hard, or all pairs.
    BatchEasyHard(batch_easy_hard::BatchEasyHardParams) = "batch_easy_hard", "BatchEasyHardMiner";
    /// Pairs harder than the anchor's extreme pair of the other kind, by a margin ε.
    MultiSimilarity(multi_similarity::MultiSimilarityMinerParams) = "multi_similarity", "MultiSimilarityMiner";
    /// Every triplet whose margin lies in the chosen band (streamed in blocks).
    TripletMargin(triplet_margin::TripletMarginMinerParams) = "triplet_margin", "TripletMarginMiner";
    /// Positive pairs farther than a margin, negative pairs closer than one.
    PairMargin(pair_margin::PairMarginMinerParams) = "pair_margin", "PairMarginMiner";
    /// Triplets whose angle at the negative exceeds a threshold (streamed in blocks).
    Angular(angular::AngularMinerParams) = "angular", "AngularMiner";
    /// The hardest fraction of the positive and of the negative pairs.
    Hdc(hdc::HdcMinerParams) = "hdc", "HDCMiner";
    /// Random triplets with negatives drawn ∝ 1/q(distance) on the sphere.
    DistanceWeighted(distance_weighted::DistanceWeightedMinerParams) = "distance_weighted", "DistanceWeightedMiner";
    /// Pairs sampled evenly over equal-width bins of their distances.
    UniformHistogram(uniform_histogram::UniformHistogramMinerParams) = "uniform_histogram", "UniformHistogramMiner";
}

impl MinerSpec {
    /// A spec with the miner's default distance.
    pub fn new(kind: MinerKind) -> Self {
        MinerSpec { kind, distance: None }
    }

    /// Checks every parameter.
    pub fn validate(&self) -> Result<()> {
        self.kind.params().validate()?;
        self.distance.as_ref().map_or(Ok(()), Distance::validate)
    }

    /// Builds the miner.
    pub fn build(&self) -> Result<MinerBox> {
        self.validate()?;
        let params = self.kind.params();
        let distance = self.distance.clone().unwrap_or_else(|| params.default_distance());
        Ok(MinerBox(params.build(distance)?))
    }
}

/// A built miner: call [`MinerBox::mine`].
pub struct MinerBox(Box<dyn Miner>);

impl MinerBox {
    /// Wraps a miner implementation.
    pub fn from_impl(inner: Box<dyn Miner>) -> Self {
        MinerBox(inner)
    }
    /// The reference library's class name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
    /// Validates the batch and mines it without gradients.
    pub fn mine(&self, batch: &Batch) -> Result<Tuples> {
        batch.validate()?;
        let emb = batch.embeddings.detach();
        let reference = batch.reference.map(|(e, l)| (e.detach(), l.shallow_clone()));
        tch::no_grad(|| {
            let b = match &reference {
                Some((e, l)) => Batch::with_reference(&emb, batch.labels, e, l),
                None => Batch::new(&emb, batch.labels),
            };
            self.0.mine_tuples(&b)
        })
    }
}
