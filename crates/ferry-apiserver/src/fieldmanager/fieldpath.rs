//! Field paths and field sets, and their `FieldsV1` encoding (`f:`, `k:`, `v:`, `i:` keys).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// One step of a path into an object.
///
/// The order (fields, then keys, then values, then indices) is the order of the `FieldsV1`
/// encoding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object: `f:name`.
    Field(String),
    /// An element of an associative list, by its key fields: `k:{"name":"main"}`. Kept as
    /// canonical JSON (keys sorted).
    Key(String),
    /// An element of a set list, by its value: `v:"x"`. Kept as JSON.
    Value(String),
    /// An element of a list by position: `i:0`.
    Index(usize),
}

impl PathElement {
    /// The key of an associative list element with these key fields.
    pub fn key(fields: &[(&str, &Value)]) -> Self {
        let mut sorted: Vec<&(&str, &Value)> = fields.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let map: Map<String, Value> = sorted
            .into_iter()
            .map(|(k, v)| ((*k).to_string(), canonical(v)))
            .collect();
        Self::Key(Value::Object(map).to_string())
    }

    /// The element of a set list with this value.
    pub fn value(v: &Value) -> Self {
        Self::Value(canonical(v).to_string())
    }

    /// The `FieldsV1` key of this element.
    pub fn encode(&self) -> String {
        match self {
            Self::Field(name) => format!("f:{name}"),
            Self::Key(json) => format!("k:{json}"),
            Self::Value(json) => format!("v:{json}"),
            Self::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key.
    pub fn decode(s: &str) -> Result<Self, String> {
        let (prefix, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not a field path element"))?;
        match prefix {
            "f" => Ok(Self::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(m)) => {
                    let fields: Vec<(&str, &Value)> =
                        m.iter().map(|(k, v)| (k.as_str(), v)).collect();
                    Ok(Self::key(&fields))
                }
                _ => Err(format!("{s:?}: a k: element needs a JSON object")),
            },
            "v" => serde_json::from_str::<Value>(rest)
                .map(|v| Self::value(&v))
                .map_err(|e| format!("{s:?}: {e}")),
            "i" => rest
                .parse()
                .map(Self::Index)
                .map_err(|_| format!("{s:?}: an i: element needs an index")),
            _ => Err(format!("{s:?} is not a field path element")),
        }
    }
}

/// Sorts the keys of objects (recursively), so equal values have one JSON text.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

impl fmt::Display for PathElement {
    /// As Kubernetes prints paths in conflicts: `.name`, `[name="main"]`, `[="x"]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field(name) => write!(f, ".{name}"),
            Self::Key(json) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![json.clone()],
                };
                write!(f, "[{}]", parts.join(","))
            }
            Self::Value(json) => write!(f, "[={json}]"),
            Self::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path into an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|e| write!(f, "{e}"))
    }
}

impl Path {
    /// A path of object fields, such as `["spec", "replicas"]`.
    pub fn fields(names: &[&str]) -> Self {
        Self(
            names
                .iter()
                .map(|n| PathElement::Field((*n).to_string()))
                .collect(),
        )
    }
}

/// A set of paths, kept as a tree: a node is a member when the path ending there is in the
/// set; it can be a member and have members below it at the same time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    nodes: BTreeMap<PathElement, Node>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    member: bool,
    children: FieldSet,
}

impl Node {
    fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set has no paths.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds a path (the empty path is ignored: the object itself is never a member).
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let node = self.nodes.entry(first.clone()).or_default();
        if rest.is_empty() {
            node.member = true;
        } else {
            node.children.insert(rest);
        }
    }

    /// Whether a path is in the set.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path.split_first() {
            None => false,
            Some((first, rest)) => self.nodes.get(first).is_some_and(|n| {
                if rest.is_empty() {
                    n.member
                } else {
                    n.children.contains(rest)
                }
            }),
        }
    }

    /// Whether `element` (one step below this set's root) is a member.
    pub fn is_member(&self, element: &PathElement) -> bool {
        self.nodes.get(element).is_some_and(|n| n.member)
    }

    /// The paths below `element`, relative to it.
    pub fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.nodes
            .get(element)
            .map(|n| &n.children)
            .filter(|c| !c.is_empty())
    }

    /// The elements one step below the root that are members or have members below them.
    pub fn elements(&self) -> impl Iterator<Item = &PathElement> {
        self.nodes.keys()
    }

    /// Whether `element` is a member or has members below it.
    pub fn touches(&self, element: &PathElement) -> bool {
        self.nodes.contains_key(element)
    }

    /// The set without `element` and everything below it.
    pub fn without(&self, element: &PathElement) -> FieldSet {
        let mut out = self.clone();
        out.nodes.remove(element);
        out
    }

    /// Only `element` and everything below it.
    pub fn only(&self, element: &PathElement) -> FieldSet {
        let mut out = FieldSet::new();
        if let Some(n) = self.nodes.get(element) {
            out.nodes.insert(element.clone(), n.clone());
        }
        out
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        for (e, n) in &other.nodes {
            let mine = out.nodes.entry(e.clone()).or_default();
            mine.member |= n.member;
            mine.children = mine.children.union(&n.children);
        }
        out
    }

    /// Paths in this set and not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (e, n) in &self.nodes {
            let node = match other.nodes.get(e) {
                None => n.clone(),
                Some(o) => Node {
                    member: n.member && !o.member,
                    children: n.children.difference(&o.children),
                },
            };
            if !node.is_empty() {
                out.nodes.insert(e.clone(), node);
            }
        }
        out
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (e, n) in &self.nodes {
            if let Some(o) = other.nodes.get(e) {
                let node = Node {
                    member: n.member && o.member,
                    children: n.children.intersection(&o.children),
                };
                if !node.is_empty() {
                    out.nodes.insert(e.clone(), node);
                }
            }
        }
        out
    }

    /// Every path in the set, in order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        for (e, n) in &self.nodes {
            prefix.push(e.clone());
            if n.member {
                out.push(Path(prefix.clone()));
            }
            n.children.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` object of managedFields.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        for (e, n) in &self.nodes {
            let mut inner = match n.children.to_fields_v1() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            if n.member && !inner.is_empty() {
                let mut with_dot = Map::new();
                with_dot.insert(".".into(), Value::Object(Map::new()));
                with_dot.extend(inner);
                inner = with_dot;
            }
            map.insert(e.encode(), Value::Object(inner));
        }
        Value::Object(map)
    }

    /// Reads a `fieldsV1` object.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = v else {
            return Err("fieldsV1 must be an object".into());
        };
        let mut out = FieldSet::new();
        for (k, v) in map {
            if k == "." {
                continue;
            }
            let element = PathElement::decode(k)?;
            let Value::Object(inner) = v else {
                return Err(format!("fieldsV1 entry {k:?} must be an object"));
            };
            let children = FieldSet::from_fields_v1(v)?;
            let member = inner.is_empty() || inner.contains_key(".");
            out.nodes.insert(element, Node { member, children });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trip_and_dot() {
        let v = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"main\"}": {".": {}, "f:image": {}, "f:name": {}}},
                "f:finalizers": {"v:\"x\"": {}}}});
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        assert!(set.contains(&Path::fields(&["metadata", "labels"]).0));
        assert!(!set.contains(&Path::fields(&["metadata"]).0));
        let printed: Vec<String> = set.paths().iter().map(Path::to_string).collect();
        assert!(printed.contains(&".spec.containers[name=\"main\"].image".to_string()));
        assert!(printed.contains(&".spec.finalizers[=\"x\"]".to_string()));
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"k:[1]": {}})).is_err());
    }

    #[test]
    fn keys_are_canonical() {
        let a = PathElement::key(&[("protocol", &json!("TCP")), ("containerPort", &json!(80))]);
        assert_eq!(a.encode(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        assert_eq!(
            PathElement::decode(r#"k:{"protocol":"TCP","containerPort":80}"#).unwrap(),
            a
        );
        assert_eq!(a.to_string(), r#"[containerPort=80,protocol="TCP"]"#);
    }

    fn arb_set() -> impl proptest::strategy::Strategy<Value = FieldSet> {
        use proptest::prelude::*;
        let element = prop_oneof![
            "[a-c]".prop_map(PathElement::Field),
            (0usize..2).prop_map(PathElement::Index),
            "[a-b]".prop_map(|s| PathElement::value(&json!(s))),
        ];
        proptest::collection::vec(proptest::collection::vec(element, 1..4), 0..8).prop_map(
            |paths| {
                let mut s = FieldSet::new();
                for p in paths {
                    s.insert(&p);
                }
                s
            },
        )
    }

    proptest::proptest! {
        #[test]
        fn set_algebra_matches_paths(a in arb_set(), b in arb_set()) {
            let has = |s: &FieldSet, p: &Path| s.contains(&p.0);
            for p in a.union(&b).paths() {
                proptest::prop_assert!(has(&a, &p) || has(&b, &p));
            }
            for p in a.paths() {
                proptest::prop_assert!(has(&a.union(&b), &p));
                proptest::prop_assert_eq!(has(&a.difference(&b), &p), !has(&b, &p));
                proptest::prop_assert_eq!(has(&a.intersection(&b), &p), has(&b, &p));
            }
            proptest::prop_assert!(a.difference(&a).is_empty());
            proptest::prop_assert_eq!(FieldSet::from_fields_v1(&a.to_fields_v1()).unwrap(), a.clone());
        }
    }
}
