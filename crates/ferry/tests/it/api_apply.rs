//! Server-side apply and field ownership, driven by the real kubectl: managedFields,
//! conflicts between managers, `--force-conflicts`, pruning of fields a manager stops
//! applying, the hand-over from client-side apply, and custom resources.

use crate::common;

use serde_json::Value;

fn config_map(data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n{data}"
    )
}

/// The object as JSON, managedFields included.
fn get_json(t: &common::TestPlane, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&t.kubectl(&all).success()).expect("kubectl prints JSON")
}

/// The `fieldsV1` of `manager`'s entry with `operation`, or null.
fn fields_of(object: &Value, manager: &str, operation: &str) -> Value {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_tracks_owners_and_conflicts() {
    let t = common::start_with(|c| c.scheduler = false).await;
    let first = config_map("  key: one\n  extra: here\n");
    let out = t
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], &first)
        .success();
    assert!(
        out.contains("configmap/settings serverside-applied"),
        "{out}"
    );

    // managedFields are served (kubectl hides them unless asked).
    let yaml = t
        .kubectl(&[
            "get",
            "cm",
            "settings",
            "-o",
            "yaml",
            "--show-managed-fields",
        ])
        .success();
    assert!(yaml.contains("manager: kubectl"), "{yaml}");
    assert!(yaml.contains("operation: Apply"), "{yaml}");
    assert!(yaml.contains("fieldsType: FieldsV1"), "{yaml}");
    assert!(yaml.contains("f:key: {}"), "{yaml}");
    let hidden = t
        .kubectl(&["get", "cm", "settings", "-o", "yaml"])
        .success();
    assert!(!hidden.contains("managedFields"), "{hidden}");
    let cm = get_json(&t, &["cm", "settings"]);
    assert_eq!(
        fields_of(&cm, "kubectl", "Apply"),
        serde_json::json!({"f:data": {"f:extra": {}, "f:key": {}}})
    );

    // A second manager changing the field conflicts, with kubectl's message.
    let theirs = config_map("  key: two\n");
    let err = t
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            &theirs,
        )
        .failure();
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .data.key"#),
        "{err}"
    );
    assert_eq!(
        t.kubectl(&["get", "cm", "settings", "-o", "jsonpath={.data.key}"])
            .success(),
        "one",
        "a refused apply changes nothing"
    );

    // The same value is shared without a conflict.
    t.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=same", "-f", "-"],
        &config_map("  extra: here\n"),
    )
    .success();

    // --force-conflicts takes the field over.
    t.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &theirs,
    )
    .success();
    let cm = get_json(&t, &["cm", "settings"]);
    assert_eq!(cm["data"]["key"], "two");
    assert_eq!(
        fields_of(&cm, "other", "Apply"),
        serde_json::json!({"f:data": {"f:key": {}}})
    );
    assert_eq!(
        fields_of(&cm, "kubectl", "Apply"),
        serde_json::json!({"f:data": {"f:extra": {}}}),
        "kubectl lost .data.key"
    );
    assert_eq!(
        fields_of(&cm, "same", "Apply"),
        serde_json::json!({"f:data": {"f:extra": {}}})
    );

    // kubectl stops applying .data.extra, but "same" still owns it: it stays. When "same"
    // stops too, it goes.
    t.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &config_map("  key: two\n"),
    )
    .success();
    let cm = get_json(&t, &["cm", "settings"]);
    assert_eq!(cm["data"]["extra"], "here");
    t.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=same", "-f", "-"],
        &config_map("  key: two\n"),
    )
    .success();
    t.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=same", "-f", "-"],
        &config_map("  other: value\n"),
    )
    .success();
    let cm = get_json(&t, &["cm", "settings"]);
    assert_eq!(
        cm["data"],
        serde_json::json!({"key": "two", "other": "value"}),
        "a field no manager applies any more is removed"
    );

    // An Update (kubectl edit, patch, replace) takes the fields it changes.
    t.kubectl(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"key":"patched"}}"#,
    ])
    .success();
    let cm = get_json(&t, &["cm", "settings"]);
    assert_eq!(
        fields_of(&cm, "kubectl-patch", "Update"),
        serde_json::json!({"f:data": {"f:key": {}}})
    );
    let err = t
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            &theirs,
        )
        .failure();
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl-patch" using v1 at "#)
            && err.contains(": .data.key"),
        "{err}"
    );
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_hands_over_to_server_side_and_back() {
    let t = common::start_with(|c| c.scheduler = false).await;
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &config_map("  a: \"1\"\n  b: \"2\"\n"),
    )
    .success();
    let cm = get_json(&t, &["cm", "settings"]);
    assert_eq!(
        fields_of(&cm, "kubectl-client-side-apply", "Update")["f:data"],
        serde_json::json!({".": {}, "f:a": {}, "f:b": {}})
    );
    // Another manager gets the conflict with client-side apply's manager...
    let changed = config_map("  a: \"1\"\n  b: \"3\"\n");
    let err = t
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            &changed,
        )
        .failure();
    assert!(
        err.contains(
            r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1"#
        ) && err.contains(".data.b"),
        "{err}"
    );
    // ...but kubectl's own server-side apply takes over what client-side apply set.
    t.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &changed)
        .success();
    let cm = get_json(&t, &["cm", "settings"]);
    assert_eq!(cm["data"]["b"], "3");
    assert_eq!(
        fields_of(&cm, "kubectl", "Apply"),
        serde_json::json!({"f:data": {"f:a": {}, "f:b": {}}})
    );
    // And back to client-side apply: the annotation followed, so dropping b removes it.
    t.kubectl_stdin(&["apply", "-f", "-"], &config_map("  a: \"1\"\n"))
        .success();
    let cm = get_json(&t, &["cm", "settings"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "1"}));
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_of_built_in_lists_and_custom_resources() {
    let t = common::start_with(|c| c.scheduler = false).await;
    // A Service's ports merge by port and protocol: a second manager's port is kept.
    let service = |ports: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  selector: {{app: web}}\n  ports:\n{ports}"
        )
    };
    t.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &service("  - name: http\n    port: 80\n"),
    )
    .success();
    t.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=tls", "-f", "-"],
        &service("  - name: https\n    port: 443\n"),
    )
    .success();
    let web = get_json(&t, &["service", "web"]);
    let ports: Vec<i64> = web["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [80, 443], "{web}");
    assert!(
        fields_of(&web, "tls", "Apply")["f:spec"]["f:ports"]
            .get(r#"k:{"port":443,"protocol":"TCP"}"#)
            .is_some(),
        "{web}"
    );
    // kubectl drops its port 80: only 443 is left.
    t.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &service("  - name: https\n    port: 443\n"),
    )
    .success();
    let web = get_json(&t, &["service", "web"]);
    assert_eq!(web["spec"]["ports"].as_array().unwrap().len(), 1, "{web}");
    assert_eq!(web["spec"]["ports"][0]["port"], 443, "{web}");

    // A custom resource with a list-map in its schema.
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: pools.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: pools, singular: pool, kind: Pool}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              workers:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  properties:
                    name: {type: string}
                    gpus: {type: integer}
"#;
    t.kubectl_stdin(&["apply", "--server-side", "-f", "-"], crd)
        .success();
    let pool = |spec: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Pool\nmetadata:\n  name: p\n  namespace: default\nspec:\n{spec}"
        )
    };
    let mine = pool("  size: 2\n  workers:\n  - name: a\n    gpus: 1\n");
    let applied = t
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], &mine)
        .success();
    assert!(
        applied.contains("pool.example.com/p serverside-applied"),
        "{applied}"
    );
    t.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=scaler",
            "-f",
            "-",
        ],
        &pool("  workers:\n  - name: b\n    gpus: 4\n"),
    )
    .success();
    let p = get_json(&t, &["pool", "p"]);
    assert_eq!(
        p["spec"],
        serde_json::json!({"size": 2, "workers": [{"name": "a", "gpus": 1}, {"name": "b", "gpus": 4}]})
    );
    let err = t
        .kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=scaler",
                "-f",
                "-",
            ],
            &pool("  size: 3\n"),
        )
        .failure();
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.size"#),
        "{err}"
    );
    // kubectl re-applies its own configuration: the scaler's worker stays.
    t.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &mine)
        .success();
    let p = get_json(&t, &["pool", "p"]);
    assert_eq!(p["spec"]["workers"].as_array().unwrap().len(), 2, "{p}");
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_over_the_api_needs_a_manager_and_reports_conflicts() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    let t = common::start_with(|c| c.scheduler = false).await;
    let api_error = |e: kube::Error| match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other}"),
    };
    let raw = |method: &str, path: &str, content_type: &str, user_agent: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .header("user-agent", user_agent)
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"v"}}"#;
    // An apply names its field manager (Kubernetes answers 422 Invalid PatchOptions).
    let e = api_error(
        t.client
            .request_text(raw(
                "PATCH",
                "/api/v1/namespaces/default/configmaps/c",
                "application/apply-patch+yaml",
                "tool/1",
                body,
            ))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        r#"PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch"#
    );
    // force is for applies only.
    let e = api_error(
        t.client
            .request_text(raw(
                "PATCH",
                "/api/v1/namespaces/default/configmaps/c?force=true",
                "application/merge-patch+json",
                "tool/1",
                "{}",
            ))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{}", e.message);
    // Without fieldManager, a create's manager is the User-Agent's program name.
    t.client
        .request_text(raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            "my-tool/1.2 (linux/amd64) ferry/test",
            body,
        ))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let cm = cms.get("c").await.unwrap();
    let managed = cm.metadata.managed_fields.unwrap_or_default();
    assert_eq!(managed.len(), 1, "{managed:?}");
    assert_eq!(managed[0].manager.as_deref(), Some("my-tool"));
    assert_eq!(managed[0].operation.as_deref(), Some("Update"));

    // kube-rs server-side apply: a conflict is a 409 naming the field and its manager.
    let applied: ConfigMap = serde_json::from_str(body).unwrap();
    let e = api_error(
        cms.patch(
            "c",
            &PatchParams::apply("controller"),
            &Patch::Apply(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "other"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message
            .starts_with(r#"Apply failed with 1 conflict: conflict with "my-tool" using v1 at "#)
            && e.message.ends_with(": .data.k"),
        "{}",
        e.message
    );
    // The same value is no conflict; forcing another one takes the field.
    cms.patch(
        "c",
        &PatchParams::apply("controller"),
        &Patch::Apply(&applied),
    )
    .await
    .unwrap();
    let forced = cms
        .patch(
            "c",
            &PatchParams::apply("controller").force(),
            &Patch::Apply(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "other"}})),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "other");
    let entries = forced.metadata.managed_fields.unwrap_or_default();
    let fields = |manager: &str| {
        entries
            .iter()
            .find(|e| e.manager.as_deref() == Some(manager))
            .and_then(|e| e.fields_v1.as_ref())
            .map(|f| f.0.clone())
    };
    assert_eq!(
        fields("controller"),
        Some(serde_json::json!({"f:data": {"f:k": {}}}))
    );
    assert_eq!(
        fields("my-tool"),
        Some(serde_json::json!({"f:data": {}})),
        "my-tool lost .data.k and keeps the map it created"
    );
    t.plane.stop().await;
}
