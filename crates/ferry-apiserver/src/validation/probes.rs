//! Container probes, as kube-apiserver's `validateProbe` checks them: one handler, non-negative
//! timers, a success threshold of 1 where only 1 makes sense, valid ports.

use serde_json::Value;

use crate::error::FieldCause;

const HANDLERS: [&str; 4] = ["exec", "httpGet", "tcpSocket", "grpc"];

/// Checks the probes of container `c` at `at` (`spec.containers[0]`); `init` for init
/// containers, which may not have probes unless they are restartable sidecars.
pub fn validate_container_probes(c: &Value, at: &str, init: bool, causes: &mut Vec<FieldCause>) {
    let sidecar = c["restartPolicy"].as_str() == Some("Always");
    for name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let probe = &c[name];
        if probe.is_null() {
            continue;
        }
        let field = format!("{at}.{name}");
        if init && !sidecar {
            causes.push(FieldCause::forbidden(
                field,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        validate_probe(probe, &field, name, causes);
    }
}

fn validate_probe(probe: &Value, at: &str, name: &str, causes: &mut Vec<FieldCause>) {
    let handlers: Vec<&str> = HANDLERS
        .into_iter()
        .filter(|h| !probe[*h].is_null())
        .collect();
    match handlers.as_slice() {
        [] => causes.push(FieldCause {
            field: at.to_string(),
            reason: "FieldValueRequired",
            message: "Required value: must specify a handler type".into(),
        }),
        [_] => {}
        [_, rest @ ..] => {
            for h in rest {
                causes.push(FieldCause::forbidden(
                    format!("{at}.{h}"),
                    "may not specify more than 1 handler type",
                ));
            }
        }
    }
    for field in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        if let Some(v) = probe[field].as_i64()
            && v < 0
        {
            causes.push(FieldCause::invalid(
                format!("{at}.{field}"),
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
    if name != "readinessProbe"
        && let Some(v) = probe["successThreshold"].as_i64()
        && v != 1
    {
        causes.push(FieldCause::invalid(
            format!("{at}.successThreshold"),
            v,
            "must be 1",
        ));
    }
    if !probe["terminationGracePeriodSeconds"].is_null() {
        let field = format!("{at}.terminationGracePeriodSeconds");
        if name == "readinessProbe" {
            causes.push(FieldCause::forbidden(
                field,
                "must not be set for readinessProbes",
            ));
        } else if let Some(v) = probe["terminationGracePeriodSeconds"].as_i64()
            && v <= 0
        {
            causes.push(FieldCause::invalid(field, v, "must be greater than 0"));
        }
    }
    let http = &probe["httpGet"];
    if !http.is_null() {
        port(&http["port"], &format!("{at}.httpGet.port"), causes);
        if let Some(s) = http["scheme"].as_str()
            && !["HTTP", "HTTPS"].contains(&s)
        {
            causes.push(FieldCause::not_supported(
                format!("{at}.httpGet.scheme"),
                s,
                &["HTTP", "HTTPS"],
            ));
        }
    }
    let tcp = &probe["tcpSocket"];
    if !tcp.is_null() {
        port(&tcp["port"], &format!("{at}.tcpSocket.port"), causes);
    }
    let grpc = &probe["grpc"];
    if !grpc.is_null()
        && !grpc["port"]
            .as_i64()
            .is_some_and(|p| (1..=65535).contains(&p))
    {
        causes.push(FieldCause::invalid(
            format!("{at}.grpc.port"),
            &grpc["port"],
            "must be between 1 and 65535, inclusive",
        ));
    }
    let exec = &probe["exec"];
    if !exec.is_null() && exec["command"].as_array().is_none_or(Vec::is_empty) {
        causes.push(FieldCause::required(format!("{at}.exec.command")));
    }
}

/// A port number (1–65535) or an IANA service name (`http`, `web-2`).
fn port(value: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    match value {
        Value::Number(n) if n.as_i64().is_some_and(|p| (1..=65535).contains(&p)) => {}
        Value::Number(n) => causes.push(FieldCause::invalid(
            field,
            n,
            "must be between 1 and 65535, inclusive",
        )),
        Value::String(s) => {
            if let Some(problem) = service_name_problem(s) {
                causes.push(FieldCause::invalid(field, s, problem));
            }
        }
        Value::Null => causes.push(FieldCause::required(field)),
        other => causes.push(FieldCause::invalid(
            field,
            other,
            "must be a number or a name",
        )),
    }
}

/// Why `s` is not an IANA service name (`IsValidPortName`), if it is not.
fn service_name_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() || s.len() > 15 {
        return Some("must be no more than 15 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if s.contains("--") {
        return Some("must not contain consecutive hyphens");
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must not begin or end with a hyphen");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(c: Value, init: bool) -> Vec<(String, String)> {
        let mut causes = Vec::new();
        validate_container_probes(&c, "spec.containers[0]", init, &mut causes);
        causes.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn probes_are_checked_as_kubernetes_does() {
        let ok = json!({
            "livenessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5},
            "readinessProbe": {"httpGet": {"port": "http", "scheme": "HTTP"}, "successThreshold": 3},
            "startupProbe": {"tcpSocket": {"port": 8080}},
        });
        assert_eq!(check(ok, false), vec![]);
        let bad = json!({
            "livenessProbe": {"successThreshold": 2, "periodSeconds": -1},
            "readinessProbe": {"tcpSocket": {"port": 70000}, "exec": {"command": ["x"]}, "terminationGracePeriodSeconds": 3},
            "startupProbe": {"httpGet": {"port": "Not_A_Name", "scheme": "FTP"}},
        });
        let found = check(bad, false);
        let at = "spec.containers[0]";
        for (field, message) in [
            (
                "livenessProbe",
                "Required value: must specify a handler type",
            ),
            (
                "livenessProbe.periodSeconds",
                "Invalid value: \"-1\": must be greater than or equal to 0",
            ),
            (
                "livenessProbe.successThreshold",
                "Invalid value: \"2\": must be 1",
            ),
            (
                "readinessProbe.tcpSocket",
                "Forbidden: may not specify more than 1 handler type",
            ),
            (
                "readinessProbe.terminationGracePeriodSeconds",
                "Forbidden: must not be set for readinessProbes",
            ),
            (
                "readinessProbe.tcpSocket.port",
                "Invalid value: \"70000\": must be between 1 and 65535, inclusive",
            ),
        ] {
            let field = format!("{at}.{field}");
            assert!(
                found.iter().any(|(f, m)| *f == field && m == message),
                "{field}: {message} not in {found:?}"
            );
        }
        assert!(
            found
                .iter()
                .any(|(f, _)| f.ends_with("startupProbe.httpGet.port"))
        );
        assert!(
            found
                .iter()
                .any(|(f, _)| f.ends_with("startupProbe.httpGet.scheme"))
        );
        let init = json!({"readinessProbe": {"exec": {"command": ["true"]}}});
        assert_eq!(
            check(init.clone(), true).len(),
            1,
            "init containers have no probes"
        );
        let mut sidecar = init;
        sidecar["restartPolicy"] = "Always".into();
        assert_eq!(check(sidecar, true), vec![]);
    }
}
