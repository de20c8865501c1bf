//! StatefulSets (`apps/v1`): pods with stable names, DNS and claims.
//!
//! Defaults as `SetDefaults_StatefulSet` (replicas 1, `OrderedReady`, `RollingUpdate` with
//! partition 0, revisionHistoryLimit 10, claims retained on deletion and scale-down, the pod
//! template's restart and DNS policies); validation as `ValidateStatefulSet` (a non-empty
//! selector matching the template's labels, `restartPolicy: Always`, non-negative counts,
//! known policies); updates may change only replicas, ordinals, template, updateStrategy,
//! revisionHistoryLimit, persistentVolumeClaimRetentionPolicy and minReadySeconds. Columns:
//! NAME READY AGE (`-o wide`: CONTAINERS IMAGES).
//!
//! The selector and template helpers here are shared with [`super::daemonset`].

use serde_json::{Value, json};

use super::{Strategy, age_column, name_column, object_field};
use crate::error::{ApiResult, FieldCause};
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
pub(crate) use crate::validation::non_negative;
use crate::validation::{self, label_selector_causes as validate_selector};

/// The strategy of StatefulSets.
pub struct StatefulSets;

/// `field: Invalid value: <raw>: why`, with the value printed as kube prints Go values
/// (numbers bare, label maps as `map[string]string{...}`).
pub(crate) fn invalid_raw(field: impl Into<String>, raw: &str, why: &str) -> FieldCause {
    FieldCause {
        field: field.into(),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {raw}: {why}"),
    }
}

/// A label map as Go's `%#v` prints a `map[string]string`.
pub(crate) fn go_map(labels: &Value) -> String {
    let pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{}:{}", json!(k), json!(v.as_str().unwrap_or_default())))
        .collect();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

/// Whether `selector` is empty (selects everything, which workloads may not use).
pub(crate) fn selector_is_empty(selector: &Value) -> bool {
    super::count(&selector["matchLabels"]) == 0
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty)
}

/// Whether `selector` chooses an object with `labels`.
pub(crate) fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let labels_ok = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    labels_ok
        && selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let value = get(e["key"].as_str().unwrap_or_default());
                let mut values = e["values"].as_array().into_iter().flatten();
                match e["operator"].as_str().unwrap_or_default() {
                    "In" => value.is_some_and(|v| values.any(|x| x.as_str() == Some(v))),
                    "NotIn" => value.is_none_or(|v| !values.any(|x| x.as_str() == Some(v))),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
}

/// Checks a workload's selector against its pod template, and the template as a pod
/// (`extra_volumes` are volumes the controller adds, such as claim templates), with kube's
/// field paths under `spec.template`. `kind` names the workload in kube's messages.
pub(crate) fn validate_selector_and_template(
    spec: &Value,
    kind: &str,
    extra_volumes: &[String],
    causes: &mut Vec<FieldCause>,
) {
    let selector = &spec["selector"];
    if selector_is_empty(selector) {
        causes.push(FieldCause::required("spec.selector"));
    } else {
        validate_selector(selector, "spec.selector", causes);
        let labels = &spec["template"]["metadata"]["labels"];
        if !selector_matches(selector, labels) {
            causes.push(invalid_raw(
                "spec.template.metadata.labels",
                &go_map(labels),
                "`selector` does not match template `labels`",
            ));
        }
    }
    let _ = kind;
    let template = &spec["template"];
    let mut pod = json!({
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    if !extra_volumes.is_empty() {
        let volumes = object_field(&mut pod, "spec")
            .entry("volumes")
            .or_insert_with(|| json!([]));
        if let Some(list) = volumes.as_array_mut() {
            for v in extra_volumes {
                if !list.iter().any(|x| x["name"].as_str() == Some(v.as_str())) {
                    list.push(json!({"name": v, "emptyDir": {}}));
                }
            }
        }
    }
    let mut pod_causes = Vec::new();
    validation::validate_pod(&pod, &mut pod_causes);
    for mut c in pod_causes {
        c.field = format!("spec.template.{}", c.field);
        causes.push(c);
    }
    for (k, v) in template["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if let Some(p) = validation::label_key_problem(k) {
            causes.push(FieldCause::invalid("spec.template.labels", k, p));
        }
        let v = v.as_str().unwrap_or_default();
        if let Some(p) = validation::label_value_problem(v) {
            causes.push(FieldCause::invalid("spec.template.labels", v, p));
        }
    }
    let policy = template["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always");
    if policy != "Always" {
        causes.push(FieldCause::not_supported(
            "spec.template.spec.restartPolicy",
            policy,
            &["Always"],
        ));
    }
    if !template["spec"]["activeDeadlineSeconds"].is_null() {
        causes.push(FieldCause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// Defaults of a pod template (`SetDefaults_PodSpec` for what workloads compare and print).
pub(crate) fn default_template(spec: &mut serde_json::Map<String, Value>) {
    let template = spec.entry("template").or_insert_with(|| json!({}));
    let pod = object_field(template, "spec");
    pod.entry("restartPolicy").or_insert(json!("Always"));
    pod.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    pod.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    pod.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    pod.entry("securityContext").or_insert(json!({}));
}

/// The CONTAINERS and IMAGES cells of a workload's pod template.
pub(crate) fn containers_and_images(o: &Value) -> (Value, Value) {
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
    (json!(names.join(",")), json!(images.join(",")))
}

/// The fields an update may change; any other change of the spec is forbidden.
const MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// kube's defaults (`SetDefaults_StatefulSet`), applied on every write as decoding does.
fn set_defaults(object: &mut Value) {
    let spec = object_field(object, "spec");
    spec.entry("replicas").or_insert(json!(1));
    spec.entry("podManagementPolicy")
        .or_insert(json!("OrderedReady"));
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    let strategy = spec
        .entry("updateStrategy")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("updateStrategy is an object after decoding");
    strategy.entry("type").or_insert(json!("RollingUpdate"));
    if strategy.get("type") == Some(&json!("RollingUpdate")) {
        let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
        if !rolling.is_object() {
            *rolling = json!({});
        }
        if let Some(r) = rolling.as_object_mut() {
            r.entry("partition").or_insert(json!(0));
        }
    }
    let policy = spec
        .entry("persistentVolumeClaimRetentionPolicy")
        .or_insert_with(|| json!({}));
    if let Some(p) = policy.as_object_mut() {
        p.entry("whenDeleted").or_insert(json!("Retain"));
        p.entry("whenScaled").or_insert(json!("Retain"));
    }
    for claim in spec
        .get_mut("volumeClaimTemplates")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let claim_spec = object_field(claim, "spec");
        claim_spec
            .entry("volumeMode")
            .or_insert(json!("Filesystem"));
        if let Some(c) = claim.as_object_mut() {
            c.entry("apiVersion").or_insert(json!("v1"));
            c.entry("kind").or_insert(json!("PersistentVolumeClaim"));
        }
    }
    default_template(spec);
}

/// `ValidateStatefulSetSpec`.
fn validate_spec(o: &Value, causes: &mut Vec<FieldCause>) {
    let spec = &o["spec"];
    let claims: Vec<String> = spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    validate_selector_and_template(spec, "StatefulSet", &claims, causes);
    for field in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        non_negative(&spec[field], &format!("spec.{field}"), causes);
    }
    non_negative(&spec["ordinals"]["start"], "spec.ordinals.start", causes);
    if let Some(policy) = spec["podManagementPolicy"].as_str()
        && !["OrderedReady", "Parallel"].contains(&policy)
    {
        causes.push(FieldCause::not_supported(
            "spec.podManagementPolicy",
            policy,
            &["OrderedReady", "Parallel"],
        ));
    }
    let strategy = &spec["updateStrategy"];
    match strategy["type"].as_str().unwrap_or("RollingUpdate") {
        "RollingUpdate" => non_negative(
            &strategy["rollingUpdate"]["partition"],
            "spec.updateStrategy.rollingUpdate.partition",
            causes,
        ),
        "OnDelete" => {
            if !strategy["rollingUpdate"].is_null() {
                causes.push(invalid_raw(
                    "spec.updateStrategy.rollingUpdate",
                    "{}",
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        other => causes.push(FieldCause::not_supported(
            "spec.updateStrategy.type",
            other,
            &["OnDelete", "RollingUpdate"],
        )),
    }
    for when in ["whenDeleted", "whenScaled"] {
        if let Some(v) = spec["persistentVolumeClaimRetentionPolicy"][when].as_str()
            && !["Retain", "Delete"].contains(&v)
        {
            causes.push(FieldCause::not_supported(
                format!("spec.persistentVolumeClaimRetentionPolicy.{when}"),
                v,
                &["Retain", "Delete"],
            ));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, c) in spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("spec.volumeClaimTemplates[{i}].metadata.name");
        match c["metadata"]["name"].as_str() {
            None | Some("") => causes.push(FieldCause::required(field)),
            Some(n) => {
                if let Some(p) = validation::dns_label_problem(n) {
                    causes.push(FieldCause::invalid(field, n, p));
                } else if !names.insert(n.to_string()) {
                    causes.push(FieldCause {
                        field,
                        reason: "FieldValueDuplicate",
                        message: format!("Duplicate value: {}", json!(n)),
                    });
                }
            }
        }
    }
}

impl Strategy for StatefulSets {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"])
                .with_status()
                .with_scale(".spec.replicas", ".status.replicas", None)
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::apps::v1::StatefulSet>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
        set_defaults(object);
        Ok(())
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, old: &Value, new: &mut Value) {
        super::keep_field(old, new, "status");
        set_defaults(new);
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        validate_spec(o, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        let strip = |spec: &Value| {
            let mut s = spec.clone();
            if let Some(o) = s.as_object_mut() {
                for f in MUTABLE {
                    o.remove(*f);
                }
            }
            s
        };
        if strip(&old["spec"]) != strip(&new["spec"]) {
            causes.push(FieldCause::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Ready", "string", 0, "Number of the pod with ready state"),
            age_column(),
            Column::new(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            Column::new(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
        let desired = o["spec"]["replicas"].as_i64().unwrap_or(0);
        let (containers, images) = containers_and_images(o);
        vec![
            json!(crate::meta::name(o)),
            json!(format!("{ready}/{desired}")),
            super::age(o),
            containers,
            images,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts() -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "nginx"}},
                "template": {
                    "metadata": {"labels": {"app": "nginx"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx",
                        "volumeMounts": [{"name": "www", "mountPath": "/data"}]}]}
                },
                "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}]
            }
        })
    }

    fn causes(o: &Value) -> Vec<FieldCause> {
        let mut c = Vec::new();
        StatefulSets.validate(o, &mut c);
        c
    }

    #[test]
    fn a_valid_set_with_claim_mounts_passes() {
        assert_eq!(causes(&sts()), vec![]);
    }

    #[test]
    fn the_selector_must_match_the_template() {
        let mut o = sts();
        o["spec"]["selector"]["matchLabels"]["app"] = json!("other");
        let c = causes(&o);
        assert_eq!(c[0].field, "spec.template.metadata.labels");
        assert_eq!(
            c[0].message,
            "Invalid value: map[string]string{\"app\":\"nginx\"}: `selector` does not match template `labels`"
        );
        o["spec"]["selector"] = json!({});
        assert_eq!(causes(&o)[0].field, "spec.selector");
    }

    #[test]
    fn counts_and_policies_are_checked() {
        let mut o = sts();
        o["spec"]["replicas"] = json!(-1);
        o["spec"]["podManagementPolicy"] = json!("Sometimes");
        o["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let fields: Vec<String> = causes(&o).into_iter().map(|c| c.field).collect();
        assert!(fields.contains(&"spec.replicas".to_string()), "{fields:?}");
        assert!(fields.contains(&"spec.podManagementPolicy".to_string()));
        assert!(fields.contains(&"spec.template.spec.restartPolicy".to_string()));
    }

    #[test]
    fn only_some_fields_may_change() {
        let old = sts();
        let mut new = sts();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        let mut c = Vec::new();
        StatefulSets.validate_update(&old, &new, &mut c);
        assert!(c.is_empty());
        new["spec"]["serviceName"] = json!("other");
        StatefulSets.validate_update(&old, &new, &mut c);
        assert_eq!(c[0].field, "spec");
        assert!(
            c[0].message
                .contains("updates to statefulset spec for fields other than")
        );
    }

    #[test]
    fn the_ready_column_counts_ready_replicas() {
        let mut o = sts();
        o["spec"]["replicas"] = json!(3);
        o["status"] = json!({"readyReplicas": 2});
        let cells = StatefulSets.cells(&o);
        assert_eq!(cells[1], json!("2/3"));
        assert_eq!(cells[3], json!("nginx"));
    }
}
