//! The API server refuses what kube-apiserver refuses, with the same codes and causes, and
//! takes what it takes: strict validation, field selectors per kind, resourceVersions,
//! concurrent patches, long generated names and huge grace periods.

use crate::common;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use common::TestPlane;

/// A request through the test's client; an answer that is not a metav1.Status (a dropped
/// connection, say) fails the test.
async fn call(
    t: &TestPlane,
    method: &str,
    path: &str,
    body: Option<(&str, Value)>,
) -> Result<Value, kube::core::Status> {
    let mut request = http::Request::builder().method(method).uri(path);
    let bytes = match body {
        Some((content_type, v)) => {
            request = request.header("content-type", content_type);
            serde_json::to_vec(&v).unwrap()
        }
        None => Vec::new(),
    };
    match t
        .client
        .request::<Value>(request.body(bytes).unwrap())
        .await
    {
        Ok(v) => Ok(v),
        Err(kube::Error::Api(s)) => Err(*s),
        Err(other) => panic!("{method} {path}: no API answer: {other:?}"),
    }
}

/// An HTTP GET over TLS as the admin, without the client's retries (kube-rs retries a 504 fifteen times, as
/// client-go waits for a resourceVersion): the status code and the JSON body.
async fn get_once(t: &TestPlane, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = common::tls_connect(&t.plane.server).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A close without TLS's close_notify ends the read with an error after the answer.
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pod(name: &str, spec_extra: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "main", "image": "busybox"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

fn fields(status: &kube::core::Status) -> Vec<String> {
    status
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_volume_names_and_ids_are_checked() {
    let t = common::start().await;
    let pods = "/api/v1/namespaces/default/pods";
    let e = call(
        &t,
        "POST",
        pods,
        Some((
            "application/json",
            pod(
                "traversal",
                json!({"volumes": [{"name": "../../x", "emptyDir": {}}]}),
            ),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
    assert_eq!(fields(&e), ["spec.volumes[0].name"]);

    let ids = pod(
        "ids",
        json!({
            "securityContext": {"runAsUser": 2147483648i64, "runAsGroup": 0},
            "containers": [{"name": "main", "image": "busybox",
                "securityContext": {"runAsUser": 0, "runAsGroup": -1}}],
        }),
    );
    let e = call(&t, "POST", pods, Some(("application/json", ids)))
        .await
        .unwrap_err();
    assert_eq!(e.code, 422, "{e:?}");
    assert_eq!(
        fields(&e),
        [
            "spec.securityContext.runAsUser",
            "spec.containers[0].securityContext.runAsGroup"
        ]
    );
    assert!(
        e.message
            .contains("must be between 0 and 2147483647, inclusive"),
        "{}",
        e.message
    );

    // The bounds themselves are valid, and kubectl shows the refusal with its field.
    let edge = pod(
        "edge",
        json!({"securityContext": {"runAsUser": 2147483647i64, "runAsGroup": 0}}),
    );
    call(&t, "POST", pods, Some(("application/json", edge)))
        .await
        .unwrap();
    let stderr = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &pod(
                "dots",
                json!({"volumes": [{"name": "a.b", "emptyDir": {}}]}),
            )
            .to_string(),
        )
        .failure();
    assert!(stderr.contains("spec.volumes[0].name"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_patches_cannot_rename_or_move() {
    let t = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "keep"}, "data": {"a": "1"}})).unwrap(),
    )
    .await
    .unwrap();

    let e = api_error(
        cms.patch(
            "keep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"name": "other"}})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"), "{e:?}");
    assert_eq!(
        e.message,
        "the name of the object (other) does not match the name on the URL (keep)"
    );

    let path = "/api/v1/namespaces/default/configmaps/keep";
    let e = call(
        &t,
        "PATCH",
        path,
        Some((
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/metadata/namespace", "value": "kube-system"}]),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400, "{e:?}");
    assert!(e.message.contains("does not match the namespace"), "{e:?}");

    let e = call(
        &t,
        "PUT",
        path,
        Some((
            "application/json",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            400,
            "the name of the object (other) does not match the name on the URL (keep)"
        )
    );

    let stderr = t
        .kubectl(&[
            "patch",
            "configmap",
            "keep",
            "--type=merge",
            "-p",
            r#"{"metadata":{"name":"renamed"}}"#,
        ])
        .failure();
    assert!(
        stderr.contains("does not match the name on the URL"),
        "{stderr}"
    );
    assert!(cms.get_opt("renamed").await.unwrap().is_none());
    assert_eq!(
        cms.get("keep").await.unwrap().data.unwrap()["a"],
        "1",
        "the object is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_selectors_are_the_kinds_own() {
    let t = common::start().await;
    let stderr = t
        .kubectl(&["get", "pods", "--field-selector", "spec.foo=bar"])
        .failure();
    assert!(
        stderr.contains("field label not supported: spec.foo"),
        "{stderr}"
    );

    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let e = api_error(cms.list(&ListParams::default().fields("data.a=1")).await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: data.a")
    );
    let e = call(
        &t,
        "GET",
        "/api/v1/pods?watch=true&fieldSelector=metadata.labels%3Dx",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: metadata.labels")
    );

    // What Ferry's agent, kubectl describe and kubectl drain select by still works.
    let pods: Api<Pod> = Api::all(t.client.clone());
    pods.list(
        &ListParams::default()
            .fields("spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed"),
    )
    .await
    .unwrap();
    t.kubectl(&[
        "get",
        "namespaces",
        "--field-selector",
        "metadata.name=default,status.phase=Active",
    ])
    .success();

    // Events: `source` reads the reporting component.
    call(
        &t,
        "POST",
        "/api/v1/namespaces/default/events",
        Some((
            "application/json",
            json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p"},
                "reason": "Tested", "source": {"component": "ferry-test"}, "type": "Normal"}),
        )),
    )
    .await
    .unwrap();
    let out = t
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "source=ferry-test,involvedObject.name=p,reason=Tested",
            "-o",
            "name",
        ])
        .success();
    assert_eq!(out.trim(), "event/e1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_versions_are_checked() {
    let t = common::start().await;
    let e = call(
        &t,
        "GET",
        "/api/v1/namespaces/default/configmaps?resourceVersion=abc",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"), "{e:?}");

    let list = call(&t, "GET", "/api/v1/namespaces/default/configmaps", None)
        .await
        .unwrap();
    let current: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let future = current + 1000;
    for path in [
        format!("/api/v1/namespaces/default/configmaps?resourceVersion={future}"),
        format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={future}"),
        format!("/api/v1/namespaces/default/configmaps/none?resourceVersion={future}"),
    ] {
        let (code, status) = get_once(&t, &path).await;
        assert_eq!(
            (code, &status["reason"]),
            (504, &json!("Timeout")),
            "{path}: {status}"
        );
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("Too large resource version"),
            "{status}"
        );
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
    }

    // A revision the store reaches while the request waits is served.
    let next = current + 1;
    let waiting = {
        let client = t.client.clone();
        tokio::spawn(async move {
            let request = http::Request::get(format!(
                "/api/v1/namespaces/default/configmaps?resourceVersion={next}"
            ))
            .body(Vec::new())
            .unwrap();
            client.request::<Value>(request).await
        })
    };
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tick"}})).unwrap(),
    )
    .await
    .unwrap();
    let list = waiting.await.unwrap().unwrap();
    assert_eq!(list["kind"], "ConfigMapList");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_without_resource_version_all_succeed() {
    let t = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "shared"}})).unwrap(),
    )
    .await
    .unwrap();
    let writers = 50;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..writers {
        let cms = cms.clone();
        tasks.spawn(async move {
            cms.patch(
                "shared",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {format!("writer-{i}"): "done"}}}),
                ),
            )
            .await
            .map(|_| ())
        });
    }
    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result.unwrap() {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {writers} failed, the first with: {}",
        failures.len(),
        failures[0]
    );
    let annotations = cms
        .get("shared")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    for i in 0..writers {
        assert_eq!(annotations[&format!("writer-{i}")], "done");
    }

    // A patch that names a stale resourceVersion is still refused.
    let e = api_error(
        cms.patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}})),
        )
        .await,
    );
    assert_eq!(e.code, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_generated_names_and_huge_grace_periods() {
    let t = common::start().await;
    let pods_path = "/api/v1/namespaces/default/pods";
    let mut long = pod("", json!({}));
    long["metadata"] = json!({"generateName": "x".repeat(300)});
    let created = call(&t, "POST", pods_path, Some(("application/json", long)))
        .await
        .unwrap();
    let name = created["metadata"]["name"].as_str().unwrap();
    assert_eq!(name.len(), 63, "{name}");
    assert!(name.starts_with(&"x".repeat(58)), "{name}");

    let mut wide = pod("", json!({}));
    wide["metadata"] = json!({"generateName": "é".repeat(200)});
    let e = call(&t, "POST", pods_path, Some(("application/json", wide)))
        .await
        .unwrap_err();
    assert_eq!(e.code, 422, "{e:?}");

    // Pods on a node wait for it to stop them: their grace periods count.
    for (name, grace) in [("patient", i64::MAX / 2), ("plain", 30)] {
        call(
            &t,
            "POST",
            pods_path,
            Some((
                "application/json",
                pod(name, json!({"terminationGracePeriodSeconds": grace})),
            )),
        )
        .await
        .unwrap();
        call(
            &t,
            "POST",
            &format!("{pods_path}/{name}/binding"),
            Some((
                "application/json",
                json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                    "target": {"kind": "Node", "name": "n1"}}),
            )),
        )
        .await
        .unwrap();
    }
    t.kubectl(&["delete", "pod", "patient", "--wait=false"])
        .success();
    let marked = call(
        &t,
        "DELETE",
        &format!("{pods_path}/plain?gracePeriodSeconds=10000000000000"),
        None,
    )
    .await
    .unwrap();
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    for name in ["patient", "plain"] {
        let p = pods.get(name).await.unwrap();
        let grace = p.metadata.deletion_grace_period_seconds.unwrap();
        assert!(
            grace > 30 && grace <= 100 * 365 * 24 * 3600,
            "{name}: {grace}"
        );
        assert!(p.metadata.deletion_timestamp.is_some());
    }
    // A shorter grace period still finishes them.
    t.kubectl(&[
        "delete",
        "pod",
        "patient",
        "plain",
        "--grace-period=0",
        "--force",
    ])
    .success();
    assert!(pods.get_opt("patient").await.unwrap().is_none());
}
