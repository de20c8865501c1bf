//! Authentication: who a request comes from, as kube-apiserver decides it.
//!
//! [`Authenticator::authenticate`] tries, in order: the TLS client certificate (verified by
//! the listener against the cluster CA; CN = user, O = groups), a bearer token from the
//! static token file, a bearer token that is a service-account JWT signed by the cluster's
//! key. A request with none of them is anonymous (`None`): the router answers `401` except
//! on `/healthz`, `/livez`, `/readyz` and `/version`. A credential that is present but bad
//! (unknown token, bad signature, expired, the bound object gone) is `401` too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::ApiError;

/// Well-known users of the cluster's own components.
pub mod users {
    /// The administrator `ferry up` writes a kubeconfig for (in `system:masters`).
    pub const ADMIN: &str = "kubernetes-admin";
    /// The scheduler.
    pub const SCHEDULER: &str = "system:kube-scheduler";
    /// The built-in controllers.
    pub const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";
    /// The Service proxy of every node.
    pub const PROXY: &str = "system:kube-proxy";
    /// The cluster DNS.
    pub const DNS: &str = "system:ferry-dns";
    /// The API server itself, as a client of node agents (logs, exec, port-forward).
    pub const APISERVER_KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";
    /// Prefix of node agents' users (`system:node:<node name>`).
    pub const NODE_PREFIX: &str = "system:node:";
    /// Prefix of service accounts' users (`system:serviceaccount:<ns>:<name>`).
    pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
    /// The user of requests without credentials.
    pub const ANONYMOUS: &str = "system:anonymous";

    /// The user of the node agent of `node`.
    pub fn node(node: &str) -> String {
        format!("{NODE_PREFIX}{node}")
    }

    /// The user of service account `ns/name`.
    pub fn service_account(ns: &str, name: &str) -> String {
        format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}")
    }
}

/// Well-known groups.
pub mod groups {
    /// Superusers: every request is allowed (RBAC is not consulted).
    pub const MASTERS: &str = "system:masters";
    /// Every authenticated user.
    pub const AUTHENTICATED: &str = "system:authenticated";
    /// Requests without credentials.
    pub const UNAUTHENTICATED: &str = "system:unauthenticated";
    /// Every node agent.
    pub const NODES: &str = "system:nodes";
    /// Every service account.
    pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

    /// The service accounts of namespace `ns`.
    pub fn service_accounts_in(ns: &str) -> String {
        format!("{SERVICE_ACCOUNTS}:{ns}")
    }
}

/// An authenticated user, as `authentication.k8s.io/v1` UserInfo.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// The user name (`alice`, `system:node:n1`, `system:serviceaccount:ns:sa`).
    pub name: String,
    /// A unique id, when the authenticator knows one (service accounts: the uid).
    pub uid: String,
    /// The groups, `system:authenticated` included.
    pub groups: Vec<String>,
    /// Extra attributes (service-account tokens: the bound pod's name and uid, the node).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with `groups`, plus `system:authenticated`.
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == groups::AUTHENTICATED) {
            groups.push(groups::AUTHENTICATED.into());
        }
        Self {
            name: name.into(),
            groups,
            ..Self::default()
        }
    }

    /// The anonymous user (`system:anonymous`, group `system:unauthenticated`).
    pub fn anonymous() -> Self {
        Self {
            name: users::ANONYMOUS.into(),
            groups: vec![groups::UNAUTHENTICATED.into()],
            ..Self::default()
        }
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node name of a node agent's user (`system:node:<name>` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        self.name
            .strip_prefix(users::NODE_PREFIX)
            .filter(|_| self.in_group(groups::NODES))
    }

    /// The `(namespace, name)` of a service account's user.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        self.name
            .strip_prefix(users::SERVICE_ACCOUNT_PREFIX)?
            .split_once(':')
    }

    /// As the `user` of a TokenReview or SelfSubjectReview status.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = self.uid.clone().into();
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }
}

/// The client certificate of a TLS connection: its chain (leaf first, DER), put into each
/// request's extensions by the listener, and what authenticating it gave, computed once per
/// connection (the chain is verified at the connection's first request, not at every one).
#[derive(Debug, Clone)]
pub struct PeerCertificates {
    /// The chain, leaf first.
    pub chain: Arc<Vec<Vec<u8>>>,
    /// The user the chain authenticated (`None`: refused), once known.
    pub user: Arc<std::sync::OnceLock<Option<UserInfo>>>,
}

impl PeerCertificates {
    /// The certificates of a new connection.
    pub fn new(chain: Vec<Vec<u8>>) -> Self {
        Self {
            chain: Arc::new(chain),
            user: Arc::default(),
        }
    }
}

/// Static bearer tokens (`--token-auth-file`): lines `token,user,uid[,"group1,group2"]`.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    by_token: HashMap<String, UserInfo>,
}

impl StaticTokens {
    /// Parses a token file's contents.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut by_token = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (fields, groups) = match line.split_once(",\"") {
                Some((head, quoted)) => {
                    let groups = quoted.strip_suffix('"').ok_or_else(|| {
                        format!("line {}: the quoted groups are not closed", n + 1)
                    })?;
                    (head, groups)
                }
                None => (line, ""),
            };
            let mut parts = fields.split(',');
            let token = parts.next().unwrap_or_default().trim();
            let user = parts.next().unwrap_or_default().trim();
            let uid = parts.next().unwrap_or_default().trim();
            let unquoted_groups = parts.next().unwrap_or_default().trim();
            if token.is_empty() || user.is_empty() {
                return Err(format!(
                    "line {}: expected token,user,uid[,\"group1,group2\"]",
                    n + 1
                ));
            }
            let groups: Vec<&str> = if groups.is_empty() {
                unquoted_groups
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .collect()
            } else {
                groups
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .collect()
            };
            let mut info = UserInfo::new(user, &groups);
            info.uid = uid.to_string();
            by_token.insert(token.to_string(), info);
        }
        Ok(Self { by_token })
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    /// The user of `token`, if the file has it.
    pub fn user(&self, token: &str) -> Option<&UserInfo> {
        self.by_token.get(token)
    }
}

/// Authenticates requests (see the module's documentation).
#[derive(Debug, Default)]
pub struct Authenticator {
    /// The static token file's tokens.
    pub static_tokens: StaticTokens,
    /// Verifies service-account tokens (none: they are refused).
    pub service_accounts: Option<Arc<crate::token::TokenIssuer>>,
    /// Verifies client certificates (the cluster CA); none: certificates are not accepted.
    pub client_ca: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// The audiences a token must be meant for (`--api-audiences`); empty: the
    /// service-account issuer, as kube-apiserver defaults.
    pub api_audiences: Vec<String>,
}

/// How long after its `deletionTimestamp` a deleted pod's (or secret's) bound tokens still
/// hold, as kube-apiserver allows, so a terminating pod can finish talking to the API.
pub const BOUND_OBJECT_DELETION_GRACE_SECONDS: i64 = 60;

/// The user a client certificate names (CN = user, O = groups), once `verifier` has checked
/// its chain; `Err` (401) for a certificate it does not trust or cannot read.
pub fn user_of_certificate(
    verifier: &dyn rustls::server::danger::ClientCertVerifier,
    chain: &[Vec<u8>],
) -> Result<UserInfo, ApiError> {
    use rustls_pki_types::{CertificateDer, UnixTime};
    let (leaf, intermediates) = chain.split_first().ok_or_else(unauthorized)?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    verifier
        .verify_client_cert(
            &CertificateDer::from(leaf.as_slice()),
            &intermediates,
            UnixTime::now(),
        )
        .map_err(|e| {
            tracing::debug!(error = %e, "client certificate refused");
            unauthorized()
        })?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|_| unauthorized())?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(unauthorized)?;
    let groups: Vec<&str> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    Ok(UserInfo::new(name, &groups))
}

/// Why a credential was refused (answered `401 Unauthorized`).
pub fn unauthorized() -> ApiError {
    ApiError::unauthorized("Unauthorized")
}

impl Authenticator {
    /// The user of a request, from its headers and the TLS listener's extensions; `Ok(None)`
    /// when it carries no credential; `Err` (401) for a credential that does not hold.
    pub fn authenticate(
        &self,
        service: &crate::service::Service,
        parts: &axum::http::request::Parts,
    ) -> Result<Option<UserInfo>, ApiError> {
        if let Some(auth) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let auth = auth.to_str().map_err(|_| unauthorized())?;
            let token = auth
                .strip_prefix("Bearer ")
                .or_else(|| auth.strip_prefix("bearer "))
                .map(str::trim)
                .ok_or_else(unauthorized)?;
            return match self.authenticate_token(service, token, &[]) {
                Ok((user, _)) => Ok(Some(user)),
                Err(reason) => {
                    tracing::debug!(%reason, path = parts.uri.path(), "bearer token refused");
                    Err(unauthorized())
                }
            };
        }
        if let Some(peer) = parts.extensions.get::<PeerCertificates>() {
            let verifier = self.client_ca.as_deref().ok_or_else(unauthorized)?;
            let user = peer
                .user
                .get_or_init(|| user_of_certificate(verifier, &peer.chain).ok());
            return user.clone().map(Some).ok_or_else(unauthorized);
        }
        Ok(None)
    }
}

impl Authenticator {
    /// The audiences tokens are checked against: `--api-audiences`, else the issuer.
    pub fn audiences(&self) -> Vec<String> {
        if !self.api_audiences.is_empty() {
            return self.api_audiences.clone();
        }
        self.service_accounts
            .iter()
            .map(|issuer| issuer.issuer.clone())
            .collect()
    }

    /// The user of a bearer `token` (static token file, then service-account JWT) and the
    /// audiences it holds for: `audiences` when given (a TokenReview's), else the API's.
    /// `Err` says why the token is refused.
    pub fn authenticate_token(
        &self,
        service: &crate::service::Service,
        token: &str,
        audiences: &[String],
    ) -> Result<(UserInfo, Vec<String>), String> {
        let api_audiences = self.audiences();
        let wanted = if audiences.is_empty() {
            api_audiences.clone()
        } else {
            audiences.to_vec()
        };
        if let Some(user) = self.static_tokens.user(token) {
            // Static tokens hold for the API's own audiences only.
            let held: Vec<String> = if audiences.is_empty() {
                api_audiences
            } else {
                wanted
                    .into_iter()
                    .filter(|a| api_audiences.contains(a))
                    .collect()
            };
            if !audiences.is_empty() && held.is_empty() {
                return Err("token audiences is invalid for the target audiences".into());
            }
            return Ok((user.clone(), held));
        }
        let issuer = self
            .service_accounts
            .as_deref()
            .ok_or("invalid bearer token")?;
        if token.split('.').count() != 3 {
            return Err("invalid bearer token".into());
        }
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let claims = issuer.verify(token, &wanted, now)?;
        let user = service_account_user(service, &claims, now)?;
        Ok((user, claims.audiences))
    }
}

/// The user of a verified service-account token, once what it names is checked as
/// kube-apiserver checks bound tokens: the ServiceAccount exists with the token's uid, and
/// the bound pod or secret exists with its uid and was not deleted (beyond
/// [`BOUND_OBJECT_DELETION_GRACE_SECONDS`]). Keyed reads only.
fn service_account_user(
    service: &crate::service::Service,
    claims: &crate::token::VerifiedToken,
    now: i64,
) -> Result<UserInfo, String> {
    let ns = claims.namespace.as_str();
    let get = |resource: &str, name: &str| {
        let info = service
            .registry
            .get("", "v1", resource)
            .ok_or_else(|| format!("{resource} are not served"))?;
        service
            .store
            .get(&crate::service::Service::key(&info, Some(ns), name))
            .ok_or_else(|| format!("{resource} \"{name}\" not found"))
    };
    let sa = &claims.service_account;
    let object = get("serviceaccounts", &sa.name)?;
    let uid = crate::meta::uid(&object.value);
    if !sa.uid.is_empty() && uid != sa.uid {
        return Err(format!(
            "service account UID ({uid}) does not match claim ({})",
            sa.uid
        ));
    }
    let bound = [("pods", &claims.pod), ("secrets", &claims.secret)];
    for (resource, reference) in bound {
        let Some(reference) = reference else {
            continue;
        };
        let object = get(resource, &reference.name)?;
        let uid = crate::meta::uid(&object.value);
        if uid != reference.uid {
            return Err(format!(
                "the {resource} \"{}\" UID ({uid}) does not match the token's ({})",
                reference.name, reference.uid
            ));
        }
        let deleted_at = object.value["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        if let Some(at) = deleted_at
            && at.as_second() + BOUND_OBJECT_DELETION_GRACE_SECONDS < now
        {
            return Err(format!(
                "the token is bound to {resource} \"{}\", deleted at {at}",
                reference.name
            ));
        }
    }
    let sa_group = groups::service_accounts_in(ns);
    let mut user = UserInfo::new(
        users::service_account(ns, &sa.name),
        &[groups::SERVICE_ACCOUNTS, &sa_group],
    );
    user.uid = uid.to_string();
    let mut extra = |key: &str, value: &str| {
        if !value.is_empty() {
            user.extra.insert(
                format!("authentication.kubernetes.io/{key}"),
                vec![value.into()],
            );
        }
    };
    if let Some(pod) = &claims.pod {
        extra("pod-name", &pod.name);
        extra("pod-uid", &pod.uid);
    }
    if let Some(node) = &claims.node {
        extra("node-name", &node.name);
        extra("node-uid", &node.uid);
    }
    if let Some(id) = &claims.id {
        extra("credential-id", &format!("JTI={id}"));
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_token_file() {
        let t = StaticTokens::parse(
            "# comment\nt1,alice,u1,\"team-a,devs\"\nt2,bob,u2\nt3,carol,u3,ops\n",
        )
        .unwrap();
        let alice = t.user("t1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "u1");
        assert_eq!(
            alice.groups,
            ["team-a", "devs", groups::AUTHENTICATED].map(String::from)
        );
        assert_eq!(t.user("t2").unwrap().groups, [groups::AUTHENTICATED]);
        assert_eq!(t.user("t3").unwrap().groups[0], "ops");
        assert!(t.user("nope").is_none());
        assert!(StaticTokens::parse("onlytoken\n").is_err());
    }

    #[test]
    fn node_and_service_account_users() {
        let n = UserInfo::new(users::node("n1"), &[groups::NODES]);
        assert_eq!(n.node_name(), Some("n1"));
        assert_eq!(UserInfo::new("system:node:n1", &[]).node_name(), None);
        let sa = UserInfo::new(users::service_account("ns", "sa"), &[]);
        assert_eq!(sa.service_account(), Some(("ns", "sa")));
    }
}
