//! A brand's legitimate registrable domain, parsed once and stored normalised.
//!
//! Why normalise on entry: the check compares strings, so `PayPal.com`, `paypal.com.` and
//! `www.paypal.com` must all be stored as `paypal.com`, and `bücher.de` as `xn--bcher-kva.de` (the
//! form a browser puts on the wire). A subdomain is reduced to its registrable domain (the brand
//! owns the whole registration); a public suffix (`com`, `co.uk`, `github.io`) or an IP address is
//! refused, since it would make every page under it "the brand's own".

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, Result};

/// A registrable domain (eTLD+1): ASCII (punycode), lower case, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    /// Parses a domain name (`paypal.com`, `www.PayPal.com.`, `bücher.de`) into its registrable domain.
    pub fn parse(input: &str) -> Result<Domain> {
        Ok(Self::parse_reduced(input)?.0)
    }

    /// As [`Domain::parse`], also telling whether the input was a longer host reduced to it.
    pub fn parse_reduced(input: &str) -> Result<(Domain, bool)> {
        let bad = |reason: String| DomainError::InvalidDomain { input: input.to_string(), reason };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty".into()));
        }
        if s.contains("://") || s.contains(['/', '?', '#', '@', ':']) || s.chars().any(char::is_whitespace) {
            return Err(bad("give a domain name such as paypal.com, not a URL, path, port or address".into()));
        }
        let s = s.strip_suffix('.').unwrap_or(s);
        if s.parse::<IpAddr>().is_ok() || is_dotted_numeric(s) {
            return Err(bad("an IP address is not a brand domain".into()));
        }
        let ascii = idna::domain_to_ascii(s).map_err(|e| bad(format!("not a valid internationalised domain name ({e})")))?;
        check_ldh(&ascii).map_err(|r| bad(r.to_string()))?;
        let registrable = registrable(&ascii)
            .ok_or_else(|| bad(format!("{ascii} is a public suffix (anyone can register names under it); give the brand's own domain, such as brand.{ascii}")))?;
        let reduced = registrable != ascii;
        Ok((Domain(registrable), reduced))
    }

    /// The ASCII form (`xn--…` for internationalised names).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Unicode form for display (`bücher.de`); the ASCII form when it has none.
    pub fn to_unicode(&self) -> String {
        let (u, r) = idna::domain_to_unicode(&self.0);
        if r.is_ok() { u } else { self.0.clone() }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Domain {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Domain> {
        Domain::parse(&s)
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.0
    }
}

/// Parses, reduces, sorts and de-duplicates a list of domains; the first bad one is the error.
pub fn normalize_domains<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<Domain>> {
    let mut out = inputs.iter().map(|s| Domain::parse(s.as_ref())).collect::<Result<Vec<_>>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// The registrable domain of a lower-case ASCII host under the public-suffix list, if it has one.
pub(crate) fn registrable(ascii_host: &str) -> Option<String> {
    psl::domain_str(ascii_host).map(str::to_string)
}

/// `1.2.3` and the like: numeric labels only, which resolvers read as an address, never a name.
fn is_dotted_numeric(s: &str) -> bool {
    s.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
}

/// Letters, digits and hyphens; labels of 1–63 characters not starting or ending with a hyphen;
/// at most 253 characters (a single label is refused later, as a public suffix).
fn check_ldh(ascii: &str) -> std::result::Result<(), &'static str> {
    if ascii.is_empty() || ascii.len() > 253 {
        return Err("a domain name has 1 to 253 characters");
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    for l in labels {
        if l.is_empty() || l.len() > 63 {
            return Err("each label between dots has 1 to 63 characters");
        }
        if !l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err("a label may hold only letters, digits and hyphens");
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err("a label may not start or end with a hyphen");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_reduce_to_their_registrable_domain() {
        assert_eq!(Domain::parse_reduced("PayPal.com").unwrap(), (Domain("paypal.com".into()), false));
        assert_eq!(Domain::parse_reduced("www.paypal.com.").unwrap(), (Domain("paypal.com".into()), true));
        assert_eq!(Domain::parse("accounts.google.co.uk").unwrap().as_str(), "google.co.uk");
        // github.io is a public suffix (private section): each user site is its own registration.
        assert_eq!(Domain::parse("octocat.github.io").unwrap().as_str(), "octocat.github.io");
    }

    #[test]
    fn internationalised_names_are_stored_as_punycode() {
        let d = Domain::parse("Bücher.de").unwrap();
        assert_eq!(d.as_str(), "xn--bcher-kva.de");
        assert_eq!(d.to_unicode(), "bücher.de");
        assert_eq!(Domain::parse("xn--bcher-kva.de").unwrap(), d);
        // A Cyrillic 'а' makes another domain than the Latin one.
        assert_ne!(Domain::parse("pаypal.com").unwrap(), Domain::parse("paypal.com").unwrap());
    }

    #[test]
    fn refusals_say_why() {
        for (input, why) in [
            ("", "empty"),
            ("https://paypal.com", "not a URL"),
            ("paypal.com/login", "not a URL"),
            ("paypal.com:443", "not a URL"),
            ("192.0.2.1", "IP address"),
            ("1.2.3", "IP address"),
            ("com", "public suffix"),
            ("co.uk", "public suffix"),
            ("github.io", "public suffix"),
            ("pay pal.com", "not a URL"),
            ("pay_pal.com", "letters, digits and hyphens"),
            ("-paypal.com", "hyphen"),
            ("paypal..com", "1 to 63"),
        ] {
            let e = Domain::parse(input).unwrap_err().to_string();
            assert!(e.contains(why), "{input:?}: {e}");
        }
    }

    #[test]
    fn lists_are_sorted_and_deduplicated() {
        let d = normalize_domains(&["paypal.me", "www.paypal.com", "PAYPAL.com"]).unwrap();
        assert_eq!(d.iter().map(Domain::as_str).collect::<Vec<_>>(), ["paypal.com", "paypal.me"]);
        assert!(normalize_domains(&["paypal.com", "com"]).is_err());
    }

    #[test]
    fn serde_round_trips_and_validates() {
        let d: Domain = serde_json::from_str("\"WWW.PayPal.com\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"paypal.com\"");
        assert!(serde_json::from_str::<Domain>("\"com\"").is_err());
    }
}
