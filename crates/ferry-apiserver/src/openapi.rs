//! OpenAPI documents: v3 per group version (`/openapi/v3/...`) and v2 (`/openapi/v2`), with
//! the schemas of every kind served: built-in kinds from k8s-openapi's definitions (what
//! `kubectl explain pod.spec` reads), custom resources from their CRDs, each tagged with
//! `x-kubernetes-group-version-kind`. The v3 paths declare `fieldValidation`, so `kubectl
//! apply` knows the server validates fields.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceInfo};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of group-version documents.
pub fn root(registry: &Registry) -> Value {
    let mut paths = BTreeMap::new();
    for r in registry.all() {
        let path = gv_path(&r.group, &r.version);
        let hash = document_hash(registry, &r.group, &r.version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn document_hash(registry: &Registry, group: &str, version: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    for r in registry
        .all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        r.plural.hash(&mut h);
        r.schema.as_ref().map(|s| s.to_string()).hash(&mut h);
    }
    format!("{:016X}", h.finish())
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`.
pub fn group_version(registry: &Registry, path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    if !registry.serves_group_version(&group, &version) {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in registry
        .all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let (collection, item) = resource_paths(r);
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let ok = json!({"200": {"description": "OK"}});
        paths.insert(
            collection,
            json!({
                "get": {"x-kubernetes-action": "list", "x-kubernetes-group-version-kind": gvk, "responses": ok},
                "post": {"x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": ok},
            }),
        );
        paths.insert(
            item,
            json!({
                "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk, "responses": ok},
                "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": ok},
                "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": ok},
                "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk, "responses": ok},
            }),
        );
        if let Some(schema) = &r.schema {
            let mut s = schema.clone();
            s["x-kubernetes-group-version-kind"] = json!([gvk]);
            schemas.insert(custom_id(r), s);
        }
    }
    for (name, schema) in builtin_definitions(Dialect::V3, &group, &version) {
        schemas.entry(name).or_insert(schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn resource_paths(r: &ResourceInfo) -> (String, String) {
    let base = format!("/{}", gv_path(&r.group, &r.version));
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    (collection, item)
}

/// The definition name of a custom resource's schema, as kube-apiserver names it.
fn custom_id(r: &ResourceInfo) -> String {
    format!("{}.{}.{}", reverse_domain(&r.group), r.version, r.kind)
}

/// `/openapi/v2` (JSON): the definitions of every kind served.
pub fn v2(registry: &Registry) -> Value {
    let mut definitions = Map::new();
    let mut group_versions: Vec<(String, String)> = Vec::new();
    for r in registry.all() {
        if let Some(schema) = &r.schema {
            let mut s = schema.clone();
            s["x-kubernetes-group-version-kind"] =
                json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
            definitions.insert(custom_id(&r), s);
        }
        let gv = (r.group.clone(), r.version.clone());
        if !group_versions.contains(&gv) {
            group_versions.push(gv);
        }
    }
    for (group, version) in group_versions {
        for (name, schema) in builtin_definitions(Dialect::V2, &group, &version) {
            definitions.entry(name).or_insert(schema);
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::KUBERNETES_VERSION},
        "paths": {},
        "definitions": definitions,
    })
}

/// Where a document's references point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dialect {
    /// `#/components/schemas/...`
    V3,
    /// `#/definitions/...`
    V2,
}

/// The built-in kinds with a schema: group, version, kind and the k8s-openapi type. A new
/// built-in kind adds one line here.
macro_rules! builtin_kinds {
    ($generator:expr, $group:expr, $version:expr, $($g:literal, $v:literal, $k:literal => $t:ty;)*) => {{
        let mut found = Vec::new();
        $(
            if $group == $g && $version == $v {
                found.push(($k, $generator.subschema_for::<$t>()));
            }
        )*
        found
    }};
}

/// The schemas of the built-in kinds of a group version and of everything they refer to,
/// each kind tagged with `x-kubernetes-group-version-kind` (computed once per document).
fn builtin_definitions(dialect: Dialect, group: &str, version: &str) -> Map<String, Value> {
    type Cache = Mutex<HashMap<(Dialect, String, String), Map<String, Value>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let key = (dialect, group.to_string(), version.to_string());
    if let Some(found) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return found;
    }
    let definitions = generate_builtin(dialect, group, version);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, definitions.clone());
    }
    definitions
}

fn generate_builtin(dialect: Dialect, group: &str, version: &str) -> Map<String, Value> {
    use k8s_openapi::api::coordination::v1 as coordination;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::scheduling::v1 as scheduling;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    let prefix = match dialect {
        Dialect::V3 => "/components/schemas",
        Dialect::V2 => "/definitions",
    };
    let mut generator: SchemaGenerator = SchemaSettings::openapi3()
        .with(|s| {
            s.definitions_path = prefix.into();
            s.meta_schema = None;
        })
        .into_generator();
    let kinds = builtin_kinds!(generator, group, version,
        "", "v1", "Namespace" => core::Namespace;
        "", "v1", "Node" => core::Node;
        "", "v1", "Pod" => core::Pod;
        "", "v1", "Event" => core::Event;
        "", "v1", "ConfigMap" => core::ConfigMap;
        "", "v1", "Secret" => core::Secret;
        "", "v1", "Service" => core::Service;
        "", "v1", "ServiceAccount" => core::ServiceAccount;
        "coordination.k8s.io", "v1", "Lease" => coordination::Lease;
        "scheduling.k8s.io", "v1", "PriorityClass" => scheduling::PriorityClass;
        "apiextensions.k8s.io", "v1", "CustomResourceDefinition" => apiextensions::CustomResourceDefinition;
    );
    let mut definitions = generator.take_definitions(true);
    let ref_prefix = format!("#{prefix}/");
    for (kind, reference) in kinds {
        let name = reference
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(&ref_prefix))
            .map(str::to_string);
        if let Some(schema) = name.and_then(|n| definitions.get_mut(&n)) {
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "version": version, "kind": kind}]);
        }
    }
    definitions
}

fn reverse_domain(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                o.values().for_each(|c| refs(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }

    #[test]
    fn built_in_kinds_have_schemas_with_their_gvk() {
        let registry = Registry::new();
        let doc = group_version(&registry, "api/v1").unwrap();
        let schemas = &doc["components"]["schemas"];
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "Pod"}])
        );
        assert!(pod["properties"]["spec"]["description"].is_string());
        let spec = &schemas["io.k8s.api.core.v1.PodSpec"];
        assert!(spec["properties"]["containers"]["description"].is_string());
        // Every reference resolves inside the document.
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50);
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.get(name).is_some(), "{r} does not resolve");
        }
        let leases = group_version(&registry, "apis/coordination.k8s.io/v1").unwrap();
        assert_eq!(
            leases["components"]["schemas"]["io.k8s.api.coordination.v1.Lease"]["x-kubernetes-group-version-kind"]
                [0]["kind"],
            "Lease"
        );
    }

    #[test]
    fn v2_has_the_definitions() {
        let doc = v2(&Registry::new());
        assert_eq!(doc["swagger"], "2.0");
        let defs = &doc["definitions"];
        assert_eq!(
            defs["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Pod"
        );
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let name = r.strip_prefix("#/definitions/").unwrap();
            assert!(defs.get(name).is_some(), "{r} does not resolve");
        }
    }
}
