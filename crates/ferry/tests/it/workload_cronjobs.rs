//! batch/v1 CronJobs with the real kubectl: kubernetes.io's `hello` example firing every
//! minute as the page says, a Forbid CronJob that never runs two Jobs at once, history
//! limits, `kubectl create job --from=cronjob/NAME`, and kube-apiserver's statuses for bad
//! schedules and time zones.

use crate::common;

use std::time::Duration;

use common::eventually;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

/// Two minute boundaries and the Jobs they start.
const WAIT: Duration = Duration::from_secs(200);

/// kubernetes.io's CronJob example (concepts/workloads/controllers/cron-jobs), with a
/// successful-history limit of 1 added.
const HELLO: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: hello
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: hello
            image: busybox:1.28
            imagePullPolicy: IfNotPresent
            command:
            - /bin/sh
            - -c
            - date; echo Hello from the Kubernetes cluster
          restartPolicy: OnFailure
"#;

/// Every minute, a Job that runs longer than a minute: Forbid keeps it alone.
const FORBID: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: lonely
spec:
  schedule: "*/1 * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: c
            image: busybox
            command: ["sleep", "300"]
          restartPolicy: Never
"#;

fn owned_by(jobs: &[Job], cronjob: &str) -> Vec<Job> {
    jobs.iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| o.kind == "CronJob" && o.name == cronjob && o.controller == Some(true))
        })
        .cloned()
        .collect()
}

fn complete(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Complete" && c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjobs_fire_every_minute_with_forbid_and_history_limits() {
    let t = common::start_with_node("1xT4").await;
    t.kubectl_stdin(&["apply", "-f", "-"], HELLO).success();
    t.kubectl_stdin(&["apply", "-f", "-"], FORBID).success();
    let cronjob: CronJob = Api::namespaced(t.client.clone(), "default")
        .get("hello")
        .await
        .unwrap();
    assert_eq!(cronjob.spec.concurrency_policy.as_deref(), Some("Allow"));
    assert_eq!(cronjob.spec.failed_jobs_history_limit, Some(1));
    assert_eq!(cronjob.spec.suspend, Some(false));
    let table = t.kubectl(&["get", "cronjob", "hello"]).success();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..6], ["hello", "*", "*", "*", "*", "*"], "{table}");

    let jobs_api: Api<Job> = Api::namespaced(t.client.clone(), "default");
    // The first Job of `hello`, named by its scheduled minute, completes.
    let first = eventually("hello's first Job", WAIT, async || {
        let jobs = jobs_api.list(&ListParams::default()).await.ok()?.items;
        owned_by(&jobs, "hello").into_iter().next()
    })
    .await;
    let scheduled = first.annotations()["batch.kubernetes.io/cronjob-scheduled-timestamp"].clone();
    let at: k8s_openapi::jiff::Timestamp = scheduled.parse().unwrap();
    assert_eq!(at.as_second() % 60, 0, "{scheduled}");
    assert_eq!(first.name_any(), format!("hello-{}", at.as_second() / 60));
    t.kubectl(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{}", first.name_any()),
        "--timeout=120s",
    ])
    .success();
    let logs = t
        .kubectl(&["logs", &format!("job/{}", first.name_any())])
        .success();
    assert!(logs.contains("Hello from the Kubernetes cluster"), "{logs}");

    // A minute later: a second Job of hello, and only one finished Job kept (limit 1);
    // still a single Job of the Forbid CronJob.
    let cronjobs: Api<CronJob> = Api::namespaced(t.client.clone(), "default");
    eventually(
        "hello's second run and its history trimmed",
        WAIT,
        async || {
            let jobs = jobs_api.list(&ListParams::default()).await.ok()?.items;
            let hello = owned_by(&jobs, "hello");
            let newer = hello.iter().any(|j| j.name_any() > first.name_any());
            let first_gone = hello.iter().all(|j| j.name_any() != first.name_any());
            (newer && first_gone && hello.iter().all(complete) && hello.len() == 1).then_some(())
        },
    )
    .await;
    let lonely = owned_by(
        &jobs_api.list(&ListParams::default()).await.unwrap().items,
        "lonely",
    );
    assert_eq!(lonely.len(), 1, "Forbid: one Job at a time");
    let status = cronjobs.get("lonely").await.unwrap().status.unwrap();
    assert_eq!(status.active.unwrap().len(), 1);
    let hello = cronjobs.get("hello").await.unwrap().status.unwrap();
    assert!(hello.last_schedule_time.is_some() && hello.last_successful_time.is_some());
    let row = t
        .kubectl(&["get", "cronjob", "hello", "--no-headers"])
        .success();
    let cells: Vec<&str> = row.split_whitespace().collect();
    // NAME, five schedule fields, TIMEZONE, SUSPEND, ACTIVE, LAST SCHEDULE, AGE.
    assert_eq!(&cells[6..8], ["<none>", "False"], "{row}");
    assert_ne!(cells[9], "<none>", "a last schedule time: {row}");
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_job_from_a_cronjob_and_bad_schedules() {
    let t = common::start_with_node("1xT4").await;
    // A suspended CronJob never fires; `kubectl create job --from` still runs its template.
    t.kubectl(&[
        "create",
        "cronjob",
        "nightly",
        "--image=busybox",
        "--schedule=@daily",
        "--",
        "sh",
        "-c",
        "echo manual run",
    ])
    .success();
    t.kubectl(&[
        "patch",
        "cronjob",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true,"timeZone":"Europe/Paris"}}"#,
    ])
    .success();
    t.kubectl(&["create", "job", "by-hand", "--from=cronjob/nightly"])
        .success();
    t.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/by-hand",
        "--timeout=120s",
    ])
    .success();
    let job: Job = Api::namespaced(t.client.clone(), "default")
        .get("by-hand")
        .await
        .unwrap();
    assert_eq!(
        job.annotations()["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(job.owner_references()[0].name, "nightly");
    assert_eq!(
        t.kubectl(&["logs", "job/by-hand"]).success().trim(),
        "manual run"
    );
    // Suspended, nothing running once the manual Job is done, never scheduled.
    eventually("the CronJob's row", Duration::from_secs(30), async || {
        let row = t
            .kubectl(&["get", "cronjob", "nightly", "--no-headers"])
            .success();
        let cells: Vec<String> = row.split_whitespace().map(str::to_string).collect();
        (cells[..6] == ["nightly", "@daily", "Europe/Paris", "True", "0", "<none>"]).then_some(())
    })
    .await;

    // Bad input: kube-apiserver's causes.
    let bad = |schedule: &str, zone: Option<&str>| {
        format!(
            r#"{{"apiVersion":"batch/v1","kind":"CronJob","metadata":{{"name":"bad"}},
            "spec":{{"schedule":"{schedule}",{}"jobTemplate":{{"spec":{{"template":{{"spec":{{
            "restartPolicy":"OnFailure","containers":[{{"name":"c","image":"busybox"}}]}}}}}}}}}}}}"#,
            zone.map(|z| format!(r#""timeZone":"{z}","#))
                .unwrap_or_default()
        )
    };
    let err = t
        .kubectl_stdin(&["create", "-f", "-"], &bad("not a schedule", None))
        .failure();
    assert!(
        err.contains(r#"The CronJob "bad" is invalid: spec.schedule: Invalid value: "not a schedule": expected exactly 5 fields, found 3: [not a schedule]"#),
        "{err}"
    );
    let err = t
        .kubectl_stdin(&["create", "-f", "-"], &bad("61 * * * *", None))
        .failure();
    assert!(
        err.contains(
            "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59)"
        ),
        "{err}"
    );
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &bad("* * * * *", Some("Mars/Olympus_Mons")),
        )
        .failure();
    assert!(
        err.contains(r#"spec.timeZone: Invalid value: "Mars/Olympus_Mons": unknown time zone Mars/Olympus_Mons"#),
        "{err}"
    );
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &bad("TZ=UTC * * * * *", Some("UTC")),
        )
        .failure();
    assert!(
        err.contains("cannot use both timeZone field and TZ or CRON_TZ in schedule"),
        "{err}"
    );
    let err = t
        .kubectl(&[
            "patch",
            "cronjob",
            "nightly",
            "--type=merge",
            "-p",
            r#"{"spec":{"concurrencyPolicy":"Sometimes"}}"#,
        ])
        .failure();
    assert!(
        err.contains(r#"spec.concurrencyPolicy: Unsupported value: "Sometimes": supported values: "Allow", "Forbid", "Replace""#),
        "{err}"
    );
    t.plane.stop().await;
}
