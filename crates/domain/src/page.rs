//! The host a page was served from, read from its URL.
//!
//! Why the `url` crate: it is the WHATWG URL parser browsers implement, so `http://paypal.com@evil.io/`
//! has host `evil.io` here as it does in the address bar, percent-escapes and IDNA are applied the
//! same way, and IPv4 shorthands (`http://3232235777/`) are recognised as addresses.

use std::fmt;

use serde::{Deserialize, Serialize};
use url::{Host, Url};

use crate::domain::{Domain, registrable};
use crate::error::{DomainError, Result};

/// What kind of host a page has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostKind {
    /// A name under a public suffix: it has a registrable domain.
    Domain,
    /// An IPv4 or IPv6 address: no brand's domain.
    Ip,
    /// A name under no public suffix (`localhost`, an intranet name): no brand's domain.
    NoPublicSuffix,
}

impl fmt::Display for HostKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostKind::Domain => "domain",
            HostKind::Ip => "IP address",
            HostKind::NoPublicSuffix => "host under no public suffix",
        })
    }
}

/// The host of a page's URL and its registrable domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageHost {
    /// The URL as parsed (normalised by the WHATWG rules).
    pub url: String,
    /// The host, ASCII (punycode) and lower case; an IPv6 address in brackets.
    pub host: String,
    /// What the host is.
    pub kind: HostKind,
    /// The registrable domain when `kind` is [`HostKind::Domain`].
    pub registrable: Option<Domain>,
}

impl PageHost {
    /// Reads a page URL; one without a scheme (`paypal.com/login`) is read as `http://`.
    ///
    /// Only `http` and `https` URLs have pages to check; anything else, or a URL without a host,
    /// is an error.
    pub fn from_url(input: &str) -> Result<PageHost> {
        let bad = |reason: String| DomainError::InvalidUrl { input: input.to_string(), reason };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty".into()));
        }
        let with_scheme = if has_scheme(s) { s.to_string() } else { format!("http://{s}") };
        let url = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("scheme {:?}: only http and https pages can be checked", url.scheme())));
        }
        let (host, kind, registrable) = match url.host() {
            Some(Host::Domain(d)) => {
                let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
                if d.is_empty() {
                    return Err(bad("the URL has no host".into()));
                }
                match registrable(&d) {
                    Some(r) => (d, HostKind::Domain, Some(Domain::parse(&r).map_err(|e| bad(e.to_string()))?)),
                    None => (d, HostKind::NoPublicSuffix, None),
                }
            }
            Some(Host::Ipv4(a)) => (a.to_string(), HostKind::Ip, None),
            Some(Host::Ipv6(a)) => (format!("[{a}]"), HostKind::Ip, None),
            None => return Err(bad("the URL has no host".into())),
        };
        Ok(PageHost { url: url.to_string(), host, kind, registrable })
    }

    /// The page's domain as reported: its registrable domain, or the host when it has none.
    pub fn domain(&self) -> &str {
        self.registrable.as_ref().map_or(&self.host, Domain::as_str)
    }

    /// True when the page's registrable domain is one of `domains`.
    pub fn belongs_to(&self, domains: &[Domain]) -> bool {
        self.registrable.as_ref().is_some_and(|r| domains.contains(r))
    }
}

/// `scheme://` or `scheme:` of a known non-web scheme: whether the input names its own scheme.
fn has_scheme(s: &str) -> bool {
    let Some(i) = s.find(':') else { return false };
    let scheme = &s[..i];
    let valid = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    // `paypal.com:8080/x` is a host and port, not the scheme "paypal.com".
    valid && (s[i + 1..].starts_with("//") || matches!(scheme.to_ascii_lowercase().as_str(), "mailto" | "data" | "javascript" | "file" | "about" | "blob"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(url: &str) -> PageHost {
        PageHost::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn subdomain_tricks_resolve_to_the_real_registration() {
        assert_eq!(host("https://www.paypal.com/signin").domain(), "paypal.com");
        assert_eq!(host("https://paypal.com.evil.io/login").domain(), "evil.io");
        assert_eq!(host("https://paypal.com@evil.io/").domain(), "evil.io");
        assert_eq!(host("https://secure-paypal.com/").domain(), "secure-paypal.com");
        assert_eq!(host("http://paypal.com.").domain(), "paypal.com");
        assert_eq!(host("https://victim.github.io/").domain(), "victim.github.io");
    }

    #[test]
    fn urls_without_a_scheme_are_read_as_http() {
        let h = host("PayPal.com/login?x=1");
        assert_eq!((h.url.as_str(), h.domain()), ("http://paypal.com/login?x=1", "paypal.com"));
        assert_eq!(host("paypal.com:8443/x").domain(), "paypal.com");
    }

    #[test]
    fn addresses_and_bare_names_have_no_registrable_domain() {
        let h = host("http://192.0.2.7/paypal/");
        assert_eq!((h.kind, h.domain()), (HostKind::Ip, "192.0.2.7"));
        let h = host("http://3232235777/");
        assert_eq!((h.kind, h.host.as_str()), (HostKind::Ip, "192.168.1.1"));
        let h = host("http://[2001:db8::1]:8080/");
        assert_eq!((h.kind, h.host.as_str()), (HostKind::Ip, "[2001:db8::1]"));
        assert_eq!(host("http://localhost:3000/").kind, HostKind::NoPublicSuffix);
        assert!(!host("http://192.0.2.7/").belongs_to(&[Domain::parse("paypal.com").unwrap()]));
    }

    #[test]
    fn internationalised_hosts_compare_in_punycode() {
        let h = host("https://pаypal.com/"); // Cyrillic а
        assert!(h.domain().starts_with("xn--"), "{}", h.domain());
        assert!(!h.belongs_to(&[Domain::parse("paypal.com").unwrap()]));
        assert_eq!(host("https://xn--bcher-kva.de/").domain(), host("https://bücher.de/").domain());
    }

    #[test]
    fn unusable_urls_are_errors() {
        for (u, why) in
            [("", "empty"), ("ftp://paypal.com/", "only http"), ("mailto:a@paypal.com", "only http"), ("http://", "host"), ("http://exa mple.com/", "invalid")]
        {
            let e = PageHost::from_url(u).unwrap_err().to_string();
            assert!(e.to_lowercase().contains(why), "{u:?}: {e}");
        }
    }
}
