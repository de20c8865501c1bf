//! core/v1 Events about pods and the node, as the kubelet records them (`source.component`
//! `ferry-agent`, `source.host` the node). Repeats of the same reason and message for the same
//! object bump `count` and `lastTimestamp` instead of creating a new Event. Failing to record an
//! Event is logged and otherwise ignored.
//!
//! Events within one second keep the order they happened in: `eventTime` is a `MicroTime`
//! (`kubectl get events --sort-by=.eventTime`), and the name is `<object>.<nanoseconds in
//! hex>` as client-go names Events, so Events of one object whose `lastTimestamp` (whole
//! seconds, the key of `kubectl describe`) ties are listed in the order they were created.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

/// The `source.component` of the agent's Events.
pub const COMPONENT: &str = "ferry-agent";

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something needs attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// `Pod` or `Node`.
    pub kind: &'static str,
    /// Namespace of the object; for a Node, where its Events are stored (`default`).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (a Node's Events use the node name, as the kubelet does).
    pub uid: String,
    /// Part of the object, such as `spec.containers{main}`.
    pub field_path: Option<String>,
}

impl Subject {
    /// A pod, or one of its containers when `container` is given.
    pub fn pod(namespace: &str, name: &str, uid: &str, container: Option<&str>) -> Self {
        Subject {
            kind: "Pod",
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
        }
    }

    /// A node.
    pub fn node(name: &str) -> Self {
        Subject {
            kind: "Node",
            namespace: "default".into(),
            name: name.into(),
            uid: name.into(),
            field_path: None,
        }
    }
}

type Key = (Subject, String, String);

/// Records Events through the Kubernetes API.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    node: String,
    recent: Arc<Mutex<HashMap<Key, (String, i32)>>>,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("node", &self.node)
            .finish()
    }
}

impl EventRecorder {
    /// A recorder for the agent of `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        EventRecorder {
            client,
            node: node.into(),
            recent: Arc::default(),
        }
    }

    /// Records an Event (or counts a repeat of one).
    pub async fn record(&self, subject: &Subject, kind: EventType, reason: &str, message: &str) {
        match kind {
            EventType::Normal => tracing::info!(object = %subject.name, reason, "{message}"),
            EventType::Warning => tracing::warn!(object = %subject.name, reason, "{message}"),
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), &subject.namespace);
        let now = Timestamp::now();
        let key = (subject.clone(), reason.to_string(), message.to_string());
        let repeat = self.recent.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some((name, count)) = repeat {
            let patch = serde_json::json!({"count": count + 1, "lastTimestamp": Time(now)});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                if let Ok(mut m) = self.recent.lock() {
                    m.insert(key, (name, count + 1));
                }
                return;
            }
        }
        let name = format!("{}.{:x}", subject.name, now.as_nanosecond());
        let event = new_event(subject, kind, reason, message, &name, &self.node, now);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                if let Ok(mut m) = self.recent.lock() {
                    m.insert(key, (name, 1));
                }
            }
            Err(e) => tracing::debug!(error = %e, reason, "cannot record event"),
        }
    }

    /// Forgets the repeat counters of an object that is gone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.recent.lock() {
            m.retain(|(s, _, _), _| s.uid != uid);
        }
    }
}

/// A new Event that happened at `now` (its first occurrence).
fn new_event(
    subject: &Subject,
    kind: EventType,
    reason: &str,
    message: &str,
    name: &str,
    node: &str,
    now: Timestamp,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(subject.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some(subject.kind.into()),
            namespace: (subject.kind != "Node").then(|| subject.namespace.clone()),
            name: Some(subject.name.clone()),
            uid: Some(subject.uid.clone()),
            field_path: subject.field_path.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(kind.as_str().into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.into()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        event_time: Some(MicroTime(now)),
        action: Some(reason.into()),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_a_microsecond_event_time() {
        let pod = Subject::pod("default", "p", "uid-1", Some("main"));
        let t: Timestamp = "2026-01-02T03:04:05.123456789Z".parse().unwrap();
        let event = new_event(
            &pod,
            EventType::Normal,
            "Started",
            "started",
            "p.1",
            "n1",
            t,
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["eventTime"], "2026-01-02T03:04:05.123456Z");
        assert_eq!(json["reportingComponent"], COMPONENT);
        assert_eq!(json["reportingInstance"], "n1");
        assert_eq!(json["action"], "Started");
        assert_eq!(json["lastTimestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(json["count"], 1);
    }
}
