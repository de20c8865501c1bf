//! Mutual TLS on the agent's endpoints (logs, exec, attach, port-forward, the Summary API), as
//! a kubelet serves them with `--tls-cert-file`, `--tls-private-key-file` and
//! `--client-ca-file`.
//!
//! Every connection must present a client certificate signed by the client CA (the handshake
//! fails otherwise). The certificate's subject is the caller (CN = user, O = groups, as
//! kube-apiserver reads it); only the API server's kubelet client
//! ([`AUTHORIZED_USER`], `kube-apiserver-kubelet-client`) or a member of
//! [`AUTHORIZED_GROUP`] (`system:masters`) is served. Anyone else gets `403 Forbidden` with
//! the kubelet's words (`Forbidden (user=..., verb=..., resource=nodes, subresource=...)`) on
//! every request. There is no plain-HTTP mode: an agent without TLS does not start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::AgentError;

/// The user the API server authenticates as towards agents (its kubelet client certificate).
pub const AUTHORIZED_USER: &str = "kube-apiserver-kubelet-client";
/// Members of this group are served too (cluster admins).
pub const AUTHORIZED_GROUP: &str = "system:masters";
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may run on after the agent stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's serving certificate and the CA its clients' certificates must come from (PEM).
#[derive(Clone)]
pub struct AgentTls {
    /// The serving certificate chain (leaf first), for the node's IP addresses.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The CA that signs the certificates of allowed clients (the cluster CA).
    pub client_ca_pem: String,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTls").finish_non_exhaustive()
    }
}

impl AgentTls {
    /// Reads the three PEM files (`--tls-cert-file`, `--tls-private-key-file`,
    /// `--client-ca-file`).
    pub fn from_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: &std::path::Path,
    ) -> Result<Self, AgentError> {
        let read = |what: &'static str, p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| AgentError::io(what, p, e))
        };
        Ok(Self {
            cert_pem: read("cannot read the TLS certificate", cert)?,
            key_pem: read("cannot read the TLS private key", key)?,
            client_ca_pem: read("cannot read the client CA", client_ca)?,
        })
    }

    /// The rustls configuration: this certificate, HTTP/1.1 only (streaming upgrades), and a
    /// client certificate from the client CA required.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, AgentError> {
        let bad =
            |what: &str, e: &dyn std::fmt::Display| AgentError::Config(format!("{what}: {e}"));
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad("the TLS certificate", &e))?;
        if certs.is_empty() {
            return Err(AgentError::Config(
                "the TLS certificate file holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| bad("the TLS private key", &e))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.client_ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| bad("the client CA", &e))?;
            roots.add(ca).map_err(|e| bad("the client CA", &e))?;
        }
        if roots.is_empty() {
            return Err(AgentError::Config(
                "the client CA file holds no certificate".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| bad("the client CA", &e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS", &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| bad("the TLS certificate and key", &e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Who a client certificate names: CN (the user) and each O (the groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The user (CN).
    pub user: String,
    /// The groups (O).
    pub groups: Vec<String>,
}

impl ClientIdentity {
    /// Reads the subject of a DER certificate.
    pub fn of_certificate(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(Self { user, groups })
    }

    /// Whether this caller may use the agent's endpoints.
    pub fn is_authorized(&self) -> bool {
        self.user == AUTHORIZED_USER || self.groups.iter().any(|g| g == AUTHORIZED_GROUP)
    }
}

/// The kubelet's answer to a caller it does not authorize.
fn forbidden(user: &str, request: &Request<Body>) -> Response {
    let verb = match request.method().as_str() {
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "*",
    };
    let subresource = if request.uri().path().starts_with("/stats") {
        "stats"
    } else {
        "proxy"
    };
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "Forbidden (user={user}, verb={verb}, resource=nodes, subresource={subresource})\n"
        ),
    )
        .into_response()
}

/// Serves `app` on `listener` over mutual TLS until `shutdown` resolves; connections of
/// callers that are not authorized are answered `403` on every request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    let builder = Arc::new(builder.http1_only());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, ?addr, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "refused a connection: TLS handshake failed (a client certificate from the cluster CA is required)");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| ClientIdentity::of_certificate(c));
            let app = match identity {
                Some(id) if id.is_authorized() => app,
                other => {
                    let user = other
                        .map(|i| i.user)
                        .unwrap_or_else(|| "system:anonymous".into());
                    tracing::info!(%peer, %user, "refused a client that is not the API server");
                    Router::new().fallback(move |request: Request<Body>| {
                        let user = user.clone();
                        async move { forbidden(&user, &request) }
                    })
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(?addr, "open agent connections cut at shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_servers_client_or_masters_are_authorized() {
        let id = |user: &str, groups: &[&str]| ClientIdentity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(id(AUTHORIZED_USER, &[]).is_authorized());
        assert!(id("kubernetes-admin", &["system:masters"]).is_authorized());
        assert!(!id("mallory", &[]).is_authorized());
        assert!(!id("system:node:n1", &["system:nodes"]).is_authorized());
        assert!(!id("kube-apiserver-kubelet-client-not", &["masters"]).is_authorized());
    }

    #[test]
    fn forbidden_names_the_user_as_the_kubelet_does() {
        let r = Request::get("/stats/summary").body(Body::empty()).unwrap();
        let resp = forbidden("mallory", &r);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let r = Request::post("/exec/a/b/c").body(Body::empty()).unwrap();
        assert_eq!(forbidden("m", &r).status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_identity_is_read_from_a_real_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let names = ferry_apiserver::tls::ServingNames {
            dns: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        let pki = ferry_apiserver::tls::Pki::ensure(dir.path(), &names).unwrap();
        let der = |pem: &str| {
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .next()
                .unwrap()
                .unwrap()
        };
        // One group each: rcgen keeps one attribute per type in a subject.
        let c = pki.issue_client_cert(AUTHORIZED_USER, &[]).unwrap();
        let id = ClientIdentity::of_certificate(&der(&c.cert_pem)).unwrap();
        assert_eq!(id.user, AUTHORIZED_USER);
        assert!(id.groups.is_empty());
        assert!(id.is_authorized());
        let admin = pki
            .issue_client_cert("kubernetes-admin", &["system:masters"])
            .unwrap();
        let id = ClientIdentity::of_certificate(&der(&admin.cert_pem)).unwrap();
        assert_eq!(id.groups, ["system:masters"]);
        assert!(id.is_authorized());
        let m = pki.issue_client_cert("mallory", &[]).unwrap();
        let id = ClientIdentity::of_certificate(&der(&m.cert_pem)).unwrap();
        assert!(!id.is_authorized());
        assert!(ClientIdentity::of_certificate(b"not a certificate").is_none());
        // The serving side builds with a cluster-CA certificate.
        let serving = pki.issue_serving_cert("system:node:n", &names).unwrap();
        AgentTls {
            cert_pem: serving.cert_pem,
            key_pem: serving.key_pem,
            client_ca_pem: pki.ca_cert_pem.clone(),
        }
        .server_config()
        .unwrap();
    }

    #[test]
    fn bad_pem_is_a_configuration_error() {
        let tls = AgentTls {
            cert_pem: "nope".into(),
            key_pem: "nope".into(),
            client_ca_pem: "nope".into(),
        };
        assert!(matches!(tls.server_config(), Err(AgentError::Config(_))));
    }
}
