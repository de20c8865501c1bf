//! What the scheduler writes back for people: pod conditions and Events.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Marks a pod `PodScheduled=False` (reason `Unschedulable`) with `message`, and records a
/// `FailedScheduling` Event.
pub async fn unschedulable(
    client: &kube::Client,
    pod: &Pod,
    message: &str,
) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": now,
    }]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    event(client, pod, "Warning", "FailedScheduling", message).await;
    Ok(())
}

/// Records an Event about a pod (best effort: failures are only logged).
pub async fn event(client: &kube::Client, pod: &Pod, type_: &str, reason: &str, message: &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let now = chrono::Utc::now();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns,
            "uid": pod.metadata.uid, "resourceVersion": pod.metadata.resource_version,
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": ferry_api::SCHEDULER_NAME},
        "reportingComponent": ferry_api::SCHEDULER_NAME,
        "firstTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "lastTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "count": 1,
    });
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let event = match serde_json::from_value(event) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "could not build an Event");
            return;
        }
    };
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, "could not record an Event");
    }
}
