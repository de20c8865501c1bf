//! The semantics of the API, independent of HTTP: defaulting, validation, optimistic
//! concurrency, subresources, graceful deletion and finalizers. HTTP handlers and the
//! server's own storage tasks (Event expiry) go through it.

use std::sync::Arc;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use ferry_store::{ObjectKey, Store, StoreError, StoredObject};

use crate::error::{ApiError, ApiResult, FieldCause};
use crate::fieldmanager;
use crate::meta::{self, metadata, metadata_mut};
use crate::patch::{self, PatchKind};
use crate::registry::{Registry, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::strategy;
use crate::strategy::object_field;
#[cfg(test)]
use crate::strategy::pod::qos_class;
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
    /// Who writes, for admission (none: the server itself).
    pub user: Option<Arc<crate::auth::UserInfo>>,
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
    /// Who deletes, for admission (none: the server itself).
    pub user: Option<Arc<crate::auth::UserInfo>>,
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
    /// Cluster IPs and node ports of Services.
    pub(crate) allocator: crate::allocator::ServiceAllocator,
    /// The admission plugins every write passes.
    pub admission: crate::admission::Chain,
}

/// Attempts of a write that conflicts with concurrent writes before it gives up. Every
/// conflict means another write succeeded, so this bounds only pathological contention.
const CONFLICT_RETRIES: usize = 1000;

/// How long a request for a resourceVersion newer than the store's waits for it (as
/// kube-apiserver's watch cache waits).
pub const FRESHNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Finalizer that deletes dependents before the owner (foreground deletion).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer that orphans dependents before the owner goes.
pub const ORPHAN_FINALIZER: &str = "orphan";

impl Service {
    /// A service over `store`, serving the built-in resources and the CRDs found in it,
    /// allocating Service addresses from `ferry up`'s default network plan.
    pub fn new(store: Store) -> Self {
        Self::with_network(store, ferry_api::network::ClusterNetwork::default())
    }

    /// A service over `store` whose Services get addresses and node ports from `network`.
    pub fn with_network(store: Store, network: ferry_api::network::ClusterNetwork) -> Self {
        let service = Self {
            store,
            registry: Registry::new(),
            allocator: crate::allocator::ServiceAllocator::new(network),
            admission: crate::admission::Chain::standard(),
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
        let fields = Self::selectable(info, options.fields.clone())?;
        let namespace = if info.namespaced {
            namespace.or(fields.required("metadata.namespace"))
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
            |v| options.labels.matches(v) && fields.matches(v),
        );
        let rev = start_after.map_or(page.rev, |(rev, _)| rev);
        Ok(ListResult {
            items: page.items.into_iter().map(|o| o.value).collect(),
            rev,
            continue_token: page.continue_after.map(|k| encode_continue(rev, &k)),
        })
    }

    /// Checks a field selector against the fields the kind can be selected by (`400 field
    /// label not supported` for others, as Kubernetes answers) and points each label at the
    /// object field it reads.
    pub fn selectable(info: &ResourceInfo, mut fields: FieldSelector) -> ApiResult<FieldSelector> {
        for label in fields.labels() {
            let known = strategy::METADATA_FIELDS.contains(&label.as_str())
                || info.strategy.selectable_fields().contains(&label.as_str());
            if !known {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {label}"
                )));
            }
            if let Some(path) = info.strategy.field_path(&label) {
                fields.read_label_at(&label, path);
            }
        }
        Ok(fields)
    }

    /// Reads a request's `resourceVersion` ("" and "0": any) and waits, up to
    /// [`FRESHNESS_WAIT`], until the store has reached it. A revision the store does not reach
    /// in that time is answered `504 Timeout` with the cause `ResourceVersionTooLarge`, as
    /// kube-apiserver answers; one that is not a number, `400`.
    pub async fn await_resource_version(&self, rv: &str) -> ApiResult<Option<u64>> {
        if rv.is_empty() {
            return Ok(None);
        }
        let rev: u64 = rv.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resource version {rv:?}: must be an unsigned integer"
            ))
        })?;
        if self.store.revision() >= rev {
            return Ok(Some(rev));
        }
        let reached = async {
            loop {
                // Subscribed before the next look, so no commit in between goes unseen.
                let Ok(mut watch) = self.store.watch("", None, ferry_store::WatchFrom::Now) else {
                    return false;
                };
                loop {
                    if self.store.revision() >= rev {
                        return true;
                    }
                    match watch.next().await {
                        Ok(event) if event.rev >= rev => return true,
                        Ok(_) => {}
                        Err(ferry_store::WatchEnd::Lagged) => break,
                        Err(ferry_store::WatchEnd::Closed) => return false,
                    }
                }
            }
        };
        match tokio::time::timeout(FRESHNESS_WAIT, reached).await {
            Ok(true) => Ok(Some(rev)),
            _ => Err(ApiError::resource_version_too_large(
                rev,
                self.store.revision(),
            )),
        }
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
        if let Some(problem) = info.strategy.name_problem(&name) {
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
        info.strategy.prepare_for_create(self, info, &mut body)?;
        info.strategy
            .prepare_for_create_by(options.user.as_deref(), &mut body);
        let attributes = crate::admission::Attributes {
            operation: crate::admission::Operation::Create,
            info,
            namespace: ns.as_deref(),
            name: &name,
            subresource: None,
            old: None,
            user: options.user.as_deref(),
            dry_run: options.dry_run,
        };
        let admitted = match self.admit_create(&attributes, &mut body, options).await {
            Ok(a) => a,
            Err(e) => {
                info.strategy.release(self, &body);
                return Err(e);
            }
        };
        let (warnings, _admission_guards) = admitted;
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
            info.strategy.release(self, &body);
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
        info.strategy.after_write(self, &stored.value);
        Ok(Written {
            object: (*stored.value).clone(),
            warnings,
            created: true,
        })
    }

    /// Admission of a new object: mutating plugins, the kind's validation, validating
    /// plugins. Returns the warnings and what to hold until the object is stored.
    async fn admit_create(
        &self,
        attributes: &crate::admission::Attributes<'_>,
        body: &mut Value,
        options: &WriteOptions,
    ) -> ApiResult<(Vec<String>, Vec<crate::admission::Guard>)> {
        let mut warnings = self.admission.mutate(self, attributes, body)?;
        warnings.extend(self.admit(attributes.info, body, None, options.field_validation)?);
        let admitted = self.admission.validate(self, attributes, body).await?;
        warnings.extend(admitted.warnings);
        Ok((warnings, admitted.guards))
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
        let unknown = info.strategy.decode(info, body)?;
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
        info.strategy.validate(body, &mut causes);
        if let Some(old) = old {
            info.strategy.validate_update(old, body, &mut causes);
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&info.group, &info.kind, &name, causes));
        }
        Ok(warnings)
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
        for _attempt in 0..CONFLICT_RETRIES {
            let old = self.get(info, namespace, name)?;
            if let Some(rv) = expected
                && rv != old.rev
            {
                return Err(ApiError::modified(&info.group, &info.plural, name));
            }
            match self
                .write_update(
                    info,
                    namespace,
                    name,
                    &old,
                    body.clone(),
                    subresource,
                    options,
                    false,
                )
                .await
            {
                // An unconditional update goes over whatever was written meanwhile.
                Err(e) if is_conflict(&e) && expected.is_none() => continue,
                other => return other,
            }
        }
        Err(too_many_conflicts(info, name))
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
        for _attempt in 0..CONFLICT_RETRIES {
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
            check_patched_identity(info, namespace, name, &new)?;
            // A resourceVersion the patch sets is a precondition. One it does not set is the
            // stored object's own: a conflicting write meanwhile makes the patch apply again to
            // the newer object (as kube-apiserver's GuaranteedUpdate does), while a precondition
            // fails this check on the next attempt.
            let patched_rv = meta::meta_str(&new, "resourceVersion").to_string();
            if !patched_rv.is_empty() && patched_rv != old.rev.to_string() {
                return Err(ApiError::modified(&info.group, &info.plural, name));
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
                Err(e) if is_conflict(&e) => continue,
                other => return other,
            }
        }
        Err(too_many_conflicts(info, name))
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
            Some("status") => info.strategy.prepare_for_status_update(old_value, &mut new),
            Some("finalize") if info.extra_subresources.contains(&"finalize") => {
                // Only spec.finalizers changes (the namespace controller's last step).
                let finalizers = new["spec"]["finalizers"].clone();
                new = old_value.clone();
                new["spec"]["finalizers"] = finalizers;
            }
            Some("approval") if info.extra_subresources.contains(&"approval") => info
                .strategy
                .prepare_for_approval_update(old_value, &mut new),
            Some(other) => {
                return Err(ApiError::method_not_allowed(format!(
                    "{} does not support updating {other}",
                    info.plural
                )));
            }
            None => {
                info.strategy.prepare_for_update(info, old_value, &mut new);
                info.strategy
                    .allocate_on_update(self, info, old_value, &mut new)?;
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
        let attributes = crate::admission::Attributes {
            operation: crate::admission::Operation::Update,
            info,
            namespace,
            name,
            subresource,
            old: Some(old_value),
            user: options.user.as_deref(),
            dry_run: options.dry_run,
        };
        let mut warnings = self.admission.mutate(self, &attributes, &mut new)?;
        warnings.extend(self.admit(info, &mut new, Some(old_value), options.field_validation)?);
        let admitted = self.admission.validate(self, &attributes, &new).await?;
        warnings.extend(admitted.warnings);
        let _admission_guards = admitted.guards;
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
            metadata_mut(&mut new).insert("generation".into(), json!(generation.saturating_add(1)));
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
        let grace = metadata(&new)
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if meta::is_deleting(&new)
            && meta::finalizers(&new).is_empty()
            && !info.strategy.awaits_termination(&new, grace)
        {
            let deleted = self
                .store
                .delete(key, Some(old.rev))
                .await
                .map_err(|e| ApiError::from_store(e, &info.group, &info.plural))?;
            info.strategy.after_delete(self, &deleted.value);
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
        info.strategy.after_write(self, &stored.value);
        Ok(Written {
            object: (*stored.value).clone(),
            warnings,
            created: false,
        })
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
        for _attempt in 0..CONFLICT_RETRIES {
            let old = self.get(info, namespace, name)?;
            let attributes = crate::admission::Attributes {
                operation: crate::admission::Operation::Delete,
                info,
                namespace,
                name,
                subresource: None,
                old: Some(&old.value),
                user: options.user.as_deref(),
                dry_run: options.dry_run,
            };
            let _admission_guards = self
                .admission
                .validate(self, &attributes, &old.value)
                .await?
                .guards;
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
            let grace = info
                .strategy
                .deletion_grace(&old.value, options.grace_period_seconds);
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
            let immediate = grace == 0
                && finalizers.is_empty()
                && !info.strategy.awaits_termination(&old.value, grace);
            if immediate {
                if options.dry_run {
                    return Ok((*old.value).clone());
                }
                match self.store.delete(key, Some(old.rev)).await {
                    Ok(deleted) => {
                        info.strategy.after_delete(self, &deleted.value);
                        return Ok((*deleted.value).clone());
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, &info.group, &info.plural)),
                }
            }
            // Mark for deletion (or shorten a pending grace period).
            let mut new = (*old.value).clone();
            let shorten = already && current_grace.is_some_and(|g| grace < g);
            if !already || shorten {
                let m = metadata_mut(&mut new);
                m.insert("deletionTimestamp".into(), json!(deadline(grace)));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            meta::set_finalizers(&mut new, &finalizers);
            info.strategy.mark_deleting(&mut new);
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

    /// The `autoscaling/v1` Scale of an object with a scale subresource.
    pub fn scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        let o = self.get(info, namespace, name)?;
        Ok(scale_of(info, &o.value))
    }

    /// Replaces the Scale (`PUT .../scale`): sets the desired replicas and answers with the
    /// new Scale.
    pub async fn update_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        scale: &Value,
        options: &WriteOptions,
    ) -> ApiResult<Value> {
        self.set_replicas(
            info,
            namespace,
            name,
            scale["spec"]["replicas"].clone(),
            options,
        )
        .await
    }

    /// Patches the Scale (`PATCH .../scale`, merge semantics) and answers with the new Scale.
    pub async fn patch_scale(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        patch_body: &Value,
        options: &WriteOptions,
    ) -> ApiResult<Value> {
        let mut scale = self.scale(info, namespace, name)?;
        patch::merge(&mut scale, patch_body);
        let replicas = scale["spec"]["replicas"].clone();
        self.set_replicas(info, namespace, name, replicas, options)
            .await
    }

    async fn set_replicas(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        replicas: Value,
        options: &WriteOptions,
    ) -> ApiResult<Value> {
        let (patch, sub) = scale_patch(info, replicas)?;
        let w = self
            .patch(
                info,
                namespace,
                name,
                PatchKind::Merge,
                &patch,
                sub,
                options,
            )
            .await?;
        Ok(scale_of(info, &w.object))
    }

    /// Deletes every object the selectors of `list` choose (`deletecollection`). Returns the
    /// deleted (or marked) objects and the revision after them.
    pub async fn delete_collection(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        list: &ListOptions,
        options: &DeleteOptions,
    ) -> ApiResult<(Vec<Value>, u64)> {
        let items = self.list(
            info,
            namespace,
            &ListOptions {
                limit: 0,
                continue_token: None,
                ..list.clone()
            },
        )?;
        let mut deleted = Vec::new();
        for item in items.items {
            let item_ns = meta::namespace(&item).to_string();
            let name = meta::name(&item).to_string();
            match self.delete(info, Some(&item_ns), &name, options).await {
                Ok(o) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((deleted, self.store.revision()))
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
        for _attempt in 0..CONFLICT_RETRIES {
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

/// Whether a write failed because the object changed since it was read.
fn is_conflict(e: &ApiError) -> bool {
    e.code == 409 && e.reason == "Conflict"
}

fn too_many_conflicts(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::conflict(
        &info.group,
        &info.plural,
        name,
        "too many concurrent writes; try again",
    )
}

/// A patch may not rename an object or move it to another namespace (400, as Kubernetes).
fn check_patched_identity(
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    patched: &Value,
) -> ApiResult<()> {
    let patched_name = meta::name(patched);
    if patched_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({patched_name}) does not match the name on the URL ({name})"
        )));
    }
    let patched_ns = meta::namespace(patched);
    if info.namespaced
        && let Some(ns) = namespace.filter(|ns| !ns.is_empty())
        && !patched_ns.is_empty()
        && patched_ns != ns
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the object ({patched_ns}) does not match the namespace on the request ({ns})"
        )));
    }
    Ok(())
}

/// The deletion deadline `grace` seconds from now, as a Kubernetes `Time`; saturates at the
/// longest grace period honoured instead of overflowing.
fn deadline(grace: i64) -> String {
    let grace = grace.clamp(0, crate::strategy::pod::MAX_GRACE_SECONDS);
    let when = Timestamp::now()
        .checked_add(SignedDuration::from_secs(grace))
        .unwrap_or(Timestamp::MAX);
    meta::time_string(when)
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
pub(crate) fn generate_name(prefix: &str) -> String {
    use rand::RngExt;
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{}{suffix}", truncate_prefix(prefix))
}

/// The longest `generateName` prefix kept (Kubernetes' `maxGeneratedNameLength`: 63 - 5), cut
/// at a character boundary.
const MAX_GENERATED_PREFIX: usize = 63 - 5;

fn truncate_prefix(prefix: &str) -> &str {
    let mut end = prefix.len().min(MAX_GENERATED_PREFIX);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    prefix.get(..end).unwrap_or_default()
}

/// The `autoscaling/v1` Scale of an object: a custom resource's selector comes from its
/// `labelSelectorPath`; a built-in kind's is its `spec.selector` in string form (as
/// kube-apiserver's scale subresources give it to `kubectl` and autoscalers).
fn scale_of(info: &ResourceInfo, object: &Value) -> Value {
    let paths = info
        .scale
        .clone()
        .unwrap_or_else(|| crate::registry::ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: None,
        });
    let m = meta::metadata(object);
    let selector = paths
        .label_selector
        .as_deref()
        .and_then(|p| meta::json_path(object, p))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            let selector = &object["spec"]["selector"];
            if info.strategy == crate::strategy::CUSTOM || !selector.is_object() {
                return String::new();
            }
            let s = crate::strategy::replicaset::format_selector(selector);
            if s == "<none>" { String::new() } else { s }
        });
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": meta::json_path(object, &paths.spec_replicas).cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": meta::json_path(object, &paths.status_replicas).cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// A merge patch that sets the desired replicas through the scale subresource.
fn scale_patch(info: &ResourceInfo, replicas: Value) -> ApiResult<(Value, Option<&'static str>)> {
    let Some(paths) = &info.scale else {
        return Err(ApiError::no_route(&format!("{}/scale", info.plural)));
    };
    if !replicas.is_i64() || replicas.as_i64().is_some_and(|r| r < 0) {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            "",
            vec![FieldCause::invalid(
                "spec.replicas",
                &replicas,
                "must be a non-negative integer",
            )],
        ));
    }
    let mut patch = json!({});
    meta::set_json_path(&mut patch, &paths.spec_replicas, replicas);
    let sub = if paths.spec_replicas.starts_with(".status") {
        Some("status")
    } else {
        None
    };
    Ok((patch, sub))
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

/// Whether a namespace still waits for its `spec.finalizers` (the namespace controller
/// empties it and then removes `kubernetes` through the `finalize` subresource).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

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

    #[test]
    fn generated_names_fit_whatever_the_prefix() {
        let n = generate_name(&"a".repeat(300));
        assert_eq!(n.len(), 63);
        assert!(validation::dns_subdomain_problem(&n).is_none());
        // Multi-byte characters are cut at a character boundary, not through one.
        let n = generate_name(&"é".repeat(200));
        assert!(n.len() <= 63 && n.starts_with('é'), "{n}");
        assert_eq!(truncate_prefix("aé"), "aé");
        assert_eq!(
            truncate_prefix(&format!("{}é", "a".repeat(57))),
            "a".repeat(57)
        );
    }

    #[test]
    fn deletion_deadlines_saturate() {
        for grace in [i64::MIN, -1, 0, 30, 10_000_000_000_000, i64::MAX] {
            assert!(meta::parse_time(&deadline(grace)).is_some(), "{grace}");
        }
    }

    #[test]
    fn field_selectors_follow_the_kind() {
        let registry = Registry::new();
        let pods = registry.get("", "v1", "pods").unwrap();
        let events = registry.get("", "v1", "events").unwrap();
        let parse = |s: &str| FieldSelector::parse(s).unwrap();
        assert!(Service::selectable(&pods, parse("spec.nodeName=n,metadata.name=p")).is_ok());
        let e = Service::selectable(&pods, parse("spec.foo=x")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "field label not supported: spec.foo")
        );
        let selected = Service::selectable(&events, parse("source=kubelet")).unwrap();
        assert!(selected.matches(&json!({"source": {"component": "kubelet"}})));
        assert!(!selected.matches(&json!({"source": {"component": "other"}})));
    }
}
