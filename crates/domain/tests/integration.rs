//! The catalogue built from the real public metadata in `PROXIMA_DATA_DIR` (default
//! `../shared/data`), and the committed `catalogue/brands.json` checked against it.

use std::path::{Path, PathBuf};

use proxima_domain::{Catalogue, Domain, PageHost, Shown, Verdict, decide};

fn data_dir() -> PathBuf {
    std::env::var_os("PROXIMA_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

fn sources() -> Option<(PathBuf, PathBuf)> {
    let d = data_dir();
    let (g, s) = (d.join("gilbarbara-logos/logos.json"), d.join("simple-icons/data/simple-icons.json"));
    if g.is_file() && s.is_file() {
        Some((g, s))
    } else {
        eprintln!("SKIPPED: {} or {} is absent", g.display(), s.display());
        None
    }
}

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalogue/brands.json")
}

#[test]
fn catalogue_from_public_metadata_covers_the_brands_with_their_sites() {
    let Some((g, s)) = sources() else { return };
    let (gil, skipped_g) = Catalogue::from_gilbarbara(&g).unwrap();
    // logos.json lists 1402 brands; a few have no usable website.
    assert!(gil.brands.len() + skipped_g.len() >= 1402 - 10, "{} + {}", gil.brands.len(), skipped_g.len());
    assert!(gil.brands.len() >= 1300, "{} gilbarbara brands kept; skipped e.g. {:?}", gil.brands.len(), &skipped_g[..skipped_g.len().min(5)]);
    let (all, _) = Catalogue::from_sources(&g, &s).unwrap();
    assert!(all.brands.len() > gil.brands.len(), "simple-icons adds brands");
    let domains = |name: &str| -> Vec<String> {
        let i = all.find(name).unwrap_or_else(|| panic!("{name} is not in the catalogue"));
        all.brands[i].domains.iter().map(|d| d.as_str().to_string()).collect()
    };
    assert!(domains("PayPal").contains(&"paypal.com".to_string()));
    assert!(domains("Netflix").contains(&"netflix.com".to_string()));
    assert!(domains("Adobe").contains(&"adobe.com".to_string()));
    // The simple-icons slug finds the merged entry too.
    assert_eq!(all.find("paypal"), all.find("PayPal"));
    // No brand owns a shared platform's domain unless named like it.
    for b in &all.brands {
        for d in &b.domains {
            if d.as_str() == "github.com" {
                assert!(proxima_domain::catalogue::name_key(&b.name).contains("github"), "{} claims github.com", b.name);
            }
        }
    }
}

#[test]
fn committed_catalogue_is_the_one_the_sources_build() {
    let path = committed();
    let c = Catalogue::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.brands.len() > 1400, "{} brands in {}", c.brands.len(), path.display());
    let Some((g, s)) = sources() else { return };
    let (built, _) = Catalogue::from_sources(&g, &s).unwrap();
    assert_eq!(built, c, "catalogue/brands.json is stale: rebuild it with `proxima data catalogue --data ../shared/data --out catalogue/brands.json`");
}

#[test]
fn committed_catalogue_flags_lookalikes_of_its_brands() {
    let c = Catalogue::load(&committed()).unwrap();
    let pp = &c.brands[c.find("PayPal").expect("PayPal")].domains;
    let check = |url: &str| decide(&PageHost::from_url(url).unwrap(), &[Shown { brand: "PayPal", domains: pp }]).verdict;
    assert_eq!(check("https://www.paypal.com/signin"), Verdict::Consistent);
    for url in ["https://paypa1.com/", "https://paypal.com.evil.io/", "http://203.0.113.9/", "https://xn--pypal-4ve.com/"] {
        assert_eq!(check(url), Verdict::Impersonation, "{url}");
    }
    assert!(pp.contains(&Domain::parse("paypal.com").unwrap()));
}
