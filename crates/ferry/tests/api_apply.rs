//! Server-side apply and field ownership, driven by the real kubectl: managedFields,
//! conflicts between managers, `--force-conflicts`, pruning of fields a manager stops
//! applying, the hand-over from client-side apply, and custom resources.

mod common;

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
