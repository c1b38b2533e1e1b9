//! The brands pages show: colour logos and wordmarks of gilbarbara-logos, one-colour marks of
//! simple-icons (with their brand colour), merged by name, and the fixed held-out split.
//!
//! A brand's id is its simple-icons slug when simple-icons has it (the name galleries and the
//! icon embedding already use), else its gilbarbara `shortname`. The split is
//! `proxima_data::scenes_synth::is_heldout(id)`, the hash split of the icon embedding, so a
//! brand held out here was never trained on by the icons recipe either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proxima_data::composites::brand_key;
use serde::{Deserialize, Serialize};

use crate::error::{PagesError, Result};

/// How a logo looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum LogoKind {
    /// A gilbarbara `*-icon.svg`: the colour mark alone.
    Colour,
    /// Any other gilbarbara file: the full logo, usually the name in the brand's typeface.
    Wordmark,
    /// A simple-icons mark, one colour (drawn in the brand colour, or white on it).
    Mono,
}

/// One logo file of a brand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logo {
    pub kind: LogoKind,
    pub svg: PathBuf,
}

/// A brand with its logos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Brand {
    /// Gallery name: the simple-icons slug, else the gilbarbara shortname.
    pub id: String,
    /// Display name ("PayPal").
    pub name: String,
    /// Brand colour (simple-icons `hex`; a neutral blue when unknown).
    pub colour: [u8; 3],
    /// The brand's website, when known (gilbarbara `url`).
    pub url: Option<String>,
    pub logos: Vec<Logo>,
    /// In the held-out part (never used for training).
    pub heldout: bool,
}

/// Loads both catalogues under `data` (`gilbarbara-logos/`, `simple-icons/`; either may be
/// absent, not both), sorted by id.
pub fn load_brands(data: &Path) -> Result<Vec<Brand>> {
    #[derive(Deserialize)]
    struct Gil {
        name: String,
        shortname: String,
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        files: Vec<String>,
    }
    let mut by_key: BTreeMap<String, Brand> = BTreeMap::new();
    let si_root = data.join("simple-icons");
    if si_root.join("data/simple-icons.json").is_file() {
        // The catalogue reader of the synthetic scenes: icons with their SVG, sorted by slug.
        for icon in proxima_data::scenes_synth::load_icons(&si_root, proxima_data::BrandPart::All)? {
            by_key.entry(brand_key(&icon.title)).or_insert_with(|| Brand {
                id: icon.slug,
                name: icon.title.clone(),
                colour: icon.rgb,
                url: None,
                logos: vec![Logo { kind: LogoKind::Mono, svg: icon.svg }],
                heldout: false,
            });
        }
    }
    let gil_root = data.join("gilbarbara-logos");
    let gil_meta = gil_root.join("logos.json");
    if gil_meta.is_file() {
        let text = std::fs::read_to_string(&gil_meta).map_err(|e| PagesError::io(&gil_meta, e))?;
        let entries: Vec<Gil> = serde_json::from_str(&text).map_err(|e| PagesError::Invalid(format!("{}: {e}", gil_meta.display())))?;
        for e in entries {
            let logos: Vec<Logo> = e
                .files
                .iter()
                .map(|f| gil_root.join("logos").join(f))
                .filter(|p| p.is_file())
                .map(|svg| {
                    let icon = svg.file_stem().and_then(|s| s.to_str()).is_some_and(|s| s.ends_with("-icon"));
                    Logo { kind: if icon { LogoKind::Colour } else { LogoKind::Wordmark }, svg }
                })
                .collect();
            if logos.is_empty() {
                continue;
            }
            let b = by_key.entry(brand_key(&e.name)).or_insert_with(|| Brand {
                id: e.shortname.clone(),
                name: e.name.clone(),
                colour: [0x1a, 0x73, 0xe8],
                url: None,
                logos: vec![],
                heldout: false,
            });
            b.url = e.url.clone();
            b.logos.extend(logos);
        }
    }
    if by_key.is_empty() {
        return Err(PagesError::Invalid(format!("{}: neither gilbarbara-logos/logos.json nor simple-icons/data/simple-icons.json found", data.display())));
    }
    let mut brands: Vec<Brand> = by_key.into_values().filter(|b| !b.id.is_empty()).collect();
    for b in &mut brands {
        b.heldout = proxima_data::scenes_synth::is_heldout(&b.id);
        b.logos.sort_by(|x, y| (x.kind, &x.svg).cmp(&(y.kind, &y.svg)));
    }
    brands.sort_by(|a, b| a.id.cmp(&b.id));
    brands.dedup_by(|a, b| a.id == b.id);
    Ok(brands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brands_merge_by_name_and_split_by_the_icon_hash() {
        let dir = tempfile::tempdir().unwrap();
        let si = dir.path().join("simple-icons");
        std::fs::create_dir_all(si.join("data")).unwrap();
        std::fs::create_dir_all(si.join("icons")).unwrap();
        std::fs::write(si.join("data/simple-icons.json"), r#"[{"title":"PayPal","hex":"003087","slug":"paypal"},{"title":"Gone","hex":"000000","slug":"gone"}]"#)
            .unwrap();
        std::fs::write(si.join("icons/paypal.svg"), "<svg/>").unwrap();
        let gil = dir.path().join("gilbarbara-logos");
        std::fs::create_dir_all(gil.join("logos")).unwrap();
        std::fs::write(gil.join("logos.json"), r#"[{"name":"PayPal","shortname":"paypal-gil","url":"https://paypal.com","files":["paypal.svg","paypal-icon.svg"]},{"name":"Acme Co","shortname":"acme","files":["acme.svg"]}]"#).unwrap();
        for f in ["paypal.svg", "paypal-icon.svg", "acme.svg"] {
            std::fs::write(gil.join("logos").join(f), "<svg/>").unwrap();
        }
        let brands = load_brands(dir.path()).unwrap();
        let ids: Vec<&str> = brands.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["acme", "paypal"], "the icon without an SVG is skipped; PayPal is one brand under its simple-icons slug");
        let p = &brands[1];
        assert_eq!(p.colour, [0x00, 0x30, 0x87]);
        assert_eq!(p.logos.iter().map(|l| l.kind).collect::<Vec<_>>(), [LogoKind::Colour, LogoKind::Wordmark, LogoKind::Mono]);
        assert_eq!(p.url.as_deref(), Some("https://paypal.com"));
        assert_eq!(p.heldout, proxima_data::scenes_synth::is_heldout("paypal"));
    }
}
