//! The impersonation verdict: the brands a page shows, against the site it is on.
//!
//! The rule, after Phishpedia (USENIX Security 2021): a page that shows a known brand's logo on a
//! domain that is not one of that brand's is impersonating it. With several brands on one page
//! (a shop showing card logos, "sign in with Google" on a third party), the page is **consistent**
//! when its domain belongs to *any* brand it shows: a bank's own page may show Visa's logo, and
//! PayPal's login page on paypal.com is PayPal's whatever else it shows. Otherwise it impersonates
//! the most confident shown brand that has domains on record. A brand with no domains on record
//! can't be judged (**unknown domain**), and a page with no known brand is **no brand**.
//!
//! The URL breaks near-ties in favour of the site's owner ([`decide_with_runners_up`]): when a
//! logo region's best brand is another than the site's owner but the owner is that region's
//! runner-up and clears the threshold too, the page is consistent. An attacker gains nothing from
//! this — their domain is no gallery brand's — while a brand's own page whose logo the embedding
//! ranks a close second is not flagged as impersonating the brand it happened to rank first.

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::page::{HostKind, PageHost};

/// What a page is, for the brands it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A known brand is shown on a domain that is none of its domains.
    Impersonation,
    /// The page's domain belongs to a brand it shows.
    Consistent,
    /// No known brand is shown.
    NoBrand,
    /// Known brands are shown, but none has domains on record.
    UnknownDomain,
}

impl Verdict {
    /// True for [`Verdict::Impersonation`].
    pub fn is_impersonation(self) -> bool {
        self == Verdict::Impersonation
    }

    /// The verdict as written in JSON (`impersonation`, `consistent`, `no_brand`, `unknown_domain`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Impersonation => "impersonation",
            Verdict::Consistent => "consistent",
            Verdict::NoBrand => "no_brand",
            Verdict::UnknownDomain => "unknown_domain",
        }
    }
}

/// One known brand shown on the page, most confident first, with its legitimate domains.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a> {
    /// The brand.
    pub brand: &'a str,
    /// Its domains (empty when none are on record).
    pub domains: &'a [Domain],
}

/// The verdict and the shown brand it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What the page is.
    pub verdict: Verdict,
    /// Index into the shown brands of the brand that decided (None for [`Verdict::NoBrand`]).
    pub brand: Option<usize>,
    /// One sentence saying why.
    pub reason: String,
}

/// Decides a page's verdict from the brands it shows (most confident first) and its host.
pub fn decide(page: &PageHost, shown: &[Shown]) -> Decision {
    decide_with_runners_up(page, shown, &[])
}

/// As [`decide`], with `runners_up`: brands that are a region's second best and clear the
/// threshold too. They can make a page consistent (the page's domain is one of theirs), never an
/// impersonation; `Decision::brand` indexes `shown` followed by `runners_up`.
pub fn decide_with_runners_up(page: &PageHost, shown: &[Shown], runners_up: &[Shown]) -> Decision {
    let d = decide_shown(page, shown);
    if d.verdict != Verdict::Impersonation {
        return d;
    }
    match runners_up.iter().position(|s| page.belongs_to(s.domains)) {
        Some(i) => {
            let reason = format!("{} is one of {}'s domains, a close second on a logo of the page", page.domain(), runners_up[i].brand);
            Decision { verdict: Verdict::Consistent, brand: Some(shown.len() + i), reason }
        }
        None => d,
    }
}

fn decide_shown(page: &PageHost, shown: &[Shown]) -> Decision {
    if shown.is_empty() {
        return Decision { verdict: Verdict::NoBrand, brand: None, reason: "no known brand is shown on the page".into() };
    }
    if let Some(i) = shown.iter().position(|s| page.belongs_to(s.domains)) {
        let reason = format!("{} is one of {}'s domains", page.domain(), shown[i].brand);
        return Decision { verdict: Verdict::Consistent, brand: Some(i), reason };
    }
    match shown.iter().position(|s| !s.domains.is_empty()) {
        Some(i) => {
            let s = &shown[i];
            let own = s.domains.iter().map(Domain::as_str).collect::<Vec<_>>().join(", ");
            let site = match page.kind {
                HostKind::Domain => page.domain().to_string(),
                HostKind::Ip => format!("the IP address {}", page.host),
                HostKind::NoPublicSuffix => format!("{}, a host under no public suffix", page.host),
            };
            let reason = format!("the page shows {} on {site}, which is not one of its domains ({own})", s.brand);
            Decision { verdict: Verdict::Impersonation, brand: Some(i), reason }
        }
        None => {
            let names = shown.iter().map(|s| s.brand).collect::<Vec<_>>().join(", ");
            Decision { verdict: Verdict::UnknownDomain, brand: Some(0), reason: format!("no domains are on record for {names}; add them with `proxima gallery domains`") }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(list: &[&str]) -> Vec<Domain> {
        list.iter().map(|s| Domain::parse(s).unwrap()).collect()
    }

    fn verdict(url: &str, shown: &[(&str, &[Domain])]) -> (Verdict, Option<usize>) {
        let page = PageHost::from_url(url).unwrap();
        let shown: Vec<Shown> = shown.iter().map(|(b, ds)| Shown { brand: b, domains: ds }).collect();
        let dec = decide(&page, &shown);
        assert!(!dec.reason.is_empty());
        (dec.verdict, dec.brand)
    }

    #[test]
    fn one_brand_on_its_own_and_on_foreign_sites() {
        let pp = d(&["paypal.com", "paypal.me"]);
        assert_eq!(verdict("https://www.paypal.com/signin", &[("PayPal", &pp)]), (Verdict::Consistent, Some(0)));
        assert_eq!(verdict("https://paypal.me/x", &[("PayPal", &pp)]), (Verdict::Consistent, Some(0)));
        for foreign in ["https://paypa1.com/", "https://paypal.com.evil.io/", "http://192.0.2.1/paypal", "http://localhost/", "https://xn--pypal-4ve.com/"] {
            assert_eq!(verdict(foreign, &[("PayPal", &pp)]), (Verdict::Impersonation, Some(0)), "{foreign}");
        }
    }

    #[test]
    fn nothing_shown_or_nothing_on_record() {
        assert_eq!(verdict("https://example.com/", &[]), (Verdict::NoBrand, None));
        assert_eq!(verdict("https://example.com/", &[("Acme", &[])]), (Verdict::UnknownDomain, Some(0)));
    }

    #[test]
    fn two_brands_on_one_page() {
        let (pp, visa, google) = (d(&["paypal.com"]), d(&["visa.com"]), d(&["google.com"]));
        // The site's own brand anywhere among those shown makes the page consistent.
        assert_eq!(verdict("https://paypal.com/", &[("Visa", &visa), ("PayPal", &pp)]), (Verdict::Consistent, Some(1)));
        // Otherwise the most confident brand with domains is the one impersonated.
        assert_eq!(verdict("https://evil.io/", &[("Acme", &[]), ("Google", &google), ("PayPal", &pp)]), (Verdict::Impersonation, Some(1)));
    }

    #[test]
    fn a_runner_up_owning_the_domain_makes_the_page_consistent_never_an_impersonation() {
        let (pp, visa) = (d(&["paypal.com"]), d(&["visa.com"]));
        let page = |u: &str| PageHost::from_url(u).unwrap();
        let shown = [Shown { brand: "Visa", domains: &visa }];
        let runner = [Shown { brand: "PayPal", domains: &pp }];
        let own = decide_with_runners_up(&page("https://www.paypal.com/"), &shown, &runner);
        assert_eq!((own.verdict, own.brand), (Verdict::Consistent, Some(1)));
        let foreign = decide_with_runners_up(&page("https://evil.io/"), &shown, &runner);
        assert_eq!((foreign.verdict, foreign.brand), (Verdict::Impersonation, Some(0)), "the runner-up is not what is impersonated");
        let none = decide_with_runners_up(&page("https://evil.io/"), &[], &runner);
        assert_eq!(none.verdict, Verdict::NoBrand, "a runner-up alone shows no brand");
    }

    #[test]
    fn reasons_name_the_address() {
        let page = PageHost::from_url("http://192.0.2.1/").unwrap();
        let pp = d(&["paypal.com"]);
        let dec = decide(&page, &[Shown { brand: "PayPal", domains: &pp }]);
        assert!(dec.reason.contains("192.0.2.1") && dec.reason.contains("paypal.com"), "{}", dec.reason);
    }
}
