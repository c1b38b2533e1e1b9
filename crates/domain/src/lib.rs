//! Which site is a page on, and is that site the brand's own?
//!
//! Why a crate of its own: `find` answers "this page shows PayPal's logo"; the phishing analyst's
//! question is whether the page *is* PayPal's. That second step needs no tensors — it compares the
//! page's registrable domain with the domains the brand owns — so it lives here, in pure Rust,
//! where the gallery (`proxima-index`, which stores each brand's domains), the Python package, the
//! service and the CLI all reach it without libtorch.
//!
//! Why registrable domains and the public-suffix list: "paypal.com.evil.io" contains "paypal.com",
//! and "evil.github.io" ends in "github.io"; neither belongs to PayPal or GitHub. The unit a person
//! or company registers is the *registrable domain* (eTLD+1): the public suffix (`com`, `co.uk`,
//! `github.io`) plus one label. The [`psl`] crate compiles the Mozilla Public Suffix List in, so the
//! answer does not depend on a file at run time. Internationalised names are compared in their
//! ASCII (punycode) form after UTS-46 mapping, so a homograph (`pаypal.com` with a Cyrillic `а`)
//! is a different domain, as it is on the wire.
//!
//! Modules:
//! * [`domain`] — [`Domain`]: a brand's legitimate registrable domain, parsed and normalised.
//! * [`page`] — [`PageHost`]: the host of a page's URL (a registrable domain, an IP address, or a
//!   host under no public suffix).
//! * [`verdict`] — [`decide`]: brands shown on a page + the page's host → impersonation,
//!   consistent, no brand, or unknown domain.
//! * [`catalogue`] — [`Catalogue`]: brand → domains and aliases, in JSON or TOML, importable into a
//!   gallery, and built from the gilbarbara-logos and simple-icons metadata.

pub mod catalogue;
pub mod domain;
pub mod error;
pub mod page;
pub mod verdict;

pub use catalogue::{Catalogue, CatalogueBrand, ImportPlan};
pub use domain::{Domain, normalize_domains};
pub use error::{DomainError, Result};
pub use page::{HostKind, PageHost};
pub use verdict::{Decision, Shown, Verdict, decide, decide_with_runners_up};
