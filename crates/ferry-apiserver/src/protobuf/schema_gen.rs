//! The generator of `schema.rs` (tests only).
//!
//! It reads two dependencies' sources, found where cargo unpacked them to build this test
//! (`$CARGO_HOME/registry/src/*/<name>-<version from Cargo.lock>`), else with `cargo metadata
//! --offline --filter-platform <host>` (which needs every workspace member's packages for the
//! host in the cache; plain `cargo metadata` wants every platform's, such as Android's):
//! - `k8s-pb`: prost messages of every Kubernetes type; each field's tag, protobuf type and
//!   Rust name (`#[prost(string, optional, tag = "1")] pub name: ...`), and the
//!   apiVersion/kind of resources.
//! - `k8s-openapi` (newest `v1_*` module): each type's JSON field names (its hand-written
//!   deserializers match on them) and the apiVersion/kind of every resource.
//!
//! Messages are joined on (package, lower-cased name) and fields on their name with case and
//! punctuation removed (`pod_ip` ↔ `podIP`, `r#ref` ↔ `$ref`). A message field with no JSON
//! name whose own fields are all JSON fields of the parent is a Go `json:",inline"` embed
//! (`Volume.volumeSource`). Fields of messages `k8s-openapi` lacks get a camelCase guess.
//!
//! `schema_is_current` fails when the committed `schema.rs` differs from what the current
//! dependencies give; `FERRY_REGENERATE_PROTOBUF_SCHEMA=1` rewrites it instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/protobuf/schema.rs");

/// Kinds of `meta/v1` that clients send under any group version (a DELETE body is a
/// `DeleteOptions` of the resource's own group version).
const META_KINDS: &[&str] = &[
    "CreateOptions",
    "DeleteOptions",
    "GetOptions",
    "ListOptions",
    "PatchOptions",
    "Status",
    "UpdateOptions",
    "WatchEvent",
];

/// `*string` fields where `""` differs from unset.
const KEEP_EMPTY: &[(&str, &str)] = &[
    (
        "api.core.v1.PersistentVolumeClaimSpec",
        "storage_class_name",
    ),
    (
        "api.core.v1.PersistentVolumeClaimSpec",
        "volume_attributes_class_name",
    ),
];

/// The root messages the API server must decode, with every field's JSON name confirmed.
pub(super) const REQUIRED: &[(&str, &str)] = &[
    ("v1", "Pod"),
    ("v1", "Node"),
    ("v1", "Namespace"),
    ("v1", "Event"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "Binding"),
    ("v1", "DeleteOptions"),
    ("v1", "Endpoints"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "ReplicationController"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("v1", "PodTemplate"),
    ("coordination.k8s.io/v1", "Lease"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("events.k8s.io/v1", "Event"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "ReplicaSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("policy/v1", "Eviction"),
    ("autoscaling/v1", "Scale"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum PTy {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    F64,
    /// A message, by key (`api.core.v1.PodSpec`: k8s-pb module path and struct name).
    Msg(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PShape {
    One,
    Rep,
    Map,
}

#[derive(Debug, Clone)]
struct PbField {
    rust: String,
    tag: u32,
    shape: PShape,
    ty: PTy,
}

#[derive(Debug, Clone)]
struct PbMessage {
    package: String,
    rust_name: String,
    fields: Vec<PbField>,
}

/// What `k8s-openapi` says about one type.
#[derive(Debug, Default)]
struct OaType {
    /// The Go (OpenAPI) name.
    name: String,
    json: Vec<String>,
    resource: Option<(String, String)>,
}

/// The sources of one package, from `cargo metadata`.
fn package_src(metadata: &Value, name: &str) -> (PathBuf, String) {
    let found: Vec<&Value> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one version of {name} in the build");
    let manifest = PathBuf::from(found[0]["manifest_path"].as_str().unwrap());
    let version = found[0]["version"].as_str().unwrap().to_string();
    (manifest.parent().unwrap().join("src"), version)
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Lower case, letters and digits only: the join key of field names.
fn norm(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn quoted(s: &str) -> Option<&str> {
    let (_, rest) = s.split_once('"')?;
    let (inner, _) = rest.split_once('"')?;
    Some(inner)
}

/// Splits on commas outside double quotes.
fn split_args(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut in_quotes = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                out.last_mut().unwrap().push(c);
            }
            ',' if !in_quotes => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|a| a.trim().to_string()).collect()
}

/// Resolves a Rust type path relative to `package` to a message key.
fn resolve(package: &str, path: &str) -> String {
    let mut module: Vec<&str> = package.split('.').collect();
    let segments: Vec<&str> = path.trim().split("::").collect();
    let (name, modules) = segments.split_last().unwrap();
    for seg in modules {
        match *seg {
            "super" => {
                module.pop().expect("super:: above the crate root");
            }
            "crate" => module.clear(),
            "self" | "" => {}
            other => module.push(other),
        }
    }
    format!("{}.{name}", module.join("."))
}

/// Strips `Option<..>`, `Vec<..>`, `Box<..>`.
fn strip_wrappers(mut ty: &str) -> &str {
    const WRAPPERS: [&str; 3] = [
        "::core::option::Option<",
        "::prost::alloc::vec::Vec<",
        "::prost::alloc::boxed::Box<",
    ];
    loop {
        let before = ty;
        for w in WRAPPERS {
            if let Some(inner) = ty.strip_prefix(w).and_then(|t| t.strip_suffix('>')) {
                ty = inner;
            }
        }
        if ty == before {
            return ty.trim();
        }
    }
}

fn scalar(name: &str) -> Option<PTy> {
    Some(match name {
        "string" => PTy::Str,
        "bool" => PTy::Bool,
        "int32" => PTy::I32,
        "int64" => PTy::I64,
        "double" => PTy::F64,
        _ => return None,
    })
}

/// Parses one `#[prost(...)]` attribute and the field declaration after it.
fn pb_field(package: &str, attr: &str, decl: &str) -> PbField {
    let args = split_args(attr);
    let (name, ty) = decl
        .strip_prefix("pub ")
        .and_then(|d| d.strip_suffix(','))
        .and_then(|d| d.split_once(':'))
        .unwrap_or_else(|| panic!("unexpected field declaration {decl:?}"));
    let rust = name.trim().trim_start_matches("r#").to_string();
    let ty = ty.trim();
    let mut tag = None;
    let mut shape = PShape::One;
    let mut pty = None;
    for (i, a) in args.iter().enumerate() {
        if let Some(t) = a.strip_prefix("tag = ") {
            tag = Some(quoted(t).unwrap().parse().unwrap());
        } else if a == "optional" || a == "boxed" || a == "packed = \"false\"" {
        } else if a == "repeated" {
            shape = PShape::Rep;
        } else if i == 0 && a == "message" {
            pty = Some(PTy::Msg(resolve(package, strip_wrappers(ty))));
        } else if i == 0 && a.starts_with("bytes") {
            pty = Some(PTy::Bytes);
        } else if i == 0 && a.starts_with("btree_map") {
            shape = PShape::Map;
            let kv = quoted(a).unwrap();
            let (k, v) = kv.split_once(',').unwrap();
            assert_eq!(k.trim(), "string", "map keys are strings ({decl})");
            pty = Some(match v.trim() {
                "message" => {
                    let inner = ty
                        .strip_prefix("::prost::alloc::collections::BTreeMap<")
                        .and_then(|t| t.strip_suffix('>'))
                        .unwrap_or_else(|| panic!("map type {ty}"));
                    let (_, value) = inner.split_once(',').unwrap();
                    PTy::Msg(resolve(package, value.trim().trim_end_matches(',')))
                }
                "bytes" => PTy::Bytes,
                other => scalar(other).unwrap_or_else(|| panic!("map value {other}")),
            });
        } else if i == 0 && scalar(a).is_some() {
            pty = scalar(a);
        } else {
            panic!("unexpected prost attribute argument {a:?} in {attr:?}");
        }
    }
    PbField {
        rust,
        tag: tag.expect("tag"),
        shape,
        ty: pty.expect("type"),
    }
}

/// Everything `k8s-pb` declares.
struct Pb {
    version: String,
    messages: BTreeMap<String, PbMessage>,
    /// (apiVersion, kind, message key).
    resources: Vec<(String, String, String)>,
}

fn parse_pb(src: &Path, version: String) -> Pb {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let mut messages = BTreeMap::new();
    let mut resources = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        if rel == Path::new("lib.rs") {
            continue;
        }
        let mut parts: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let last = parts.pop().unwrap();
        if last != "mod.rs" {
            parts.push(last.trim_end_matches(".rs").to_string());
        }
        let package = parts.join(".");
        let text = std::fs::read_to_string(&file).unwrap();
        let mut current: Option<PbMessage> = None;
        let mut attr: Option<String> = None;
        let mut decl: Option<String> = None;
        let mut resource: Option<(String, Option<String>, Option<String>)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("pub struct ") {
                assert!(current.is_none(), "nested struct in {}", file.display());
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let message = PbMessage {
                    package: package.clone(),
                    rust_name: name,
                    fields: Vec::new(),
                };
                let rest = rest.trim_end();
                if rest.ends_with("{}") || rest.ends_with(';') {
                    messages.insert(format!("{package}.{}", message.rust_name), message);
                } else {
                    assert!(rest.ends_with('{'), "struct line {line:?}");
                    current = Some(message);
                }
                continue;
            }
            if current.is_some() && line == "}" {
                assert!(attr.is_none() && decl.is_none(), "dangling field");
                let m = current.take().unwrap();
                messages.insert(format!("{package}.{}", m.rust_name), m);
                continue;
            }
            if let Some(message) = current.as_mut() {
                let t = line.trim();
                if let Some(d) = decl.as_mut() {
                    d.push_str(t);
                } else if let Some(a) = t.strip_prefix("#[prost(") {
                    let a = a
                        .strip_suffix(")]")
                        .unwrap_or_else(|| panic!("multi-line prost attribute {t:?}"));
                    attr = Some(a.to_string());
                } else if t.starts_with("pub ") {
                    decl = Some(t.to_string());
                } else {
                    assert!(
                        t.is_empty() || t.starts_with("//") || t.starts_with("#["),
                        "unexpected line in struct: {line:?}"
                    );
                }
                let complete = |d: &String| {
                    d.ends_with(',') && d.matches('<').count() == d.matches('>').count()
                };
                if decl.as_ref().is_some_and(complete) {
                    let a = attr.take().expect("field without #[prost]");
                    // Multi-line types end their generics with `,>`.
                    let d = decl.take().unwrap().replace(",>", ">");
                    message.fields.push(pb_field(&package, &a, &d));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("impl crate::Resource for ") {
                let name = rest.trim_end_matches(" {").to_string();
                resource = Some((name, None, None));
            } else if let Some(r) = resource.as_mut() {
                let t = line.trim();
                if t.starts_with("const API_VERSION:") {
                    r.1 = quoted(t).map(str::to_string);
                } else if t.starts_with("const KIND:") {
                    r.2 = quoted(t).map(str::to_string);
                }
                if let (name, Some(av), Some(kind)) = r {
                    resources.push((av.clone(), kind.clone(), format!("{package}.{name}")));
                    resource = None;
                }
            }
        }
        assert!(
            current.is_none(),
            "unterminated struct in {}",
            file.display()
        );
    }
    Pb {
        version,
        messages,
        resources,
    }
}

/// Everything `k8s-openapi` declares, by (package, lower-cased name).
struct Oa {
    version: String,
    /// The JSON names of k8s-openapi's generic `List<T>`.
    list_json: Vec<String>,
    module: String,
    types: HashMap<String, OaType>,
}

/// The `k8s-pb`-style key of an OpenAPI definition name, lower-cased.
fn oa_key(definition: &str) -> String {
    let rest = definition
        .strip_prefix("io.k8s.")
        .unwrap_or_else(|| panic!("definition {definition}"));
    let (package, name) = rest.rsplit_once('.').unwrap();
    format!(
        "{}.{}",
        package.replace('-', "_"),
        name.to_ascii_lowercase()
    )
}

fn parse_oa(src: &Path, version: String) -> Oa {
    // Every `v1_*` module, newest first: fields that a newer Kubernetes dropped still get
    // their JSON name from an older one.
    let mut modules: Vec<(u32, String)> = std::fs::read_dir(src)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let minor: u32 = name.strip_prefix("v1_")?.parse().ok()?;
            Some((minor, name))
        })
        .collect();
    modules.sort_by(|a, b| b.cmp(a));
    assert!(!modules.is_empty(), "a v1_* module in k8s-openapi");
    let mut types: HashMap<String, OaType> = HashMap::new();
    let mut list_json = Vec::new();
    for (_, module) in &modules {
        let list = std::fs::read_to_string(src.join(module).join("list.rs")).unwrap();
        for line in list.lines().map(str::trim) {
            if line.starts_with('"') && line.contains("\" => Field::Key_") {
                let j = quoted(line).unwrap().to_string();
                if !list_json.contains(&j) {
                    list_json.push(j);
                }
            }
        }
        let mut files = Vec::new();
        rs_files(&src.join(module), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let mut ty = OaType::default();
            let (mut av, mut kind) = (None, None);
            for line in text.lines() {
                let t = line.trim();
                if t.starts_with("\"io.k8s.") && t.ends_with("\".into()") {
                    ty.name = quoted(t).unwrap().to_string();
                } else if t.starts_with('"') && t.contains("\" => Field::Key_") {
                    ty.json.push(quoted(t).unwrap().to_string());
                } else if t.starts_with("const API_VERSION:") {
                    av = quoted(t).map(str::to_string);
                } else if t.starts_with("const KIND:") {
                    kind = quoted(t).map(str::to_string);
                }
            }
            if ty.name.is_empty() {
                continue;
            }
            let merged = types.entry(oa_key(&ty.name)).or_insert_with(|| OaType {
                name: ty.name.clone(),
                ..OaType::default()
            });
            for j in ty.json {
                if !merged.json.contains(&j) {
                    merged.json.push(j);
                }
            }
            if let (None, Some(av), Some(kind)) = (&merged.resource, av, kind) {
                merged.resource = Some((av, kind));
            }
        }
    }
    let names: Vec<&str> = modules.iter().map(|(_, m)| m.as_str()).collect();
    Oa {
        version,
        list_json,
        module: names.join(", "),
        types,
    }
}

fn lower_key(key: &str) -> String {
    let (package, name) = key.rsplit_once('.').unwrap();
    format!("{package}.{}", name.to_ascii_lowercase())
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    for (i, part) in snake.split('_').filter(|p| !p.is_empty()).enumerate() {
        let mut chars = part.chars();
        let first = chars.next().unwrap();
        if i == 0 {
            out.push(first);
        } else {
            out.push(first.to_ascii_uppercase());
        }
        out.extend(chars);
    }
    out
}

/// The special JSON form of a message, checked against the fields it must have.
fn special_of(key: &str, m: &PbMessage, has_oa: bool, schema_key: &str) -> &'static str {
    use PShape::*;
    let (package, name) = key.rsplit_once('.').unwrap();
    let name = name.to_ascii_lowercase();
    let schema = PTy::Msg(schema_key.to_string());
    let (special, expected): (&str, Vec<(u32, PShape, PTy)>) = match (package, name.as_str()) {
        ("apimachinery.pkg.api.resource", "quantity" | "quantityvalue") => {
            ("Quantity", vec![(1, One, PTy::Str)])
        }
        ("apimachinery.pkg.apis.meta.v1", "time") => {
            ("Time", vec![(1, One, PTy::I64), (2, One, PTy::I32)])
        }
        ("apimachinery.pkg.apis.meta.v1", "microtime") => {
            ("MicroTime", vec![(1, One, PTy::I64), (2, One, PTy::I32)])
        }
        ("apimachinery.pkg.apis.meta.v1", "duration") => ("Duration", vec![(1, One, PTy::I64)]),
        ("apimachinery.pkg.apis.meta.v1", "fieldsv1") => ("RawJson", vec![(1, One, PTy::Bytes)]),
        ("apimachinery.pkg.util.intstr", "intorstring") => (
            "IntOrString",
            vec![(1, One, PTy::I64), (2, One, PTy::I32), (3, One, PTy::Str)],
        ),
        ("apimachinery.pkg.runtime", "rawextension") => {
            ("RawExtension", vec![(1, One, PTy::Bytes)])
        }
        (p, "json") if p.starts_with("apiextensions_apiserver.") => {
            ("RawJson", vec![(1, One, PTy::Bytes)])
        }
        (p, "jsonschemapropsorarray") if p.starts_with("apiextensions_apiserver.") => (
            "SchemaOrArray",
            vec![(1, One, schema.clone()), (2, Rep, schema)],
        ),
        (p, "jsonschemapropsorbool") if p.starts_with("apiextensions_apiserver.") => {
            ("SchemaOrBool", vec![(1, One, PTy::Bool), (2, One, schema)])
        }
        (p, "jsonschemapropsorstringarray") if p.starts_with("apiextensions_apiserver.") => (
            "SchemaOrStringArray",
            vec![(1, One, schema), (2, Rep, PTy::Str)],
        ),
        _ if !has_oa
            && m.fields.len() == 1
            && m.fields[0].rust == "items"
            && m.fields[0].shape == Rep
            && m.fields[0].ty == PTy::Str =>
        {
            ("Items", vec![(1, Rep, PTy::Str)])
        }
        _ => return "None",
    };
    let actual: Vec<(u32, PShape, PTy)> = m
        .fields
        .iter()
        .map(|f| (f.tag, f.shape, f.ty.clone()))
        .collect();
    assert_eq!(actual, expected, "fields of {key} (special {special})");
    special
}

/// The generated table and what the generator noticed.
pub(super) struct Generated {
    pub text: String,
    /// `message.field` names guessed (no JSON name in k8s-openapi), reachable from [`REQUIRED`].
    pub required_guesses: Vec<String>,
    /// [`REQUIRED`] kinds the table lacks.
    pub missing_required: Vec<String>,
}

struct OutField {
    tag: u32,
    json: String,
    shape: &'static str,
    ty: String,
    guessed: bool,
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(&rustc)
        .arg("-vV")
        .output()
        .unwrap_or_else(|e| panic!("{rustc} -vV: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("no host line in {rustc} -vV"))
        .trim()
        .to_string()
}

/// `cargo metadata` of this crate, limited to the host platform's packages (those a test
/// build has downloaded), so that it runs offline on a fresh cargo cache.
fn metadata_command() -> std::process::Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    cmd
}

/// The version of `name` in the workspace's `Cargo.lock` (exactly one is allowed).
fn locked_version(name: &str) -> Option<String> {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).ok()?;
    let versions: Vec<String> = lock
        .split("[[package]]")
        .filter(|p| p.lines().any(|l| l.trim() == format!("name = \"{name}\"")))
        .filter_map(|p| {
            p.lines()
                .find_map(|l| l.trim().strip_prefix("version = \""))
                .map(|v| v.trim_end_matches('"').to_string())
        })
        .collect();
    assert!(
        versions.len() <= 1,
        "several versions of {name} in Cargo.lock: {versions:?}"
    );
    versions.into_iter().next()
}

/// Cargo's home: `$CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// The unpacked sources of a registry package, where cargo put them to build this test:
/// `<home>/registry/src/<index>/<name>-<version>/src` (the version from `Cargo.lock`).
fn registry_src(home: &Path, name: &str) -> Option<(PathBuf, String)> {
    let version = locked_version(name)?;
    let indexes = std::fs::read_dir(home.join("registry/src")).ok()?;
    indexes
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(format!("{name}-{version}")))
        .find(|dir| dir.join("Cargo.toml").is_file())
        .map(|dir| (dir.join("src"), version))
}

/// The sources of `name`: from the registry cache (see [`registry_src`]), else from
/// `cargo metadata` (vendored or replaced sources).
fn sources(name: &str) -> (PathBuf, String) {
    if let Some(found) = cargo_home().and_then(|home| registry_src(&home, name)) {
        return found;
    }
    let out = metadata_command().output().expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    package_src(&metadata, name)
}

pub(super) fn generate() -> Generated {
    let (pb_src, pb_version) = sources("k8s-pb");
    let (oa_src, oa_version) = sources("k8s-openapi");
    let pb = parse_pb(&pb_src, pb_version);
    let oa = parse_oa(&oa_src, oa_version);
    build(&pb, &oa)
}

fn build(pb: &Pb, oa: &Oa) -> Generated {
    let by_lower: HashMap<String, &str> = pb
        .messages
        .keys()
        .map(|k| (lower_key(k), k.as_str()))
        .collect();
    let oa_of = |key: &str| oa.types.get(&lower_key(key));

    // Root kinds: k8s-openapi's and k8s-pb's resources, their lists, and meta/v1 kinds.
    let mut kinds: BTreeMap<(String, String), String> = BTreeMap::new();
    for (key, ty) in &oa.types {
        if let (Some((av, kind)), Some(pb_key)) = (&ty.resource, by_lower.get(key)) {
            kinds.insert((av.clone(), kind.clone()), pb_key.to_string());
        }
    }
    for (av, kind, key) in &pb.resources {
        assert!(pb.messages.contains_key(key), "resource {key}");
        kinds
            .entry((av.clone(), kind.clone()))
            .or_insert_with(|| key.clone());
    }
    let lists: Vec<((String, String), String)> = kinds
        .iter()
        .filter_map(|((av, kind), key)| {
            let list = format!("{key}List");
            pb.messages
                .contains_key(&list)
                .then(|| ((av.clone(), format!("{kind}List")), list))
        })
        .collect();
    kinds.extend(lists);
    let meta_kinds: Vec<(String, String)> = META_KINDS
        .iter()
        .map(|k| {
            let key = format!("apimachinery.pkg.apis.meta.v1.{k}");
            assert!(pb.messages.contains_key(&key), "meta kind {key}");
            (k.to_string(), key)
        })
        .collect();

    // Messages reachable from the roots.
    let reach = |roots: Vec<&str>| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = roots.into_iter().map(str::to_string).collect();
        while let Some(key) = todo.pop() {
            if !seen.insert(key.clone()) {
                continue;
            }
            let m = pb
                .messages
                .get(&key)
                .unwrap_or_else(|| panic!("unknown message {key}"));
            for f in &m.fields {
                if let PTy::Msg(t) = &f.ty {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let all = reach(
        kinds
            .values()
            .chain(meta_kinds.iter().map(|(_, k)| k))
            .map(String::as_str)
            .collect(),
    );
    let index: HashMap<&str, usize> = all
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();

    // Specials.
    let specials: HashMap<&str, &str> = all
        .iter()
        .map(|key| {
            let m = &pb.messages[key];
            let schema_key = format!("{}.JsonSchemaProps", m.package);
            (
                key.as_str(),
                special_of(key, m, oa_of(key).is_some(), &schema_key),
            )
        })
        .collect();
    let is_plain = |key: &str| specials[key] == "None";

    // JSON names of a message: its own k8s-openapi type's, or for `FooList` (k8s-openapi has
    // one generic `List<T>`) the generic list's.
    let oa_norms = |key: &str| -> Option<HashMap<String, String>> {
        let json = match oa_of(key) {
            Some(ty) => &ty.json,
            None if key.ends_with("List")
                && pb.messages[key]
                    .fields
                    .iter()
                    .all(|f| oa.list_json.contains(&f.rust)) =>
            {
                &oa.list_json
            }
            None => return None,
        };
        let mut map = HashMap::new();
        for j in json {
            if let Some(prev) = map.insert(norm(j), j.clone()) {
                panic!("{key}: JSON names {prev} and {j} collide");
            }
        }
        Some(map)
    };
    // Whether all of `child`'s fields are among `names`, directly or through its own embeds.
    fn embeds(
        pb: &Pb,
        plain: &dyn Fn(&str) -> bool,
        names: &HashMap<String, String>,
        child: &str,
        depth: usize,
    ) -> bool {
        let child = &pb.messages[child];
        depth < 4
            && !child.fields.is_empty()
            && child.fields.iter().all(|c| {
                names.contains_key(&norm(&c.rust))
                    || matches!(&c.ty, PTy::Msg(t) if c.shape == PShape::One
                        && plain(t) && embeds(pb, plain, names, t, depth + 1))
            })
    }
    // Inline embeds: (parent, field rust name) and, per embedded message, its parents.
    let mut inline: BTreeSet<(String, String)> = BTreeSet::new();
    let mut inline_parents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in &all {
        let Some(names) = oa_norms(key) else { continue };
        if !is_plain(key) {
            continue;
        }
        for f in &pb.messages[key].fields {
            if names.contains_key(&norm(&f.rust)) || f.shape != PShape::One {
                continue;
            }
            let PTy::Msg(t) = &f.ty else { continue };
            if is_plain(t) && embeds(pb, &is_plain, &names, t, 0) {
                inline.insert((key.clone(), f.rust.clone()));
                inline_parents
                    .entry(t.clone())
                    .or_default()
                    .push(key.clone());
            }
        }
    }
    let names_of = |key: &str| -> Option<HashMap<String, String>> {
        if let Some(n) = oa_norms(key) {
            return Some(n);
        }
        let parents = inline_parents.get(key)?;
        let mut map = HashMap::new();
        for p in parents {
            map.extend(oa_norms(p).unwrap());
        }
        Some(map)
    };

    // Fields.
    let mut out_messages: Vec<(String, &str, Vec<OutField>)> = Vec::new();
    let mut guessed: BTreeSet<String> = BTreeSet::new();
    for key in &all {
        let m = &pb.messages[key];
        let special = specials[key.as_str()];
        let names = names_of(key);
        let go_name = oa_of(key)
            .map(|t| t.name.rsplit('.').next().unwrap().to_string())
            .unwrap_or_else(|| m.rust_name.clone());
        let mut fields = Vec::new();
        for f in &m.fields {
            let is_inline = inline.contains(&(key.clone(), f.rust.clone()));
            let confirmed = names.as_ref().and_then(|n| n.get(&norm(&f.rust)));
            let json = confirmed.cloned().unwrap_or_else(|| camel(&f.rust));
            let is_guess = confirmed.is_none() && !is_inline && special == "None";
            if is_guess {
                guessed.insert(format!("{key}.{}", f.rust));
            }
            let shape = match f.shape {
                _ if is_inline => "Inline",
                PShape::One if KEEP_EMPTY.iter().any(|(k, n)| k == key && *n == f.rust) => "Keep",
                PShape::One => "One",
                PShape::Rep => "Rep",
                PShape::Map => "Map",
            };
            let ty = match &f.ty {
                PTy::Str => "Str".to_string(),
                PTy::Bytes => "Bytes".to_string(),
                PTy::Bool => "Bool".to_string(),
                PTy::I32 => "I32".to_string(),
                PTy::I64 => "I64".to_string(),
                PTy::F64 => "F64".to_string(),
                PTy::Msg(t) => format!("Msg({})", index[t.as_str()]),
            };
            fields.push(OutField {
                tag: f.tag,
                json,
                shape,
                ty,
                guessed: is_guess,
            });
        }
        fields.sort_by_key(|f| f.tag);
        for w in fields.windows(2) {
            assert!(w[0].tag != w[1].tag, "{key}: duplicate tag {}", w[0].tag);
        }
        out_messages.push((format!("k8s.io.{}.{go_name}", m.package), special, fields));
    }
    for (k, n) in KEEP_EMPTY {
        assert!(
            pb.messages[*k].fields.iter().any(|f| f.rust == *n),
            "KEEP_EMPTY names {k}.{n}, which k8s-pb lacks"
        );
    }

    // What REQUIRED needs.
    let mut missing_required = Vec::new();
    let mut required_roots = Vec::new();
    for (av, kind) in REQUIRED {
        let key = kinds.get(&(av.to_string(), kind.to_string())).or_else(|| {
            meta_kinds
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, key)| key)
        });
        match key {
            Some(k) => required_roots.push(k.as_str()),
            None => missing_required.push(format!("{av} {kind}")),
        }
    }
    let required = reach(required_roots);
    let required_guesses = guessed
        .iter()
        .filter(|g| required.contains(g.rsplit_once('.').unwrap().0))
        .cloned()
        .collect();

    // The text.
    let mut text = String::new();
    writeln!(
        text,
        "// @generated by src/protobuf/schema_gen.rs from k8s-pb {} and k8s-openapi {} ({}); do not edit.",
        pb.version, oa.version, oa.module
    )
    .unwrap();
    writeln!(
        text,
        "// Regenerate: FERRY_REGENERATE_PROTOBUF_SCHEMA=1 cargo test -p ferry-apiserver protobuf::schema_gen"
    )
    .unwrap();
    writeln!(
        text,
        "// `// guessed`: a field k8s-openapi does not name; its JSON name is a camelCase guess."
    )
    .unwrap();
    text.push_str(
        "\nuse super::table::Shape::*;\nuse super::table::Special as S;\nuse super::table::Ty::*;\nuse super::table::{Message, f, m};\n\n",
    );
    writeln!(
        text,
        "/// Every message reachable from a kind, by index.\npub(crate) static MESSAGES: [Message; {}] = [",
        out_messages.len()
    )
    .unwrap();
    for (i, (name, special, fields)) in out_messages.iter().enumerate() {
        if fields.is_empty() {
            writeln!(text, "    m({name:?}, S::{special}, &[]), // {i}").unwrap();
            continue;
        }
        writeln!(text, "    m({name:?}, S::{special}, &[ // {i}").unwrap();
        for f in fields {
            writeln!(
                text,
                "        f({}, {:?}, {}, {}),{}",
                f.tag,
                f.json,
                f.shape,
                f.ty,
                if f.guessed { " // guessed" } else { "" }
            )
            .unwrap();
        }
        text.push_str("    ]),\n");
    }
    text.push_str("];\n\n");
    writeln!(
        text,
        "/// (apiVersion, kind, message), sorted.\npub(crate) static KINDS: [(&str, &str, u16); {}] = [",
        kinds.len()
    )
    .unwrap();
    for ((av, kind), key) in &kinds {
        writeln!(text, "    ({av:?}, {kind:?}, {}),", index[key.as_str()]).unwrap();
    }
    text.push_str("];\n\n");
    writeln!(
        text,
        "/// meta/v1 kinds accepted under any apiVersion, sorted.\npub(crate) static META_KINDS: [(&str, u16); {}] = [",
        meta_kinds.len()
    )
    .unwrap();
    for (kind, key) in &meta_kinds {
        writeln!(text, "    ({kind:?}, {}),", index[key.as_str()]).unwrap();
    }
    text.push_str("];\n");
    Generated {
        text,
        required_guesses,
        missing_required,
    }
}

fn generated() -> &'static Generated {
    static GENERATED: std::sync::OnceLock<Generated> = std::sync::OnceLock::new();
    GENERATED.get_or_init(generate)
}

#[test]
fn schema_is_current() {
    let g = generated();
    if std::env::var_os("FERRY_REGENERATE_PROTOBUF_SCHEMA").is_some() {
        std::fs::write(SCHEMA_PATH, &g.text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(SCHEMA_PATH).unwrap_or_default();
    assert!(
        committed == g.text,
        "src/protobuf/schema.rs is stale for the current k8s-pb/k8s-openapi; regenerate it with \
         FERRY_REGENERATE_PROTOBUF_SCHEMA=1 cargo test -p ferry-apiserver protobuf::schema_gen"
    );
}

#[test]
fn required_kinds_are_complete() {
    let g = generated();
    assert!(g.missing_required.is_empty(), "{:?}", g.missing_required);
    assert!(
        g.required_guesses.is_empty(),
        "fields of required kinds without a JSON name from k8s-openapi: {:#?}",
        g.required_guesses
    );
}

/// The sources are found without `cargo metadata`, which in a fresh cargo cache fails
/// offline (it wants every workspace member's and every platform's packages, not only those
/// this test's build downloaded); `FERRY_TEST_CARGO_HOME` checks another cache.
#[test]
fn sources_are_found_in_the_build_cache() {
    let home = std::env::var_os("FERRY_TEST_CARGO_HOME")
        .map(PathBuf::from)
        .or_else(cargo_home)
        .expect("a cargo home");
    for name in ["k8s-pb", "k8s-openapi"] {
        let (src, version) = registry_src(&home, name)
            .unwrap_or_else(|| panic!("{name} sources not found in the cargo cache"));
        assert!(src.join("lib.rs").is_file(), "{}", src.display());
        assert_eq!(Some(version), locked_version(name));
    }
}
