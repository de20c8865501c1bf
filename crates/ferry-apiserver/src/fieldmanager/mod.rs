//! Field ownership and server-side apply, as kube-apiserver's field manager does them.
//!
//! Every write records who set which fields in `metadata.managedFields`: one entry per
//! manager and operation, its fields as a [`FieldSet`] in the `FieldsV1` format. A create,
//! update or non-apply patch is an `Update` ([`update`]): the manager takes the fields it
//! changed, from whoever had them. A server-side apply ([`apply`]) declares the fields its
//! manager wants: they are merged into the live object, fields it applied before and no
//! longer applies are removed (unless another manager owns them too), and changing a field
//! another manager owns is a conflict unless forced.
//!
//! [`fieldpath`] holds paths and sets, [`typed`] the walks over objects and the list types
//! (built-in kinds' `listType` tags, or a CRD's `x-kubernetes-list-type`).

pub mod fieldpath;
pub mod typed;

use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::error::{ApiError, FieldCause};
use crate::registry::ResourceInfo;
pub use fieldpath::{FieldSet, Path, PathElement};
pub use typed::{Comparison, ListType, Types};

/// The annotation of client-side apply (`kubectl apply` without `--server-side`).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The longest field manager name Kubernetes accepts.
pub const MAX_MANAGER_LEN: usize = 128;

/// What an entry of managedFields records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// A server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The field manager.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// The apiVersion the fields are expressed in.
    pub api_version: String,
    /// When the entry last changed (RFC 3339).
    pub time: Option<String>,
    /// The subresource written (`status`), or empty.
    pub subresource: String,
    /// The fields owned.
    pub fields: FieldSet,
}

impl Entry {
    /// Whether this entry is `writer`'s for `operation`: Kubernetes keys entries by manager,
    /// operation and subresource, and Update entries by apiVersion too.
    fn is(&self, writer: &Writer, operation: Operation) -> bool {
        self.manager == writer.manager
            && self.operation == operation
            && self.subresource == writer.subresource
            && (operation == Operation::Apply || self.api_version == writer.api_version)
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.manager.is_empty() {
            m.insert("manager".into(), json!(self.manager));
        }
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<Self, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
        let operation = match s("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            other => return Err(format!("operation must be Apply or Update, not {other:?}")),
        };
        match s("fieldsType") {
            "FieldsV1" => {}
            other => return Err(format!("fieldsType must be FieldsV1, not {other:?}")),
        }
        Ok(Self {
            manager: s("manager").to_string(),
            operation,
            api_version: s("apiVersion").to_string(),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource").to_string(),
            fields: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&json!({})))?,
        })
    }
}

/// The managedFields of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields(pub Vec<Entry>);

impl ManagedFields {
    /// Reads `metadata.managedFields` (absent: none).
    pub fn decode(object: &Value) -> Result<Self, String> {
        match object.pointer("/metadata/managedFields") {
            None | Some(Value::Null) => Ok(Self::default()),
            Some(Value::Array(entries)) => entries
                .iter()
                .map(Entry::from_json)
                .collect::<Result<_, _>>()
                .map(Self),
            Some(_) => Err("managedFields must be a list".into()),
        }
    }

    /// Writes them into `metadata.managedFields`, sorted as Kubernetes sorts them; none
    /// removes the field.
    pub fn encode_into(mut self, object: &mut Value) {
        self.0.retain(|e| !e.fields.is_empty());
        self.0.sort_by(|a, b| {
            (
                a.operation,
                &a.time,
                &a.manager,
                &a.api_version,
                &a.subresource,
            )
                .cmp(&(
                    b.operation,
                    &b.time,
                    &b.manager,
                    &b.api_version,
                    &b.subresource,
                ))
        });
        let Some(meta) = metadata_mut(object) else {
            return;
        };
        if self.0.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert(
                "managedFields".into(),
                Value::Array(self.0.iter().map(Entry::to_json).collect()),
            );
        }
    }

    fn position(&self, writer: &Writer, operation: Operation) -> Option<usize> {
        self.0.iter().position(|e| e.is(writer, operation))
    }
}

fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let obj = object.as_object_mut()?;
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// The subresource written (`status`), or empty.
    pub subresource: &'a str,
    /// The apiVersion of the request.
    pub api_version: &'a str,
    /// Whether the kind has a status subresource: then a write of the main resource does not
    /// own `status`, and a status write owns only `status`.
    pub status_subresource: bool,
    /// The list and map types of the kind.
    pub types: Types<'a>,
    /// The time to record (RFC 3339).
    pub now: &'a str,
}

impl Writer<'_> {
    /// Leaves out of a set what no manager owns: identity and server-set metadata, and the
    /// part of the object the written (sub)resource does not change.
    fn scope(&self, set: &FieldSet) -> FieldSet {
        let status = PathElement::Field("status".into());
        let mut out = set.difference(&stripped());
        if self.subresource == "status" {
            out = out.only(&status);
        } else if self.status_subresource {
            out = out.without(&status);
        }
        out
    }
}

/// The fields no manager owns (as Kubernetes' `stripSet`).
fn stripped() -> FieldSet {
    let mut set = FieldSet::new();
    for path in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "creationTimestamp"],
        &["metadata", "selfLink"],
        &["metadata", "uid"],
        &["metadata", "clusterName"],
        &["metadata", "generation"],
        &["metadata", "managedFields"],
        &["metadata", "resourceVersion"],
    ] {
        set.insert(&Path::fields(path).0);
    }
    set
}

fn without_managed_fields(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

/// One field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owner, as Kubernetes prints it (`"kubectl-client-side-apply" using v1 at …`).
    pub owner: String,
    /// The field, such as `.data.key`.
    pub path: Path,
}

/// Why field ownership refused a write.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldManagerError {
    /// The apply would change fields other managers own (`409 Conflict`).
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration cannot be read as the kind's type (`400`).
    #[error("failed to create typed patch object: {0}")]
    InvalidConfig(String),
}

impl From<FieldManagerError> for ApiError {
    fn from(e: FieldManagerError) -> Self {
        match &e {
            FieldManagerError::Conflicts(conflicts) => ApiError {
                code: 409,
                reason: "Conflict",
                message: e.to_string(),
                details: Some(json!({
                "causes": conflicts.iter().map(|c| json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {}", c.owner),
                    "field": c.path.to_string(),
                })).collect::<Vec<_>>(),
                })),
            },
            FieldManagerError::InvalidConfig(_) => ApiError::bad_request(e.to_string()),
        }
    }
}

/// Kubernetes' message: `Apply failed with 1 conflict: conflict with "m" using v1: .data.key`.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.owner, only.path
        );
    }
    let mut owners: Vec<&str> = conflicts.iter().map(|c| c.owner.as_str()).collect();
    owners.sort();
    owners.dedup();
    let mut lines = Vec::new();
    for owner in owners {
        lines.push(format!("conflicts with {owner}:"));
        for c in conflicts.iter().filter(|c| c.owner == owner) {
            lines.push(format!("- {}", c.path));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// How Kubernetes names an entry in a conflict.
fn describe(entry: &Entry) -> String {
    let mut s = format!("{:?}", entry.manager);
    if !entry.subresource.is_empty() {
        s.push_str(&format!(" with subresource {:?}", entry.subresource));
    }
    if entry.operation == Operation::Update {
        s.push_str(&format!(" using {}", entry.api_version));
        if let Some(t) = &entry.time {
            s.push_str(&format!(" at {t}"));
        }
    }
    s
}

/// The field manager of a request: the `fieldManager` parameter, else the program name of
/// the User-Agent (what precedes the first `/`, printable characters only, at most 128
/// bytes), as kube-apiserver does.
pub fn manager_name(field_manager: &str, user_agent: &str) -> String {
    if !field_manager.is_empty() {
        return field_manager.to_string();
    }
    let program = user_agent.split('/').next().unwrap_or_default();
    let mut out = String::new();
    for c in program.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_MANAGER_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// Checks the field-manager options of a write as Kubernetes' `ValidatePatchOptions` does:
/// an apply needs a `fieldManager`, `force` is for applies only, and a manager name is at
/// most 128 printable bytes. The error is `422 Invalid` of kind `PatchOptions`.
pub fn validate_options(
    field_manager: &str,
    apply: bool,
    force: Option<bool>,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if !apply && force.is_some() {
        causes.push(FieldCause::forbidden(
            "force",
            "may not be specified for non-apply patch",
        ));
    }
    if apply && field_manager.is_empty() {
        causes.push(FieldCause {
            field: "fieldManager".into(),
            reason: "FieldValueRequired",
            message: "Required value: is required for apply patch".into(),
        });
    }
    if field_manager.len() > MAX_MANAGER_LEN {
        causes.push(FieldCause {
            field: "fieldManager".into(),
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {MAX_MANAGER_LEN} bytes"),
        });
    } else if field_manager.chars().any(char::is_control) {
        causes.push(FieldCause::invalid(
            "fieldManager",
            field_manager,
            "must only contain printable characters",
        ));
    }
    if causes.is_empty() {
        return Ok(());
    }
    let mut err = ApiError::invalid("meta.k8s.io", "PatchOptions", "", causes);
    err.message = err
        .message
        .replacen("PatchOptions \"\"", "PatchOptions.meta.k8s.io \"\"", 1);
    Err(err)
}

/// Records an Update (create, update, or a patch other than apply) by `writer` of `old`
/// (`None` on create) into `new`, and sets `new`'s managedFields.
///
/// The starting entries are those the request carries in `incoming` (a client may set
/// managedFields; `[{}]` clears them), else the live object's. The writer takes every field
/// it added or changed from the other managers, and nobody keeps a removed field. As in
/// Kubernetes, an existing object without managedFields stays untracked until it is applied.
pub fn update(old: Option<&Value>, new: &mut Value, incoming: Option<&Value>, writer: &Writer) {
    let from_request = incoming
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .and_then(|a| {
            if a.iter().all(|e| e.as_object().is_some_and(Map::is_empty)) {
                return Some(ManagedFields::default());
            }
            ManagedFields::decode(&json!({"metadata": {"managedFields": a}})).ok()
        });
    let managed = match (from_request, old) {
        (Some(m), _) => m,
        (None, None) => ManagedFields::default(),
        (None, Some(o)) => match ManagedFields::decode(o) {
            Ok(m) if !m.0.is_empty() => m,
            _ => {
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("managedFields");
                }
                return;
            }
        },
    };
    let old_value = old.map(without_managed_fields).unwrap_or_else(|| json!({}));
    let managed = record_update(managed, &old_value, &without_managed_fields(new), writer);
    managed.encode_into(new);
}

/// The entries after `writer` changed `old` into `new` (both without managedFields).
fn record_update(
    mut managed: ManagedFields,
    old: &Value,
    new: &Value,
    writer: &Writer,
) -> ManagedFields {
    let cmp = typed::compare(old, new, &writer.types.root());
    let cmp = Comparison {
        added: writer.scope(&cmp.added),
        modified: writer.scope(&cmp.modified),
        removed: writer.scope(&cmp.removed),
    };
    if cmp.is_same() {
        return managed;
    }
    let changed = cmp.modified.union(&cmp.added);
    for entry in &mut managed.0 {
        entry.fields = entry.fields.difference(&changed).difference(&cmp.removed);
    }
    let taken = changed.difference(&cmp.removed);
    match managed.position(writer, Operation::Update) {
        Some(i) => {
            let entry = &mut managed.0[i];
            entry.fields = entry.fields.union(&taken);
            entry.time = Some(writer.now.to_string());
        }
        None => managed.0.push(Entry {
            manager: writer.manager.to_string(),
            operation: Operation::Update,
            api_version: writer.api_version.to_string(),
            time: Some(writer.now.to_string()),
            subresource: writer.subresource.to_string(),
            fields: taken,
        }),
    }
    cap_update_managers(&mut managed);
    managed
}

/// The most Update entries an object keeps (Kubernetes' `DefaultMaxUpdateManagers`).
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The Update entry the oldest updates are merged into beyond [`MAX_UPDATE_MANAGERS`].
pub const ANCIENT_CHANGES: &str = "ancient-changes";

/// Keeps at most [`MAX_UPDATE_MANAGERS`] Update entries, as Kubernetes: the oldest are merged,
/// per apiVersion, into an `ancient-changes` entry.
fn cap_update_managers(managed: &mut ManagedFields) {
    let mut count = managed
        .0
        .iter()
        .filter(|e| e.operation == Operation::Update)
        .count();
    if count <= MAX_UPDATE_MANAGERS {
        return;
    }
    let mut order: Vec<usize> = (0..managed.0.len())
        .filter(|&i| managed.0[i].operation == Operation::Update)
        .collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&managed.0[a], &managed.0[b]);
        (&a.time, &a.manager).cmp(&(&b.time, &b.manager))
    });
    let mut first_of_version: Vec<(String, usize)> = Vec::new();
    let mut gone = vec![false; managed.0.len()];
    for i in order {
        if count <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = managed.0[i].api_version.clone();
        match first_of_version.iter().find(|(v, _)| *v == version) {
            Some(&(_, first)) => {
                let merged = managed.0[i].clone();
                let bucket = &mut managed.0[first];
                bucket.manager = ANCIENT_CHANGES.to_string();
                bucket.subresource.clear();
                bucket.fields = bucket.fields.union(&merged.fields);
                bucket.time = merged.time;
                gone[i] = true;
                count -= 1;
            }
            None => first_of_version.push((version, i)),
        }
    }
    let mut index = 0;
    managed.0.retain(|_| {
        index += 1;
        !gone[index - 1]
    });
}

/// The manager Kubernetes gives the fields of an untracked object when it is first applied.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// A server-side apply of `config` by `writer` onto `live` (`None` when the object does not
/// exist yet): the merged object with its managedFields, or the conflicts.
///
/// As kube-apiserver, for the manager `kubectl` (what `kubectl apply --server-side` uses) an
/// object last written by client-side apply is taken over without conflicts on the fields
/// whose live values are still the ones its `last-applied-configuration` names, and that
/// annotation, where present, is kept in step with the applied configuration so that
/// client-side apply keeps working afterwards.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    writer: &Writer,
    force: bool,
) -> Result<Value, FieldManagerError> {
    let outcome = apply_once(live, config, writer, force);
    let mut merged = match outcome {
        Err(FieldManagerError::Conflicts(conflicts)) if writer.manager == "kubectl" => {
            let allowed = live
                .and_then(|l| taken_over_from_client_side_apply(l, writer))
                .unwrap_or_default();
            let left: Vec<Conflict> = conflicts
                .into_iter()
                .filter(|c| !allowed.contains(&c.path.0))
                .collect();
            if !left.is_empty() {
                return Err(FieldManagerError::Conflicts(left));
            }
            apply_once(live, config, writer, true)?
        }
        other => other?,
    };
    if writer.manager == "kubectl" && live.is_some_and(has_last_applied) {
        let mut last = config.clone();
        if let Some(a) = last
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(LAST_APPLIED);
        }
        if let Some(a) = merged
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.insert(LAST_APPLIED.into(), json!(last.to_string()));
        }
    }
    Ok(merged)
}

fn has_last_applied(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// The fields client-side apply set (per the live object's last-applied annotation) that
/// still have the values it set.
fn taken_over_from_client_side_apply(live: &Value, writer: &Writer) -> Option<FieldSet> {
    let raw = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let last: Value = serde_json::from_str(raw).ok()?;
    let root = writer.types.root();
    let set = typed::field_set(&last, &root).ok()?;
    let cmp = typed::compare(&last, &without_managed_fields(live), &root);
    Some(set.difference(&cmp.modified))
}

fn apply_once(
    live: Option<&Value>,
    config: &Value,
    writer: &Writer,
    force: bool,
) -> Result<Value, FieldManagerError> {
    if !config.is_object() {
        return Err(FieldManagerError::InvalidConfig(
            "an applied configuration must be an object".into(),
        ));
    }
    let root = writer.types.root();
    let applied =
        writer.scope(&typed::field_set(config, &root).map_err(FieldManagerError::InvalidConfig)?);
    let mut managed = live
        .and_then(|l| ManagedFields::decode(l).ok())
        .unwrap_or_default();
    let live_value = live
        .map(without_managed_fields)
        .unwrap_or_else(|| json!({}));
    if live.is_some() && managed.0.is_empty() {
        // An untracked object: its fields so far belong to "before-first-apply".
        let before = Writer {
            manager: BEFORE_FIRST_APPLY,
            subresource: "",
            ..writer.clone()
        };
        managed = record_update(managed, &json!({}), &live_value, &before);
    }
    let mut merged = typed::merge(&live_value, &without_managed_fields(config), &root);

    let (me, previous) = match managed.position(writer, Operation::Apply) {
        Some(i) => {
            let entry = &mut managed.0[i];
            let previous = std::mem::replace(&mut entry.fields, applied);
            entry.api_version = writer.api_version.to_string();
            (i, previous)
        }
        None => {
            managed.0.push(Entry {
                manager: writer.manager.to_string(),
                operation: Operation::Apply,
                api_version: writer.api_version.to_string(),
                time: None,
                subresource: writer.subresource.to_string(),
                fields: applied,
            });
            (managed.0.len() - 1, FieldSet::new())
        }
    };
    // Fields this manager applied before and applies no more go, unless someone owns them.
    if !previous.is_empty() {
        let owned = managed
            .0
            .iter()
            .fold(FieldSet::new(), |acc, e| acc.union(&e.fields));
        let dropped = typed::lenient_field_set(&merged, &root)
            .intersection(&previous)
            .difference(&owned);
        if !dropped.is_empty() {
            typed::remove(&mut merged, &dropped, &owned, &root);
        }
    }
    let cmp = typed::compare(&live_value, &merged, &root);
    let changed = writer.scope(&cmp.modified.union(&cmp.added));
    let removed = writer.scope(&cmp.removed);
    let mut conflicts = Vec::new();
    for (i, entry) in managed.0.iter().enumerate() {
        if i == me {
            continue;
        }
        for path in entry.fields.intersection(&changed).paths() {
            conflicts.push(Conflict {
                owner: describe(entry),
                path,
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(FieldManagerError::Conflicts(conflicts));
    }
    for (i, entry) in managed.0.iter_mut().enumerate() {
        if i != me {
            entry.fields = entry.fields.difference(&changed).difference(&removed);
        }
    }
    let entry = &mut managed.0[me];
    if entry.time.is_none() || merged != live_value {
        entry.time = Some(writer.now.to_string());
    }
    managed.encode_into(&mut merged);
    Ok(merged)
}

/// The types of a served resource: its CRD schema, or the built-in tables.
pub fn types_of(info: &ResourceInfo) -> Types<'_> {
    if info.custom {
        Types::custom(&info.kind, info.schema.as_ref())
    } else {
        Types::builtin(&info.kind)
    }
}

/// The hook of the write path, called on every create and update (PUT, patch, apply) after
/// validation, just before the object is stored: `carried` is the managedFields the written
/// object carried (taken out before defaulting and validation). For an apply (`applied`)
/// they are [`apply`]'s result and go back as they are; otherwise the write is recorded as
/// an Update by `manager` ([`update`]; a subresource write ignores what the client sent).
pub fn on_write(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &mut Value,
    carried: Option<Value>,
    applied: bool,
    manager: &str,
    subresource: Option<&str>,
) {
    if applied {
        if let (Some(m), Some(carried)) = (metadata_mut(new), carried) {
            m.insert("managedFields".into(), carried);
        }
        return;
    }
    let now = crate::meta::now_time();
    let api_version = info.api_version();
    let writer = Writer {
        manager,
        subresource: subresource.unwrap_or_default(),
        api_version: &api_version,
        status_subresource: info.status,
        types: types_of(info),
        now: &now,
    };
    let incoming = carried.filter(|_| subresource.is_none());
    update(old, new, incoming.as_ref(), &writer);
}

/// Checks an applied configuration before anything else, as Kubernetes: an object, without
/// managedFields, naming the object of the URL (or no name).
pub fn check_config(config: &Value, name: &str) -> Result<(), ApiError> {
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "an applied configuration must be an object",
        ));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let config_name = config
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !config_name.is_empty() && config_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({config_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// The hook of server-side apply: `config` applied by `manager` onto `live` (`None` when the
/// object does not exist), as [`apply`].
pub fn on_apply(
    info: &ResourceInfo,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    subresource: Option<&str>,
    force: bool,
) -> Result<Value, ApiError> {
    let now = crate::meta::now_time();
    let api_version = info.api_version();
    let writer = Writer {
        manager,
        subresource: subresource.unwrap_or_default(),
        api_version: &api_version,
        status_subresource: info.status,
        types: types_of(info),
        now: &now,
    };
    Ok(apply(live, config, &writer, force)?)
}

#[cfg(test)]
mod tests;
