//! With the `cuda` feature, forces the test binaries of this package to link `libtorch_cuda.so`
//! (the parity tests on a GPU, `PROXIMA_TEST_DEVICE=cuda`). torch-sys asks for it with a plain
//! `-ltorch_cuda`, but nothing in the program references its symbols directly (the CUDA kernels
//! register themselves when the library is loaded), so the linker's `--as-needed` drops it and
//! `tch::Cuda::is_available()` is false even on a GPU machine. `--no-as-needed` keeps it.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        for arg in ["-Wl,--no-as-needed", "-ltorch_cuda", "-Wl,--as-needed"] {
            println!("cargo:rustc-link-arg-tests={arg}");
        }
    }
}
