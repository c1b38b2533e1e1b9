//! The phishing check: which brands a page shows (find's answer), against the site it is on.
//!
//! Why here: `proxima check` and `POST /v1/check` must give the same answer, as `find` and
//! `/v1/find` do, so the step from a [`FindAnswer`] and a URL to a [`CheckAnswer`] is one function
//! both call. The rule itself (which verdict for which brands and domain) is
//! `proxima_domain::decide`; this module feeds it the known brands of find's regions, most
//! confident first, with the domains the gallery holds for each, and keeps the region that decided
//! so a person can see why the page was flagged ([`draw_check`]).

use image::{Rgb, RgbImage};
use proxima_domain::{Domain, HostKind, PageHost, Shown, Verdict, decide_with_runners_up};
use proxima_index::Gallery;
use serde::{Deserialize, Serialize};

use crate::draw::{UNKNOWN, frame};
use crate::error::Result;
use crate::find::{FindAnswer, RegionAnswer};

/// Frame colour of the region behind an impersonation verdict.
pub const IMPERSONATION: [u8; 3] = [220, 30, 30];
/// Frame colour of the region behind a consistent verdict.
pub const CONSISTENT: [u8; 3] = [0, 200, 60];
/// Frame colour of the region behind an unknown-domain verdict.
pub const NO_DOMAINS: [u8; 3] = [240, 160, 0];

/// The answer of `proxima check` and `POST /v1/check` for one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// The screenshot.
    pub image: String,
    /// The page's URL as parsed.
    pub url: String,
    /// The page's host (ASCII, punycode for internationalised names).
    pub host: String,
    /// What the host is: a domain, an IP address, or a name under no public suffix.
    pub host_kind: HostKind,
    /// The page's registrable domain (the host itself when it has none).
    pub domain: String,
    /// `impersonation`, `consistent`, `no_brand` or `unknown_domain`.
    pub verdict: Verdict,
    /// The brand the verdict is about (null for `no_brand`).
    pub brand: Option<String>,
    /// Similarity of the deciding region (for `no_brand`, of the best region; null without regions).
    pub similarity: Option<f32>,
    /// The brand's legitimate domains on record.
    pub brand_domains: Vec<Domain>,
    /// Every known brand on the page, most confident first.
    pub brands_shown: Vec<String>,
    /// One sentence saying why.
    pub reason: String,
    /// Index into `regions` of the region that decided (null for `no_brand`).
    pub region: Option<usize>,
    /// The find threshold used.
    pub threshold: f32,
    /// Find's regions, most confident first.
    pub regions: Vec<RegionAnswer>,
}

/// The verdict for a page whose screenshot gave `find` and whose URL is `page`.
pub fn check_answer(find: FindAnswer, page: &PageHost, gallery: &Gallery) -> CheckAnswer {
    let mut brands: Vec<&str> = Vec::new();
    for r in &find.regions {
        if let Some(b) = r.brand.as_deref()
            && !brands.contains(&b)
        {
            brands.push(b);
        }
    }
    // Runners-up: a region's second brand whose confidence clears the threshold as well (its
    // similarity plus the region's localiser term, `confidence − similarity`).
    let mut runners: Vec<(&str, usize, f32)> = Vec::new();
    for (i, r) in find.regions.iter().enumerate() {
        if let (Some(b), Some(sim)) = (r.second_brand.as_deref(), r.second_similarity)
            && r.brand.is_some()
            && sim + (r.confidence - r.similarity) >= find.threshold
            && !brands.contains(&b)
            && !runners.iter().any(|(x, _, _)| *x == b)
        {
            runners.push((b, i, sim));
        }
    }
    let shown: Vec<Shown> = brands.iter().map(|b| Shown { brand: b, domains: gallery.domains(b) }).collect();
    let runner_ups: Vec<Shown> = runners.iter().map(|(b, _, _)| Shown { brand: b, domains: gallery.domains(b) }).collect();
    let decision = decide_with_runners_up(page, &shown, &runner_ups);
    let (brand, region, similarity) = match decision.brand {
        Some(i) if i < brands.len() => {
            let region = find.regions.iter().position(|r| r.brand.as_deref() == Some(brands[i]));
            (Some(brands[i].to_string()), region, region.map(|r| find.regions[r].similarity))
        }
        Some(i) => {
            let (b, r, sim) = runners[i - brands.len()];
            (Some(b.to_string()), Some(r), Some(sim))
        }
        None => (None, None, find.similarity),
    };
    CheckAnswer {
        image: find.image,
        url: page.url.clone(),
        host: page.host.clone(),
        host_kind: page.kind,
        domain: page.domain().to_string(),
        verdict: decision.verdict,
        brand_domains: brand.as_deref().map_or_else(Vec::new, |b| gallery.domains(b).to_vec()),
        brand,
        similarity,
        brands_shown: brands.iter().map(|b| b.to_string()).collect(),
        reason: decision.reason,
        region,
        threshold: find.threshold,
        regions: find.regions,
    }
}

/// A copy of `img` with the deciding region framed in the verdict's colour (red impersonation,
/// green consistent, amber unknown domain) and labelled with the verdict, brand and domain; the
/// other regions thin and grey.
pub fn draw_check(img: &RgbImage, answer: &CheckAnswer) -> Result<RgbImage> {
    let mut out = img.clone();
    let (w, h) = out.dimensions();
    if w == 0 || h == 0 {
        return Ok(out);
    }
    let size = (w.min(h) / 40).clamp(12, 40);
    for (i, r) in answer.regions.iter().enumerate() {
        if Some(i) != answer.region {
            frame(&mut out, r.bbox, Rgb(UNKNOWN), 1);
        }
    }
    let banner = match (&answer.brand, answer.verdict) {
        (Some(b), Verdict::Impersonation) => format!("IMPERSONATION of {b} on {}", answer.domain),
        (Some(b), Verdict::Consistent) => format!("{b} on its own domain {}", answer.domain),
        (Some(b), _) => format!("{b}: no domains on record"),
        (None, _) => format!("no known brand on {}", answer.domain),
    };
    let colour = match answer.verdict {
        Verdict::Impersonation => IMPERSONATION,
        Verdict::Consistent => CONSISTENT,
        Verdict::UnknownDomain => NO_DOMAINS,
        Verdict::NoBrand => UNKNOWN,
    };
    match answer.region.and_then(|i| answer.regions.get(i)) {
        Some(r) => {
            frame(&mut out, r.bbox, Rgb(colour), 5);
            let label = format!("{banner} ({:.2})", r.similarity);
            let y = r.bbox[1] as i32 - size as i32 - 2 * (size as i32 / 6).max(1);
            let y = if y < 0 { r.bbox[3] as i32 + 2 } else { y };
            proxima_report::draw_label(&mut out, w, h, (r.bbox[0] as i32, y), &label, size, [255, 255, 255], colour)?;
        }
        None => {
            proxima_report::draw_label(&mut out, w, h, (4, 4), &banner, size, [0, 0, 0], colour)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(brand: Option<&str>, similarity: f32, x: f32) -> RegionAnswer {
        RegionAnswer {
            bbox: [x, 10.0, x + 30.0, 40.0],
            brand: brand.map(str::to_string),
            similarity,
            best_brand: brand.unwrap_or("acme").to_string(),
            second_similarity: None,
            second_brand: None,
            score: 0.9,
            confidence: similarity,
        }
    }

    fn gallery() -> Gallery {
        let mut g = Gallery::new(2, "fp").unwrap();
        g.add("paypal", &[1.0, 0.0], &["p.png"]).unwrap();
        g.add("visa", &[0.0, 1.0], &["v.png"]).unwrap();
        g.add("acme", &[1.0, 1.0], &["a.png"]).unwrap();
        g.set_domains("paypal", &[Domain::parse("paypal.com").unwrap()]).unwrap();
        g.set_domains("visa", &[Domain::parse("visa.com").unwrap()]).unwrap();
        g
    }

    fn find(regions: Vec<RegionAnswer>) -> FindAnswer {
        let brand = regions.iter().find_map(|r| r.brand.clone());
        FindAnswer { image: "page.png".into(), brand, similarity: regions.first().map(|r| r.similarity), confidence: None, threshold: 0.5, scale: 1.0, regions }
    }

    #[test]
    fn the_deciding_region_is_the_judged_brand_s() {
        let g = gallery();
        let page = PageHost::from_url("https://paypal.com.evil.io/login").unwrap();
        let a = check_answer(find(vec![region(None, 0.4, 0.0), region(Some("paypal"), 0.9, 50.0), region(Some("visa"), 0.8, 100.0)]), &page, &g);
        assert_eq!((a.verdict, a.brand.as_deref(), a.region, a.similarity), (Verdict::Impersonation, Some("paypal"), Some(1), Some(0.9)));
        assert_eq!((a.domain.as_str(), a.brand_domains.len(), a.brands_shown.len()), ("evil.io", 1, 2));
        let own =
            check_answer(find(vec![region(Some("visa"), 0.9, 0.0), region(Some("paypal"), 0.8, 50.0)]), &PageHost::from_url("https://www.paypal.com/").unwrap(), &g);
        assert_eq!((own.verdict, own.brand.as_deref(), own.region), (Verdict::Consistent, Some("paypal"), Some(1)));
    }

    #[test]
    fn the_site_owner_as_a_close_second_makes_its_own_page_consistent() {
        let g = gallery();
        let mut r = region(Some("visa"), 0.9, 0.0);
        (r.second_brand, r.second_similarity) = (Some("paypal".into()), Some(0.85));
        let own = check_answer(find(vec![r.clone()]), &PageHost::from_url("https://www.paypal.com/").unwrap(), &g);
        assert_eq!((own.verdict, own.brand.as_deref(), own.region, own.similarity), (Verdict::Consistent, Some("paypal"), Some(0), Some(0.85)));
        // Elsewhere the best brand is still the one impersonated.
        let foreign = check_answer(find(vec![r.clone()]), &PageHost::from_url("https://evil.io/").unwrap(), &g);
        assert_eq!((foreign.verdict, foreign.brand.as_deref()), (Verdict::Impersonation, Some("visa")));
        // A runner-up below the threshold does not count.
        r.second_similarity = Some(0.4);
        let below = check_answer(find(vec![r]), &PageHost::from_url("https://www.paypal.com/").unwrap(), &g);
        assert_eq!(below.verdict, Verdict::Impersonation);
    }

    #[test]
    fn no_brand_and_no_domains() {
        let g = gallery();
        let page = PageHost::from_url("https://example.org/").unwrap();
        let none = check_answer(find(vec![region(None, 0.4, 0.0)]), &page, &g);
        assert_eq!((none.verdict, none.brand, none.region, none.similarity), (Verdict::NoBrand, None, None, Some(0.4)));
        let acme = check_answer(find(vec![region(Some("acme"), 0.7, 0.0)]), &page, &g);
        assert_eq!((acme.verdict, acme.brand.as_deref(), acme.brand_domains.len()), (Verdict::UnknownDomain, Some("acme"), 0));
        let json = serde_json::to_value(&acme).unwrap();
        assert_eq!(json["verdict"], "unknown_domain");
        assert_eq!(json["host_kind"], "domain");
    }

    #[test]
    fn drawing_frames_the_deciding_region_in_the_verdict_colour() {
        let g = gallery();
        let page = PageHost::from_url("http://192.0.2.1/").unwrap();
        let a = check_answer(find(vec![region(Some("paypal"), 0.9, 50.0)]), &page, &g);
        let img = draw_check(&RgbImage::from_pixel(200, 120, Rgb([255, 255, 255])), &a).unwrap();
        assert_eq!(img.get_pixel(52, 25).0, IMPERSONATION, "left edge of the frame, inside its 5 px");
        assert_eq!(img.get_pixel(65, 25).0, [255, 255, 255], "inside the box untouched");
    }
}
