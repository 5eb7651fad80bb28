//! The second test's steps: a one-port range that a pod finds full, and the two
//! ways the port comes back (a delete, a pod that finished).

use std::time::{Duration, Instant};

use anyhow::ensure;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use offload_e2e::phase;

use crate::{
    ONLY_PORT, POD_START, is_offloaded, short_lived, tunnel_of, wait_for_port, wait_offloaded,
    web_pod,
};

/// The steps of the full range, in order.
pub async fn scenario(pods: &Api<Pod>, events: &Api<Event>, node: &str) -> anyhow::Result<()> {
    first_takes_the_only_port(pods, node).await?;
    second_finds_the_range_full(pods, events, node).await?;
    a_deleted_pods_port_goes_to_the_waiting_pod(pods).await?;
    a_finished_pods_port_goes_to_the_waiting_pod(pods, node).await?;
    for name in ["second", "third"] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    testbed::wait_for(
        "second and third to be gone",
        Duration::from_secs(60),
        || async {
            let second = pods.get_opt("second").await?;
            let third = pods.get_opt("third").await?;
            Ok((second.is_none() && third.is_none()).then_some(()))
        },
    )
    .await
}

async fn first_takes_the_only_port(pods: &Api<Pod>, node: &str) -> anyhow::Result<()> {
    pods.create(&PostParams::default(), &web_pod("first", node, None)?)
        .await?;
    let first = wait_offloaded(
        pods,
        "first",
        "first to be offloaded with the only gateway port",
        POD_START,
    )
    .await?;
    ensure!(
        tunnel_of(&first)?
            .ports
            .values()
            .eq([&offload_wire::tunnel::GatewayPort(ONLY_PORT)]),
        "first holds 40200"
    );
    Ok(())
}

/// `second` runs for a while and then ends (restartPolicy Never); it finds the range
/// full: a Warning event naming the range, a waiting status, not offloaded.
async fn second_finds_the_range_full(
    pods: &Api<Pod>,
    events: &Api<Event>,
    node: &str,
) -> anyhow::Result<()> {
    pods.create(
        &PostParams::default(),
        &short_lived(web_pod("second", node, None)?, "sleep 10"),
    )
    .await?;
    let note = testbed::wait_for(
        "a TunnelPortsExhausted event on second",
        Duration::from_secs(60),
        || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=second"))
                .await?;
            Ok(list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("TunnelPortsExhausted"))
                .and_then(|e| e.message))
        },
    )
    .await?;
    ensure!(
        note.contains("40200-40200"),
        "event names the range: {note}"
    );
    let waiting = wait_for_port(pods, "second", "second's waiting status").await?;
    println!("offload-tunnel: port range full: event {note:?}, status waiting {waiting}");
    let second = pods.get("second").await?;
    ensure!(
        !is_offloaded(&second),
        "second is not offloaded without a port"
    );
    Ok(())
}

/// The port comes back with the first pod's delete; second gets it right away
/// (woken by the release, not at its next backoff retry).
async fn a_deleted_pods_port_goes_to_the_waiting_pod(pods: &Api<Pod>) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(8)).await;
    pods.delete("first", &DeleteParams::default()).await?;
    let released = Instant::now();
    let second = wait_offloaded(
        pods,
        "second",
        "second to be offloaded once first released its port",
        Duration::from_secs(90),
    )
    .await?;
    let handed_over = released.elapsed();
    ensure!(
        tunnel_of(&second)?
            .ports
            .values()
            .eq([&offload_wire::tunnel::GatewayPort(ONLY_PORT)]),
        "second holds 40200"
    );
    // Its backoff had grown past 8 s; the wake-up makes it much less.
    ensure!(
        handed_over < Duration::from_secs(8),
        "second waited {handed_over:?} after the release"
    );
    println!(
        "offload-tunnel: the port released by a delete went to the waiting pod {handed_over:?} later"
    );
    Ok(())
}

/// A pod that finishes gives its ports back too.
async fn a_finished_pods_port_goes_to_the_waiting_pod(
    pods: &Api<Pod>,
    node: &str,
) -> anyhow::Result<()> {
    pods.create(&PostParams::default(), &web_pod("third", node, None)?)
        .await?;
    wait_for_port(pods, "third", "third to wait for a port").await?;
    let third = wait_offloaded(
        pods,
        "third",
        "second to finish and third to get its port",
        Duration::from_secs(120),
    )
    .await?;
    ensure!(
        phase(&pods.get("second").await?) == "Succeeded",
        "second finished"
    );
    ensure!(
        tunnel_of(&third)?
            .ports
            .values()
            .eq([&offload_wire::tunnel::GatewayPort(ONLY_PORT)]),
        "third holds 40200"
    );
    println!("offload-tunnel: the port of a pod that finished went to the waiting pod");
    Ok(())
}
