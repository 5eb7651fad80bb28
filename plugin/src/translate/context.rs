//! What one translation carries along: the payload interLink sent, which of
//! its objects the spec uses, and the references rule shared by ConfigMaps
//! and Secrets.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use offload_wire::RetrievedPodData;

use super::{Result, TranslateConfig, TranslateError};
use crate::{
    naming::{NameKind, remote_name},
    status::LocalIdentity,
};

/// The ConfigMaps, Secrets and rendered volumes interLink sent, by name.
pub(super) struct Payload<'a> {
    pub config_maps: BTreeMap<&'a str, &'a ConfigMap>,
    pub secrets: BTreeMap<&'a str, &'a Secret>,
    pub volume_data: BTreeMap<&'a str, &'a ConfigMap>,
}

impl<'a> Payload<'a> {
    fn new(data: &'a RetrievedPodData) -> Self {
        let mut p = Payload {
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            volume_data: BTreeMap::new(),
        };
        // The same object may be listed for several containers: first wins.
        for c in &data.containers {
            for cm in &c.config_maps {
                if let Some(n) = cm.metadata.name.as_deref() {
                    p.config_maps.entry(n).or_insert(cm);
                }
            }
            for s in &c.secrets {
                if let Some(n) = s.metadata.name.as_deref() {
                    p.secrets.entry(n).or_insert(s);
                }
            }
            for v in &c.projected_volume_maps {
                if let Some(n) = v.metadata.name.as_deref() {
                    p.volume_data.entry(n).or_insert(v);
                }
            }
        }
        p
    }
}

/// Tracks which payload objects the translated spec uses.
#[derive(Default)]
pub(super) struct Used {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

/// The kind of object a spec reference names.
#[derive(Clone, Copy)]
pub(super) enum RefKind {
    ConfigMap,
    Secret,
}

impl RefKind {
    fn as_str(self) -> &'static str {
        match self {
            RefKind::ConfigMap => "ConfigMap",
            RefKind::Secret => "Secret",
        }
    }
    fn name_kind(self) -> NameKind {
        match self {
            RefKind::ConfigMap => NameKind::ConfigMap,
            RefKind::Secret => NameKind::Secret,
        }
    }
}

/// The state of one translation, handed to every step.
pub(super) struct Ctx<'a> {
    pub cfg: &'a TranslateConfig,
    pub payload: Payload<'a>,
    pub id: &'a LocalIdentity,
    pub used: Used,
    pub warnings: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        cfg: &'a TranslateConfig,
        data: &'a RetrievedPodData,
        id: &'a LocalIdentity,
    ) -> Self {
        Ctx {
            cfg,
            payload: Payload::new(data),
            id,
            used: Used::default(),
            warnings: vec![],
        }
    }

    /// Rewrites a reference to a ConfigMap or Secret (and `key` in it) to its
    /// remote name; fails if it is required and absent. `optional` is the
    /// reference's own field: only `Some(true)` may be absent.
    pub fn use_ref(
        &mut self,
        kind: RefKind,
        name: &str,
        optional: Option<bool>,
        key: Option<&str>,
        by: &str,
    ) -> Result<String> {
        let found = match kind {
            RefKind::ConfigMap => self.payload.config_maps.get(name).map(|cm| {
                key.is_none_or(|k| has(cm.data.as_ref(), k) || has(cm.binary_data.as_ref(), k))
            }),
            RefKind::Secret => self.payload.secrets.get(name).map(|s| {
                key.is_none_or(|k| has(s.data.as_ref(), k) || has(s.string_data.as_ref(), k))
            }),
        };
        let optional = optional == Some(true);
        if check_reference(kind.as_str(), name, found, optional, key, by)? {
            let used = match kind {
                RefKind::ConfigMap => &mut self.used.config_maps,
                RefKind::Secret => &mut self.used.secrets,
            };
            used.insert(name.into());
        }
        Ok(remote_name(kind.name_kind(), name, &self.id.uid))
    }
}

fn has<V>(map: Option<&BTreeMap<String, V>>, key: &str) -> bool {
    map.is_some_and(|m| m.contains_key(key))
}

/// The rule shared by ConfigMap and Secret references. `found` is `None` when
/// the object is not in the payload, else whether it holds the referenced key
/// (true when no key is referenced). Answers whether the object is present.
fn check_reference(
    kind: &str,
    name: &str,
    found: Option<bool>,
    optional: bool,
    key: Option<&str>,
    by: &str,
) -> Result<bool> {
    match (found, key) {
        (Some(false), Some(k)) if !optional => Err(TranslateError::Missing {
            what: format!("key {k:?} of {kind} {name:?}"),
            by: by.into(),
        }),
        (Some(_), _) => Ok(true),
        (None, _) if optional => Ok(false),
        (None, _) => Err(TranslateError::Missing {
            what: format!("{kind} {name:?}"),
            by: by.into(),
        }),
    }
}
