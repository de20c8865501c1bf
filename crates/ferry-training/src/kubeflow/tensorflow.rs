//! The TFJob framework: `TF_CONFIG` and the success policy, as the training operator v1.9
//! (`pkg/controller.v1/tensorflow`) documents them.
//!
//! - Every replica of a distributed job (more than one replica in all) gets `TF_CONFIG` in its
//!   `tensorflow` container: `{"cluster": {<type>: ["<job>-<type>-<i>.<ns>.svc:<port>", ...]},
//!   "task": {"type": <type>, "index": <i>}, "environment": "cloud"}`, types lower case, the port
//!   the one named `tfjob-port` in that type's template (2222 when none).
//!   `CUSTOM_CLUSTER_DOMAIN` in the controller's environment is appended to each name.
//!   `enableDynamicWorker: true` gives the sparse form: a PS sees only itself, a worker the PS
//!   list and itself (`{"worker": {"<i>": addr}}`).
//! - Success: with a Chief (or Master) the job succeeds when it does; otherwise when worker 0
//!   has succeeded, or, with `successPolicy: AllWorkers`, when every worker has.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use serde_json::{Value, json};

use super::Framework;
use super::types::{JobView, ReplicaPhases, ReplicaSpec, RestartPolicy};

/// TFJob.
#[derive(Debug, Clone, Copy, Default)]
pub struct TensorFlow;

/// The replica types a TFJob may have.
pub const REPLICA_TYPES: [&str; 5] = ["Chief", "Master", "PS", "Worker", "Evaluator"];

/// `successPolicy: AllWorkers`.
pub const SUCCESS_POLICY_ALL_WORKERS: &str = "AllWorkers";

/// The environment variable that names an extra cluster domain for `TF_CONFIG`'s addresses.
pub const CUSTOM_CLUSTER_DOMAIN_ENV: &str = "CUSTOM_CLUSTER_DOMAIN";

const CONTAINER: &str = "tensorflow";
const PORT_NAME: &str = "tfjob-port";
const DEFAULT_PORT: i32 = 2222;

/// The port replicas of `spec` listen on: the `tfjob-port` of its `tensorflow` container (or
/// its first container), else 2222.
pub fn replica_port(spec: &ReplicaSpec) -> i32 {
    let containers = spec
        .template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let container = containers
        .iter()
        .find(|c| c.name == CONTAINER)
        .or(containers.first());
    container
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(PORT_NAME)))
        .map(|p| p.container_port)
        .unwrap_or(DEFAULT_PORT)
}

/// Whether the job is distributed (more than one replica in all): a single replica gets no
/// `TF_CONFIG`, as upstream.
pub fn is_distributed(job: &JobView) -> bool {
    let total: i32 = job.replica_specs.keys().map(|t| job.replicas(t)).sum();
    total != 1
}

/// The cluster spec: each replica type, lower case, to its replicas' addresses in index order.
pub fn cluster_spec(job: &JobView, cluster_domain: Option<&str>) -> BTreeMap<String, Vec<String>> {
    job.replica_specs
        .iter()
        .map(|(rtype, spec)| {
            let rt = rtype.to_lowercase();
            let port = replica_port(spec);
            let addrs = (0..job.replicas(rtype))
                .map(|i| {
                    let mut host = format!("{}-{rt}-{i}.{}.svc", job.name, job.namespace);
                    if let Some(domain) = cluster_domain.filter(|d| !d.is_empty()) {
                        host.push('.');
                        host.push_str(domain);
                    }
                    format!("{host}:{port}")
                })
                .collect();
            (rt, addrs)
        })
        .collect()
}

/// `TF_CONFIG` for replica `rtype` (as written in the spec) and `index`.
pub fn tf_config(job: &JobView, rtype: &str, index: i32, cluster_domain: Option<&str>) -> Value {
    let cluster = cluster_spec(job, cluster_domain);
    let rt = rtype.to_lowercase();
    let task = json!({"type": rt, "index": index});
    let dynamic = job
        .spec
        .get("enableDynamicWorker")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !dynamic {
        return json!({"cluster": cluster, "task": task, "environment": "cloud"});
    }
    let own = |t: &str| {
        cluster
            .get(t)
            .and_then(|a| a.get(usize::try_from(index).ok()?))
            .cloned()
    };
    let (ps, worker) = match rt.as_str() {
        "ps" => (own("ps").into_iter().collect(), BTreeMap::new()),
        "worker" => (
            cluster.get("ps").cloned().unwrap_or_default(),
            own("worker")
                .map(|a| BTreeMap::from([(index.to_string(), a)]))
                .unwrap_or_default(),
        ),
        _ => (Vec::new(), BTreeMap::new()),
    };
    json!({"cluster": {"worker": worker, "ps": ps}, "task": task})
}

fn has_chief(job: &JobView) -> Option<&'static str> {
    ["Chief", "Master"]
        .into_iter()
        .find(|t| job.replica_specs.contains_key(*t))
}

fn all_succeeded(phases: &ReplicaPhases, rtype: &str, replicas: i32) -> bool {
    let Some(p) = phases.get(rtype) else {
        return replicas == 0;
    };
    (0..usize::try_from(replicas).unwrap_or(0))
        .all(|i| p.get(i).and_then(|x| x.as_deref()) == Some("Succeeded"))
}

impl Framework for TensorFlow {
    fn kind(&self) -> &'static str {
        "TFJob"
    }
    fn plural(&self) -> &'static str {
        "tfjobs"
    }
    fn replica_specs_field(&self) -> &'static str {
        "tfReplicaSpecs"
    }
    fn default_container(&self) -> &'static str {
        CONTAINER
    }
    fn default_port_name(&self) -> &'static str {
        PORT_NAME
    }
    fn default_port(&self) -> i32 {
        DEFAULT_PORT
    }
    fn default_restart_policy(&self) -> RestartPolicy {
        RestartPolicy::Never
    }
    fn master_type(&self) -> Option<&'static str> {
        Some("Chief")
    }
    fn validate(&self, job: &JobView) -> Result<(), String> {
        if job.replica_specs.is_empty() {
            return Err("spec.tfReplicaSpecs: Required value: at least one replica type".into());
        }
        for (rtype, spec) in &job.replica_specs {
            if !REPLICA_TYPES.contains(&rtype.as_str()) {
                return Err(format!(
                    "spec.tfReplicaSpecs[{rtype}]: Unsupported value: {rtype:?}: supported values: {}",
                    REPLICA_TYPES.map(|t| format!("{t:?}")).join(", ")
                ));
            }
            let containers = spec.template.spec.as_ref().map(|s| s.containers.len());
            if containers.unwrap_or(0) == 0 {
                return Err(format!(
                    "spec.tfReplicaSpecs[{rtype}].template.spec.containers: Required value"
                ));
            }
            if spec.replicas.is_some_and(|r| r < 0) {
                return Err(format!(
                    "spec.tfReplicaSpecs[{rtype}].replicas: Invalid value: must be >= 0"
                ));
            }
        }
        if job.replica_specs.contains_key("Chief") && job.replica_specs.contains_key("Master") {
            return Err(
                "spec.tfReplicaSpecs: Invalid value: a TFJob has a Chief or a Master, not both"
                    .into(),
            );
        }
        for t in ["Chief", "Master", "Evaluator"] {
            if job.replica_specs.contains_key(t) && job.replicas(t) > 1 {
                return Err(format!(
                    "spec.tfReplicaSpecs[{t}].replicas: Invalid value: {}: must be 1 or less",
                    job.replicas(t)
                ));
            }
        }
        match job.spec.get("successPolicy") {
            None | Some(Value::Null) => {}
            Some(Value::String(p)) if p.is_empty() || p == SUCCESS_POLICY_ALL_WORKERS => {}
            Some(other) => {
                return Err(format!(
                    "spec.successPolicy: Unsupported value: {other}: supported values: \"\", \"AllWorkers\""
                ));
            }
        }
        Ok(())
    }
    fn env(&self, job: &JobView, rtype: &str, index: i32) -> Vec<EnvVar> {
        if !is_distributed(job) {
            return Vec::new();
        }
        let domain = std::env::var(CUSTOM_CLUSTER_DOMAIN_ENV).ok();
        vec![EnvVar {
            name: "TF_CONFIG".into(),
            value: Some(tf_config(job, rtype, index, domain.as_deref()).to_string()),
            ..Default::default()
        }]
    }
    fn succeeded(&self, job: &JobView, phases: &ReplicaPhases) -> bool {
        if let Some(chief) = has_chief(job) {
            return all_succeeded(phases, chief, job.replicas(chief));
        }
        let workers = job.replicas("Worker");
        if workers == 0 {
            return false;
        }
        let all = job.spec.get("successPolicy").and_then(Value::as_str)
            == Some(SUCCESS_POLICY_ALL_WORKERS);
        if all {
            all_succeeded(phases, "Worker", workers)
        } else {
            all_succeeded(phases, "Worker", 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> JobView {
        let replica_specs: BTreeMap<String, ReplicaSpec> =
            serde_json::from_value(spec["tfReplicaSpecs"].clone()).unwrap();
        JobView {
            name: "dist-mnist".into(),
            namespace: "team".into(),
            uid: "u".into(),
            replica_specs,
            run_policy: Default::default(),
            spec,
        }
    }

    fn template(port: Option<i32>) -> Value {
        let mut c = json!({"name": "tensorflow", "image": "x"});
        if let Some(p) = port {
            c["ports"] = json!([{"name": "tfjob-port", "containerPort": p}]);
        }
        json!({"spec": {"containers": [c]}})
    }

    fn ps_workers() -> JobView {
        job(json!({"tfReplicaSpecs": {
            "PS": {"replicas": 1, "template": template(Some(3333))},
            "Worker": {"replicas": 2, "template": template(None)},
        }}))
    }

    fn phases(entries: &[(&str, &[Option<&str>])]) -> ReplicaPhases {
        entries
            .iter()
            .map(|(t, p)| {
                (
                    t.to_string(),
                    p.iter().map(|x| x.map(String::from)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn tf_config_names_every_replica_by_its_service() {
        let j = ps_workers();
        let env = TensorFlow.env(&j, "Worker", 1);
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].name, "TF_CONFIG");
        let cfg: Value = serde_json::from_str(env[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(
            cfg,
            json!({
                "cluster": {
                    "ps": ["dist-mnist-ps-0.team.svc:3333"],
                    "worker": ["dist-mnist-worker-0.team.svc:2222", "dist-mnist-worker-1.team.svc:2222"],
                },
                "task": {"type": "worker", "index": 1},
                "environment": "cloud",
            })
        );
    }

    #[test]
    fn custom_cluster_domain_is_appended() {
        let cfg = tf_config(&ps_workers(), "PS", 0, Some("cluster.local"));
        assert_eq!(
            cfg["cluster"]["ps"][0],
            "dist-mnist-ps-0.team.svc.cluster.local:3333"
        );
        assert_eq!(cfg["task"], json!({"type": "ps", "index": 0}));
    }

    #[test]
    fn single_replica_gets_no_tf_config() {
        let j = job(json!({"tfReplicaSpecs": {"Worker": {"template": template(None)}}}));
        assert!(TensorFlow.env(&j, "Worker", 0).is_empty());
    }

    #[test]
    fn dynamic_worker_config_is_sparse() {
        let mut j = ps_workers();
        j.spec["enableDynamicWorker"] = json!(true);
        let w = tf_config(&j, "Worker", 1, None);
        assert_eq!(
            w["cluster"],
            json!({"ps": ["dist-mnist-ps-0.team.svc:3333"], "worker": {"1": "dist-mnist-worker-1.team.svc:2222"}})
        );
        let p = tf_config(&j, "PS", 0, None);
        assert_eq!(
            p["cluster"],
            json!({"ps": ["dist-mnist-ps-0.team.svc:3333"], "worker": {}})
        );
        assert!(p.get("environment").is_none());
    }

    #[test]
    fn default_success_is_worker_zero() {
        let j = ps_workers();
        let ph = phases(&[
            ("PS", &[Some("Running")]),
            ("Worker", &[Some("Succeeded"), Some("Running")]),
        ]);
        assert!(TensorFlow.succeeded(&j, &ph));
        let ph = phases(&[
            ("PS", &[Some("Running")]),
            ("Worker", &[Some("Running"), Some("Succeeded")]),
        ]);
        assert!(!TensorFlow.succeeded(&j, &ph));
    }

    #[test]
    fn all_workers_policy_waits_for_every_worker() {
        let mut j = ps_workers();
        j.spec["successPolicy"] = json!("AllWorkers");
        let ph = phases(&[
            ("PS", &[Some("Running")]),
            ("Worker", &[Some("Succeeded"), Some("Running")]),
        ]);
        assert!(!TensorFlow.succeeded(&j, &ph));
        let ph = phases(&[
            ("PS", &[Some("Running")]),
            ("Worker", &[Some("Succeeded"), Some("Succeeded")]),
        ]);
        assert!(TensorFlow.succeeded(&j, &ph));
    }

    #[test]
    fn chief_decides_when_present() {
        let j = job(json!({"tfReplicaSpecs": {
            "Chief": {"template": template(None)},
            "Worker": {"replicas": 2, "template": template(None)},
        }}));
        let ph = phases(&[
            ("Chief", &[Some("Running")]),
            ("Worker", &[Some("Succeeded"), Some("Succeeded")]),
        ]);
        assert!(!TensorFlow.succeeded(&j, &ph));
        let ph = phases(&[
            ("Chief", &[Some("Succeeded")]),
            ("Worker", &[Some("Running"), None]),
        ]);
        assert!(TensorFlow.succeeded(&j, &ph));
    }

    #[test]
    fn bad_specs_are_rejected_with_the_field() {
        let e = TensorFlow
            .validate(&job(
                json!({"tfReplicaSpecs": {"Boss": {"template": template(None)}}}),
            ))
            .unwrap_err();
        assert!(
            e.contains("spec.tfReplicaSpecs[Boss]") && e.contains("\"Worker\""),
            "{e}"
        );
        let mut j = ps_workers();
        j.spec["successPolicy"] = json!("Everyone");
        let e = TensorFlow.validate(&j).unwrap_err();
        assert!(e.contains("spec.successPolicy"), "{e}");
        let e = TensorFlow
            .validate(&job(
                json!({"tfReplicaSpecs": {"Chief": {"replicas": 2, "template": template(None)}}}),
            ))
            .unwrap_err();
        assert!(e.contains("Chief") && e.contains("1 or less"), "{e}");
        let e = TensorFlow
            .validate(&job(
                json!({"tfReplicaSpecs": {"Worker": {"template": {"spec": {"containers": []}}}}}),
            ))
            .unwrap_err();
        assert!(e.contains("containers: Required"), "{e}");
        assert!(TensorFlow.validate(&ps_workers()).is_ok());
    }
}
