//! The one integration-test binary of `proxima-models`: parity with PyTorch (ResNet-18 and
//! EfficientNet-Lite0 on a real image), weight import in every format, bad inputs, and the
//! embedding model's modes and trunk freezing.

mod bad_input;
mod common;
mod import;
mod model;
mod parity;
