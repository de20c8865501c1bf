//! Ferry's Kubernetes-compatible API server: the subset of the Kubernetes REST API that
//! kubectl, client-go and kube-rs need, over [`ferry_store`].
//!
//! Layers, from the wire inwards:
//! - [`edge`]: connections (HTTP/1.1 with a header read timeout, HTTP/2), the bound on
//!   requests in flight (`429`), the body limit (`413`), and panics answered as `500` Statuses.
//! - [`http`]: routes (`/api`, `/apis`, discovery, OpenAPI), path parsing, content negotiation
//!   (JSON, Tables for kubectl, metadata-only), request decoding (JSON, YAML, or Kubernetes
//!   protobuf through [`protobuf`]); [`openapi`] serves the schemas of every kind, and
//!   [`jsonpath`] evaluates printer columns in Kubernetes' JSONPath dialect.
//! - [`watch`] and [`logs`]: streaming responses (watch events; container logs proxied to the
//!   node agent as the real API server proxies to the kubelet).
//! - [`service`]: the API's semantics, independent of HTTP: optimistic concurrency,
//!   subresources (status, scale), graceful deletion, finalizers, collections, CRDs.
//! - [`strategy`]: what differs between kinds, one file per kind: defaulting, validation,
//!   status handling, printer columns, selectable fields, graceful-deletion rules.
//! - [`expiry`]: the time-to-live of Events (storage behaviour, as etcd leases are in
//!   Kubernetes). Controllers (garbage collection, namespaces, service accounts) are API
//!   clients in `ferry-controllers`.
//!
//! In front of them: TLS ([`tls`], [`edge::serve`]), authentication ([`auth`], [`token`]),
//! authorization ([`authz`]) and admission ([`admission`]).

#![warn(clippy::string_slice)]

pub mod admission;
pub mod allocator;
pub mod auth;
pub mod authz;
pub mod crd_schema;
pub mod discovery;
pub mod edge;
pub mod encryption;
pub mod error;
pub mod eviction;
pub mod expiry;
pub mod fieldmanager;
pub mod http;
pub mod jsonpath;
pub mod kubelet;
pub mod logs;
pub mod meta;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod probe;
pub mod protobuf;
pub mod registry;
pub mod selectors;
pub mod service;
pub mod strategy;
pub mod streaming;
pub mod table;
pub mod tls;
pub mod token;
pub mod validation;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use thiserror::Error;

pub use ferry_store::Durability;
pub use service::Service;

/// Settings of an API server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Directory for the database (`state.db`).
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Commit durability of the store.
    pub durability: Durability,
    /// Events kept for watches that resume from an older revision.
    pub watch_history: usize,
    /// Body size, header timeout and requests in flight.
    pub limits: edge::Limits,
    /// The cluster network plan: Service cluster IPs and node ports come from its ranges.
    pub network: ferry_api::network::ClusterNetwork,
    /// `iss` of service-account tokens (signed with `<data dir>/pki/sa.key`).
    pub service_account_issuer: String,
    /// The static token file (`--token-auth-file`): `token,user,uid[,"group1,group2"]`.
    pub token_file: Option<PathBuf>,
    /// The audiences bearer tokens must be meant for (`--api-audiences`); empty: the
    /// service-account issuer.
    pub api_audiences: Vec<String>,
    /// How clients reach the server: TLS with authentication (the default).
    pub transport: Transport,
    /// Names and addresses the serving certificate holds besides the listen address.
    pub serving_names: tls::ServingNames,
    /// The `EncryptionConfiguration` of Secrets at rest (`--encryption-provider-config`);
    /// `None`: `<data dir>/pki/encryption-config.yaml`, created with a fresh key when missing.
    pub encryption_provider_config: Option<PathBuf>,
    /// The API server's credentials towards node agents (`--kubelet-client-certificate`,
    /// `--kubelet-client-key`, `--kubelet-certificate-authority`). `None` with TLS: a
    /// kubelet-client certificate (CN `kube-apiserver-kubelet-client`, O `system:masters`) is
    /// issued from the cluster CA at start. Without either, agents are never contacted (logs,
    /// exec, attach, port-forward and metrics answer `503`): there is no plain-HTTP mode.
    pub kubelet_client: Option<kubelet::KubeletClientTls>,
}

/// How clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// HTTPS with the cluster's serving certificate; every request is authenticated (x509
    /// client certificates, bearer tokens) and authorized.
    #[default]
    Tls,
    /// Plain HTTP with NO authentication and NO authorization: anyone who reaches the port is
    /// cluster admin. Only for benchmarks that measure what security costs; never for a
    /// cluster.
    InsecurePlainHttpWithoutAuthentication,
}

impl ServerConfig {
    /// Defaults: loopback port 6443, full durability, 50,000 events of history.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            durability: Durability::Full,
            watch_history: 50_000,
            limits: edge::Limits::default(),
            network: ferry_api::network::ClusterNetwork::default(),
            service_account_issuer: token::default_issuer("cluster.local"),
            token_file: None,
            api_audiences: Vec::new(),
            transport: Transport::Tls,
            serving_names: tls::ServingNames::for_cluster(
                "cluster.local",
                std::net::IpAddr::V4(
                    ferry_api::network::ClusterNetwork::default().kubernetes_service_ip(),
                ),
                &[],
            ),
            encryption_provider_config: None,
            kubelet_client: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] ferry_store::StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}{hint}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
        /// Advice for the user.
        hint: String,
    },
    /// The authentication configuration (token file) is not valid.
    #[error("authentication: {0}")]
    Auth(String),
    /// The encryption configuration cannot be read or created.
    #[error("encryption at rest: {0}")]
    Encryption(#[from] encryption::EncryptionError),
    /// The cluster's certificates could not be made or loaded.
    #[error("cannot set up the cluster's certificates: {0}")]
    Tls(#[from] tls::TlsError),
    /// Bootstrap objects could not be written.
    #[error("cannot create bootstrap object: {0}")]
    Bootstrap(error::ApiError),
}

/// A running API server.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The API's semantic layer (for in-process components and tests).
    pub service: Arc<Service>,
    /// The cluster CA, serving certificate and token key (`<data dir>/pki`); none with the
    /// insecure plain-HTTP transport.
    pub pki: Option<tls::Pki>,
    /// The admin's client certificate (`kubernetes-admin` in `system:masters`).
    pub admin: Option<tls::Credentials>,
    /// The router every listener serves.
    app: axum::Router,
    limits: edge::Limits,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    expiry: tokio::task::JoinHandle<()>,
}

/// The namespaces every cluster has.
pub const BOOTSTRAP_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Opens the store, creates the bootstrap namespaces and starts serving.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let mut store_config = ferry_store::StoreConfig::new(config.data_dir.join("state.db"));
    store_config.durability = config.durability;
    store_config.history = config.watch_history;
    let encryption = encryption::EncryptionConfig::ensure(
        &config.data_dir,
        config.encryption_provider_config.as_deref(),
    )?;
    tracing::debug!(config = %encryption.path().display(), "encryption at rest configured");
    store_config.transformer = Arc::new(encryption);
    let store = tokio::task::spawn_blocking(move || ferry_store::Store::open(store_config))
        .await
        .map_err(|e| ferry_store::StoreError::Storage(format!("store loader failed: {e}")))??;
    let service = Arc::new(Service::with_network(store, config.network.clone()));
    let (pki, admin) = match config.transport {
        Transport::Tls => {
            let mut names = config.serving_names.clone();
            let ip = config.listen.ip();
            // Every address the listener answers on: all of this machine's for 0.0.0.0.
            let listen_ips = if ip.is_unspecified() {
                tls::host_addresses(ip.is_ipv6())
            } else {
                vec![ip]
            };
            for ip in listen_ips {
                if !names.ips.contains(&ip) {
                    names.ips.push(ip);
                }
            }
            let dir = config.data_dir.clone();
            let (pki, admin) = tokio::task::spawn_blocking(move || {
                let pki = tls::Pki::ensure(&dir, &names)?;
                let admin = pki.ensure_admin()?;
                Ok::<_, tls::TlsError>((pki, admin))
            })
            .await
            .map_err(|e| tls::TlsError::Cert(format!("certificate task failed: {e}")))??;
            (Some(pki), Some(admin))
        }
        Transport::InsecurePlainHttpWithoutAuthentication => {
            tracing::warn!(
                "serving plain HTTP WITHOUT authentication or authorization: anyone who reaches the port is cluster admin (benchmark mode)"
            );
            (None, None)
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|source| {
        let hint = if source.kind() == std::io::ErrorKind::AddrInUse {
            " (another program, perhaps another Ferry, uses this port; stop it or pick another address with --listen)".to_string()
        } else {
            String::new()
        };
        ServerError::Listen { addr: config.listen, source, hint }
    })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
            hint: String::new(),
        })?;
    let tokens = tls::service_account_key(&config.data_dir)
        .map_err(|e| e.to_string())
        .and_then(|pem| token::TokenIssuer::from_pem(&pem, &config.service_account_issuer));
    let tokens = match tokens {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            tracing::warn!(error = %e, "service-account tokens cannot be issued");
            None
        }
    };
    let static_tokens = match &config.token_file {
        Some(path) => auth::StaticTokens::load(path).map_err(ServerError::Auth)?,
        None => auth::StaticTokens::default(),
    };
    let client_ca = match &pki {
        Some(pki) => Some(pki.client_verifier()?),
        None => None,
    };
    let authn = auth::Authenticator {
        static_tokens,
        service_accounts: tokens.clone(),
        client_ca,
        api_audiences: config.api_audiences.clone(),
    };
    let kubelet_client = match (&config.kubelet_client, &pki) {
        (Some(given), _) => Some(given.clone()),
        (None, Some(pki)) => {
            let me = pki.issue_client_cert(
                auth::users::APISERVER_KUBELET_CLIENT,
                &[auth::groups::MASTERS],
            )?;
            Some(kubelet::KubeletClientTls {
                ca_pem: pki.ca_cert_pem.clone(),
                cert_pem: me.cert_pem,
                key_pem: me.key_pem,
            })
        }
        (None, None) => None,
    };
    let kubelet = kubelet::KubeletClient::new(kubelet_client.as_ref())?;
    let state = Arc::new(http::AppState {
        kubelet,
        authn,
        authz: Arc::new(authz::node::Union(vec![
            Arc::new(authz::node::NodeAuthorizer),
            Arc::new(authz::rbac::RbacAuthorizer::new()),
        ])),
        insecure_everyone_is_admin: config.transport
            == Transport::InsecurePlainHttpWithoutAuthentication,
        tokens,
        service: service.clone(),
        advertise: addr.to_string(),
        ready: AtomicBool::new(false),
        limits: config.limits.clone(),
    });
    let app = http::router(state.clone());
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let limits = config.limits.clone();
    let served = app.clone();
    let acceptor = match &pki {
        Some(pki) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            pki.server_config()?,
        ))),
        None => None,
    };
    let server = tokio::spawn(async move {
        edge::serve(listener, served, &limits, acceptor, async {
            let _ = stop.await;
        })
        .await;
    });
    bootstrap(&service).await?;
    let expiry = tokio::spawn(expiry::run(service.clone()));
    state.ready.store(true, Ordering::Release);
    tracing::info!(%addr, "API server listening");
    Ok(RunningServer {
        addr,
        service,
        pki,
        admin,
        app,
        limits: config.limits,
        shutdown: Some(shutdown),
        server,
        expiry,
    })
}

async fn bootstrap(service: &Service) -> Result<(), ServerError> {
    let namespaces = service
        .registry
        .get("", "v1", "namespaces")
        .ok_or_else(|| {
            ServerError::Bootstrap(error::ApiError::internal("namespaces not served"))
        })?;
    for ns in BOOTSTRAP_NAMESPACES {
        if service.get(&namespaces, None, ns).is_ok() {
            continue;
        }
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match service
            .create(&namespaces, None, object, &service::WriteOptions::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(ServerError::Bootstrap(e)),
        }
    }
    authz::bootstrap::reconcile(service)
        .await
        .map_err(ServerError::Bootstrap)?;
    Ok(())
}

impl RunningServer {
    /// The server's URL, such as `https://127.0.0.1:6443`.
    pub fn url(&self) -> String {
        match self.pki {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// A kubeconfig for `user` in `groups` with a new client certificate from the cluster
    /// CA (the identity of an in-process component); a credential-less kubeconfig with the
    /// insecure plain-HTTP transport.
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> Result<String, tls::TlsError> {
        match &self.pki {
            Some(pki) => {
                let creds = pki.issue_client_cert(user, groups)?;
                Ok(kubeconfig_with(
                    &self.url(),
                    &pki.ca_cert_pem,
                    KubeconfigUser::Certificate(&creds),
                    "default",
                ))
            }
            None => Ok(kubeconfig(&self.url())),
        }
    }

    /// A kubeconfig that authenticates with the bearer `token`.
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        match &self.pki {
            Some(pki) => kubeconfig_with(
                &self.url(),
                &pki.ca_cert_pem,
                KubeconfigUser::Token(token),
                "default",
            ),
            None => kubeconfig(&self.url()),
        }
    }

    /// Serves the same API over TLS on `addr` with `pki`'s serving certificate (the in-cluster
    /// endpoint); stop it with [`tls::TlsListener::shutdown`] before [`Self::shutdown`].
    pub async fn serve_tls(
        &self,
        addr: SocketAddr,
        pki: &tls::Pki,
    ) -> Result<tls::TlsListener, tls::TlsError> {
        tls::serve_tls(addr, pki.server_config()?, self.app.clone(), &self.limits).await
    }

    /// The admin's kubeconfig for this server (`kubernetes-admin`, `system:masters`).
    pub fn kubeconfig(&self) -> String {
        match (&self.pki, &self.admin) {
            (Some(pki), Some(admin)) => kubeconfig_with(
                &self.url(),
                &pki.ca_cert_pem,
                KubeconfigUser::Certificate(admin),
                "default",
            ),
            _ => kubeconfig(&self.url()),
        }
    }

    /// Writes the kubeconfig to `path` (creating its directory), readable by the owner only.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        write_private(path, &self.kubeconfig())
    }

    /// Stops serving: new connections are refused, open streams are cut after a short grace.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        self.expiry.abort();
        if tokio::time::timeout(Duration::from_secs(2), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
        // Release the data directory now, not when the last stray handle goes.
        let store = self.service.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
}

/// A kubeconfig without credentials that points kubectl and kube-rs at `url` (the insecure
/// plain-HTTP transport).
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ferry
  cluster:
    server: {url}
contexts:
- name: ferry
  context:
    cluster: ferry
    user: ferry
    namespace: default
current-context: ferry
users:
- name: ferry
  user: {{}}
"
    )
}

/// How a kubeconfig's user proves who it is.
#[derive(Debug, Clone)]
pub enum KubeconfigUser<'a> {
    /// A client certificate (x509 authentication).
    Certificate(&'a tls::Credentials),
    /// A bearer token (static token file or service-account token).
    Token(&'a str),
}

/// A kubeconfig for `url` (https) trusting `ca_pem`, for `user`; its context's default
/// namespace is `namespace`.
pub fn kubeconfig_with(
    url: &str,
    ca_pem: &str,
    user: KubeconfigUser<'_>,
    namespace: &str,
) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user = match user {
        KubeconfigUser::Certificate(c) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(&c.cert_pem),
            b64(&c.key_pem)
        ),
        KubeconfigUser::Token(t) => format!("    token: {t}"),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ferry
  cluster:
    server: {url}
    certificate-authority-data: {ca}
contexts:
- name: ferry
  context:
    cluster: ferry
    user: ferry
    namespace: {namespace}
current-context: ferry
users:
- name: ferry
  user:
{user}
",
        ca = b64(ca_pem),
    )
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(tmp, path)
}
