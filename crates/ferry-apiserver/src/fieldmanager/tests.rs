use super::*;
use serde_json::json;

const NOW: &str = "2026-01-01T00:00:00Z";
const LATER: &str = "2026-01-01T00:01:00Z";

fn writer<'a>(manager: &'a str, kind: &'a str) -> Writer<'a> {
    Writer {
        manager,
        subresource: "",
        api_version: "v1",
        status_subresource: false,
        types: Types::builtin(kind),
        now: NOW,
    }
}

fn entries(object: &Value) -> Vec<Entry> {
    ManagedFields::decode(object).unwrap().0
}

fn fields_of(object: &Value, manager: &str) -> Value {
    entries(object)
        .iter()
        .find(|e| e.manager == manager)
        .map(|e| e.fields.to_fields_v1())
        .unwrap_or(Value::Null)
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, "data": data})
}

#[test]
fn create_is_an_update_that_owns_every_field_but_identity() {
    let mut new = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "uid": "u", "labels": {"app": "x"}}, "data": {"k": "v"}});
    update(None, &mut new, None, &writer("kubectl-create", "ConfigMap"));
    let e = &entries(&new)[0];
    assert_eq!(
        (e.manager.as_str(), e.operation, e.api_version.as_str()),
        ("kubectl-create", Operation::Update, "v1")
    );
    assert_eq!(e.time.as_deref(), Some(NOW));
    assert_eq!(
        e.fields.to_fields_v1(),
        json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:app": {}}}})
    );
    assert_eq!(
        new["metadata"]["managedFields"][0]["fieldsType"],
        "FieldsV1"
    );
}

#[test]
fn an_update_takes_the_fields_it_changes() {
    let mut old = cm(json!({"a": "1", "b": "2"}));
    update(None, &mut old, None, &writer("first", "ConfigMap"));
    let mut new = old.clone();
    new["data"]["a"] = json!("changed");
    new["data"]["c"] = json!("3");
    new["data"].as_object_mut().unwrap().remove("b");
    let mut w = writer("second", "ConfigMap");
    w.now = LATER;
    update(Some(&old), &mut new, None, &w);
    assert_eq!(fields_of(&new, "first"), json!({"f:data": {}}));
    assert_eq!(
        fields_of(&new, "second"),
        json!({"f:data": {"f:a": {}, "f:c": {}}})
    );
    // Nothing changed: the managedFields stay exactly as they were.
    let mut same = new.clone();
    update(Some(&new), &mut same, None, &writer("third", "ConfigMap"));
    assert_eq!(same, new);
}

#[test]
fn update_entries_are_capped() {
    let mut object = cm(json!({}));
    update(None, &mut object, None, &writer("m00", "ConfigMap"));
    for i in 1..13 {
        let mut next = object.clone();
        next["data"][format!("k{i:02}")] = json!("v");
        let manager = format!("m{i:02}");
        let now = format!("2026-01-01T00:00:{i:02}Z");
        let w = Writer {
            manager: &manager,
            now: &now,
            ..writer("", "ConfigMap")
        };
        update(Some(&object), &mut next, None, &w);
        object = next;
    }
    let es = entries(&object);
    assert_eq!(es.len(), MAX_UPDATE_MANAGERS);
    let ancient = es.iter().find(|e| e.manager == ANCIENT_CHANGES).unwrap();
    // The four oldest (m00 to m03) went into it, with the time of the newest of them.
    assert_eq!(
        ancient.fields.to_fields_v1(),
        json!({"f:data": {".": {}, "f:k01": {}, "f:k02": {}, "f:k03": {}}})
    );
    assert_eq!(ancient.time.as_deref(), Some("2026-01-01T00:00:03Z"));
    assert!(es.iter().any(|e| e.manager == "m12"));
}

#[test]
fn status_belongs_to_the_status_subresource() {
    let mut w = writer("kubelet", "Pod");
    w.status_subresource = true;
    let mut pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n"}, "status": {"phase": "Pending"}});
    update(None, &mut pod, None, &w);
    assert_eq!(
        fields_of(&pod, "kubelet"),
        json!({"f:spec": {".": {}, "f:nodeName": {}}})
    );
    let mut running = pod.clone();
    running["status"]["phase"] = json!("Running");
    w.subresource = "status";
    update(Some(&pod), &mut running, None, &w);
    let status_entry = entries(&running)
        .into_iter()
        .find(|e| e.subresource == "status")
        .unwrap();
    assert_eq!(
        status_entry.fields.to_fields_v1(),
        json!({"f:status": {"f:phase": {}}})
    );
}

#[test]
fn an_apply_to_status_owns_only_status() {
    let mut w = writer("controller", "Widget");
    w.status_subresource = true;
    let live = apply(
        None,
        &json!({"metadata": {"name": "w"}, "spec": {"size": 1}, "status": {"ready": 0}}),
        &w,
        false,
    )
    .unwrap();
    assert_eq!(
        fields_of(&live, "controller"),
        json!({"f:spec": {"f:size": {}}})
    );
    w.subresource = "status";
    let out = apply(
        Some(&live),
        &json!({"metadata": {"name": "w"}, "spec": {"size": 5}, "status": {"ready": 1}}),
        &w,
        false,
    )
    .unwrap();
    let status_entry = entries(&out)
        .into_iter()
        .find(|e| e.subresource == "status")
        .unwrap();
    assert_eq!(status_entry.operation, Operation::Apply);
    assert_eq!(
        status_entry.fields.to_fields_v1(),
        json!({"f:status": {"f:ready": {}}})
    );
    assert_eq!(out["status"]["ready"], 1);
}

#[test]
fn incoming_managed_fields_replace_or_clear() {
    let mut old = cm(json!({"a": "1"}));
    update(None, &mut old, None, &writer("first", "ConfigMap"));
    let mut new = old.clone();
    new["data"]["a"] = json!("2");
    update(
        Some(&old),
        &mut new,
        Some(&json!([{}])),
        &writer("second", "ConfigMap"),
    );
    assert_eq!(entries(&new).len(), 1);
    assert_eq!(entries(&new)[0].manager, "second");
    // Garbage from a client is ignored: the live entries are kept.
    let mut other = old.clone();
    other["data"]["a"] = json!("3");
    update(
        Some(&old),
        &mut other,
        Some(&json!([{"operation": "Nope"}])),
        &writer("x", "ConfigMap"),
    );
    assert_eq!(entries(&other).len(), 2);
}

#[test]
fn apply_creates_and_conflicts_name_the_owner() {
    let config = cm(json!({"key": "v1"}));
    let created = apply(None, &config, &writer("kubectl", "ConfigMap"), false).unwrap();
    assert_eq!(created["data"], json!({"key": "v1"}));
    let e = &entries(&created)[0];
    assert_eq!(
        (e.operation, e.manager.as_str()),
        (Operation::Apply, "kubectl")
    );
    assert_eq!(e.fields.to_fields_v1(), json!({"f:data": {"f:key": {}}}));

    let other = cm(json!({"key": "v2"}));
    let err = apply(Some(&created), &other, &writer("other", "ConfigMap"), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl\": .data.key"
    );
    let status = ApiError::from(err).status();
    assert_eq!(status["code"], 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl\"", "field": ".data.key"}])
    );

    let forced = apply(Some(&created), &other, &writer("other", "ConfigMap"), true).unwrap();
    assert_eq!(forced["data"]["key"], "v2");
    assert_eq!(entries(&forced).len(), 1, "kubectl lost its only field");
    assert_eq!(entries(&forced)[0].manager, "other");
}

#[test]
fn update_owners_are_named_with_version_and_time() {
    let mut live = cm(json!({"key": "a", "other": "b"}));
    update(
        None,
        &mut live,
        None,
        &writer("kubectl-client-side-apply", "ConfigMap"),
    );
    let err = apply(
        Some(&live),
        &cm(json!({"key": "z", "other": "y"})),
        &writer("m", "ConfigMap"),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using v1 at {NOW}:\n- .data.key\n- .data.other"
        )
    );
}

#[test]
fn same_value_is_shared_without_conflict() {
    let config = cm(json!({"key": "v"}));
    let a = apply(None, &config, &writer("a", "ConfigMap"), false).unwrap();
    let b = apply(Some(&a), &config, &writer("b", "ConfigMap"), false).unwrap();
    assert_eq!(fields_of(&b, "a"), fields_of(&b, "b"));
    // a stops applying the field: b still owns it, so it stays.
    let mut bare = cm(json!({}));
    bare.as_object_mut().unwrap().remove("data");
    let c = apply(Some(&b), &bare, &writer("a", "ConfigMap"), false).unwrap();
    assert_eq!(c["data"]["key"], "v");
    // b stops too: now it goes.
    let d = apply(Some(&c), &bare, &writer("b", "ConfigMap"), false).unwrap();
    assert!(d.get("data").is_none(), "{d}");
}

#[test]
fn containers_merge_by_name_and_ports_by_port_and_protocol() {
    let pod = |containers: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}});
    let mine = pod(json!([{"name": "main", "image": "a:1", "ports": [{"containerPort": 80}]}]));
    let live = apply(None, &mine, &writer("me", "Pod"), false).unwrap();
    assert_eq!(
        fields_of(&live, "me")["f:spec"]["f:containers"]["k:{\"name\":\"main\"}"]["f:ports"],
        json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}})
    );
    // Another manager adds a sidecar by an update.
    let mut with_sidecar = live.clone();
    with_sidecar["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "s:1"}));
    update(
        Some(&live),
        &mut with_sidecar,
        None,
        &writer("injector", "Pod"),
    );
    // Re-applying my container keeps the sidecar; changing my image conflicts with nobody.
    let changed = pod(json!([{"name": "main", "image": "a:2", "ports": [{"containerPort": 80}]}]));
    let out = apply(Some(&with_sidecar), &changed, &writer("me", "Pod"), false).unwrap();
    let names: Vec<&str> = out["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "side"]);
    assert_eq!(out["spec"]["containers"][0]["image"], "a:2");
    // Changing the sidecar's image conflicts with the injector.
    let grab = pod(
        json!([{"name": "main", "image": "a:2", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "s:2"}]),
    );
    let err = apply(Some(&out), &grab, &writer("me", "Pod"), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Apply failed with 1 conflict: conflict with \"injector\" using v1 at {NOW}: .spec.containers[name=\"side\"].image"
        )
    );
    // Duplicate keys in an applied configuration are refused.
    let dup = pod(json!([{"name": "x"}, {"name": "x"}]));
    let err = apply(None, &dup, &writer("me", "Pod"), false).unwrap_err();
    assert!(matches!(err, FieldManagerError::InvalidConfig(_)), "{err}");
    assert!(
        err.to_string()
            .contains("duplicate entries for key [name=\"x\"]"),
        "{err}"
    );
}

#[test]
fn custom_resources_follow_their_schema() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "workers": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "size": {"type": "integer"}}}},
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {"type": "string"}}}}
    }}}});
    let w = Writer {
        types: Types::custom("Widget", Some(&schema)),
        api_version: "example.com/v1",
        ..writer("me", "Widget")
    };
    let config = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"workers": [{"name": "a", "size": 1}], "tags": ["x"], "args": ["1", "2"], "env": {"E": {"v": "1"}}}});
    let live = apply(None, &config, &w, false).unwrap();
    assert_eq!(
        fields_of(&live, "me"),
        json!({"f:spec": {"f:args": {}, "f:env": {"f:E": {".": {}, "f:v": {}}}, "f:tags": {"v:\"x\"": {}},
            "f:workers": {"k:{\"name\":\"a\"}": {".": {}, "f:name": {}, "f:size": {}}}}})
    );
    let mut grown = live.clone();
    grown["spec"]["workers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "b", "size": 2}));
    grown["spec"]["tags"]
        .as_array_mut()
        .unwrap()
        .push(json!("y"));
    update(
        Some(&live),
        &mut grown,
        None,
        &Writer {
            manager: "other",
            ..w.clone()
        },
    );
    let next = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"workers": [{"name": "a", "size": 5}], "tags": ["x"], "args": ["3"]}});
    let out = apply(Some(&grown), &next, &w, false).unwrap();
    assert_eq!(
        out["spec"]["workers"],
        json!([{"name": "a", "size": 5}, {"name": "b", "size": 2}])
    );
    assert_eq!(out["spec"]["tags"], json!(["x", "y"]));
    assert_eq!(
        out["spec"]["args"],
        json!(["3"]),
        "atomic lists are replaced"
    );
    assert!(
        out["spec"].get("env").is_none(),
        "dropped from the configuration: {out}"
    );
}

#[test]
fn client_side_apply_is_taken_over_by_kubectl() {
    let last = cm(json!({"key": "old"}));
    let mut live = last.clone();
    live["metadata"]["annotations"] = json!({LAST_APPLIED: last.to_string()});
    update(
        None,
        &mut live,
        None,
        &writer("kubectl-client-side-apply", "ConfigMap"),
    );
    let config = cm(json!({"key": "new"}));
    // Another manager name gets the conflict; kubectl's own server-side apply does not.
    assert!(apply(Some(&live), &config, &writer("other", "ConfigMap"), false).is_err());
    let out = apply(Some(&live), &config, &writer("kubectl", "ConfigMap"), false).unwrap();
    assert_eq!(out["data"]["key"], "new");
    let annotation: Value = serde_json::from_str(
        out["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        annotation["data"]["key"], "new",
        "the annotation follows the applied configuration"
    );
    // A field someone changed since client-side apply still conflicts.
    let mut edited = live.clone();
    edited["data"]["key"] = json!("edited");
    update(
        Some(&live),
        &mut edited,
        None,
        &writer("kubectl-edit", "ConfigMap"),
    );
    let err = apply(
        Some(&edited),
        &config,
        &writer("kubectl", "ConfigMap"),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("kubectl-edit"), "{err}");
}

#[test]
fn applied_configurations_are_checked() {
    assert!(check_config(&cm(json!({})), "c").is_ok());
    assert_eq!(check_config(&json!([1]), "c").unwrap_err().code, 400);
    let other = check_config(&cm(json!({})), "d").unwrap_err();
    assert_eq!(
        other.message,
        "the name of the object (c) does not match the name on the URL (d)"
    );
    let mut with_fields = cm(json!({}));
    with_fields["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        check_config(&with_fields, "c").unwrap_err().message,
        "metadata.managedFields must be nil"
    );
}

#[test]
fn manager_names_and_options() {
    assert_eq!(
        manager_name("", "kubectl/v1.32.4 (linux/amd64) kubernetes/abc"),
        "kubectl"
    );
    assert_eq!(manager_name("mine", "kubectl/v1.32.4"), "mine");
    assert_eq!(manager_name("", "kube-rs/0.99"), "kube-rs");
    assert_eq!(manager_name("", &"x".repeat(300)).len(), 128);
    assert_eq!(manager_name("", "a\u{7}b/1"), "ab");
    assert!(validate_options("m", true, Some(true)).is_ok());
    let e = validate_options("", true, None).unwrap_err();
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let e = validate_options("m", false, Some(false)).unwrap_err();
    assert!(
        e.message
            .contains("force: Forbidden: may not be specified for non-apply patch"),
        "{}",
        e.message
    );
    assert_eq!(
        validate_options(&"x".repeat(129), false, None)
            .unwrap_err()
            .code,
        422
    );
}

/// Objects over a small vocabulary: nested maps, a keyed container list, finalizers.
fn arb_config() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        (0i64..3).prop_map(Value::from),
        "[xy]".prop_map(Value::from),
    ];
    let tree = leaf.prop_recursive(3, 16, 3, |inner| {
        proptest::collection::btree_map("[abc]", inner, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    });
    let container = (
        "[pq]",
        "[12]",
        proptest::option::of(proptest::collection::btree_map("[ab]", "[xy]", 0..2)),
    )
        .prop_map(|(name, image, extra)| {
            let mut c = json!({"name": name, "image": image});
            if let Some(extra) = extra {
                c["env"] = Value::Array(
                    extra
                        .into_iter()
                        .map(|(k, v)| json!({"name": k, "value": v}))
                        .collect(),
                );
            }
            c
        });
    (
        proptest::collection::btree_map("[ab]", "[xy]", 0..3),
        proptest::collection::btree_set("[fg]", 0..3),
        proptest::collection::vec(container, 0..3),
        proptest::option::of(tree),
    )
        .prop_map(|(labels, finalizers, containers, extra)| {
            let mut seen = std::collections::BTreeSet::new();
            let containers: Vec<Value> = containers
                .into_iter()
                .filter(|c| seen.insert(c["name"].as_str().unwrap_or_default().to_string()))
                .collect();
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
            if !labels.is_empty() {
                pod["metadata"]["labels"] = json!(labels);
            }
            if !finalizers.is_empty() {
                pod["metadata"]["finalizers"] = json!(finalizers);
            }
            if !containers.is_empty() {
                pod["spec"] = json!({"containers": containers});
            }
            if let Some(extra) = extra {
                pod["extra"] = extra;
            }
            pod
        })
}

fn owned_by_object(object: &Value) -> FieldSet {
    writer("", "Pod").scope(
        &typed::field_set(
            &without_managed_fields(object),
            &Types::builtin("Pod").root(),
        )
        .unwrap(),
    )
}

proptest::proptest! {
    #[test]
    fn apply_is_idempotent(a in arb_config()) {
        let w = writer("me", "Pod");
        let once = apply(None, &a, &w, false).unwrap();
        let twice = apply(Some(&once), &a, &w, false).unwrap();
        proptest::prop_assert_eq!(once, twice);
    }

    #[test]
    fn applying_b_after_a_leaves_exactly_b(a in arb_config(), b in arb_config()) {
        let w = writer("me", "Pod");
        let first = apply(None, &a, &w, false).unwrap();
        let second = apply(Some(&first), &b, &w, false).unwrap();
        let mine = w.scope(&typed::field_set(&b, &Types::builtin("Pod").root()).unwrap());
        let es = entries(&second);
        let entry = es.iter().find(|e| e.manager == "me");
        proptest::prop_assert_eq!(entry.map(|e| e.fields.clone()).unwrap_or_default(), mine.clone());
        proptest::prop_assert_eq!(owned_by_object(&second), mine);
    }

    #[test]
    fn equal_values_never_conflict(a in arb_config(), b in arb_config()) {
        let first = apply(None, &a, &writer("one", "Pod"), false).unwrap();
        let both = apply(Some(&first), &b, &writer("two", "Pod"), true).unwrap();
        // Applying what is already there, by a third manager, never conflicts.
        let current = without_managed_fields(&both);
        let third = apply(Some(&both), &current, &writer("three", "Pod"), false);
        proptest::prop_assert!(third.is_ok(), "{:?}", third.err());
        proptest::prop_assert_eq!(without_managed_fields(&third.unwrap()), without_managed_fields(&both));
    }

    #[test]
    fn a_changed_value_owned_by_another_conflicts(a in arb_config()) {
        let first = apply(None, &a, &writer("one", "Pod"), false).unwrap();
        let mut changed = a.clone();
        changed["metadata"]["labels"]["zz"] = json!("1");
        let second = apply(Some(&first), &changed, &writer("two", "Pod"), false).unwrap();
        changed["metadata"]["labels"]["zz"] = json!("2");
        let err = apply(Some(&second), &changed, &writer("one", "Pod"), false).unwrap_err();
        proptest::prop_assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"two\": .metadata.labels.zz");
    }
}

#[test]
fn numbers_equal_by_value_share_ownership_without_conflict() {
    // What a typed round trip writes (`1.0`) and what a manifest says (`1`) are one value,
    // as for structured-merge-diff: co-owned, no conflict.
    let deployment = |replicas: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "n"}, "spec": {"replicas": replicas}})
    };
    let created = apply(
        None,
        &deployment(json!(1.0)),
        &writer("ferry", "Deployment"),
        false,
    )
    .unwrap();
    let shared = apply(
        Some(&created),
        &deployment(json!(1)),
        &writer("kubectl", "Deployment"),
        false,
    )
    .expect("no conflict on an equal number");
    assert_eq!(entries(&shared).len(), 2, "both own .spec.replicas");
    let err = apply(
        Some(&created),
        &deployment(json!(2)),
        &writer("kubectl", "Deployment"),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains(".spec.replicas"), "{err}");
    assert!(typed::same_value(
        &json!({"a": [0, 1.5]}),
        &json!({"a": [0.0, 1.5]})
    ));
    assert!(!typed::same_value(&json!([0]), &json!([0, 0])));
}
