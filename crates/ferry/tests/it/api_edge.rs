//! The API server's edge with the real kubectl and raw connections: the limits that protect
//! the server (413 as a Status kubectl prints, the header read timeout, requests in flight
//! bounded with 429, header blocks bounded with 431), `kubectl explain` from the OpenAPI
//! schemas, and CRD printer columns in Kubernetes' JSONPath dialect. Raw requests go over
//! TLS with the admin's client certificate, as every client's do.

use crate::common;

use std::time::Duration;

use ferry_apiserver::edge::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An API server alone (no scheduler), with `limits`.
async fn server_with(limits: Limits) -> (ferry_apiserver::RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ferry_apiserver::ServerConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.limits = limits;
    let server = ferry_apiserver::start(config).await.expect("server starts");
    (server, dir)
}

/// One HTTP/1.1 request on a fresh TLS connection (as the admin); the status code, the
/// headers and the body.
async fn raw(server: &ferry_apiserver::RunningServer, request: &str) -> (u16, String, String) {
    let mut tls = common::tls_connect(server).await;
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A server that closes without TLS's close_notify ends the read with an error; what was
    // read until then is the answer.
    let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut answer))
        .await
        .expect("an answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    (code, head.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_prints_413_for_a_body_over_3_mib() {
    let t = common::start().await;
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  blob: {}\n",
        "x".repeat(4 << 20)
    );
    let err = t.kubectl_stdin(&["create", "-f", "-"], &big).failure();
    assert!(err.contains("Request entity too large"), "{err}");
    assert!(err.contains("limit is 3145728"), "{err}");
    // Just under the documented limit passes the edge (once refused by a hidden 2 MB limit);
    // validation may refuse the object for its own reasons (Kubernetes: ConfigMaps of 1 MiB).
    let fits = big.replace(&"x".repeat(4 << 20), &"x".repeat((3 << 20) - 4096));
    let under = t.kubectl_stdin(&["create", "-f", "-"], &fits);
    assert!(
        under.ok || !under.stderr.contains("RequestEntityTooLarge"),
        "{}",
        under.stderr
    );
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stalls_in_its_headers_is_closed() {
    let (server, _dir) = server_with(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    // A connection that never starts its TLS handshake, one that stops in the middle of its
    // ClientHello, and one that stops in its HTTP headers after the handshake.
    for partial in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(partial).await.unwrap();
        let mut buf = Vec::new();
        // The server closes the connection: EOF (or a reset), well before this bound.
        let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("a stalled handshake ({partial:?}) stays open"));
        assert!(read.is_err() || buf.is_empty(), "{buf:?}");
    }
    let mut tls = common::tls_connect(&server).await;
    tls.write_all(b"GET /api HTT").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut buf))
        .await
        .expect("a connection stalled in its headers stays open");
    assert!(
        read.is_err() || !String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "{buf:?}"
    );
    // A complete request is still served.
    let (code, _, _) = raw(
        &server,
        "GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_over_the_limit_gets_431() {
    use ferry_apiserver::edge::MAX_HEADER_BYTES;
    let (server, _dir) = server_with(Limits::default()).await;
    let request = |header_bytes: usize| {
        format!(
            "GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
            "p".repeat(header_bytes)
        )
    };
    let (code, _, _) = raw(&server, &request(MAX_HEADER_BYTES + 1024)).await;
    assert_eq!(code, 431, "a header block over {MAX_HEADER_BYTES} bytes");
    // A large header block under the limit is served.
    let (code, _, body) = raw(&server, &request(MAX_HEADER_BYTES / 4)).await;
    assert_eq!(code, 200, "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_inflight_bound_get_429() {
    let (server, _dir) = server_with(Limits {
        max_mutating_requests_inflight: 1,
        ..Limits::default()
    })
    .await;
    // A create whose body never finishes holds the only mutating slot.
    let mut held = common::tls_connect(&server).await;
    held.write_all(
        b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\"",
    )
    .await
    .unwrap();
    let create = "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 62\r\nConnection: close\r\n\r\n{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}}";
    // The held request reaches the server asynchronously: wait for the 429 it causes.
    let (code, head, body) = common::eventually(
        "a second create to be refused",
        Duration::from_secs(15),
        async || {
            let answer = raw(&server, create).await;
            (answer.0 == 429).then_some(answer)
        },
    )
    .await;
    assert_eq!(code, 429);
    assert!(
        head.to_ascii_lowercase().contains("\r\nretry-after: 1"),
        "{head}"
    );
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "TooManyRequests");
    // Reads have their own bound, and watches are not counted.
    let (code, _, _) = raw(
        &server,
        "GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
    // Once the held request ends, creates go through again.
    drop(held);
    let (code, _, body) = common::eventually(
        "the slot to be released",
        Duration::from_secs(15),
        async || {
            let answer = raw(&server, create).await;
            (answer.0 != 429).then_some(answer)
        },
    )
    .await;
    assert_eq!(code, 201, "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_reads_the_openapi_schemas() {
    let t = common::start().await;
    let spec = t.kubectl(&["explain", "pod.spec"]).success();
    assert!(spec.contains("KIND:       Pod"), "{spec}");
    assert!(spec.contains("FIELD: spec <PodSpec>"), "{spec}");
    assert!(
        spec.contains("containers\t<[]Container> -required-"),
        "{spec}"
    );
    let resources = t
        .kubectl(&["explain", "pods.spec.containers.resources"])
        .success();
    assert!(
        resources.contains("limits\t<map[string]Quantity>"),
        "{resources}"
    );
    assert!(
        resources.contains("requests\t<map[string]Quantity>"),
        "{resources}"
    );
    // Other built-in groups, and custom resources (Ferry's CRDs are installed).
    let lease = t.kubectl(&["explain", "leases.spec"]).success();
    assert!(lease.contains("holderIdentity"), "{lease}");
    let podgroup = t.kubectl(&["explain", "podgroups"]).success();
    assert!(podgroup.contains("KIND:       PodGroup"), "{podgroup}");
    t.plane.stop().await;
}

const JOB_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: trainjobs.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: trainjobs, singular: trainjob, kind: TrainJob}
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: State, type: string, jsonPath: ".status.conditions[-1:].type"}
    - {name: Ready, type: string, jsonPath: ".status.conditions[?(@.type==\"Ready\")].status"}
    - {name: Images, type: string, jsonPath: ".spec.images[*]"}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_printer_columns_use_kubectl_jsonpath() {
    let t = common::start().await;
    t.kubectl_stdin(&["apply", "-f", "-"], JOB_CRD).success();
    let job = r#"{"apiVersion": "example.com/v1", "kind": "TrainJob", "metadata": {"name": "j1"},
        "spec": {"images": ["trainer:1", "sidecar:2"]},
        "status": {"conditions": [{"type": "Created", "status": "True"},
                                  {"type": "Ready", "status": "False"},
                                  {"type": "Running", "status": "True"}]}}"#;
    common::eventually(
        "the CRD to be served",
        Duration::from_secs(15),
        async || {
            t.kubectl_stdin(&["create", "-f", "-"], job)
                .ok
                .then_some(())
        },
    )
    .await;
    let table = t.kubectl(&["get", "trainjobs"]).success();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    // Kubernetes shows the first value a column's path selects.
    assert_eq!(row[..4], ["j1", "Running", "False", "trainer:1"], "{table}");
    t.plane.stop().await;
}
