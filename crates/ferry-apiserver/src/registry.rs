//! The resources the server serves: the built-in kinds, plus one entry per served version of
//! every established CustomResourceDefinition.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use crate::strategy::StrategyRef;

/// Paths of a scale subresource's fields in the custom resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// JSON path of the desired replicas, such as `.spec.replicas`.
    pub spec_replicas: String,
    /// JSON path of the observed replicas, such as `.status.replicas`.
    pub status_replicas: String,
    /// JSON path of the label selector in status, if any.
    pub label_selector: Option<String>,
}

/// A column of `kubectl get` for a custom resource (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`, …).
    pub type_: String,
    /// JSON path into the object.
    pub json_path: String,
    /// 0 = always shown, more = only with `-o wide`.
    pub priority: i32,
    /// Column description.
    pub description: String,
}

/// One served resource of one group version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group (empty for the core group).
    pub group: String,
    /// Version (`v1`, `v1alpha1`, …).
    pub version: String,
    /// Plural lower-case name used in paths.
    pub plural: String,
    /// Singular lower-case name.
    pub singular: String,
    /// Kind of the objects.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names accepted by kubectl (`po`, `no`, …).
    pub short_names: Vec<String>,
    /// Categories (`all`, …).
    pub categories: Vec<String>,
    /// Whether `/status` is a separate subresource.
    pub status: bool,
    /// The scale subresource, if any.
    pub scale: Option<ScalePaths>,
    /// Extra subresources served by custom handlers (`log`, `binding`).
    pub extra_subresources: Vec<&'static str>,
    /// Printer columns for custom resources.
    pub columns: Vec<PrinterColumn>,
    /// OpenAPI v3 schema of the objects (custom resources only), for validation and clients.
    pub schema: Option<Value>,
    /// True for custom resources (served from a CRD).
    pub custom: bool,
    /// The kind's behaviour: defaulting, validation, printing, deletion.
    pub strategy: StrategyRef,
}

impl ResourceInfo {
    /// A built-in resource (its strategy is set by [`crate::strategy::builtin_resources`]).
    pub fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short: &[&str],
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            status: false,
            scale: None,
            extra_subresources: Vec::new(),
            columns: Vec::new(),
            schema: None,
            custom: false,
            strategy: crate::strategy::CUSTOM,
        }
    }

    /// With a status subresource.
    pub fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    /// With a scale subresource over the given JSON paths (built-in scalable kinds).
    pub fn with_scale(
        mut self,
        spec_replicas: &str,
        status_replicas: &str,
        label_selector: Option<&str>,
    ) -> Self {
        self.scale = Some(ScalePaths {
            spec_replicas: spec_replicas.into(),
            status_replicas: status_replicas.into(),
            label_selector: label_selector.map(str::to_string),
        });
        self
    }

    /// With subresources served by their own handlers.
    pub fn with_subresources(mut self, subs: &[&'static str]) -> Self {
        self.extra_subresources = subs.to_vec();
        self
    }

    /// In a category such as `all`.
    pub fn in_category(mut self, category: &str) -> Self {
        self.categories.push(category.to_string());
        self
    }

    /// `group/version`, or `version` for the core group: the objects' `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key under which objects are stored: the plural, qualified by the group for
    /// non-core groups. Every version of a resource shares it.
    pub fn storage_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}/{}", self.group, self.plural)
        }
    }

    /// Whether the resource has a named subresource.
    pub fn has_subresource(&self, sub: &str) -> bool {
        match sub {
            "status" => self.status,
            "scale" => self.scale.is_some(),
            other => self.extra_subresources.contains(&other),
        }
    }

    /// The `APIResource` entries of discovery for this resource and its subresources.
    pub fn discovery_entries(&self) -> Vec<Value> {
        let verbs: &[&str] = if self.strategy.create_only() {
            &["create"]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        };
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut entries = vec![main];
        if self.status {
            entries.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if self.scale.is_some() {
            entries.push(json!({
                "name": format!("{}/scale", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        for sub in &self.extra_subresources {
            if *sub == "eviction" {
                // Served in `policy/v1` whatever the pod's group version (kubectl drain
                // looks for exactly this entry).
                entries.push(json!({
                    "name": format!("{}/eviction", self.plural),
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "policy",
                    "version": "v1",
                    "kind": "Eviction",
                    "verbs": ["create"],
                }));
                continue;
            }
            let (kind, verbs): (&str, &[&str]) = match *sub {
                "binding" => ("Binding", &["create"]),
                "log" => ("Pod", &["get"]),
                "finalize" => (self.kind.as_str(), &["update"]),
                _ => (self.kind.as_str(), &["get"]),
            };
            entries.push(json!({
                "name": format!("{}/{sub}", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
        entries
    }
}

/// Why a CRD cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdProblem {
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The served resources, keyed by (group, version, plural).
#[derive(Default)]
pub struct Registry {
    resources: RwLock<BTreeMap<(String, String, String), Arc<ResourceInfo>>>,
}

impl Registry {
    /// A registry with the built-in resources.
    pub fn new() -> Self {
        let registry = Self::default();
        {
            let mut map = registry.write();
            for info in crate::strategy::builtin_resources() {
                map.insert(
                    (
                        info.group.clone(),
                        info.version.clone(),
                        info.plural.clone(),
                    ),
                    Arc::new(info),
                );
            }
        }
        registry
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, String, String), Arc<ResourceInfo>>>
    {
        self.resources.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, String, String), Arc<ResourceInfo>>> {
        self.resources.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks up a resource by group, version and plural name.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.read()
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Looks up a resource by group and kind (any served version; the first wins).
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.read()
            .values()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    /// Every served resource, ordered by group, version and plural.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.read().values().cloned().collect()
    }

    /// Whether a group version is served.
    pub fn serves_group_version(&self, group: &str, version: &str) -> bool {
        self.read()
            .keys()
            .any(|(g, v, _)| g == group && v == version)
    }

    /// Checks a CRD and returns the resources it would serve (one per served version).
    pub fn resources_of_crd(crd: &Value) -> Result<Vec<ResourceInfo>, CrdProblem> {
        let problem = |field: &str, message: &str| CrdProblem {
            field: field.to_string(),
            message: message.to_string(),
        };
        let parsed: CustomResourceDefinition =
            serde_json::from_value(crd.clone()).map_err(|e| {
                problem(
                    "spec",
                    &format!("not a valid CustomResourceDefinition: {e}"),
                )
            })?;
        let spec = &parsed.spec;
        let names = &spec.names;
        let name = parsed.metadata.name.clone().unwrap_or_default();
        if spec.group.is_empty() || !spec.group.contains('.') {
            return Err(problem(
                "spec.group",
                "should be a domain with at least one dot",
            ));
        }
        if names.plural.is_empty() {
            return Err(problem("spec.names.plural", "Required value"));
        }
        if names.kind.is_empty() {
            return Err(problem("spec.names.kind", "Required value"));
        }
        if name != format!("{}.{}", names.plural, spec.group) {
            return Err(problem(
                "metadata.name",
                &format!(
                    "must be spec.names.plural+\".\"+spec.group ({}.{})",
                    names.plural, spec.group
                ),
            ));
        }
        let namespaced = match spec.scope.as_str() {
            "Namespaced" => true,
            "Cluster" => false,
            other => {
                return Err(problem(
                    "spec.scope",
                    &format!(
                        "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                    ),
                ));
            }
        };
        if spec.versions.is_empty() {
            return Err(problem("spec.versions", "must have at least one version"));
        }
        if spec.versions.iter().filter(|v| v.storage).count() != 1 {
            return Err(problem(
                "spec.versions",
                "must have exactly one version marked as storage version",
            ));
        }
        let mut out = Vec::new();
        for v in spec.versions.iter().filter(|v| v.served) {
            let subresources = v.subresources.as_ref();
            let scale = subresources
                .and_then(|s| s.scale.as_ref())
                .map(|s| ScalePaths {
                    spec_replicas: s.spec_replicas_path.clone(),
                    status_replicas: s.status_replicas_path.clone(),
                    label_selector: s.label_selector_path.clone(),
                });
            let columns = v
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| PrinterColumn {
                    name: c.name.clone(),
                    type_: c.type_.clone(),
                    json_path: c.json_path.clone(),
                    priority: c.priority.unwrap_or(0),
                    description: c.description.clone().unwrap_or_default(),
                })
                .collect();
            let schema = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok());
            out.push(ResourceInfo {
                group: spec.group.clone(),
                version: v.name.clone(),
                plural: names.plural.clone(),
                singular: names
                    .singular
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| names.kind.to_ascii_lowercase()),
                kind: names.kind.clone(),
                namespaced,
                short_names: names.short_names.clone().unwrap_or_default(),
                categories: names.categories.clone().unwrap_or_default(),
                status: subresources.is_some_and(|s| s.status.is_some()),
                scale,
                extra_subresources: Vec::new(),
                columns,
                schema,
                custom: true,
                strategy: crate::strategy::CUSTOM,
            });
        }
        Ok(out)
    }

    /// Serves the resources of a CRD (replacing what it served before).
    pub fn register_crd(&self, crd_name: &str, resources: Vec<ResourceInfo>) {
        let mut map = self.write();
        map.retain(|_, r| !(r.custom && format!("{}.{}", r.plural, r.group) == crd_name));
        for info in resources {
            map.insert(
                (
                    info.group.clone(),
                    info.version.clone(),
                    info.plural.clone(),
                ),
                Arc::new(info),
            );
        }
    }

    /// Stops serving the resources of a CRD.
    pub fn unregister_crd(&self, crd_name: &str) {
        self.write()
            .retain(|_, r| !(r.custom && format!("{}.{}", r.plural, r.group) == crd_name));
    }

    /// The group versions served, grouped by group, for `/apis` (core group excluded).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, v, _) in self.read().keys() {
            if g.is_empty() {
                continue;
            }
            let versions = groups.entry(g.clone()).or_default();
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
        for versions in groups.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        groups
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, n) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (level, major, n.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, ["v2", "v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }

    #[test]
    fn crd_needs_consistent_names() {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}}]
            }
        });
        let resources = Registry::resources_of_crd(&crd).unwrap();
        assert_eq!(resources.len(), 1);
        assert!(resources[0].status && resources[0].scale.is_some());
        assert_eq!(resources[0].singular, "widget");

        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("gadgets.example.com");
        assert_eq!(
            Registry::resources_of_crd(&bad).unwrap_err().field,
            "metadata.name"
        );
        let mut bad = crd;
        bad["spec"]["scope"] = json!("Global");
        assert_eq!(
            Registry::resources_of_crd(&bad).unwrap_err().field,
            "spec.scope"
        );
    }
}
