//! What a loopback host is: the one test behind the rule that plain http is for loopback hosts
//! only (`cloud`), the managed-identity endpoint's rule (`auth`) and where result links may
//! come from (`crate::api`).
//!
//! Owns that test. Does not own the rules that use it, nor parsing URLs (the `url` crate).

use url::Url;

/// Whether a URL's host is loopback (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
