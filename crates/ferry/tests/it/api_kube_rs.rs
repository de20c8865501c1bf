//! The embedded API server driven by kube-rs: typed and dynamic APIs, watchers, CRDs,
//! subresources, errors, garbage collection and the first scheduler.

use crate::common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::json;

use common::eventually;

const WAIT: Duration = Duration::from_secs(15);

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_list_selectors_and_conflicts() {
    let t = common::start().await;
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            names.contains(&ns.to_string()),
            "{ns} missing from {names:?}"
        );
    }

    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i}"), json!({"app": "web", "tier": tier})),
        )
        .await
        .unwrap();
    }
    let created = pods.get("p0").await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));

    let front = pods
        .list(&ListParams::default().labels("tier in (front),app=web"))
        .await
        .unwrap();
    assert_eq!(front.items.len(), 4);
    let by_name = pods
        .list(&ListParams::default().fields("metadata.name=p3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    // Pages of 3: 3 + 3 + 1.
    let mut seen = 0;
    let mut params = ListParams::default().limit(3);
    loop {
        let page = pods.list(&params).await.unwrap();
        seen += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(seen, 7);

    // A stale resourceVersion is a conflict; the current one works.
    let mut stale = pods.get("p1").await.unwrap();
    pods.patch(
        "p1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    stale
        .metadata
        .labels
        .get_or_insert_default()
        .insert("y".into(), "2".into());
    let conflict = api_error(
        pods.replace("p1", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(conflict.code, 409);
    assert_eq!(conflict.reason, "Conflict");
    let mut fresh = pods.get("p1").await.unwrap();
    fresh
        .metadata
        .labels
        .get_or_insert_default()
        .insert("y".into(), "2".into());
    let replaced = pods
        .replace("p1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.labels.unwrap()["x"], "1");

    // Strategic merge patch merges containers by name; JSON patch edits precisely.
    let patched = pods
        .patch(
            "p2",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}),
            ),
        )
        .await
        .unwrap();
    let containers = patched.spec.unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("busybox:1.36"));
    assert_eq!(
        containers[0].command.as_deref(),
        Some(&["true".to_string()][..])
    );
    let patched = pods
        .patch(
            "p2",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/metadata/labels/z", "value": "3"}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["z"], "3");

    // Status goes through the subresource only.
    let with_status = pods
        .patch_status(
            "p2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        with_status.status.unwrap().phase.as_deref(),
        Some("Running")
    );
    let ignored = pods
        .patch(
            "p2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.status.unwrap().phase.as_deref(), Some("Running"));

    // An unbound pod is deleted at once.
    pods.delete("p0", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(pods.get("p0").await.unwrap_err()).code, 404);
    let collection = pods
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=back"),
        )
        .await
        .unwrap();
    assert!(collection.left().is_some());
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
    t.plane.stop().await;
}

#[tokio::test]
async fn errors_have_the_right_codes_and_messages() {
    let t = common::start().await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("dup", json!({})))
        .await
        .unwrap();
    let e = api_error(
        pods.create(&PostParams::default(), &pod("dup", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    let e = api_error(pods.get("missing").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert!(e.message.contains("\"missing\" not found"), "{}", e.message);

    let e = api_error(
        pods.create(&PostParams::default(), &pod("Bad_Name", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let causes = e.details.unwrap().causes;
    assert_eq!(causes[0].field, "metadata.name");

    let mut fractional = pod("half-gpu", json!({}));
    fractional.spec.as_mut().unwrap().containers[0].resources =
        Some(serde_json::from_value(json!({"limits": {"nvidia.com/gpu": "0.5"}})).unwrap());
    let e = api_error(
        pods.create(&PostParams::default(), &fractional)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(e.message.contains("must be an integer"), "{}", e.message);

    let other_ns: Api<Pod> = Api::namespaced(t.client.clone(), "nowhere");
    let e = api_error(
        other_ns
            .create(&PostParams::default(), &pod("x", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    assert!(
        e.message.contains("namespaces \"nowhere\" not found"),
        "{}",
        e.message
    );

    // Raw requests: malformed JSON, a wrongly typed field, an unknown kind.
    let raw = |method: &str, path: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    let e = api_error(
        t.client
            .request_text(raw("POST", "/api/v1/namespaces/default/pods", "{not json"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    let e = api_error(
        t.client
            .request_text(raw(
                "POST",
                "/api/v1/namespaces/default/pods",
                r#"{"metadata":{"name":"t"},"spec":{"containers":"oops"}}"#,
            ))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert!(
        e.message.contains("cannot be handled as a Pod"),
        "{}",
        e.message
    );
    let e = api_error(
        t.client
            .request_text(raw("GET", "/apis/nothing.example.com/v1/things", ""))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    let e = api_error(
        t.client
            .request_text(raw(
                "POST",
                "/api/v1/namespaces/default/pods?fieldValidation=Strict",
                r#"{"metadata":{"name":"t"},"spec":{"containers":[{"name":"a","imagee":"x"}]}}"#,
            ))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert!(
        e.message
            .contains("unknown field \"spec.containers[0].imagee\""),
        "{}",
        e.message
    );
    t.plane.stop().await;
}

#[tokio::test]
async fn watcher_sees_every_change_in_order() {
    let t = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let stream = watcher(cms.clone(), watcher::Config::default().labels("w=1"));
    let (listed, initial_list_done) = tokio::sync::oneshot::channel();
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut listed = Some(listed);
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.try_next().await.unwrap() {
            match event {
                watcher::Event::InitDone => {
                    if let Some(tx) = listed.take() {
                        let _ = tx.send(());
                    }
                }
                watcher::Event::Apply(cm) => seen.push(format!(
                    "apply {} {:?}",
                    cm.metadata.name.unwrap(),
                    cm.data.and_then(|d| d.get("v").cloned())
                )),
                watcher::Event::Delete(cm) => {
                    seen.push(format!("delete {}", cm.metadata.name.unwrap()))
                }
                _ => {}
            }
            if seen.iter().any(|s| s == "delete a") {
                return seen;
            }
        }
        seen
    });
    // The watcher has listed (and watches from the list's revision) before the writes.
    tokio::time::timeout(WAIT, initial_list_done)
        .await
        .expect("the watcher lists")
        .unwrap();
    let cm = |name: &str, v: &str, w: &str| -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"w": w}}, "data": {"v": v}}),
        )
        .unwrap()
    };
    cms.create(&PostParams::default(), &cm("a", "1", "1"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("ignored", "1", "0"))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    // Leaving the selection reads as a deletion to this watcher.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"w": "0"}}})),
    )
    .await
    .unwrap();
    let seen = tokio::time::timeout(WAIT, collector)
        .await
        .expect("watch events arrive")
        .unwrap();
    assert_eq!(
        seen,
        vec!["apply a Some(\"1\")", "apply a Some(\"2\")", "delete a"]
    );
    t.plane.stop().await;
}

#[tokio::test]
async fn custom_resources_with_status_and_scale() {
    let t = common::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "trainings.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "trainings", "singular": "training", "kind": "Training", "shortNames": ["tr"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.workers", "statusReplicasPath": ".status.workers"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"workers": {"type": "integer", "minimum": 1}, "image": {"type": "string"}}, "required": ["workers"]},
                    "status": {"type": "object", "properties": {"workers": {"type": "integer"}, "phase": {"type": "string"}}}
                }}}
            }]
        }
    }))
    .unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = created
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);

    let gvk = GroupVersionKind::gvk("example.com", "v1", "Training");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "trainings");
    let api: Api<DynamicObject> = Api::namespaced_with(t.client.clone(), "default", &resource);
    let mut obj = DynamicObject::new("bert", &resource);
    obj.data = json!({"spec": {"workers": 2, "image": "pytorch", "unknown": true}});
    let made = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(made.data["spec"]["workers"], 2);
    assert!(
        made.data["spec"].get("unknown").is_none(),
        "unknown fields are pruned"
    );

    let mut bad = DynamicObject::new("bad", &resource);
    bad.data = json!({"spec": {"workers": 0}});
    let e = api_error(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.workers"), "{}", e.message);

    // Status subresource.
    let status = api
        .patch_status(
            "bert",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "workers": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["phase"], "Running");
    let main = api
        .patch(
            "bert",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "pytorch:2"}, "status": {"phase": "Hacked"}})),
        )
        .await
        .unwrap();
    assert_eq!(main.data["status"]["phase"], "Running");
    assert_eq!(main.data["spec"]["image"], "pytorch:2");

    // Scale subresource.
    let scale = api.get_scale("bert").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    api.patch_scale(
        "bert",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    assert_eq!(api.get("bert").await.unwrap().data["spec"]["workers"], 5);

    // Watch through the dynamic API.
    let events = watcher(api.clone(), watcher::Config::default()).applied_objects_names();
    let first = tokio::time::timeout(WAIT, std::pin::pin!(events).next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, "bert");

    // Deleting the CRD removes its objects and stops serving it.
    crds.delete("trainings.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let e = api_error(api.get("bert").await.unwrap_err());
    assert_eq!(e.code, 404);
    t.plane.stop().await;
}

trait AppliedNames {
    fn applied_objects_names(
        self,
    ) -> futures::stream::BoxStream<'static, Result<String, watcher::Error>>;
}

impl<S> AppliedNames for S
where
    S: futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>>
        + Send
        + 'static,
{
    fn applied_objects_names(
        self,
    ) -> futures::stream::BoxStream<'static, Result<String, watcher::Error>> {
        self.filter_map(|e| async move {
            match e {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    Some(Ok(o.metadata.name.unwrap_or_default()))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        })
        .boxed()
    }
}

#[tokio::test]
async fn garbage_collection_follows_owner_references() {
    let t = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let make = |name: &str, owner: Option<&ConfigMap>| -> ConfigMap {
        let mut cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        if let Some(o) = owner {
            cm.metadata.owner_references = Some(vec![serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name, "uid": o.metadata.uid, "blockOwnerDeletion": true
            }))
            .unwrap()]);
        }
        cm
    };
    // Background: the owner goes at once, the dependent soon after.
    let owner = cms
        .create(&PostParams::default(), &make("owner", None))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &make("child", Some(&owner)))
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the dependent to be collected", WAIT, async || {
        cms.get_opt("child").await.unwrap().is_none().then_some(())
    })
    .await;

    // Foreground: the owner stays (with a finalizer) until its dependents are gone.
    let owner = cms
        .create(&PostParams::default(), &make("fg-owner", None))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &make("fg-child", Some(&owner)))
        .await
        .unwrap();
    cms.delete("fg-owner", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("foreground deletion to finish", WAIT, async || {
        (cms.get_opt("fg-owner").await.unwrap().is_none()
            && cms.get_opt("fg-child").await.unwrap().is_none())
        .then_some(())
    })
    .await;

    // Orphan: the dependent stays, without the owner reference.
    let owner = cms
        .create(&PostParams::default(), &make("o-owner", None))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &make("o-child", Some(&owner)))
        .await
        .unwrap();
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    cms.delete("o-owner", &orphan).await.unwrap();
    eventually("the owner to go", WAIT, async || {
        cms.get_opt("o-owner")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let child = cms.get("o-child").await.unwrap();
    assert!(
        child
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    t.plane.stop().await;
}

#[tokio::test]
async fn namespace_deletion_removes_its_objects() {
    let t = common::start().await;
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "team-a");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
    )
    .await
    .unwrap();
    namespaces
        .delete("team-a", &DeleteParams::default())
        .await
        .unwrap();
    let e = api_error(
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "d"}})).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert!(e.code == 403 || e.code == 404, "{e:?}");
    eventually("the namespace to go", WAIT, async || {
        namespaces
            .get_opt("team-a")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    t.plane.stop().await;
}

fn gpu_node(name: &str, gpus: u32) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": gpus.to_string()},
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": gpus.to_string()},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .unwrap()
}

fn gpu_pod(name: &str, gpus: u32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "pytorch", "command": ["true"],
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn scheduler_binds_gpu_pods_and_explains_pending_ones() {
    let t = common::start().await;
    let nodes: Api<Node> = Api::all(t.client.clone());
    let node = nodes
        .create(&PostParams::default(), &gpu_node("gpu-1", 8))
        .await
        .unwrap();
    nodes
        .replace_status("gpu-1", &PostParams::default(), &node)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    pods.create(&PostParams::default(), &gpu_pod("two", 2))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &gpu_pod("six", 6))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &gpu_pod("greedy", 1000))
        .await
        .unwrap();
    let bound = eventually("two pods to be bound", WAIT, async || {
        let two = pods.get("two").await.unwrap();
        let six = pods.get("six").await.unwrap();
        match (
            two.spec.as_ref()?.node_name.clone(),
            six.spec.as_ref()?.node_name.clone(),
        ) {
            (Some(_), Some(_)) => Some((two, six)),
            _ => None,
        }
    })
    .await;
    let gpus = |p: &Pod| {
        ferry_api::gpu::parse_assigned(
            &p.metadata.annotations.clone().unwrap()[ferry_api::gpu::POD_ASSIGNED_ANNOTATION],
        )
        .unwrap()
    };
    let mut all: Vec<u32> = gpus(&bound.0).into_iter().chain(gpus(&bound.1)).collect();
    all.sort();
    assert_eq!(all, (0..8).collect::<Vec<_>>(), "each GPU is assigned once");
    let condition = |p: &Pod| {
        p.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .cloned()
    };
    assert_eq!(condition(&bound.0).unwrap().status, "True");

    let why = eventually(
        "the greedy pod to be marked unschedulable",
        WAIT,
        async || {
            let p = pods.get("greedy").await.unwrap();
            condition(&p).filter(|c| c.status == "False")
        },
    )
    .await;
    assert_eq!(why.reason.as_deref(), Some("Unschedulable"));
    let message = why.message.unwrap();
    assert!(message.contains("0/1 nodes are available"), "{message}");
    assert!(
        message.contains("asks for 1000 GPUs; the largest node has 8"),
        "{message}"
    );
    let events: Api<Event> = Api::namespaced(t.client.clone(), "default");
    let failed = eventually("a FailedScheduling event", WAIT, async || {
        let list = events
            .list(
                &ListParams::default().fields("involvedObject.name=greedy,reason=FailedScheduling"),
            )
            .await
            .unwrap();
        list.items.into_iter().next()
    })
    .await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    t.plane.stop().await;
}

#[tokio::test]
async fn bound_pods_terminate_gracefully() {
    let t = common::start_with(|c| c.scheduler = false).await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let mut p = pod("bound", json!({}));
    p.spec.as_mut().unwrap().node_name = Some("somewhere".into());
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.delete("bound", &DeleteParams::default().grace_period(20))
        .await
        .unwrap();
    let marked = pods.get("bound").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(20));
    // The node agent's final delete (grace 0) removes it.
    pods.delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(pods.get_opt("bound").await.unwrap().is_none());
    t.plane.stop().await;
}
