//! Kubernetes' JSONPath dialect (the one of `kubectl -o jsonpath` and of CRD printer columns,
//! `k8s.io/client-go/util/jsonpath`), for one path expression: `.status.conditions[-1:].type`,
//! `.spec.containers[*].image`, `.status.conditions[?(@.type=="Ready")].status`, `..name`,
//! `['nvidia.com/gpu']`, slices `[a:b:c]`, unions `[0,2]`, an optional `$` and `{…}`.
//!
//! Not RFC 9535 JSONPath (as `serde_json_path` implements): Kubernetes' paths need no `$`,
//! allow `-` and `/` in dotted names, and filters use `?(…)`; a translation would need this
//! parser anyway. Missing fields select nothing, as kube-apiserver's `AllowMissingKeys(true)`.

use serde_json::Value;
use thiserror::Error;

/// Why a JSONPath expression cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid JSONPath {expr:?}: {problem}")]
pub struct JsonPathError {
    /// The expression.
    pub expr: String,
    /// What is wrong.
    pub problem: String,
}

/// A parsed JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name` or `['name']`.
    Field(String),
    /// `['a','b']`.
    Fields(Vec<String>),
    /// `.*` or `[*]`.
    Wildcard,
    /// `[n]` (negative counts from the end).
    Index(i64),
    /// `[0,2]`.
    Indices(Vec<i64>),
    /// `[start:end:step]`.
    Slice(Option<i64>, Option<i64>, Option<i64>),
    /// `..` followed by a step.
    Recursive(Box<Step>),
    /// `[?(@.path op literal)]` or `[?(@.path)]`.
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: JsonPath,
    test: Option<(Op, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(JsonPath),
}

struct Parser<'a> {
    expr: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl JsonPath {
    /// Parses an expression such as `.status.conditions[-1:].type` (or `{.a.b}`, `$.a.b`).
    pub fn parse(expr: &str) -> Result<Self, JsonPathError> {
        let trimmed = expr.trim();
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(trimmed);
        let mut p = Parser {
            expr,
            chars: inner.chars().collect(),
            pos: 0,
        };
        p.eat('$');
        let path = p.path(&[])?;
        if p.pos < p.chars.len() {
            return Err(p.error(format!("unexpected {:?}", p.chars[p.pos])));
        }
        Ok(path)
    }

    /// Every value the path selects, in document order.
    pub fn find<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
        let mut current = vec![root];
        for step in &self.steps {
            let mut next = Vec::new();
            for v in current {
                apply(step, v, &mut next);
            }
            current = next;
        }
        current
    }
}

/// The first value `expr` selects in `v`, as a printer column shows it; `None` when nothing
/// is selected or the expression cannot be read.
pub fn first<'v>(v: &'v Value, expr: &str) -> Option<&'v Value> {
    JsonPath::parse(expr).ok()?.find(v).into_iter().next()
}

fn apply<'v>(step: &Step, v: &'v Value, out: &mut Vec<&'v Value>) {
    match step {
        Step::Field(name) => out.extend(v.get(name.as_str())),
        Step::Fields(names) => out.extend(names.iter().filter_map(|n| v.get(n.as_str()))),
        Step::Wildcard => match v {
            Value::Array(a) => out.extend(a.iter()),
            Value::Object(o) => out.extend(o.values()),
            _ => {}
        },
        Step::Index(i) => out.extend(v.as_array().and_then(|a| index(a, *i))),
        Step::Indices(is) => {
            if let Some(a) = v.as_array() {
                out.extend(is.iter().filter_map(|i| index(a, *i)));
            }
        }
        Step::Slice(start, end, step) => {
            if let Some(a) = v.as_array() {
                slice(a, *start, *end, *step, out);
            }
        }
        Step::Recursive(inner) => {
            let mut all = Vec::new();
            descendants(v, &mut all);
            for d in all {
                apply(inner, d, out);
            }
        }
        Step::Filter(f) => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::Object(o) => o.values().collect(),
                _ => Vec::new(),
            };
            out.extend(items.into_iter().filter(|item| f.accepts(item)));
        }
    }
}

fn index(a: &[Value], i: i64) -> Option<&Value> {
    let len = i64::try_from(a.len()).ok()?;
    let i = if i < 0 { i.checked_add(len)? } else { i };
    a.get(usize::try_from(i).ok()?)
}

/// Python-style slicing, bounds clamped (as Kubernetes' JSONPath).
fn slice<'v>(
    a: &'v [Value],
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
    out: &mut Vec<&'v Value>,
) {
    let len = i64::try_from(a.len()).unwrap_or(i64::MAX);
    let step = step.unwrap_or(1);
    if step == 0 {
        return;
    }
    let clamp = |i: i64, low: i64, high: i64| {
        let i = if i < 0 { i.saturating_add(len) } else { i };
        i.clamp(low, high)
    };
    let get = |i: i64| usize::try_from(i).ok().and_then(|i| a.get(i));
    if step > 0 {
        let mut i = start.map_or(0, |s| clamp(s, 0, len));
        let end = end.map_or(len, |e| clamp(e, 0, len));
        while i < end {
            out.extend(get(i));
            i = i.saturating_add(step);
        }
    } else {
        let mut i = start.map_or(len - 1, |s| clamp(s, -1, len - 1));
        let end = end.map_or(-1, |e| clamp(e, -1, len - 1));
        while i > end {
            out.extend(get(i));
            i = i.saturating_add(step);
        }
    }
}

fn descendants<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    out.push(v);
    match v {
        Value::Array(a) => a.iter().for_each(|c| descendants(c, out)),
        Value::Object(o) => o.values().for_each(|c| descendants(c, out)),
        _ => {}
    }
}

impl Filter {
    fn accepts(&self, item: &Value) -> bool {
        let left = self.left.find(item);
        let Some((op, right)) = &self.test else {
            return !left.is_empty();
        };
        let right: Vec<&Value> = match right {
            Operand::Literal(v) => vec![v],
            Operand::Path(p) => p.find(item),
        };
        match (left.first(), right.first()) {
            (Some(l), Some(r)) => compare(l, *op, r),
            _ => false,
        }
    }
}

fn compare(l: &Value, op: Op, r: &Value) -> bool {
    use std::cmp::Ordering;
    let ordering = match (l, r) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match op {
        Op::Eq => ordering.map_or(l == r, |o| o == Ordering::Equal),
        Op::Ne => ordering.map_or(l != r, |o| o != Ordering::Equal),
        Op::Lt => ordering == Some(Ordering::Less),
        Op::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => ordering == Some(Ordering::Greater),
        Op::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
    }
}

impl Parser<'_> {
    fn error(&self, problem: impl Into<String>) -> JsonPathError {
        JsonPathError {
            expr: self.expr.to_string(),
            problem: problem.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        let matches = self
            .chars
            .get(self.pos..self.pos + n)
            .is_some_and(|w| w.iter().copied().eq(s.chars()));
        if matches {
            self.pos += n;
        }
        matches
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Steps until the end or one of `stop`.
    fn path(&mut self, stop: &[char]) -> Result<JsonPath, JsonPathError> {
        let mut steps = Vec::new();
        while let Some(c) = self.peek() {
            if stop.contains(&c) {
                break;
            }
            if self.eat_str("..") {
                let inner = if self.peek() == Some('[') {
                    self.pos += 1;
                    self.bracket()?
                } else {
                    self.dotted()?
                };
                steps.push(Step::Recursive(Box::new(inner)));
            } else if self.eat('.') {
                // A trailing `.` selects the value itself, as Kubernetes' `{.}`.
                if self.peek().is_none_or(|c| c == '[' || stop.contains(&c)) {
                    continue;
                }
                steps.push(self.dotted()?);
            } else if self.eat('[') {
                steps.push(self.bracket()?);
            } else if steps.is_empty() {
                // `status.phase` without the leading dot.
                steps.push(self.dotted()?);
            } else {
                return Err(self.error(format!("unexpected {c:?}")));
            }
        }
        Ok(JsonPath { steps })
    }

    /// A name after `.`: up to the next `.`, `[` or a filter's operator (`\.` escapes a dot).
    fn dotted(&mut self) -> Result<Step, JsonPathError> {
        if self.eat('*') {
            return Ok(Step::Wildcard);
        }
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c == '\\' && self.chars.get(self.pos + 1) == Some(&'.') {
                name.push('.');
                self.pos += 2;
                continue;
            }
            if matches!(
                c,
                '.' | '[' | ']' | '(' | ')' | '=' | '!' | '<' | '>' | ',' | '{' | '}'
            ) || c.is_whitespace()
            {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        if name.is_empty() {
            return Err(self.error("a field name is missing"));
        }
        Ok(Step::Field(name))
    }

    /// The inside of `[…]`, the `[` consumed.
    fn bracket(&mut self) -> Result<Step, JsonPathError> {
        self.skip_spaces();
        let step = if self.eat('*') {
            Step::Wildcard
        } else if self.eat('?') {
            self.skip_spaces();
            let parenthesized = self.eat('(');
            let filter = self.filter()?;
            self.skip_spaces();
            if parenthesized && !self.eat(')') {
                return Err(self.error("a filter misses its ')'"));
            }
            Step::Filter(filter)
        } else if matches!(self.peek(), Some('\'' | '"')) {
            let mut names = vec![self.quoted()?];
            self.skip_spaces();
            while self.eat(',') {
                self.skip_spaces();
                names.push(self.quoted()?);
                self.skip_spaces();
            }
            if names.len() == 1 {
                Step::Field(names.remove(0))
            } else {
                Step::Fields(names)
            }
        } else {
            self.numbers()?
        };
        self.skip_spaces();
        if !self.eat(']') {
            return Err(self.error("a '[' misses its ']'"));
        }
        Ok(step)
    }

    fn quoted(&mut self) -> Result<String, JsonPathError> {
        let Some(quote) = self.peek().filter(|c| matches!(c, '\'' | '"')) else {
            return Err(self.error("a quoted name is expected"));
        };
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("a quoted name is not closed")),
                Some('\\') => {
                    self.pos += 1;
                    if let Some(c) = self.peek() {
                        s.push(c);
                        self.pos += 1;
                    }
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn integer(&mut self) -> Result<Option<i64>, JsonPathError> {
        self.skip_spaces();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let text: String = self
            .chars
            .get(start..self.pos)
            .unwrap_or_default()
            .iter()
            .collect();
        self.skip_spaces();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| self.error(format!("{text:?} is not an index")))
    }

    /// `n`, `n,m,…` or `a:b:c`.
    fn numbers(&mut self) -> Result<Step, JsonPathError> {
        let first = self.integer()?;
        if self.eat(':') {
            let end = self.integer()?;
            let step = if self.eat(':') { self.integer()? } else { None };
            return Ok(Step::Slice(first, end, step));
        }
        let Some(first) = first else {
            return Err(self.error("an index, a slice, '*', a filter or a quoted name is expected"));
        };
        let mut all = vec![first];
        while self.eat(',') {
            all.push(
                self.integer()?
                    .ok_or_else(|| self.error("an index is expected after ','"))?,
            );
        }
        Ok(if all.len() == 1 {
            Step::Index(first)
        } else {
            Step::Indices(all)
        })
    }

    fn filter(&mut self) -> Result<Filter, JsonPathError> {
        if !self.eat('@') {
            return Err(self.error("a filter starts with '@'"));
        }
        let left = self.path(&[' ', '=', '!', '<', '>', ')', ']'])?;
        self.skip_spaces();
        let op = if self.eat_str("==") {
            Op::Eq
        } else if self.eat_str("!=") {
            Op::Ne
        } else if self.eat_str("<=") {
            Op::Le
        } else if self.eat_str(">=") {
            Op::Ge
        } else if self.eat('<') {
            Op::Lt
        } else if self.eat('>') {
            Op::Gt
        } else {
            return Ok(Filter { left, test: None });
        };
        self.skip_spaces();
        let right = match self.peek() {
            Some('\'' | '"') => Operand::Literal(Value::String(self.quoted()?)),
            Some('@') => {
                self.pos += 1;
                Operand::Path(self.path(&[' ', ')', ']'])?)
            }
            _ => {
                let start = self.pos;
                while self.peek().is_some_and(|c| !matches!(c, ')' | ']' | ' ')) {
                    self.pos += 1;
                }
                let text: String = self
                    .chars
                    .get(start..self.pos)
                    .unwrap_or_default()
                    .iter()
                    .collect();
                let literal = match text.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    number => serde_json::from_str::<serde_json::Number>(number)
                        .map(Value::Number)
                        .map_err(|_| self.error(format!("{text:?} is not a value")))?,
                };
                Operand::Literal(literal)
            }
        };
        Ok(Filter {
            left,
            test: Some((op, right)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> Value {
        json!({
            "metadata": {"name": "j", "labels": {"app.kubernetes.io/name": "t", "a-b": "c"}},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
            "status": {
                "replicas": 3,
                "usage": {"nvidia.com/gpu": "4"},
                "conditions": [
                    {"type": "Created", "status": "True", "n": 1},
                    {"type": "Running", "status": "False", "n": 2},
                    {"type": "Succeeded", "status": "True", "n": 3},
                ],
            },
        })
    }

    fn all(expr: &str) -> Vec<Value> {
        JsonPath::parse(expr)
            .unwrap_or_else(|e| panic!("{e}"))
            .find(&job())
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn kubeflow_last_condition() {
        // Kubeflow's printer column; blank before this evaluator.
        assert_eq!(all(".status.conditions[-1:].type"), [json!("Succeeded")]);
        assert_eq!(
            first(&job(), ".status.conditions[-1:].type"),
            Some(&json!("Succeeded"))
        );
        assert_eq!(all("{.status.conditions[-1].type}"), [json!("Succeeded")]);
    }

    #[test]
    fn fields_indices_slices_and_wildcards() {
        assert_eq!(all(".status.replicas"), [json!(3)]);
        assert_eq!(all("$.status.replicas"), [json!(3)]);
        assert_eq!(all("status.replicas"), [json!(3)]);
        assert_eq!(all(".spec.containers[0].image"), [json!("x")]);
        assert_eq!(all(".spec.containers[*].name"), [json!("a"), json!("b")]);
        assert_eq!(all(".spec.containers.*.name"), [json!("a"), json!("b")]);
        assert_eq!(all(".status.conditions[0:2].n"), [json!(1), json!(2)]);
        assert_eq!(all(".status.conditions[::2].n"), [json!(1), json!(3)]);
        assert_eq!(
            all(".status.conditions[::-1].n"),
            [json!(3), json!(2), json!(1)]
        );
        assert_eq!(all(".status.conditions[0,2].n"), [json!(1), json!(3)]);
        assert_eq!(all(".status.conditions[-5:100].n").len(), 3);
        assert!(all(".status.conditions[7].n").is_empty());
        assert!(all(".status.conditions[-4].n").is_empty());
        assert!(all(".status.missing.deeper").is_empty());
        assert_eq!(all(".status.usage['nvidia.com/gpu']"), [json!("4")]);
        assert_eq!(all(".status.usage[\"nvidia.com/gpu\"]"), [json!("4")]);
        assert_eq!(all(".metadata.labels.a-b"), [json!("c")]);
        assert_eq!(
            all(".metadata.labels.app\\.kubernetes\\.io/name"),
            [json!("t")]
        );
        assert_eq!(all(".metadata['name','missing']"), [json!("j")]);
    }

    #[test]
    fn filters() {
        assert_eq!(
            all(".status.conditions[?(@.type==\"Running\")].status"),
            [json!("False")]
        );
        assert_eq!(
            all(".status.conditions[?(@.type == 'Succeeded')].status"),
            [json!("True")]
        );
        assert_eq!(
            all(".status.conditions[?(@.status!=\"True\")].type"),
            [json!("Running")]
        );
        assert_eq!(all(".status.conditions[?(@.n>1)].n"), [json!(2), json!(3)]);
        assert_eq!(
            all(".status.conditions[?(@.n<=1)].type"),
            [json!("Created")]
        );
        assert_eq!(all(".status.conditions[?(@.n)].n").len(), 3);
        assert!(all(".status.conditions[?(@.missing)]").is_empty());
        // Another field of the same item on the right.
        assert_eq!(all(".status.conditions[?(@.n==@.n)].n").len(), 3);
    }

    #[test]
    fn recursive_descent() {
        assert_eq!(all("..image"), [json!("x"), json!("y")]);
        assert_eq!(all(".spec..name"), [json!("a"), json!("b")]);
    }

    #[test]
    fn bad_expressions_are_errors_not_panics() {
        for bad in [
            "[",
            ".a[",
            ".a[x]",
            ".a[?(@.b==)]",
            ".a['b",
            ".a[1,]",
            ".é[",
            "..",
            "[?(x)]",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad} should not parse");
        }
        assert_eq!(first(&job(), ".a["), None);
        assert_eq!(all(".é"), Vec::<Value>::new());
    }

    proptest::proptest! {
        #[test]
        fn any_expression_parses_or_errs(expr in r#"[.\[\]()?@=!<>:,*'"a-z0-9 é$-]{0,30}"#) {
            if let Ok(p) = JsonPath::parse(&expr) {
                let _ = p.find(&job());
            }
        }
    }
}
