//! Benchmark support: a small in-memory plugin that plays the remote side,
//! for `benches/offload.rs --fake-plugin` (the provider's own cost, without a
//! remote cluster). The tests use the real plugin (`tests/common`).
//! Behaviour per pod comes from annotations:
//! - `fake.offload/exit-code: "N"`: containers terminate with N after `fake.offload/run-ms` (default 500).
//! - otherwise containers keep running.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use offload_wire::{CreateStruct, LogStruct, PodStatus, RetrievedPodData};

#[derive(Default)]
pub struct FakeState {
    pub pods: HashMap<String, (Pod, Instant, jiff::Timestamp)>,
    pub creates: HashMap<String, u32>,
    pub deletes: HashMap<String, u32>,
    pub create_delay: Duration,
}

#[derive(Clone, Default)]
pub struct FakePlugin {
    pub state: Arc<Mutex<FakeState>>,
}

fn state_for(pod: &Pod, age: Duration, born: jiff::Timestamp, init: bool) -> ContainerState {
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let run_ms: u64 = ann
        .get("fake.offload/run-ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let started = Time(born);
    if age < Duration::from_millis(100) {
        return ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        };
    }
    let exit = if init {
        Some(0)
    } else {
        ann.get("fake.offload/exit-code")
            .and_then(|v| v.parse::<i32>().ok())
    };
    match exit {
        Some(code) if age > Duration::from_millis(run_ms) || init => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                started_at: Some(started.clone()),
                finished_at: Some(started),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started),
            }),
            ..Default::default()
        },
    }
}

async fn handle(State(fake): State<FakePlugin>, method: Method, uri: Uri, body: Bytes) -> Response {
    match (method.as_str(), uri.path()) {
        ("POST", "/create") => {
            let Ok(data) = serde_json::from_slice::<RetrievedPodData>(&body) else {
                return (StatusCode::BAD_REQUEST, "bad create").into_response();
            };
            let delay = fake.state.lock().expect("lock").create_delay;
            tokio::time::sleep(delay).await;
            let uid = data.pod.metadata.uid.clone().unwrap_or_default();
            let mut st = fake.state.lock().expect("lock");
            *st.creates.entry(uid.clone()).or_default() += 1;
            st.pods.entry(uid.clone()).or_insert((
                data.pod,
                Instant::now(),
                jiff::Timestamp::now(),
            ));
            axum::Json(CreateStruct {
                pod_uid: uid.clone(),
                pod_jid: format!("job-{uid}"),
            })
            .into_response()
        }
        ("POST", "/delete") => {
            let Ok(pod) = serde_json::from_slice::<Pod>(&body) else {
                return (StatusCode::BAD_REQUEST, "bad delete").into_response();
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let mut st = fake.state.lock().expect("lock");
            st.pods.remove(&uid);
            *st.deletes.entry(uid).or_default() += 1;
            "Pod deleted".into_response()
        }
        ("GET", "/status") => {
            let pods: Vec<Pod> = serde_json::from_slice(&body).unwrap_or_default();
            let st = fake.state.lock().expect("lock");
            let out: Vec<PodStatus> = pods
                .iter()
                .filter_map(|p| {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    let (remote, at, born) = st.pods.get(&uid)?;
                    let age = at.elapsed();
                    let spec = remote.spec.clone().unwrap_or_default();
                    let cs =
                        |c: &k8s_openapi::api::core::v1::Container, init: bool| ContainerStatus {
                            name: c.name.clone(),
                            state: Some(state_for(remote, age, *born, init)),
                            image: c.image.clone().unwrap_or_default(),
                            ..Default::default()
                        };
                    Some(PodStatus {
                        name: p.metadata.name.clone().unwrap_or_default(),
                        uid: uid.clone(),
                        namespace: p.metadata.namespace.clone().unwrap_or_default(),
                        jid: format!("job-{uid}"),
                        containers: spec.containers.iter().map(|c| cs(c, false)).collect(),
                        init_containers: spec
                            .init_containers
                            .iter()
                            .flatten()
                            .map(|c| cs(c, true))
                            .collect(),
                    })
                })
                .collect();
            axum::Json(out).into_response()
        }
        ("GET", "/getLogs") => {
            let Ok(req) = serde_json::from_slice::<LogStruct>(&body) else {
                return (StatusCode::BAD_REQUEST, "bad logs").into_response();
            };
            if req.opts.follow {
                let name = req.container_name.clone();
                let s = futures::stream::unfold(0u32, move |i| {
                    let name = name.clone();
                    async move {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        (i < 5).then(|| {
                            (
                                Ok::<_, std::io::Error>(Bytes::from(format!("{name} line {i}\n"))),
                                i + 1,
                            )
                        })
                    }
                });
                return Response::new(Body::from_stream(s));
            }
            format!(
                "hello from {} (tail {})\n",
                req.container_name, req.opts.tail
            )
            .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no such route").into_response(),
    }
}

impl FakePlugin {
    pub fn router(&self) -> Router {
        Router::new().fallback(any(handle)).with_state(self.clone())
    }

    /// Serve on `addr` (port 0 for any) until the returned handle is aborted.
    pub async fn serve(&self, addr: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake plugin");
        let bound = l.local_addr().expect("addr");
        let app = self.router();
        let h = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        (bound, h)
    }

    pub fn creates(&self) -> HashMap<String, u32> {
        self.state.lock().expect("lock").creates.clone()
    }

    pub fn remote_pods(&self) -> usize {
        self.state.lock().expect("lock").pods.len()
    }
}
