//! Kubeflow Trainer v2 (`trainer.kubeflow.org/v1alpha1`): a TrainJob runs as a JobSet (named
//! after it, owned by it) built from the JobSet template of the TrainingRuntime or
//! ClusterTrainingRuntime its `runtimeRef` names, as Trainer v2.3 does:
//! - the replicatedJob whose template carries `trainer.kubeflow.org/trainjob-ancestor-step:
//!   trainer` runs `numNodes` pods (the TrainJob's, else `mlPolicy.numNodes`), and its `node`
//!   container takes the TrainJob's `image`, `command`, `args`, `env` and `resourcesPerNode`;
//! - the torch ML policy adds torchrun's environment (`PET_NNODES`, `PET_NPROC_PER_NODE`
//!   (`numProcPerNode`, or from the GPUs or CPUs per node when `auto`), `PET_NODE_RANK` from
//!   the Job completion index, `PET_MASTER_ADDR=<trainjob>-node-0-0.<trainjob>`,
//!   `PET_MASTER_PORT=29400`) and the container port, also to `envInjection` targets;
//! - `runtimePatches` patch the template (labels, annotations, and the pod fields v2.3 allows);
//! - status: `jobsStatus` from the JobSet's replicatedJobsStatus, conditions Complete, Failed
//!   and Suspended from the JobSet's.
//!
//! Ferry ships the standard `torch-distributed` ClusterTrainingRuntime ([`RUNTIMES`]), which
//! `ferry up` installs. What Ferry does not implement (initializers, ML policies other than
//! torch, elastic torch) fails the TrainJob with a message naming it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};

use crate::{Error, jobset};

/// The API group.
pub const GROUP: &str = "trainer.kubeflow.org";
/// The served version.
pub const VERSION: &str = "v1alpha1";
/// The value of `spec.managedBy` this controller acts on (also when unset).
pub const CONTROLLER_NAME: &str = "trainer.kubeflow.org/trainjob-controller";
/// The label on a runtime's replicatedJob that runs the trainer.
pub const ANCESTOR_LABEL: &str = "trainer.kubeflow.org/trainjob-ancestor-step";
/// The trainer's container (and replicatedJob) name.
pub const NODE: &str = "node";
/// torchrun's rendezvous port on the first node.
pub const TRAINER_PORT: i32 = 29400;
/// The environment the torch policy owns; a TrainJob may not set it.
pub const TORCH_RESERVED_ENV: [&str; 5] = [
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
];

/// The runtimes Ferry ships (`deploy/runtimes/`, Trainer's `manifests/base/runtimes/`), as
/// (name, YAML).
pub const RUNTIMES: [(&str, &str); 1] = [(
    "torch-distributed",
    include_str!("../../../deploy/runtimes/torch_distributed.yaml"),
)];

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

/// The TrainJob kind.
pub fn trainjob_resource() -> ApiResource {
    resource("TrainJob", "trainjobs")
}

/// The namespaced TrainingRuntime kind.
pub fn training_runtime_resource() -> ApiResource {
    resource("TrainingRuntime", "trainingruntimes")
}

/// The cluster-scoped ClusterTrainingRuntime kind.
pub fn cluster_training_runtime_resource() -> ApiResource {
    resource("ClusterTrainingRuntime", "clustertrainingruntimes")
}

/// Why a TrainJob cannot be built (its `Failed` condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The condition's reason.
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid {
        reason: "ValidationFailed",
        message: message.into(),
    }
}

/// Which runtime a TrainJob names: (`TrainingRuntime` or `ClusterTrainingRuntime`, name).
pub fn runtime_ref(spec: &Value) -> Result<(String, String), Invalid> {
    let r = spec.get("runtimeRef").cloned().unwrap_or(Value::Null);
    let group = r.get("apiGroup").and_then(Value::as_str).unwrap_or(GROUP);
    let kind = r
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("ClusterTrainingRuntime");
    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        return Err(invalid("spec.runtimeRef.name: Required value"));
    }
    if group != GROUP || (kind != "TrainingRuntime" && kind != "ClusterTrainingRuntime") {
        return Err(Invalid {
            reason: "TrainingRuntimeNotSupported",
            message: format!(
                "spec.runtimeRef: {group}/{kind} is not supported: use trainer.kubeflow.org TrainingRuntime or ClusterTrainingRuntime"
            ),
        });
    }
    Ok((kind.to_string(), name.to_string()))
}

fn env_entry(name: &str, value: Value) -> Value {
    let mut e = Map::new();
    e.insert("name".into(), json!(name));
    match value {
        Value::String(s) => {
            e.insert("value".into(), json!(s));
        }
        other => {
            e.insert("valueFrom".into(), other);
        }
    }
    Value::Object(e)
}

/// Adds or replaces the variables of `add` (by name) in the `env` list of `container`.
fn upsert_env(container: &mut Value, add: &[Value]) {
    let env = container["env"].as_array().cloned().unwrap_or_default();
    let mut env: Vec<Value> = env;
    for var in add {
        let name = var.get("name");
        match env.iter_mut().find(|e| e.get("name") == name) {
            Some(slot) => *slot = var.clone(),
            None => env.push(var.clone()),
        }
    }
    container["env"] = Value::Array(env);
}

/// Merges `patch` into the list `target[key]` by each element's `name`: objects are merged
/// field by field (lists inside as `merge_named` again for env and volumeMounts).
fn merge_named(target: &mut Value, key: &str, patch: &[Value]) {
    let mut list = target[key].as_array().cloned().unwrap_or_default();
    for p in patch {
        let name = p.get("name");
        match list.iter_mut().find(|e| e.get("name") == name) {
            Some(slot) => {
                for (k, v) in p.as_object().into_iter().flatten() {
                    match (k.as_str(), v.as_array()) {
                        ("env" | "volumeMounts", Some(items)) => merge_named(slot, k, items),
                        _ => slot[k] = v.clone(),
                    }
                }
            }
            None => list.push(p.clone()),
        }
    }
    target[key] = Value::Array(list);
}

fn merge_map(target: &mut Value, patch: Option<&Value>) {
    if let Some(p) = patch.and_then(Value::as_object) {
        if !target.is_object() {
            *target = json!({});
        }
        for (k, v) in p {
            target[k] = v.clone();
        }
    }
}

fn merge_metadata(target: &mut Value, patch: Option<&Value>) {
    if let Some(p) = patch {
        merge_map(&mut target["labels"], p.get("labels"));
        merge_map(&mut target["annotations"], p.get("annotations"));
    }
}

/// Applies one `runtimePatches[].trainingRuntimeSpec` to the JobSet template (v2.3's
/// patchable fields).
fn apply_patch(template: &mut Value, patch: &Value) -> Result<(), Invalid> {
    let Some(t) = patch.get("template") else {
        return Ok(());
    };
    merge_metadata(&mut template["metadata"], t.get("metadata"));
    for rp in t
        .pointer("/spec/replicatedJobs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = rp.get("name").and_then(Value::as_str).unwrap_or_default();
        let rjobs = template["spec"]["replicatedJobs"]
            .as_array_mut()
            .ok_or_else(|| invalid("the runtime's template has no replicatedJobs"))?;
        let Some(rj) = rjobs
            .iter_mut()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
        else {
            return Err(invalid(format!(
                "spec.runtimePatches: replicatedJob {name:?} is not in the runtime"
            )));
        };
        merge_metadata(
            &mut rj["template"]["metadata"],
            rp.pointer("/template/metadata"),
        );
        let pod = &mut rj["template"]["spec"]["template"];
        merge_metadata(
            &mut pod["metadata"],
            rp.pointer("/template/spec/template/metadata"),
        );
        if let Some(ps) = rp
            .pointer("/template/spec/template/spec")
            .and_then(Value::as_object)
        {
            let spec = &mut pod["spec"];
            for (k, v) in ps {
                match k.as_str() {
                    "containers" | "initContainers" | "volumes" => {
                        merge_named(spec, k, v.as_array().map(Vec::as_slice).unwrap_or_default())
                    }
                    "tolerations" | "imagePullSecrets" | "schedulingGates" => {
                        let mut list = spec[k].as_array().cloned().unwrap_or_default();
                        list.extend(v.as_array().cloned().unwrap_or_default());
                        spec[k] = Value::Array(list);
                    }
                    "nodeSelector" => merge_map(&mut spec[k], Some(v)),
                    _ => spec[k] = v.clone(),
                }
            }
        }
    }
    Ok(())
}

/// Builds the JobSet of `trainjob` from its runtime's spec (`runtime_spec`), or says why not.
pub fn build_jobset(trainjob: &DynamicObject, runtime_spec: &Value) -> Result<Value, Invalid> {
    let name = trainjob.name_any();
    let ns = trainjob.namespace().unwrap_or_default();
    let spec = trainjob.data.get("spec").cloned().unwrap_or(json!({}));
    if spec.get("initializer").is_some_and(|i| !i.is_null()) {
        return Err(invalid(
            "spec.initializer (dataset and model initializers) is not supported by Ferry",
        ));
    }
    let ml = runtime_spec.get("mlPolicy").cloned().unwrap_or(json!({}));
    for other in ["mpi", "jax", "xgboost", "flux"] {
        if ml.get(other).is_some_and(|v| !v.is_null()) {
            return Err(Invalid {
                reason: "TrainingRuntimeNotSupported",
                message: format!(
                    "the runtime's mlPolicy.{other} is not supported by Ferry (only torch)"
                ),
            });
        }
    }
    let torch = ml.get("torch").filter(|t| !t.is_null());
    if torch.is_some_and(|t| t.get("elasticPolicy").is_some()) {
        return Err(invalid(
            "the runtime's mlPolicy.torch.elasticPolicy is not supported by Ferry",
        ));
    }
    let trainer = spec.get("trainer").cloned().unwrap_or(Value::Null);
    let trainer_env: Vec<Value> = trainer
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if torch.is_some() {
        let reserved: Vec<&str> = trainer_env
            .iter()
            .filter_map(|e| e.get("name").and_then(Value::as_str))
            .filter(|n| TORCH_RESERVED_ENV.contains(n))
            .collect();
        if !reserved.is_empty() {
            return Err(invalid(format!(
                "spec.trainer.env: must not have reserved envs, invalid envs configured: {reserved:?}"
            )));
        }
    }
    let mut template = runtime_spec.get("template").cloned().unwrap_or(json!({}));
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    for (i, p) in spec
        .get("runtimePatches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(trs) = p.get("trainingRuntimeSpec") {
            apply_patch(&mut template, trs)
                .map_err(|e| invalid(format!("spec.runtimePatches[{i}]: {}", e.message)))?;
        }
    }
    let num_nodes = trainer
        .get("numNodes")
        .and_then(Value::as_i64)
        .or_else(|| ml.get("numNodes").and_then(Value::as_i64))
        .unwrap_or(1);
    if num_nodes < 1 {
        return Err(invalid("spec.trainer.numNodes: must be at least 1"));
    }
    let resources = trainer
        .get("resourcesPerNode")
        .filter(|r| !r.is_null())
        .cloned();
    let rjobs = template["spec"]["replicatedJobs"]
        .as_array_mut()
        .ok_or_else(|| invalid("the runtime's template.spec.replicatedJobs is empty"))?;
    let Some(rj) = rjobs.iter_mut().find(|r| {
        r.pointer(&format!(
            "/template/metadata/labels/{}",
            ANCESTOR_LABEL.replace('/', "~1")
        ))
        .and_then(Value::as_str)
            == Some("trainer")
    }) else {
        return Err(invalid(format!(
            "the runtime has no replicatedJob labelled {ANCESTOR_LABEL}: trainer"
        )));
    };
    let rj_name = rj
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(NODE)
        .to_string();
    let job_spec = &mut rj["template"]["spec"];
    job_spec["parallelism"] = json!(num_nodes);
    job_spec["completions"] = json!(num_nodes);
    if let Some(d) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        job_spec["activeDeadlineSeconds"] = json!(d);
    }
    let containers = job_spec["template"]["spec"]["containers"]
        .as_array_mut()
        .ok_or_else(|| invalid("the trainer's pod template has no containers"))?;
    let Some(node) = containers
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(NODE))
    else {
        return Err(invalid(format!(
            "the trainer's pod template has no container named {NODE:?}"
        )));
    };
    if let Some(image) = trainer.get("image").and_then(Value::as_str) {
        node["image"] = json!(image);
    }
    for key in ["command", "args"] {
        if let Some(v) = trainer.get(key).filter(|v| v.is_array()) {
            node[key] = v.clone();
        }
    }
    if let Some(r) = &resources {
        node["resources"] = r.clone();
    }
    upsert_env(node, &trainer_env);
    let mut injected = Vec::new();
    if let Some(torch) = torch {
        let per_node = trainer
            .get("numProcPerNode")
            .or_else(|| torch.get("numProcPerNode"))
            .cloned()
            .unwrap_or(json!("auto"));
        let per_node = match per_node {
            Value::Number(n) => n.to_string(),
            Value::String(s) if s == "auto" => {
                let res = resources.clone().or_else(|| node.get("resources").cloned());
                auto_procs(res.as_ref())
            }
            Value::String(s) => s,
            _ => "auto".into(),
        };
        injected = vec![
            env_entry("PET_NNODES", json!(num_nodes.to_string())),
            env_entry("PET_NPROC_PER_NODE", json!(per_node)),
            env_entry(
                "PET_NODE_RANK",
                json!({"fieldRef": {"fieldPath":
                    "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}),
            ),
            env_entry(
                "PET_MASTER_ADDR",
                json!(format!("{name}-{rj_name}-0-0.{name}")),
            ),
            env_entry("PET_MASTER_PORT", json!(TRAINER_PORT.to_string())),
        ];
        upsert_env(node, &injected);
        let mut ports = node["ports"].as_array().cloned().unwrap_or_default();
        if !ports.iter().any(|p| {
            p.get("containerPort").and_then(Value::as_i64) == Some(i64::from(TRAINER_PORT))
        }) {
            ports.push(json!({"containerPort": TRAINER_PORT}));
        }
        node["ports"] = Value::Array(ports);
    }
    // envInjection: the same environment into other named containers.
    if let Some(targets) = torch
        .and_then(|t| t.pointer("/envInjection/targets"))
        .and_then(Value::as_array)
    {
        for target in targets {
            let job = target
                .get("jobName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for cname in target
                .get("containerNames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let found = rjobs_container(&mut template, job, cname);
                let Some(c) = found else {
                    return Err(invalid(format!(
                        "envInjection target podSet {job:?} container {cname:?} not found in runtime template"
                    )));
                };
                upsert_env(c, &injected);
            }
        }
    }
    let mut js_spec = template["spec"].take();
    if spec.get("suspend").and_then(Value::as_bool) == Some(true) {
        js_spec["suspend"] = json!(true);
    }
    let mut metadata = template["metadata"].take();
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(ns);
    metadata["ownerReferences"] = json!([OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "TrainJob".into(),
        name: name.clone(),
        uid: trainjob.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    if let Some(q) = trainjob.labels().get(ferry_api::scheduling::QUEUE_LABEL) {
        metadata["labels"][ferry_api::scheduling::QUEUE_LABEL] = json!(q);
    }
    Ok(json!({
        "apiVersion": format!("{}/{}", jobset::GROUP, jobset::VERSION),
        "kind": jobset::KIND,
        "metadata": metadata,
        "spec": js_spec,
    }))
}

fn rjobs_container<'a>(
    template: &'a mut Value,
    job: &str,
    container: &str,
) -> Option<&'a mut Value> {
    template["spec"]["replicatedJobs"]
        .as_array_mut()?
        .iter_mut()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(job))?
        .pointer_mut("/template/spec/template/spec")?
        .as_object_mut()?
        .iter_mut()
        .filter(|(k, _)| *k == "containers" || *k == "initContainers")
        .filter_map(|(_, v)| v.as_array_mut())
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
}

/// `auto` processes per node: the GPUs per node, else the CPUs (at least 1), as upstream.
fn auto_procs(resources: Option<&Value>) -> String {
    let Some(r) = resources else {
        return "1".into();
    };
    let get = |section: &str, key: &str| r.get(section).and_then(|s| s.get(key)).cloned();
    let gpus = get("limits", "nvidia.com/gpu").or_else(|| get("requests", "nvidia.com/gpu"));
    if let Some(g) = gpus.as_ref().and_then(quantity_int).filter(|g| *g > 0) {
        return g.to_string();
    }
    let cpu = get("requests", "cpu")
        .filter(|c| quantity_int(c).is_some_and(|v| v > 0))
        .or_else(|| get("limits", "cpu"));
    cpu.as_ref()
        .and_then(quantity_int)
        .unwrap_or(1)
        .max(1)
        .to_string()
}

fn quantity_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => {
            if let Some(m) = s.strip_suffix('m') {
                m.parse::<i64>().ok().map(|m| m / 1000)
            } else {
                s.parse::<f64>().ok().map(|f| f as i64)
            }
        }
        _ => None,
    }
}

/// Runs the TrainJob controller until its watch ends.
pub async fn run(client: kube::Client) {
    let ar = trainjob_resource();
    let js = jobset::api_resource();
    let trainjobs: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let jobsets: Api<DynamicObject> = Api::all_with(client.clone(), &js);
    Controller::new_with(trainjobs, watcher::Config::default(), ar)
        .owns_with(jobsets, js, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "trainjob controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(tj: Arc<DynamicObject>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::debug!(trainjob = %tj.name_any(), %error, "cannot sync the TrainJob; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn set_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status = if status { "True" } else { "False" };
    let now = Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(Timestamp::now())
        .to_string();
    if let Some(c) = conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
    {
        if c.get("status").and_then(Value::as_str) != Some(status) {
            c["lastTransitionTime"] = json!(now);
        }
        c["status"] = json!(status);
        c["reason"] = json!(reason);
        c["message"] = json!(message);
        return;
    }
    conditions.push(json!({"type": type_, "status": status, "reason": reason,
        "message": message, "lastTransitionTime": now}));
}

fn jobset_condition<'a>(js: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    js.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some(type_)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

async fn reconcile(cached: Arc<DynamicObject>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let ar = trainjob_resource();
    let trainjobs: Api<DynamicObject> = Api::namespaced_with((*client).clone(), &ns, &ar);
    let jobsets: Api<DynamicObject> =
        Api::namespaced_with((*client).clone(), &ns, &jobset::api_resource());
    let Some(tj) = trainjobs.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if tj.uid() != cached.uid() || tj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = tj.data.get("spec").cloned().unwrap_or(json!({}));
    if spec
        .get("managedBy")
        .and_then(Value::as_str)
        .is_some_and(|m| m != CONTROLLER_NAME)
    {
        return Ok(Action::await_change());
    }
    let old_status = tj.data.get("status").cloned().unwrap_or(json!({}));
    let mut conditions: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let finished = conditions.iter().any(|c| {
        matches!(
            c.get("type").and_then(Value::as_str),
            Some("Complete" | "Failed")
        ) && c.get("status").and_then(Value::as_str) == Some("True")
    });
    let suspend = spec.get("suspend").and_then(Value::as_bool) == Some(true);
    let mut jobs_status = old_status.get("jobsStatus").cloned();
    let existing = jobsets.get_opt(&name).await?;
    let mut requeue = None;
    match &existing {
        _ if finished => {}
        None => match build(&client, &tj, &ns, &spec).await? {
            Ok(js) => {
                let obj: DynamicObject =
                    serde_json::from_value(js).map_err(|source| Error::Decode {
                        kind: "JobSet",
                        name: format!("{ns}/{name}"),
                        source,
                    })?;
                match jobsets.create(&PostParams::default(), &obj).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Waiting(message)) if message.is_empty() => {}
            Err(Waiting(message)) => {
                set_condition(
                    &mut conditions,
                    "Created",
                    false,
                    "TrainingRuntimeNotFound",
                    &message,
                );
                requeue = Some(Duration::from_secs(5));
            }
        },
        Some(js) => {
            let owned = js
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == tj.uid().as_ref());
            if owned {
                let js_suspend =
                    js.data.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
                if js_suspend != suspend {
                    jobsets
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"suspend": suspend}})),
                        )
                        .await?;
                }
                jobs_status = js.data.pointer("/status/replicatedJobsStatus").cloned();
                if let Some(c) = jobset_condition(js, "Completed") {
                    set_condition(
                        &mut conditions,
                        "Complete",
                        true,
                        "JobSetCompleted",
                        c.get("message").and_then(Value::as_str).unwrap_or_default(),
                    );
                } else if let Some(c) = jobset_condition(js, "Failed") {
                    let reason = c
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("JobSetFailed");
                    set_condition(
                        &mut conditions,
                        "Failed",
                        true,
                        reason,
                        c.get("message").and_then(Value::as_str).unwrap_or_default(),
                    );
                }
            }
        }
    }
    if !finished {
        if suspend {
            set_condition(
                &mut conditions,
                "Suspended",
                true,
                "Suspended",
                "TrainJob is suspended",
            );
        } else if conditions.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Suspended")
                && c.get("status").and_then(Value::as_str) == Some("True")
        }) {
            set_condition(
                &mut conditions,
                "Suspended",
                false,
                "Resumed",
                "TrainJob is resumed",
            );
        }
    }
    if let Err(why) =
        tj_validation(&client, &tj, &ns, &spec, existing.is_none() && !finished).await?
    {
        set_condition(&mut conditions, "Failed", true, why.reason, &why.message);
    }
    let mut status = old_status.clone();
    if !status.is_object() {
        status = json!({});
    }
    status["conditions"] = Value::Array(conditions);
    if let Some(j) = jobs_status {
        status["jobsStatus"] = j;
    }
    if status != old_status {
        trainjobs
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(requeue.map_or_else(|| Action::requeue(Duration::from_secs(60)), Action::requeue))
}

/// The runtime is missing (the message) or the TrainJob is invalid (nothing to wait for: an
/// empty message, the failure being reported by [`tj_validation`]).
struct Waiting(String);

async fn fetch_runtime(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Option<DynamicObject>, Error> {
    let api: Api<DynamicObject> = if kind == "TrainingRuntime" {
        Api::namespaced_with(client.clone(), ns, &training_runtime_resource())
    } else {
        Api::all_with(client.clone(), &cluster_training_runtime_resource())
    };
    Ok(api.get_opt(name).await?)
}

async fn build(
    client: &kube::Client,
    tj: &DynamicObject,
    ns: &str,
    spec: &Value,
) -> Result<Result<Value, Waiting>, Error> {
    let Ok((kind, rname)) = runtime_ref(spec) else {
        return Ok(Err(Waiting(String::new())));
    };
    let Some(runtime) = fetch_runtime(client, ns, &kind, &rname).await? else {
        return Ok(Err(Waiting(format!("{kind} {rname:?} not found"))));
    };
    let rspec = runtime.data.get("spec").cloned().unwrap_or(json!({}));
    Ok(build_jobset(tj, &rspec).map_err(|_| Waiting(String::new())))
}

/// Whether the TrainJob can be built (checked before creating its JobSet).
async fn tj_validation(
    client: &kube::Client,
    tj: &DynamicObject,
    ns: &str,
    spec: &Value,
    check: bool,
) -> Result<Result<(), Invalid>, Error> {
    if !check {
        return Ok(Ok(()));
    }
    let (kind, rname) = match runtime_ref(spec) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let Some(runtime) = fetch_runtime(client, ns, &kind, &rname).await? else {
        return Ok(Ok(()));
    };
    let rspec = runtime.data.get("spec").cloned().unwrap_or(json!({}));
    Ok(build_jobset(tj, &rspec).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> Value {
        let v: Value = serde_saphyr::from_str(RUNTIMES[0].1).unwrap();
        v["spec"].clone()
    }

    fn trainjob(spec: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "tj", "namespace": "ns", "uid": "u"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn env_of(js: &Value) -> Vec<(String, Value)> {
        js.pointer("/spec/replicatedJobs/0/template/spec/template/spec/containers/0/env")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e.get("value")
                        .cloned()
                        .unwrap_or_else(|| e["valueFrom"].clone()),
                )
            })
            .collect()
    }

    #[test]
    fn torch_policy_sets_torchrun_environment() {
        let tj = trainjob(json!({
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {"numNodes": 2, "command": ["torchrun", "train.py"], "image": "me/img",
                "env": [{"name": "A", "value": "1"}],
                "resourcesPerNode": {"requests": {"cpu": "2"}}},
        }));
        let js = build_jobset(&tj, &runtime()).unwrap();
        assert_eq!(js["metadata"]["name"], "tj");
        let job = &js["spec"]["replicatedJobs"][0]["template"]["spec"];
        assert_eq!(job["parallelism"], 2);
        assert_eq!(job["completions"], 2);
        let c = &job["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "me/img");
        assert_eq!(c["command"], json!(["torchrun", "train.py"]));
        assert_eq!(c["ports"][0]["containerPort"], TRAINER_PORT);
        let env = env_of(&js);
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("A"), Some(json!("1")));
        assert_eq!(get("PET_NNODES"), Some(json!("2")));
        assert_eq!(get("PET_NPROC_PER_NODE"), Some(json!("2")));
        assert_eq!(get("PET_MASTER_ADDR"), Some(json!("tj-node-0-0.tj")));
        assert_eq!(get("PET_MASTER_PORT"), Some(json!("29400")));
        assert!(
            get("PET_NODE_RANK").unwrap()["fieldRef"]["fieldPath"]
                .as_str()
                .unwrap()
                .contains("job-completion-index")
        );
    }

    #[test]
    fn reserved_env_and_initializers_are_rejected() {
        let tj = trainjob(json!({"runtimeRef": {"name": "torch-distributed"},
            "trainer": {"env": [{"name": "PET_NNODES", "value": "3"}]}}));
        let e = build_jobset(&tj, &runtime()).unwrap_err();
        assert!(e.message.contains("reserved envs"), "{}", e.message);
        let tj = trainjob(json!({"runtimeRef": {"name": "torch-distributed"},
            "initializer": {"dataset": {"storageUri": "hf://x"}}}));
        let e = build_jobset(&tj, &runtime()).unwrap_err();
        assert!(e.message.contains("initializer"), "{}", e.message);
        let e = runtime_ref(&json!({"runtimeRef": {"name": "x", "kind": "Pod"}})).unwrap_err();
        assert_eq!(e.reason, "TrainingRuntimeNotSupported");
    }

    #[test]
    fn runtime_patches_reach_the_pod() {
        let tj = trainjob(json!({"runtimeRef": {"name": "torch-distributed"},
            "runtimePatches": [{"manager": "me", "trainingRuntimeSpec": {"template": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {"replicatedJobs": [{"name": "node", "template": {"spec": {"template": {
                    "metadata": {"annotations": {"x": "y"}},
                    "spec": {"nodeSelector": {"pool": "gpu"},
                        "containers": [{"name": "node", "env": [{"name": "B", "value": "2"}]}]}}}}}]}}}}]}));
        let js = build_jobset(&tj, &runtime()).unwrap();
        assert_eq!(js["metadata"]["labels"]["team"], "a");
        let pod = &js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"];
        assert_eq!(pod["metadata"]["annotations"]["x"], "y");
        assert_eq!(pod["spec"]["nodeSelector"]["pool"], "gpu");
        assert!(env_of(&js).iter().any(|(k, _)| k == "B"));
        let bad = trainjob(json!({"runtimeRef": {"name": "torch-distributed"},
            "runtimePatches": [{"trainingRuntimeSpec": {"template": {"spec": {
                "replicatedJobs": [{"name": "nope"}]}}}}]}));
        assert!(
            build_jobset(&bad, &runtime())
                .unwrap_err()
                .message
                .contains("nope")
        );
    }
}
