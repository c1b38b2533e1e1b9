//! Metric-learning math.
#[cfg(test)]
mod smoke { #[test] fn t() { let x = tch::Tensor::from_slice(&[1f32,2.0]); assert_eq!(f64::try_from(x.sum(tch::Kind::Float)).unwrap(), 3.0); } }
