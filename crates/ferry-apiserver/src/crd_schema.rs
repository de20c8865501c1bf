//! Validation of custom objects against their CRD's structural OpenAPI v3 schema, as
//! kube-apiserver does it: types, `enum`, bounds, `required`, `pattern` (RE2 syntax, the regex
//! crate's), the `format`s Kubernetes checks, `anyOf`/`allOf`/`oneOf`/`not`, and pruning of
//! fields the schema does not declare (value validations in `anyOf` and the like never prune).
//! Messages follow kube-apiserver's (`spec.x: Invalid value: "ab": spec.x in body should
//! match '^a$'`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use crate::error::FieldCause;

/// Validates a custom object against its CRD's OpenAPI v3 schema and prunes fields the schema
/// does not declare (unless it preserves unknown fields). Returns the pruned paths.
pub fn validate_schema(
    value: &mut Value,
    schema: &Value,
    path: &str,
    causes: &mut Vec<FieldCause>,
) -> Vec<String> {
    let mut pruned = Vec::new();
    check_schema(value, schema, path, causes, &mut pruned, true);
    pruned
}

fn check_schema(
    value: &mut Value,
    schema: &Value,
    path: &str,
    causes: &mut Vec<FieldCause>,
    pruned: &mut Vec<String>,
    root: bool,
) {
    if value.is_null() {
        return;
    }
    let field = if path.is_empty() { "<root>" } else { path };
    let int_or_string = schema["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if int_or_string && !(value.is_i64() || value.is_u64() || value.is_string()) {
        let ty = json_type(value);
        causes.push(FieldCause::invalid(
            field,
            ty,
            format!("{field} in body must be of type integer,string: \"{ty}\""),
        ));
        return;
    }
    if let Some(ty) = schema["type"].as_str() {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string() || (int_or_string && value.is_i64()),
            "integer" => value.is_i64() || value.is_u64() || (int_or_string && value.is_string()),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            causes.push(FieldCause::invalid(
                field,
                short(value),
                format!("{field} in body must be of type {ty}"),
            ));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        causes.push(FieldCause {
            field: field.to_string(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                short(value),
                list.join(", ")
            ),
        });
    }
    value_validations(value, schema, field, causes);
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve = schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
                || schema["additionalProperties"].as_bool() == Some(true);
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(r) = required.as_str()
                    && map.get(r).is_none_or(Value::is_null)
                {
                    causes.push(FieldCause::required(join(path, r)));
                }
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_path = join(path, &k);
                // Object metadata and type information are not part of a CRD's schema.
                if root && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                    continue;
                }
                let child_schema = properties.and_then(|p| p.get(&k)).or(additional);
                match child_schema {
                    Some(s) => {
                        if let Some(child) = map.get_mut(&k) {
                            check_schema(child, s, &child_path, causes, pruned, false);
                        }
                    }
                    None if preserve || (properties.is_none() && schema.get("type").is_none()) => {}
                    None => {
                        map.remove(&k);
                        pruned.push(child_path);
                    }
                }
            }
            bounded(
                schema,
                "minProperties",
                "maxProperties",
                map.len(),
                field,
                causes,
            );
        }
        Value::Array(items) => {
            bounded(schema, "minItems", "maxItems", items.len(), field, causes);
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    check_schema(
                        item,
                        item_schema,
                        &format!("{path}[{i}]"),
                        causes,
                        pruned,
                        false,
                    );
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count();
            bounded(schema, "minLength", "maxLength", len, field, causes);
        }
        Value::Number(n) => {
            if let (Some(min), Some(v)) = (schema["minimum"].as_f64(), n.as_f64())
                && v < min
            {
                causes.push(FieldCause::invalid(
                    field,
                    &*n,
                    format!("{field} in body should be greater than or equal to {min}"),
                ));
            }
            if let (Some(max), Some(v)) = (schema["maximum"].as_f64(), n.as_f64())
                && v > max
            {
                causes.push(FieldCause::invalid(
                    field,
                    &*n,
                    format!("{field} in body should be less than or equal to {max}"),
                ));
            }
        }
        _ => {}
    }
}

fn bounded(
    schema: &Value,
    min_key: &str,
    max_key: &str,
    n: usize,
    field: &str,
    causes: &mut Vec<FieldCause>,
) {
    if let Some(min) = schema[min_key].as_u64()
        && (n as u64) < min
    {
        causes.push(FieldCause::invalid(
            field,
            n,
            format!(
                "{field} in body should have at least {min} {}",
                unit(min_key)
            ),
        ));
    }
    if let Some(max) = schema[max_key].as_u64()
        && (n as u64) > max
    {
        causes.push(FieldCause {
            field: field.to_string(),
            reason: "FieldValueTooMany",
            message: format!("Too many: {n}: must have at most {max} {}", unit(max_key)),
        });
    }
}

fn unit(key: &str) -> &'static str {
    if key.ends_with("Items") {
        "items"
    } else if key.ends_with("Length") {
        "characters"
    } else {
        "properties"
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 64 {
        format!("{}...", s.chars().take(64).collect::<String>())
    } else {
        s
    }
}

/// The JSON type name of a value, as kube-apiserver names it in messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value as a cause shows it: strings bare (the cause quotes them), others as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => short(other),
    }
}

/// Whether `value` passes `schema` (value validations; nothing is pruned or reported).
fn passes(value: &Value, schema: &Value, field: &str) -> bool {
    let mut copy = value.clone();
    let mut causes = Vec::new();
    check_schema(
        &mut copy,
        schema,
        field,
        &mut causes,
        &mut Vec::new(),
        false,
    );
    causes.is_empty()
}

/// `pattern`, `format`, exclusive bounds, `multipleOf`, and the combinators.
fn value_validations(value: &Value, schema: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    if let (Some(pattern), Value::String(s)) = (schema["pattern"].as_str(), value) {
        match compiled(pattern) {
            Ok(re) if !re.is_match(s) => causes.push(FieldCause::invalid(
                field,
                s,
                format!("{field} in body should match '{pattern}'"),
            )),
            Ok(_) => {}
            Err(e) => causes.push(FieldCause::invalid(
                field,
                s,
                format!("the schema's pattern '{pattern}' of {field} is not valid: {e}"),
            )),
        }
    }
    if let Some(format) = schema["format"].as_str()
        && !format_ok(format, value)
    {
        causes.push(FieldCause::invalid(
            field,
            shown(value),
            format!(
                "{field} in body must be of type {format}: {}",
                quoted(&shown(value))
            ),
        ));
    }
    if let Value::Number(n) = value
        && let Some(v) = n.as_f64()
    {
        let exclusive = |key: &str| schema[key].as_bool() == Some(true);
        if let Some(min) = schema["minimum"].as_f64()
            && exclusive("exclusiveMinimum")
            && v <= min
        {
            causes.push(FieldCause::invalid(
                field,
                n,
                format!("{field} in body should be greater than {min}"),
            ));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && exclusive("exclusiveMaximum")
            && v >= max
        {
            causes.push(FieldCause::invalid(
                field,
                n,
                format!("{field} in body should be less than {max}"),
            ));
        }
        if let Some(m) = schema["multipleOf"].as_f64()
            && m > 0.0
            && (v / m).fract().abs() > 1e-9
        {
            causes.push(FieldCause::invalid(
                field,
                n,
                format!("{field} in body should be a multiple of {m}"),
            ));
        }
    }
    let subschemas = |key: &str| -> Vec<&Value> {
        schema[key]
            .as_array()
            .map(|a| a.iter().filter(|s| s.is_object()).collect())
            .unwrap_or_default()
    };
    let any = subschemas("anyOf");
    // `x-kubernetes-int-or-string` with `anyOf: [integer, string]` is checked above.
    if !any.is_empty() && !any.iter().any(|s| passes(value, s, field)) {
        causes.push(FieldCause::invalid(
            field,
            shown(value),
            format!("{field} in body must validate at least one schema (anyOf)"),
        ));
    }
    let one = subschemas("oneOf");
    if !one.is_empty() && one.iter().filter(|s| passes(value, s, field)).count() != 1 {
        causes.push(FieldCause::invalid(
            field,
            shown(value),
            format!("{field} in body must validate one and only one schema (oneOf)"),
        ));
    }
    for s in subschemas("allOf") {
        let mut copy = value.clone();
        check_schema(&mut copy, s, field, causes, &mut Vec::new(), false);
    }
    if schema["not"].is_object() && passes(value, &schema["not"], field) {
        causes.push(FieldCause::invalid(
            field,
            shown(value),
            format!("{field} in body must not validate the schema (not)"),
        ));
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// A compiled `pattern`, cached (schemas repeat theirs on every request).
fn compiled(pattern: &str) -> Result<regex::Regex, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Result<regex::Regex, String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = cache.get(pattern) {
        return hit.clone();
    }
    let built = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string());
    if cache.len() >= 1024 {
        cache.clear();
    }
    cache.insert(pattern.to_string(), built.clone());
    built
}

/// Whether `value` has `format`. Unknown formats, and formats of other types than the
/// value's, pass (as in kube-apiserver).
pub fn format_ok(format: &str, value: &Value) -> bool {
    match value {
        Value::String(s) => string_format_ok(format, s),
        Value::Number(n) => match format {
            "int32" => n.as_i64().is_none_or(|v| i32::try_from(v).is_ok()),
            "int64" => !n.is_u64() || n.as_i64().is_some(),
            _ => true,
        },
        _ => true,
    }
}

fn string_format_ok(format: &str, s: &str) -> bool {
    let hex = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit());
    match format {
        "date-time" | "datetime" => date_time(s),
        "date" => date(s),
        "uuid" | "uuid3" | "uuid4" | "uuid5" => {
            let parts: Vec<&str> = s.split('-').collect();
            let shape = parts.len() == 5
                && [8, 4, 4, 4, 12]
                    .iter()
                    .zip(&parts)
                    .all(|(n, p)| p.len() == *n && hex(p));
            let version = match format {
                "uuid3" => Some(b'3'),
                "uuid4" => Some(b'4'),
                "uuid5" => Some(b'5'),
                _ => None,
            };
            shape && version.is_none_or(|v| parts[2].as_bytes()[0] == v)
        }
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let max = if ip.parse::<std::net::Ipv4Addr>().is_ok() {
                32
            } else if ip.parse::<std::net::Ipv6Addr>().is_ok() {
                128
            } else {
                return false;
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max) && !bits.starts_with('+')
        }),
        "hostname" => {
            !s.is_empty()
                && s.len() <= 255
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
        "email" => s
            .split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && string_format_ok("hostname", domain)),
        "mac" => {
            let parts: Vec<&str> = s.split([':', '-']).collect();
            [6, 8, 20].contains(&parts.len()) && parts.iter().all(|p| p.len() == 2 && hex(p))
        }
        "uri" => s.split_once(':').is_some_and(|(scheme, _)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }),
        "duration" => duration(s),
        "hexcolor" => s
            .strip_prefix('#')
            .is_some_and(|h| (h.len() == 3 || h.len() == 6) && hex(h)),
        "bsonobjectid" => s.len() == 24 && hex(s),
        _ => true,
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD` with a day that exists.
fn date(s: &str) -> bool {
    let mut it = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (it.next(), it.next(), it.next()) else {
        return false;
    };
    let (Some(y), Some(m), Some(d)) = (digits(y, 4), digits(m, 2), digits(d, 2)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// RFC 3339 (`2024-01-02T03:04:05.6Z`, `...+01:00`), or without a zone as strfmt allows.
fn date_time(s: &str) -> bool {
    let Some((d, t)) = s.split_once(['T', 't', ' ']) else {
        return false;
    };
    if !date(d) {
        return false;
    }
    let (clock, zone) = match t.find(['Z', 'z', '+', '-']) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let zone_ok = match zone {
        "" | "Z" | "z" => true,
        z => {
            let z = z.get(1..).unwrap_or_default();
            z.split_once(':').is_some_and(|(h, m)| {
                digits(h, 2).is_some_and(|h| h < 24) && digits(m, 2).is_some_and(|m| m < 60)
            })
        }
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (clock, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let clock_ok = parts.len() == 3
        && digits(parts[0], 2).is_some_and(|h| h < 24)
        && digits(parts[1], 2).is_some_and(|m| m < 60)
        && digits(parts[2], 2).is_some_and(|s| s <= 60)
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    zone_ok && clock_ok
}

/// A Go duration (`1h30m`, `-1.5s`, `300ms`, `0`).
fn duration(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return false;
        }
        rest = after;
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, after) = rest.split_at(unit_end);
        if !["ns", "us", "µs", "μs", "ms", "s", "m", "h"].contains(&unit) {
            return false;
        }
        rest = after;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_checks_and_prunes() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }}
        }});
        let mut good = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"size": 2, "mode": "a", "free": {"any": 1}, "extra": true}});
        let mut causes = Vec::new();
        let pruned = validate_schema(&mut good, &schema, "", &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        assert_eq!(pruned, ["spec.extra"]);
        assert!(good["spec"].get("extra").is_none());
        assert_eq!(good["spec"]["free"]["any"], 1);

        let mut bad = json!({"spec": {"size": 0, "mode": "c"}});
        let mut causes = Vec::new();
        validate_schema(&mut bad, &schema, "", &mut causes);
        assert_eq!(causes.len(), 2, "{causes:?}");
        let mut bad = json!({"spec": {"mode": 3}});
        let mut causes = Vec::new();
        validate_schema(&mut bad, &schema, "", &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.size", "spec.mode"]);
    }

    fn messages(value: Value, schema: Value) -> Vec<String> {
        let mut value = json!({ "spec": { "x": value } });
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"x": schema}}}});
        let mut causes = Vec::new();
        validate_schema(&mut value, &schema, "", &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn pattern_is_checked_with_kubernetes_message() {
        let schema = json!({"type": "string", "pattern": "^[a-z]+$"});
        assert!(messages(json!("abc"), schema.clone()).is_empty());
        assert_eq!(
            messages(json!("Abc"), schema),
            [r#"spec.x: Invalid value: "Abc": spec.x in body should match '^[a-z]+$'"#]
        );
    }

    #[test]
    fn formats_are_checked() {
        let ok = [
            ("date-time", json!("2024-02-29T23:59:60.5+01:00")),
            ("date-time", json!("2024-01-02T03:04:05Z")),
            ("date", json!("2023-12-31")),
            ("uuid", json!("123e4567-e89b-12d3-a456-426614174000")),
            ("byte", json!("aGVsbG8=")),
            ("ipv4", json!("10.0.0.1")),
            ("ipv6", json!("::1")),
            ("cidr", json!("10.0.0.0/8")),
            ("hostname", json!("node-1.example")),
            ("duration", json!("1h30m")),
            ("int32", json!(2147483647)),
            ("quantity", json!("anything: unknown formats pass")),
        ];
        for (format, value) in ok {
            let m = messages(value.clone(), json!({"format": format}));
            assert!(m.is_empty(), "{format} {value}: {m:?}");
        }
        let bad = [
            ("date-time", json!("2023-02-29T00:00:00Z")),
            ("date-time", json!("yesterday")),
            ("date", json!("2023-13-01")),
            ("uuid", json!("123e4567e89b12d3a456426614174000")),
            ("byte", json!("not base64!")),
            ("ipv4", json!("10.0.0.256")),
            ("cidr", json!("10.0.0.0/33")),
            ("hostname", json!("-bad-")),
            ("duration", json!("1 hour")),
            ("int32", json!(2147483648u64)),
        ];
        for (format, value) in bad {
            let m = messages(value.clone(), json!({"format": format}));
            assert_eq!(m.len(), 1, "{format} {value}: {m:?}");
            assert!(
                m[0].contains(&format!("spec.x in body must be of type {format}: ")),
                "{m:?}"
            );
        }
        assert_eq!(
            messages(
                json!("soon"),
                json!({"type": "string", "format": "date-time"})
            ),
            [r#"spec.x: Invalid value: "soon": spec.x in body must be of type date-time: "soon""#]
        );
    }

    #[test]
    fn any_of_all_of_one_of_not() {
        let int_or_string = json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]});
        assert!(messages(json!(3), int_or_string.clone()).is_empty());
        assert!(messages(json!("3Gi"), int_or_string.clone()).is_empty());
        assert_eq!(
            messages(json!(1.5), int_or_string),
            [
                r#"spec.x: Invalid value: "number": spec.x in body must be of type integer,string: "number""#
            ]
        );
        let any = json!({"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "z$"}]});
        assert!(messages(json!("abc"), any.clone()).is_empty());
        assert!(messages(json!("xyz"), any.clone()).is_empty());
        assert_eq!(
            messages(json!("mmm"), any),
            [
                r#"spec.x: Invalid value: "mmm": spec.x in body must validate at least one schema (anyOf)"#
            ]
        );
        let one = json!({"type": "integer", "oneOf": [{"minimum": 5}, {"maximum": 10}]});
        assert!(messages(json!(2), one.clone()).is_empty());
        assert_eq!(messages(json!(7), one).len(), 1);
        let all = json!({"type": "string", "allOf": [{"minLength": 2}, {"pattern": "^a"}]});
        assert!(messages(json!("ab"), all.clone()).is_empty());
        assert_eq!(messages(json!("b"), all).len(), 2);
        let not = json!({"type": "string", "not": {"enum": ["forbidden"]}});
        assert!(messages(json!("fine"), not.clone()).is_empty());
        assert_eq!(
            messages(json!("forbidden"), not),
            [
                r#"spec.x: Invalid value: "forbidden": spec.x in body must not validate the schema (not)"#
            ]
        );
    }

    #[test]
    fn value_validations_never_prune() {
        // Fields named only inside anyOf are not part of the structure: pruned as before,
        // but the anyOf check itself keeps the object intact while it tests.
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"a": {"type": "string"}},
            "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}}});
        let mut v = json!({"spec": {"a": "x"}});
        let mut causes = Vec::new();
        let pruned = validate_schema(&mut v, &schema, "", &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        assert!(pruned.is_empty());
        assert_eq!(v["spec"]["a"], "x");
    }
}
