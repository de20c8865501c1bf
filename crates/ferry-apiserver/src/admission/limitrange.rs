//! The `LimitRanger` admission plugin, as kube-apiserver's: a new pod's containers get the
//! namespace's LimitRange defaults (`default` limits, `defaultRequest` requests) for what
//! they do not state, recorded in the `kubernetes.io/limit-ranger` annotation; then every
//! `min`, `max` and `maxLimitRequestRatio` of `Container` and `Pod` items is checked and a
//! pod outside them is refused `403 Forbidden` in Kubernetes' words
//! (`maximum cpu usage per Container is 2, but limit is 3`).

use std::collections::BTreeMap;

use ferry_api::quota::{format_quantity, milli_of};
use serde_json::{Map, Value, json};

use super::quota::forbidden;
use super::{Admitted, Attributes, Operation, Plugin};
use crate::error::ApiResult;
use crate::service::Service;

/// The LimitRanger admission plugin.
#[derive(Default)]
pub struct LimitRanger;

/// The annotation naming the defaults the plugin set.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Whether this write is a new pod (the only writes LimitRanger changes or checks).
fn applies(a: &Attributes<'_>) -> bool {
    a.operation == Operation::Create
        && a.subresource.is_none()
        && a.info.group.is_empty()
        && a.info.plural == "pods"
        && a.namespace.is_some()
}

/// The `spec.limits` items of the namespace's LimitRanges, defaulted as Kubernetes defaults
/// them (a missing `default` is the `max`; a missing `defaultRequest` the `default`, else
/// the `min`).
fn limit_items(service: &Service, namespace: &str) -> Vec<Value> {
    let Some(info) = service.registry.get("", "v1", "limitranges") else {
        return Vec::new();
    };
    let mut ranges = service
        .store
        .list(&info.storage_resource(), Some(namespace), None, 0, |_| true)
        .items;
    ranges.sort_by(|a, b| crate::meta::name(&a.value).cmp(crate::meta::name(&b.value)));
    ranges
        .iter()
        .flat_map(|r| {
            r.value["spec"]["limits"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|mut item| {
            crate::strategy::limitrange::default_item(&mut item);
            item
        })
        .collect()
}

/// Sets the defaults of `item` on one container; returns the requests and limits it set.
fn default_container(item: &Value, c: &mut Value) -> (Vec<String>, Vec<String>) {
    let mut set = (Vec::new(), Vec::new());
    for (field, into, names) in [
        ("defaultRequest", "requests", &mut set.0),
        ("default", "limits", &mut set.1),
    ] {
        let Some(defaults) = item[field].as_object().filter(|m| !m.is_empty()) else {
            continue;
        };
        let resources = crate::strategy::object_field(c, "resources");
        let list = resources.entry(into).or_insert_with(|| json!({}));
        if !list.is_object() {
            *list = json!({});
        }
        let list = list.as_object_mut().expect("made an object");
        for (name, q) in defaults {
            if !list.contains_key(name) {
                list.insert(name.clone(), q.clone());
                names.push(name.clone());
            }
        }
    }
    set
}

/// Text of a quantity as written (`"3"`, `3`).
fn text_of(q: &Value) -> String {
    q.as_str().map_or_else(|| q.to_string(), String::from)
}

/// The violations of one `min`/`max`/`maxLimitRequestRatio` item by requests and limits.
fn check(
    kind: &str,
    item: &Value,
    requests: &Map<String, Value>,
    limits: &Map<String, Value>,
    errors: &mut Vec<String>,
) {
    let value = |list: &Map<String, Value>, name: &str| {
        list.get(name)
            .and_then(|q| milli_of(q).ok().map(|v| (v, text_of(q))))
    };
    for (name, enforced) in item["min"].as_object().into_iter().flatten() {
        let Ok(min) = milli_of(enforced) else {
            continue;
        };
        let min_text = format_quantity(name, min);
        match (value(requests, name), value(limits, name)) {
            (None, _) => errors.push(format!(
                "minimum {name} usage per {kind} is {min_text}.  No request is specified"
            )),
            (Some((r, text)), _) if r < min => errors.push(format!(
                "minimum {name} usage per {kind} is {min_text}, but request is {text}"
            )),
            (_, Some((l, text))) if l < min => errors.push(format!(
                "minimum {name} usage per {kind} is {min_text}, but limit is {text}"
            )),
            _ => {}
        }
    }
    for (name, enforced) in item["max"].as_object().into_iter().flatten() {
        let Ok(max) = milli_of(enforced) else {
            continue;
        };
        let max_text = format_quantity(name, max);
        match (value(limits, name), value(requests, name)) {
            (None, _) => errors.push(format!(
                "maximum {name} usage per {kind} is {max_text}.  No limit is specified"
            )),
            (Some((l, text)), _) if l > max => errors.push(format!(
                "maximum {name} usage per {kind} is {max_text}, but limit is {text}"
            )),
            (_, Some((r, text))) if r > max => errors.push(format!(
                "maximum {name} usage per {kind} is {max_text}, but request is {text}"
            )),
            _ => {}
        }
    }
    for (name, enforced) in item["maxLimitRequestRatio"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let Ok(ratio) = milli_of(enforced) else {
            continue;
        };
        let ratio_text = format_quantity(name, ratio);
        let request = value(requests, name).map(|(v, _)| v).filter(|v| *v > 0);
        let limit = value(limits, name).map(|(v, _)| v).filter(|v| *v > 0);
        match (request, limit) {
            (None, _) => errors.push(format!(
                "{name} max limit to request ratio per {kind} is {ratio_text}, but no request is specified or request is 0"
            )),
            (_, None) => errors.push(format!(
                "{name} max limit to request ratio per {kind} is {ratio_text}, but no limit is specified or limit is 0"
            )),
            (Some(r), Some(l)) => {
                let observed = l as f64 / r as f64;
                if observed * 1000.0 > ratio as f64 {
                    errors.push(format!(
                        "{name} max limit to request ratio per {kind} is {ratio_text}, but provided ratio is {observed:.6}"
                    ));
                }
            }
        }
    }
}

/// A container's requests (limits where no request is stated, as Kubernetes defaults them)
/// and limits.
fn requests_and_limits(c: &Value) -> (Map<String, Value>, Map<String, Value>) {
    let limits = c["resources"]["limits"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut requests = c["resources"]["requests"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
    (requests, limits)
}

/// The pod-level sums of requests and limits (for `Pod` items), as text quantities in
/// thousandths.
fn pod_totals(spec: &Value) -> (Map<String, Value>, Map<String, Value>) {
    let mut req: BTreeMap<String, i128> = BTreeMap::new();
    let mut lim: BTreeMap<String, i128> = BTreeMap::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        let (r, l) = requests_and_limits(c);
        for (list, into) in [(&r, &mut req), (&l, &mut lim)] {
            for (k, v) in list {
                *into.entry(k.clone()).or_insert(0) += milli_of(v).unwrap_or(0);
            }
        }
    }
    let render = |m: BTreeMap<String, i128>| -> Map<String, Value> {
        m.into_iter()
            .map(|(k, v)| {
                let text = format_quantity(&k, v);
                (k, json!(text))
            })
            .collect()
    };
    (render(req), render(lim))
}

/// The errors of a pod against the namespace's limit items.
fn violations(items: &[Value], spec: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for item in items {
        match item["type"].as_str() {
            Some("Container") => {
                for list in ["initContainers", "containers"] {
                    for c in spec[list].as_array().into_iter().flatten() {
                        let (r, l) = requests_and_limits(c);
                        check("Container", item, &r, &l, &mut errors);
                    }
                }
            }
            Some("Pod") => {
                let (r, l) = pod_totals(spec);
                check("Pod", item, &r, &l, &mut errors);
            }
            _ => {}
        }
    }
    errors
}

#[async_trait::async_trait]
impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    fn mutate(
        &self,
        service: &Service,
        attributes: &Attributes<'_>,
        object: &mut Value,
    ) -> ApiResult<Vec<String>> {
        if !applies(attributes) {
            return Ok(Vec::new());
        }
        let items = limit_items(service, attributes.namespace.unwrap_or_default());
        let mut messages = Vec::new();
        for item in items.iter().filter(|i| i["type"] == "Container") {
            for (list, what) in [
                ("initContainers", "init container"),
                ("containers", "container"),
            ] {
                let Some(containers) = object["spec"][list].as_array_mut() else {
                    continue;
                };
                for c in containers {
                    let name = c["name"].as_str().unwrap_or_default().to_string();
                    let (requests, limits) = default_container(item, c);
                    if !requests.is_empty() {
                        messages.push(format!("{} request for {what} {name}", requests.join(", ")));
                    }
                    if !limits.is_empty() {
                        messages.push(format!("{} limit for {what} {name}", limits.join(", ")));
                    }
                }
            }
        }
        if !messages.is_empty() {
            let metadata = crate::strategy::object_field(object, "metadata");
            let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
            if !annotations.is_object() {
                *annotations = json!({});
            }
            annotations[ANNOTATION] =
                json!(format!("LimitRanger plugin set: {}", messages.join("; ")));
        }
        Ok(Vec::new())
    }

    async fn validate(
        &self,
        service: &Service,
        attributes: &Attributes<'_>,
        object: &Value,
    ) -> ApiResult<Admitted> {
        if !applies(attributes) {
            return Ok(Admitted::default());
        }
        let items = limit_items(service, attributes.namespace.unwrap_or_default());
        let errors = violations(&items, &object["spec"]);
        match errors.len() {
            0 => Ok(Admitted::default()),
            1 => Err(forbidden(attributes, &errors[0])),
            _ => Err(forbidden(attributes, &format!("[{}]", errors.join(", ")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_only_what_containers_leave_out() {
        let item = json!({"type": "Container", "default": {"cpu": "1", "memory": "1Gi"},
            "defaultRequest": {"cpu": "500m"}});
        let mut c = json!({"name": "c", "resources": {"limits": {"memory": "2Gi"}}});
        let (requests, limits) = default_container(&item, &mut c);
        assert_eq!(requests, ["cpu"]);
        assert_eq!(limits, ["cpu"]);
        assert_eq!(
            c["resources"]["limits"],
            json!({"cpu": "1", "memory": "2Gi"})
        );
        assert_eq!(c["resources"]["requests"], json!({"cpu": "500m"}));
    }

    #[test]
    fn min_max_and_ratio_in_kubernetes_words() {
        let item = json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"},
            "maxLimitRequestRatio": {"cpu": "2"}});
        let spec = json!({"containers": [{"name": "c", "resources": {
            "requests": {"cpu": "1", "memory": "32Mi"}, "limits": {"cpu": "3"}}}]});
        let errors = violations(&[item], &spec);
        assert_eq!(
            errors,
            [
                "minimum memory usage per Container is 64Mi, but request is 32Mi",
                "maximum cpu usage per Container is 2, but limit is 3",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 3.000000",
            ]
        );
        let no_limit = json!({"containers": [{"name": "c"}]});
        let errors = violations(
            &[json!({"type": "Container", "max": {"cpu": "2"}})],
            &no_limit,
        );
        assert_eq!(
            errors,
            ["maximum cpu usage per Container is 2.  No limit is specified"]
        );
    }

    #[test]
    fn pod_items_sum_the_containers() {
        let item = json!({"type": "Pod", "max": {"cpu": "1"}});
        let spec = json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "600m"}}},
            {"name": "b", "resources": {"limits": {"cpu": "600m"}}}]});
        assert_eq!(
            violations(&[item], &spec),
            ["maximum cpu usage per Pod is 1, but limit is 1200m"]
        );
    }
}
