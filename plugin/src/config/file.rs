//! The config file (TOML, or YAML by extension): its keys are the long flag
//! names and its values become clap defaults, so the command line and the
//! environment still win over it.

use std::{collections::BTreeMap, ffi::OsString, path::PathBuf};

use clap::Command;

use super::ConfigError;

/// `cmd` with the values of the config file named by `--config` (or
/// `OFFLOAD_PLUGIN_CONFIG`) as defaults; unknown keys are an error.
pub(super) fn with_file_defaults(
    mut cmd: Command,
    args: &[OsString],
) -> Result<Command, ConfigError> {
    let Some(path) = config_path_from_args(args) else {
        return Ok(cmd);
    };
    let values = file_values(&path)?;
    let ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    for (key, value) in values {
        let id = key.replace('-', "_");
        if !ids.contains(&id) || id == "config" {
            return Err(ConfigError::UnknownKey { path, key });
        }
        cmd = cmd.mut_arg(id, |a| a.default_value(value));
    }
    Ok(cmd)
}

/// The config file's keys and values, each value as the text clap would
/// get on the command line.
fn file_values(path: &PathBuf) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let parsed: Result<serde_json::Value, String> = if yaml {
        serde_saphyr::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| e.to_string())
    };
    let map = match parsed {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("the top level must be a table/mapping".to_string()),
        Err(message) => Err(message),
    }
    .map_err(|message| ConfigError::Parse {
        path: path.clone(),
        message,
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => continue,
            // Lists of strings become comma lists; everything else JSON.
            serde_json::Value::Array(ref items)
                if items.iter().all(|i| i.is_string())
                    && k != "node-tolerations"
                    && k != "node_tolerations" =>
            {
                items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        out.insert(k, s);
    }
    Ok(out)
}

/// `--config`, read before clap parses (the file sets clap's defaults).
fn config_path_from_args(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("OFFLOAD_PLUGIN_CONFIG").map(PathBuf::from)
}
