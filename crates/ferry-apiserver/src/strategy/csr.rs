//! CertificateSigningRequests (`certificates.k8s.io/v1`), as kube-apiserver's registry keeps
//! them: the requester (`spec.username`, `uid`, `groups`, `extra`) is set by the server from
//! the authenticated user, never taken from the body; the spec never changes after creation;
//! `/approval` changes only the conditions (Approved, Denied) and `/status` everything in the
//! status but those (the signer's `certificate` and `Failed` condition).

use base64::Engine;
use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column, str_at};
use crate::auth::UserInfo;
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;

/// The strategy of CertificateSigningRequests.
pub struct CertificateSigningRequests;

/// The key usages Kubernetes accepts in `spec.usages`.
pub const VALID_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// Condition types of which a CSR holds at most one.
const UNIQUE_CONDITIONS: &[&str] = &["Approved", "Denied", "Failed"];

/// Condition types only `/approval` sets (and never removes).
const APPROVAL_CONDITIONS: &[&str] = &["Approved", "Denied"];

impl Strategy for CertificateSigningRequests {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin(
                "certificates.k8s.io",
                "v1",
                "certificatesigningrequests",
                "CertificateSigningRequest",
                false,
                &["csr"],
            )
            .with_status()
            .with_subresources(&["approval"]),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(
            info, object,
        )
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        // A new request has no status: approval and the certificate come later.
        if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
        Ok(())
    }

    fn prepare_for_create_by(&self, user: Option<&UserInfo>, object: &mut Value) {
        let spec = super::object_field(object, "spec");
        for field in ["username", "uid", "groups", "extra"] {
            spec.remove(field);
        }
        let Some(user) = user else { return };
        spec.insert("username".into(), json!(user.name));
        if !user.uid.is_empty() {
            spec.insert("uid".into(), json!(user.uid));
        }
        if !user.groups.is_empty() {
            spec.insert("groups".into(), json!(user.groups));
        }
        if !user.extra.is_empty() {
            spec.insert("extra".into(), json!(user.extra));
        }
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, old: &Value, new: &mut Value) {
        // Neither the spec nor the status changes through the main resource.
        super::keep_field(old, new, "spec");
        super::keep_field(old, new, "status");
    }

    fn prepare_for_status_update(&self, old: &Value, new: &mut Value) {
        let mut status = new.get("status").cloned().unwrap_or_else(|| json!({}));
        // Approval is `/approval`'s: the status keeps the old Approved and Denied conditions.
        let kept: Vec<Value> = conditions(&status)
            .into_iter()
            .filter(|c| !APPROVAL_CONDITIONS.contains(&str_at(c, "/type")))
            .chain(
                conditions(&old["status"])
                    .into_iter()
                    .filter(|c| APPROVAL_CONDITIONS.contains(&str_at(c, "/type"))),
            )
            .collect();
        set_conditions(&mut status, kept, &old["status"]);
        *new = old.clone();
        new["status"] = status;
    }

    fn prepare_for_approval_update(&self, old: &Value, new: &mut Value) {
        // Only the conditions change: the certificate and the rest stay as they were.
        let proposed = conditions(&new["status"]);
        *new = old.clone();
        let mut status = old.get("status").cloned().unwrap_or_else(|| json!({}));
        set_conditions(&mut status, proposed, &old["status"]);
        new["status"] = status;
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        let spec = &o["spec"];
        let request = spec["request"].as_str().unwrap_or_default();
        if request.is_empty() {
            causes.push(FieldCause::required("spec.request"));
        } else if let Err(why) = check_request(request) {
            causes.push(FieldCause::invalid("spec.request", "<request>", why));
        }
        let usages: Vec<&str> = spec["usages"]
            .as_array()
            .map(|u| u.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if usages.is_empty() {
            causes.push(FieldCause::required("spec.usages"));
        }
        for (i, usage) in usages.iter().enumerate() {
            let field = format!("spec.usages[{i}]");
            if !VALID_USAGES.contains(usage) {
                causes.push(FieldCause::not_supported(field, usage, VALID_USAGES));
            } else if usages[..i].contains(usage) {
                causes.push(FieldCause {
                    field,
                    reason: "FieldValueDuplicate",
                    message: format!("Duplicate value: {}", json!(usage)),
                });
            }
        }
        if let Some(seconds) = spec["expirationSeconds"].as_i64()
            && seconds < 600
        {
            causes.push(FieldCause::invalid(
                "spec.expirationSeconds",
                seconds,
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
        signer_name_problems(spec["signerName"].as_str().unwrap_or_default(), causes);
        validate_conditions(o, causes);
        if let Some(cert) = o["status"]["certificate"].as_str()
            && !cert.is_empty()
            && let Err(why) = check_certificate(cert)
        {
            causes.push(FieldCause::invalid(
                "status.certificate",
                "<certificate data>",
                why,
            ));
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        let types = |o: &Value| -> Vec<String> {
            conditions(&o["status"])
                .iter()
                .map(|c| str_at(c, "/type").to_string())
                .collect()
        };
        let new_types = types(new);
        for kept in APPROVAL_CONDITIONS {
            if types(old).iter().any(|t| t == kept) && !new_types.iter().any(|t| t == kept) {
                causes.push(FieldCause::forbidden(
                    "status.conditions",
                    format!("updates may not remove a condition of type \"{kept}\""),
                ));
            }
        }
        let old_cert = str_at(old, "/status/certificate");
        if !old_cert.is_empty() && str_at(new, "/status/certificate") != old_cert {
            causes.push(FieldCause::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            age_column(),
            Column::new("SignerName", "string", 0, "The signer of the request."),
            Column::new("Requestor", "string", 0, "Who asked."),
            Column::new("RequestedDuration", "string", 0, "The validity asked for."),
            Column::new("Condition", "string", 0, "Approval and issuance."),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let duration = o["spec"]["expirationSeconds"]
            .as_i64()
            .map(human_duration)
            .unwrap_or_else(|| "<none>".into());
        vec![
            json!(meta::name(o)),
            age(o),
            json!(str_at(o, "/spec/signerName")),
            json!(str_at(o, "/spec/username")),
            json!(duration),
            json!(condition_summary(o)),
        ]
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        &["spec.signerName"]
    }
}

/// The conditions of a status (empty when none).
fn conditions(status: &Value) -> Vec<Value> {
    status["conditions"].as_array().cloned().unwrap_or_default()
}

/// Sets `status.conditions`, filling in the timestamps the client left out (as
/// kube-apiserver's `populateConditionTimestamps`).
fn set_conditions(status: &mut Value, mut list: Vec<Value>, old_status: &Value) {
    let now = meta::now_time();
    let old = conditions(old_status);
    for c in &mut list {
        if !c.is_object() {
            continue;
        }
        if str_at(c, "/lastUpdateTime").is_empty() {
            c["lastUpdateTime"] = json!(now);
        }
        if str_at(c, "/lastTransitionTime").is_empty() {
            let before = old
                .iter()
                .find(|o| str_at(o, "/type") == str_at(c, "/type"))
                .filter(|o| str_at(o, "/status") == str_at(c, "/status"))
                .map(|o| str_at(o, "/lastTransitionTime").to_string())
                .filter(|t| !t.is_empty());
            c["lastTransitionTime"] = json!(before.unwrap_or_else(|| now.clone()));
        }
    }
    if !status.is_object() {
        *status = json!({});
    }
    if list.is_empty() {
        status.as_object_mut().map(|s| s.remove("conditions"));
    } else {
        status["conditions"] = Value::Array(list);
    }
}

fn validate_conditions(o: &Value, causes: &mut Vec<FieldCause>) {
    let list = conditions(&o["status"]);
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let t = str_at(c, "/type");
        let field = format!("status.conditions[{i}]");
        if t.is_empty() {
            causes.push(FieldCause::required(format!("{field}.type")));
            continue;
        }
        if UNIQUE_CONDITIONS.contains(&t) {
            if seen.contains(&t) {
                causes.push(FieldCause {
                    field: format!("{field}.type"),
                    reason: "FieldValueDuplicate",
                    message: format!("Duplicate value: {}", json!(t)),
                });
            }
            seen.push(t);
        }
        let status = str_at(c, "/status");
        if APPROVAL_CONDITIONS.contains(&t) {
            if status != "True" {
                causes.push(FieldCause::not_supported(
                    format!("{field}.status"),
                    status,
                    &["True"],
                ));
            }
        } else if !["True", "False", "Unknown"].contains(&status) {
            causes.push(FieldCause::not_supported(
                format!("{field}.status"),
                status,
                &["False", "True", "Unknown"],
            ));
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        causes.push(FieldCause::invalid(
            "status.conditions",
            "Approved",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
}

/// Checks that `request` (base64 of PEM, as `[]byte` travels in JSON) is a PEM certificate
/// request with a valid signature.
pub fn check_request(request: &str) -> Result<(), String> {
    let pem = decode_bytes(request)?;
    let der = pem_block(&pem, "CERTIFICATE REQUEST")
        .ok_or_else(|| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("x509: the request's signature does not verify: {e}"))
}

fn check_certificate(cert: &str) -> Result<(), String> {
    let pem = decode_bytes(cert)?;
    let der = pem_block(&pem, "CERTIFICATE")
        .ok_or_else(|| "must contain at least one CERTIFICATE PEM block".to_string())?;
    x509_parser::parse_x509_certificate(&der)
        .map(|_| ())
        .map_err(|e| format!("x509: malformed certificate: {e}"))
}

fn decode_bytes(b64: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("illegal base64 data: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "PEM block type must be CERTIFICATE REQUEST".into())
}

/// The DER of the first PEM block of `label` in `pem`.
fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    (block.label == label).then_some(block.contents)
}

/// Kubernetes' signer-name rule: `<fully qualified domain>/<path>`.
fn signer_name_problems(name: &str, causes: &mut Vec<FieldCause>) {
    const FIELD: &str = "spec.signerName";
    if name.is_empty() {
        causes.push(FieldCause::required(FIELD));
        return;
    }
    let Some((domain, path)) = name.split_once('/') else {
        causes.push(FieldCause::invalid(
            FIELD,
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return;
    };
    if path.is_empty() || path.contains('/') {
        causes.push(FieldCause::invalid(
            FIELD,
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return;
    }
    if !domain.contains('.') || crate::validation::dns_subdomain_problem(domain).is_some() {
        causes.push(FieldCause::invalid(
            FIELD,
            name,
            "should be a domain with at least two segments separated by dots",
        ));
    }
}

/// `Approved,Issued`, `Denied`, `Pending`… as kubectl prints a CSR's condition.
fn condition_summary(o: &Value) -> String {
    let mut parts: Vec<&str> = conditions(&o["status"])
        .iter()
        .map(|c| match str_at(c, "/type") {
            "Approved" => "Approved",
            "Denied" => "Denied",
            "Failed" => "Failed",
            _ => "",
        })
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        parts.push("Pending");
    }
    let mut summary = parts.join(",");
    if !str_at(o, "/status/certificate").is_empty() {
        summary.push_str(",Issued");
    }
    summary
}

fn human_duration(seconds: i64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_b64() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let csr = params.serialize_request(&key).expect("csr");
        base64::engine::general_purpose::STANDARD.encode(csr.pem().expect("pem"))
    }

    fn csr(request: &str, usages: Value) -> Value {
        json!({
            "metadata": {"name": "x"},
            "spec": {"request": request, "signerName": "kubernetes.io/kube-apiserver-client", "usages": usages},
        })
    }

    fn problems(o: &Value) -> Vec<String> {
        let mut causes = Vec::new();
        CertificateSigningRequests.validate(o, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_signed_request_with_known_usages_is_valid() {
        assert!(problems(&csr(&request_b64(), json!(["client auth"]))).is_empty());
    }

    #[test]
    fn bad_requests_usages_and_signers_are_named() {
        let garbage = base64::engine::general_purpose::STANDARD.encode("not pem");
        let p = problems(&csr(&garbage, json!([])));
        assert!(
            p.iter()
                .any(|p| p.contains("PEM block type must be CERTIFICATE REQUEST")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p == "spec.usages: Required value"),
            "{p:?}"
        );
        let p = problems(&csr(
            &request_b64(),
            json!(["client auth", "flying", "client auth"]),
        ));
        assert!(
            p.iter()
                .any(|p| p.starts_with("spec.usages[1]: Unsupported value")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("spec.usages[2]: Duplicate value")),
            "{p:?}"
        );
        let mut o = csr(&request_b64(), json!(["client auth"]));
        o["spec"]["signerName"] = json!("nodomain");
        o["spec"]["expirationSeconds"] = json!(60);
        let p = problems(&o);
        assert!(
            p.iter().any(|p| p.contains("example.com/signer-name")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("less than 600 seconds")),
            "{p:?}"
        );
    }

    #[test]
    fn the_requester_comes_from_the_user_not_the_body() {
        let mut o = csr(&request_b64(), json!(["client auth"]));
        o["spec"]["username"] = json!("system:admin");
        o["spec"]["groups"] = json!(["system:masters"]);
        let user = UserInfo::new("alice", &["tenant-a"]);
        CertificateSigningRequests.prepare_for_create_by(Some(&user), &mut o);
        assert_eq!(o["spec"]["username"], "alice");
        assert_eq!(
            o["spec"]["groups"],
            json!(["tenant-a", "system:authenticated"])
        );
    }

    #[test]
    fn approval_changes_only_conditions_and_status_keeps_approval() {
        let old = json!({"spec": {"request": "r"}, "status": {}});
        let mut new = json!({"spec": {"request": "other"}, "status": {"certificate": "c", "conditions": [{"type": "Approved", "status": "True"}]}});
        CertificateSigningRequests.prepare_for_approval_update(&old, &mut new);
        assert_eq!(new["spec"]["request"], "r");
        assert!(new["status"].get("certificate").is_none());
        assert_eq!(new["status"]["conditions"][0]["type"], "Approved");
        assert!(!str_at(&new, "/status/conditions/0/lastUpdateTime").is_empty());
        let approved = new.clone();
        let mut status = json!({"status": {"certificate": "c", "conditions": [{"type": "Failed", "status": "True"}]}});
        CertificateSigningRequests.prepare_for_status_update(&approved, &mut status);
        let types: Vec<&str> = status["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Failed", "Approved"]);
        assert_eq!(status["status"]["certificate"], "c");
    }

    #[test]
    fn approved_and_denied_exclude_each_other() {
        let mut o = csr(&request_b64(), json!(["client auth"]));
        o["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        let p = problems(&o);
        assert!(p.iter().any(|p| p.contains("mutually exclusive")), "{p:?}");
    }
}
