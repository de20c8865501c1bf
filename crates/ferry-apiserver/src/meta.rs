//! Reading and writing `metadata` fields of JSON objects, and timestamps.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};

/// `metadata` of an object (empty if absent).
pub fn metadata(v: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    v.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// Mutable `metadata`, created if absent or not an object.
pub fn metadata_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let obj = v.as_object_mut().expect("just made an object");
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

/// A string field of `metadata`, or "".
pub fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    metadata(v)
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.name`.
pub fn name(v: &Value) -> &str {
    meta_str(v, "name")
}

/// `metadata.namespace`.
pub fn namespace(v: &Value) -> &str {
    meta_str(v, "namespace")
}

/// `metadata.uid`.
pub fn uid(v: &Value) -> &str {
    meta_str(v, "uid")
}

/// `metadata.finalizers` as strings.
pub fn finalizers(v: &Value) -> Vec<String> {
    metadata(v)
        .get("finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

/// Replaces `metadata.finalizers` (removing the field when empty).
pub fn set_finalizers(v: &mut Value, finalizers: &[String]) {
    let meta = metadata_mut(v);
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), serde_json::json!(finalizers));
    }
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(v: &Value) -> bool {
    metadata(v)
        .get("deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// `metadata.ownerReferences`.
pub fn owner_references(v: &Value) -> &[Value] {
    metadata(v)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Now, as a Kubernetes `Time` (RFC 3339, seconds).
pub fn now_time() -> String {
    time_string(Timestamp::now())
}

/// A time as a Kubernetes `Time` (RFC 3339 in UTC, whole seconds).
pub fn time_string(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A time as a Kubernetes `MicroTime` (RFC 3339 in UTC, microseconds).
pub fn micro_time_string(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses a Kubernetes `Time` or `MicroTime`.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// A short, human age such as `5s`, `3m`, `2h`, `4d` (as kubectl prints it).
pub fn human_age(since: &str) -> String {
    let Some(t) = parse_time(since) else {
        return "<unknown>".into();
    };
    human_duration((Timestamp::now().as_second() - t.as_second()).max(0))
}

/// Seconds as kubectl prints a duration.
pub fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The first value a JSONPath selects, in Kubernetes' dialect ([`crate::jsonpath`]), such as
/// `.status.replicas`, `.status.conditions[-1:].type` or `.status.usage['nvidia.com/gpu']`.
pub fn json_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    crate::jsonpath::first(v, path)
}

/// Writes a dotted JSONPath (objects are created on the way).
pub fn set_json_path(v: &mut Value, path: &str, value: Value) -> bool {
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let mut cur = v;
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(obj) = cur.as_object_mut() else {
            return false;
        };
        if i + 1 == parts.len() {
            obj.insert(part.to_string(), value);
            return true;
        }
        cur = obj
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_paths() {
        let v = json!({"spec": {"containers": [{"image": "a"}], "replicas": 2}});
        assert_eq!(json_path(&v, ".spec.replicas"), Some(&json!(2)));
        assert_eq!(
            json_path(&v, ".spec.containers[0].image"),
            Some(&json!("a"))
        );
        assert_eq!(json_path(&v, "{.spec.replicas}"), Some(&json!(2)));
        assert_eq!(json_path(&v, ".spec.nope"), None);
        let u = json!({"status": {"usage": {"nvidia.com/gpu": "4"}}});
        assert_eq!(
            json_path(&u, ".status.usage['nvidia.com/gpu']"),
            Some(&json!("4"))
        );
        assert_eq!(
            json_path(&u, ".status.usage[\"nvidia.com/gpu\"]"),
            Some(&json!("4"))
        );
        assert_eq!(json_path(&v, ".spec.containers[x]"), None);
        let mut w = json!({});
        assert!(set_json_path(&mut w, ".status.replicas", json!(3)));
        assert_eq!(w, json!({"status": {"replicas": 3}}));
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(86400 * 10), "10d");
    }
}
