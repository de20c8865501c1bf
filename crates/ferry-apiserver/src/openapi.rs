//! OpenAPI documents: v3 per group version (`/openapi/v3/...`) and v2 (`/openapi/v2`), with
//! the schemas of every kind served: built-in kinds from k8s-openapi's definitions (what
//! `kubectl explain pod.spec` reads), custom resources from their CRDs, each tagged with
//! `x-kubernetes-group-version-kind`. The v3 paths declare `fieldValidation`, so `kubectl
//! apply` knows the server validates fields.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

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

/// The schemas of the built-in kinds and of everything they refer to, generated from
/// k8s-openapi's types (with its `schemars` feature, in this crate's tests only, so the binary
/// builds without it): `{"kinds": [[group, version, kind, definition]...], "definitions": {...}}`
/// with references as `#/components/schemas/...`. `FERRY_BLESS=1 cargo test -p
/// ferry-apiserver --lib openapi` regenerates it after a k8s-openapi upgrade or a new kind.
const BUILTIN_SCHEMAS: &str = include_str!("../openapi/builtin-schemas.json");

const V3_PREFIX: &str = "#/components/schemas/";

fn builtin_schemas() -> &'static Value {
    static PARSED: OnceLock<Value> = OnceLock::new();
    PARSED.get_or_init(|| serde_json::from_str(BUILTIN_SCHEMAS).unwrap_or_default())
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
    let definitions = select_builtin(builtin_schemas(), dialect, group, version);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, definitions.clone());
    }
    definitions
}

/// The kinds of `group`/`version` in `all` and the closure of their references.
fn select_builtin(all: &Value, dialect: Dialect, group: &str, version: &str) -> Map<String, Value> {
    let empty = Map::new();
    let definitions = all["definitions"].as_object().unwrap_or(&empty);
    let mut out = Map::new();
    let mut todo = Vec::new();
    for k in all["kinds"].as_array().into_iter().flatten() {
        let field = |i: usize| k.get(i).and_then(Value::as_str).unwrap_or_default();
        if field(0) == group && field(1) == version {
            let Some(schema) = definitions.get(field(3)) else {
                continue;
            };
            let mut schema = schema.clone();
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "version": version, "kind": field(2)}]);
            out.insert(field(3).to_string(), schema);
            todo.push(field(3).to_string());
        }
    }
    while let Some(name) = todo.pop() {
        let mut found = Vec::new();
        if let Some(schema) = out.get(&name) {
            refs_of(schema, &mut found);
        }
        for r in found {
            if !out.contains_key(&r)
                && let Some(schema) = definitions.get(&r)
            {
                out.insert(r.clone(), schema.clone());
                todo.push(r);
            }
        }
    }
    if dialect == Dialect::V2 {
        for schema in out.values_mut() {
            rewrite_refs(schema, "#/definitions/");
        }
    }
    out
}

/// The definition names `v` refers to.
fn refs_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(r) = o
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(V3_PREFIX))
            {
                out.push(r.to_string());
            }
            o.values().for_each(|c| refs_of(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| refs_of(c, out)),
        _ => {}
    }
}

fn rewrite_refs(v: &mut Value, prefix: &str) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(name) = r.strip_prefix(V3_PREFIX)
            {
                *r = format!("{prefix}{name}");
            }
            o.values_mut().for_each(|c| rewrite_refs(c, prefix));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, prefix)),
        _ => {}
    }
}

fn reverse_domain(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};

    /// The built-in kinds with a schema: group, version, kind and the k8s-openapi type. A new
    /// built-in kind adds one line here (then `FERRY_BLESS=1` regenerates the file).
    macro_rules! builtin_kinds {
        ($generator:expr, $($g:literal, $v:literal, $k:literal => $t:ty;)*) => {
            vec![$(($g, $v, $k, $generator.subschema_for::<$t>()),)*]
        };
    }

    fn generate_builtin_schemas() -> Value {
        use k8s_openapi::api::authentication::v1 as authentication;
        use k8s_openapi::api::authorization::v1 as authorization;
        use k8s_openapi::api::coordination::v1 as coordination;
        use k8s_openapi::api::core::v1 as core;
        use k8s_openapi::api::discovery::v1 as discovery;
        use k8s_openapi::api::node::v1 as node;
        use k8s_openapi::api::rbac::v1 as rbac;
        use k8s_openapi::api::scheduling::v1 as scheduling;
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
        let mut generator: SchemaGenerator = SchemaSettings::openapi3()
            .with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
            })
            .into_generator();
        let kinds = builtin_kinds!(generator,
            "", "v1", "Namespace" => core::Namespace;
            "", "v1", "Node" => core::Node;
            "", "v1", "Pod" => core::Pod;
            "", "v1", "Event" => core::Event;
            "", "v1", "ConfigMap" => core::ConfigMap;
            "", "v1", "Secret" => core::Secret;
            "", "v1", "Service" => core::Service;
            "", "v1", "ServiceAccount" => core::ServiceAccount;
            "", "v1", "Endpoints" => core::Endpoints;
            "", "v1", "ResourceQuota" => core::ResourceQuota;
            "", "v1", "LimitRange" => core::LimitRange;
            "discovery.k8s.io", "v1", "EndpointSlice" => discovery::EndpointSlice;
            "coordination.k8s.io", "v1", "Lease" => coordination::Lease;
            "scheduling.k8s.io", "v1", "PriorityClass" => scheduling::PriorityClass;
            "node.k8s.io", "v1", "RuntimeClass" => node::RuntimeClass;
            "apiextensions.k8s.io", "v1", "CustomResourceDefinition" => apiextensions::CustomResourceDefinition;
            "rbac.authorization.k8s.io", "v1", "Role" => rbac::Role;
            "rbac.authorization.k8s.io", "v1", "ClusterRole" => rbac::ClusterRole;
            "rbac.authorization.k8s.io", "v1", "RoleBinding" => rbac::RoleBinding;
            "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding" => rbac::ClusterRoleBinding;
            "authorization.k8s.io", "v1", "SelfSubjectAccessReview" => authorization::SelfSubjectAccessReview;
            "authorization.k8s.io", "v1", "SubjectAccessReview" => authorization::SubjectAccessReview;
            "authorization.k8s.io", "v1", "LocalSubjectAccessReview" => authorization::LocalSubjectAccessReview;
            "authorization.k8s.io", "v1", "SelfSubjectRulesReview" => authorization::SelfSubjectRulesReview;
            "authentication.k8s.io", "v1", "SelfSubjectReview" => authentication::SelfSubjectReview;
            "authentication.k8s.io", "v1", "TokenReview" => k8s_openapi::api::authentication::v1::TokenReview;
        );
        let definitions = generator.take_definitions(true);
        let kinds: Vec<Value> = kinds
            .into_iter()
            .map(|(g, v, k, reference)| {
                let name = reference
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix(V3_PREFIX))
                    .expect("a kind's schema is a reference");
                json!([g, v, k, name])
            })
            .collect();
        json!({"kinds": kinds, "definitions": definitions})
    }

    #[test]
    fn builtin_schemas_are_current() {
        let generated = generate_builtin_schemas();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/builtin-schemas.json");
        if std::env::var_os("FERRY_BLESS").is_some() {
            let text = serde_json::to_string(&generated).unwrap();
            std::fs::write(path, text + "\n").unwrap();
        }
        let committed: Value = serde_json::from_str(BUILTIN_SCHEMAS).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is not what k8s-openapi's types generate: run FERRY_BLESS=1 cargo test -p ferry-apiserver --lib openapi"
        );
    }

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
