//! Events: selectable by the object they are about, and the `kubectl get events` columns.

use serde_json::{Value, json};

use super::{Strategy, str_at};
use crate::error::ApiResult;
use crate::meta::human_age;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of core/v1 events.
pub struct Events;

impl Strategy for Events {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::Event>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            Column::new(
                "Last Seen",
                "string",
                0,
                "Time since the event was last seen.",
            ),
            Column::new("Type", "string", 0, "Type of the event."),
            Column::new("Reason", "string", 0, "Why the event happened."),
            Column::new("Object", "string", 0, "The object the event is about."),
            Column::new("Message", "string", 0, "What happened."),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let last = [
            "/series/lastObservedTime",
            "/lastTimestamp",
            "/eventTime",
            "/metadata/creationTimestamp",
        ]
        .iter()
        .map(|p| str_at(o, p))
        .find(|s| !s.is_empty())
        .unwrap_or_default();
        let obj = format!(
            "{}/{}",
            str_at(o, "/involvedObject/kind").to_ascii_lowercase(),
            str_at(o, "/involvedObject/name")
        );
        vec![
            json!(human_age(last)),
            json!(str_at(o, "/type")),
            json!(str_at(o, "/reason")),
            json!(obj),
            json!(str_at(o, "/message")),
        ]
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]
    }

    fn field_path(&self, label: &str) -> Option<&'static str> {
        (label == "source").then_some("source.component")
    }
}
