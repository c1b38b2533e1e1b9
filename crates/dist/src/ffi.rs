//! The declarations of `src/shim.cpp`, the crate's only foreign functions (private: `group` wraps
//! each in a safe method, with the reason it is sound beside the call).
//!
//! Every function catches C++ exceptions and reports them through the error buffer `err` of
//! `err_len` bytes (always NUL-terminated) and its result (null or non-zero); tensors are passed as
//! `at::Tensor*` (tch's `Tensor::as_ptr`).

use std::ffi::{c_char, c_int, c_void};

/// The shim's process group (a TCPStore, a Gloo group and, when asked for, an NCCL group).
#[repr(C)]
pub(crate) struct RawGroup {
    _private: [u8; 0],
}

unsafe extern "C" {
    pub(crate) fn proxima_dist_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        size: c_int,
        is_server: c_int,
        use_nccl: c_int,
        timeout_ms: i64,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut RawGroup;
    pub(crate) fn proxima_dist_has_nccl(group: *mut RawGroup) -> c_int;
    pub(crate) fn proxima_dist_free(group: *mut RawGroup);
    pub(crate) fn proxima_dist_all_reduce_sum(group: *mut RawGroup, ts: *const *mut c_void, n: usize, err: *mut c_char, err_len: usize) -> c_int;
    pub(crate) fn proxima_dist_all_gather(group: *mut RawGroup, input: *mut c_void, outputs: *const *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    pub(crate) fn proxima_dist_broadcast(group: *mut RawGroup, ts: *const *mut c_void, n: usize, root: c_int, err: *mut c_char, err_len: usize) -> c_int;
    pub(crate) fn proxima_dist_barrier(group: *mut RawGroup, err: *mut c_char, err_len: usize) -> c_int;
}
