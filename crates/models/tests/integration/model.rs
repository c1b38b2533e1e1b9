//! The embedding model: train/eval behaviour, trunk freezing and its schedule, heads.

use proxima_models::{BackboneSpec, EmbeddingConfig, EmbeddingModel, HeadSpec};
use tch::{Device, Kind, Tensor, nn::OptimizerConfig};

fn config(freeze: usize) -> EmbeddingConfig {
    let mut c = EmbeddingConfig::new(BackboneSpec::SmallCnn { widths: vec![4, 8] }, 5);
    c.head = HeadSpec::Mlp { hidden: vec![16], batch_norm: true, dropout: 0.0 };
    c.freeze_trunk_epochs = freeze;
    c
}

fn images(n: i64) -> Tensor {
    Tensor::rand([n, 3, 16, 16], (Kind::Float, Device::Cpu))
}

#[test]
fn eval_mode_embeds_each_image_independently() {
    tch::manual_seed(0);
    let mut m = EmbeddingModel::new(config(0), Device::Cpu).unwrap();
    let xs = images(4);
    m.eval();
    let batch = m.embed(&xs).unwrap();
    let single = Tensor::cat(&(0..4).map(|i| m.embed(&xs.narrow(0, i, 1)).unwrap()).collect::<Vec<_>>(), 0);
    assert!(batch.allclose(&single, 1e-5, 1e-6, false));
    m.train();
    assert!(m.is_training());
    let train = m.embed(&xs).unwrap();
    assert!(!train.allclose(&batch, 1e-3, 1e-3, false), "training mode uses batch statistics");
}

#[test]
fn frozen_trunk_gets_no_gradients_and_keeps_its_statistics() {
    tch::manual_seed(1);
    let mut m = EmbeddingModel::new(config(1), Device::Cpu).unwrap();
    m.begin_epoch(0);
    assert!(m.is_trunk_frozen());
    let stats = m.var_store().variables()["trunk.stages.0.bn.running_mean"].copy();
    let e = m.embed(&images(4)).unwrap();
    e.sum(Kind::Float).backward();
    assert!(m.trunk_parameters().iter().all(|p| !p.requires_grad() && !p.grad().defined()));
    assert!(m.head_parameters().iter().all(|p| p.grad().defined()));
    assert!(m.var_store().variables()["trunk.stages.0.bn.running_mean"].equal(&stats), "frozen BatchNorm keeps its statistics");

    m.begin_epoch(1);
    assert!(!m.is_trunk_frozen());
    let e = m.embed(&images(4)).unwrap();
    e.sum(Kind::Float).backward();
    assert!(m.trunk_parameters().iter().all(|p| p.requires_grad() && p.grad().defined()));
    assert!(!m.var_store().variables()["trunk.stages.0.bn.running_mean"].equal(&stats));
}

#[test]
fn a_few_steps_reduce_a_simple_loss() {
    tch::manual_seed(2);
    let m = EmbeddingModel::new(config(0), Device::Cpu).unwrap();
    let mut opt = tch::nn::Adam::default().build(m.var_store(), 1e-2).unwrap();
    let xs = images(8);
    let target = Tensor::eye(5, (Kind::Float, Device::Cpu)).narrow(0, 0, 1).repeat([8, 1]);
    let loss = |m: &EmbeddingModel| (m.embed(&xs).unwrap() - &target).square().sum(Kind::Float);
    let first = loss(&m).double_value(&[]);
    for _ in 0..30 {
        opt.backward_step(&loss(&m));
    }
    let last = loss(&m).double_value(&[]);
    assert!(last < 0.5 * first, "{first} -> {last}");
}

#[test]
fn identity_and_unnormalised_heads() {
    let mut c = EmbeddingConfig::new(BackboneSpec::SmallCnn { widths: vec![4, 8] }, 8);
    c.head = HeadSpec::Identity;
    c.normalize = false;
    let mut m = EmbeddingModel::new(c, Device::Cpu).unwrap();
    m.eval();
    let xs = images(2);
    assert!(m.embed(&xs).unwrap().equal(&m.features_t(&xs, false)));
    assert!(m.head_parameters().is_empty());
}

#[test]
fn variable_names_are_prefixed_with_trunk_and_head() {
    let c = EmbeddingConfig::new(BackboneSpec::Resnet18 {}, 128);
    let m = EmbeddingModel::new(c, Device::Cpu).unwrap();
    let vars = m.var_store().variables();
    assert!(vars.contains_key("trunk.layer4.1.bn2.running_var"));
    assert!(vars.contains_key("head.0.linear.weight"));
    assert!(!vars.keys().any(|k| k.starts_with("trunk.fc")));
    assert_eq!(m.trunk().feature_dim(), 512);
}
