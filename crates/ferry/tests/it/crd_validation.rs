//! Ferry's own CRDs (generated from the Rust types) are enforced as kube-apiserver enforces
//! them: `format` (date-time, int32), int-or-string, bounds; the message names the field in
//! kube-apiserver's words.

use crate::common;

use ferry_api::scheduling::{PodGroup, Reservation};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn invalid(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn formats_int_or_string_and_bounds_of_ferry_crds_are_enforced() {
    let t = common::start_with(|c| c.scheduler = false).await;
    let groups: Api<PodGroup> = Api::namespaced(t.client.clone(), "default");
    let pg: PodGroup = serde_json::from_value(json!({
        "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "job"}, "spec": {"minMember": 2, "minResources": {"nvidia.com/gpu": 2}}
    }))
    .unwrap();
    groups.create(&PostParams::default(), &pg).await.unwrap();

    // format: date-time on the status.
    let e = invalid(
        groups
            .patch_status(
                "job",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"scheduleStartTime": "yesterday"}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");
    assert!(
        e.message.contains(
            r#"status.scheduleStartTime: Invalid value: "yesterday": status.scheduleStartTime in body must be of type date-time: "yesterday""#
        ),
        "{}",
        e.message
    );
    groups
        .patch_status(
            "job",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"scheduleStartTime": "2026-12-01T20:00:00Z"}})),
        )
        .await
        .unwrap();

    // int-or-string quantities, and format: int32.
    let e = invalid(
        groups
            .patch(
                "job",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"minResources": {"cpu": 1.5}}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");
    assert!(
        e.message.contains("must be of type integer,string"),
        "{}",
        e.message
    );
    let e = invalid(
        groups
            .patch(
                "job",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"minMember": 3_000_000_000u64}})),
            )
            .await
            .unwrap_err(),
    );
    assert!(e.message.contains("must be of type int32"), "{}", e.message);

    // Bounds: a Reservation's ttlSeconds is at least 1.
    let reservations: Api<Reservation> = Api::namespaced(t.client.clone(), "default");
    let r: Reservation = serde_json::from_value(json!({
        "apiVersion": "scheduling.ferry.dev/v1alpha1", "kind": "Reservation",
        "metadata": {"name": "hold"},
        "spec": {"nodeNames": ["n1"], "resources": {"nvidia.com/gpu": 1}, "ttlSeconds": 0}
    }))
    .unwrap();
    let e = invalid(
        reservations
            .create(&PostParams::default(), &r)
            .await
            .unwrap_err(),
    );
    assert!(
        e.message
            .contains("spec.ttlSeconds in body should be greater than or equal to 1"),
        "{}",
        e.message
    );
    t.plane.stop().await;
}
