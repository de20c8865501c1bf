//! The semantics of the API, independent of HTTP: defaulting, validation, optimistic
//! concurrency, subresources, graceful deletion and finalizers. HTTP handlers and the
//! server's own controllers both go through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Map, Value, json};

use ferry_store::{ObjectKey, Store, StoreError, StoredObject};

use crate::error::{ApiError, ApiResult, FieldCause};
use crate::fieldmanager;
use crate::meta::{self, metadata, metadata_mut};
use crate::patch::{self, PatchKind};
use crate::registry::{Registry, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::validation;

/// How strictly unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop them and warn (the default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter.
    pub fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict (got {other:?})"
            ))),
        }
    }
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Validate and answer without storing (`dryRun=All`).
    pub dry_run: bool,
    /// Unknown-field handling.
    pub field_validation: FieldValidation,
    /// The field manager recorded in managedFields (`fieldManager`, else the User-Agent's
    /// program name).
    pub field_manager: String,
    /// On apply, take over fields other managers own instead of failing (`force=true`).
    pub force: bool,
}

/// What a write returns: the object and warnings for the client (`Warning` headers).
pub struct Written {
    /// The object as stored (or as it would be, on a dry run).
    pub object: Value,
    /// Warnings such as dropped unknown fields.
    pub warnings: Vec<String>,
    /// True when the write created the object (for 201 Created).
    pub created: bool,
}

/// Options of a delete (`DeleteOptions`).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Grace period for pods; 0 deletes at once.
    pub grace_period_seconds: Option<i64>,
    /// `Orphan`, `Background` or `Foreground`.
    pub propagation_policy: Option<String>,
    /// Only delete if the uid matches.
    pub precondition_uid: Option<String>,
    /// Only delete if the resourceVersion matches.
    pub precondition_resource_version: Option<String>,
    /// Validate only.
    pub dry_run: bool,
}

/// Options of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Page size (0 = everything).
    pub limit: usize,
    /// Continue token from a previous page.
    pub continue_token: Option<String>,
}

/// A list result.
pub struct ListResult {
    /// The objects.
    pub items: Vec<Arc<Value>>,
    /// The revision of the list.
    pub rev: u64,
    /// Token for the next page, if any.
    pub continue_token: Option<String>,
}

/// The API's semantic layer.
pub struct Service {
    /// The object store.
    pub store: Store,
    /// The served resources.
    pub registry: Registry,
    service_ips: AtomicU32,
}

/// Finalizer that deletes dependents before the owner (foreground deletion).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer that orphans dependents before the owner goes.
pub const ORPHAN_FINALIZER: &str = "orphan";

impl Service {
    /// A service over `store`, serving the built-in resources and the CRDs found in it.
    pub fn new(store: Store) -> Self {
        let service = Self {
            store,
            registry: Registry::new(),
            service_ips: AtomicU32::new(0),
        };
        if let Some(crds) =
            service
                .registry
                .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        {
            let page = service
                .store
                .list(&crds.storage_resource(), None, None, 0, |_| true);
            for crd in page.items {
                match Registry::resources_of_crd(&crd.value) {
                    Ok(resources) => service
                        .registry
                        .register_crd(meta::name(&crd.value), resources),
                    Err(p) => {
                        tracing::warn!(crd = meta::name(&crd.value), problem = %p.message, "stored CRD not served")
                    }
                }
            }
        }
        let used = service
            .store
            .list("services", None, None, 0, |_| true)
            .items
            .len() as u32;
        service.service_ips.store(used, Ordering::Relaxed);
        service
    }

    /// The store key of an object.
    pub fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey::new(
            info.storage_resource(),
            if info.namespaced {
                namespace.unwrap_or_default()
            } else {
                ""
            },
            name,
        )
    }

    /// Reads one object.
    pub fn get(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<StoredObject> {
        self.store
            .get(&Self::key(info, namespace, name))
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))
    }

    /// Lists objects.
    pub fn list(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> ApiResult<ListResult> {
        let namespace = if info.namespaced {
            namespace.or(options.fields.required("metadata.namespace"))
        } else {
            None
        };
        let start_after = match &options.continue_token {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        let page = self.store.list(
            &info.storage_resource(),
            namespace,
            start_after.as_ref().map(|(_, k)| k),
            options.limit,
            |v| options.labels.matches(v) && options.fields.matches(v),
        );
        let rev = start_after.map_or(page.rev, |(rev, _)| rev);
        Ok(ListResult {
            items: page.items.into_iter().map(|o| o.value).collect(),
            rev,
            continue_token: page.continue_after.map(|k| encode_continue(rev, &k)),
        })
    }

    /// Checks that a namespace exists and accepts new objects.
    fn check_namespace(&self, info: &ResourceInfo, namespace: &str) -> ApiResult<()> {
        if !info.namespaced {
            return Ok(());
        }
        let ns_info = self
            .registry
            .get("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("namespaces not served"))?;
        let ns = self
            .store
            .get(&Self::key(&ns_info, None, namespace))
            .ok_or_else(|| ApiError::not_found("", "namespaces", namespace))?;
        if meta::is_deleting(&ns.value) {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Creates an object.
    pub async fn create(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        self.create_with(info, namespace, body, options, false)
            .await
    }

    /// Creates an object; `applied` when `body` is a server-side apply's result (its
    /// managedFields already made).
    async fn create_with(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        mut body: Value,
        options: &WriteOptions,
        applied: bool,
    ) -> ApiResult<Written> {
        check_type(info, &mut body)?;
        let ns = if info.namespaced {
            let url_ns = namespace.unwrap_or_default();
            let body_ns = meta::namespace(&body).to_string();
            let ns = if url_ns.is_empty() {
                body_ns.clone()
            } else {
                url_ns.to_string()
            };
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if ns.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "a {} needs a namespace",
                    info.kind
                )));
            }
            metadata_mut(&mut body).insert("namespace".into(), json!(ns));
            Some(ns)
        } else {
            metadata_mut(&mut body).remove("namespace");
            None
        };
        if !meta::meta_str(&body, "resourceVersion").is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut name = meta::name(&body).to_string();
        if name.is_empty() {
            let prefix = meta::meta_str(&body, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &info.group,
                    &info.kind,
                    "",
                    vec![FieldCause::required("metadata.name")],
                ));
            }
            name = generate_name(&prefix);
        }
        if let Some(problem) = validation::name_problem(info, &name) {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                &name,
                vec![FieldCause::invalid("metadata.name", &name, problem)],
            ));
        }
        if let Some(ns) = &ns {
            self.check_namespace(info, ns)?;
        }
        let carried_fields = {
            let m = metadata_mut(&mut body);
            m.insert("name".into(), json!(name));
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(meta::now_time()));
            m.insert("generation".into(), json!(1));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            m.remove("managedFields")
        };
        if info.status && info.custom {
            body.as_object_mut().map(|o| o.remove("status"));
        }
        self.default_on_create(info, &mut body)?;
        let warnings = self.admit(info, &mut body, None, options.field_validation)?;
        fieldmanager::on_write(
            info,
            None,
            &mut body,
            carried_fields,
            applied,
            &options.field_manager,
            None,
        );
        let key = Self::key(info, ns.as_deref(), &name);
        if options.dry_run {
            if self.store.get(&key).is_some() {
                return Err(ApiError::already_exists(&info.group, &info.plural, &name));
            }
            return Ok(Written {
                object: body,
                warnings,
                created: true,
            });
        }
        let stored = self
            .store
            .create(key, body)
            .await
            .map_err(|e| ApiError::from_store(e, &info.group, &info.plural))?;
        self.after_write(info, &stored.value);
        Ok(Written {
            object: (*stored.value).clone(),
            warnings,
            created: true,
        })
    }

    /// Fills the defaults Kubernetes fills on create.
    fn default_on_create(&self, info: &ResourceInfo, body: &mut Value) -> ApiResult<()> {
        if info.custom {
            return Ok(());
        }
        match (info.group.as_str(), info.plural.as_str()) {
            ("", "pods") => self.default_pod(body),
            ("", "secrets") => {
                let obj = body
                    .as_object_mut()
                    .ok_or_else(|| ApiError::bad_request("a Secret must be an object"))?;
                if obj
                    .get("type")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    obj.insert("type".into(), json!("Opaque"));
                }
                Ok(())
            }
            ("", "namespaces") => {
                body["spec"] = json!({"finalizers": ["kubernetes"]});
                body["status"] = json!({"phase": "Active"});
                Ok(())
            }
            ("", "services") => {
                let spec = object_field(body, "spec");
                spec.entry("type").or_insert(json!("ClusterIP"));
                spec.entry("sessionAffinity").or_insert(json!("None"));
                let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
                if !headless
                    && spec
                        .get("clusterIP")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                {
                    let n = self.service_ips.fetch_add(1, Ordering::Relaxed) + 1;
                    let ip = format!("10.96.{}.{}", (n / 254) % 256, n % 254 + 1);
                    spec.insert("clusterIP".into(), json!(ip));
                    spec.insert("clusterIPs".into(), json!([ip]));
                }
                for port in spec
                    .get_mut("ports")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(p) = port.as_object_mut() {
                        p.entry("protocol").or_insert(json!("TCP"));
                        if let Some(n) = p.get("port").cloned() {
                            p.entry("targetPort").or_insert(n);
                        }
                    }
                }
                body["status"] = json!({"loadBalancer": {}});
                Ok(())
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let resources = Registry::resources_of_crd(body).map_err(|p| {
                    ApiError::invalid(
                        &info.group,
                        &info.kind,
                        meta::name(body),
                        vec![FieldCause {
                            field: p.field,
                            reason: "FieldValueInvalid",
                            message: p.message,
                        }],
                    )
                })?;
                let names = body["spec"]["names"].clone();
                let mut accepted = names;
                if let Some(first) = resources.first() {
                    accepted["singular"] = json!(first.singular);
                    accepted["listKind"] = json!(format!("{}List", first.kind));
                }
                let now = meta::now_time();
                body["status"] = json!({
                    "acceptedNames": accepted,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                    ],
                    "storedVersions": body["spec"]["versions"].as_array().into_iter().flatten()
                        .filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn default_pod(&self, body: &mut Value) -> ApiResult<()> {
        let priority = {
            let class = body["spec"]["priorityClassName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if class.is_empty() {
                self.default_priority()
            } else {
                let pc_info = self
                    .registry
                    .get("scheduling.k8s.io", "v1", "priorityclasses");
                let pc = pc_info.and_then(|i| self.store.get(&Self::key(&i, None, &class)));
                match pc {
                    Some(pc) => Some(pc.value["value"].as_i64().unwrap_or(0)),
                    None if class == "system-node-critical" => Some(2_000_001_000),
                    None if class == "system-cluster-critical" => Some(2_000_000_000),
                    None => {
                        return Err(ApiError::forbidden(format!(
                            "pods \"{}\" is forbidden: no PriorityClass with name {class} was found",
                            meta::name(body)
                        )));
                    }
                }
            }
        };
        let spec = object_field(body, "spec");
        spec.entry("restartPolicy").or_insert(json!("Always"));
        spec.entry("schedulerName")
            .or_insert(json!(ferry_api::DEFAULT_SCHEDULER_NAME));
        spec.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
        spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
        spec.entry("serviceAccountName").or_insert(json!("default"));
        spec.entry("enableServiceLinks").or_insert(json!(true));
        if let Some(p) = priority {
            spec.insert("priority".into(), json!(p));
        }
        for list in ["containers", "initContainers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(c) = c.as_object_mut() {
                    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                    let tag_latest = !image.contains(':') || image.ends_with(":latest");
                    c.entry("imagePullPolicy").or_insert(json!(if tag_latest {
                        "Always"
                    } else {
                        "IfNotPresent"
                    }));
                    c.entry("terminationMessagePath")
                        .or_insert(json!("/dev/termination-log"));
                    c.entry("terminationMessagePolicy").or_insert(json!("File"));
                }
            }
        }
        let qos = qos_class(&body["spec"]);
        body["status"] = json!({"phase": "Pending", "qosClass": qos});
        Ok(())
    }

    /// The value of the PriorityClass marked `globalDefault`, if any.
    fn default_priority(&self) -> Option<i64> {
        let info = self
            .registry
            .get("scheduling.k8s.io", "v1", "priorityclasses")?;
        let page = self
            .store
            .list(&info.storage_resource(), None, None, 0, |v| {
                v["globalDefault"] == json!(true)
            });
        page.items
            .first()
            .map(|pc| pc.value["value"].as_i64().unwrap_or(0))
    }

    /// Normalizes and validates an object about to be written. Returns warnings.
    fn admit(
        &self,
        info: &ResourceInfo,
        body: &mut Value,
        old: Option<&Value>,
        fv: FieldValidation,
    ) -> ApiResult<Vec<String>> {
        let name = meta::name(body).to_string();
        let mut warnings = Vec::new();
        let mut unknown = Vec::new();
        if info.custom {
            if let Some(schema) = &info.schema {
                let mut causes = Vec::new();
                unknown = validation::validate_schema(body, schema, "", &mut causes);
                if !causes.is_empty() {
                    return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
                }
            }
        } else if let Some(typed) = typed_roundtrip(&info.kind, body) {
            let typed = typed.map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    info.kind, info.version, info.kind
                ))
            })?;
            unknown = validation::unknown_fields(body, &typed);
            *body = typed;
        }
        if !unknown.is_empty() {
            match fv {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")))
                }
                FieldValidation::Ignore => {}
            }
        }
        let mut causes = Vec::new();
        validation::validate_metadata(body, &mut causes);
        if !info.custom && info.group.is_empty() && info.plural == "pods" {
            validation::validate_pod(body, &mut causes);
            if let Some(old) = old {
                validation::validate_pod_update(old, body, &mut causes);
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
        }
        Ok(warnings)
    }

    /// Bookkeeping after a successful write (CRD registration).
    fn after_write(&self, info: &ResourceInfo, object: &Value) {
        if info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions" {
            match Registry::resources_of_crd(object) {
                Ok(resources) => self.registry.register_crd(meta::name(object), resources),
                Err(p) => tracing::warn!(problem = %p.message, "CRD stored but not served"),
            }
        }
    }

    /// Replaces an object (PUT), or its status with `subresource = Some("status")`.
    pub async fn update(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
        subresource: Option<&str>,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        check_type(info, &mut body)?;
        let body_name = meta::name(&body);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta::namespace(&body);
        if info.namespaced && !body_ns.is_empty() && Some(body_ns) != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let expected = match meta::meta_str(&body, "resourceVersion") {
            "" => None,
            rv => Some(rv.parse::<u64>().map_err(|_| {
                ApiError::invalid(
                    &info.group,
                    &info.kind,
                    name,
                    vec![FieldCause::invalid(
                        "metadata.resourceVersion",
                        rv,
                        "must be an integer",
                    )],
                )
            })?),
        };
        let old = self.get(info, namespace, name)?;
        if let Some(rv) = expected
            && rv != old.rev
        {
            return Err(ApiError::conflict(
                &info.group,
                &info.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        self.write_update(
            info,
            namespace,
            name,
            &old,
            body,
            subresource,
            options,
            false,
        )
        .await
    }

    /// Applies a patch, retrying on conflicting concurrent writes.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        patch_body: &Value,
        subresource: Option<&str>,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        if kind == PatchKind::Strategic && info.custom {
            return Err(ApiError::unsupported_media_type(
                "strategic merge patch is not supported for custom resources; use a JSON merge patch (application/merge-patch+json)",
            ));
        }
        let applied = kind == PatchKind::Apply;
        if applied {
            fieldmanager::check_config(patch_body, name)?;
        }
        for _attempt in 0..10 {
            let old = match self.get(info, namespace, name) {
                Ok(o) => o,
                Err(e) if applied && e.code == 404 && subresource.is_none() => {
                    let mut config = patch_body.clone();
                    metadata_mut(&mut config).insert("name".into(), json!(name));
                    let body = fieldmanager::on_apply(
                        info,
                        None,
                        &config,
                        &options.field_manager,
                        None,
                        options.force,
                    )?;
                    match self.create_with(info, namespace, body, options, true).await {
                        // Created meanwhile by someone else: apply onto that.
                        Err(e) if e.reason == "AlreadyExists" => continue,
                        other => return other,
                    }
                }
                Err(e) => return Err(e),
            };
            let mut new = (*old.value).clone();
            match kind {
                PatchKind::Merge => {
                    if !patch_body.is_object() {
                        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                    }
                    patch::merge(&mut new, patch_body)
                }
                PatchKind::Apply => {
                    new = fieldmanager::on_apply(
                        info,
                        Some(&old.value),
                        patch_body,
                        &options.field_manager,
                        subresource,
                        options.force,
                    )?;
                    // Only a resourceVersion in the configuration is a precondition.
                    let m = metadata_mut(&mut new);
                    match meta::meta_str(patch_body, "resourceVersion") {
                        "" => m.remove("resourceVersion"),
                        rv => m.insert("resourceVersion".into(), json!(rv)),
                    };
                }
                PatchKind::Json => patch::json(&mut new, patch_body).map_err(|e| match e {
                    patch::PatchError::InvalidJsonPatch(_) => ApiError::bad_request(e.to_string()),
                    _ => ApiError::invalid(
                        &info.group,
                        &info.kind,
                        name,
                        vec![FieldCause::invalid("patch", "", e.to_string())],
                    ),
                })?,
                PatchKind::Strategic => patch::strategic(&mut new, patch_body)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            }
            // A resourceVersion in the patch is a precondition.
            let patched_rv = meta::meta_str(&new, "resourceVersion").to_string();
            if !patched_rv.is_empty() && patched_rv != old.rev.to_string() {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            match self
                .write_update(
                    info,
                    namespace,
                    name,
                    &old,
                    new,
                    subresource,
                    options,
                    applied,
                )
                .await
            {
                Err(e) if e.code == 409 && e.reason == "Conflict" && patched_rv.is_empty() => {
                    continue;
                }
                other => return other,
            }
        }
        Err(ApiError::conflict(
            &info.group,
            &info.plural,
            name,
            "too many concurrent writes; try again",
        ))
    }

    /// Writes `new` over `old`, keeping what the subresource may not change; `applied` when
    /// `new` is a server-side apply's result (its managedFields already made).
    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        old: &StoredObject,
        mut new: Value,
        subresource: Option<&str>,
        options: &WriteOptions,
        applied: bool,
    ) -> ApiResult<Written> {
        check_type(info, &mut new)?;
        let carried_fields = metadata_mut(&mut new).remove("managedFields");
        let old_value = &*old.value;
        match subresource {
            Some("status") => {
                // Only the status changes.
                let status = new.get("status").cloned();
                new = old_value.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        new.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            Some(other) => {
                return Err(ApiError::method_not_allowed(format!(
                    "{} does not support updating {other}",
                    info.plural
                )));
            }
            None => {
                if info.status {
                    match old_value.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            new.as_object_mut().map(|o| o.remove("status"));
                        }
                    }
                }
            }
        }
        // Fields that never change through an update.
        {
            let old_meta = metadata(old_value).clone();
            let m = metadata_mut(&mut new);
            for fixed in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
            ] {
                match old_meta.get(fixed) {
                    Some(v) => m.insert(fixed.into(), v.clone()),
                    None => m.remove(fixed),
                };
            }
            m.remove("resourceVersion");
            m.remove("managedFields");
            let generation = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            m.insert("generation".into(), json!(generation));
        }
        if info.plural == "namespaces" && info.group.is_empty() {
            // A namespace's spec.finalizers change only through its controller.
            if let Some(spec) = old_value.get("spec") {
                new["spec"] = spec.clone();
            }
        }
        let warnings = self.admit(info, &mut new, Some(old_value), options.field_validation)?;
        fieldmanager::on_write(
            info,
            Some(old_value),
            &mut new,
            carried_fields,
            applied,
            &options.field_manager,
            subresource,
        );
        if spec_changed(old_value, &new) {
            let generation = metadata(old_value)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if options.dry_run {
            return Ok(Written {
                object: new,
                warnings,
                created: false,
            });
        }
        let key = Self::key(info, namespace, name);
        // The last finalizer of an object being deleted is gone: delete it for real.
        if meta::is_deleting(&new)
            && meta::finalizers(&new).is_empty()
            && !self.awaits_kubelet(info, &new)
            && !(info.plural == "namespaces" && info.group.is_empty())
        {
            let deleted = self
                .store
                .delete(key, Some(old.rev))
                .await
                .map_err(|e| ApiError::from_store(e, &info.group, &info.plural))?;
            self.after_delete(info, &deleted.value);
            return Ok(Written {
                object: (*deleted.value).clone(),
                warnings,
                created: false,
            });
        }
        if *old_value == new {
            // Nothing changed: no new revision.
            return Ok(Written {
                object: old_value.clone(),
                warnings,
                created: false,
            });
        }
        let stored = self
            .store
            .update(key, new, Some(old.rev))
            .await
            .map_err(|e| ApiError::from_store(e, &info.group, &info.plural))?;
        self.after_write(info, &stored.value);
        Ok(Written {
            object: (*stored.value).clone(),
            warnings,
            created: false,
        })
    }

    /// Whether a pod being deleted still waits for its node agent to stop it.
    fn awaits_kubelet(&self, info: &ResourceInfo, object: &Value) -> bool {
        info.group.is_empty()
            && info.plural == "pods"
            && metadata(object)
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
    }

    /// Deletes an object: at once, or by marking it (graceful pod termination, finalizers,
    /// foreground and orphan propagation). Returns the object's last or current state.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<Value> {
        for _attempt in 0..10 {
            let old = self.get(info, namespace, name)?;
            if let Some(uid) = &options.precondition_uid
                && uid != meta::uid(&old.value)
            {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.plural,
                    name,
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&old.value)
                    ),
                ));
            }
            if let Some(rv) = &options.precondition_resource_version
                && *rv != old.rev.to_string()
            {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.plural,
                    name,
                    format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        old.rev
                    ),
                ));
            }
            let is_pod = info.group.is_empty() && info.plural == "pods";
            let is_namespace = info.group.is_empty() && info.plural == "namespaces";
            let grace = if is_pod {
                let terminal = matches!(
                    old.value["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed")
                );
                let unbound = old.value["spec"]["nodeName"]
                    .as_str()
                    .is_none_or(str::is_empty);
                if terminal || unbound {
                    0
                } else {
                    options
                        .grace_period_seconds
                        .or_else(|| old.value["spec"]["terminationGracePeriodSeconds"].as_i64())
                        .unwrap_or(30)
                        .max(0)
                }
            } else {
                0
            };
            let mut finalizers = meta::finalizers(&old.value);
            match options.propagation_policy.as_deref() {
                Some("Foreground") if !finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) => {
                    finalizers.push(FOREGROUND_FINALIZER.into())
                }
                Some("Orphan") if !finalizers.iter().any(|f| f == ORPHAN_FINALIZER) => {
                    finalizers.push(ORPHAN_FINALIZER.into())
                }
                None | Some("Foreground" | "Orphan" | "Background") => {}
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "propagationPolicy must be one of Orphan, Background, Foreground (got {other:?})"
                    )));
                }
            }
            let key = Self::key(info, namespace, name);
            let already = meta::is_deleting(&old.value);
            let current_grace = metadata(&old.value)
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            let immediate = grace == 0 && finalizers.is_empty() && !is_namespace;
            if immediate {
                if options.dry_run {
                    return Ok((*old.value).clone());
                }
                match self.store.delete(key, Some(old.rev)).await {
                    Ok(deleted) => {
                        self.after_delete(info, &deleted.value);
                        return Ok((*deleted.value).clone());
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, &info.group, &info.plural)),
                }
            }
            // Mark for deletion (or shorten a pending grace period).
            let mut new = (*old.value).clone();
            let shorten = already && is_pod && current_grace.is_some_and(|g| grace < g);
            if !already || shorten {
                let m = metadata_mut(&mut new);
                let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
                m.insert("deletionTimestamp".into(), json!(meta::time_string(when)));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            meta::set_finalizers(&mut new, &finalizers);
            if is_namespace {
                new["status"]["phase"] = json!("Terminating");
            }
            if new == *old.value || options.dry_run {
                return Ok(new);
            }
            match self.store.update(key, new, Some(old.rev)).await {
                Ok(stored) => return Ok((*stored.value).clone()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, &info.group, &info.plural)),
            }
        }
        Err(ApiError::conflict(
            &info.group,
            &info.plural,
            name,
            "too many concurrent writes; try again",
        ))
    }

    /// Bookkeeping after an object is gone for good.
    fn after_delete(&self, info: &ResourceInfo, object: &Value) {
        if info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions" {
            self.registry.unregister_crd(meta::name(object));
        }
    }

    /// Binds a pod to a node (`pods/binding`): sets `spec.nodeName` once and copies the
    /// Binding's annotations onto the pod.
    pub async fn bind(&self, namespace: &str, name: &str, binding: &Value) -> ApiResult<Value> {
        let info = self
            .registry
            .get("", "v1", "pods")
            .ok_or_else(|| ApiError::internal("pods not served"))?;
        let target = binding["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if target.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![FieldCause::required("target.name")],
            ));
        }
        let binding_name = meta::name(binding);
        if !binding_name.is_empty() && binding_name != name {
            return Err(ApiError::bad_request(format!(
                "the binding names pod {binding_name:?} but was posted for {name:?}"
            )));
        }
        for _attempt in 0..10 {
            let old = self.get(&info, Some(namespace), name)?;
            if meta::is_deleting(&old.value) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    "the pod is being deleted",
                ));
            }
            let bound = old.value["spec"]["nodeName"].as_str().unwrap_or_default();
            if !bound.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    format!("pod {name} is already assigned to node {bound:?}"),
                ));
            }
            if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str)
                && !uid.is_empty()
                && uid != meta::uid(&old.value)
            {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    "the binding is for another pod with the same name",
                ));
            }
            let mut new = (*old.value).clone();
            new["spec"]["nodeName"] = json!(target);
            if let Some(annotations) = binding
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
            {
                let m = metadata_mut(&mut new);
                let slot = m.entry("annotations").or_insert_with(|| json!({}));
                if let Some(existing) = slot.as_object_mut() {
                    for (k, v) in annotations {
                        existing.insert(k.clone(), v.clone());
                    }
                }
            }
            set_condition(&mut new, "PodScheduled", "True", "", "");
            match self
                .store
                .update(Self::key(&info, Some(namespace), name), new, Some(old.rev))
                .await
            {
                Ok(stored) => return Ok((*stored.value).clone()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, "", "pods")),
            }
        }
        Err(ApiError::conflict(
            "",
            "pods",
            name,
            "too many concurrent writes; try again",
        ))
    }
}

/// Sets (or replaces) a condition in `status.conditions`, keeping the transition time when the
/// status did not change.
pub fn set_condition(object: &mut Value, type_: &str, status: &str, reason: &str, message: &str) {
    let now = meta::now_time();
    let conditions = object_field(object, "status")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("made an array");
    let mut condition =
        json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if !reason.is_empty() {
        condition["reason"] = json!(reason);
    }
    if !message.is_empty() {
        condition["message"] = json!(message);
    }
    match list.iter_mut().find(|c| c["type"] == type_) {
        Some(existing) => {
            if existing["status"] == status {
                condition["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = condition;
        }
        None => list.push(condition),
    }
}

/// The object's `field`, made an object if missing.
fn object_field<'a>(v: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let obj = v.as_object_mut().expect("made an object");
    let f = obj.entry(field).or_insert_with(|| json!({}));
    if !f.is_object() {
        *f = json!({});
    }
    f.as_object_mut().expect("made an object")
}

/// Checks (and fills) `apiVersion` and `kind`.
fn check_type(info: &ResourceInfo, body: &mut Value) -> ApiResult<()> {
    let api_version = info.api_version();
    let obj = body.as_object_mut().ok_or_else(|| {
        ApiError::bad_request(format!("the body of a {} must be a JSON object", info.kind))
    })?;
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), json!(info.kind));
        }
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({k}) does not match the resource ({}, kind {})",
                info.plural, info.kind
            )));
        }
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) if info.custom && v.split('/').next() == Some(info.group.as_str()) => {
            // Another version of the same custom resource: stored as sent (no conversion).
            obj.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the apiVersion of the object ({v}) does not match the resource's ({api_version})"
            )));
        }
    }
    Ok(())
}

/// Whether anything outside `metadata` and `status` changed.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    };
    strip(old) != strip(new)
}

/// A name made from `generateName`: the prefix and five random characters.
fn generate_name(prefix: &str) -> String {
    use rand::RngExt;
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    let max_prefix = 253 - 5;
    let prefix = if prefix.len() > max_prefix {
        &prefix[..max_prefix]
    } else {
        prefix
    };
    format!("{prefix}{suffix}")
}

/// The QoS class of a pod spec (Guaranteed, Burstable or BestEffort).
fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
    {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let rq = req.get(r).or(lim.get(r));
            let lm = lim.get(r);
            if rq.is_some() || lm.is_some() {
                any = true;
            }
            if lm.is_none() || rq != lm {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Normalizes a built-in object through its typed form, or `None` for kinds without one.
fn typed_roundtrip(kind: &str, v: &Value) -> Option<Result<Value, serde_json::Error>> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{
        ConfigMap, Event, Namespace, Node, Pod, Secret, Service as Svc, ServiceAccount,
    };
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    fn rt<T: serde::de::DeserializeOwned + serde::Serialize>(
        v: &Value,
    ) -> Result<Value, serde_json::Error> {
        serde_json::from_value::<T>(v.clone()).and_then(serde_json::to_value)
    }
    Some(match kind {
        "Pod" => rt::<Pod>(v),
        "Node" => rt::<Node>(v),
        "Namespace" => rt::<Namespace>(v),
        "Event" => rt::<Event>(v),
        "ConfigMap" => rt::<ConfigMap>(v),
        "Secret" => rt::<Secret>(v),
        "Service" => rt::<Svc>(v),
        "ServiceAccount" => rt::<ServiceAccount>(v),
        "Lease" => rt::<Lease>(v),
        "PriorityClass" => rt::<PriorityClass>(v),
        "CustomResourceDefinition" => rt::<CustomResourceDefinition>(v),
        _ => return None,
    })
}

/// A continue token: the list revision and the last (namespace, name) returned.
fn encode_continue(rev: u64, after: &(String, String)) -> String {
    use base64::Engine;
    let raw = json!({"rv": rev, "ns": after.0, "name": after.1}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> ApiResult<(u64, (String, String))> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v["rv"].as_u64().ok_or_else(bad)?;
    let ns = v["ns"].as_str().ok_or_else(bad)?.to_string();
    let name = v["name"].as_str().ok_or_else(bad)?.to_string();
    Ok((rev, (ns, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos() {
        assert_eq!(qos_class(&json!({"containers": [{}]})), "BestEffort");
        assert_eq!(
            qos_class(
                &json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            ),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})),
            "Burstable"
        );
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, &("ns".into(), "n".into()));
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, ("ns".into(), "n".into()))
        );
        assert_eq!(decode_continue("garbage!").unwrap_err().code, 400);
    }

    #[test]
    fn generated_names_are_valid() {
        let n = generate_name("job-");
        assert!(n.starts_with("job-") && n.len() == 9);
        assert!(validation::dns_subdomain_problem(&n).is_none());
    }
}
