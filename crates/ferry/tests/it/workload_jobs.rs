//! batch/v1 Jobs with the real kubectl against the embedded control plane and its node
//! agent: `kubectl create job` and `kubectl wait --for=condition=complete`, kubernetes.io's
//! `pi` example, an Indexed Job whose failed index is retried within
//! `backoffLimitPerIndex`, a pod failure policy that fails the Job on exit code 42, suspend
//! and resume, `activeDeadlineSeconds`, `ttlSecondsAfterFinished`, `kill -9` of `ferry up`
//! mid-Job, and the statuses kube-apiserver gives bad input.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::eventually;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

fn jobs(t: &common::TestPlane) -> Api<Job> {
    Api::namespaced(t.client.clone(), "default")
}

fn pods(t: &common::TestPlane) -> Api<Pod> {
    Api::namespaced(t.client.clone(), "default")
}

async fn job_pods(api: &Api<Pod>, job: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .unwrap()
        .items
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn condition(job: &Job, type_: &str) -> Option<(String, String, String)> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// `kubectl wait --for=condition=<condition> job/<name>`; on a timeout, panics with the Job
/// and its pods as the server has them.
fn wait_job(t: &common::TestPlane, condition: &str, name: &str) {
    let out = t.kubectl(&[
        "wait",
        &format!("--for=condition={condition}"),
        &format!("job/{name}"),
        "--timeout=120s",
    ]);
    if !out.ok {
        let job = t.kubectl(&["get", "job", name, "-o", "yaml"]).stdout;
        let pods = t
            .kubectl(&[
                "get",
                "pods",
                "-l",
                &format!("batch.kubernetes.io/job-name={name}"),
                "-o",
                "yaml",
            ])
            .stdout;
        panic!("job/{name} not {condition}: {}\n{job}\n{pods}", out.stderr);
    }
}

/// kubernetes.io's Job example (concepts/workloads/controllers/job): the page's manifest with
/// its `perl -Mbignum=bpi -wle 'print bpi(2000)'` computed by `bc` instead (the host's
/// Perl cannot compute it; the image is not used by the host runtime).
const PI_JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: pi
spec:
  template:
    spec:
      containers:
      - name: pi
        image: perl:5.34.0
        command: ["sh", "-c", "echo 'scale=2000; 4*a(1)' | BC_LINE_LENGTH=0 bc -l"]
      restartPolicy: Never
  backoffLimit: 4
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_job_and_the_pi_example_complete_as_kubernetes_io_says() {
    let t = common::start_with_node("1xT4").await;

    // kubectl create job + kubectl wait --for=condition=complete.
    t.kubectl(&[
        "create",
        "job",
        "hello",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo hello from a job",
    ])
    .success();
    wait_job(&t, "complete", "hello");
    let job = jobs(&t).get("hello").await.unwrap();
    let spec = job.spec.clone().unwrap();
    assert_eq!(spec.completions, Some(1));
    assert_eq!(spec.parallelism, Some(1));
    assert_eq!(spec.backoff_limit, Some(6));
    assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
    let uid = job.metadata.uid.clone().unwrap();
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );
    let status = job.status.clone().unwrap();
    assert_eq!(status.succeeded, Some(1));
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    let (s, reason, _) = condition(&job, "Complete").unwrap();
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("True", "CompletionsReached")
    );
    assert_eq!(condition(&job, "SuccessCriteriaMet").unwrap().0, "True");
    let listed = job_pods(&pods(&t), "hello").await;
    assert_eq!(listed.len(), 1);
    let pod = &listed[0];
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["job-name"], "hello");
    assert_eq!(labels["controller-uid"], uid);
    assert!(
        pod.metadata
            .finalizers
            .as_ref()
            .is_none_or(|f| f.is_empty()),
        "the tracking finalizer goes once the pod is counted: {:?}",
        pod.metadata.finalizers
    );
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
    let logs = t.kubectl(&["logs", "job/hello"]).success();
    assert_eq!(logs.trim(), "hello from a job");
    let table = t.kubectl(&["get", "job", "hello"]).success();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["hello", "Complete", "1/1"], "{table}");
    let wide = t.kubectl(&["get", "job", "hello", "-o", "wide"]).success();
    let wide_header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        wide_header,
        [
            "NAME",
            "STATUS",
            "COMPLETIONS",
            "DURATION",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        wide.contains("busybox")
            && wide.contains(&format!("batch.kubernetes.io/controller-uid={uid}")),
        "{wide}"
    );

    // The page: the Job runs one pod that prints 2000 digits of pi, "Complete" in
    // `kubectl get`, "1 Succeeded" in describe, its pods selected by the job-name label.
    t.kubectl_stdin(&["apply", "-f", "-"], PI_JOB).success();
    wait_job(&t, "complete", "pi");
    let describe = t.kubectl(&["describe", "job", "pi"]).success();
    assert!(
        describe.contains("0 Active (0 Ready) / 1 Succeeded / 0 Failed"),
        "{describe}"
    );
    assert!(describe.contains("Backoff Limit:"), "{describe}");
    let names = t
        .kubectl(&[
            "get",
            "pods",
            "--selector=batch.kubernetes.io/job-name=pi",
            "--output=jsonpath={.items[*].metadata.name}",
        ])
        .success();
    let names: Vec<&str> = names.split_whitespace().collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("pi-"), "{names:?}");
    let digits = t.kubectl(&["logs", names[0]]).success();
    assert!(
        digits.starts_with("3.14159265358979323846264338327950288419716939937510"),
        "{digits}"
    );
    assert_eq!(digits.trim().len(), 2002, "3, the point and 2000 digits");
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_retries_a_failed_index_within_its_backoff_limit() {
    let t = common::start_with_node("1xT4").await;
    // Index 2 fails on its first try (no earlier failure of the index), then succeeds.
    let yaml = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: indexed
spec:
  completionMode: Indexed
  completions: 4
  parallelism: 2
  backoffLimitPerIndex: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox
        env:
        - name: FAILURES
          valueFrom:
            fieldRef:
              fieldPath: metadata.annotations['batch.kubernetes.io/job-index-failure-count']
        command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX host=$(hostname); if [ $JOB_COMPLETION_INDEX = 2 ] && [ $FAILURES = 0 ]; then exit 1; fi"]
"#;
    t.kubectl_stdin(&["apply", "-f", "-"], yaml).success();
    // Never more than `parallelism` pods at once.
    let api = pods(&t);
    let mut most_running = 0;
    let job = eventually("the Indexed Job completes", WAIT, async || {
        let running = job_pods(&api, "indexed")
            .await
            .iter()
            .filter(|p| matches!(phase(p), "Pending" | "Running" | ""))
            .count();
        most_running = most_running.max(running);
        let job = jobs(&t).get("indexed").await.ok()?;
        condition(&job, "Complete")
            .filter(|c| c.0 == "True")
            .map(|_| job)
    })
    .await;
    assert!(most_running <= 2, "{most_running} pods ran at once");
    t.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=10s",
    ])
    .success();
    let status = job.status.unwrap();
    assert_eq!(status.completed_indexes.as_deref(), Some("0-3"));
    assert_eq!(status.succeeded, Some(4));
    assert_eq!(status.failed, Some(1));
    assert_eq!(status.failed_indexes, None);

    let all = job_pods(&api, "indexed").await;
    let mut succeeded: BTreeMap<String, usize> = BTreeMap::new();
    for p in &all {
        let index =
            p.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"]
                .clone();
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"],
            index
        );
        assert_eq!(
            p.spec.as_ref().unwrap().hostname.as_deref(),
            Some(format!("indexed-{index}").as_str())
        );
        let logs = t
            .kubectl(&["logs", p.metadata.name.as_deref().unwrap()])
            .success();
        assert!(
            logs.starts_with(&format!("index={index} ")),
            "pod of index {index} printed {logs}"
        );
        if phase(p) == "Succeeded" {
            *succeeded.entry(index).or_default() += 1;
        } else {
            assert_eq!((phase(p), index.as_str()), ("Failed", "2"));
        }
    }
    assert_eq!(all.len(), 5, "four indexes and one retry");
    let expected: BTreeMap<String, usize> = (0..4).map(|i| (i.to_string(), 1)).collect();
    assert_eq!(succeeded, expected, "one succeeded pod per index");
    let retry = all
        .iter()
        .find(|p| {
            phase(p) == "Succeeded"
                && p.metadata
                    .name
                    .as_deref()
                    .unwrap()
                    .starts_with("indexed-2-")
        })
        .unwrap();
    assert_eq!(
        retry.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/job-index-failure-count"],
        "1"
    );
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_failure_policy_fails_the_job_on_exit_code_42() {
    let t = common::start_with_node("1xT4").await;
    // kubernetes.io's pod failure policy example (job-pod-failure-policy-example.yaml), with
    // the container exiting 42.
    let yaml = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: job-pod-failure-policy-example
spec:
  completions: 12
  parallelism: 3
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: docker.io/library/bash:5
        command: ["sh"]
        args:
        - -c
        - echo "Hello world!" && sleep 1 && exit 42
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes:
        containerName: main
        operator: In
        values: [42]
    - action: Ignore
      onPodConditions:
      - type: DisruptionTarget
"#;
    t.kubectl_stdin(&["apply", "-f", "-"], yaml).success();
    wait_job(&t, "failed", "job-pod-failure-policy-example");
    let job = jobs(&t)
        .get("job-pod-failure-policy-example")
        .await
        .unwrap();
    let (s, reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!((s.as_str(), reason.as_str()), ("True", "PodFailurePolicy"));
    assert!(
        message.starts_with("Container main for pod default/job-pod-failure-policy-example-")
            && message.ends_with("failed with exit code 42 matching FailJob rule at index 0"),
        "{message}"
    );
    assert_eq!(
        condition(&job, "FailureTarget").unwrap().1,
        "PodFailurePolicy"
    );
    let spec = job.spec.unwrap();
    assert_eq!(spec.pod_replacement_policy.as_deref(), Some("Failed"));
    let status = job.status.unwrap();
    assert_eq!(status.active, Some(0));
    assert_eq!(status.succeeded, Some(0));
    // No retries: at most the first `parallelism` pods ever ran.
    let all = job_pods(&pods(&t), "job-pod-failure-policy-example").await;
    assert!(
        (1..=3).contains(&all.len()),
        "{} pods: the Job fails on the first exit code 42",
        all.len()
    );
    let table = t
        .kubectl(&["get", "job", "job-pod-failure-policy-example"])
        .success();
    assert!(table.contains(" Failed "), "{table}");
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_resume_deadline_and_ttl() {
    let t = common::start_with_node("1xT4").await;
    let api = pods(&t);

    // Created suspended: no pods, condition Suspended.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: later
spec:
  suspend: true
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox
        command: ["sh", "-c", "sleep 1"]
"#,
    )
    .success();
    let job = eventually("the Suspended condition", WAIT, async || {
        let job = jobs(&t).get("later").await.ok()?;
        condition(&job, "Suspended")
            .filter(|c| c.0 == "True")
            .map(|_| job)
    })
    .await;
    assert_eq!(condition(&job, "Suspended").unwrap().1, "JobSuspended");
    assert!(job_pods(&api, "later").await.is_empty());
    assert_eq!(
        t.kubectl(&["get", "job", "later", "--no-headers"])
            .success()
            .split_whitespace()
            .nth(1),
        Some("Suspended")
    );
    // Resumed: it runs to completion.
    t.kubectl(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ])
    .success();
    wait_job(&t, "complete", "later");
    let job = jobs(&t).get("later").await.unwrap();
    let (s, reason, _) = condition(&job, "Suspended").unwrap();
    assert_eq!((s.as_str(), reason.as_str()), ("False", "JobResumed"));
    assert_eq!(job.status.unwrap().succeeded, Some(2));

    // Suspending a running Job deletes its active pods.
    t.kubectl(&[
        "create",
        "job",
        "long",
        "--image=busybox",
        "--",
        "sleep",
        "300",
    ])
    .success();
    eventually("the long Job's pod runs", WAIT, async || {
        job_pods(&api, "long")
            .await
            .iter()
            .any(|p| phase(p) == "Running")
            .then_some(())
    })
    .await;
    t.kubectl(&[
        "patch",
        "job",
        "long",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ])
    .success();
    eventually("the suspended Job's pods go", WAIT, async || {
        let job = jobs(&t).get("long").await.ok()?;
        let suspended = condition(&job, "Suspended").is_some_and(|c| c.0 == "True");
        let gone = job_pods(&api, "long").await.is_empty();
        let status = job.status?;
        (suspended && gone && status.active == Some(0) && status.failed.unwrap_or(0) == 0)
            .then_some(())
    })
    .await;

    // activeDeadlineSeconds: the Job fails with DeadlineExceeded and its pod goes.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: deadline
spec:
  activeDeadlineSeconds: 3
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox
        command: ["sleep", "300"]
"#,
    )
    .success();
    wait_job(&t, "failed", "deadline");
    let job = jobs(&t).get("deadline").await.unwrap();
    let (_, reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(message, "Job was active longer than specified deadline");
    eventually("the deadline Job's pod goes", WAIT, async || {
        job_pods(&api, "deadline").await.is_empty().then_some(())
    })
    .await;

    // ttlSecondsAfterFinished: the finished Job and its pods are deleted.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: short-lived
spec:
  ttlSecondsAfterFinished: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox
        command: ["true"]
"#,
    )
    .success();
    eventually(
        "the finished Job is deleted after its TTL",
        WAIT,
        async || {
            let gone = jobs(&t).get_opt("short-lived").await.ok()?.is_none();
            (gone && job_pods(&api, "short-lived").await.is_empty()).then_some(())
        },
    )
    .await;
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_get_kube_apiservers_statuses() {
    let t = common::start().await;
    let job = |spec: serde_json::Value| {
        let mut j = json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}
        });
        for (k, v) in spec.as_object().unwrap() {
            j["spec"][k] = v.clone();
        }
        j.to_string()
    };
    let err = t
        .kubectl_stdin(&["create", "-f", "-"], &job(json!({"parallelism": -1})))
        .failure();
    assert!(
        err.contains(r#"The Job "bad" is invalid: spec.parallelism: Invalid value: -1: must be greater than or equal to 0"#),
        "{err}"
    );
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &job(
                json!({"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}),
            ),
        )
        .failure();
    assert!(
        err.contains(r#"spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never""#),
        "{err}"
    );
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &job(json!({"completionMode": "Indexed", "completions": null, "parallelism": 2})),
        )
        .failure();
    assert!(
        err.contains("spec.completions: Required value: when completion mode is Indexed"),
        "{err}"
    );
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &job(json!({"backoffLimitPerIndex": 1})),
        )
        .failure();
    assert!(
        err.contains("spec.backoffLimitPerIndex: Forbidden: requires indexed completion mode"),
        "{err}"
    );
    // The status kube-rs sees: 422 Invalid with the field cause.
    let body: Job = serde_json::from_str(&job(json!({"completions": -2}))).unwrap();
    match jobs(&t).create(&Default::default(), &body).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(s.message.contains("spec.completions"), "{}", s.message);
        }
        other => panic!("a negative completions was accepted: {other:?}"),
    }

    // Immutable fields.
    t.kubectl_stdin(&["create", "-f", "-"], &job(json!({"suspend": true})))
        .success();
    let err = t
        .kubectl(&[
            "patch",
            "job",
            "bad",
            "--type=merge",
            "-p",
            r#"{"spec":{"completions":3}}"#,
        ])
        .failure();
    assert!(
        err.contains("spec.completions: Invalid value: 3: field is immutable"),
        "{err}"
    );
    let err = t
        .kubectl(&[
            "patch",
            "job",
            "bad",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"other"}]"#,
        ])
        .failure();
    assert!(
        err.contains("spec.template: Invalid value:") && err.contains("field is immutable"),
        "{err}"
    );
    let err = t
        .kubectl(&[
            "patch",
            "job",
            "bad",
            "--type=merge",
            "-p",
            r#"{"spec":{"selector":{"matchLabels":{"a":"b"}}}}"#,
        ])
        .failure();
    assert!(
        err.contains("spec.selector") && err.contains("field is immutable"),
        "{err}"
    );
    // What may change: parallelism, suspend, and (suspended, never started) node selectors.
    t.kubectl(&[
        "patch",
        "job",
        "bad",
        "--type=merge",
        "-p",
        r#"{"spec":{"parallelism":3,"template":{"spec":{"nodeSelector":{"zone":"a"}}}}}"#,
    ])
    .success();
    t.plane.stop().await;
}

/// `ferry up` as a child process (killed with SIGKILL by the test).
struct Up {
    child: Child,
    kubeconfig: String,
}

impl Up {
    fn start(data_dir: &std::path::Path, port: u16) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "up",
                "--no-containerd",
                "--fake-gpus",
                "1xT4",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferry up starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kubeconfig = loop {
            let line = lines
                .next()
                .expect("ferry up prints its kubeconfig")
                .unwrap();
            if let Some(rest) = line.trim().strip_prefix("kubeconfig") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, kubeconfig }
    }

    async fn client(&self) -> kube::Client {
        let yaml = std::fs::read_to_string(&self.kubeconfig).unwrap();
        ferry::up::client_from_kubeconfig(&yaml).await.unwrap()
    }
}

impl Up {
    /// Stops `ferry up` as Ctrl-C would (it removes its nftables tables), killing it when it
    /// takes longer than 30 s.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_ferry_up_mid_job_loses_and_duplicates_no_completion() {
    let dir = tempfile::tempdir().unwrap();
    // Dropped before `dir`: the pods' volume mounts go, so the directory can be removed.
    let _mounts = common::MountGuard(dir.path().to_path_buf());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = dir.path().join("data");
    let mut up = Up::start(&data, port);
    let client = up.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "crash"},
        "spec": {
            "completionMode": "Indexed", "completions": 6, "parallelism": 3,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", "sleep 2; echo done $JOB_COMPLETION_INDEX"]}]}}
        }
    }))
    .unwrap();
    jobs.create(&Default::default(), &job).await.unwrap();
    // Kill the whole control plane (and its node agent) once some indexes are done and
    // others run.
    eventually("the Job is half done", WAIT, async || {
        let s = jobs.get("crash").await.ok()?.status?;
        (s.succeeded.unwrap_or(0) >= 1 && s.active.unwrap_or(0) >= 1).then_some(())
    })
    .await;
    up.child.kill().unwrap(); // SIGKILL
    up.child.wait().unwrap();
    drop(up);

    let up = Up::start(&data, port);
    let client = up.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let job = eventually("the Job completes after the restart", WAIT, async || {
        let job = jobs.get("crash").await.ok()?;
        condition(&job, "Complete")
            .filter(|c| c.0 == "True")
            .map(|_| job)
    })
    .await;
    let status = job.status.unwrap();
    assert_eq!(status.succeeded, Some(6));
    assert_eq!(status.completed_indexes.as_deref(), Some("0-5"));
    let all = job_pods(&pods, "crash").await;
    let mut per_index: BTreeMap<String, usize> = BTreeMap::new();
    for p in all.iter().filter(|p| phase(p) == "Succeeded") {
        let ix =
            p.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"]
                .clone();
        *per_index.entry(ix).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = (0..6).map(|i| (i.to_string(), 1)).collect();
    assert_eq!(
        per_index,
        expected,
        "exactly one succeeded pod per index ({} pods in all)",
        all.len()
    );
    up.stop();
    // Pods and network state the killed plane left on the host.
    common::clean_slot(&ferry_api::network::ClusterNetwork::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_jobs_pods_keep_no_finalizer_and_deleting_the_job_removes_them() {
    let t = common::start_with_node("1xT4").await;
    let api = pods(&t);
    t.kubectl(&[
        "create",
        "job",
        "gone",
        "--image=busybox",
        "--",
        "sleep",
        "300",
    ])
    .success();
    eventually("the pod runs", WAIT, async || {
        job_pods(&api, "gone")
            .await
            .iter()
            .any(|p| phase(p) == "Running")
            .then_some(())
    })
    .await;
    let pod = job_pods(&api, "gone").await.remove(0);
    assert_eq!(
        pod.metadata.finalizers.as_deref(),
        Some(&["batch.kubernetes.io/job-tracking".to_string()][..])
    );
    t.kubectl(&["delete", "job", "gone"]).success();
    eventually("the deleted Job's pod goes", WAIT, async || {
        job_pods(&api, "gone").await.is_empty().then_some(())
    })
    .await;
    // Scaled parallelism: more pods at once.
    t.kubectl(&[
        "create",
        "job",
        "wide",
        "--image=busybox",
        "--",
        "sleep",
        "300",
    ])
    .success();
    t.kubectl(&[
        "patch",
        "job",
        "wide",
        "--type=merge",
        "-p",
        r#"{"spec":{"parallelism":0}}"#,
    ])
    .success();
    eventually("parallelism 0 stops the pods", WAIT, async || {
        let job = jobs(&t).get("wide").await.ok()?;
        (job.status?.active == Some(0)).then_some(())
    })
    .await;
    t.plane.stop().await;
}
