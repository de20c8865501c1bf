//! The MPIJob framework (`kubeflow.org/v1` MPIJob, as the training operator v1.9's
//! `pkg/controller.v1/mpi` runs it): the launcher reaches its workers through `kubectl exec`.
//!
//! - A ConfigMap `<job>-config` holds `hostfile` (`<job>-worker-<i> slots=<slotsPerWorker>`,
//!   the launcher first when it asks for GPUs), `kubexec.sh` (`/opt/kube/kubectl exec <pod>
//!   [--container <mainContainer>] -- /bin/sh -c "$*"`, Open MPI's rsh agent) and
//!   `discover_hosts.sh` (Horovod's elastic host list), mounted at `/etc/mpi`.
//! - The launcher runs as a ServiceAccount `<job>-launcher` (or its template's own) bound to a
//!   Role `<job>-launcher` that may read pods and `create pods/exec` on its workers only.
//! - Its first container gets `OMPI_MCA_plm_rsh_agent=/etc/mpi/kubexec.sh`,
//!   `OMPI_MCA_orte_default_hostfile=/etc/mpi/hostfile`, Intel MPI's
//!   `I_MPI_HYDRA_BOOTSTRAP(_EXEC)` unless set, and empty `NVIDIA_*` unless it asks for GPUs.
//! - kubectl reaches `/opt/kube` through an init container `kubectl-delivery`, which then waits
//!   until every worker of the hostfile runs: with the image [`kubectl_delivery_image`] when
//!   the launcher has an image, else (Ferry's host runtime) as a host process copying the
//!   host's kubectl ([`host_kubectl`]).
//! - Workers without a command sleep (`sleep 365d`) until the launcher execs into them; the job
//!   succeeds when its launcher does.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, KeyToPath, Pod, PodSpec, Volume, VolumeMount,
};
use serde_json::{Value, json};

use super::Framework;
use super::types::{JobView, ReplicaPhases, RestartPolicy};

/// MPIJob.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mpi;

/// The launcher's replica type.
pub const LAUNCHER: &str = "Launcher";
/// The workers' replica type.
pub const WORKER: &str = "Worker";
/// Where the ConfigMap is mounted.
pub const CONFIG_MOUNT_PATH: &str = "/etc/mpi";
/// Where kubectl is delivered in the launcher.
pub const KUBECTL_MOUNT_PATH: &str = "/opt/kube";
/// The ConfigMap volume's name.
pub const CONFIG_VOLUME: &str = "mpi-job-config";
/// The kubectl volume's name.
pub const KUBECTL_VOLUME: &str = "mpi-job-kubectl";
/// The init container that delivers kubectl.
pub const KUBECTL_DELIVERY: &str = "kubectl-delivery";
/// The controller's environment variable naming the kubectl-delivery image.
pub const KUBECTL_DELIVERY_IMAGE_ENV: &str = "FERRY_MPI_KUBECTL_DELIVERY_IMAGE";
/// The training operator's default kubectl-delivery image.
pub const DEFAULT_KUBECTL_DELIVERY_IMAGE: &str = "mpioperator/kubectl-delivery:latest";
/// The controller's environment variable naming the host's kubectl (host runtime).
pub const HOST_KUBECTL_ENV: &str = "FERRY_MPI_KUBECTL";

const HOSTFILE: &str = "hostfile";
const KUBEXEC: &str = "kubexec.sh";
const DISCOVER_HOSTS: &str = "discover_hosts.sh";

/// The job's ConfigMap name.
pub fn config_name(job: &JobView) -> String {
    format!("{}-config", job.name)
}

/// The launcher's ServiceAccount: its template's, else `<job>-launcher`.
pub fn launcher_service_account(job: &JobView) -> String {
    job.replica_specs
        .get(LAUNCHER)
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| launcher_name(job))
}

fn launcher_name(job: &JobView) -> String {
    format!("{}-launcher", job.name)
}

/// `spec.slotsPerWorker` (default 1).
pub fn slots_per_worker(job: &JobView) -> i64 {
    job.spec
        .get("slotsPerWorker")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// The names of the job's worker pods.
pub fn worker_names(job: &JobView) -> Vec<String> {
    (0..job.replicas(WORKER))
        .map(|i| format!("{}-worker-{i}", job.name))
        .collect()
}

fn is_gpu_resource(name: &str) -> bool {
    name.ends_with(".com/gpu") || name.contains("gpu")
}

/// Whether the launcher asks for GPUs (it then takes slots in the hostfile too).
pub fn is_gpu_launcher(job: &JobView) -> bool {
    launcher_containers(job).iter().any(|c| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|l| l.keys().any(|k| is_gpu_resource(k)))
    })
}

fn launcher_containers(job: &JobView) -> &[Container] {
    job.replica_specs
        .get(LAUNCHER)
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

/// The hostfile: one line per worker with its slots (the launcher first on a GPU launcher).
pub fn hostfile(job: &JobView) -> String {
    let slots = slots_per_worker(job);
    let mut out = String::new();
    if is_gpu_launcher(job) {
        out.push_str(&format!("{} slots={slots}\n", launcher_name(job)));
    }
    for w in worker_names(job) {
        out.push_str(&format!("{w} slots={slots}\n"));
    }
    out
}

/// `discover_hosts.sh`: Horovod's elastic host list (`echo <host>:<slots>`).
pub fn discover_hosts(job: &JobView) -> String {
    let slots = slots_per_worker(job);
    let mut out = String::from("#!/bin/sh");
    if is_gpu_launcher(job) {
        out.push_str(&format!("\necho {}:{slots}", launcher_name(job)));
    }
    for w in worker_names(job) {
        out.push_str(&format!("\necho {w}:{slots}"));
    }
    out.push('\n');
    out
}

/// `kubexec.sh`: Open MPI's rsh agent, running the remote command in the worker's pod.
pub fn kubexec(job: &JobView) -> String {
    let mut cmd = format!("{KUBECTL_MOUNT_PATH}/kubectl exec ${{POD_NAME}}");
    let main = job.spec.get("mainContainer").and_then(Value::as_str);
    if let Some(main) = main.filter(|m| !m.is_empty()) {
        cmd.push_str(&format!(" --container {main}"));
    }
    format!("#!/bin/sh\nset -x\nPOD_NAME=$1\nshift\n{cmd} -- /bin/sh -c \"$*\"\n")
}

/// The image of the kubectl-delivery init container (`FERRY_MPI_KUBECTL_DELIVERY_IMAGE`, else
/// the training operator's default).
pub fn kubectl_delivery_image() -> String {
    std::env::var(KUBECTL_DELIVERY_IMAGE_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_KUBECTL_DELIVERY_IMAGE.to_string())
}

/// The host's kubectl for launchers on the host runtime: `FERRY_MPI_KUBECTL`, else the first
/// `kubectl` on the controller's `PATH`, else plain `kubectl` (the pod's `PATH` decides).
pub fn host_kubectl() -> String {
    if let Some(k) = std::env::var(HOST_KUBECTL_ENV)
        .ok()
        .filter(|k| !k.is_empty())
    {
        return k;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("kubectl"))
                .find(|p| p.is_file())
        })
        .map(|p: PathBuf| p.display().to_string())
        .unwrap_or_else(|| "kubectl".to_string())
}

/// The script of the host-runtime kubectl-delivery init container: copy `kubectl` to
/// `/opt/kube`, then wait until every worker named in the hostfile is Running.
pub fn host_delivery_script(kubectl: &str) -> String {
    let q = shell_quote(kubectl);
    format!(
        "set -e\n\
         src=$(command -v {q})\n\
         cp \"$src\" {KUBECTL_MOUNT_PATH}/kubectl\n\
         chmod 0755 {KUBECTL_MOUNT_PATH}/kubectl\n\
         for host in $(cut -d' ' -f1 {CONFIG_MOUNT_PATH}/{HOSTFILE}); do\n\
         \x20 until [ \"$({KUBECTL_MOUNT_PATH}/kubectl get pod \"$host\" -o 'jsonpath={{.status.phase}}' 2>/dev/null)\" = Running ]; do\n\
         \x20   sleep 0.2\n\
         \x20 done\n\
         \x20 echo \"$host is running\"\n\
         done\n"
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn meta(job: &JobView, name: String) -> Value {
    json!({"name": name, "namespace": job.namespace, "labels": {"app": job.name}})
}

fn config_volume(job: &JobView, launcher: bool) -> Volume {
    let item = |key: &str, mode: i32| KeyToPath {
        key: key.into(),
        path: key.into(),
        mode: Some(mode),
        ..Default::default()
    };
    let mut items = vec![item(KUBEXEC, 0o555)];
    if launcher {
        items.push(item(HOSTFILE, 0o444));
        items.push(item(DISCOVER_HOSTS, 0o555));
    }
    Volume {
        name: CONFIG_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_name(job),
            items: Some(items),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn decorate_launcher(job: &JobView, spec: &mut PodSpec) {
    if spec
        .service_account_name
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        spec.service_account_name = Some(launcher_name(job));
    }
    let host_runtime = spec
        .containers
        .first()
        .is_none_or(|c| c.image.as_deref().unwrap_or("").is_empty());
    let mut init = Container {
        name: KUBECTL_DELIVERY.into(),
        env: Some(vec![
            env("TARGET_DIR", KUBECTL_MOUNT_PATH),
            env("NAMESPACE", &job.namespace),
        ]),
        volume_mounts: Some(vec![
            mount(KUBECTL_VOLUME, KUBECTL_MOUNT_PATH),
            mount(CONFIG_VOLUME, CONFIG_MOUNT_PATH),
        ]),
        ..Default::default()
    };
    if host_runtime {
        init.command = Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            host_delivery_script(&host_kubectl()),
        ]);
    } else {
        init.image = Some(kubectl_delivery_image());
        init.image_pull_policy = Some("IfNotPresent".into());
    }
    spec.init_containers.get_or_insert_with(Vec::new).push(init);
    if let Some(c) = spec.containers.first_mut() {
        let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
        mounts.push(mount(KUBECTL_VOLUME, KUBECTL_MOUNT_PATH));
        mounts.push(mount(CONFIG_VOLUME, CONFIG_MOUNT_PATH));
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(Volume {
        name: KUBECTL_VOLUME.into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    });
    volumes.push(config_volume(job, true));
}

fn decorate_worker(job: &JobView, spec: &mut PodSpec) {
    if let Some(c) = spec.containers.first_mut() {
        if c.command.as_ref().is_none_or(Vec::is_empty) {
            c.command = Some(vec!["sleep".into()]);
            c.args = Some(vec!["365d".into()]);
        }
        // Open MPI checks for the rsh agent's path on every rank.
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(mount(CONFIG_VOLUME, CONFIG_MOUNT_PATH));
    }
    spec.volumes
        .get_or_insert_with(Vec::new)
        .push(config_volume(job, false));
}

impl Framework for Mpi {
    fn kind(&self) -> &'static str {
        "MPIJob"
    }
    fn plural(&self) -> &'static str {
        "mpijobs"
    }
    fn replica_specs_field(&self) -> &'static str {
        "mpiReplicaSpecs"
    }
    fn default_container(&self) -> &'static str {
        "mpi"
    }
    fn default_port_name(&self) -> &'static str {
        "mpijob-port"
    }
    fn default_port(&self) -> i32 {
        9999
    }
    fn default_restart_policy(&self) -> RestartPolicy {
        RestartPolicy::Never
    }
    fn master_type(&self) -> Option<&'static str> {
        Some(LAUNCHER)
    }
    fn validate(&self, job: &JobView) -> Result<(), String> {
        for rtype in job.replica_specs.keys() {
            if rtype != LAUNCHER && rtype != WORKER {
                return Err(format!(
                    "spec.mpiReplicaSpecs[{rtype}]: Unsupported value: {rtype:?}: supported values: \"Launcher\", \"Worker\""
                ));
            }
        }
        if !job.replica_specs.contains_key(LAUNCHER) {
            return Err(
                "spec.mpiReplicaSpecs[Launcher]: Required value: an MPIJob has one launcher".into(),
            );
        }
        if job.replicas(LAUNCHER) != 1 {
            return Err(format!(
                "spec.mpiReplicaSpecs[Launcher].replicas: Invalid value: {}: must be 1",
                job.replicas(LAUNCHER)
            ));
        }
        if job
            .replica_specs
            .get(WORKER)
            .and_then(|s| s.replicas)
            .is_some_and(|r| r < 0)
        {
            return Err(
                "spec.mpiReplicaSpecs[Worker].replicas: Invalid value: must be >= 0".into(),
            );
        }
        for (rtype, spec) in &job.replica_specs {
            if spec
                .template
                .spec
                .as_ref()
                .is_none_or(|s| s.containers.is_empty())
            {
                return Err(format!(
                    "spec.mpiReplicaSpecs[{rtype}].template.spec.containers: Required value"
                ));
            }
        }
        if slots_per_worker(job) < 1 {
            return Err(format!(
                "spec.slotsPerWorker: Invalid value: {}: must be 1 or more",
                slots_per_worker(job)
            ));
        }
        Ok(())
    }
    fn env(&self, job: &JobView, rtype: &str, index: i32) -> Vec<EnvVar> {
        let _ = index;
        if rtype != LAUNCHER {
            return Vec::new();
        }
        let kubexec_path = format!("{CONFIG_MOUNT_PATH}/{KUBEXEC}");
        let mut out = vec![
            env("OMPI_MCA_plm_rsh_agent", &kubexec_path),
            env(
                "OMPI_MCA_orte_default_hostfile",
                &format!("{CONFIG_MOUNT_PATH}/{HOSTFILE}"),
            ),
        ];
        if !is_gpu_launcher(job) {
            // Keep a launcher that asked for no GPU off them whatever the runtime does.
            out.push(env("NVIDIA_VISIBLE_DEVICES", ""));
            out.push(env("NVIDIA_DRIVER_CAPABILITIES", ""));
        }
        let user_env: Vec<&str> = launcher_containers(job)
            .first()
            .and_then(|c| c.env.as_ref())
            .map(|e| e.iter().map(|v| v.name.as_str()).collect())
            .unwrap_or_default();
        if !user_env.contains(&"I_MPI_HYDRA_BOOTSTRAP") {
            out.push(env("I_MPI_HYDRA_BOOTSTRAP", "rsh"));
        }
        if !user_env.contains(&"I_MPI_HYDRA_BOOTSTRAP_EXEC") {
            out.push(env("I_MPI_HYDRA_BOOTSTRAP_EXEC", &kubexec_path));
        }
        out
    }
    fn extra_objects(&self, job: &JobView) -> Vec<Value> {
        let launcher = launcher_name(job);
        let sa = launcher_service_account(job);
        vec![
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta(job, config_name(job)),
                "data": {
                    HOSTFILE: hostfile(job),
                    KUBEXEC: kubexec(job),
                    DISCOVER_HOSTS: discover_hosts(job),
                },
            }),
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": meta(job, sa.clone()),
            }),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta(job, launcher.clone()),
                "rules": [
                    {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]},
                    {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"],
                     "resourceNames": worker_names(job)},
                ],
            }),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta(job, launcher.clone()),
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": job.namespace}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": launcher},
            }),
        ]
    }
    fn decorate_pod(&self, job: &JobView, rtype: &str, index: i32, pod: &mut Pod) {
        let _ = index;
        let Some(spec) = pod.spec.as_mut() else {
            return;
        };
        match rtype {
            LAUNCHER => decorate_launcher(job, spec),
            WORKER => decorate_worker(job, spec),
            _ => {}
        }
    }
    fn succeeded(&self, job: &JobView, phases: &ReplicaPhases) -> bool {
        let _ = job;
        phases
            .get(LAUNCHER)
            .and_then(|p| p.first())
            .and_then(|p| p.as_deref())
            == Some("Succeeded")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kubeflow::types::ReplicaSpec;

    fn job(spec: Value) -> JobView {
        let replica_specs: BTreeMap<String, ReplicaSpec> =
            serde_json::from_value(spec["mpiReplicaSpecs"].clone()).unwrap();
        JobView {
            name: "pi".into(),
            namespace: "hpc".into(),
            uid: "u".into(),
            replica_specs,
            run_policy: Default::default(),
            spec,
        }
    }

    fn pi(launcher_image: Option<&str>, launcher_limits: Value) -> JobView {
        let mut lc = json!({"name": "mpi", "command": ["mpirun", "-n", "4", "hostname"],
                            "resources": {"limits": launcher_limits}});
        if let Some(i) = launcher_image {
            lc["image"] = json!(i);
        }
        job(json!({
            "slotsPerWorker": 2,
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "template": {"spec": {"containers": [lc]}}},
                "Worker": {"replicas": 2, "template": {"spec": {"containers": [{"name": "mpi"}]}}},
            }
        }))
    }

    fn pod_of(job: &JobView, rtype: &str) -> Pod {
        let t = job.replica_specs[rtype].template.clone();
        let mut pod = Pod {
            metadata: t.metadata.unwrap_or_default(),
            spec: t.spec,
            status: None,
        };
        Mpi.decorate_pod(job, rtype, 0, &mut pod);
        pod
    }

    #[test]
    fn config_map_has_hostfile_and_kubexec() {
        let j = pi(None, json!({}));
        let objs = Mpi.extra_objects(&j);
        let cm = &objs[0];
        assert_eq!(cm["metadata"]["name"], "pi-config");
        assert_eq!(
            cm["data"]["hostfile"],
            "pi-worker-0 slots=2\npi-worker-1 slots=2\n"
        );
        assert_eq!(
            cm["data"]["kubexec.sh"],
            "#!/bin/sh\nset -x\nPOD_NAME=$1\nshift\n/opt/kube/kubectl exec ${POD_NAME} -- /bin/sh -c \"$*\"\n"
        );
        assert_eq!(
            cm["data"]["discover_hosts.sh"],
            "#!/bin/sh\necho pi-worker-0:2\necho pi-worker-1:2\n"
        );
    }

    #[test]
    fn main_container_and_gpu_launcher() {
        let mut j = pi(Some("horovod"), json!({"nvidia.com/gpu": "1"}));
        j.spec["mainContainer"] = json!("trainer");
        assert!(kubexec(&j).contains("exec ${POD_NAME} --container trainer -- /bin/sh -c"));
        assert!(hostfile(&j).starts_with("pi-launcher slots=2\npi-worker-0"));
        let env = Mpi.env(&j, LAUNCHER, 0);
        assert!(!env.iter().any(|e| e.name == "NVIDIA_VISIBLE_DEVICES"));
    }

    #[test]
    fn launcher_role_execs_only_into_its_workers() {
        let j = pi(None, json!({}));
        let objs = Mpi.extra_objects(&j);
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["ConfigMap", "ServiceAccount", "Role", "RoleBinding"]
        );
        assert_eq!(objs[1]["metadata"]["name"], "pi-launcher");
        assert_eq!(
            objs[2]["rules"][1],
            json!({"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"],
                   "resourceNames": ["pi-worker-0", "pi-worker-1"]})
        );
        assert_eq!(objs[3]["subjects"][0]["name"], "pi-launcher");
        assert_eq!(objs[3]["roleRef"]["name"], "pi-launcher");
    }

    #[test]
    fn launcher_env_points_open_mpi_at_kubexec() {
        let j = pi(None, json!({}));
        let env: BTreeMap<String, String> = Mpi
            .env(&j, LAUNCHER, 0)
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        assert_eq!(env["OMPI_MCA_plm_rsh_agent"], "/etc/mpi/kubexec.sh");
        assert_eq!(env["OMPI_MCA_orte_default_hostfile"], "/etc/mpi/hostfile");
        assert_eq!(env["I_MPI_HYDRA_BOOTSTRAP"], "rsh");
        assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "");
        assert!(Mpi.env(&j, WORKER, 0).is_empty());
    }

    #[test]
    fn host_runtime_launcher_copies_the_hosts_kubectl() {
        let j = pi(None, json!({}));
        let pod = pod_of(&j, LAUNCHER);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("pi-launcher"));
        let init = &spec.init_containers.unwrap()[0];
        assert_eq!(init.name, "kubectl-delivery");
        assert!(init.image.is_none());
        let script = &init.command.as_ref().unwrap()[2];
        assert!(script.contains("cp \"$src\" /opt/kube/kubectl"), "{script}");
        assert!(script.contains("/etc/mpi/hostfile"), "{script}");
        let mounts: Vec<&str> = spec.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/opt/kube", "/etc/mpi"]);
        let vols = spec.volumes.unwrap();
        let items = vols[1].config_map.as_ref().unwrap().items.as_ref().unwrap();
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn image_launcher_uses_the_delivery_image() {
        let j = pi(Some("mpioperator/tensorflow-benchmarks:latest"), json!({}));
        let init = &pod_of(&j, LAUNCHER).spec.unwrap().init_containers.unwrap()[0];
        assert_eq!(
            init.image.as_deref(),
            Some(kubectl_delivery_image().as_str())
        );
        assert!(init.command.is_none());
    }

    #[test]
    fn workers_sleep_and_see_kubexec() {
        let j = pi(None, json!({}));
        let spec = pod_of(&j, WORKER).spec.unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.command.as_deref(), Some(&["sleep".to_string()][..]));
        assert_eq!(c.args.as_deref(), Some(&["365d".to_string()][..]));
        let items = spec.volumes.unwrap()[0]
            .config_map
            .clone()
            .unwrap()
            .items
            .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, "kubexec.sh");
    }

    #[test]
    fn launcher_decides_success() {
        let j = pi(None, json!({}));
        let ph = |l: &str| -> ReplicaPhases {
            BTreeMap::from([
                ("Launcher".into(), vec![Some(l.into())]),
                (
                    "Worker".into(),
                    vec![Some("Running".into()), Some("Running".into())],
                ),
            ])
        };
        assert!(Mpi.succeeded(&j, &ph("Succeeded")));
        assert!(!Mpi.succeeded(&j, &ph("Running")));
    }

    #[test]
    fn bad_specs_are_rejected() {
        let e = Mpi
            .validate(&job(json!({"mpiReplicaSpecs": {"Worker": {"template": {"spec": {"containers": [{"name": "a"}]}}}}})))
            .unwrap_err();
        assert!(e.contains("Launcher") && e.contains("Required"), "{e}");
        let e = Mpi
            .validate(&job(json!({"mpiReplicaSpecs": {"Launcher": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a"}]}}}}})))
            .unwrap_err();
        assert!(e.contains("must be 1"), "{e}");
        let mut j = pi(None, json!({}));
        j.spec["slotsPerWorker"] = json!(0);
        assert!(
            Mpi.validate(&j)
                .unwrap_err()
                .contains("spec.slotsPerWorker")
        );
        assert!(Mpi.validate(&pi(None, json!({}))).is_ok());
    }
}
