//! LimitRanges (core `v1`): per-container and per-pod minimums, maximums, defaults and
//! limit/request ratios of a namespace. Defaults and checks are applied to pods by the
//! [`crate::admission::limitrange`] plugin.

use serde_json::{Value, json};

use super::{Strategy, name_column};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::table::Column;
use ferry_api::quota::{format_quantity, milli_of};

/// The strategy of LimitRanges.
pub struct LimitRanges;

/// The limit types Kubernetes defines.
const TYPES: &[&str] = &["Container", "Pod", "PersistentVolumeClaim"];

impl Strategy for LimitRanges {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "",
            "v1",
            "limitranges",
            "LimitRange",
            true,
            &["limits"],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::LimitRange>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &crate::service::Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        default_items(object);
        Ok(())
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, _old: &Value, new: &mut Value) {
        default_items(new);
    }

    fn validate(&self, object: &Value, causes: &mut Vec<FieldCause>) {
        for (i, item) in object["spec"]["limits"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            validate_item(item, &format!("spec.limits[{i}]"), causes);
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Created At", "date", 0, "When the LimitRange was created."),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(o)),
            json!(meta::meta_str(o, "creationTimestamp")),
        ]
    }
}

/// Defaults a `spec.limits` item as Kubernetes does: for `Container` items, a missing
/// `default` is the `max`, and a missing `defaultRequest` the `default`, else the `min`.
pub fn default_item(item: &mut Value) {
    if item["type"] != "Container" {
        return;
    }
    let mut fill = |into: &str, from: &str| {
        let source = item[from].as_object().cloned().unwrap_or_default();
        if source.is_empty() {
            return;
        }
        let target = super::object_field(item, into);
        for (k, v) in source {
            target.entry(k).or_insert(v);
        }
    };
    fill("default", "max");
    fill("defaultRequest", "default");
    fill("defaultRequest", "min");
}

/// Defaults every item of a LimitRange.
fn default_items(object: &mut Value) {
    for item in object["spec"]["limits"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        default_item(item);
    }
}

/// The quantities of one field of a limit item, parsed (invalid ones reported).
fn quantities(
    item: &Value,
    field: &str,
    at: &str,
    causes: &mut Vec<FieldCause>,
) -> Vec<(String, i128)> {
    let mut out = Vec::new();
    for (name, q) in item[field].as_object().into_iter().flatten() {
        let text = q.as_str().map_or_else(|| q.to_string(), String::from);
        match milli_of(q) {
            Ok(v) if v < 0 => causes.push(FieldCause::invalid(
                format!("{at}.{field}[{name}]"),
                &text,
                "must be greater than or equal to 0",
            )),
            Ok(v) => out.push((name.clone(), v)),
            Err(_) => causes.push(FieldCause::invalid(
                format!("{at}.{field}[{name}]"),
                &text,
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            )),
        }
    }
    out
}

fn validate_item(item: &Value, at: &str, causes: &mut Vec<FieldCause>) {
    let kind = item["type"].as_str().unwrap_or_default();
    if kind.is_empty() {
        causes.push(FieldCause::required(format!("{at}.type")));
    } else if !TYPES.contains(&kind) {
        causes.push(FieldCause::not_supported(format!("{at}.type"), kind, TYPES));
    }
    let min = quantities(item, "min", at, causes);
    let max = quantities(item, "max", at, causes);
    let default = quantities(item, "default", at, causes);
    let default_request = quantities(item, "defaultRequest", at, causes);
    let ratio = quantities(item, "maxLimitRequestRatio", at, causes);
    if kind == "Pod" {
        for field in ["default", "defaultRequest"] {
            if item[field].as_object().is_some_and(|m| !m.is_empty()) {
                causes.push(FieldCause::forbidden(
                    format!("{at}.{field}"),
                    "may not be specified when `type` is 'Pod'",
                ));
            }
        }
    }
    let get =
        |list: &[(String, i128)], name: &str| list.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let q = |name: &str, v: i128| format_quantity(name, v);
    let mut names: Vec<&String> = min
        .iter()
        .chain(&max)
        .chain(&default)
        .chain(&default_request)
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let (mn, mx, d, dr) = (
            get(&min, name),
            get(&max, name),
            get(&default, name),
            get(&default_request, name),
        );
        if let (Some(mn), Some(mx)) = (mn, mx)
            && mn > mx
        {
            causes.push(FieldCause::invalid(
                format!("{at}.min[{name}]"),
                q(name, mn),
                format!(
                    "min value {} is greater than max value {}",
                    q(name, mn),
                    q(name, mx)
                ),
            ));
        }
        if let Some(dr) = dr {
            if let Some(mn) = mn.filter(|mn| *mn > dr) {
                causes.push(FieldCause::invalid(
                    format!("{at}.defaultRequest[{name}]"),
                    q(name, dr),
                    format!(
                        "min value {} is greater than default request value {}",
                        q(name, mn),
                        q(name, dr)
                    ),
                ));
            }
            if let Some(mx) = mx.filter(|mx| dr > *mx) {
                causes.push(FieldCause::invalid(
                    format!("{at}.defaultRequest[{name}]"),
                    q(name, dr),
                    format!(
                        "default request value {} is greater than max value {}",
                        q(name, dr),
                        q(name, mx)
                    ),
                ));
            }
            if let Some(d) = d.filter(|d| dr > *d) {
                causes.push(FieldCause::invalid(
                    format!("{at}.defaultRequest[{name}]"),
                    q(name, dr),
                    format!(
                        "default request value {} is greater than default limit value {}",
                        q(name, dr),
                        q(name, d)
                    ),
                ));
            }
        }
        if let Some(d) = d {
            if let Some(mn) = mn.filter(|mn| *mn > d) {
                causes.push(FieldCause::invalid(
                    format!("{at}.default[{name}]"),
                    q(name, d),
                    format!(
                        "min value {} is greater than default value {}",
                        q(name, mn),
                        q(name, d)
                    ),
                ));
            }
            if let Some(mx) = mx.filter(|mx| d > *mx) {
                causes.push(FieldCause::invalid(
                    format!("{at}.default[{name}]"),
                    q(name, d),
                    format!(
                        "default value {} is greater than max value {}",
                        q(name, d),
                        q(name, mx)
                    ),
                ));
            }
        }
    }
    for (name, r) in &ratio {
        if *r < 1000 {
            causes.push(FieldCause::invalid(
                format!("{at}.maxLimitRequestRatio[{name}]"),
                q(name, *r),
                format!("ratio {} is less than 1", q(name, *r)),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes_of(limits: Value) -> Vec<FieldCause> {
        let mut causes = Vec::new();
        LimitRanges.validate(&json!({"spec": {"limits": limits}}), &mut causes);
        causes
    }

    #[test]
    fn accepts_a_consistent_range() {
        let c = causes_of(json!([{"type": "Container",
            "min": {"cpu": "100m"}, "max": {"cpu": "2"},
            "default": {"cpu": "1"}, "defaultRequest": {"cpu": "500m"},
            "maxLimitRequestRatio": {"cpu": "4"}}]));
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn refuses_inconsistent_ranges_as_kubernetes() {
        let c = causes_of(json!([{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]));
        assert_eq!(c[0].field, "spec.limits[0].min[cpu]");
        assert!(
            c[0].message
                .contains("min value 2 is greater than max value 1")
        );
        let c = causes_of(
            json!([{"type": "Container", "default": {"memory": "2Gi"}, "max": {"memory": "1Gi"}}]),
        );
        assert!(
            c[0].message
                .contains("default value 2Gi is greater than max value 1Gi"),
            "{c:?}"
        );
        let c = causes_of(json!([{"type": "Pod", "default": {"cpu": "1"}}]));
        assert_eq!(c[0].reason, "FieldValueForbidden");
        let c = causes_of(json!([{"type": "Node"}]));
        assert_eq!(c[0].reason, "FieldValueNotSupported");
        let c = causes_of(json!([{"min": {"cpu": "-1"}}]));
        assert_eq!(c.len(), 2);
        let c = causes_of(json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "500m"}}]));
        assert!(c[0].message.contains("ratio 500m is less than 1"));
    }
}
