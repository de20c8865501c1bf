//! The Kubeflow training operator's `kubeflow.org/v1` jobs: PyTorchJob, TFJob and MPIJob.
//!
//! One replica engine ([`controller`]) does what every kind shares, as the training operator
//! documents it: per replica type and index a pod `<job>-<type>-<index>` with the
//! `training.kubeflow.org/*` labels and a headless Service of the same name, replica restart
//! policies, runPolicy, status conditions and replicaStatuses, and a PodGroup per job. What
//! differs between the kinds is a [`Framework`]: [`pytorch`], [`tensorflow`], [`mpi`].

pub mod controller;
pub mod mpi;
pub mod pytorch;
pub mod tensorflow;
pub mod types;

use k8s_openapi::api::core::v1::{EnvVar, Pod};

pub use types::{JobView, ReplicaSpec, RestartPolicy, RunPolicy};

/// The API group and version of the v1 kinds.
pub const API_VERSION: &str = "kubeflow.org/v1";
/// The API group.
pub const GROUP: &str = "kubeflow.org";
/// The value of `training.kubeflow.org/operator-name` on Ferry's pods.
pub const OPERATOR_NAME: &str = "ferry-training";

/// Labels on every pod and Service of a job (the training operator's keys).
pub mod labels {
    /// The job's name.
    pub const JOB_NAME: &str = "training.kubeflow.org/job-name";
    /// The replica type, lower case (`master`, `worker`, `ps`, `launcher`...).
    pub const REPLICA_TYPE: &str = "training.kubeflow.org/replica-type";
    /// The replica index.
    pub const REPLICA_INDEX: &str = "training.kubeflow.org/replica-index";
    /// `master` on the job's master (or chief, or launcher), absent otherwise.
    pub const JOB_ROLE: &str = "training.kubeflow.org/job-role";
    /// The operator that made the pod.
    pub const OPERATOR_NAME: &str = "training.kubeflow.org/operator-name";
}

/// What differs between the v1 job kinds; the engine in [`controller`] does the rest.
///
/// The engine owns this contract: it may change a signature when the kinds need it.
pub trait Framework: Send + Sync + 'static {
    /// The kind, e.g. `PyTorchJob`.
    fn kind(&self) -> &'static str;
    /// The plural resource, e.g. `pytorchjobs`.
    fn plural(&self) -> &'static str;
    /// The spec field holding the replica specs, e.g. `pytorchReplicaSpecs`.
    fn replica_specs_field(&self) -> &'static str;
    /// The container that gets the framework's environment and port (`pytorch`,
    /// `tensorflow`, `mpi`); the first container when none has this name.
    fn default_container(&self) -> &'static str;
    /// The name of the port the replicas listen on (`pytorchjob-port`, `tfjob-port`...).
    fn default_port_name(&self) -> &'static str;
    /// The port when the container declares none by [`Framework::default_port_name`].
    fn default_port(&self) -> i32;
    /// The restart policy of replicas that set none.
    fn default_restart_policy(&self) -> RestartPolicy;
    /// The replica type that decides the job's success and carries the `job-role: master`
    /// label, when it exists (`Master`, `Chief`, `Launcher`).
    fn master_type(&self) -> Option<&'static str>;
    /// Rejects what the kind does not support, with a message for the job's status.
    fn validate(&self, job: &JobView) -> Result<(), String> {
        let _ = job;
        Ok(())
    }
    /// The framework's environment for the pod of replica `rtype` (as written in the spec)
    /// and `index`, added to every container of the pod (as the training operator does),
    /// after the template's own variables.
    fn env(&self, job: &JobView, rtype: &str, index: i32) -> Vec<EnvVar>;
    /// How many pods of `rtype` the job has (its `replicas`; an elastic PyTorchJob's
    /// `maxReplicas` workers).
    fn pod_count(&self, job: &JobView, rtype: &str) -> i32 {
        job.replicas(rtype)
    }
    /// The PodGroup's `minMember` when `schedulingPolicy.minAvailable` is unset: every
    /// replica (an elastic PyTorchJob: masters + `minReplicas`).
    fn min_member(&self, job: &JobView) -> i32 {
        job.replica_specs.keys().map(|t| job.replicas(t)).sum()
    }
    /// Whether the pod of replica `rtype` and `index` is elastic surplus (beyond the job's
    /// minimum): the controller creates the minimum's pods before any surplus pod, so the
    /// scheduler, which starts an elastic job with the first `minMember` pods it sees,
    /// starts it with the minimum (an elastic PyTorchJob's rendezvous host is worker 0).
    fn is_surplus(&self, job: &JobView, rtype: &str, index: i32) -> bool {
        let _ = (job, rtype, index);
        false
    }
    /// The elastic replica type, if any: its pods that are deleted, evicted or lost are
    /// recreated as no failure (the scheduler grows and shrinks them).
    fn elastic_type(&self, job: &JobView) -> Option<&'static str> {
        let _ = job;
        None
    }
    /// Objects the job needs besides pods and Services (MPI's ConfigMap), created before
    /// its pods, owned by the job.
    fn extra_objects(&self, job: &JobView) -> Vec<serde_json::Value> {
        let _ = job;
        Vec::new()
    }
    /// Last changes to the pod of replica `rtype` and `index` (MPI's volumes).
    fn decorate_pod(&self, job: &JobView, rtype: &str, index: i32, pod: &mut Pod) {
        let _ = (job, rtype, index, pod);
    }
    /// Whether the job has succeeded, from the phase of each replica's pod
    /// (`phases[rtype][index]`, `None` where no pod exists).
    fn succeeded(&self, job: &JobView, phases: &types::ReplicaPhases) -> bool;
}

/// The name of the pod and Service of replica `rtype` and `index` of job `job`:
/// `<job>-<type in lower case>-<index>`.
pub fn replica_name(job: &str, rtype: &str, index: i32) -> String {
    format!("{job}-{}-{index}", rtype.to_lowercase()).replace('/', "-")
}

/// The port replicas of `rtype` listen on: the one named [`Framework::default_port_name`]
/// in the type's [`Framework::default_container`] (or its first container), else
/// [`Framework::default_port`].
pub fn replica_port<F: Framework + ?Sized>(framework: &F, job: &JobView, rtype: &str) -> i32 {
    job.replica_specs
        .get(rtype)
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|spec| {
            let c = spec
                .containers
                .iter()
                .find(|c| c.name == framework.default_container())
                .or_else(|| spec.containers.first())?;
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(framework.default_port_name()))
                .map(|p| p.container_port)
        })
        .unwrap_or_else(|| framework.default_port())
}

/// Runs the controllers of the three kinds until their watches end.
pub async fn run(client: kube::Client) {
    futures::join!(
        controller::run(client.clone(), pytorch::PyTorch),
        controller::run(client.clone(), tensorflow::TensorFlow),
        controller::run(client, mpi::Mpi),
    );
}
