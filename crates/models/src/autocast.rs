//! bfloat16 autocast for the CPU and CUDA, which tch 0.24 does not offer.
//!
//! Why here: the embedding trainer, the localiser's training and feature caching, and `proxima
//! perf` all run models under it, and they all depend on this crate. Whether it pays is measured
//! per model and machine: for the find models on an AMX Xeon it made both training steps slower
//! than fp32 (docs/benchmarks.md).

use tch::Device;

use crate::ffi::{BFLOAT16, CPU, CUDA, DeviceType, ScalarType, autocast};

/// Runs `f` under bfloat16 autocast for `device`'s type (what `torch.autocast(device_type,
/// dtype=torch.bfloat16)` does): matmuls and convolutions run in bfloat16, precision-sensitive
/// ops in float32. The previous autocast state is restored afterwards, also when `f` panics.
pub fn autocast_bf16<T>(device: Device, f: impl FnOnce() -> T) -> T {
    struct Restore {
        device_type: DeviceType,
        enabled: bool,
        dtype: ScalarType,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            if autocast::decrement_nesting() == 0 {
                autocast::clear_cache();
            }
            autocast::set_autocast_enabled(self.device_type, self.enabled);
            autocast::set_autocast_dtype(self.device_type, self.dtype);
        }
    }
    let device_type = if matches!(device, Device::Cuda(_)) { CUDA } else { CPU };
    let _restore = Restore { device_type, enabled: autocast::is_autocast_enabled(device_type), dtype: autocast::get_autocast_dtype(device_type) };
    autocast::set_autocast_dtype(device_type, BFLOAT16);
    autocast::set_autocast_enabled(device_type, true);
    autocast::increment_nesting();
    f()
}

#[cfg(test)]
mod tests {
    use tch::{Kind, Tensor};

    use super::*;

    #[test]
    fn autocast_bf16_runs_matmuls_in_bfloat16_on_the_cpu_and_restores_the_state() {
        let a = Tensor::randn([8, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = autocast_bf16(Device::Cpu, || a.matmul(&a));
        assert_eq!(y.kind(), Kind::BFloat16);
        // Gradients flow back to the float32 leaf.
        y.to_kind(Kind::Float).sum(Kind::Float).backward();
        assert_eq!(a.grad().kind(), Kind::Float);
        assert!(!autocast::is_autocast_enabled(CPU));
        assert_eq!(autocast::get_autocast_dtype(CPU), BFLOAT16, "CPU autocast's default dtype is bfloat16 anyway");
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        let nested = autocast_bf16(Device::Cpu, || autocast_bf16(Device::Cpu, || a.matmul(&a)).kind());
        assert_eq!(nested, Kind::BFloat16);
        let r = std::panic::catch_unwind(|| autocast_bf16(Device::Cpu, || -> i32 { panic!("inside") }));
        assert!(r.is_err() && !autocast::is_autocast_enabled(CPU));
    }
}
