//! A container's environment and command line, with Kubernetes semantics: `envFrom`, `env`
//! with `value` or `valueFrom` (fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef),
//! and `$(VAR)` expansion in env values, `command` and `args`.

use std::collections::{BTreeMap, HashMap};

use ferry_api::quantity;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a container's environment cannot be built (the kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// Expands `$(VAR)` references as Kubernetes does: a defined variable is replaced by its value,
/// an undefined one is left as written, `$$` is an escaped `$`, and any other `$` is literal.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // A lone `$` followed by anything else stays as written.
                    let ch = rest.chars().next().expect("rest is not empty");
                    out.push('$');
                    out.push(ch);
                    ch.len_utf8()
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// The ConfigMaps and Secrets a pod's environment refers to (`None`: does not exist).
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    /// ConfigMaps by name.
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    /// Secrets by name.
    pub secrets: HashMap<String, Option<Secret>>,
    /// The Services whose variables the containers get ([`service_env`]): those of the
    /// pod's namespace (with `enableServiceLinks`) and `default/kubernetes`.
    pub services: Vec<Service>,
    /// The PersistentVolumeClaims the pod's volumes name, by claim name, with the volume each
    /// is bound to ([`crate::pod::volumes::ClaimSource`]).
    pub claims: HashMap<String, crate::pod::volumes::ClaimSource>,
}

impl EnvSources {
    /// Names of the ConfigMaps and Secrets `container`'s environment refers to.
    pub fn referenced(container: &Container) -> (Vec<String>, Vec<String>) {
        let mut cms = Vec::new();
        let mut secrets = Vec::new();
        for from in container.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.push(r.name.clone());
            }
        }
        for e in container.env.iter().flatten() {
            if let Some(src) = &e.value_from {
                if let Some(r) = &src.config_map_key_ref {
                    cms.push(r.name.clone());
                }
                if let Some(r) = &src.secret_key_ref {
                    secrets.push(r.name.clone());
                }
            }
        }
        cms.sort();
        cms.dedup();
        secrets.sort();
        secrets.dedup();
        (cms, secrets)
    }
}

/// What the environment needs to know about the node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The node's IP (also the pod IP: pods share the host network).
    pub node_ip: String,
    /// Allocatable CPU in millicores (the value of an unset CPU limit).
    pub cpu_milli: i64,
    /// Allocatable memory in bytes (the value of an unset memory limit).
    pub memory_bytes: i64,
    /// The pod's own IP when it has a network of its own (else `node_ip` is the pod's).
    pub pod_ip: Option<String>,
}

/// Value of a `fieldRef` path for `pod`.
pub fn field_ref(pod: &Pod, path: &str, node: &NodeFacts) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let in_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    if let Some(key) = subscript(path, "metadata.labels") {
        return Ok(in_map(&meta.labels, &key));
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Ok(in_map(&meta.annotations, &key));
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => {
            node.pod_ip.clone().unwrap_or_else(|| node.node_ip.clone())
        }
        "status.hostIP" | "status.hostIPs" => node.node_ip.clone(),
        other => {
            return Err(EnvError(format!(
                "unsupported fieldRef {other:?}: use metadata.name, metadata.namespace, metadata.uid, \
                 metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, \
                 spec.serviceAccountName, status.podIP or status.hostIP"
            )));
        }
    })
}

/// `metadata.labels['key']` → `key`.
fn subscript(path: &str, prefix: &str) -> Option<String> {
    let rest = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    let key = rest
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))?;
    Some(key.to_string())
}

/// Value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, …) for `container`.
pub fn resource_field_ref(
    container: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    node: &NodeFacts,
) -> Result<String, EnvError> {
    let bad = |e: quantity::QuantityError| EnvError(format!("resourceFieldRef {resource}: {e}"));
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| EnvError(format!("unsupported resourceFieldRef {resource:?}")))?;
    let res = container.resources.as_ref();
    let limit = res
        .and_then(|r| r.limits.as_ref())
        .and_then(|m| m.get(name));
    let request = res
        .and_then(|r| r.requests.as_ref())
        .and_then(|m| m.get(name));
    let chosen = match kind {
        "limits" => limit,
        "requests" => request.or(limit),
        _ => {
            return Err(EnvError(format!(
                "unsupported resourceFieldRef {resource:?}"
            )));
        }
    };
    // Values in thousandths, so that "1m" divisors and CPU fractions are exact.
    let value_milli: i128 = match (name, chosen) {
        (_, Some(q)) => i128::from(quantity::parse_milli(&q.0).map_err(bad)?),
        ("cpu", None) if kind == "limits" => i128::from(node.cpu_milli),
        ("memory", None) if kind == "limits" => i128::from(node.memory_bytes) * 1000,
        ("cpu" | "memory" | "ephemeral-storage", None) => 0,
        _ => {
            return Err(EnvError(format!(
                "unsupported resourceFieldRef {resource:?}"
            )));
        }
    };
    let divisor_milli: i128 = match divisor {
        Some(d) => i128::from(quantity::parse_milli(&d.0).map_err(bad)?),
        None => 1000,
    };
    if divisor_milli <= 0 {
        return Err(EnvError(format!(
            "resourceFieldRef {resource}: the divisor must be positive"
        )));
    }
    // Kubernetes rounds up.
    let value = (value_milli + divisor_milli - 1).div_euclid(divisor_milli);
    Ok(value.to_string())
}

/// True for names Kubernetes accepts as environment variable names.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('=')
        && !name.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_graphic())
}

/// Environment variables in order.
pub type EnvVars = Vec<(String, String)>;

/// Builds the container's environment, in order (later definitions replace earlier ones).
/// Returns the variables and warnings (skipped invalid keys).
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    sources: &EnvSources,
    node: &NodeFacts,
) -> Result<(EnvVars, Vec<String>), EnvError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut warnings = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| match env
        .iter_mut()
        .find(|(n, _)| *n == k)
    {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    };
    // Service variables first: the container's own override them and may refer to them.
    for (k, v) in service_env(pod, &sources.services) {
        set(&mut env, k, v);
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name).cloned().flatten() {
                Some(cm) => {
                    pairs.extend(cm.data.unwrap_or_default());
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name).cloned().flatten() {
                Some(s) => pairs.extend(secret_pairs(&s)),
                None if r.optional == Some(true) => {}
                None => return Err(EnvError(format!("secret {:?} not found", r.name))),
            }
        }
        for (k, v) in pairs {
            let name = format!("{prefix}{k}");
            if valid_env_name(&name) {
                set(&mut env, name, v);
            } else {
                warnings.push(format!(
                    "skipped invalid environment variable name {name:?} from envFrom"
                ));
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_ref(pod, &f.field_path, node)?
            } else if let Some(r) = &src.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    None | Some("") => container,
                    Some(name) => {
                        all_containers(pod)
                            .find(|c| c.name == name)
                            .ok_or_else(|| {
                                EnvError(format!(
                                    "resourceFieldRef names unknown container {name:?}"
                                ))
                            })?
                    }
                };
                resource_field_ref(target, &r.resource, r.divisor.as_ref(), node)?
            } else if let Some(r) = &src.config_map_key_ref {
                match sources.config_maps.get(&r.name).cloned().flatten() {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(EnvError(format!(
                                "couldn't find key {} in ConfigMap {}",
                                r.key, r.name
                            )));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(EnvError(format!("configmap {:?} not found", r.name))),
                }
            } else if let Some(r) = &src.secret_key_ref {
                match sources.secrets.get(&r.name).cloned().flatten() {
                    Some(s) => match secret_pairs(&s).into_iter().find(|(k, _)| *k == r.key) {
                        Some((_, v)) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(EnvError(format!(
                                "couldn't find key {} in Secret {}",
                                r.key, r.name
                            )));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(EnvError(format!("secret {:?} not found", r.name))),
                }
            } else {
                return Err(EnvError(format!(
                    "environment variable {:?} has an unsupported valueFrom source",
                    e.name
                )));
            }
        } else {
            let defined = env.clone();
            expand(e.value.as_deref().unwrap_or(""), |name| {
                defined
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok((env, warnings))
}

/// Whether the pod gets the variables of its namespace's Services (`enableServiceLinks`,
/// default true).
pub fn service_links(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true)
}

/// The Service variables the kubelet gives a container: for every Service with a cluster
/// IP in the pod's namespace (when [`service_links`]) and always for `default/kubernetes`,
/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORT NAME>` and the
/// Docker-link variables `<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`.
pub fn service_env(pod: &Pod, services: &[Service]) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = service_links(pod);
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let svc_ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let kubernetes = svc_ns == "default" && name == "kubernetes";
        if !(kubernetes || (links && svc_ns == ns)) {
            continue;
        }
        // The kubernetes Service wins over a same-named one of the pod's namespace.
        if !kubernetes && chosen.contains_key(&name) {
            continue;
        }
        chosen.insert(name, svc);
    }
    let mut out = Vec::new();
    for (name, svc) in chosen {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let prefix = name.to_uppercase().replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        if let Some(first) = ports.first() {
            out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        }
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let pn = pn.to_uppercase().replace('-', "_");
                out.push((format!("{prefix}_SERVICE_PORT_{pn}"), p.port.to_string()));
            }
        }
        if let Some(first) = ports.first() {
            let proto = first.protocol.as_deref().unwrap_or("TCP").to_lowercase();
            out.push((
                format!("{prefix}_PORT"),
                format!("{proto}://{ip}:{}", first.port),
            ));
        }
        for p in ports {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let base = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((base.clone(), format!("{lower}://{ip}:{}", p.port)));
            out.push((format!("{base}_PROTO"), lower));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// A Secret's data as strings (binary values are decoded lossily).
fn secret_pairs(secret: &Secret) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        pairs.push((k.clone(), v.clone()));
    }
    pairs
}

/// Init containers then containers.
pub fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// The command line: `command` + `args`, each `$(VAR)`-expanded with `env`.
/// `Err` when there is neither (there is no image entrypoint to fall back to).
pub fn command_line(
    container: &Container,
    env: &[(String, String)],
) -> Result<Vec<String>, EnvError> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    if command.is_empty() {
        return Err(EnvError(format!(
            "container {:?} has no command: Ferry runs containers as host processes and cannot use an \
             image's entrypoint, so set `command` (and optionally `args`)",
            container.name
        )));
    }
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    Ok(command
        .iter()
        .chain(args.iter())
        .map(|s| expand(s, lookup))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
        SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let cases = [
            ("$(A)", "alpha"),
            ("x$(A)y$(A)", "xalphayalpha"),
            ("$(UNDEFINED)", "$(UNDEFINED)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$alpha"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("cost: 5$", "cost: 5$"),
            ("$(EMPTY)!", "!"),
            ("$é$(A)", "$éalpha"),
            ("", ""),
            ("$", "$"),
            ("$()", "$()"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, lookup), want, "input {input:?}");
        }
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            node_ip: "10.0.0.7".into(),
            cpu_milli: 8000,
            memory_bytes: 16 << 30,
            pod_ip: None,
        }
    }

    fn env_var(name: &str, value: Option<&str>, from: Option<EnvVarSource>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(Into::into),
            value_from: from,
        }
    }

    fn field(path: &str) -> Option<EnvVarSource> {
        Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        })
    }

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p1".into()),
                namespace: Some("ns1".into()),
                uid: Some("uid-1".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some([("team".to_string(), "ml".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                containers: vec![container],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn resolves_field_refs_values_and_references() {
        let c = Container {
            name: "main".into(),
            command: Some(vec!["echo".into(), "$(NAME)".into()]),
            args: Some(vec![
                "$(GREETING)".into(),
                "$$(NAME)".into(),
                "$(MISSING)".into(),
            ]),
            env: Some(vec![
                env_var("NAME", None, field("metadata.name")),
                env_var("NS", None, field("metadata.namespace")),
                env_var("UID", None, field("metadata.uid")),
                env_var("APP", None, field("metadata.labels['app']")),
                env_var("TEAM", None, field("metadata.annotations['team']")),
                env_var("NODE", None, field("spec.nodeName")),
                env_var("SA", None, field("spec.serviceAccountName")),
                env_var("POD_IP", None, field("status.podIP")),
                env_var("HOST_IP", None, field("status.hostIP")),
                env_var(
                    "GREETING",
                    Some("hi $(NAME) in $(NS), later $(LATER)"),
                    None,
                ),
                env_var("LATER", Some("x"), None),
            ]),
            ..Default::default()
        };
        let p = pod(c.clone());
        let (env, warnings) = resolve_env(&p, &c, &EnvSources::default(), &facts()).unwrap();
        assert!(warnings.is_empty());
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("NAME"), "p1");
        assert_eq!(get("NS"), "ns1");
        assert_eq!(get("UID"), "uid-1");
        assert_eq!(get("APP"), "web");
        assert_eq!(get("TEAM"), "ml");
        assert_eq!(get("NODE"), "node-a");
        assert_eq!(get("SA"), "default");
        assert_eq!(get("POD_IP"), "10.0.0.7");
        assert_eq!(get("HOST_IP"), "10.0.0.7");
        assert_eq!(
            get("GREETING"),
            "hi p1 in ns1, later $(LATER)",
            "only earlier variables expand"
        );
        let argv = command_line(&c, &env).unwrap();
        assert_eq!(
            argv,
            [
                "echo",
                "p1",
                "hi p1 in ns1, later $(LATER)",
                "$(NAME)",
                "$(MISSING)"
            ]
        );
    }

    #[test]
    fn unsupported_field_paths_are_errors() {
        let c = Container {
            name: "c".into(),
            env: Some(vec![env_var("X", None, field("spec.containers"))]),
            ..Default::default()
        };
        let err = resolve_env(&pod(c.clone()), &c, &EnvSources::default(), &facts()).unwrap_err();
        assert!(err.0.contains("unsupported fieldRef"), "{err}");
    }

    #[test]
    fn no_command_is_a_clear_error() {
        let c = Container {
            name: "c".into(),
            args: Some(vec!["x".into()]),
            ..Default::default()
        };
        let err = command_line(&c, &[]).unwrap_err();
        assert!(err.0.contains("has no command"), "{err}");
    }

    #[test]
    fn config_maps_and_secrets() {
        let cm = ConfigMap {
            data: Some(
                [
                    ("LEVEL".to_string(), "debug".to_string()),
                    ("bad-key".to_string(), "x".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let secret = Secret {
            data: Some([("token".to_string(), ByteString(b"s3cret".to_vec()))].into()),
            ..Default::default()
        };
        let mut sources = EnvSources::default();
        sources.config_maps.insert("settings".into(), Some(cm));
        sources.secrets.insert("creds".into(), Some(secret));
        sources.config_maps.insert("gone".into(), None);
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".into(),
                    optional: None,
                }),
                prefix: Some("APP_".into()),
                secret_ref: None,
            }]),
            env: Some(vec![
                env_var(
                    "TOKEN",
                    None,
                    Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            key: "token".into(),
                            name: "creds".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                ),
                env_var(
                    "OPT",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            key: "k".into(),
                            name: "gone".into(),
                            optional: Some(true),
                        }),
                        ..Default::default()
                    }),
                ),
            ]),
            ..Default::default()
        };
        let (env, warnings) = resolve_env(&pod(c.clone()), &c, &sources, &facts()).unwrap();
        assert_eq!(
            env,
            vec![
                ("APP_LEVEL".to_string(), "debug".to_string()),
                ("APP_bad-key".to_string(), "x".to_string()),
                ("TOKEN".to_string(), "s3cret".to_string())
            ]
        );
        assert!(
            warnings.is_empty(),
            "dashes are valid in Kubernetes env names: {warnings:?}"
        );
        let (cms, secrets) = EnvSources::referenced(&c);
        assert_eq!(cms, ["gone", "settings"]);
        assert_eq!(secrets, ["creds"]);

        let mut missing = c.clone();
        missing.env = Some(vec![env_var(
            "X",
            None,
            Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    key: "k".into(),
                    name: "gone".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        )]);
        let err = resolve_env(&pod(missing.clone()), &missing, &sources, &facts()).unwrap_err();
        assert!(err.0.contains("configmap \"gone\" not found"), "{err}");
    }

    #[test]
    fn resource_field_refs_round_up_and_default_to_the_node() {
        let c = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: Some([("cpu".to_string(), Quantity("1500m".into()))].into()),
                requests: Some([("memory".to_string(), Quantity("1Gi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = facts();
        assert_eq!(resource_field_ref(&c, "limits.cpu", None, &f).unwrap(), "2");
        assert_eq!(
            resource_field_ref(&c, "limits.cpu", Some(&Quantity("1m".into())), &f).unwrap(),
            "1500"
        );
        assert_eq!(
            resource_field_ref(&c, "requests.cpu", None, &f).unwrap(),
            "2"
        );
        assert_eq!(
            resource_field_ref(&c, "requests.memory", Some(&Quantity("1Mi".into())), &f).unwrap(),
            "1024"
        );
        assert_eq!(
            resource_field_ref(&c, "limits.memory", None, &f).unwrap(),
            (16u64 << 30).to_string()
        );
        assert!(resource_field_ref(&c, "limits.gpu", None, &f).is_err());
        assert!(resource_field_ref(&c, "limits.cpu", Some(&Quantity("0".into())), &f).is_err());
        let via_env = Container {
            env: Some(vec![env_var(
                "CPUS",
                None,
                Some(EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: None,
                        divisor: None,
                        resource: "limits.cpu".into(),
                    }),
                    ..Default::default()
                }),
            )]),
            ..c
        };
        let (env, _) =
            resolve_env(&pod(via_env.clone()), &via_env, &EnvSources::default(), &f).unwrap();
        assert_eq!(env, vec![("CPUS".to_string(), "2".to_string())]);
    }

    #[test]
    fn service_variables_as_the_kubelet_gives_them() {
        let svc = |ns: &str, name: &str, ip: &str| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": [
                    {"name": "https", "port": 443, "protocol": "TCP"},
                    {"name": "dns-udp", "port": 53, "protocol": "UDP"}]}
            }))
            .unwrap()
        };
        let services = vec![
            svc("default", "kubernetes", "10.96.0.1"),
            svc("ns", "my-db", "10.96.0.7"),
            svc("ns", "headless", "None"),
            svc("other", "far", "10.96.0.8"),
        ];
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": []}
        }))
        .unwrap();
        let env: HashMap<String, String> = service_env(&p, &services).into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(env["MY_DB_SERVICE_HOST"], "10.96.0.7");
        assert_eq!(env["MY_DB_SERVICE_PORT_DNS_UDP"], "53");
        assert_eq!(env["MY_DB_PORT_53_UDP"], "udp://10.96.0.7:53");
        assert_eq!(env["MY_DB_PORT_53_UDP_ADDR"], "10.96.0.7");
        assert!(
            !env.keys()
                .any(|k| k.starts_with("HEADLESS") || k.starts_with("FAR"))
        );
        p.spec.as_mut().unwrap().enable_service_links = Some(false);
        let env: HashMap<String, String> = service_env(&p, &services).into_iter().collect();
        assert!(env.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!env.contains_key("MY_DB_SERVICE_HOST"));
    }
}
