//! Kubernetes protobuf request bodies end to end.
//!
//! kubectl 1.32's typed commands (`create configmap|secret|namespace|serviceaccount|
//! priorityclass`) send protobuf bodies (`run` and `expose` send JSON; both must work); the
//! objects are read back and their fields checked. Then what client-go programs send as
//! protobuf and kubectl does not (a typed Pod and Service create, a scheduler's
//! `pods/binding`, a DELETE with `DeleteOptions`) is posted as hand-built protobuf.

use crate::common;

use kube::api::Api;
use serde_json::{Value, json};

use k8s_openapi::api::core::v1::{Pod, Secret};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn get_json(t: &common::TestPlane, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = t.kubectl(&all).success();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {all:?}: {e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_typed_commands_send_protobuf() {
    let t = common::start_with(|c| c.scheduler = false).await;

    kubectl_protobuf(
        &t,
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
            "--from-literal=empty=",
        ],
    );
    let cm = get_json(&t, &["configmap", "settings"]);
    assert_eq!(cm["data"], json!({"mode": "fast", "empty": ""}));
    assert_eq!(cm["metadata"]["namespace"], "default");
    assert!(
        cm["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );

    // Secret: a literal and a binary file.
    let blob: &[u8] = &[0x00, 0xff, 0xfe, 0x80, b'\n', 0x01];
    let blob_path = t.dir.path().join("blob.bin");
    std::fs::write(&blob_path, blob).unwrap();
    let from_file = format!("--from-file=blob={}", blob_path.display());
    kubectl_protobuf(
        &t,
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=token=s3cr3t é",
            &from_file,
        ],
    );
    // Read back with kube-rs, which decodes the base64.
    let secrets: Api<Secret> = Api::namespaced(t.client.clone(), "default");
    let secret = secrets.get("creds").await.unwrap();
    // kubectl leaves the type empty (the real API server defaults it to Opaque).
    assert!(
        matches!(secret.type_.as_deref(), None | Some("Opaque")),
        "{:?}",
        secret.type_
    );
    let data = secret.data.unwrap();
    assert_eq!(data["token"].0, "s3cr3t é".as_bytes());
    assert_eq!(data["blob"].0, blob);

    // Namespace and a service account in it.
    kubectl_protobuf(&t, &["create", "namespace", "team-a"]);
    let ns = get_json(&t, &["namespace", "team-a"]);
    assert_eq!(ns["metadata"]["name"], "team-a");
    assert_eq!(ns["status"]["phase"], "Active");
    kubectl_protobuf(&t, &["create", "serviceaccount", "builder", "-n", "team-a"]);
    let sa = get_json(&t, &["serviceaccount", "builder", "-n", "team-a"]);
    assert_eq!(sa["metadata"]["namespace"], "team-a");
    assert_eq!(sa["kind"], "ServiceAccount");

    // A pod with arguments, and a service exposing it.
    kubectl_with_command(
        &t,
        &["run", "x", "--image=busybox", "--restart=Never"],
        &["sh", "-c", "echo hi"],
    );
    let pod = get_json(&t, &["pod", "x"]);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["name"], "x");
    assert_eq!(container["image"], "busybox");
    assert_eq!(container["args"], json!(["sh", "-c", "echo hi"]));
    assert!(container.get("command").is_none(), "{container}");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["metadata"]["labels"], json!({"run": "x"}));
    assert!(
        pod["spec"].get("nodeName").is_none(),
        "unbound: {}",
        pod["spec"]
    );

    t.kubectl(&["expose", "pod", "x", "--port=80"]).success();
    let svc = get_json(&t, &["service", "x"]);
    let ports = svc["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["port"], 80);
    assert_eq!(ports[0]["protocol"], "TCP");
    assert_eq!(ports[0]["targetPort"], 80);
    assert_eq!(svc["spec"]["selector"], json!({"run": "x"}));

    // A priority class.
    kubectl_protobuf(
        &t,
        &[
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--description=for training",
            "--preemption-policy=Never",
        ],
    );
    let pc = get_json(&t, &["priorityclass", "high"]);
    assert_eq!(pc["value"], 1000);
    assert_eq!(pc["description"], "for training");
    assert_eq!(pc["preemptionPolicy"], "Never");
    assert_eq!(pc["globalDefault"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_go_protobuf_bodies() {
    let t = common::start_with(|c| c.scheduler = false).await;

    // A typed Pod create: metadata, containers with command and a port.
    let container = message(&[
        (1, b"main".to_vec()),
        (2, b"busybox".to_vec()),
        (3, b"sh".to_vec()),
        (3, b"-c".to_vec()),
        (3, b"echo hi".to_vec()),
        (6, [field(1, b"http"), varint_field(3, 8080)].concat()),
    ]);
    let pod = message(&[
        (1, object_meta("x", &[])),
        (2, [field(2, &container), field(3, b"Never")].concat()),
        (3, vec![]),
    ]);
    post_protobuf(
        &t,
        http::Method::POST,
        "/api/v1/namespaces/default/pods",
        envelope("v1", "Pod", pod),
    )
    .await
    .expect("pod created");
    let pod = get_json(&t, &["pod", "x"]);
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["sh", "-c", "echo hi"]));
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");

    // A typed Service create with a named target port (IntOrString type 1, strVal).
    let port = [
        field(1, b"web"),
        varint_field(3, 80),
        field(4, &[varint_field(1, 1), field(3, b"http")].concat()),
    ]
    .concat();
    let selector = message(&[(1, b"app".to_vec()), (2, b"x".to_vec())]);
    let service = message(&[
        (1, object_meta("x", &[])),
        (2, [field(1, &port), field(2, &selector)].concat()),
    ]);
    post_protobuf(
        &t,
        http::Method::POST,
        "/api/v1/namespaces/default/services",
        envelope("v1", "Service", service),
    )
    .await
    .expect("service created");
    let svc = get_json(&t, &["service", "x"]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(svc["spec"]["selector"], json!({"app": "x"}));

    // A scheduler's binding, as client-go sends it.
    let binding = message(&[
        (1, object_meta("x", &[("ferry.ai/gpus", "0,1")])),
        (
            2,
            message(&[(1, b"Node".to_vec()), (3, b"node-1".to_vec())]),
        ),
    ]);
    post_protobuf(
        &t,
        http::Method::POST,
        "/api/v1/namespaces/default/pods/x/binding",
        envelope("v1", "Binding", binding),
    )
    .await
    .expect("binding accepted");
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let bound = pods.get("x").await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("node-1"));
    assert_eq!(bound.metadata.annotations.unwrap()["ferry.ai/gpus"], "0,1");

    // DELETE with protobuf DeleteOptions: a wrong uid precondition is refused (so the body
    // was read), the right one with gracePeriodSeconds 0 deletes at once.
    let delete = |uid: &str| {
        envelope(
            "v1",
            "DeleteOptions",
            [
                varint_field(1, 0),                                  // gracePeriodSeconds: 0
                field(2, &message(&[(1, uid.as_bytes().to_vec())])), // preconditions.uid
            ]
            .concat(),
        )
    };
    let config_map = message(&[
        (1, object_meta("settings", &[])),
        (2, message(&[(1, b"k".to_vec()), (2, b"v".to_vec())])),
    ]);
    post_protobuf(
        &t,
        http::Method::POST,
        "/api/v1/namespaces/default/configmaps",
        envelope("v1", "ConfigMap", config_map),
    )
    .await
    .expect("config map created");
    let cm = get_json(&t, &["configmap", "settings"]);
    assert_eq!(cm["data"], json!({"k": "v"}));
    let path = "/api/v1/namespaces/default/configmaps/settings";
    match post_protobuf(&t, http::Method::DELETE, path, delete("not-the-uid")).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a wrong precondition must conflict: {other:?}"),
    }
    let uid = cm["metadata"]["uid"].as_str().unwrap();
    post_protobuf(&t, http::Method::DELETE, path, delete(uid))
        .await
        .expect("delete accepted");
    let gone = t.kubectl(&["get", "configmap", "settings"]).failure();
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );

    // Garbage after the magic is a 400 with the decoder's reason, not a crash.
    match post_protobuf(
        &t,
        http::Method::POST,
        "/api/v1/namespaces/default/configmaps",
        b"k8s\0\x0a\xff".to_vec(),
    )
    .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 400, "{status:?}");
            assert!(status.message.contains("protobuf"), "{status:?}");
        }
        other => panic!("malformed protobuf must be refused: {other:?}"),
    }
}

/// Runs a kubectl command that must send a protobuf body, and checks that it did (`-v=8`
/// logs the request headers).
fn kubectl_protobuf(t: &common::TestPlane, args: &[&str]) {
    let mut all = args.to_vec();
    all.push("-v=8");
    let out = t.kubectl(&all);
    assert!(out.ok, "kubectl {args:?}: {}", out.stderr);
    assert!(
        out.stderr.contains(&format!("Content-Type: {PROTOBUF}")),
        "kubectl {args:?} did not send a protobuf body"
    );
}

/// Runs `kubectl <args> -- <command>`; `t.kubectl` appends its own flags after the arguments,
/// where they would land in the container's command line.
fn kubectl_with_command(t: &common::TestPlane, args: &[&str], command: &[&str]) {
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::kubectl_binary())
        .arg("--kubeconfig")
        .arg(&t.plane.kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .arg("--")
        .args(command)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn post_protobuf(
    t: &common::TestPlane,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<String, kube::Error> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, PROTOBUF)
        .header(http::header::ACCEPT, "application/json")
        .body(body)
        .unwrap();
    t.client.request_text(request).await
}

// A minimal protobuf writer for the hand-built bodies (field numbers from Kubernetes'
// generated.proto: ObjectMeta name=1 namespace=3 annotations=12, Binding metadata=1
// target=2, ObjectReference kind=1 name=3, DeleteOptions gracePeriodSeconds=1
// preconditions=2, Preconditions uid=1).

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn varint_field(tag: u64, v: u64) -> Vec<u8> {
    [varint(tag << 3), varint(v)].concat()
}

fn field(tag: u64, bytes: &[u8]) -> Vec<u8> {
    [
        varint(tag << 3 | 2),
        varint(bytes.len() as u64),
        bytes.to_vec(),
    ]
    .concat()
}

fn message(fields: &[(u64, Vec<u8>)]) -> Vec<u8> {
    fields.iter().flat_map(|(tag, b)| field(*tag, b)).collect()
}

fn object_meta(name: &str, annotations: &[(&str, &str)]) -> Vec<u8> {
    let mut out = message(&[(1, name.as_bytes().to_vec()), (3, b"default".to_vec())]);
    for (k, v) in annotations {
        let entry = message(&[(1, k.as_bytes().to_vec()), (2, v.as_bytes().to_vec())]);
        out.extend(field(12, &entry));
    }
    out
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let type_meta = message(&[
        (1, api_version.as_bytes().to_vec()),
        (2, kind.as_bytes().to_vec()),
    ]);
    [
        b"k8s\0".to_vec(),
        message(&[(1, type_meta), (2, raw), (3, vec![]), (4, vec![])]),
    ]
    .concat()
}
