//! ReplicaSets (`apps/v1`): a number of identical pods.
//!
//! Defaults as kube-apiserver's `SetDefaults_ReplicaSet` (one replica) and the pod template's
//! (`SetDefaults_PodSpec` and friends); validation as `ValidateReplicaSet`: a non-empty,
//! valid selector that matches the template's labels, `restartPolicy: Always`, non-negative
//! replicas and `minReadySeconds`. The helpers here ([`default_pod_template`],
//! [`validate_selector_and_template`], [`format_selector`]) serve Deployments too.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column, str_at};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation::{self, label_selector_causes as validate_label_selector, non_negative};

/// The strategy of ReplicaSets.
pub struct ReplicaSets;

impl Strategy for ReplicaSets {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("apps", "v1", "replicasets", "ReplicaSet", true, &["rs"])
                .with_status()
                .with_scale(".spec.replicas", ".status.replicas", None)
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::apps::v1::ReplicaSet>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        set_defaults(object);
        object.as_object_mut().map(|o| o.remove("status"));
        Ok(())
    }

    fn prepare_for_update(&self, info: &ResourceInfo, old: &Value, new: &mut Value) {
        set_defaults(new);
        if info.status {
            super::keep_field(old, new, "status");
        }
    }

    fn validate(&self, object: &Value, causes: &mut Vec<FieldCause>) {
        let spec = &object["spec"];
        non_negative(&spec["replicas"], "spec.replicas", causes);
        non_negative(&spec["minReadySeconds"], "spec.minReadySeconds", causes);
        validate_selector_and_template(spec, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        immutable_selector(old, new, causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new(
                "Desired",
                "integer",
                0,
                "Number of desired pods. This is a pointer to distinguish between explicit zero and not specified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller",
            ),
            Column::new(
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller",
            ),
            Column::new(
                "Ready",
                "integer",
                0,
                "The number of ready replicas for this replica set. A pod is considered ready when it has a Ready condition with status True.",
            ),
            age_column(),
            containers_column(),
            images_column(),
            selector_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let (containers, images) = containers_and_images(o);
        vec![
            json!(meta::name(o)),
            json!(o["spec"]["replicas"].as_i64().unwrap_or(0)),
            json!(o["status"]["replicas"].as_i64().unwrap_or(0)),
            json!(o["status"]["readyReplicas"].as_i64().unwrap_or(0)),
            age(o),
            json!(containers),
            json!(images),
            json!(format_selector(&o["spec"]["selector"])),
        ]
    }
}

fn set_defaults(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("replicas").or_insert(json!(1));
    if let Some(template) = spec.get_mut("template") {
        default_pod_template(template);
    }
}

/// Defaults a pod template as kube-apiserver's pod defaults do (what `kubectl get -o yaml`
/// shows and what template hashes are computed over): restart and DNS policy, scheduler,
/// grace period, security context, and each container's pull policy, termination message
/// settings and port protocols.
pub fn default_pod_template(template: &mut Value) {
    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName")
        .or_insert(json!(ferry_api::DEFAULT_SCHEDULER_NAME));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    spec.entry("securityContext").or_insert(json!({}));
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else {
                continue;
            };
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let latest = !image.rsplit('/').next().unwrap_or(image).contains(':')
                || image.ends_with(":latest");
            c.entry("imagePullPolicy").or_insert(json!(if latest {
                "Always"
            } else {
                "IfNotPresent"
            }));
            c.entry("terminationMessagePath")
                .or_insert(json!("/dev/termination-log"));
            c.entry("terminationMessagePolicy").or_insert(json!("File"));
            c.entry("resources").or_insert(json!({}));
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(p) = p.as_object_mut() {
                    p.entry("protocol").or_insert(json!("TCP"));
                }
            }
        }
    }
}

/// Validates `spec.selector` and `spec.template` of a ReplicaSet or Deployment as
/// `ValidateReplicaSetSpec`/`ValidateDeploymentSpec` do: the selector is required, valid and
/// non-empty, the template's labels match it, the template is a valid pod template with
/// `restartPolicy: Always` and no `activeDeadlineSeconds`.
pub fn validate_selector_and_template(spec: &Value, causes: &mut Vec<FieldCause>) {
    let selector = &spec["selector"];
    let mut selector_ok = false;
    // The typed form makes a missing selector `{}`: no field at all reads as missing.
    if selector.is_null() || selector.as_object().is_some_and(serde_json::Map::is_empty) {
        causes.push(FieldCause::required("spec.selector"));
    } else {
        let before = causes.len();
        validate_label_selector(selector, "spec.selector", causes);
        let terms = count(&selector["matchLabels"]) + len(&selector["matchExpressions"]);
        if terms == 0 {
            causes.push(FieldCause {
                field: "spec.selector".into(),
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: {}: empty selector is invalid for deployment",
                    go_label_selector(selector)
                ),
            });
        }
        selector_ok = causes.len() == before;
    }
    let template = &spec["template"];
    if template.is_null() {
        causes.push(FieldCause::required("spec.template"));
        return;
    }
    if selector_ok {
        let labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        let matches = crate::selectors::LabelSelector::from_object(selector)
            .is_ok_and(|s| s.matches(&json!({"metadata": {"labels": labels}})));
        if !matches {
            causes.push(FieldCause {
                field: "spec.template.metadata.labels".into(),
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    go_string_map(&labels)
                ),
            });
        }
    }
    // The template as a pod, its causes under `spec.template`.
    let pod = json!({
        "metadata": template.get("metadata").cloned().unwrap_or(json!({})),
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    let mut pod_causes = Vec::new();
    validate_template_labels(&pod["metadata"], &mut pod_causes);
    validation::validate_pod(&pod, &mut pod_causes);
    causes.extend(pod_causes.into_iter().map(|mut c| {
        c.field = format!("spec.template.{}", c.field);
        c
    }));
    let restart = str_at(template, "/spec/restartPolicy");
    if !restart.is_empty() && restart != "Always" {
        causes.push(FieldCause::not_supported(
            "spec.template.spec.restartPolicy",
            restart,
            &["Always"],
        ));
    }
    if !template["spec"]["activeDeadlineSeconds"].is_null() {
        causes.push(FieldCause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
}

fn validate_template_labels(metadata: &Value, causes: &mut Vec<FieldCause>) {
    for (k, v) in metadata["labels"].as_object().into_iter().flatten() {
        if let Some(p) = validation::label_key_problem(k) {
            causes.push(FieldCause::invalid("metadata.labels", k, p));
        }
        let v = v.as_str().unwrap_or_default();
        if let Some(p) = validation::label_value_problem(v) {
            causes.push(FieldCause::invalid("metadata.labels", v, p));
        }
    }
}

/// `spec.selector: Invalid value: ...: field is immutable` when an update changes it
/// (`apps/v1` selectors never change).
pub fn immutable_selector(old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    let (a, b) = (&old["spec"]["selector"], &new["spec"]["selector"]);
    if normalized_selector(a) != normalized_selector(b) {
        causes.push(FieldCause {
            field: "spec.selector".into(),
            reason: "FieldValueInvalid",
            message: format!(
                "Invalid value: {}: field is immutable",
                go_label_selector(b)
            ),
        });
    }
}

fn normalized_selector(s: &Value) -> Value {
    let labels = s["matchLabels"].as_object().cloned().unwrap_or_default();
    let exprs = s["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    json!({"l": labels, "e": exprs})
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, serde_json::Map::len)
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// A label map as Go's `%#v` prints a `map[string]string` (keys sorted).
pub fn go_string_map(v: &Value) -> String {
    let Some(m) = v.as_object().filter(|m| !m.is_empty()) else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or_default()))
        .collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

/// A `metav1.LabelSelector` as Go's `%#v` prints it in kube-apiserver's messages.
pub fn go_label_selector(s: &Value) -> String {
    if s.is_null() {
        return "null".into();
    }
    let exprs: Vec<String> = s["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| format!("{:?}", v.as_str().unwrap_or_default()))
                .collect();
            let values = if e["values"].is_null() {
                "[]string(nil)".to_string()
            } else {
                format!("[]string{{{}}}", values.join(", "))
            };
            format!(
                "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                e["key"].as_str().unwrap_or_default(),
                e["operator"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let exprs = if s["matchExpressions"].is_null() {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        format!("[]v1.LabelSelectorRequirement{{{}}}", exprs.join(", "))
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}",
        go_string_map(&s["matchLabels"])
    )
}

/// A `metav1.LabelSelector` in string form, as `metav1.FormatLabelSelector` writes it
/// (`app=web,tier in (a,b)`); `<none>` for an empty one.
pub fn format_selector(s: &Value) -> String {
    let mut terms: Vec<String> = Vec::new();
    let mut labels: Vec<(&String, &Value)> =
        s["matchLabels"].as_object().into_iter().flatten().collect();
    labels.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in labels {
        terms.push(format!("{k}={}", v.as_str().unwrap_or_default()));
    }
    for e in s["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let mut values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        terms.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    if terms.is_empty() {
        "<none>".into()
    } else {
        terms.join(",")
    }
}

/// The `Containers` and `Images` cells: the template's container names and images.
pub fn containers_and_images(o: &Value) -> (String, String) {
    let containers = o["spec"]["template"]["spec"]["containers"].as_array();
    let names: Vec<&str> = containers
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    let images: Vec<&str> = containers
        .into_iter()
        .flatten()
        .map(|c| c["image"].as_str().unwrap_or_default())
        .collect();
    (names.join(","), images.join(","))
}

/// The `Containers` column (`-o wide`).
pub fn containers_column() -> Column {
    Column::new(
        "Containers",
        "string",
        1,
        "Names of each container in the template.",
    )
}

/// The `Images` column (`-o wide`).
pub fn images_column() -> Column {
    Column::new(
        "Images",
        "string",
        1,
        "Images referenced by each container in the template.",
    )
}

/// The `Selector` column (`-o wide`).
pub fn selector_column() -> Column {
    Column::new(
        "Selector",
        "string",
        1,
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(selector: Value, labels: Value) -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": selector,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}
                }
            }
        })
    }

    fn causes_of(o: &Value) -> Vec<FieldCause> {
        let mut o = o.clone();
        set_defaults(&mut o);
        let mut causes = Vec::new();
        ReplicaSets.validate(&o, &mut causes);
        causes
    }

    #[test]
    fn a_matching_selector_is_valid() {
        let o = rs(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        assert_eq!(causes_of(&o), vec![]);
    }

    #[test]
    fn a_selector_that_misses_the_labels_is_rejected_as_kube_does() {
        let o = rs(json!({"matchLabels": {"app": "web"}}), json!({"app": "db"}));
        let causes = causes_of(&o);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        assert_eq!(
            causes[0].message,
            "Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn missing_empty_and_malformed_selectors_are_rejected() {
        let mut o = rs(json!(null), json!({"app": "web"}));
        o["spec"].as_object_mut().unwrap().remove("selector");
        assert_eq!(causes_of(&o)[0].field, "spec.selector");
        let o = rs(json!({}), json!({"app": "web"}));
        assert_eq!(causes_of(&o)[0].message, "Required value");
        let o = rs(json!({"matchLabels": {}}), json!({"app": "web"}));
        assert!(
            causes_of(&o)[0]
                .message
                .contains("empty selector is invalid")
        );
        let o = rs(
            json!({"matchExpressions": [{"key": "app", "operator": "Foo", "values": ["a"]}]}),
            json!({"app": "web"}),
        );
        let causes = causes_of(&o);
        assert_eq!(
            causes[0].field,
            "spec.selector.matchExpressions[0].operator"
        );
        let o = rs(
            json!({"matchExpressions": [{"key": "app", "operator": "In"}]}),
            json!({"app": "web"}),
        );
        assert_eq!(
            causes_of(&o)[0].field,
            "spec.selector.matchExpressions[0].values"
        );
    }

    #[test]
    fn negative_replicas_and_other_restart_policies_are_rejected() {
        let mut o = rs(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        o["spec"]["replicas"] = json!(-1);
        o["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let causes = causes_of(&o);
        assert_eq!(causes[0].field, "spec.replicas");
        assert_eq!(
            causes[0].message,
            "Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(causes[1].field, "spec.template.spec.restartPolicy");
    }

    #[test]
    fn selectors_print_as_kubectl_shows_them() {
        let s = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["y", "x"]},
                                 {"key": "legacy", "operator": "DoesNotExist"}]});
        assert_eq!(format_selector(&s), "a=1,b=2,tier in (x,y),!legacy");
        assert_eq!(format_selector(&json!({})), "<none>");
    }

    #[test]
    fn the_selector_is_immutable() {
        let old = rs(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        let new = rs(json!({"matchLabels": {"app": "db"}}), json!({"app": "db"}));
        let mut causes = Vec::new();
        ReplicaSets.validate_update(&old, &new, &mut causes);
        assert_eq!(causes.len(), 1);
        assert!(causes[0].message.ends_with("field is immutable"));
        let mut causes = Vec::new();
        ReplicaSets.validate_update(&old, &old, &mut causes);
        assert!(causes.is_empty());
    }
}
