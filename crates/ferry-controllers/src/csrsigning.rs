//! The signer of `kubernetes.io/kube-apiserver-client` CertificateSigningRequests, as
//! kube-controller-manager's `csrsigning` controller: an approved request (Approved, not
//! Denied, not Failed, no certificate yet) for this signer is signed with the cluster CA and
//! the certificate written to `status.certificate`; one it refuses gets a `Failed` condition
//! (reason `SignerValidationFailure`) saying why.
//!
//! What it signs, as Kubernetes' signer: client certificates only (usages among
//! `digital signature`, `key encipherment` and `client auth`, the last required), valid for
//! `spec.expirationSeconds` capped by the signer's maximum (a year by default), backdated
//! five minutes for clock skew. Ferry adds one rule: a request whose subject names a
//! `system:` user or the `system:masters` group is signed only when its requester
//! (`spec.groups`, set by the API server) is in `system:masters`, so that whoever may merely
//! approve requests cannot mint a cluster-admin or component identity.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use crate::Error;

/// The signer this controller serves.
pub const SIGNER_NAME: &str = "kubernetes.io/kube-apiserver-client";

/// The longest validity it grants (kube-controller-manager's `--cluster-signing-duration`
/// default: one year).
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The reason of the `Failed` condition of a request the signer refuses.
pub const FAILED_REASON: &str = "SignerValidationFailure";

const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why the signer cannot start (its CA does not load).
#[derive(Debug, thiserror::Error)]
#[error("the cluster signing CA cannot be used: {0}")]
pub struct SignerError(String);

/// The cluster CA a signer signs with, and the longest validity it grants.
pub struct Signer {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    max_duration: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("max_duration", &self.max_duration)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with the CA certificate and key (PEM) and the longest validity it grants.
    pub fn new(
        ca_cert_pem: &str,
        ca_key_pem: &str,
        max_duration: Duration,
    ) -> Result<Self, SignerError> {
        let key = rcgen::KeyPair::from_pem(ca_key_pem).map_err(|e| SignerError(e.to_string()))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, key)
            .map_err(|e| SignerError(e.to_string()))?;
        Ok(Self {
            issuer,
            max_duration,
        })
    }

    /// Signs `csr` (already approved, for [`SIGNER_NAME`]): the certificate's PEM, or why the
    /// signer refuses.
    pub fn sign(&self, csr: &CertificateSigningRequest) -> Result<String, String> {
        let spec = &csr.spec;
        let usages = spec.usages.as_deref().unwrap_or_default();
        check_usages(usages)?;
        let pem = std::str::from_utf8(&spec.request.0)
            .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
        check_subject(pem, spec.groups.as_deref().unwrap_or_default())?;
        let mut request = rcgen::CertificateSigningRequestParams::from_pem(pem)
            .map_err(|e| format!("unable to parse csr: {e}"))?;
        let params = &mut request.params;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions.clear();
        params.key_usages.clear();
        params.extended_key_usages.clear();
        for usage in usages {
            match usage.as_str() {
                "digital signature" => params
                    .key_usages
                    .push(rcgen::KeyUsagePurpose::DigitalSignature),
                "key encipherment" => params
                    .key_usages
                    .push(rcgen::KeyUsagePurpose::KeyEncipherment),
                "client auth" => params
                    .extended_key_usages
                    .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth),
                _ => {}
            }
        }
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| "no randomness for a serial number".to_string())?;
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + self.duration(spec.expiration_seconds);
        let cert = request
            .signed_by(&self.issuer)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok(cert.pem())
    }

    /// The validity of a certificate asked for `expiration_seconds` (capped by the maximum).
    pub fn duration(&self, expiration_seconds: Option<i32>) -> Duration {
        expiration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .map_or(self.max_duration, |asked| asked.min(self.max_duration))
    }
}

/// Kubernetes' rule for client certificates: `client auth` required, and besides only
/// `digital signature` and `key encipherment`.
pub fn check_usages(usages: &[String]) -> Result<(), String> {
    let mut client_auth = false;
    for usage in usages {
        match usage.as_str() {
            "digital signature" | "key encipherment" => {}
            "client auth" => client_auth = true,
            other => return Err(format!("invalid usage for client certificate: {other}")),
        }
    }
    if client_auth {
        Ok(())
    } else {
        Err("missing required usage for client certificate: client auth".into())
    }
}

/// Refuses subjects that name a `system:` user or `system:masters` unless the requester is
/// in `system:masters`.
fn check_subject(pem: &str, requester_groups: &[String]) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("unable to parse csr: {e}"))?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("unable to parse csr: {e}"))?;
    let subject = &csr.certification_request_info.subject;
    let common_names: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let organizations: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    if common_names.len() != 1 || common_names[0].is_empty() {
        return Err("the subject must have exactly one common name (the user name)".into());
    }
    let privileged =
        common_names[0].starts_with("system:") || organizations.contains(&"system:masters");
    if privileged && !requester_groups.iter().any(|g| g == "system:masters") {
        return Err(format!(
            "only a member of system:masters may request a certificate for user {:?} in groups {:?}",
            common_names[0], organizations
        ));
    }
    Ok(())
}

/// Whether `csr` waits for this signer: approved, not denied, not failed, not issued.
pub fn awaits_signing(csr: &CertificateSigningRequest) -> bool {
    if csr.spec.signer_name != SIGNER_NAME {
        return false;
    }
    let Some(status) = &csr.status else {
        return false;
    };
    if status.certificate.as_ref().is_some_and(|c| !c.0.is_empty()) {
        return false;
    }
    let has = |t: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == "True")
    };
    has("Approved") && !has("Denied") && !has("Failed")
}

struct Context {
    api: Api<CertificateSigningRequest>,
    signer: Arc<Signer>,
}

/// Runs the signer until its future is dropped.
pub async fn run(client: kube::Client, signer: Arc<Signer>) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let context = Arc::new(Context {
        api: api.clone(),
        signer,
    });
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "csr signer");
            }
            futures::future::ready(())
        })
        .await;
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    if !awaits_signing(&csr) {
        return Ok(Action::await_change());
    }
    let name = csr.name_any();
    let status = match context.signer.sign(&csr) {
        Ok(pem) => {
            tracing::info!(csr = %name, "signed a client certificate");
            json!({"certificate": base64::engine::general_purpose::STANDARD.encode(pem)})
        }
        Err(why) => {
            tracing::info!(csr = %name, %why, "refused to sign");
            let mut conditions: Vec<CertificateSigningRequestCondition> = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            conditions.push(CertificateSigningRequestCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some(FAILED_REASON.into()),
                message: Some(why),
                ..Default::default()
            });
            json!({"conditions": conditions})
        }
    };
    context
        .api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    Ok(Action::await_change())
}

fn error_policy(csr: Arc<CertificateSigningRequest>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(csr = %csr.name_any(), %error, "cannot write a signing result");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestSpec, CertificateSigningRequestStatus,
    };

    fn ca() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("ca");
        (cert.pem(), key.serialize_pem())
    }

    fn csr(cn: &str, orgs: &[&str], usages: &[&str], groups: &[&str]) -> CertificateSigningRequest {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        let pem = p.serialize_request(&key).expect("csr").pem().expect("pem");
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: SIGNER_NAME.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn signs_a_client_certificate_for_the_requested_subject_and_duration() {
        let (cert, key) = ca();
        let signer = Signer::new(&cert, &key, DEFAULT_MAX_DURATION).expect("signer");
        let request = csr(
            "alice",
            &["ferry:tenant:a"],
            &["client auth", "digital signature"],
            &[],
        );
        assert!(awaits_signing(&request));
        let pem = signer.sign(&request).expect("signed");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let (_, x509) = x509_parser::parse_x509_certificate(&block.contents).expect("x509");
        let cn: Vec<_> = x509
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cn, ["alice"]);
        let validity =
            x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp();
        assert_eq!(validity, 3600 + 300);
        assert_eq!(
            x509.issuer()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "test-ca"
        );
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(signer.duration(None), DEFAULT_MAX_DURATION);
        assert_eq!(signer.duration(Some(i32::MAX)), DEFAULT_MAX_DURATION);
    }

    #[test]
    fn refuses_server_usages_and_privileged_subjects_from_ordinary_requesters() {
        let (cert, key) = ca();
        let signer = Signer::new(&cert, &key, DEFAULT_MAX_DURATION).expect("signer");
        let err = signer
            .sign(&csr("alice", &[], &["server auth", "client auth"], &[]))
            .unwrap_err();
        assert_eq!(err, "invalid usage for client certificate: server auth");
        let err = signer
            .sign(&csr("alice", &[], &["digital signature"], &[]))
            .unwrap_err();
        assert_eq!(
            err,
            "missing required usage for client certificate: client auth"
        );
        let err = signer
            .sign(&csr(
                "mallory",
                &["system:masters"],
                &["client auth"],
                &["tenant-a"],
            ))
            .unwrap_err();
        assert!(err.contains("only a member of system:masters"), "{err}");
        let err = signer
            .sign(&csr(
                "system:kube-scheduler",
                &[],
                &["client auth"],
                &["tenant-a"],
            ))
            .unwrap_err();
        assert!(err.contains("only a member of system:masters"), "{err}");
        assert!(
            signer
                .sign(&csr(
                    "system:kube-scheduler",
                    &[],
                    &["client auth"],
                    &["system:masters"]
                ))
                .is_ok()
        );
    }

    #[test]
    fn waits_only_for_approved_unissued_requests_of_its_signer() {
        let mut request = csr("alice", &[], &["client auth"], &[]);
        request.spec.signer_name = "example.com/other".into();
        assert!(!awaits_signing(&request));
        let mut denied = csr("alice", &[], &["client auth"], &[]);
        denied
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(CertificateSigningRequestCondition {
                type_: "Denied".into(),
                status: "True".into(),
                ..Default::default()
            });
        assert!(!awaits_signing(&denied));
        let mut pending = csr("alice", &[], &["client auth"], &[]);
        pending.status = None;
        assert!(!awaits_signing(&pending));
    }
}
