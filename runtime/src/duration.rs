//! The one duration syntax of every flag, environment variable and chart
//! value: humantime's (`500ms`, `30s`, `5m`, `1h30m`, `2d`, `1.5s`).
//!
//! A bare number means seconds, because the provider and the plugin have
//! always accepted one (`--status-interval 3`) and the standalone
//! gateway-manager's `--sync-secs` took nothing else.

use std::time::Duration;

pub use humantime::DurationError;

/// Parses `500ms`, `30s`, `5m`, `2d` (any humantime duration) or a bare
/// number of seconds (`90`, `1.5`). Use it as a clap `value_parser`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let bare = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    if bare {
        humantime::parse_duration(&format!("{s}s"))
    } else {
        humantime::parse_duration(s)
    }
}

/// How a duration is written back (help texts, logs): `1m 30s`.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn units() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("5s", Duration::from_secs(5)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("5m", Duration::from_secs(300)),
            ("15m", Duration::from_secs(900)),
            ("1h", Duration::from_secs(3600)),
            ("24h", Duration::from_secs(86_400)),
            ("2d", Duration::from_secs(172_800)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            (" 10m ", Duration::from_secs(600)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn bare_numbers_are_seconds() {
        for (text, expected) in [
            ("3", Duration::from_secs(3)),
            ("90", Duration::from_secs(90)),
            ("0", Duration::ZERO),
            ("1.5", Duration::from_millis(1500)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["", " ", "x", "soon", "5 parsecs", "-1s", "1.2.3", "s", "."] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn every_default_of_the_tree_parses() {
        // The defaults and chart values of today (values.yaml, --help).
        for (text, secs) in [
            ("60s", 60),
            ("1s", 1),
            ("10m", 600),
            ("30m", 1800),
            ("24h", 86_400),
            ("2", 2),
            ("120", 120),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m 30s");
    }
}
