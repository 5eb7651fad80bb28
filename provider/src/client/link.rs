//! The link to the plugin: which URLs are acceptable, TLS on the client,
//! and answers read up to a cap.

use super::{ClientSettings, PluginError, classify, error_chain};
use crate::tls::{ServerTrust, plugin_client_config};
use tracing::warn;

/// What the provider may do with a plugin URL.
#[derive(Debug, PartialEq, Eq)]
pub enum Scheme {
    Https,
    /// Plain HTTP: to a loopback host (a sidecar; nobody is in the middle),
    /// or allowed by `--plugin-insecure`.
    Http {
        loopback: bool,
    },
    Unix,
}

/// The URL's scheme, refused when plain HTTP crosses a network without
/// `insecure`.
pub fn check_scheme(url: &str, insecure: bool) -> Result<Scheme, PluginError> {
    if url.starts_with("unix://") {
        return Ok(Scheme::Unix);
    }
    if url.starts_with("https://") {
        return Ok(Scheme::Https);
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(PluginError::Config(format!(
            "plugin URL {url:?} must start with https://, http:// or unix://"
        )));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || insecure {
        Ok(Scheme::Http { loopback })
    } else {
        Err(PluginError::Config(format!(
            "plugin URL {url:?} is plain HTTP: anyone on the path could read the token and answer \
             in the plugin's name. Use https:// with --plugin-ca-file or --plugin-cert-sha256 \
             (the plugin chart serves TLS), or pass --plugin-insecure to accept the risk"
        )))
    }
}

/// The TLS settings of an `https://` plugin URL on the client builder.
pub(super) fn with_tls(
    b: reqwest::ClientBuilder,
    s: &ClientSettings,
) -> Result<reqwest::ClientBuilder, PluginError> {
    let tls_err = |e: offload_runtime::tls::TlsError| PluginError::Config(e.to_string());
    let client_cert = s
        .client_cert
        .as_ref()
        .map(|(c, k)| (c.as_path(), k.as_path()));
    let trust = match (&s.cert_sha256, &s.ca_file) {
        (Some(pin), _) => Some(ServerTrust::Pinned(*pin)),
        (None, Some(ca)) => Some(ServerTrust::Ca(ca)),
        (None, None) => None,
    };
    match trust {
        Some(trust) => {
            let cfg = plugin_client_config(trust, client_cert).map_err(tls_err)?;
            Ok(b.tls_backend_preconfigured(cfg))
        }
        None => {
            // The system's roots (a plugin behind a certificate of a public
            // CA); a client certificate still goes with it.
            warn!(
                "no --plugin-ca-file or --plugin-cert-sha256: the plugin's certificate is checked against the system's roots"
            );
            match client_cert {
                Some((c, k)) => {
                    let read = |p: &std::path::Path| {
                        std::fs::read(p)
                            .map_err(|e| PluginError::Config(format!("{}: {e}", p.display())))
                    };
                    let mut pem = read(c)?;
                    pem.push(b'\n');
                    pem.extend(read(k)?);
                    let id = reqwest::Identity::from_pem(&pem)
                        .map_err(|e| PluginError::Config(error_chain(&e)))?;
                    Ok(b.identity(id))
                }
                None => Ok(b),
            }
        }
    }
}

/// The body of `resp`, at most `limit` bytes: beyond it the read stops and
/// the call fails with [`PluginError::TooLarge`], or (`truncate`, for error
/// bodies that are only shown) the first `limit` bytes are kept.
pub async fn read_capped(
    mut resp: reqwest::Response,
    limit: u64,
    truncate: bool,
) -> Result<Vec<u8>, PluginError> {
    if !truncate && resp.content_length().is_some_and(|n| n > limit) {
        return Err(PluginError::TooLarge { limit });
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if out.len() + chunk.len() > cap {
            if truncate {
                out.extend_from_slice(&chunk[..cap - out.len()]);
                return Ok(out);
            }
            return Err(PluginError::TooLarge { limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_or_when_insecure() {
        assert_eq!(
            check_scheme("https://10.0.0.1:4000", false).ok(),
            Some(Scheme::Https)
        );
        assert_eq!(
            check_scheme("unix:///run/p.sock", false).ok(),
            Some(Scheme::Unix)
        );
        for url in [
            "http://127.0.0.1:4000",
            "http://localhost:4000/",
            "http://[::1]:4000",
            "http://127.0.0.2",
        ] {
            assert_eq!(
                check_scheme(url, false).ok(),
                Some(Scheme::Http { loopback: true }),
                "{url}"
            );
        }
        for url in [
            "http://10.0.0.1:4000",
            "http://plugin.example",
            "http://127.0.0.1.evil.example:80",
            "http://[::2]:1",
        ] {
            let err = check_scheme(url, false).expect_err(url);
            assert!(err.to_string().contains("--plugin-insecure"), "{err}");
            assert_eq!(
                check_scheme(url, true).ok(),
                Some(Scheme::Http { loopback: false }),
                "{url}"
            );
        }
        assert!(check_scheme("ftp://x", true).is_err());
    }
}
