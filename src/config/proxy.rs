//! The outbound proxy: the `proxy_url` key, or `HTTPS_PROXY` and `NO_PROXY`.
//!
//! Owns resolving the proxy once at load (so the HTTP client never reads the environment
//! itself) and keeping its password out of `Debug`. Does not own building the client with it
//! (`app`).

use std::fmt;

use url::Url;

use super::check::Invalid;

/// An outbound HTTP proxy: `proxy_url` or `HTTPS_PROXY`, with the `NO_PROXY` exceptions.
/// Resolved once at load, so the HTTP client never reads the environment itself.
#[derive(Clone, PartialEq)]
pub struct ProxyConfig {
    pub url: Url,
    /// `NO_PROXY` as given (comma-separated hosts, domains, IPs, CIDRs).
    pub no_proxy: Option<String>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A proxy URL may carry a password.
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("REDACTED"));
        }
        f.debug_struct("ProxyConfig")
            .field("url", &shown.as_str())
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// The proxy of `proxy_url` (the key wins) or of the environment; the error's key is
/// `proxy_url` or `HTTPS_PROXY`, whichever gave the value.
pub(super) fn resolve(
    proxy_url: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyConfig>, Invalid> {
    // The key wins over the environment; the lower-case spellings are honoured too, as
    // curl and most tools do.
    let from_env = |upper: &str| {
        env(upper)
            .or_else(|| env(&upper.to_ascii_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    let (proxy_key, proxy_text) = match proxy_url {
        Some(p) => ("proxy_url", Some(p.to_string())),
        None => ("HTTPS_PROXY", from_env("HTTPS_PROXY")),
    };
    let Some(text) = proxy_text else {
        return Ok(None);
    };
    let url = Url::parse(&text)
        .map_err(|e| Invalid::new(proxy_key, format!("{text:?} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Invalid::new(
            proxy_key,
            format!("{text:?}: use an http:// or https:// proxy URL with a host"),
        ));
    }
    Ok(Some(ProxyConfig {
        url,
        no_proxy: from_env("NO_PROXY"),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::super::fixtures::{GOOD, assert_errors, parse};

    // See: #10
    #[test]
    fn proxy_from_the_key_or_the_environment() {
        let env = |name: &str| match name {
            "MDE_SECRET" => Some("s3cret".into()),
            "https_proxy" => Some("http://env-proxy:3128".into()),
            "NO_PROXY" => Some("localhost,.internal".into()),
            _ => None,
        };
        let p = Config::parse(GOOD, Path::new("cfg.yml"), &env)
            .unwrap()
            .proxy
            .unwrap();
        assert_eq!(p.url.as_str(), "http://env-proxy:3128/");
        assert_eq!(p.no_proxy.as_deref(), Some("localhost,.internal"));
        let c = Config::parse(
            &format!("proxy_url: http://user:pw@key-proxy:8080\n{GOOD}"),
            Path::new("cfg.yml"),
            &env,
        )
        .unwrap();
        let p = c.proxy.unwrap();
        assert_eq!(p.url.host_str(), Some("key-proxy"));
        assert!(!format!("{p:?}").contains("pw"));
        assert!(parse(GOOD).unwrap().proxy.is_none());
    }

    #[test]
    fn proxy_errors_name_the_key() {
        assert_errors(&[
            (
                format!("proxy_url: socks5://p:1080\n{GOOD}"),
                "config file cfg.yml: proxy_url: \"socks5://p:1080\": use an http:// or https:// proxy URL with a host",
            ),
            (
                format!("proxy_url: not a url\n{GOOD}"),
                "config file cfg.yml: proxy_url: \"not a url\" is not a valid URL: relative URL without a base",
            ),
        ]);
    }
}
