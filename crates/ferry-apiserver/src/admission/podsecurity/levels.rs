//! The Pod Security Standards as pure checks (no I/O), worded as Kubernetes' Pod Security
//! Admission words them: each check reads a pod's metadata and spec and answers a forbidden
//! reason and detail, such as `privileged` / `container "c" must not set
//! securityContext.privileged=true`. `baseline` runs the baseline checks; `restricted` adds
//! its own and replaces the baseline checks it tightens (capabilities, seccomp, volumes).

use std::collections::BTreeSet;

use serde_json::Value;

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations are refused.
    Baseline,
    /// Hardened, as current best practice.
    Restricted,
}

impl Level {
    /// The level of a label value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    /// The label value of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// Whether a `-version` label value is valid: `latest` or `v1.<minor>`.
pub fn valid_version(value: &str) -> bool {
    value == "latest"
        || value
            .strip_prefix("v1.")
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
}

/// One failed check: the reason and its detail (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The check's ID (the order of violations in a message).
    pub id: &'static str,
    /// What is forbidden (`privileged`, `host namespaces`, …).
    pub reason: String,
    /// Which parts of the pod, and what they must (not) set.
    pub detail: String,
}

/// `reason (detail), reason (detail)`: the violations as PSA lists them in messages.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The capabilities a baseline container may add.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The sysctls a baseline pod may set.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The volume types a restricted pod may use.
pub const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The SELinux types a baseline pod may use.
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

fn pluralize(singular: &str, plural: &str, n: usize) -> String {
    if n == 1 { singular } else { plural }.to_string()
}

fn join_quote(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// The pod's containers in the order PSA visits them: init, regular, ephemeral.
fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect()
}

fn name(c: &Value) -> String {
    c["name"].as_str().unwrap_or_default().to_string()
}

fn violation(id: &'static str, reason: impl Into<String>, detail: impl Into<String>) -> Violation {
    Violation {
        id,
        reason: reason.into(),
        detail: detail.into(),
    }
}

/// Baseline: no privileged containers.
pub fn privileged(spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| c["securityContext"]["privileged"] == true)
        .map(name)
        .collect();
    (!bad.is_empty()).then(|| {
        violation(
            "privileged",
            "privileged",
            format!(
                "{} must not set securityContext.privileged=true",
                containers_phrase(&bad)
            ),
        )
    })
}

/// Baseline: no host network, PID or IPC namespace.
pub fn host_namespaces(spec: &Value) -> Option<Violation> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec[**k] == true)
        .map(|k| format!("{k}=true"))
        .collect();
    (!set.is_empty()).then(|| violation("hostNamespaces", "host namespaces", set.join(", ")))
}

/// Baseline: no hostPath volumes.
pub fn host_path_volumes(spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(name)
        .collect();
    (!bad.is_empty()).then(|| {
        violation(
            "hostPathVolumes",
            "hostPath volumes",
            format!(
                "{} {}",
                pluralize("volume", "volumes", bad.len()),
                join_quote(&bad)
            ),
        )
    })
}

/// Baseline: no host ports.
pub fn host_ports(spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut ports = Vec::new();
    for c in containers(spec) {
        let mut uses = false;
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(port) = p["hostPort"].as_i64().filter(|p| *p != 0) {
                uses = true;
                if !ports.contains(&port.to_string()) {
                    ports.push(port.to_string());
                }
            }
        }
        if uses {
            bad.push(name(c));
        }
    }
    (!bad.is_empty()).then(|| {
        violation(
            "hostPorts",
            "hostPort",
            format!(
                "{} {} {} {}",
                containers_phrase(&bad),
                pluralize("uses", "use", bad.len()),
                pluralize("hostPort", "hostPorts", ports.len()),
                ports.join(", ")
            ),
        )
    })
}

/// Baseline: added capabilities only from [`BASELINE_CAPABILITIES`].
pub fn capabilities_baseline(spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let mut found = false;
        for cap in c["securityContext"]["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !BASELINE_CAPABILITIES.contains(&cap) {
                found = true;
                caps.insert(cap.to_string());
            }
        }
        if found {
            bad.push(name(c));
        }
    }
    let caps: Vec<String> = caps.into_iter().collect();
    (!bad.is_empty()).then(|| {
        violation(
            "capabilities_baseline",
            "non-default capabilities",
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_phrase(&bad),
                join_quote(&caps)
            ),
        )
    })
}

/// Baseline: only the safe sysctls.
pub fn sysctls(spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = spec["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(String::from)
        .collect();
    (!bad.is_empty()).then(|| violation("sysctls", "forbidden sysctls", bad.join(", ")))
}

/// Baseline: `procMount` only `Default`.
pub fn proc_mount(spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut values = Vec::new();
    for c in containers(spec) {
        if let Some(m) = c["securityContext"]["procMount"].as_str()
            && m != "Default"
        {
            bad.push(name(c));
            if !values.contains(&m.to_string()) {
                values.push(m.to_string());
            }
        }
    }
    (!bad.is_empty()).then(|| {
        violation(
            "procMount",
            "procMount",
            format!(
                "{} must not set securityContext.procMount to {}",
                containers_phrase(&bad),
                join_quote(&values)
            ),
        )
    })
}

/// `pod and container "a"` / `pod` / `containers "a", "b"`: who set a forbidden value.
fn setters(pod: bool, names: &[String]) -> String {
    let mut parts = Vec::new();
    if pod {
        parts.push("pod".to_string());
    }
    if !names.is_empty() {
        parts.push(containers_phrase(names));
    }
    parts.join(" and ")
}

/// Baseline: SELinux type only a container type, no user or role.
pub fn selinux_options(spec: &Value) -> Option<Violation> {
    let mut problems = BTreeSet::new();
    let mut check = |o: &Value| -> bool {
        let mut bad = false;
        if let Some(t) = o["type"].as_str()
            && !SELINUX_TYPES.contains(&t)
        {
            problems.insert(format!("type {t:?}"));
            bad = true;
        }
        for field in ["user", "role"] {
            if let Some(v) = o[field].as_str().filter(|v| !v.is_empty()) {
                problems.insert(format!("{field} {v:?}"));
                bad = true;
            }
        }
        bad
    };
    let pod = check(&spec["securityContext"]["seLinuxOptions"]);
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| check(&c["securityContext"]["seLinuxOptions"]))
        .map(name)
        .collect();
    if !pod && bad.is_empty() {
        return None;
    }
    let problems: Vec<String> = problems.into_iter().collect();
    Some(violation(
        "seLinuxOptions",
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters(pod, &bad),
            problems.join("; ")
        ),
    ))
}

/// Baseline: no `Unconfined` AppArmor profile (field or annotation).
pub fn app_armor(metadata: &Value, spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    for (k, v) in metadata["annotations"].as_object().into_iter().flatten() {
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/") {
            let v = v.as_str().unwrap_or_default();
            if !(v.is_empty() || v == "runtime/default" || v.starts_with("localhost/")) {
                bad.push(format!("{k}={v:?}"));
            }
        }
    }
    let unconfined = |sc: &Value| sc["appArmorProfile"]["type"] == "Unconfined";
    if unconfined(&spec["securityContext"]) {
        bad.push("pod=\"Unconfined\"".into());
    }
    for c in containers(spec) {
        if unconfined(&c["securityContext"]) {
            bad.push(format!("container {:?}=\"Unconfined\"", name(c)));
        }
    }
    (!bad.is_empty()).then(|| {
        violation(
            "appArmorProfile",
            pluralize(
                "forbidden AppArmor profile",
                "forbidden AppArmor profiles",
                bad.len(),
            ),
            bad.join(", "),
        )
    })
}

/// Who sets the seccomp profile type `Unconfined`.
fn seccomp_unconfined(spec: &Value) -> Option<String> {
    let unconfined = |sc: &Value| sc["seccompProfile"]["type"] == "Unconfined";
    let pod = unconfined(&spec["securityContext"]);
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| unconfined(&c["securityContext"]))
        .map(name)
        .collect();
    (pod || !bad.is_empty()).then(|| {
        format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            setters(pod, &bad)
        )
    })
}

/// Baseline: no `Unconfined` seccomp profile.
pub fn seccomp_baseline(spec: &Value) -> Option<Violation> {
    seccomp_unconfined(spec).map(|d| violation("seccompProfile_baseline", "seccompProfile", d))
}

/// Baseline: no Windows host processes.
pub fn host_process(spec: &Value) -> Option<Violation> {
    let set = |sc: &Value| sc["windowsOptions"]["hostProcess"] == true;
    let pod = set(&spec["securityContext"]);
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| set(&c["securityContext"]))
        .map(name)
        .collect();
    (pod || !bad.is_empty()).then(|| {
        violation(
            "windowsHostProcess",
            "hostProcess",
            format!(
                "{} must not set securityContext.windowsOptions.hostProcess=true",
                setters(pod, &bad)
            ),
        )
    })
}

/// Restricted: only the volume types of [`RESTRICTED_VOLUMES`].
pub fn restricted_volumes(spec: &Value) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = Vec::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let Some(fields) = v.as_object() else {
            continue;
        };
        let kinds: Vec<&String> = fields
            .iter()
            .filter(|(k, val)| *k != "name" && !val.is_null())
            .map(|(k, _)| k)
            .filter(|k| !RESTRICTED_VOLUMES.contains(&k.as_str()))
            .collect();
        if !kinds.is_empty() {
            bad.push(name(v));
            for k in kinds {
                if !types.contains(k) {
                    types.push(k.clone());
                }
            }
        }
    }
    (!bad.is_empty()).then(|| {
        violation(
            "restrictedVolumes",
            "restricted volume types",
            format!(
                "{} {} {} {} {}",
                pluralize("volume", "volumes", bad.len()),
                join_quote(&bad),
                pluralize("uses", "use", bad.len()),
                pluralize(
                    "restricted volume type",
                    "restricted volume types",
                    types.len()
                ),
                join_quote(&types)
            ),
        )
    })
}

/// Restricted: `allowPrivilegeEscalation: false` on every container.
pub fn allow_privilege_escalation(spec: &Value) -> Option<Violation> {
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| c["securityContext"]["allowPrivilegeEscalation"] != false)
        .map(name)
        .collect();
    (!bad.is_empty()).then(|| {
        violation(
            "allowPrivilegeEscalation",
            "allowPrivilegeEscalation != false",
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_phrase(&bad)
            ),
        )
    })
}

/// Restricted: every container drops `ALL` and adds at most `NET_BIND_SERVICE`.
pub fn capabilities_restricted(spec: &Value) -> Option<Violation> {
    let mut no_drop = Vec::new();
    let mut adding = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let capabilities = &c["securityContext"]["capabilities"];
        let drops_all = capabilities["drop"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d == "ALL");
        if !drops_all {
            no_drop.push(name(c));
        }
        let mut found = false;
        for cap in capabilities["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|cap| *cap != "NET_BIND_SERVICE")
        {
            found = true;
            caps.insert(cap.to_string());
        }
        if found {
            adding.push(name(c));
        }
    }
    let mut details = Vec::new();
    if !no_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&no_drop)
        ));
    }
    if !adding.is_empty() {
        let caps: Vec<String> = caps.into_iter().collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&caps)
        ));
    }
    (!details.is_empty()).then(|| {
        violation(
            "capabilities_restricted",
            "unrestricted capabilities",
            details.join("; "),
        )
    })
}

/// Restricted: `runAsNonRoot: true` for the pod or every container, and false nowhere.
pub fn run_as_non_root(spec: &Value) -> Option<Violation> {
    let pod = &spec["securityContext"]["runAsNonRoot"];
    let mut details = Vec::new();
    if *pod == false {
        details.push("pod must not set securityContext.runAsNonRoot=false".to_string());
    }
    let mut explicit_false = Vec::new();
    let mut unset = Vec::new();
    for c in containers(spec) {
        match &c["securityContext"]["runAsNonRoot"] {
            Value::Bool(false) => explicit_false.push(name(c)),
            Value::Bool(true) => {}
            _ if *pod != true => unset.push(name(c)),
            _ => {}
        }
    }
    if !explicit_false.is_empty() {
        details.push(format!(
            "{} must not set securityContext.runAsNonRoot=false",
            containers_phrase(&explicit_false)
        ));
    }
    if !unset.is_empty() {
        details.push(format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&unset)
        ));
    }
    (!details.is_empty())
        .then(|| violation("runAsNonRoot", "runAsNonRoot != true", details.join("; ")))
}

/// Restricted: no `runAsUser: 0`.
pub fn run_as_user(spec: &Value) -> Option<Violation> {
    let mut details = Vec::new();
    if spec["securityContext"]["runAsUser"] == 0 {
        details.push("pod must not set runAsUser=0".to_string());
    }
    let bad: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| c["securityContext"]["runAsUser"] == 0)
        .map(name)
        .collect();
    if !bad.is_empty() {
        details.push(format!(
            "{} must not set runAsUser=0",
            containers_phrase(&bad)
        ));
    }
    (!details.is_empty()).then(|| violation("runAsUser", "runAsUser=0", details.join("; ")))
}

/// Restricted: seccomp `RuntimeDefault` or `Localhost` for the pod or every container.
pub fn seccomp_restricted(spec: &Value) -> Option<Violation> {
    let valid = |sc: &Value| {
        matches!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let mut details: Vec<String> = seccomp_unconfined(spec).into_iter().collect();
    let pod_valid = valid(&spec["securityContext"]);
    let unset: Vec<String> = containers(spec)
        .into_iter()
        .filter(|c| {
            let t = &c["securityContext"]["seccompProfile"]["type"];
            !pod_valid && t.is_null()
        })
        .map(name)
        .collect();
    if !unset.is_empty() {
        details.push(format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            containers_phrase(&unset)
        ));
    }
    (!details.is_empty()).then(|| {
        violation(
            "seccompProfile_restricted",
            "seccompProfile",
            details.join("; "),
        )
    })
}

/// The violations of a pod at `level`, in the order of the checks' IDs (as PSA lists them).
pub fn evaluate(level: Level, metadata: &Value, spec: &Value) -> Vec<Violation> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let mut out: Vec<Violation> = [
        privileged(spec),
        host_namespaces(spec),
        host_ports(spec),
        sysctls(spec),
        proc_mount(spec),
        selinux_options(spec),
        app_armor(metadata, spec),
        host_process(spec),
    ]
    .into_iter()
    .flatten()
    .collect();
    if level == Level::Baseline {
        out.extend(
            [
                host_path_volumes(spec),
                capabilities_baseline(spec),
                seccomp_baseline(spec),
            ]
            .into_iter()
            .flatten(),
        );
    } else {
        out.extend(
            [
                restricted_volumes(spec),
                allow_privilege_escalation(spec),
                capabilities_restricted(spec),
                run_as_non_root(spec),
                run_as_user(spec),
                seccomp_restricted(spec),
            ]
            .into_iter()
            .flatten(),
        );
    }
    out.sort_by(|a, b| a.id.cmp(b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(sc: Value) -> Value {
        json!({"containers": [{"name": "c", "securityContext": sc}]})
    }

    fn detail(v: Option<Violation>) -> String {
        let v = v.expect("a violation");
        format!("{} ({})", v.reason, v.detail)
    }

    /// A pod that passes `restricted`.
    fn compliant() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "data", "emptyDir": {}}]
        })
    }

    #[test]
    fn levels_and_versions_parse() {
        assert_eq!(Level::parse("restricted"), Some(Level::Restricted));
        assert_eq!(Level::parse("Restricted"), None);
        assert!(valid_version("latest") && valid_version("v1.29"));
        assert!(!valid_version("1.29") && !valid_version("v1.") && !valid_version("v2.0"));
    }

    #[test]
    fn privileged_check() {
        assert_eq!(
            detail(privileged(&one(json!({"privileged": true})))),
            "privileged (container \"c\" must not set securityContext.privileged=true)"
        );
        assert!(privileged(&one(json!({"privileged": false}))).is_none());
    }

    #[test]
    fn host_namespaces_check() {
        let spec = json!({"hostNetwork": true, "hostIPC": true, "containers": []});
        assert_eq!(
            detail(host_namespaces(&spec)),
            "host namespaces (hostNetwork=true, hostIPC=true)"
        );
    }

    #[test]
    fn host_path_check() {
        let spec = json!({"volumes": [{"name": "v", "hostPath": {"path": "/"}}, {"name": "e", "emptyDir": {}}]});
        assert_eq!(
            detail(host_path_volumes(&spec)),
            "hostPath volumes (volume \"v\")"
        );
        assert_eq!(
            detail(restricted_volumes(&spec)),
            "restricted volume types (volume \"v\" uses restricted volume type \"hostPath\")"
        );
    }

    #[test]
    fn host_ports_check() {
        let spec = json!({"containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]},
            {"name": "b", "ports": [{"containerPort": 81, "hostPort": 8081}]},
            {"name": "c", "ports": [{"containerPort": 82}]}]});
        assert_eq!(
            detail(host_ports(&spec)),
            "hostPort (containers \"a\", \"b\" use hostPorts 80, 8081)"
        );
    }

    #[test]
    fn capabilities_checks() {
        let spec = one(json!({"capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_RAW"]}}));
        assert_eq!(
            detail(capabilities_baseline(&spec)),
            "non-default capabilities (container \"c\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add)"
        );
        assert_eq!(
            detail(capabilities_restricted(&spec)),
            "unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]; container \"c\" must not include \"CHOWN\", \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add)"
        );
        let ok = one(json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}));
        assert!(capabilities_restricted(&ok).is_none());
    }

    #[test]
    fn sysctls_check() {
        let spec = json!({"securityContext": {"sysctls": [
            {"name": "net.ipv4.tcp_syncookies", "value": "1"},
            {"name": "kernel.msgmax", "value": "1"}]}});
        assert_eq!(detail(sysctls(&spec)), "forbidden sysctls (kernel.msgmax)");
    }

    #[test]
    fn proc_mount_check() {
        assert_eq!(
            detail(proc_mount(&one(json!({"procMount": "Unmasked"})))),
            "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")"
        );
        assert!(proc_mount(&one(json!({"procMount": "Default"}))).is_none());
    }

    #[test]
    fn selinux_check() {
        let spec = one(json!({"seLinuxOptions": {"type": "spc_t", "user": "root"}}));
        assert_eq!(
            detail(selinux_options(&spec)),
            "seLinuxOptions (container \"c\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user \"root\")"
        );
        assert!(
            selinux_options(&one(
                json!({"seLinuxOptions": {"type": "container_t", "level": "s0"}})
            ))
            .is_none()
        );
    }

    #[test]
    fn app_armor_check() {
        let meta = json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}});
        assert!(app_armor(&meta, &one(json!({}))).is_some());
        assert!(
            app_armor(
                &json!({}),
                &one(json!({"appArmorProfile": {"type": "Unconfined"}}))
            )
            .is_some()
        );
        assert!(
            app_armor(
                &json!({}),
                &one(json!({"appArmorProfile": {"type": "RuntimeDefault"}}))
            )
            .is_none()
        );
    }

    #[test]
    fn seccomp_checks() {
        let spec = json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [{"name": "c"}]});
        assert_eq!(
            detail(seccomp_baseline(&spec)),
            "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")"
        );
        assert_eq!(
            detail(seccomp_restricted(&one(json!({})))),
            "seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert!(
            seccomp_restricted(&one(json!({"seccompProfile": {"type": "Localhost"}}))).is_none()
        );
    }

    #[test]
    fn host_process_check() {
        assert!(host_process(&one(json!({"windowsOptions": {"hostProcess": true}}))).is_some());
    }

    #[test]
    fn privilege_escalation_check() {
        assert_eq!(
            detail(allow_privilege_escalation(&one(json!({})))),
            "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"
        );
    }

    #[test]
    fn run_as_checks() {
        assert_eq!(
            detail(run_as_non_root(&one(json!({})))),
            "runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)"
        );
        let spec = json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0},
            "containers": [{"name": "c", "securityContext": {"runAsNonRoot": false}}]});
        assert_eq!(
            detail(run_as_non_root(&spec)),
            "runAsNonRoot != true (container \"c\" must not set securityContext.runAsNonRoot=false)"
        );
        assert_eq!(
            detail(run_as_user(&spec)),
            "runAsUser=0 (pod must not set runAsUser=0)"
        );
    }

    #[test]
    fn levels_combine_checks_in_order() {
        assert!(evaluate(Level::Restricted, &json!({}), &compliant()).is_empty());
        let mut bad = compliant();
        bad["containers"][0]["securityContext"]["privileged"] = json!(true);
        bad["volumes"] = json!([{"name": "v", "hostPath": {"path": "/"}}]);
        assert_eq!(
            describe(&evaluate(Level::Baseline, &json!({}), &bad)),
            "hostPath volumes (volume \"v\"), privileged (container \"c\" must not set securityContext.privileged=true)"
        );
        assert_eq!(
            describe(&evaluate(Level::Restricted, &json!({}), &bad)),
            "privileged (container \"c\" must not set securityContext.privileged=true), restricted volume types (volume \"v\" uses restricted volume type \"hostPath\")"
        );
        // A plain pod passes baseline but not restricted.
        let plain = json!({"containers": [{"name": "c"}]});
        assert!(evaluate(Level::Baseline, &json!({}), &plain).is_empty());
        assert_eq!(evaluate(Level::Restricted, &json!({}), &plain).len(), 4);
        assert!(evaluate(Level::Privileged, &json!({}), &bad).is_empty());
    }
}
