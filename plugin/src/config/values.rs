//! The value types of the flags and their parsers (clap `value_parser`s).
//! Durations are not here: every duration flag uses the one syntax of all
//! binaries, `offload_runtime::duration::parse_duration` (`500ms`, `30s`,
//! `5m`, `2d`, and a bare number of seconds as this plugin always took).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, str::FromStr};

use k8s_openapi::api::core::v1::Toleration;

/// Where the API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("unix:// needs a path, e.g. unix:///var/run/plugin.sock".into());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        let addr = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s);
        addr.parse()
            .map(Listen::Tcp)
            .map_err(|e| format!("{s:?} is neither host:port nor unix:///path ({e})"))
    }
}

/// `key=value,...` or a JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValues(pub BTreeMap<String, String>);

pub fn parse_key_values(s: &str) -> Result<KeyValues, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(KeyValues::default());
    }
    if t.starts_with('{') {
        return serde_json::from_str(t)
            .map(KeyValues)
            .map_err(|e| format!("not a JSON object of strings: {e}"));
    }
    let mut out = BTreeMap::new();
    for pair in t.split(',') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(KeyValues(out))
}

/// A JSON list of strings, or a comma-separated list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

pub fn parse_string_list(s: &str) -> Result<StringList, String> {
    let t = s.trim();
    if t.starts_with('[') {
        return serde_json::from_str(t)
            .map(StringList)
            .map_err(|e| format!("not a JSON list of strings: {e}"));
    }
    Ok(StringList(
        t.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect(),
    ))
}

/// A JSON list of Kubernetes tolerations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tolerations(pub Vec<Toleration>);

pub fn parse_tolerations(s: &str) -> Result<Tolerations, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(Tolerations::default());
    }
    serde_json::from_str(t)
        .map(Tolerations)
        .map_err(|e| format!("not a JSON list of tolerations: {e}"))
}

/// `1048576`, `512KiB`, `8MiB`, `8M`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 8MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1024,
        "M" | "MB" | "MiB" => 1024 * 1024,
        "G" | "GB" | "GiB" => 1024 * 1024 * 1024,
        u => return Err(format!("unknown size unit {u:?}")),
    };
    Ok(n.saturating_mul(mult))
}

/// A plugin instance name: a Kubernetes label value (it labels every object
/// the instance creates), not empty.
pub fn parse_instance(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a label value: 1 to 63 of [A-Za-z0-9-_.], alphanumeric at both ends"
        ))
    }
}
