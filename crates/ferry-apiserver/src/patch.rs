//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the strategic merge patch
//! `kubectl apply` sends for built-in kinds.

use serde_json::{Map, Value};
use thiserror::Error;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatchError {
    /// The body is not a JSON patch (a list of operations): the request is bad (`400`).
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(String),
    /// A JSON patch operation failed on this object (`422`).
    #[error("the JSON patch could not be applied: {0}")]
    JsonPatchFailed(String),
    /// A strategic merge patch that is not an object.
    #[error("a strategic merge patch must be a JSON object")]
    NotAnObject,
    /// An unknown `$patch` value.
    #[error("unknown patch directive $patch: {0:?}")]
    UnknownPatchValue(String),
    /// An unknown `$…` key.
    #[error("unknown patch directive {0:?}")]
    UnknownDirective(String),
    /// An element of a list merged by key that is not an object.
    #[error("list {path} merges by {key:?}: its elements must be objects")]
    ElementNotObject {
        /// The list's path.
        path: String,
        /// Its merge key.
        key: &'static str,
    },
    /// An element of a list merged by key without the key.
    #[error("an element of {path} has no merge key {key:?}")]
    MissingMergeKey {
        /// The list's path.
        path: String,
        /// Its merge key.
        key: &'static str,
    },
}

/// The patch formats the server accepts (by `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchKind {
    /// The kind named by a Content-Type header, if supported.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies a JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies a JSON patch (a list of operations).
pub fn json(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::InvalidJsonPatch(e.to_string()))?;
    json_patch::patch(target, &ops).map_err(|e| PatchError::JsonPatchFailed(e.to_string()))
}

/// How a list at some field merges in a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListMerge {
    /// The patch's list replaces the original.
    Replace,
    /// Elements are objects merged by this key.
    ByKey(&'static str),
    /// Elements are scalars; the patch's ones are added (a set union).
    Primitives,
}

/// The merge strategy of the list at `path` (field names from the root, indices left out),
/// following the `patchStrategy`/`patchMergeKey` tags of the Kubernetes core types.
fn list_strategy(path: &[String]) -> ListMerge {
    let last = path.last().map(String::as_str).unwrap_or_default();
    let in_container = path
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => ListMerge::ByKey("name"),
        "volumeMounts" => ListMerge::ByKey("mountPath"),
        "volumeDevices" => ListMerge::ByKey("devicePath"),
        "ports" if in_container => ListMerge::ByKey("containerPort"),
        "ports" => ListMerge::ByKey("port"),
        "conditions" | "addresses" => ListMerge::ByKey("type"),
        "ownerReferences" => ListMerge::ByKey("uid"),
        "hostAliases" | "podIPs" => ListMerge::ByKey("ip"),
        "finalizers" => ListMerge::Primitives,
        _ => ListMerge::Replace,
    }
}

/// Applies a strategic merge patch to a built-in object.
pub fn strategic(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject);
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    merge_map(target, patch, &mut Vec::new())
}

fn merge_map(
    target: &mut Value,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replacement = patch.clone();
            replacement.remove("$patch");
            *target = Value::Object(strip_directives(replacement));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError::UnknownPatchValue(other.to_string())),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> =
        patch
            .get("$retainKeys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            });
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = value.as_array().into_iter().flatten().collect();
            if let Some(list) = target.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|v| !remove.contains(&v));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(PatchError::UnknownDirective(key.clone()));
        }
        let Some(obj) = target.as_object_mut() else {
            break;
        };
        path.push(key.clone());
        match value {
            Value::Null => {
                obj.remove(key);
            }
            Value::Object(sub) => {
                let slot = obj.entry(key.clone()).or_insert(Value::Null);
                merge_map(slot, sub, path)?;
                if slot.is_null() {
                    obj.remove(key);
                }
            }
            Value::Array(items) => {
                let slot = obj.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(slot, items, path)?;
            }
            scalar => {
                obj.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    if let (Some(keys), Some(obj)) = (retain, target.as_object_mut()) {
        obj.retain(|k, _| keys.contains(k));
    }
    Ok(())
}

fn merge_list(
    target: &mut Value,
    items: &[Value],
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    let replace_all = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let strategy = list_strategy(path);
    if replace_all || strategy == ListMerge::Replace || !target.is_array() {
        let kept: Vec<Value> = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(|i| match i {
                Value::Object(m) => Value::Object(strip_directives(m.clone())),
                other => other.clone(),
            })
            .collect();
        *target = Value::Array(kept);
        return Ok(());
    }
    let Some(list) = target.as_array_mut() else {
        return Ok(());
    };
    match strategy {
        ListMerge::Primitives => {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        ListMerge::ByKey(merge_key) => {
            for item in items {
                let Value::Object(patch_item) = item else {
                    return Err(PatchError::ElementNotObject {
                        path: path.join("."),
                        key: merge_key,
                    });
                };
                let key_value =
                    patch_item
                        .get(merge_key)
                        .ok_or_else(|| PatchError::MissingMergeKey {
                            path: path.join("."),
                            key: merge_key,
                        })?;
                let position = list
                    .iter()
                    .position(|e| e.get(merge_key) == Some(key_value));
                let delete = patch_item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => merge_map(&mut list[i], patch_item, path)?,
                    (None, false) => list.push(Value::Object(strip_directives(patch_item.clone()))),
                }
            }
        }
        ListMerge::Replace => {}
    }
    Ok(())
}

/// Removes `$…` directives (recursively) from a value that is inserted as a whole.
fn strip_directives(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|k, _| !k.starts_with('$'));
    for v in map.values_mut() {
        strip_value(v);
    }
    map
}

fn strip_value(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_value);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name() {
        let mut pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"containers": [
                {"name": "main", "image": "v1", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "s1"}]}});
        let patch = json!({
        "metadata": {"labels": {"b": null, "c": "3"}, "finalizers": ["y"]},
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}, {"name": "side"}],
            "containers": [
                {"name": "main", "image": "v2", "env": [{"name": "B", "value": "2"}]},
                {"name": "side", "$patch": "delete"},
                {"name": "new", "image": "n1"}
            ]}});
        strategic(&mut pod, &patch).unwrap();
        assert_eq!(pod["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(pod["metadata"]["finalizers"], json!(["x", "y"]));
        let containers = pod["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["image"], "v2");
        assert_eq!(containers[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(containers[1]["name"], "new");
        assert!(pod["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn replace_directives_and_plain_lists() {
        let mut obj = json!({"spec": {"tolerations": [{"key": "a"}], "selector": {"x": "1", "y": "2"},
            "conditions": [{"type": "Ready", "status": "False"}]}});
        let patch = json!({"spec": {
            "tolerations": [{"key": "b"}],
            "selector": {"$patch": "replace", "z": "3"},
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "True"}],
            "$deleteFromPrimitiveList/none": ["q"]
        }});
        strategic(&mut obj, &patch).unwrap();
        assert_eq!(obj["spec"]["tolerations"], json!([{"key": "b"}]));
        assert_eq!(obj["spec"]["selector"], json!({"z": "3"}));
        assert_eq!(obj["spec"]["conditions"][0]["status"], "True");
        assert_eq!(obj["spec"]["conditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn bad_patches_are_errors() {
        let mut obj = json!({"spec": {"containers": []}});
        assert_eq!(
            strategic(&mut obj, &json!({"spec": {"containers": [{"image": "x"}]}})),
            Err(PatchError::MissingMergeKey {
                path: "spec.containers".into(),
                key: "name"
            })
        );
        assert_eq!(
            strategic(&mut obj, &json!([1])),
            Err(PatchError::NotAnObject)
        );
        assert_eq!(
            strategic(&mut obj, &json!({"$patch": "bogus"})),
            Err(PatchError::UnknownPatchValue("bogus".into()))
        );
        assert!(matches!(
            json(&mut obj, &json!([{"op": "remove", "path": "/nope"}])),
            Err(PatchError::JsonPatchFailed(_))
        ));
        assert!(matches!(
            json(&mut obj, &json!({"op": "add"})),
            Err(PatchError::InvalidJsonPatch(_))
        ));
    }

    /// Random JSON, biased towards the shapes patches touch (objects, keyed lists, directives).
    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z$/]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                Just("name".to_string()),
                Just("containers".to_string()),
                Just("finalizers".to_string()),
                Just("conditions".to_string()),
                Just("$patch".to_string()),
                Just("$retainKeys".to_string()),
                Just("$setElementOrder/containers".to_string()),
                Just("$deleteFromPrimitiveList/finalizers".to_string()),
                "[a-z]{1,4}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(key, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn patching_never_panics(mut object in arb_json(), patch in arb_json()) {
            let mut a = object.clone();
            let _ = strategic(&mut a, &patch);
            let mut b = object.clone();
            let _ = json(&mut b, &patch);
            merge(&mut object, &patch);
        }
    }
}
