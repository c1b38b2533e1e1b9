//! The background "brand": examples of what is *not* a logo, so that the gallery can say so.
//!
//! Why: a logo detector hands the gallery regions that are often not logos at all (buttons, text,
//! icons of a web page). Such a region is still nearest to *some* brand, and a UI element that
//! resembles one enrolled mark more than the others (a "hub" brand) is a false alarm unless the
//! threshold is so strict that it also rejects true logos. Enrolling crops of non-logo regions
//! under the reserved name [`BACKGROUND_BRAND`] gives the gallery a better rule: a query nearer
//! to the background than to every brand is "not a logo", whatever the threshold.
//!
//! Every answer of the gallery keeps to that rule: [`Gallery::identify`] decides
//! [`Decision::Unknown`] with `background_similarity` set, and never names the background as the
//! brand nor lists it among the candidates; calibration ([`crate::calibrate`]) never counts a
//! match with the background as a false match or as a genuine one; [`Gallery::num_brands`]
//! leaves it out. Listings ([`Gallery::list`], [`Gallery::brands`]) and the raw ranking
//! ([`Gallery::rank_brands`]) still show it, since it is enrolled like a brand (`proxima gallery
//! add --brand "(background)"`) and removed like one.

use crate::error::{IndexError, Result};
use crate::gallery::{BrandMatch, Decision, Gallery};

/// Name of the gallery brand whose rows are non-logo examples (`proxima localiser negatives`).
pub const BACKGROUND_BRAND: &str = "(background)";

/// True when `brand` is the background.
pub fn is_background(brand: &str) -> bool {
    brand == BACKGROUND_BRAND
}

/// A query's nearest brands with the background set apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// Enrolled brands (never the background), best first.
    pub brands: Vec<BrandMatch>,
    /// The background's best match, when the gallery has one and it ranked among the brands
    /// searched (see [`Gallery::rank`]).
    pub background: Option<BrandMatch>,
}

impl Ranking {
    /// Splits a ranking as [`Gallery::rank_brands`] returns it (best first).
    pub fn from_ranked(ranked: Vec<BrandMatch>) -> Self {
        let (bg, brands): (Vec<BrandMatch>, Vec<BrandMatch>) = ranked.into_iter().partition(|m| is_background(&m.brand));
        Ranking { brands, background: bg.into_iter().next() }
    }

    /// True when the background is at least as near as every brand: the query is not a logo.
    pub fn is_background(&self) -> bool {
        self.background.as_ref().is_some_and(|bg| self.brands.first().is_none_or(|b| bg.similarity >= b.similarity))
    }

    /// The open-set decision: known when the best brand reaches `threshold` and the background is
    /// not nearer; unknown otherwise (with `background_similarity` when the background was nearer).
    /// [`IndexError::OnlyBackground`] when there is no brand to answer.
    pub fn decide(&self, threshold: f32) -> Result<Decision> {
        let best = self.brands.first().ok_or(IndexError::OnlyBackground)?;
        Ok(if self.is_background() {
            Decision::Unknown { best_similarity: best.similarity, background_similarity: self.background.as_ref().map(|b| b.similarity) }
        } else if best.similarity >= threshold {
            Decision::Known { brand: best.brand.clone(), similarity: best.similarity }
        } else {
            Decision::Unknown { best_similarity: best.similarity, background_similarity: None }
        })
    }
}

impl Gallery {
    /// True when background examples are enrolled.
    pub fn has_background(&self) -> bool {
        self.brand_id(BACKGROUND_BRAND).is_some()
    }

    /// Brands that can be an answer: every enrolled brand but the background.
    pub fn num_brands(&self) -> usize {
        self.brands().len() - usize::from(self.has_background())
    }

    /// The `min(k, num_brands)` nearest brands of one query, and the background when it ranks
    /// among the `k + 1` nearest.
    ///
    /// # Shapes
    /// `query`: `dim`.
    pub fn rank(&self, query: &[f32], k: usize) -> Result<Ranking> {
        self.check_single(query)?;
        Ok(self.rank_batch(query, k)?.pop().expect("one query"))
    }

    /// [`Gallery::rank`] for many queries at once.
    ///
    /// # Shapes
    /// `queries`: `nq × dim`; result: `nq` rankings.
    pub fn rank_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Ranking>> {
        Self::check_k(k)?;
        let ranked = self.rank_brands_batch(queries, k + usize::from(self.has_background()))?;
        Ok(ranked
            .into_iter()
            .map(|r| {
                let mut r = Ranking::from_ranked(r);
                r.brands.truncate(k);
                r
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brands a (e0) and b (e1), background along e2.
    fn gallery() -> Gallery {
        let mut g = Gallery::new(3, "m").unwrap();
        g.add("a", &[1.0, 0.0, 0.0], &["a.png"]).unwrap();
        g.add(BACKGROUND_BRAND, &[0.0, 0.0, 1.0, 0.1, 0.0, 1.0], &["bg0.png", "bg1.png"]).unwrap();
        g.add("b", &[0.0, 1.0, 0.0], &["b.png"]).unwrap();
        g
    }

    #[test]
    fn counts_leave_the_background_out_but_listings_show_it() {
        let mut g = gallery();
        assert!(g.has_background());
        assert_eq!((g.num_brands(), g.brands().len()), (2, 3));
        assert!(g.list().iter().any(|b| b.brand == BACKGROUND_BRAND && b.rows == 2));
        g.remove(BACKGROUND_BRAND).unwrap();
        assert!(!g.has_background());
        assert_eq!((g.num_brands(), g.brands().len()), (2, 2));
    }

    #[test]
    fn a_query_nearest_the_background_is_unknown_and_never_named() {
        let g = gallery();
        // Nearest to the background (cos 0.89) though brand a (0.45) passes a lax threshold.
        let q = [0.5, 0.0, 1.0];
        let id = g.identify_with_threshold(&q, 5, 0.1).unwrap();
        let Decision::Unknown { best_similarity, background_similarity: Some(bg) } = id.decision else { panic!("{:?}", id.decision) };
        assert!((best_similarity - 0.5 / 1.25f32.sqrt()).abs() < 1e-6, "best real brand a: {best_similarity}");
        assert!(bg > best_similarity);
        assert_eq!(id.candidates.iter().map(|c| c.brand.as_str()).collect::<Vec<_>>(), ["a", "b"], "k brands, no background");
        // The raw ranking still shows it first.
        assert_eq!(g.rank_brands(&q, 1).unwrap()[0].brand, BACKGROUND_BRAND);
        // A query nearer to a brand than to the background is decided by the threshold as before.
        let q = [1.0, 0.0, 0.5];
        let id = g.identify_with_threshold(&q, 1, 0.5).unwrap();
        assert!(matches!(&id.decision, Decision::Known { brand, similarity } if brand == "a" && (similarity - 1.0 / 1.25f32.sqrt()).abs() < 1e-6), "{:?}", id.decision);
        assert_eq!(id.candidates.len(), 1);
        let id = g.identify_with_threshold(&q, 1, 0.95).unwrap();
        assert!(matches!(id.decision, Decision::Unknown { background_similarity: None, .. }), "{:?}", id.decision);
    }

    #[test]
    fn rank_returns_k_brands_whatever_the_background_rank() {
        let g = gallery();
        for q in [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.2]] {
            let r = g.rank(&q, 2).unwrap();
            assert_eq!(r.brands.len(), 2, "{q:?}");
            assert!(r.brands.iter().all(|b| !is_background(&b.brand)));
            assert!(r.brands[0].similarity >= r.brands[1].similarity);
        }
        // With k = 1 the background is still seen when it is second.
        let r = g.rank(&[1.0, 0.0, 0.5], 1).unwrap();
        assert_eq!((r.brands.len(), r.background.is_some(), r.is_background()), (1, true, false));
        assert!(matches!(g.rank(&[1.0, 0.0], 1), Err(IndexError::DimensionMismatch { .. })));
        assert!(matches!(g.rank(&[1.0, 0.0, 0.0], 0), Err(IndexError::InvalidParameter { .. })));
    }

    #[test]
    fn a_gallery_of_only_background_cannot_identify() {
        let mut g = Gallery::new(2, "m").unwrap();
        g.add(BACKGROUND_BRAND, &[1.0, 0.0], &["bg.png"]).unwrap();
        assert_eq!(g.num_brands(), 0);
        assert!(matches!(g.identify_with_threshold(&[1.0, 0.0], 3, 0.5), Err(IndexError::OnlyBackground)));
        let r = g.rank(&[1.0, 0.0], 3).unwrap();
        assert!(r.brands.is_empty() && r.is_background());
    }
}
