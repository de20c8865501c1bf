//! The API server as a client of node agents (the kubelet's role), for logs,
//! exec/attach/port-forward and the Summary API, as kube-apiserver reaches a kubelet.
//!
//! - **Where**: only the Node's own `InternalIP` (an IP address, never a host name) and its
//!   `daemonEndpoints.kubeletEndpoint.Port` ([`AgentEndpoint::of_node`]). Only the node itself
//!   (`system:node:<name>`) or an admin may write those (NodeRestriction).
//! - **Who**: mutual TLS only ([`KubeletClient`]). The API server presents its kubelet-client
//!   certificate (CN `kube-apiserver-kubelet-client`, O `system:masters`) and verifies the
//!   agent's serving certificate against the cluster CA, for the IP it dials (an IP SAN), and
//!   issued to `system:node:<node name>`. A Node whose address points at anything else (a
//!   forged Node aimed at another service) gets a TLS ClientHello and nothing more: no HTTP
//!   request is sent before the agent's certificate is verified, and there is no plain-HTTP
//!   fallback.
//! - **What**: paths built from validated, percent-encoded segments
//!   ([`container_path`], [`pod_path`]): namespaces and container names must be DNS labels,
//!   pod names DNS subdomains; anything else is refused with `400` before connecting.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use thiserror::Error;

use crate::error::{ApiError, ApiResult};
use crate::tls::TlsError;

/// How long connecting and the TLS handshake to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The API server's credentials towards agents (PEM): the CA that signs agents' serving
/// certificates (kube-apiserver's `--kubelet-certificate-authority`) and its client
/// certificate and key (`--kubelet-client-certificate`, `--kubelet-client-key`).
#[derive(Clone)]
pub struct KubeletClientTls {
    /// The CA agents' serving certificates must chain to (the cluster CA).
    pub ca_pem: String,
    /// The client certificate (CN `kube-apiserver-kubelet-client`).
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

impl std::fmt::Debug for KubeletClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClientTls").finish_non_exhaustive()
    }
}

/// Why an agent could not be asked.
#[derive(Debug, Error)]
pub enum KubeletError {
    /// The API server has no kubelet-client credentials.
    #[error(
        "the API server has no client certificate for node agents; node {node:?} cannot be reached"
    )]
    NotConfigured {
        /// The node.
        node: String,
    },
    /// The Node does not publish a usable endpoint.
    #[error("node {node:?} {problem}")]
    NoEndpoint {
        /// The node.
        node: String,
        /// What is missing or wrong.
        problem: String,
    },
    /// The TCP connection failed.
    #[error("cannot reach the node agent of {node:?} at {addr}: {reason}")]
    Unreachable {
        /// The node.
        node: String,
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// TLS failed: the endpoint is not the node's agent (or not one of this cluster).
    #[error(
        "error dialing backend: the endpoint of node {node:?} at {addr} could not be verified as its agent: {reason}"
    )]
    Unverified {
        /// The node.
        node: String,
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The HTTP exchange failed after the handshake.
    #[error("the node agent of {node:?} did not answer: {reason}")]
    Protocol {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
}

impl From<KubeletError> for ApiError {
    fn from(e: KubeletError) -> Self {
        match e {
            KubeletError::Unverified { .. } => ApiError::internal(e.to_string()),
            _ => ApiError::unavailable(e.to_string()),
        }
    }
}

/// Where a node's agent is reached: the Node's name, its `InternalIP` and its kubelet port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The Node's name (its agent's certificate must be for `system:node:<name>`).
    pub node_name: String,
    /// The socket address (`InternalIP`, kubelet port).
    pub addr: SocketAddr,
}

impl AgentEndpoint {
    /// The endpoint a Node publishes: its first `InternalIP` (which must be an IP address)
    /// and `daemonEndpoints.kubeletEndpoint.Port` (1-65535). No other address is used.
    pub fn of_node(node: &Value) -> Result<Self, KubeletError> {
        let node_name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let no = |problem: &str| KubeletError::NoEndpoint {
            node: node_name.clone(),
            problem: problem.to_string(),
        };
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_i64)
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| {
                no("publishes no agent endpoint (daemonEndpoints.kubeletEndpoint.Port)")
            })?;
        let address = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .ok_or_else(|| no("publishes no InternalIP address"))?;
        let ip: IpAddr = address.parse().map_err(|_| {
            no(&format!(
                "has an InternalIP {address:?} that is not an IP address"
            ))
        })?;
        Ok(Self {
            node_name,
            addr: SocketAddr::new(ip, port as u16),
        })
    }
}

/// The one client of node agents: mutual TLS with the kubelet-client certificate.
#[derive(Clone)]
pub struct KubeletClient {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient")
            .field("configured", &self.tls.is_some())
            .finish()
    }
}

impl KubeletClient {
    /// A client with `credentials`; `None`: agents are never contacted (every attempt fails
    /// with `503`), as there is no plain-HTTP mode.
    pub fn new(credentials: Option<&KubeletClientTls>) -> Result<Self, TlsError> {
        let Some(c) = credentials else {
            return Ok(Self { tls: None });
        };
        let bad = |what: &str, e: &dyn std::fmt::Display| TlsError::Config(format!("{what}: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(c.ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| bad("the kubelet CA", &e))?;
            roots.add(ca).map_err(|e| bad("the kubelet CA", &e))?;
        }
        if roots.is_empty() {
            return Err(TlsError::Config(
                "the kubelet CA holds no certificate".into(),
            ));
        }
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad("the kubelet client certificate", &e))?;
        let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
            .map_err(|e| bad("the kubelet client key", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS", &e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| bad("the kubelet client certificate", &e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Some(Arc::new(config)),
        })
    }

    /// Sends `request` (origin-form URI: a path from [`container_path`] or [`pod_path`] and a
    /// query) to the agent at `endpoint` on a new verified connection; upgrades (`101`) are
    /// kept working. The `Host` header is set here.
    pub async fn send(
        &self,
        endpoint: &AgentEndpoint,
        mut request: hyper::Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, KubeletError> {
        let node = &endpoint.node_name;
        let addr = endpoint.addr;
        let Some(config) = &self.tls else {
            return Err(KubeletError::NotConfigured { node: node.clone() });
        };
        let unreachable = |reason: String| KubeletError::Unreachable {
            node: node.clone(),
            addr,
            reason,
        };
        let unverified = |reason: String| KubeletError::Unverified {
            node: node.clone(),
            addr,
            reason,
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            connector.connect(ServerName::IpAddress(addr.ip().into()), tcp),
        )
        .await
        .map_err(|_| unverified("the TLS handshake timed out".into()))?
        .map_err(|e| unverified(e.to_string()))?;
        let expected = format!("system:node:{node}");
        let subject = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| common_name(c));
        if subject.as_deref() != Some(expected.as_str()) {
            return Err(unverified(format!(
                "its certificate is for {:?}, not {expected:?}",
                subject.unwrap_or_default()
            )));
        }
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| KubeletError::Protocol {
                node: node.clone(),
                reason: e.to_string(),
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "connection to a node agent ended");
            }
        });
        let host = hyper::header::HeaderValue::from_str(&addr.to_string())
            .map_err(|e| unreachable(e.to_string()))?;
        request.headers_mut().insert(hyper::header::HOST, host);
        sender
            .send_request(request)
            .await
            .map_err(|e| KubeletError::Protocol {
                node: node.clone(),
                reason: e.to_string(),
            })
    }

    /// `GET path` on the agent at `endpoint`.
    pub async fn get(
        &self,
        endpoint: &AgentEndpoint,
        path_and_query: &str,
    ) -> Result<hyper::Response<Incoming>, KubeletError> {
        let request = hyper::Request::get(path_and_query)
            .body(Empty::new())
            .map_err(|e| KubeletError::Protocol {
                node: endpoint.node_name.clone(),
                reason: format!("bad request {path_and_query:?}: {e}"),
            })?;
        self.send(endpoint, request).await
    }
}

/// The CN of a DER certificate's subject.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved
/// characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn checked<'a>(what: &str, value: &'a str, problem: Option<String>) -> ApiResult<&'a str> {
    match problem {
        None => Ok(value),
        Some(p) => Err(ApiError::bad_request(format!(
            "invalid {what} {value:?}: {p}"
        ))),
    }
}

/// `/{endpoint}/{namespace}/{pod}` (`portForward`), from validated, encoded segments.
pub fn pod_path(endpoint: &'static str, namespace: &str, pod: &str) -> ApiResult<String> {
    let ns = checked(
        "namespace",
        namespace,
        crate::validation::dns_label_problem(namespace),
    )?;
    let pod = checked(
        "pod name",
        pod,
        crate::validation::dns_subdomain_problem(pod),
    )?;
    Ok(format!("/{endpoint}/{}/{}", encode(ns), encode(pod)))
}

/// `/{endpoint}/{namespace}/{pod}/{container}` (`containerLogs`, `exec`, `attach`), from
/// validated, encoded segments.
pub fn container_path(
    endpoint: &'static str,
    namespace: &str,
    pod: &str,
    container: &str,
) -> ApiResult<String> {
    let base = pod_path(endpoint, namespace, pod)?;
    let container = checked(
        "container name",
        container,
        crate::validation::dns_label_problem(container),
    )?;
    Ok(format!("{base}/{}", encode(container)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(addr: &str, port: i64) -> Value {
        json!({"metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "Hostname", "address": "evil.example"}, {"type": "InternalIP", "address": addr}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
    }

    #[test]
    fn the_endpoint_is_the_internal_ip_and_kubelet_port_only() {
        let e = AgentEndpoint::of_node(&node("10.0.0.2", 10250)).unwrap();
        assert_eq!(e.addr, "10.0.0.2:10250".parse().unwrap());
        assert_eq!(e.node_name, "n1");
        let e = AgentEndpoint::of_node(&node("fd00::2", 10250)).unwrap();
        assert_eq!(e.addr.to_string(), "[fd00::2]:10250");
        for bad in [
            node("10.0.0.2", 0),
            node("10.0.0.2", 70000),
            node("metadata.google.internal", 80),
            node("10.0.0.2/evil", 80),
            json!({"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "Hostname", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}),
            json!({}),
        ] {
            assert!(
                matches!(
                    AgentEndpoint::of_node(&bad),
                    Err(KubeletError::NoEndpoint { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn paths_are_built_from_valid_segments_only() {
        assert_eq!(
            container_path("containerLogs", "default", "web-0.a", "main").unwrap(),
            "/containerLogs/default/web-0.a/main"
        );
        assert_eq!(
            pod_path("portForward", "kube-system", "p").unwrap(),
            "/portForward/kube-system/p"
        );
        for (ns, pod, c) in [
            ("default", "..", "c"),
            ("default", "a/../../stats", "c"),
            ("default", "a%2F..%2Fstats", "c"),
            ("default", "a", "../../stats/summary"),
            ("default", "a", "c?x=1"),
            ("default", "a", "c#f"),
            ("..", "a", "c"),
            ("de/fault", "a", "c"),
            ("default", "A", "c"),
            ("default", "", "c"),
            ("default", "a", ""),
            ("default", "a b", "c"),
        ] {
            let e = container_path("containerLogs", ns, pod, c).unwrap_err();
            assert_eq!(e.code, 400, "{ns}/{pod}/{c}");
        }
    }

    #[test]
    fn encoding_leaves_only_unreserved_characters() {
        assert_eq!(encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode("../x?y#z"), "..%2Fx%3Fy%23z");
        assert_eq!(encode("%2F"), "%252F");
        assert_eq!(encode("sh -c"), "sh%20-c");
    }

    #[tokio::test]
    async fn without_credentials_no_agent_is_contacted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = AgentEndpoint {
            node_name: "n1".into(),
            addr: listener.local_addr().unwrap(),
        };
        let client = KubeletClient::new(None).unwrap();
        let e = client.get(&endpoint, "/healthz").await.unwrap_err();
        assert!(matches!(e, KubeletError::NotConfigured { .. }), "{e}");
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");
    }

    #[tokio::test]
    async fn a_plain_http_endpoint_gets_no_request() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let names = crate::tls::ServingNames {
            dns: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        let pki = crate::tls::Pki::ensure(dir.path(), &names).unwrap();
        let me = pki
            .issue_client_cert(
                crate::auth::users::APISERVER_KUBELET_CLIENT,
                &["system:masters"],
            )
            .unwrap();
        let client = KubeletClient::new(Some(&KubeletClientTls {
            ca_pem: pki.ca_cert_pem.clone(),
            cert_pem: me.cert_pem,
            key_pem: me.key_pem,
        }))
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = AgentEndpoint {
            node_name: "n1".into(),
            addr: listener.local_addr().unwrap(),
        };
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 4096];
            let n = s.read(&mut got).await.unwrap();
            // A plain HTTP server answers garbage with 400 and closes.
            use tokio::io::AsyncWriteExt;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            got.truncate(n);
            got
        });
        let e = client
            .get(&endpoint, "/containerLogs/default/p/c")
            .await
            .unwrap_err();
        assert!(matches!(e, KubeletError::Unverified { .. }), "{e}");
        let api: ApiError = e.into();
        assert_eq!(api.code, 500);
        let got = server.await.unwrap();
        assert_eq!(got.first(), Some(&0x16), "a TLS record (ClientHello) only");
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.contains("GET ") && !text.contains("HTTP/1.1"),
            "{text}"
        );
    }
}
