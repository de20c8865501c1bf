//! Label selectors (the full `kubectl -l` syntax) and field selectors.

use std::collections::BTreeSet;

use serde_json::Value;
use thiserror::Error;

use crate::error::ApiError;

/// Why a label or field selector cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorError {
    /// Parentheses of a set do not pair up.
    #[error("unable to parse requirement: unbalanced parenthesis in label selector {0:?}")]
    UnbalancedParenthesis(String),
    /// `>` or `<` with something other than an integer.
    #[error("unable to parse requirement: label selector {term:?}: {op} needs an integer")]
    NotAnInteger {
        /// The requirement.
        term: String,
        /// The operator.
        op: &'static str,
    },
    /// `in`/`notin` without `(a,b)`.
    #[error("unable to parse requirement: label selector {0:?}: expected a set such as (a,b)")]
    ExpectedSet(String),
    /// Two words joined by something other than `in`/`notin`.
    #[error("unable to parse requirement: label selector {0:?}: unknown operator")]
    UnknownOperator(String),
    /// A `matchExpressions` operator other than In, NotIn, Exists and DoesNotExist.
    #[error("unknown label selector operator {0:?}")]
    UnknownExpressionOperator(String),
    /// A label key that is not a qualified name.
    #[error("unable to parse requirement: invalid label key {key:?}: {problem}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A label value that is not valid.
    #[error("unable to parse requirement: invalid label value {value:?}: {problem}")]
    InvalidValue {
        /// The value.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A field selector term without `=`, `==` or `!=`.
    #[error("invalid field selector term {0:?}: expected field=value")]
    NoOperator(String),
    /// A field selector term whose field path is empty or has an empty segment.
    #[error("invalid field selector term {0:?}: bad field name")]
    BadFieldName(String),
}

impl From<SelectorError> for ApiError {
    fn from(e: SelectorError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses `app=web,tier!=db,env in (a,b),!legacy,version>2`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_terms(input)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term)?);
        }
        Ok(Self { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(selector: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                requirements.push(Requirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        for expr in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expr["key"].as_str().unwrap_or_default().to_string();
            let values: BTreeSet<String> = expr["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            requirements.push(match expr["operator"].as_str().unwrap_or_default() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(SelectorError::UnknownExpressionOperator(other.to_string()));
                }
            });
        }
        Ok(Self { requirements })
    }

    /// True if the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
            Requirement::GreaterThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Requirement::LessThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(input: &str) -> Result<Vec<&str>, SelectorError> {
    let mut depth = 0i32;
    let mut unbalanced = false;
    let terms = input
        .split(|c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth -= 1;
                unbalanced |= depth < 0;
                false
            }
            ',' => depth == 0,
            _ => false,
        })
        .collect();
    if unbalanced || depth != 0 {
        return Err(SelectorError::UnbalancedParenthesis(input.to_string()));
    }
    Ok(terms)
}

fn parse_requirement(term: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = term.strip_prefix('!') {
        let key = check_key(key.trim())?;
        return Ok(Requirement::DoesNotExist(key));
    }
    for (op, ctor) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((k, v)) = term.split_once(op) {
            let key = check_key(k.trim())?;
            let value = check_value(v.trim())?;
            return Ok(ctor(key, value));
        }
    }
    for (op, greater) in [(">", true), ("<", false)] {
        if let Some((k, v)) = term.split_once(op) {
            let key = check_key(k.trim())?;
            let n: i64 = v.trim().parse().map_err(|_| SelectorError::NotAnInteger {
                term: term.to_string(),
                op,
            })?;
            return Ok(if greater {
                Requirement::GreaterThan(key, n)
            } else {
                Requirement::LessThan(key, n)
            });
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim_start();
        for (op, not) in [("notin", true), ("in", false)] {
            if let Some(set) = rest.strip_prefix(op) {
                let set = set.trim();
                let inner = set
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(|| SelectorError::ExpectedSet(term.to_string()))?;
                let values = inner
                    .split(',')
                    .map(|v| check_value(v.trim()))
                    .collect::<Result<BTreeSet<_>, _>>()?;
                let key = check_key(words[0])?;
                return Ok(if not {
                    Requirement::NotIn(key, values)
                } else {
                    Requirement::In(key, values)
                });
            }
        }
        return Err(SelectorError::UnknownOperator(term.to_string()));
    }
    Ok(Requirement::Exists(check_key(term)?))
}

fn check_key(key: &str) -> Result<String, SelectorError> {
    match crate::validation::label_key_problem(key) {
        None => Ok(key.to_string()),
        Some(problem) => Err(SelectorError::InvalidKey {
            key: key.to_string(),
            problem,
        }),
    }
}

fn check_value(value: &str) -> Result<String, SelectorError> {
    match crate::validation::label_value_problem(value) {
        None => Ok(value.to_string()),
        Some(problem) => Err(SelectorError::InvalidValue {
            value: value.to_string(),
            problem,
        }),
    }
}

/// A field selector: `metadata.name=x,status.phase!=Running`. Any dotted path of the object
/// can be selected; a missing field reads as the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(Vec<String>, bool, String)>,
}

impl FieldSelector {
    /// Parses a field selector (values may escape `\,`, `\=` and `\\`).
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for term in split_escaped(input, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (path, equal, value) = if let Some((k, v)) = split_op(&term, "!=") {
                (k, false, v)
            } else if let Some((k, v)) = split_op(&term, "==") {
                (k, true, v)
            } else if let Some((k, v)) = split_op(&term, "=") {
                (k, true, v)
            } else {
                return Err(SelectorError::NoOperator(term));
            };
            let path = path.trim();
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(SelectorError::BadFieldName(term));
            }
            terms.push((
                path.split('.').map(str::to_string).collect(),
                equal,
                unescape(&value),
            ));
        }
        Ok(Self { terms })
    }

    /// True if the selector has no term.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value required for `path` by an equality term, if any (lets callers narrow a
    /// search, e.g. `metadata.namespace`).
    pub fn required(&self, path: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|(p, eq, _)| *eq && p.join(".") == path)
            .map(|(_, _, v)| v.as_str())
    }

    /// The field labels of the terms (`status.phase`, …).
    pub fn labels(&self) -> Vec<String> {
        self.terms.iter().map(|(p, _, _)| p.join(".")).collect()
    }

    /// Makes the terms on `label` read the object at the dotted `path` instead.
    pub fn read_label_at(&mut self, label: &str, path: &str) {
        for (p, _, _) in &mut self.terms {
            if p.join(".") == label {
                *p = path.split('.').map(str::to_string).collect();
            }
        }
    }

    /// Whether an object satisfies every term.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(path, equal, value)| {
            let mut cur = object;
            for seg in path {
                cur = cur.get(seg.as_str()).unwrap_or(&Value::Null);
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

/// Splits `term` at the first unescaped `op` (an `=` that ends `!=` does not count).
fn split_op(term: &str, op: &str) -> Option<(String, String)> {
    let mut chars = term.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            chars.next();
            continue;
        }
        let (key, rest) = term.split_at_checked(i)?;
        if let Some(value) = rest.strip_prefix(op) {
            if op == "=" && key.ends_with('!') {
                return None;
            }
            return Some((key.to_string(), value.to_string()));
        }
    }
    None
}

fn split_escaped(input: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}, "status": {"phase": "Running"}, "spec": {"replicas": 3}})
    }

    #[test]
    fn label_selector_syntax() {
        let o = obj(json!({"app": "web", "tier": "front", "v": "3"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "app in (web,api)",
            "tier notin (db)",
            "app",
            "!missing",
            "app=web,tier in (front, back)",
            "v>2",
            "v<4",
            "missing notin (a)",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).unwrap().matches(&o),
                "{s} should match"
            );
        }
        let no = [
            "app=db",
            "app in (api)",
            "!app",
            "missing",
            "v>3",
            "app,missing",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(&o),
                "{s} should not match"
            );
        }
        for bad in ["app in (a", "a b", "v>x", "-bad-=x", "app=in valid"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn label_selector_from_object() {
        let sel = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]
        }))
        .unwrap();
        assert!(sel.matches(&obj(json!({"app": "web", "tier": "front"}))));
        assert!(!sel.matches(&obj(json!({"app": "web", "tier": "back"}))));
    }

    #[test]
    fn field_selector() {
        let o = obj(json!({}));
        assert!(FieldSelector::parse("metadata.name=x").unwrap().matches(&o));
        assert!(
            FieldSelector::parse("status.phase!=Pending,metadata.name==x")
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches(&o));
        assert!(FieldSelector::parse("spec.replicas=3").unwrap().matches(&o));
        assert!(
            !FieldSelector::parse("spec.nodeName=n1")
                .unwrap()
                .matches(&o)
        );
        assert_eq!(
            FieldSelector::parse("metadata.namespace=a\\,b")
                .unwrap()
                .required("metadata.namespace"),
            Some("a,b")
        );
        assert!(FieldSelector::parse("nonsense").is_err());
        // Non-ASCII text anywhere in a term (once a panic: a byte slice off a char boundary).
        let named = json!({"metadata": {"name": "é"}});
        assert!(
            FieldSelector::parse("metadata.name=é")
                .unwrap()
                .matches(&named)
        );
        assert!(
            FieldSelector::parse("metadata.name!=é")
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("é").is_err());
        assert!(FieldSelector::parse("métadata.nâme\\é=ü\\").is_ok());
        assert!(FieldSelector::parse("a..b=c").is_err());
    }

    proptest::proptest! {
        /// Any text parses or is refused with a message; never a panic.
        #[test]
        fn any_selector_parses_or_errs(input in r#"[a-zé.=!,()<>\\ /-]{0,40}|\PC{0,40}"#) {
            let o = obj(json!({"app": "é", "v": "3"}));
            match LabelSelector::parse(&input) {
                Ok(s) => { s.matches(&o); }
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
            match FieldSelector::parse(&input) {
                Ok(s) => { s.matches(&o); }
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
