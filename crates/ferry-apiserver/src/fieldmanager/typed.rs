//! What field ownership needs to know of an object's structure (which lists merge by key,
//! which are sets and which are atomic), and the walks over objects: the set of fields an
//! object sets, the comparison of two objects, the apply merge and the removal of fields.

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, PathElement};

/// How the elements of a list are identified (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// The list is one value, replaced as a whole (the default).
    Atomic,
    /// Scalars identified by their value.
    Set,
    /// Objects identified by key fields, each with the default used when it is absent
    /// (`x-kubernetes-list-map-keys`).
    Map(Vec<(&'static str, Option<&'static str>)>),
    /// Like `Map`, with keys named by a CRD schema.
    SchemaMap(Vec<(String, Option<Value>)>),
}

/// Where list and map types come from: the built-in kinds' tags, or a CRD's schema.
#[derive(Debug, Clone, Copy)]
pub struct Types<'s> {
    kind: &'s str,
    schema: Option<&'s Value>,
    custom: bool,
}

impl<'s> Types<'s> {
    /// A built-in kind (list types from the Kubernetes types' `listType` tags).
    pub fn builtin(kind: &'s str) -> Self {
        Self {
            kind,
            schema: None,
            custom: false,
        }
    }

    /// A custom resource with its CRD's `openAPIV3Schema`, if any: lists are atomic unless
    /// the schema says `x-kubernetes-list-type: map` or `set`.
    pub fn custom(kind: &'s str, schema: Option<&'s Value>) -> Self {
        Self {
            kind,
            schema,
            custom: true,
        }
    }

    pub(crate) fn root(self) -> Cursor<'s> {
        Cursor {
            types: self,
            path: Vec::new(),
            node: self.schema,
        }
    }
}

/// A position in an object's type while walking it.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'s> {
    types: Types<'s>,
    /// Field names from the root (list levels left out).
    path: Vec<String>,
    /// The schema node (custom resources).
    node: Option<&'s Value>,
}

impl<'s> Cursor<'s> {
    fn field(&self, name: &str) -> Cursor<'s> {
        let mut path = self.path.clone();
        path.push(name.to_string());
        let node = self.node.and_then(|n| {
            n.get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| n.get("additionalProperties").filter(|a| a.is_object()))
        });
        Cursor {
            types: self.types,
            path,
            node,
        }
    }

    fn item(&self) -> Cursor<'s> {
        Cursor {
            types: self.types,
            path: self.path.clone(),
            node: self.node.and_then(|n| n.get("items")),
        }
    }

    /// Whether the type is described by the CRD schema (rather than the built-in tables).
    fn uses_schema(&self) -> bool {
        self.types.custom && self.path.first().is_none_or(|p| p != "metadata")
    }

    fn list_type(&self) -> ListType {
        if self.uses_schema() {
            return schema_list_type(self.node);
        }
        builtin_list_type(self.types.kind, &self.path)
    }

    /// Whether an object here is one value (`x-kubernetes-map-type: atomic`).
    fn map_atomic(&self) -> bool {
        self.uses_schema()
            && self.node.and_then(|n| n.get("x-kubernetes-map-type"))
                == Some(&Value::from("atomic"))
    }

    /// Whether an object here is a map (`additionalProperties`) rather than a structure: its
    /// entries are members of field sets themselves.
    fn is_map(&self) -> bool {
        self.uses_schema()
            && self.node.is_some_and(|n| {
                n.get("properties").is_none()
                    && n.get("additionalProperties").is_some_and(Value::is_object)
            })
    }

    /// The identity of each element of `items`, or `None` when the list is atomic here or an
    /// element cannot be identified (no key, duplicates).
    fn elements(&self, items: &[Value]) -> Result<Option<Vec<PathElement>>, String> {
        let lt = self.list_type();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let element = match &lt {
                ListType::Atomic => return Ok(None),
                ListType::Set => {
                    if item.is_object() || item.is_array() {
                        return Err(format!("{}: a set list holds scalars only", self.dotted()));
                    }
                    PathElement::value(item)
                }
                ListType::Map(keys) => {
                    let owned: Vec<(String, Option<Value>)> = keys
                        .iter()
                        .map(|(k, d)| ((*k).to_string(), d.map(Value::from)))
                        .collect();
                    self.keyed(item, &owned)?
                }
                ListType::SchemaMap(keys) => self.keyed(item, keys)?,
            };
            if out.contains(&element) {
                return Err(format!(
                    "{}: duplicate entries for key {element}",
                    self.dotted()
                ));
            }
            out.push(element);
        }
        Ok(Some(out))
    }

    fn keyed(&self, item: &Value, keys: &[(String, Option<Value>)]) -> Result<PathElement, String> {
        let Value::Object(obj) = item else {
            return Err(format!(
                "{}: the elements of this list are objects identified by {}",
                self.dotted(),
                key_names(keys)
            ));
        };
        let fields: Vec<(&str, &Value)> = keys
            .iter()
            .filter_map(|(k, default)| {
                obj.get(k)
                    .filter(|v| !v.is_null())
                    .or(default.as_ref())
                    .map(|v| (k.as_str(), v))
            })
            .collect();
        if fields.is_empty() {
            return Err(format!(
                "{}: an element has none of the key fields {}",
                self.dotted(),
                key_names(keys)
            ));
        }
        Ok(PathElement::key(&fields))
    }

    fn dotted(&self) -> String {
        format!(".{}", self.path.join("."))
    }
}

fn key_names(keys: &[(String, Option<Value>)]) -> String {
    keys.iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn schema_list_type(node: Option<&Value>) -> ListType {
    let Some(node) = node else {
        return ListType::Atomic;
    };
    match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => {
            let item_props = node.get("items").and_then(|i| i.get("properties"));
            let keys: Vec<(String, Option<Value>)> = node
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|k| {
                    let default = item_props
                        .and_then(|p| p.get(k))
                        .and_then(|p| p.get("default"))
                        .cloned();
                    (k.to_string(), default)
                })
                .collect();
            if keys.is_empty() {
                ListType::Atomic
            } else {
                ListType::SchemaMap(keys)
            }
        }
        _ => ListType::Atomic,
    }
}

/// The list types of the built-in kinds, from the `+listType`/`+listMapKey` tags of the
/// Kubernetes types (as published in their OpenAPI `x-kubernetes-list-type`).
fn builtin_list_type(kind: &str, path: &[String]) -> ListType {
    let last = path.last().map(String::as_str).unwrap_or_default();
    let in_container = path
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    let is = |want: &[&str]| path.iter().map(String::as_str).eq(want.iter().copied());
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates"
        | "claims" => ListType::Map(vec![("name", None)]),
        "resizePolicy" => ListType::Map(vec![("resourceName", None)]),
        "volumeMounts" => ListType::Map(vec![("mountPath", None)]),
        "volumeDevices" => ListType::Map(vec![("devicePath", None)]),
        "ports" if in_container => {
            ListType::Map(vec![("containerPort", None), ("protocol", Some("TCP"))])
        }
        "ports" if kind == "Service" && is(&["spec", "ports"]) => {
            ListType::Map(vec![("port", None), ("protocol", Some("TCP"))])
        }
        "conditions" if path.first().is_some_and(|p| p == "status") => {
            ListType::Map(vec![("type", None)])
        }
        "ownerReferences" if is(&["metadata", "ownerReferences"]) => {
            ListType::Map(vec![("uid", None)])
        }
        "finalizers" if is(&["metadata", "finalizers"]) => ListType::Set,
        "hostAliases" | "podIPs" | "hostIPs" => ListType::Map(vec![("ip", None)]),
        "topologySpreadConstraints" => {
            ListType::Map(vec![("topologyKey", None), ("whenUnsatisfiable", None)])
        }
        "addresses" if kind == "Node" => ListType::Map(vec![("type", None)]),
        _ => ListType::Atomic,
    }
}

/// The fields an object sets: its leaves, the elements of its keyed and set lists, atomic
/// values, empty objects and the entries of maps, as Kubernetes' `ToFieldSet`. Fails on
/// lists whose elements cannot be identified.
pub(crate) fn field_set(value: &Value, cursor: &Cursor) -> Result<FieldSet, String> {
    let mut set = FieldSet::new();
    walk_set(value, cursor, &mut Vec::new(), &mut set, false)?;
    Ok(set)
}

/// Like [`field_set`], with lists whose elements cannot be identified taken as atomic.
pub(crate) fn lenient_field_set(value: &Value, cursor: &Cursor) -> FieldSet {
    let mut set = FieldSet::new();
    let _ = walk_set(value, cursor, &mut Vec::new(), &mut set, true);
    set
}

fn walk_set(
    v: &Value,
    c: &Cursor,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
    lenient: bool,
) -> Result<(), String> {
    match v {
        Value::Object(m) if !c.map_atomic() => {
            let entries_are_members = c.is_map();
            for (k, child) in m {
                path.push(PathElement::Field(k.clone()));
                walk_set(child, &c.field(k), path, set, lenient)?;
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                if empty || entries_are_members {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Value::Array(items) => match c.elements(items) {
            Err(_) if lenient => set.insert(path),
            Err(e) => return Err(e),
            Ok(None) => set.insert(path),
            Ok(Some(elements)) => {
                let item_cursor = c.item();
                for (item, element) in items.iter().zip(elements) {
                    path.push(element);
                    walk_set(item, &item_cursor, path, set, lenient)?;
                    set.insert(path);
                    path.pop();
                }
            }
        },
        _ => set.insert(path),
    }
    Ok(())
}

/// How two objects differ, as paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Paths only in the new object (every node below a new one included).
    pub added: FieldSet,
    /// Leaves (and atomic values) whose value changed.
    pub modified: FieldSet,
    /// Paths only in the old object.
    pub removed: FieldSet,
}

impl Comparison {
    /// Whether the objects are the same.
    pub fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    /// Leaves out the paths of `ignored`.
    pub fn without(&self, ignored: &FieldSet) -> Comparison {
        Comparison {
            added: self.added.difference(ignored),
            modified: self.modified.difference(ignored),
            removed: self.removed.difference(ignored),
        }
    }
}

/// Compares an old and a new object. Lists whose elements cannot be identified compare as
/// atomic values.
pub(crate) fn compare(old: &Value, new: &Value, cursor: &Cursor) -> Comparison {
    let mut cmp = Comparison::default();
    walk_compare(Some(old), Some(new), cursor, &mut Vec::new(), &mut cmp);
    cmp
}

fn lenient_elements(c: &Cursor, items: &[Value]) -> Option<Vec<PathElement>> {
    c.elements(items).ok().flatten()
}

fn walk_compare(
    old: Option<&Value>,
    new: Option<&Value>,
    c: &Cursor,
    path: &mut Vec<PathElement>,
    cmp: &mut Comparison,
) {
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => mark_all(n, c, path, &mut cmp.added),
        (Some(o), None) => mark_all(o, c, path, &mut cmp.removed),
        (Some(Value::Object(o)), Some(Value::Object(n))) if !c.map_atomic() => {
            for (k, ov) in o {
                path.push(PathElement::Field(k.clone()));
                walk_compare(Some(ov), n.get(k), &c.field(k), path, cmp);
                path.pop();
            }
            for (k, nv) in n {
                if !o.contains_key(k) {
                    path.push(PathElement::Field(k.clone()));
                    walk_compare(None, Some(nv), &c.field(k), path, cmp);
                    path.pop();
                }
            }
        }
        (Some(Value::Array(o)), Some(Value::Array(n))) => {
            match (lenient_elements(c, o), lenient_elements(c, n)) {
                (Some(oe), Some(ne)) => {
                    let item_cursor = c.item();
                    for (ov, e) in o.iter().zip(&oe) {
                        let nv = ne.iter().position(|x| x == e).map(|i| &n[i]);
                        path.push(e.clone());
                        walk_compare(Some(ov), nv, &item_cursor, path, cmp);
                        path.pop();
                    }
                    for (nv, e) in n.iter().zip(&ne) {
                        if !oe.contains(e) {
                            path.push(e.clone());
                            walk_compare(None, Some(nv), &item_cursor, path, cmp);
                            path.pop();
                        }
                    }
                }
                _ => {
                    if !same_values(o, n) {
                        cmp.modified.insert(path);
                    }
                }
            }
        }
        (Some(o), Some(n)) => {
            if !same_value(o, n) {
                cmp.modified.insert(path);
            }
        }
    }
}

/// Deep equality with numbers compared by value, as structured-merge-diff's `value.Equals`
/// does: `0` and `0.0` are the same (a typed round trip turns one into the other).
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        (Value::Array(x), Value::Array(y)) => same_values(x, y),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| same_value(p, q)))
        }
        _ => a == b,
    }
}

/// [`same_value`] item by item.
fn same_values(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| same_value(p, q))
}

/// Inserts `path` and every path below it in `v`.
fn mark_all(v: &Value, c: &Cursor, path: &mut Vec<PathElement>, set: &mut FieldSet) {
    set.insert(path);
    match v {
        Value::Object(m) if !c.map_atomic() => {
            for (k, child) in m {
                path.push(PathElement::Field(k.clone()));
                mark_all(child, &c.field(k), path, set);
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(elements) = lenient_elements(c, items) {
                let item_cursor = c.item();
                for (item, e) in items.iter().zip(elements) {
                    path.push(e);
                    mark_all(item, &item_cursor, path, set);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// Merges an applied configuration into the live object: the configuration's values win,
/// objects merge field by field, keyed and set lists element by element (in the
/// configuration's order, with the live object's other elements kept in place), atomic
/// values are replaced. A `null` in the configuration removes the field.
pub(crate) fn merge(live: &Value, config: &Value, c: &Cursor) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(r)) if !c.map_atomic() => {
            let mut out = l.clone();
            for (k, rv) in r {
                if rv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, rv, &c.field(k)),
                    None => strip_nulls(rv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(r)) => {
            match (lenient_elements(c, l), lenient_elements(c, r)) {
                (Some(le), Some(re)) => {
                    let item_cursor = c.item();
                    let take = |ri: usize| match le.iter().position(|e| *e == re[ri]) {
                        Some(li) => merge(&l[li], &r[ri], &item_cursor),
                        None => strip_nulls(&r[ri]),
                    };
                    let mut out = Vec::with_capacity(l.len().max(r.len()));
                    let mut next = 0;
                    for (lv, e) in l.iter().zip(&le) {
                        match re.iter().position(|x| x == e) {
                            None => out.push(lv.clone()),
                            Some(pos) => {
                                while next <= pos {
                                    out.push(take(next));
                                    next += 1;
                                }
                            }
                        }
                    }
                    while next < r.len() {
                        out.push(take(next));
                        next += 1;
                    }
                    Value::Array(out)
                }
                _ => strip_nulls(config),
            }
        }
        _ => strip_nulls(config),
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Removes the members of `dropped` (each with everything below it) from `value`. An object
/// or list emptied by the removal goes too, unless `keep` has it.
pub(crate) fn remove(value: &mut Value, dropped: &FieldSet, keep: &FieldSet, c: &Cursor) {
    match value {
        Value::Object(m) if !c.map_atomic() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let e = PathElement::Field(k.clone());
                if dropped.is_member(&e) {
                    m.remove(&k);
                } else if let (Some(sub), Some(child)) = (dropped.child(&e), m.get_mut(&k)) {
                    let keep_below = keep.child(&e).cloned().unwrap_or_default();
                    remove(child, sub, &keep_below, &c.field(&k));
                    if emptied(child) && !keep.is_member(&e) {
                        m.remove(&k);
                    }
                }
            }
        }
        Value::Array(items) => {
            let Some(elements) = lenient_elements(c, items) else {
                return;
            };
            let item_cursor = c.item();
            let mut kept = Vec::with_capacity(items.len());
            for (mut item, e) in std::mem::take(items).into_iter().zip(elements) {
                if dropped.is_member(&e) {
                    continue;
                }
                if let Some(sub) = dropped.child(&e) {
                    let keep_below = keep.child(&e).cloned().unwrap_or_default();
                    remove(&mut item, sub, &keep_below, &item_cursor);
                }
                kept.push(item);
            }
            *items = kept;
        }
        _ => {}
    }
}

fn emptied(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
}
