//! libtorch functions that tch does not wrap, declared here and only here (private to the crate).
//!
//! The autocast API of `ATen/autocast_mode.h` (libtorch 2.11, the version `scripts/setup-libtorch.sh`
//! pins and `proxima-dist`'s shim asserts at compile time): tch 0.24's `tch::autocast` only switches
//! CUDA autocast on at its default dtype (float16) and does nothing without CUDA, so it offers
//! neither bfloat16 nor CPU autocast. The functions are declared by their C++ symbol names.
//!
//! Why not a C++ shim compiled against the header (as `proxima-dist` does): these seven functions
//! take and return only `bool`, `int` and two `enum class : int8_t` (`c10::DeviceType`,
//! `c10::ScalarType`), which the C++ ABI passes exactly as Rust's `bool`, `i32` and `i8`, and no
//! exception can escape them (they read and write thread-local flags), so declaring them directly is
//! sound; a shim would add a C++ build to this crate for no extra checking of these signatures. A
//! libtorch whose mangled names differ fails at link time, never at run time. The enum values are
//! named below and checked against tch's own encoding in the tests.

/// `c10::DeviceType` (`enum class DeviceType : int8_t`).
pub(crate) type DeviceType = i8;
/// `c10::ScalarType` (`enum class ScalarType : int8_t`).
pub(crate) type ScalarType = i8;

/// `c10::DeviceType::CPU`.
pub(crate) const CPU: DeviceType = 0;
/// `c10::DeviceType::CUDA`.
pub(crate) const CUDA: DeviceType = 1;
/// `c10::ScalarType::BFloat16`.
pub(crate) const BFLOAT16: ScalarType = 15;

/// `at::autocast::*`.
pub(crate) mod autocast {
    use super::{DeviceType, ScalarType};

    // SAFETY: each declaration matches the C++ signature in ATen/autocast_mode.h of libtorch 2.11
    // (argument and result types of the same size and ABI class, see the module docs); none of the
    // functions has a precondition or lets a C++ exception escape, so each is declared `safe`.
    unsafe extern "C" {
        #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
        pub(crate) safe fn is_autocast_enabled(device_type: DeviceType) -> bool;
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        pub(crate) safe fn set_autocast_enabled(device_type: DeviceType, enabled: bool);
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub(crate) safe fn get_autocast_dtype(device_type: DeviceType) -> ScalarType;
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub(crate) safe fn set_autocast_dtype(device_type: DeviceType, dtype: ScalarType);
        #[link_name = "_ZN2at8autocast17increment_nestingEv"]
        pub(crate) safe fn increment_nesting() -> i32;
        #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
        pub(crate) safe fn decrement_nesting() -> i32;
        #[link_name = "_ZN2at8autocast11clear_cacheEv"]
        pub(crate) safe fn clear_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_enum_values_are_libtorchs() {
        // The CPU's default autocast dtype is bfloat16 in libtorch 2.11.
        assert_eq!(autocast::get_autocast_dtype(CPU), BFLOAT16);
        assert!(!autocast::is_autocast_enabled(CPU) && !autocast::is_autocast_enabled(CUDA));
    }
}
