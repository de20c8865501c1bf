//! Service-account tokens: `POST .../serviceaccounts/<name>/token` (TokenRequest,
//! `authentication.k8s.io/v1`) answered with a signed JWT, as kube-apiserver issues them.
//!
//! Tokens are ES256 (ECDSA P-256 with SHA-256) JWTs signed with the key in
//! `<data dir>/pki/sa.key` ([`crate::tls`]), with Kubernetes' claims: `iss`, `sub`
//! (`system:serviceaccount:<ns>:<name>`), `aud`, `exp`, `iat`, `nbf`, `jti` and
//! `kubernetes.io` (namespace, the ServiceAccount's name and uid, the bound pod's or secret's
//! name and uid, and for a pod the node it runs on). [`TokenIssuer::verify`] checks a token's
//! signature, issuer, audiences and lifetime; [`crate::auth`] then checks that what it is
//! bound to still exists.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, FieldCause};
use crate::meta;
use crate::service::Service;

/// The issuer (and default audience) of tokens, as kube-apiserver's
/// `--service-account-issuer` is usually set.
pub fn default_issuer(domain: &str) -> String {
    format!("https://kubernetes.default.svc.{domain}")
}

/// Shortest lifetime a TokenRequest may ask for (Kubernetes: 10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// Default lifetime of a requested token (one hour, as kube-apiserver).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Clock skew allowed on `exp` and `nbf`, as kube-apiserver's JWT validation (one minute).
pub const LEEWAY_SECONDS: i64 = 60;

/// An object a token names: its name and uid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
}

/// What a token with a valid signature, issuer, audience and lifetime claims.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifiedToken {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub service_account: ObjectRef,
    /// The pod the token is bound to, if any.
    pub pod: Option<ObjectRef>,
    /// The secret the token is bound to, if any.
    pub secret: Option<ObjectRef>,
    /// The node of the bound pod, if the token names it.
    pub node: Option<ObjectRef>,
    /// The token's audiences that the verifier accepts.
    pub audiences: Vec<String>,
    /// The token's id (`jti`), if any.
    pub id: Option<String>,
}

/// Signs service-account tokens.
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// `iss` of every token, and the audience when a request names none.
    pub issuer: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer signing with the PKCS#8 PEM key `pem` (ECDSA P-256).
    pub fn from_pem(pem: &str, issuer: impl Into<String>) -> Result<Self, String> {
        use rustls_pki_types::PrivatePkcs8KeyDer;
        use rustls_pki_types::pem::PemObject;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("the service-account key is not PKCS#8 PEM: {e}"))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| format!("the service-account key is not an ECDSA P-256 key: {e}"))?;
        Ok(Self {
            key,
            rng,
            issuer: issuer.into(),
        })
    }

    /// The public key (uncompressed P-256 point), for verification.
    pub fn public_key_der(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// Checks `token`'s ES256 signature against this issuer's key, `iss`, that `aud`
    /// intersects `audiences` (empty: the issuer), and `exp`/`nbf` against `now` (Unix
    /// seconds) with [`LEEWAY_SECONDS`]; `Err` says why it does not hold.
    pub fn verify(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<VerifiedToken, String> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| format!("the {what} is not base64url"))
        };
        let header: Value = serde_json::from_slice(&decode(header_b64, "header")?)
            .map_err(|_| "the header is not JSON".to_string())?;
        if header["alg"] != "ES256" {
            return Err(format!("unsupported signing algorithm {}", header["alg"]));
        }
        let signature = decode(signature, "signature")?;
        let signed = token
            .get(..header_b64.len() + 1 + payload.len())
            .ok_or("not a JWT")?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            self.public_key_der(),
        )
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "the signature is not valid for this issuer's key".to_string())?;
        let claims: Value = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|_| "the claims are not JSON".to_string())?;
        if claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err(format!(
                "the issuer {} is not {}",
                claims["iss"], self.issuer
            ));
        }
        let token_audiences: Vec<&str> = match &claims["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let accepted: Vec<String> = if audiences.is_empty() {
            std::slice::from_ref(&self.issuer).to_vec()
        } else {
            audiences.to_vec()
        };
        let matching: Vec<String> = accepted
            .into_iter()
            .filter(|a| token_audiences.contains(&a.as_str()))
            .collect();
        if matching.is_empty() {
            return Err("the token's audiences do not match the API audiences".into());
        }
        let exp = claims["exp"].as_i64().ok_or("the token has no expiry")?;
        if now > exp + LEEWAY_SECONDS {
            return Err("the token has expired".into());
        }
        if let Some(nbf) = claims["nbf"].as_i64()
            && now + LEEWAY_SECONDS < nbf
        {
            return Err("the token is not valid yet".into());
        }
        let k8s = &claims["kubernetes.io"];
        let object = |v: &Value| {
            v.is_object().then(|| ObjectRef {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                uid: v["uid"].as_str().unwrap_or_default().to_string(),
            })
        };
        let namespace = k8s["namespace"].as_str().unwrap_or_default().to_string();
        let service_account = object(&k8s["serviceaccount"]).unwrap_or_default();
        let sub = claims["sub"].as_str().unwrap_or_default();
        if namespace.is_empty()
            || service_account.name.is_empty()
            || sub != crate::auth::users::service_account(&namespace, &service_account.name)
        {
            return Err("the token does not name a service account".into());
        }
        Ok(VerifiedToken {
            namespace,
            service_account,
            pod: object(&k8s["pod"]),
            secret: object(&k8s["secret"]),
            node: object(&k8s["node"]),
            audiences: matching,
            id: claims["jti"].as_str().map(str::to_string),
        })
    }

    /// A signed JWT with `claims`.
    pub fn sign(&self, claims: &Value) -> ApiResult<String> {
        let header = json!({"alg": "ES256", "kid": self.key_id(), "typ": "JWT"});
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", enc(&header), enc(claims));
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| ApiError::internal("cannot sign the token"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// Key id: the first bytes of the public key, URL-safe base64 (stable across restarts).
    fn key_id(&self) -> String {
        let pk = self.public_key_der();
        URL_SAFE_NO_PAD.encode(pk.get(1..25).unwrap_or(pk))
    }
}

fn status_time(t: Timestamp) -> String {
    meta::time_string(t)
}

/// Answers a TokenRequest for ServiceAccount `ns/name` (`body`: the TokenRequest).
pub async fn request(
    issuer: Option<&TokenIssuer>,
    service: &Service,
    ns: &str,
    name: &str,
    body: &Value,
) -> ApiResult<Value> {
    let issuer = issuer.ok_or_else(|| {
        ApiError::unavailable("this API server has no service-account signing key")
    })?;
    let sa_info = service
        .registry
        .get("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts not served"))?;
    let sa = service
        .store
        .get(&Service::key(&sa_info, Some(ns), name))
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let spec = &body["spec"];
    let mut causes = Vec::new();
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => match v.as_i64() {
            Some(n) if n < MIN_EXPIRATION_SECONDS => {
                causes.push(FieldCause::invalid(
                    "spec.expirationSeconds",
                    n,
                    "may not specify a duration less than 10 minutes",
                ));
                n
            }
            Some(n) if n > i64::from(u32::MAX) => {
                causes.push(FieldCause::invalid(
                    "spec.expirationSeconds",
                    n,
                    "may not specify a duration larger than 2^32 seconds",
                ));
                n
            }
            Some(n) => n,
            None => {
                causes.push(FieldCause::invalid(
                    "spec.expirationSeconds",
                    v,
                    "must be an integer",
                ));
                0
            }
        },
    };
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![issuer.issuer.clone()],
    };
    let mut bound = json!({});
    let bound_ref = &spec["boundObjectRef"];
    if bound_ref.is_object() {
        let kind = bound_ref["kind"].as_str().unwrap_or_default();
        let obj_name = bound_ref["name"].as_str().unwrap_or_default();
        let resource = match kind {
            "Pod" => Some("pods"),
            "Secret" => Some("secrets"),
            _ => {
                causes.push(FieldCause::not_supported(
                    "spec.boundObjectRef.kind",
                    kind,
                    &["Pod", "Secret"],
                ));
                None
            }
        };
        if let Some(resource) = resource {
            if !causes.is_empty() {
                return Err(ApiError::invalid(
                    "authentication.k8s.io",
                    "TokenRequest",
                    name,
                    causes,
                ));
            }
            let info = service
                .registry
                .get("", "v1", resource)
                .ok_or_else(|| ApiError::internal(format!("{resource} not served")))?;
            let object = service
                .store
                .get(&Service::key(&info, Some(ns), obj_name))
                .ok_or_else(|| ApiError::not_found("", resource, obj_name))?;
            let uid = meta::uid(&object.value).to_string();
            if let Some(want) = bound_ref["uid"].as_str().filter(|u| !u.is_empty())
                && want != uid
            {
                return Err(ApiError::conflict(
                    "",
                    resource,
                    obj_name,
                    format!(
                        "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            if kind == "Pod" {
                let pod_sa = object.value["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default");
                if pod_sa != name {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                    )));
                }
            }
            bound = json!({(kind.to_ascii_lowercase()): {"name": obj_name, "uid": uid}});
            // A pod-bound token also names the pod's node, as kube-apiserver's do.
            if let Some(node) = object.value["spec"]["nodeName"]
                .as_str()
                .filter(|n| !n.is_empty())
            {
                let node_uid = service
                    .registry
                    .get("", "v1", "nodes")
                    .and_then(|nodes| service.store.get(&Service::key(&nodes, None, node)))
                    .map(|n| meta::uid(&n.value).to_string())
                    .unwrap_or_default();
                bound["node"] = json!({"name": node, "uid": node_uid});
            }
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            causes,
        ));
    }
    let now = Timestamp::now();
    let exp = now
        .checked_add(SignedDuration::from_secs(expiration))
        .map_err(|_| ApiError::bad_request("the expiration is out of range"))?;
    let mut k8s = json!({
        "namespace": ns,
        "serviceaccount": {"name": name, "uid": meta::uid(&sa.value)},
    });
    if let (Some(k), Some(b)) = (k8s.as_object_mut(), bound.as_object()) {
        for (key, v) in b {
            k.insert(key.clone(), v.clone());
        }
    }
    let claims = json!({
        "aud": audiences,
        "exp": exp.as_second(),
        "iat": now.as_second(),
        "iss": issuer.issuer,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
        "nbf": now.as_second(),
        "sub": format!("system:serviceaccount:{ns}:{name}"),
    });
    let token = issuer.sign(&claims)?;
    let mut spec_out = spec.clone();
    if let Some(s) = spec_out.as_object_mut() {
        s.insert("audiences".into(), json!(audiences));
        s.insert("expirationSeconds".into(), json!(expiration));
        s.entry("boundObjectRef").or_insert(Value::Null);
    } else {
        spec_out = json!({"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": null});
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": status_time(now)},
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": status_time(exp)},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TokenIssuer::from_pem(&key.serialize_pem(), "https://issuer").unwrap()
    }

    fn claims(aud: Value, exp: i64, nbf: i64) -> Value {
        json!({
            "iss": "https://issuer", "aud": aud, "exp": exp, "nbf": nbf, "iat": nbf,
            "sub": "system:serviceaccount:ns:sa", "jti": "j1",
            "kubernetes.io": {
                "namespace": "ns",
                "serviceaccount": {"name": "sa", "uid": "u-sa"},
                "pod": {"name": "p", "uid": "u-p"},
                "node": {"name": "n1", "uid": "u-n"},
            },
        })
    }

    #[test]
    fn verify_checks_signature_issuer_audience_and_lifetime() {
        let issuer = issuer();
        let now = 1_000_000;
        let good = issuer
            .sign(&claims(json!(["https://issuer"]), now + 600, now))
            .unwrap();
        let v = issuer.verify(&good, &[], now).unwrap();
        assert_eq!(v.namespace, "ns");
        assert_eq!(v.service_account.uid, "u-sa");
        assert_eq!(v.pod.as_ref().unwrap().name, "p");
        assert_eq!(v.node.as_ref().unwrap().name, "n1");
        assert_eq!(v.audiences, ["https://issuer"]);
        // Within the leeway after expiry, then not.
        assert!(issuer.verify(&good, &[], now + 600 + 30).is_ok());
        assert!(issuer.verify(&good, &[], now + 600 + 61).is_err());
        // Not yet valid.
        let later = issuer
            .sign(&claims(json!("https://issuer"), now + 6000, now + 3000))
            .unwrap();
        assert!(issuer.verify(&later, &[], now).is_err());
        // Another audience than the API's.
        let other_aud = issuer
            .sign(&claims(json!(["vault"]), now + 600, now))
            .unwrap();
        assert!(issuer.verify(&other_aud, &[], now).is_err());
        assert_eq!(
            issuer
                .verify(&other_aud, &["vault".into()], now)
                .unwrap()
                .audiences,
            ["vault"]
        );
        // Another key, another issuer, tampering.
        assert!(self::issuer().verify(&good, &[], now).is_err());
        let mut foreign = claims(json!(["https://issuer"]), now + 600, now);
        foreign["iss"] = json!("https://elsewhere");
        assert!(
            issuer
                .verify(&issuer.sign(&foreign).unwrap(), &[], now)
                .is_err()
        );
        let (head, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged_claims = URL_SAFE_NO_PAD
            .encode(claims(json!(["https://issuer"]), now + 99_999, now).to_string());
        assert!(
            issuer
                .verify(&format!("{head}.{forged_claims}.{sig}"), &[], now)
                .is_err()
        );
        assert!(issuer.verify("not-a-jwt", &[], now).is_err());
        assert!(issuer.verify("a.b.c", &[], now).is_err());
    }

    #[test]
    fn tokens_are_es256_jwts_that_verify() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer = TokenIssuer::from_pem(&key.serialize_pem(), "https://x").unwrap();
        let token = issuer
            .sign(&json!({"sub": "system:serviceaccount:a:b"}))
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:a:b");
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            issuer.public_key_der(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .unwrap();
        assert!(
            public
                .verify(b"tampered", &URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
                .is_err()
        );
    }
}
