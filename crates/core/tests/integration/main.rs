//! The one integration-test binary of `proxima-core`: parity with pytorch-metric-learning,
//! property tests, naive-oracle tests and error contracts.

mod classification_losses;
mod contracts;
mod miners;
mod pair_losses;
mod parity;
