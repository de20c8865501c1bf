//! The upstream CRDs Ferry serves unchanged (`deploy/crds/upstream/`, see its README for the
//! source of each), embedded so that `ferry up` installs them.

/// The upstream CRD manifests, as (name, YAML).
pub const UPSTREAM: [(&str, &str); 7] = [
    (
        "pytorchjobs.kubeflow.org",
        include_str!("../../../deploy/crds/upstream/kubeflow.org_pytorchjobs.yaml"),
    ),
    (
        "tfjobs.kubeflow.org",
        include_str!("../../../deploy/crds/upstream/kubeflow.org_tfjobs.yaml"),
    ),
    (
        "mpijobs.kubeflow.org",
        include_str!("../../../deploy/crds/upstream/kubeflow.org_mpijobs.yaml"),
    ),
    (
        "jobsets.jobset.x-k8s.io",
        include_str!("../../../deploy/crds/upstream/jobset.x-k8s.io_jobsets.yaml"),
    ),
    (
        "trainjobs.trainer.kubeflow.org",
        include_str!("../../../deploy/crds/upstream/trainer.kubeflow.org_trainjobs.yaml"),
    ),
    (
        "trainingruntimes.trainer.kubeflow.org",
        include_str!("../../../deploy/crds/upstream/trainer.kubeflow.org_trainingruntimes.yaml"),
    ),
    (
        "clustertrainingruntimes.trainer.kubeflow.org",
        include_str!(
            "../../../deploy/crds/upstream/trainer.kubeflow.org_clustertrainingruntimes.yaml"
        ),
    ),
];
