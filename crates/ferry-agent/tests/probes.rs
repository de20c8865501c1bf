//! Probes across an agent restart: a ready container stays ready (its condition keeps its
//! transition time), and the new agent's probes still restart an unhealthy container.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, container_status, phase};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

fn ready_since(p: &Pod) -> Option<(String, String)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        c.status.clone(),
        serde_json::to_string(&c.last_transition_time).ok()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_resume_after_an_agent_restart() {
    let c = cluster().await;
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!(
        "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\", {port})); s.listen(); time.sleep(600)"
    );
    let agent = c.agent().await;
    c.create_pod(json!({
        "metadata": {"name": "probed"},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
            "name": "c", "image": "x", "workingDir": work.display().to_string(),
            "command": ["sh", "-c", "touch healthy; exec python3 -c \"$0\"", listen],
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
            "livenessProbe": {"exec": {"command": ["test", "-f", "healthy"]}, "periodSeconds": 1, "failureThreshold": 1}
        }]}
    }))
    .await;
    let p = c
        .wait_pod("probed", "ready", |p| {
            container_status(p, "c").is_some_and(|s| s.ready)
        })
        .await;
    let before = ready_since(&p).unwrap();
    assert_eq!(before.0, "True");

    // The agent crashes and comes back: the container stays ready throughout.
    drop(agent);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let agent = c.agent().await;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let p = c.pods().get("probed").await.unwrap();
        assert_eq!(
            ready_since(&p).as_ref(),
            Some(&before),
            "Ready did not flap"
        );
        let s = container_status(&p, "c").unwrap();
        assert!(s.ready && s.restart_count == 0, "{s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The new agent probes: an unhealthy container is restarted (and the new attempt, which
    // makes itself healthy again, comes back ready).
    std::fs::remove_file(work.join("healthy")).unwrap();
    let p = c
        .wait_pod("probed", "restarted and ready again", |p| {
            container_status(p, "c").is_some_and(|s| s.restart_count == 1 && s.ready)
        })
        .await;
    assert_eq!(phase(&p), "Running");
    let after = ready_since(&p).unwrap();
    assert_eq!(after.0, "True");
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    let reasons: Vec<(String, String)> = list
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("probed"))
        .map(|e| {
            (
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(r, m)| r == "Killing"
                && m == "Container c failed liveness probe, will be restarted"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed: ")),
        "{reasons:?}"
    );
    c.pods()
        .delete("probed", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_gone("probed").await;
    agent.stop().await;
}
