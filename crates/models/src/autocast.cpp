// The autocast API of libtorch (ATen/autocast_mode.h) behind plain C functions for crates/models'
// private `ffi` module: tch 0.24 wraps neither bfloat16 nor CPU autocast. Compiled against the
// shipped header, so the C++ types are the real ones (c10::DeviceType, c10::ScalarType) and the
// small integers Rust passes are checked against them here, at compile time.
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cstdint>

static_assert(TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 11,
              "crates/models/src/autocast.cpp is written for libtorch 2.11 (scripts/setup-libtorch.sh)");
// The values crates/models/src/ffi.rs names.
static_assert(static_cast<int8_t>(c10::DeviceType::CPU) == 0, "c10::DeviceType::CPU");
static_assert(static_cast<int8_t>(c10::DeviceType::CUDA) == 1, "c10::DeviceType::CUDA");
static_assert(static_cast<int8_t>(c10::ScalarType::BFloat16) == 15, "c10::ScalarType::BFloat16");

namespace {
c10::DeviceType device(int8_t d) { return static_cast<c10::DeviceType>(d); }
}  // namespace

// None of these throws: they read and write thread-local autocast state.
extern "C" {
bool proxima_autocast_is_enabled(int8_t d) noexcept { return at::autocast::is_autocast_enabled(device(d)); }
void proxima_autocast_set_enabled(int8_t d, bool on) noexcept { at::autocast::set_autocast_enabled(device(d), on); }
int8_t proxima_autocast_get_dtype(int8_t d) noexcept { return static_cast<int8_t>(at::autocast::get_autocast_dtype(device(d))); }
void proxima_autocast_set_dtype(int8_t d, int8_t t) noexcept { at::autocast::set_autocast_dtype(device(d), static_cast<c10::ScalarType>(t)); }
int32_t proxima_autocast_increment_nesting() noexcept { return at::autocast::increment_nesting(); }
int32_t proxima_autocast_decrement_nesting() noexcept { return at::autocast::decrement_nesting(); }
void proxima_autocast_clear_cache() noexcept { at::autocast::clear_cache(); }
}
