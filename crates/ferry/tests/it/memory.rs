//! Memory that comes back: after a burst of deletions no component keeps the store's live
//! events pinned (the store holds each one until every watcher has read it).

use crate::common;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_objects_leave_no_events_queued_for_watchers() {
    let t = common::start().await;
    let store = t.plane.server.service.store.clone();
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let names: Vec<String> = (0..300).map(|i| format!("burst-{i}")).collect();
    let each = |delete: bool| {
        let cms = cms.clone();
        futures::stream::iter(names.clone())
            .map(move |name| {
                let cms = cms.clone();
                async move {
                    if delete {
                        cms.delete(&name, &DeleteParams::default())
                            .await
                            .map(|_| ())
                    } else {
                        let cm: ConfigMap =
                            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                                .unwrap();
                        cms.create(&PostParams::default(), &cm).await.map(|_| ())
                    }
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
    };
    assert!(each(false).await.iter().all(Result::is_ok));
    assert!(each(true).await.iter().all(Result::is_ok));
    // Every watcher (garbage collector, scheduler informers) reads the burst promptly; the
    // garbage collector used to take one deletion per 100 ms sweep, pinning the rest for 30 s.
    common::eventually(
        "the live events to be read by every watcher",
        Duration::from_secs(10),
        async || (store.queued_events() == 0).then_some(()),
    )
    .await;
    t.plane.stop().await;
}
