//! libtorch functions that tch does not wrap, declared here and only here (private to the crate).
//!
//! The autocast API of `ATen/autocast_mode.h`: tch 0.24's `tch::autocast` only switches CUDA
//! autocast on at its default dtype (float16) and does nothing without CUDA, so it offers neither
//! bfloat16 nor CPU autocast. `src/autocast.cpp` (built by `build.rs` against the libtorch that
//! torch-sys links) calls the API through the shipped header with its real types and exposes plain
//! C functions; it asserts at compile time that libtorch is 2.11 and that the integer values named
//! below are `c10::DeviceType::{CPU, CUDA}` and `c10::ScalarType::BFloat16`.

/// `c10::DeviceType` (`enum class DeviceType : int8_t`), as the shim takes it.
pub(crate) type DeviceType = i8;
/// `c10::ScalarType` (`enum class ScalarType : int8_t`), as the shim takes it.
pub(crate) type ScalarType = i8;

/// `c10::DeviceType::CPU` (checked by the shim's `static_assert`).
pub(crate) const CPU: DeviceType = 0;
/// `c10::DeviceType::CUDA` (checked by the shim's `static_assert`).
pub(crate) const CUDA: DeviceType = 1;
/// `c10::ScalarType::BFloat16` (checked by the shim's `static_assert`).
pub(crate) const BFLOAT16: ScalarType = 15;

/// `at::autocast::*`, through `src/autocast.cpp`.
pub(crate) mod autocast {
    use super::{DeviceType, ScalarType};

    // SAFETY: the shim's C functions take and return `bool`, `int8_t` and `int32_t`, declared here
    // with the same types; they are `noexcept`, read and write only libtorch's thread-local
    // autocast state and have no preconditions, so each is declared `safe`.
    unsafe extern "C" {
        #[link_name = "proxima_autocast_is_enabled"]
        pub(crate) safe fn is_autocast_enabled(device_type: DeviceType) -> bool;
        #[link_name = "proxima_autocast_set_enabled"]
        pub(crate) safe fn set_autocast_enabled(device_type: DeviceType, enabled: bool);
        #[link_name = "proxima_autocast_get_dtype"]
        pub(crate) safe fn get_autocast_dtype(device_type: DeviceType) -> ScalarType;
        #[link_name = "proxima_autocast_set_dtype"]
        pub(crate) safe fn set_autocast_dtype(device_type: DeviceType, dtype: ScalarType);
        #[link_name = "proxima_autocast_increment_nesting"]
        pub(crate) safe fn increment_nesting() -> i32;
        #[link_name = "proxima_autocast_decrement_nesting"]
        pub(crate) safe fn decrement_nesting() -> i32;
        #[link_name = "proxima_autocast_clear_cache"]
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
