//! A brand catalogue: each brand's legitimate domains and the other names it goes by.
//!
//! Why a file apart from the gallery: the gallery holds embeddings of one model, and is rebuilt
//! when the model changes; who owns which domain does not change with the model. A catalogue is
//! written once (by hand, or built from public metadata by `proxima data catalogue`), kept under
//! version control, and imported into any gallery (`proxima gallery domains --import`), where each
//! gallery brand is matched by name or alias.
//!
//! Format (JSON, or TOML for a `.toml` file), every domain checked on load:
//!
//! ```toml
//! [[brands]]
//! name = "PayPal"
//! domains = ["paypal.com", "paypal.me"]
//! aliases = ["paypal"]          # optional: other names, e.g. a gallery's folder names
//! sources = ["gilbarbara-logos"] # optional: where the entry came from
//! ```
//!
//! Built from public metadata, with one rule per source (documented on each builder): the
//! gilbarbara-logos website of a brand is its site unless it is a page on a shared platform that
//! is not the brand's own; a simple-icons `source` or `guidelines` URL counts only when its
//! registrable domain is named like the brand (they often point at GitHub or Wikipedia).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::error::{DomainError, Result, io};
use crate::page::PageHost;

/// Registrable domains of platforms that host other brands' pages: a brand's website there does
/// not make the platform's domain the brand's, unless the brand is named like the platform.
pub const SHARED_PLATFORMS: &[&str] = &[
    "github.com",
    "gitlab.com",
    "bitbucket.org",
    "sourceforge.net",
    "wikipedia.org",
    "wikimedia.org",
    "npmjs.com",
    "medium.com",
    "twitter.com",
    "x.com",
    "facebook.com",
    "linkedin.com",
    "youtube.com",
    "figma.com",
    "dribbble.com",
    "behance.net",
];

/// A catalogue of brands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// The brands, in file order.
    #[serde(default)]
    pub brands: Vec<CatalogueBrand>,
}

/// One brand of a catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueBrand {
    /// The brand's name.
    pub name: String,
    /// Its legitimate registrable domains.
    pub domains: Vec<Domain>,
    /// Other names it goes by (a gallery's folder name, a slug).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Where the entry came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// An entry of a source that gave no catalogue brand, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The entry's name.
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Which gallery brands a catalogue covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportPlan {
    /// Gallery brand and the index of its catalogue entry.
    pub matched: Vec<(String, usize)>,
    /// Gallery brands the catalogue does not name.
    pub unmatched: Vec<String>,
}

/// A name's matching key: lower case, letters and digits only (`Master Card` → `mastercard`).
pub fn name_key(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

impl Catalogue {
    /// Reads a catalogue: TOML for a `.toml` file, JSON otherwise; every domain is checked.
    pub fn load(path: &Path) -> Result<Catalogue> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let bad = |reason: String| DomainError::BadCatalogue { path: path.to_path_buf(), reason };
        let c: Catalogue =
            if is_toml(path) { toml::from_str(&text).map_err(|e| bad(e.to_string()))? } else { serde_json::from_str(&text).map_err(|e| bad(e.to_string()))? };
        c.validate().map_err(bad)?;
        Ok(c)
    }

    /// Writes the catalogue atomically: TOML for a `.toml` path, pretty JSON otherwise.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| DomainError::BadCatalogue { path: path.to_path_buf(), reason };
        self.validate().map_err(bad)?;
        let mut text = if is_toml(path) {
            toml::to_string_pretty(self).map_err(|e| bad(e.to_string()))?
        } else {
            serde_json::to_string_pretty(self).map_err(|e| bad(e.to_string()))?
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        proxima_base::write_atomic(path, text.as_bytes()).map_err(|e| DomainError::Io { path: e.path, source: e.source })
    }

    /// Names must be non-empty and unique; every brand needs a domain.
    fn validate(&self) -> std::result::Result<(), String> {
        let mut seen = HashMap::new();
        for (i, b) in self.brands.iter().enumerate() {
            if b.name.trim().is_empty() {
                return Err(format!("brand {} has an empty name", i + 1));
            }
            if b.domains.is_empty() {
                return Err(format!("brand {:?} has no domains", b.name));
            }
            if let Some(j) = seen.insert(b.name.as_str(), i) {
                return Err(format!("brand {:?} is listed twice (entries {} and {})", b.name, j + 1, i + 1));
            }
        }
        Ok(())
    }

    /// The entry for a gallery brand: by exact name, exact alias, then name key, then alias key
    /// (first entry in file order within each step).
    pub fn find(&self, brand: &str) -> Option<usize> {
        let key = name_key(brand);
        let steps: [&dyn Fn(&CatalogueBrand) -> bool; 4] =
            [&|b| b.name == brand, &|b| b.aliases.iter().any(|a| a == brand), &|b| !key.is_empty() && name_key(&b.name) == key, &|b| {
                !key.is_empty() && b.aliases.iter().any(|a| name_key(a) == key)
            }];
        steps.iter().find_map(|f| self.brands.iter().position(f))
    }

    /// Matches each gallery brand to its catalogue entry.
    pub fn plan_import<S: AsRef<str>>(&self, brands: &[S]) -> ImportPlan {
        let mut plan = ImportPlan::default();
        for b in brands {
            let b = b.as_ref();
            match self.find(b) {
                Some(i) => plan.matched.push((b.to_string(), i)),
                None => plan.unmatched.push(b.to_string()),
            }
        }
        plan
    }

    /// One catalogue of both: entries with the same name key (or an alias with that key) merge
    /// their domains, aliases and sources; the result is sorted by name key.
    pub fn merge(self, other: Catalogue) -> Catalogue {
        let mut out: Vec<CatalogueBrand> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for b in self.brands.into_iter().chain(other.brands) {
            let keys: Vec<String> = std::iter::once(name_key(&b.name)).chain(b.aliases.iter().map(|a| name_key(a))).filter(|k| !k.is_empty()).collect();
            match keys.iter().find_map(|k| by_key.get(k).copied()) {
                Some(i) => {
                    let t = &mut out[i];
                    t.domains.extend(b.domains);
                    t.domains.sort();
                    t.domains.dedup();
                    for a in std::iter::once(b.name).chain(b.aliases) {
                        if a != t.name && !t.aliases.contains(&a) {
                            t.aliases.push(a);
                        }
                    }
                    for s in b.sources {
                        if !t.sources.contains(&s) {
                            t.sources.push(s);
                        }
                    }
                    for k in keys {
                        by_key.entry(k).or_insert(i);
                    }
                }
                None => {
                    let i = out.len();
                    for k in keys {
                        by_key.entry(k).or_insert(i);
                    }
                    out.push(b);
                }
            }
        }
        out.sort_by(|a, b| name_key(&a.name).cmp(&name_key(&b.name)).then_with(|| a.name.cmp(&b.name)));
        Catalogue { brands: out }
    }

    /// The catalogue of both public sources (gilbarbara-logos first, so its names win), with the
    /// entries each skipped: what `proxima data catalogue` writes.
    pub fn from_sources(gilbarbara_logos_json: &Path, simple_icons_json: &Path) -> Result<(Catalogue, Vec<Skipped>)> {
        let (g, mut skipped) = Catalogue::from_gilbarbara(gilbarbara_logos_json)?;
        let (s, s_skipped) = Catalogue::from_simple_icons(simple_icons_json)?;
        skipped.extend(s_skipped);
        Ok((g.merge(s), skipped))
    }

    /// Builds a catalogue from gilbarbara-logos' `logos.json` (`name`, `shortname`, `url` per brand).
    ///
    /// The registrable domain of `url` is the brand's, except on a [`SHARED_PLATFORMS`] domain
    /// that the brand is not named like (a project whose website is its GitHub page).
    pub fn from_gilbarbara(logos_json: &Path) -> Result<(Catalogue, Vec<Skipped>)> {
        #[derive(Deserialize)]
        struct Entry {
            name: String,
            #[serde(default)]
            shortname: Option<String>,
            #[serde(default)]
            url: Option<String>,
        }
        let text = std::fs::read_to_string(logos_json).map_err(io(logos_json))?;
        let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|e| DomainError::BadCatalogue { path: logos_json.to_path_buf(), reason: e.to_string() })?;
        let (mut brands, mut skipped) = (Vec::new(), Vec::new());
        for e in entries {
            let aliases: Vec<String> = e.shortname.into_iter().filter(|s| *s != e.name).collect();
            let domain = match e.url.as_deref().map(PageHost::from_url) {
                None => Err("no url".to_string()),
                Some(Err(err)) => Err(err.to_string()),
                Some(Ok(h)) => match h.registrable {
                    None => Err(format!("url host {} has no registrable domain", h.host)),
                    Some(d) if SHARED_PLATFORMS.contains(&d.as_str()) && !named_like(&e.name, &aliases, &d) => {
                        Err(format!("its website is a page on the shared platform {d}"))
                    }
                    Some(d) => Ok(d),
                },
            };
            match domain {
                Ok(d) => brands.push(CatalogueBrand { name: e.name, domains: vec![d], aliases, sources: vec!["gilbarbara-logos".into()] }),
                Err(reason) => skipped.push(Skipped { name: e.name, reason }),
            }
        }
        Ok((Catalogue::default().merge(Catalogue { brands }), skipped))
    }

    /// Builds a catalogue from simple-icons' `data/simple-icons.json` (`title`, `slug`, `source`,
    /// `guidelines`, `aliases.aka` per brand).
    ///
    /// simple-icons records where each SVG came from, not the brand's website, so a `source` or
    /// `guidelines` URL counts only when its registrable domain is named like the brand (its first
    /// label, letters and digits only, equals the title's, slug's or an alias's key, or one
    /// contains the other with at least 4 characters). Brands with no such URL are skipped.
    pub fn from_simple_icons(icons_json: &Path) -> Result<(Catalogue, Vec<Skipped>)> {
        #[derive(Deserialize)]
        struct Entry {
            title: String,
            #[serde(default)]
            slug: Option<String>,
            #[serde(default)]
            source: Option<String>,
            #[serde(default)]
            guidelines: Option<String>,
            #[serde(default)]
            aliases: Option<serde_json::Value>,
        }
        let text = std::fs::read_to_string(icons_json).map_err(io(icons_json))?;
        let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|e| DomainError::BadCatalogue { path: icons_json.to_path_buf(), reason: e.to_string() })?;
        let (mut brands, mut skipped) = (Vec::new(), Vec::new());
        for e in entries {
            let mut aliases: Vec<String> = e.slug.iter().cloned().collect();
            if let Some(aka) = e.aliases.as_ref().and_then(|a| a.get("aka")).and_then(|a| a.as_array()) {
                aliases.extend(aka.iter().filter_map(|v| v.as_str().map(str::to_string)));
            }
            aliases.retain(|a| *a != e.title);
            let mut domains: Vec<Domain> = [&e.source, &e.guidelines]
                .into_iter()
                .flatten()
                .filter_map(|u| PageHost::from_url(u).ok()?.registrable)
                .filter(|d| named_like(&e.title, &aliases, d))
                .collect();
            domains.sort();
            domains.dedup();
            if domains.is_empty() {
                skipped.push(Skipped { name: e.title, reason: "no source or guidelines URL on a domain named like the brand".into() });
            } else {
                brands.push(CatalogueBrand { name: e.title, domains, aliases, sources: vec!["simple-icons".into()] });
            }
        }
        Ok((Catalogue::default().merge(Catalogue { brands }), skipped))
    }
}

fn is_toml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// True when the registrable domain is named like the brand: its label (without the public
/// suffix), letters and digits only, equals the key of the name or an alias, or contains one of
/// those keys of at least 4 characters (`paypal-corp.com` for PayPal), or equals a run of the
/// name's words (`adobe.com` for "Adobe After Effects", `spiegel.de` for "Der Spiegel"; not
/// `shop.com` for "Shopware"); or the whole domain's key is the name's (`chess.com` for
/// "Chess.com", `frame.work` for "Framework").
fn named_like(name: &str, aliases: &[String], d: &Domain) -> bool {
    let s = d.as_str();
    let suffix = psl::suffix_str(s).unwrap_or("");
    let label = name_key(s.strip_suffix(suffix).unwrap_or(s).trim_end_matches('.'));
    if label.is_empty() {
        return false;
    }
    let keys: Vec<String> = std::iter::once(name).chain(aliases.iter().map(String::as_str)).map(name_key).filter(|k| !k.is_empty()).collect();
    let whole = name_key(s);
    let words: Vec<String> = name.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(name_key).collect();
    let run = (0..words.len()).any(|i| (i + 1..=words.len()).any(|j| words[i..j].concat() == label));
    run || keys.iter().any(|k| *k == label || *k == whole || (k.len() >= 4 && label.contains(k.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brand(name: &str, domains: &[&str], aliases: &[&str]) -> CatalogueBrand {
        CatalogueBrand {
            name: name.into(),
            domains: domains.iter().map(|d| Domain::parse(d).unwrap()).collect(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            sources: vec![],
        }
    }

    #[test]
    fn lookup_goes_from_exact_to_keyed() {
        let c = Catalogue { brands: vec![brand("PayPal", &["paypal.com"], &["pp"]), brand("Master Card", &["mastercard.com"], &["mc-brand"])] };
        assert_eq!(c.find("PayPal"), Some(0));
        assert_eq!(c.find("pp"), Some(0));
        assert_eq!(c.find("paypal"), Some(0));
        assert_eq!(c.find("mastercard"), Some(1));
        assert_eq!(c.find("MC_Brand"), Some(1));
        assert_eq!(c.find("visa"), None);
        let plan = c.plan_import(&["paypal", "visa"]);
        assert_eq!((plan.matched, plan.unmatched), (vec![("paypal".to_string(), 0)], vec!["visa".to_string()]));
    }

    #[test]
    fn merge_joins_entries_with_the_same_key() {
        let a = Catalogue { brands: vec![brand("PayPal", &["paypal.com"], &[])] };
        let b = Catalogue { brands: vec![brand("Paypal", &["paypal.me"], &["paypal-slug"]), brand("Visa", &["visa.com"], &[])] };
        let m = a.merge(b);
        assert_eq!(m.brands.len(), 2);
        assert_eq!(m.brands[0].name, "PayPal");
        assert_eq!(m.brands[0].domains.iter().map(Domain::as_str).collect::<Vec<_>>(), ["paypal.com", "paypal.me"]);
        assert_eq!(m.brands[0].aliases, ["Paypal", "paypal-slug"]);
    }

    #[test]
    fn named_like_needs_the_brand_in_the_domain() {
        let d = |s: &str| Domain::parse(s).unwrap();
        assert!(named_like("Adobe After Effects", &[], &d("adobe.com")));
        assert!(named_like("/e/", &[], &d("e.foundation")));
        assert!(named_like("PayPal", &[], &d("paypal-corp.com")));
        assert!(named_like("Mastercard", &["MasterCard".into()], &d("mastercard.co.uk")));
        assert!(!named_like("Babel", &[], &d("github.com")));
        assert!(!named_like("Go", &[], &d("google.com")), "short keys must match whole labels");
        assert!(!named_like("Shopware", &[], &d("shop.com")), "a word inside the name is not the brand");
        assert!(named_like("Der Spiegel", &[], &d("spiegel.de")));
        assert!(named_like("Fraunhofer-Gesellschaft", &[], &d("fraunhofer.de")));
        assert!(named_like("Chess.com", &[], &d("chess.com")));
        assert!(named_like("Framework", &[], &d("frame.work")));
    }

    #[test]
    fn files_round_trip_in_both_formats_and_bad_ones_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalogue { brands: vec![brand("PayPal", &["paypal.com", "paypal.me"], &["paypal"])] };
        for name in ["c.json", "c.toml"] {
            let p = dir.path().join(name);
            c.save(&p).unwrap();
            assert_eq!(Catalogue::load(&p).unwrap(), c, "{name}");
        }
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[[brands]]\nname = \"X\"\ndomains = [\"com\"]\n").unwrap();
        let e = Catalogue::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("public suffix"), "{e}");
        std::fs::write(&p, "[[brands]]\nname = \"X\"\ndomains = [\"x.com\"]\n[[brands]]\nname = \"X\"\ndomains = [\"y.com\"]\n").unwrap();
        assert!(Catalogue::load(&p).unwrap_err().to_string().contains("listed twice"));
        assert!(Catalogue::load(&dir.path().join("missing.json")).unwrap_err().to_string().contains("missing.json"));
    }
}
