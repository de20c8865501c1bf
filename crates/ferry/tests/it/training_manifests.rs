//! The Kubeflow training-operator repository's example manifests, unchanged (as they are in
//! `examples/pytorch/simple.yaml`, `examples/pytorch/elastic/echo/echo.yaml`,
//! `examples/tensorflow/simple.yaml` and `examples/mpi/tensorflow-mnist.yaml`), run to
//! Succeeded through containerd: their images are
//! built on this machine (`scripts/test-images push-training`: Debian's torch and stand-ins
//! for the example scripts) and pushed to the test's registry under the Docker Hub names the
//! manifests use, the registry being containerd's mirror for `docker.io`. The MPIJob asks for
//! 5 CPUs and 10 GiB: the test's node declares 8 CPUs and 16 GiB (a CI machine has 2 cores);
//! the limits still go to the pods' cgroups.
//!
//! Needs what `e2e_containerd` needs, and python3-torch: skipped loudly without them,
//! failing under `CI=true`.

use std::time::{Duration, Instant};

use crate::common::TestPlane;
use crate::common::containerd::TestRuntime;
use crate::e2e_containerd::plane_with_containerd_and;

const WAIT: Duration = Duration::from_secs(240);

const PYTORCH_SIMPLE: &str = r#"apiVersion: "kubeflow.org/v1"
kind: PyTorchJob
metadata:
  name: pytorch-simple
  namespace: kubeflow
spec:
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      restartPolicy: OnFailure
      template:
        spec:
          containers:
            - name: pytorch
              image: docker.io/kubeflowkatib/pytorch-mnist:v1beta1-45c5727
              imagePullPolicy: Always
              command:
                - "python3"
                - "/opt/mnist/src/mnist.py"
                - "--epochs=1"
    Worker:
      replicas: 1
      restartPolicy: OnFailure
      template:
        spec:
          containers:
            - name: pytorch
              image: docker.io/kubeflowkatib/pytorch-mnist:v1beta1-45c5727
              imagePullPolicy: Always
              command:
                - "python3"
                - "/opt/mnist/src/mnist.py"
                - "--epochs=1"
"#;

const PYTORCH_ELASTIC_ECHO: &str = r#"apiVersion: "kubeflow.org/v1"
kind: PyTorchJob
metadata:
  name: elastic-example-echo
spec:
  elasticPolicy:
    rdzvBackend: c10d
    minReplicas: 1
    maxReplicas: 2
    maxRestarts: 100
  pytorchReplicaSpecs:
    Worker:
      replicas: 2
      template:
        spec:
          containers:
            - name: pytorch
              image: kubeflow/pytorch-elastic-example-echo:1.0.0
              imagePullPolicy: IfNotPresent
              env:
              - name: LOGLEVEL
                value: DEBUG
              command:
                - python
                - -m
                - torch.distributed.run
                - --rdzv_backend=c10d
                - ./echo.py

"#;

const MPIJOB_TENSORFLOW_MNIST: &str = r#"apiVersion: kubeflow.org/v1
kind: MPIJob
metadata:
  name: tensorflow-mnist
  namespace: kubeflow
spec:
  slotsPerWorker: 1
  runPolicy:
    cleanPodPolicy: Running
  mpiReplicaSpecs:
    Launcher:
      replicas: 1
      template:
        spec:
          containers:
          - image: horovod/horovod:0.20.0-tf2.3.0-torch1.6.0-mxnet1.5.0-py3.7-cpu
            name: mpi
            command:
            - mpirun
            args:
            - -np
            - "2"
            - --allow-run-as-root
            - -bind-to
            - none
            - -map-by
            - slot
            - -x
            - LD_LIBRARY_PATH
            - -x
            - PATH
            - -mca
            - pml
            - ob1
            - -mca
            - btl
            - ^openib
            - python
            - /examples/tensorflow2_mnist.py
            resources:
              limits:
                cpu: 1
                memory: 2Gi
    Worker:
      replicas: 2
      template:
        spec:
          containers:
          - image: horovod/horovod:0.20.0-tf2.3.0-torch1.6.0-mxnet1.5.0-py3.7-cpu
            name: mpi
            resources:
              limits:
                cpu: 2
                memory: 4Gi
"#;

const TFJOB_SIMPLE: &str = r#"apiVersion: "kubeflow.org/v1"
kind: TFJob
metadata:
  name: tfjob-simple
  namespace: kubeflow
spec:
  tfReplicaSpecs:
    Worker:
      replicas: 2
      restartPolicy: OnFailure
      template:
        spec:
          containers:
            - name: tensorflow
# Source for the image is located here: https://github.com/kubeflow/katib/tree/master/examples/v1beta1/trial-images/tf-mnist-with-summaries
              image: docker.io/kubeflowkatib/tf-mnist-with-summaries:latest
              command:
              - "python"
              - "/opt/tf-mnist-with-summaries/mnist.py"
              - "--epochs=1"
"#;

/// Everything about a job that did not end as expected.
fn dump(plane: &TestPlane, rt: &TestRuntime, kind: &str, ns: &str, name: &str) -> String {
    let job = plane
        .kubectl(&["get", kind, name, "-n", ns, "-o", "yaml"])
        .stdout;
    let pods = plane
        .kubectl(&["get", "pods", "-n", ns, "-o", "wide"])
        .stdout;
    let mut logs = String::new();
    for pod in plane
        .kubectl(&["get", "pods", "-n", ns, "-o", "name"])
        .stdout
        .lines()
    {
        let out = plane.kubectl(&["logs", "-n", ns, pod, "--tail", "30"]);
        logs.push_str(&format!("--- {pod}\n{}{}\n", out.stdout, out.stderr));
    }
    let events = plane.kubectl(&["get", "events", "-n", ns]).stdout;
    let ctd = rt.log();
    let ctd = &ctd[ctd.len().saturating_sub(3000)..];
    format!("{job}\npods:\n{pods}\nlogs:\n{logs}\nevents:\n{events}\ncontainerd:\n{ctd}")
}

/// Waits for the job's Succeeded condition; a Failed one, or none in time, fails the test.
async fn wait_succeeded(plane: &TestPlane, rt: &TestRuntime, kind: &str, ns: &str, name: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = plane.kubectl(&["get", kind, name, "-n", ns, "-o", "json"]);
        if out.ok {
            let job: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            let conditions = job["status"]["conditions"].as_array().cloned();
            let is = |t: &str| {
                conditions
                    .iter()
                    .flatten()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            if is("Succeeded") {
                return;
            }
            assert!(
                !is("Failed"),
                "{kind} {ns}/{name} failed:\n{}",
                dump(plane, rt, kind, ns, name)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {ns}/{name} did not succeed within {WAIT:?}:\n{}",
            dump(plane, rt, kind, ns, name)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn logs(plane: &TestPlane, ns: &str, pod: &str) -> String {
    let out = plane.kubectl(&["logs", "-n", ns, pod]);
    assert!(out.ok, "kubectl logs {ns}/{pod}: {}", out.stderr);
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubeflow_examples_run_unchanged() {
    let declared = (8_000, 16 << 30);
    let Some((plane, rt)) = plane_with_containerd_and("training_manifests", |a| {
        a.declared_capacity = Some(declared)
    })
    .await
    else {
        return;
    };
    if let Err(why) = rt.push_training_images() {
        let message = format!("training_manifests: the training image cannot be built: {why}");
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("{message}, and CI is set: refusing to skip");
        }
        eprintln!("SKIPPED {message}");
        return;
    }
    plane
        .kubectl(&["create", "namespace", "kubeflow"])
        .success();
    for manifest in [
        PYTORCH_SIMPLE,
        PYTORCH_ELASTIC_ECHO,
        TFJOB_SIMPLE,
        MPIJOB_TENSORFLOW_MNIST,
    ] {
        plane
            .kubectl_stdin(&["create", "-f", "-"], manifest)
            .success();
    }

    // PyTorch simple: master and worker train with DDP over gloo, by the names the
    // operator's environment gives.
    wait_succeeded(&plane, &rt, "pytorchjob", "kubeflow", "pytorch-simple").await;
    let master = logs(&plane, "kubeflow", "pytorch-simple-master-0");
    assert!(
        master.contains("rank 0 of 2, master pytorch-simple-master-0:23456"),
        "{master}"
    );
    assert!(master.contains("Validation-accuracy="), "{master}");
    let worker = logs(&plane, "kubeflow", "pytorch-simple-worker-0");
    assert!(worker.contains("rank 1 of 2"), "{worker}");

    // The elastic echo: torchrun's c10d rendezvous on worker 0 forms a group of both pods.
    wait_succeeded(&plane, &rt, "pytorchjob", "default", "elastic-example-echo").await;
    for i in 0..2 {
        let out = logs(
            &plane,
            "default",
            &format!("elastic-example-echo-worker-{i}"),
        );
        assert!(out.contains("echo RANK="), "{out}");
        // Both pods' agents in one rendezvous (each runs a process per CPU:
        // nproc_per_node=auto).
        assert!(
            out.contains("group_world_size=2") && out.contains(&format!("group_rank={i}")),
            "worker {i} saw the group of two: {out}"
        );
    }

    // TFJob simple: each worker reads TF_CONFIG and reaches the other by its name.
    wait_succeeded(&plane, &rt, "tfjob", "kubeflow", "tfjob-simple").await;
    for (i, other) in [(0, 1), (1, 0)] {
        let out = logs(&plane, "kubeflow", &format!("tfjob-simple-worker-{i}"));
        assert!(
            out.contains(&format!(
                "reached worker:{other} at tfjob-simple-worker-{other}.kubeflow.svc:2222"
            )),
            "{out}"
        );
        assert!(out.contains("heard from"), "{out}");
    }

    // The MPIJob: the launcher's init container (kubectl-delivery) waits for the workers,
    // mpirun starts a rank in each through kubexec.sh (kubectl exec) and collects their output.
    wait_succeeded(&plane, &rt, "mpijob", "kubeflow", "tensorflow-mnist").await;
    let launcher = plane
        .kubectl(&[
            "get",
            "pods",
            "-n",
            "kubeflow",
            "-l",
            "training.kubeflow.org/job-name=tensorflow-mnist,training.kubeflow.org/replica-type=launcher",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .success();
    let out = logs(&plane, "kubeflow", launcher.trim());
    for (rank, worker) in [(0, 0), (1, 1)] {
        assert!(
            out.contains(&format!(
                "mnist rank {rank} of 2 on tensorflow-mnist-worker-{worker}"
            )),
            "{out}"
        );
    }
}
