//! The API handlers: parse and check the request (errors are the caller's),
//! then call the pure logic and the remote cluster inside a span that names
//! the pod.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use offload_wire::{CreateStruct, LogStruct, PingResponse, PodStatus};
use tokio_util::{compat::FuturesAsyncReadCompatExt, io::ReaderStream};
use tracing::{info, instrument, warn};

use super::{
    AppState,
    body::{JsonBody, create_data},
};
use crate::{
    bastion::KeyState,
    caller::{self, Principal},
    error::ApiError,
    logs,
    naming::{NameKind, remote_name},
    remote::Deleted,
    status::{self, LocalIdentity},
    translate::{self, RemotePlan},
};

/// The bastion's public key, for the provider's gateway to authorize:
/// `{"publicKey": "ssh-ed25519 AAAA…"}`. Only a public key ever leaves.
pub(super) async fn bastion_public_key(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.bastion.get() {
        KeyState::Ready { key, namespace } => Ok(Json(serde_json::json!({
            "publicKey": key,
            "namespace": namespace,
        }))),
        KeyState::Pending { namespace, error } => Err(ApiError::unavailable(
            "bastion_not_ready",
            match error {
                Some(e) => format!("the bastion is not installed yet ({e}); retry"),
                None => format!(
                    "the bastion is being installed in remote namespace {namespace:?}; retry"
                ),
            },
        )),
        KeyState::Disabled => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "bastion_disabled",
            "this plugin keeps no bastion (--no-bastion): give the provider the bastion's key \
             with --bastion-public-key, or run the plugin without --no-bastion",
        )),
    }
}

/// The ping (`/ping`, and `/status` with `[]` as interLink sends it): "ok"
/// and the remote cluster's allocatable, which the virtual node advertises
/// (interLink's `PingResponse`).
pub(super) async fn ping(State(state): State<Arc<AppState>>) -> Json<PingResponse> {
    Json(ping_answer(&state))
}

fn ping_answer(state: &AppState) -> PingResponse {
    PingResponse {
        status: "ok".into(),
        resources: state.capacity.resources(),
        ..Default::default()
    }
}

pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<CreateStruct>, ApiError> {
    let data = create_data(&body)?;
    let mut plan = match translate::translate(&data, &state.translate) {
        Ok(plan) => plan,
        Err(translate::TranslateError::Policy(v)) => return Err(refused(&state, &data, v)),
        Err(e) => return Err(e.into()),
    };
    // Before any remote call: the namespace must be one we may write to.
    state.namespaces().checked_remote(&plan.local.namespace)?;
    // The orphan sweep judges the pod by this caller's liveness only.
    caller::label(
        &mut plan.pod,
        &principal.caller_of(&data.pod),
        &state.instance(),
    );
    // The tunnel's gateway, as the authenticated provider names it: the
    // bastion dials only gateways learnt here (never one a pod names).
    state
        .bastion
        .learn_gateway(data.pod.metadata.annotations.as_ref());
    create_remote(&state, &plan).await
}

/// A pod the policy refused: logged (fields and rules only, no values of
/// the pod), counted per rule, answered 403 with every violation.
fn refused(
    state: &AppState,
    data: &offload_wire::RetrievedPodData,
    violations: Vec<crate::policy::Violation>,
) -> ApiError {
    let m = &data.pod.metadata;
    let fields: Vec<String> = violations
        .iter()
        .map(|v| format!("{} [{}]", v.field, v.rule))
        .collect();
    warn!(
        pod = m.name.as_deref().unwrap_or_default(),
        namespace = m.namespace.as_deref().unwrap_or_default(),
        uid = m.uid.as_deref().unwrap_or_default(),
        violations = %fields.join("; "),
        "pod refused by the pod security policy"
    );
    state.metrics.policy_refusal(&violations);
    translate::TranslateError::Policy(violations).into()
}

#[instrument(name = "create", skip_all, fields(
    pod = %plan.local.name,
    namespace = %plan.local.namespace,
    uid = %plan.local.uid,
    remote = %plan.pod_name(),
))]
async fn create_remote(
    state: &AppState,
    plan: &RemotePlan,
) -> Result<Json<CreateStruct>, ApiError> {
    for w in &plan.warnings {
        info!(warning = %w, "translation note");
    }
    state.touch(&plan.local.uid);
    let remote_uid = state.remote.create(plan).await?;
    info!(remote_uid = %remote_uid, configmaps = plan.config_maps.len(), secrets = plan.secrets.len(), "pod offloaded");
    Ok(Json(CreateStruct {
        pod_uid: plan.local.uid.clone(),
        pod_jid: remote_uid,
    }))
}

pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    JsonBody(pod): JsonBody<Pod>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, ns, name) = translate::remote_ref(&pod, state.namespaces())?;
    state.namespaces().checked_remote(&id.namespace)?;
    delete_remote(&state, &id, &ns, &name).await
}

#[instrument(name = "delete", skip_all, fields(pod = %id.name, namespace = %id.namespace, uid = %id.uid))]
async fn delete_remote(
    state: &AppState,
    id: &LocalIdentity,
    ns: &str,
    name: &str,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut outcome = state.remote.delete_outcome(ns, name, &id.uid).await?;
    // Created under another configuration (e.g. another prefix): find it by label.
    if outcome == Deleted::Absent
        && let Some(p) = state.remote.cached_by_uid(&id.uid)
        && let (Some(pns), Some(pname)) =
            (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
    {
        outcome = state.remote.delete_outcome(pns, pname, &id.uid).await?;
    }
    state.forget(&id.uid);
    let existed = outcome == Deleted::Ours;
    info!(existed, ?outcome, "remote pod delete");
    Ok(Json(serde_json::json!({
        "PodUID": id.uid,
        "deleted": existed,
        "message": match outcome {
            Deleted::Ours => "Pod deleted",
            Deleted::Absent => "Pod was not on the remote cluster",
            Deleted::Foreign => "The remote pod of that name is not managed by this plugin for this UID; left alone",
        },
    })))
}

pub(super) async fn status_handler(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    JsonBody(pods): JsonBody<Vec<super::status_body::StatusPod>>,
) -> Result<Response, ApiError> {
    let pods: Vec<Pod> = pods.into_iter().map(Pod::from).collect();
    if pods.is_empty() {
        // interLink's ping: since 0.6.2 its Virtual Kubelet reads a
        // `PingResponse` object from it (an array it ignores).
        return Ok(Json(ping_answer(&state)).into_response());
    }
    let mut ids = Vec::with_capacity(pods.len());
    for (i, p) in pods.iter().enumerate() {
        let id = translate::local_identity(p)
            .map_err(|e| ApiError::bad_request(format!("pod [{i}]: {e}")))?;
        ids.push(id);
    }
    // Right after a start the cache may still be loading: wait a little
    // rather than report pods as not created.
    if !state.remote.is_ready() && !state.remote.wait_ready(Duration::from_secs(20)).await {
        return Err(ApiError::unavailable(
            "not_ready",
            "the remote pod cache is not synced yet; retry",
        ));
    }
    let out = pods
        .iter()
        .zip(ids)
        .map(|(p, id)| one_status(&state, p, &id))
        .collect();
    // Alive only once every pod it named is recorded: a refused call (bad
    // pod, cache not ready) must not make its caller look alive while
    // naming nothing, or the sweep would take all of its pods.
    state.status_call(&principal.callers_of(&pods));
    Ok(super::status_body::json_array(out))
}

/// The status of one pod from the cache; a remote pod this process saw
/// before and that is gone now has vanished (its containers terminated).
fn one_status(state: &AppState, local: &Pod, id: &LocalIdentity) -> PodStatus {
    state.touch(&id.uid);
    let remote = state.lookup(id);
    let mut observed = state.observed.lock().ok();
    match (&remote, observed.as_mut()) {
        (Some(r), Some(seen)) => {
            seen.insert(id.uid.clone(), r.metadata.uid.clone().unwrap_or_default());
        }
        (None, Some(seen)) if seen.contains_key(&id.uid) => {
            let jid = seen.get(&id.uid).cloned().unwrap_or_default();
            warn!(pod = %id.name, namespace = %id.namespace, uid = %id.uid, "remote pod vanished without a delete");
            return status::vanished_status(id, Some(local), &jid);
        }
        _ => {}
    }
    status::pod_status(id, Some(local), remote.as_deref())
}

pub(super) async fn get_logs(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<LogStruct>,
) -> Result<Response, ApiError> {
    logs::validate(&req)?;
    // Option errors are the caller's, whatever the remote pod looks like.
    logs::log_params(&req, String::new())?;
    stream_logs(state, req).await
}

#[instrument(name = "getLogs", skip_all, fields(pod = %req.pod_name, namespace = %req.namespace, uid = %req.pod_uid, container = %req.container_name, follow = req.opts.follow))]
async fn stream_logs(state: Arc<AppState>, req: LogStruct) -> Result<Response, ApiError> {
    let ns = state.namespaces().checked_remote(&req.namespace)?;
    let name = remote_name(NameKind::Pod, &req.pod_name, &req.pod_uid);
    state.touch(&req.pod_uid);
    let id = LocalIdentity {
        name: req.pod_name.clone(),
        namespace: req.namespace.clone(),
        uid: req.pod_uid.clone(),
    };
    let pod = match state
        .remote
        .get_pod(&ns, &name)
        .await
        .map_err(|e| ApiError::log_failure(e, &name, &req.pod_name))?
    {
        Some(p) => p,
        None => state.lookup(&id).ok_or_else(|| {
            ApiError::not_found(format!(
                "pod {}/{} (uid {}) is not on the remote cluster",
                req.namespace, req.pod_name, req.pod_uid
            ))
        })?,
    };
    let (rns, rname) = (
        pod.metadata.namespace.clone().unwrap_or(ns),
        pod.metadata.name.clone().unwrap_or(name),
    );
    let container = logs::choose_container(&pod, &req.container_name)?;
    let params = logs::log_params(&req, container)?;
    let reader = state
        .remote
        .logs(&rns, &rname, &params)
        .await
        .map_err(|e| ApiError::log_failure(e, &rname, &req.pod_name))?;
    let shutdown = state.shutdown.clone().cancelled_owned();
    let stream = ReaderStream::new(reader.compat())
        .map_err(|e| {
            warn!(error = %e, "log stream ended with an error");
            e
        })
        .take_until(shutdown);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building the response").into_response()))
}
