//! The `DefaultTolerationSeconds` admission plugin, as kube-apiserver's: a new pod that does
//! not tolerate the `node.kubernetes.io/not-ready` or `node.kubernetes.io/unreachable`
//! `NoExecute` taint gets a toleration of it for [`DEFAULT_SECONDS`] (kube's
//! `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`),
//! so the node lifecycle controller evicts it five minutes after its node is lost.

use serde_json::{Value, json};

use super::{Attributes, Operation, Plugin};
use crate::error::ApiResult;
use crate::service::Service;

/// The taint of a node whose agent reports `Ready=False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose heartbeats stopped.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// How long a pod tolerates either taint unless it says otherwise.
pub const DEFAULT_SECONDS: i64 = 300;

/// The DefaultTolerationSeconds admission plugin.
#[derive(Default)]
pub struct DefaultTolerationSeconds;

/// Whether a toleration already covers `key`'s `NoExecute` taint (kube's check: the key or
/// an empty key, the effect `NoExecute` or empty).
fn covers(toleration: &Value, key: &str) -> bool {
    let k = toleration["key"].as_str().unwrap_or_default();
    let effect = toleration["effect"].as_str().unwrap_or_default();
    (k == key || k.is_empty()) && (effect == "NoExecute" || effect.is_empty())
}

/// Adds the default tolerations a pod lacks.
pub fn add_defaults(pod: &mut Value) {
    let spec = crate::strategy::object_field(pod, "spec");
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if !tolerations.is_array() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in [NOT_READY, UNREACHABLE] {
        if !list.iter().any(|t| covers(t, key)) {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_SECONDS,
            }));
        }
    }
}

impl Plugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    fn mutate(
        &self,
        _service: &Service,
        a: &Attributes<'_>,
        object: &mut Value,
    ) -> ApiResult<Vec<String>> {
        if a.operation == Operation::Create
            && a.subresource.is_none()
            && a.info.group.is_empty()
            && a.info.plural == "pods"
        {
            add_defaults(object);
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gets_both_defaults_unless_it_tolerates_them() {
        let mut pod = json!({"spec": {"containers": []}});
        add_defaults(&mut pod);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["key"], NOT_READY);
        assert_eq!(t[1]["key"], UNREACHABLE);
        assert!(
            t.iter()
                .all(|t| t["tolerationSeconds"] == 300 && t["effect"] == "NoExecute")
        );

        // Its own toleration of unreachable (5 s) is kept; only not-ready is added.
        let mut pod = json!({"spec": {"tolerations": [
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5},
            {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]}});
        add_defaults(&mut pod);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0]["tolerationSeconds"], 5);
        assert_eq!(t[2]["key"], NOT_READY);

        // Tolerating everything (empty key, Exists) needs nothing more.
        let mut pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_defaults(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);
        // A NoSchedule toleration of the key does not count.
        let mut pod = json!({"spec": {"tolerations": [
            {"key": NOT_READY, "operator": "Exists", "effect": "NoSchedule"}
        ]}});
        add_defaults(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 3);
    }
}
