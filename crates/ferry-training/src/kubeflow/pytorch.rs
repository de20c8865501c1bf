//! The PyTorchJob framework: the environment the training operator gives PyTorch's
//! processes (plain `torch.distributed` and torchrun, elastic too) and its success rule.
//!
//! With a `Master`, every pod gets `MASTER_ADDR=<job>-master-0`, `MASTER_PORT`,
//! `WORLD_SIZE` (replicas x `nprocPerNode` when that is an integer), `RANK` (the master 0,
//! worker `i` is `i + 1`) and their torchrun twins (`PET_MASTER_ADDR`, `PET_MASTER_PORT`,
//! `PET_NODE_RANK`); `PET_NNODES` is the number of replicas and `PET_NPROC_PER_NODE` the
//! job's `nprocPerNode` (`auto` by default, as the operator's defaulting sets it).
//!
//! With an `elasticPolicy`, `PET_NNODES` is `min:max`, `PET_RDZV_ENDPOINT`
//! `<rdzvHost or job-worker-0>:<rdzvPort or the worker port>`, `PET_RDZV_BACKEND` (c10d by
//! default), `PET_MAX_RESTARTS`, `PET_RDZV_ID`, `PET_RDZV_CONF` and `PET_STANDALONE` when
//! set. The job has `maxReplicas` Worker pods, each annotated with
//! [`SURPLUS_ORDER_ANNOTATION`] = index + 1; its PodGroup's `minMember` is the masters plus
//! `minReplicas`, so the scheduler starts it when the minimum fits and grows the rest into
//! idle capacity; a worker it takes back is recreated and waits (see the contract in
//! [`Framework::elastic_type`]).

use ferry_api::scheduling::SURPLUS_ORDER_ANNOTATION;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use serde::Deserialize;

use super::types::{JobView, ReplicaPhases, RestartPolicy};
use super::{Framework, replica_name, replica_port};

/// The master replica type.
pub const MASTER: &str = "Master";
/// The worker replica type.
pub const WORKER: &str = "Worker";

/// PyTorchJob.
#[derive(Debug, Clone, Copy, Default)]
pub struct PyTorch;

/// `spec.elasticPolicy` of a PyTorchJob.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ElasticPolicy {
    /// The least number of workers.
    pub min_replicas: Option<i32>,
    /// The most workers.
    pub max_replicas: Option<i32>,
    /// `c10d`, `etcd` or `etcd-v2`.
    pub rdzv_backend: Option<String>,
    /// The rendezvous port (default: the worker port).
    pub rdzv_port: Option<i32>,
    /// The rendezvous host (default: `<job>-worker-0`).
    pub rdzv_host: Option<String>,
    /// The rendezvous id.
    #[serde(rename = "rdzvId")]
    pub rdzv_id: Option<String>,
    /// Extra rendezvous settings.
    pub rdzv_conf: Option<Vec<RdzvConf>>,
    /// torchrun's `--standalone`.
    pub standalone: Option<bool>,
    /// Processes per pod (deprecated upstream for `spec.nprocPerNode`).
    #[serde(rename = "nProcPerNode")]
    pub nproc_per_node: Option<i32>,
    /// torchrun's `--max-restarts`.
    pub max_restarts: Option<i32>,
    /// HPA metrics (upstream creates a HorizontalPodAutoscaler; Ferry's scheduler grows and
    /// shrinks the job instead, so this is refused).
    pub metrics: Option<serde_json::Value>,
}

/// One `rdzvConf` entry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RdzvConf {
    /// The key.
    #[serde(default)]
    pub key: String,
    /// The value.
    #[serde(default)]
    pub value: String,
}

/// The job's elastic policy, if it has one (`Err` when it does not decode).
pub fn elastic_policy(job: &JobView) -> Result<Option<ElasticPolicy>, String> {
    match job.spec.get("elasticPolicy") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| format!("spec.elasticPolicy: {e}")),
    }
}

fn nproc_per_node(job: &JobView) -> Option<String> {
    match job.spec.get("nprocPerNode") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

impl Framework for PyTorch {
    fn kind(&self) -> &'static str {
        "PyTorchJob"
    }
    fn plural(&self) -> &'static str {
        "pytorchjobs"
    }
    fn replica_specs_field(&self) -> &'static str {
        "pytorchReplicaSpecs"
    }
    fn default_container(&self) -> &'static str {
        "pytorch"
    }
    fn default_port_name(&self) -> &'static str {
        "pytorchjob-port"
    }
    fn default_port(&self) -> i32 {
        23456
    }
    fn default_restart_policy(&self) -> RestartPolicy {
        RestartPolicy::OnFailure
    }
    fn master_type(&self) -> Option<&'static str> {
        Some(MASTER)
    }

    fn validate(&self, job: &JobView) -> Result<(), String> {
        for rtype in job.replica_specs.keys() {
            if rtype != MASTER && rtype != WORKER {
                return Err(format!(
                    "spec.pytorchReplicaSpecs: Unsupported value: {rtype:?}: supported values: \"Master\", \"Worker\""
                ));
            }
        }
        if job.replica_specs.contains_key(MASTER) && job.replicas(MASTER) != 1 {
            return Err(
                "spec.pytorchReplicaSpecs[Master].replicas: Invalid value: must be 1".into(),
            );
        }
        if let Some(n) = nproc_per_node(job)
            && !matches!(n.as_str(), "auto" | "cpu" | "gpu")
            && n.parse::<u32>().map_or(true, |n| n == 0)
        {
            return Err(format!(
                "spec.nprocPerNode: Invalid value: {n:?}: must be \"auto\", \"cpu\", \"gpu\" or a positive integer"
            ));
        }
        let Some(ep) = elastic_policy(job)? else {
            return Ok(());
        };
        if !job.replica_specs.contains_key(WORKER) {
            return Err("spec.elasticPolicy: needs a Worker replica type".into());
        }
        let min = ep.min_replicas.unwrap_or(1);
        if min < 1 {
            return Err("spec.elasticPolicy.minReplicas: must be at least 1".into());
        }
        if let Some(max) = ep.max_replicas
            && max < min
        {
            return Err(format!(
                "spec.elasticPolicy.maxReplicas: Invalid value: {max}: must be at least minReplicas ({min})"
            ));
        }
        if let Some(b) = ep.rdzv_backend.as_deref()
            && !matches!(b, "c10d" | "etcd" | "etcd-v2")
        {
            return Err(format!(
                "spec.elasticPolicy.rdzvBackend: Unsupported value: {b:?}: supported values: \"c10d\", \"etcd\", \"etcd-v2\""
            ));
        }
        if ep.nproc_per_node.is_some() && job.spec.get("nprocPerNode").is_some() {
            return Err(
                "spec.elasticPolicy.nProcPerNode: must not be set together with spec.nprocPerNode"
                    .into(),
            );
        }
        if ep.metrics.is_some() {
            return Err("spec.elasticPolicy.metrics: not supported by Ferry: the scheduler grows the job into idle capacity between minReplicas and maxReplicas instead of an autoscaler".into());
        }
        Ok(())
    }

    fn env(&self, job: &JobView, rtype: &str, index: i32) -> Vec<EnvVar> {
        let mut env = vec![var("PYTHONUNBUFFERED", "1")];
        let elastic = elastic_policy(job).ok().flatten();
        let total: i32 = job.replica_specs.keys().map(|t| job.replicas(t)).sum();
        let nproc = nproc_per_node(job);
        if job.replica_specs.contains_key(MASTER) {
            let addr = replica_name(&job.name, MASTER, 0);
            let port = replica_port(self, job, MASTER).to_string();
            let per_node: i32 = nproc.as_deref().and_then(|n| n.parse().ok()).unwrap_or(1);
            let rank = if rtype == WORKER { index + 1 } else { index };
            env.extend([
                var("MASTER_PORT", port.clone()),
                var("PET_MASTER_PORT", port),
                var("MASTER_ADDR", addr.clone()),
                var("PET_MASTER_ADDR", addr),
                var("WORLD_SIZE", (total * per_node).to_string()),
                var("RANK", rank.to_string()),
                var("PET_NODE_RANK", rank.to_string()),
            ]);
        }
        let elastic_nproc = elastic.as_ref().and_then(|e| e.nproc_per_node);
        match (nproc, elastic_nproc) {
            (Some(n), _) => env.push(var("PET_NPROC_PER_NODE", n)),
            (None, None) => env.push(var("PET_NPROC_PER_NODE", "auto")),
            (None, Some(_)) => {}
        }
        let Some(ep) = elastic else {
            env.push(var("PET_NNODES", total.to_string()));
            return env;
        };
        let host = ep
            .rdzv_host
            .clone()
            .unwrap_or_else(|| replica_name(&job.name, WORKER, 0));
        let port = ep
            .rdzv_port
            .unwrap_or_else(|| replica_port(self, job, WORKER));
        env.push(var("PET_RDZV_ENDPOINT", format!("{host}:{port}")));
        env.push(var(
            "PET_RDZV_BACKEND",
            ep.rdzv_backend.clone().unwrap_or_else(|| "c10d".into()),
        ));
        let nnodes = match (ep.min_replicas, ep.max_replicas) {
            (None, None) => job.replicas(WORKER).to_string(),
            (min, max) => {
                let min = min.unwrap_or(1);
                format!("{min}:{}", max.unwrap_or(min))
            }
        };
        env.push(var("PET_NNODES", nnodes));
        if let Some(r) = ep.max_restarts {
            env.push(var("PET_MAX_RESTARTS", r.to_string()));
        }
        if let Some(n) = ep.nproc_per_node {
            env.push(var("PET_NPROC_PER_NODE", n.to_string()));
        }
        if let Some(id) = &ep.rdzv_id {
            env.push(var("PET_RDZV_ID", id.clone()));
        }
        if let Some(conf) = ep.rdzv_conf.as_ref().filter(|c| !c.is_empty()) {
            let value: Vec<String> = conf
                .iter()
                .map(|c| format!("{}={}", c.key, c.value))
                .collect();
            env.push(var("PET_RDZV_CONF", value.join(",")));
        }
        if ep.standalone == Some(true) {
            env.push(var("PET_STANDALONE", ""));
        }
        env
    }

    fn pod_count(&self, job: &JobView, rtype: &str) -> i32 {
        let replicas = job.replicas(rtype);
        if rtype != WORKER {
            return replicas;
        }
        match elastic_policy(job).ok().flatten() {
            Some(ep) => ep.max_replicas.unwrap_or(replicas),
            None => replicas,
        }
    }

    fn min_member(&self, job: &JobView) -> i32 {
        let masters = job.replicas(MASTER);
        match elastic_policy(job).ok().flatten() {
            Some(ep) => masters + ep.min_replicas.unwrap_or_else(|| job.replicas(WORKER)),
            None => masters + job.replicas(WORKER),
        }
    }

    fn elastic_type(&self, job: &JobView) -> Option<&'static str> {
        elastic_policy(job).ok().flatten().map(|_| WORKER)
    }

    fn is_surplus(&self, job: &JobView, rtype: &str, index: i32) -> bool {
        rtype == WORKER
            && elastic_policy(job)
                .ok()
                .flatten()
                .is_some_and(|ep| index >= ep.min_replicas.unwrap_or_else(|| job.replicas(WORKER)))
    }

    fn decorate_pod(&self, job: &JobView, rtype: &str, index: i32, pod: &mut Pod) {
        if rtype == WORKER && self.elastic_type(job).is_some() {
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(SURPLUS_ORDER_ANNOTATION.into(), (index + 1).to_string());
        }
    }

    fn succeeded(&self, job: &JobView, phases: &ReplicaPhases) -> bool {
        let done = |p: &Option<String>| p.as_deref() == Some("Succeeded");
        if job.replica_specs.contains_key(MASTER) {
            return phases.get(MASTER).and_then(|v| v.first()).is_some_and(done);
        }
        let workers = phases.get(WORKER).map(Vec::as_slice).unwrap_or_default();
        if self.elastic_type(job).is_some() {
            workers.iter().any(done)
        } else {
            !workers.is_empty() && workers.iter().all(done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: serde_json::Value) -> JobView {
        let replica_specs =
            serde_json::from_value(spec["pytorchReplicaSpecs"].clone()).expect("replica specs");
        JobView {
            name: "mnist".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            replica_specs,
            run_policy: Default::default(),
            spec,
        }
    }

    fn replica(n: i32) -> serde_json::Value {
        serde_json::json!({"replicas": n, "template": {"spec": {"containers": [{"name": "pytorch"}]}}})
    }

    fn get(env: &[EnvVar], name: &str) -> Option<String> {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    #[test]
    fn master_and_workers_get_ranks_and_the_master_address() {
        let j = job(serde_json::json!({
            "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(3)}
        }));
        let w = PyTorch.env(&j, WORKER, 2);
        assert_eq!(get(&w, "MASTER_ADDR").as_deref(), Some("mnist-master-0"));
        assert_eq!(get(&w, "MASTER_PORT").as_deref(), Some("23456"));
        assert_eq!(get(&w, "WORLD_SIZE").as_deref(), Some("4"));
        assert_eq!(get(&w, "RANK").as_deref(), Some("3"));
        assert_eq!(get(&w, "PET_NNODES").as_deref(), Some("4"));
        assert_eq!(get(&w, "PET_NPROC_PER_NODE").as_deref(), Some("auto"));
        let m = PyTorch.env(&j, MASTER, 0);
        assert_eq!(get(&m, "RANK").as_deref(), Some("0"));
        assert_eq!(PyTorch.min_member(&j), 4);
    }

    #[test]
    fn elastic_jobs_get_rendezvous_settings_and_max_workers() {
        let j = job(serde_json::json!({
            "nprocPerNode": "1",
            "elasticPolicy": {"minReplicas": 2, "maxReplicas": 4, "maxRestarts": 3,
                "rdzvConf": [{"key": "timeout", "value": "30"}]},
            "pytorchReplicaSpecs": {"Worker": replica(2)}
        }));
        let w = PyTorch.env(&j, WORKER, 1);
        assert_eq!(get(&w, "PET_NNODES").as_deref(), Some("2:4"));
        assert_eq!(
            get(&w, "PET_RDZV_ENDPOINT").as_deref(),
            Some("mnist-worker-0:23456")
        );
        assert_eq!(get(&w, "PET_RDZV_BACKEND").as_deref(), Some("c10d"));
        assert_eq!(get(&w, "PET_MAX_RESTARTS").as_deref(), Some("3"));
        assert_eq!(get(&w, "PET_RDZV_CONF").as_deref(), Some("timeout=30"));
        assert_eq!(get(&w, "PET_NPROC_PER_NODE").as_deref(), Some("1"));
        assert_eq!(get(&w, "MASTER_ADDR"), None);
        assert_eq!(PyTorch.pod_count(&j, WORKER), 4);
        assert_eq!(PyTorch.min_member(&j), 2);
        let mut pod = Pod::default();
        PyTorch.decorate_pod(&j, WORKER, 3, &mut pod);
        assert_eq!(
            pod.metadata.annotations.unwrap()[SURPLUS_ORDER_ANNOTATION],
            "4"
        );
        // Workers 0 and 1 are the minimum (created first), 2 and 3 its surplus.
        let surplus: Vec<bool> = (0..4).map(|i| PyTorch.is_surplus(&j, WORKER, i)).collect();
        assert_eq!(surplus, [false, false, true, true]);
        assert!(!PyTorch.is_surplus(&j, MASTER, 0));
        let phases = ReplicaPhases::from([(
            WORKER.to_string(),
            vec![Some("Running".into()), Some("Succeeded".into()), None, None],
        )]);
        assert!(PyTorch.succeeded(&j, &phases));
    }

    #[test]
    fn bad_specs_are_refused_with_the_field() {
        let j = job(serde_json::json!({"pytorchReplicaSpecs": {"Chief": replica(1)}}));
        assert!(PyTorch.validate(&j).unwrap_err().contains("\"Chief\""));
        let j = job(serde_json::json!({"pytorchReplicaSpecs": {"Master": replica(2)}}));
        assert!(
            PyTorch
                .validate(&j)
                .unwrap_err()
                .contains("[Master].replicas")
        );
        let j = job(serde_json::json!({
            "elasticPolicy": {"minReplicas": 3, "maxReplicas": 2},
            "pytorchReplicaSpecs": {"Worker": replica(2)}
        }));
        assert!(PyTorch.validate(&j).unwrap_err().contains("maxReplicas"));
    }

    #[test]
    fn success_is_the_master_or_every_worker() {
        let j = job(serde_json::json!({
            "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(1)}
        }));
        let phases = ReplicaPhases::from([
            (MASTER.to_string(), vec![Some("Succeeded".into())]),
            (WORKER.to_string(), vec![Some("Running".into())]),
        ]);
        assert!(PyTorch.succeeded(&j, &phases));
        let j = job(serde_json::json!({"pytorchReplicaSpecs": {"Worker": replica(2)}}));
        let phases = ReplicaPhases::from([(
            WORKER.to_string(),
            vec![Some("Succeeded".into()), Some("Running".into())],
        )]);
        assert!(!PyTorch.succeeded(&j, &phases));
    }
}
