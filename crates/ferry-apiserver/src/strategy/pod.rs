//! Pods: defaults (priority, QoS class, pull policies), validation, graceful deletion through
//! the node agent, and the `kubectl get pods` columns.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column, object_field, or_none, str_at};
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation;

/// Longest grace period a deletion honours (100 years): beyond it the deadline would not be
/// a time clients can read.
pub const MAX_GRACE_SECONDS: i64 = 100 * 365 * 24 * 3600;

/// The strategy of pods.
pub struct Pods;

impl Strategy for Pods {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("", "v1", "pods", "Pod", true, &["po"])
                .with_status()
                .with_subresources(&["binding", "eviction", "log"])
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::Pod>(info, object)
    }

    fn prepare_for_create(
        &self,
        service: &Service,
        _info: &ResourceInfo,
        body: &mut Value,
    ) -> ApiResult<()> {
        let priority = {
            let class = body["spec"]["priorityClassName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if class.is_empty() {
                default_priority(service)
            } else {
                let pc_info = service
                    .registry
                    .get("scheduling.k8s.io", "v1", "priorityclasses");
                let pc = pc_info.and_then(|i| service.store.get(&Service::key(&i, None, &class)));
                match pc {
                    Some(pc) => Some(pc.value["value"].as_i64().unwrap_or(0)),
                    None if class == "system-node-critical" => Some(2_000_001_000),
                    None if class == "system-cluster-critical" => Some(2_000_000_000),
                    None => {
                        return Err(ApiError::forbidden(format!(
                            "pods \"{}\" is forbidden: no PriorityClass with name {class} was found",
                            meta::name(body)
                        )));
                    }
                }
            }
        };
        let spec = object_field(body, "spec");
        spec.entry("restartPolicy").or_insert(json!("Always"));
        spec.entry("schedulerName")
            .or_insert(json!(ferry_api::DEFAULT_SCHEDULER_NAME));
        spec.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
        spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
        spec.entry("enableServiceLinks").or_insert(json!(true));
        if let Some(p) = priority {
            spec.insert("priority".into(), json!(p));
        }
        for list in ["containers", "initContainers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(c) = c.as_object_mut() {
                    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                    let tag_latest = !image.contains(':') || image.ends_with(":latest");
                    c.entry("imagePullPolicy").or_insert(json!(if tag_latest {
                        "Always"
                    } else {
                        "IfNotPresent"
                    }));
                    c.entry("terminationMessagePath")
                        .or_insert(json!("/dev/termination-log"));
                    c.entry("terminationMessagePolicy").or_insert(json!("File"));
                }
            }
        }
        super::serviceaccount::admit_pod(service, body);
        let qos = qos_class(&body["spec"]);
        body["status"] = json!({"phase": "Pending", "qosClass": qos});
        Ok(())
    }

    fn validate(&self, object: &Value, causes: &mut Vec<FieldCause>) {
        validation::validate_pod(object, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        validation::validate_pod_update(old, new, causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            Column::new(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            Column::new(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted.",
            ),
            age_column(),
            Column::new("IP", "string", 1, "IP address allocated to the pod."),
            Column::new(
                "Node",
                "string",
                1,
                "Name of the node the pod is assigned to.",
            ),
            Column::new(
                "Nominated Node",
                "string",
                1,
                "Node the scheduler nominated for this pod.",
            ),
            Column::new(
                "Readiness Gates",
                "string",
                1,
                "Readiness gates of the pod.",
            ),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let statuses = o["status"]["containerStatuses"].as_array();
        let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
        let ready = statuses
            .into_iter()
            .flatten()
            .filter(|s| s["ready"].as_bool() == Some(true))
            .count();
        let restarts: i64 = statuses
            .into_iter()
            .flatten()
            .map(|s| s["restartCount"].as_i64().unwrap_or(0))
            .fold(0, i64::saturating_add);
        let mut status = str_at(o, "/status/phase").to_string();
        if let Some(reason) = o["status"]["reason"].as_str() {
            status = reason.to_string();
        }
        // A waiting or terminated container's reason says more than the phase.
        for s in statuses.into_iter().flatten() {
            if let Some(r) = s.pointer("/state/waiting/reason").and_then(Value::as_str) {
                status = r.to_string();
            } else if let Some(r) = s
                .pointer("/state/terminated/reason")
                .and_then(Value::as_str)
            {
                status = r.to_string();
            }
        }
        if meta::is_deleting(o) {
            status = "Terminating".into();
        }
        vec![
            json!(meta::name(o)),
            json!(format!("{ready}/{total}")),
            json!(status),
            json!(restarts.to_string()),
            age(o),
            json!(or_none(str_at(o, "/status/podIP"))),
            json!(or_none(str_at(o, "/spec/nodeName"))),
            json!(or_none(str_at(o, "/status/nominatedNodeName"))),
            json!("<none>"),
        ]
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
    }

    /// A pod on a node is stopped by its node agent within the grace period; a pod that is
    /// finished or was never scheduled goes at once.
    fn deletion_grace(&self, object: &Value, requested: Option<i64>) -> i64 {
        let terminal = matches!(
            object["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        let unbound = object["spec"]["nodeName"]
            .as_str()
            .is_none_or(str::is_empty);
        if terminal || unbound {
            return 0;
        }
        requested
            .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .clamp(0, MAX_GRACE_SECONDS)
    }

    fn awaits_termination(&self, _object: &Value, grace: i64) -> bool {
        grace > 0
    }
}

/// The value of the PriorityClass marked `globalDefault`, if any.
fn default_priority(service: &Service) -> Option<i64> {
    let info = service
        .registry
        .get("scheduling.k8s.io", "v1", "priorityclasses")?;
    let page = service
        .store
        .list(&info.storage_resource(), None, None, 0, |v| {
            v["globalDefault"] == json!(true)
        });
    page.items
        .first()
        .map(|pc| pc.value["value"].as_i64().unwrap_or(0))
}

/// The QoS class of a pod spec (Guaranteed, Burstable or BestEffort).
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
    {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let rq = req.get(r).or(lim.get(r));
            let lm = lim.get(r);
            if rq.is_some() || lm.is_some() {
                any = true;
            }
            if lm.is_none() || rq != lm {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}
