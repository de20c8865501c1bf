//! Which runtime a pod gets.
//!
//! - `spec.runtimeClassName` names a RuntimeClass (`node.k8s.io/v1`): its `handler` `host`
//!   is Ferry's host-process runtime; any other handler is a containerd runtime handler
//!   (`runc` is containerd's runc runtime), which needs the agent to have a CRI endpoint. A
//!   RuntimeClass that does not exist fails the pod (`RuntimeClass "x" not found`, as the
//!   kubelet says).
//! - Without a runtimeClassName, a pod whose containers all name an image runs under
//!   containerd when the agent has a CRI endpoint, else on the host runtime.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::pod::status::PodFailure;

/// The RuntimeClass handler of the host-process runtime.
pub const HOST_HANDLER: &str = "host";

/// The runtime chosen for a pod (recorded in its `pod.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Choice {
    /// The host-process runtime.
    Host,
    /// containerd, with this runtime handler (`""`: containerd's default runtime).
    Containerd {
        /// The CRI runtime handler.
        handler: String,
    },
}

/// Picks the runtime of `pod`; `cri` says whether the agent has a CRI endpoint.
pub async fn choose(client: &kube::Client, pod: &Pod, cri: bool) -> Result<Choice, PodFailure> {
    let spec = pod.spec.as_ref();
    let class = spec
        .and_then(|s| s.runtime_class_name.clone())
        .filter(|n| !n.is_empty());
    let Some(class) = class else {
        let all_images = spec.is_some_and(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .all(|c| c.image.as_deref().is_some_and(|i| !i.is_empty()))
        });
        return Ok(if cri && all_images {
            Choice::Containerd {
                handler: String::new(),
            }
        } else {
            Choice::Host
        });
    };
    let api: Api<RuntimeClass> = Api::all(client.clone());
    let found = match api.get_opt(&class).await {
        Ok(found) => found,
        // A server without the RuntimeClass API has none of them.
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => {
            return Err(PodFailure {
                reason: "RuntimeClassUnavailable".into(),
                message: format!("cannot read RuntimeClass {class:?}: {e}"),
            });
        }
    };
    let Some(rc) = found else {
        return Err(PodFailure {
            reason: "RuntimeClassNotFound".into(),
            message: format!("RuntimeClass {class:?} not found"),
        });
    };
    from_handler(&class, &rc.handler, cri)
}

/// The runtime of RuntimeClass `class` with handler `handler`.
pub fn from_handler(class: &str, handler: &str, cri: bool) -> Result<Choice, PodFailure> {
    if handler == HOST_HANDLER {
        return Ok(Choice::Host);
    }
    if !cri {
        return Err(PodFailure {
            reason: "RuntimeHandlerNotFound".into(),
            message: format!(
                "RuntimeClass {class:?} names handler {handler:?}, but this node has no container runtime (containerd) configured; only handler \"host\" is available"
            ),
        });
    }
    Ok(Choice::Containerd {
        handler: handler.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_map_to_runtimes() {
        assert_eq!(from_handler("host", "host", true).unwrap(), Choice::Host);
        assert_eq!(
            from_handler("runc", "runc", true).unwrap(),
            Choice::Containerd {
                handler: "runc".into()
            }
        );
        let e = from_handler("runc", "runc", false).unwrap_err();
        assert_eq!(e.reason, "RuntimeHandlerNotFound");
        assert!(e.message.contains("containerd"), "{}", e.message);
    }
}
