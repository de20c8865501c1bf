//! TLS for the API server: the cluster's certificate authority, the serving certificate, the
//! service-account signing key, and the TLS listener.
//!
//! [`Pki::ensure`] creates, at first start, in `<data dir>/pki/`:
//! - `ca.crt`, `ca.key`: the cluster CA (ECDSA P-256, ten years). Pods trust it through the
//!   `kube-root-ca.crt` ConfigMap every namespace gets.
//! - `apiserver.crt`, `apiserver.key`: the serving certificate, signed by the CA, for the
//!   names and addresses in-cluster clients use (the `kubernetes` Service IP and names, the
//!   node gateway, loopback). It is re-issued (by the same CA) when the names change or it
//!   comes within 30 days of its end.
//! - `sa.key`: the ECDSA P-256 key that signs service-account tokens (ES256), kept for
//!   their verification.
//!
//! Keys are written 0600 and never replaced once made, so restarts keep every trust
//! relation. [`serve_tls`] serves the same router as the plain listener, HTTP/1.1 and HTTP/2
//! (ALPN) over rustls.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, date_time_ymd,
};
use rustls::server::danger::ClientCertVerifier;
use thiserror::Error;

use crate::edge::Limits;

/// Why the certificates or the TLS listener could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file of the PKI directory.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation or parsing.
    #[error("certificate: {0}")]
    Cert(String),
    /// The TLS configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn cert_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Cert(e.to_string())
}

/// The cluster's keys and certificates (PEM), as kept in the data directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The directory (`<data dir>/pki`).
    pub dir: PathBuf,
    /// The CA certificate (what clients trust: `ca.crt`).
    pub ca_cert_pem: String,
    /// The CA's key (signs client and node certificates).
    pub ca_key_pem: String,
    /// The serving certificate chain (leaf then CA).
    pub serving_cert_pem: String,
    /// The serving key.
    pub serving_key_pem: String,
    /// The service-account token signing key (PKCS#8 PEM, ECDSA P-256).
    pub service_account_key_pem: String,
}

/// A certificate and its key (PEM), as a kubeconfig's `client-certificate-data` and
/// `client-key-data` hold them.
#[derive(Clone)]
pub struct Credentials {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// This machine's addresses (every interface's, loopback excluded), for the serving
/// certificate of a server that listens on all of them (`0.0.0.0` or `[::]`).
pub fn host_addresses(ipv6: bool) -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that is freed below, once read.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return found;
    }
    let mut node = head;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*node };
        node = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null `ifa_addr` points at a sockaddr of the family it names.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
                }
                libc::AF_INET6 if ipv6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if let Some(ip) = ip.filter(|ip| !ip.is_loopback() && !found.contains(ip)) {
            found.push(ip);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The names and addresses the serving certificate covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingNames {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// What kube-apiserver's certificate holds for a cluster: the `kubernetes` Service's IP
    /// and names, `localhost` and loopback, plus `extra_ips` (the node gateway).
    pub fn for_cluster(domain: &str, kubernetes_ip: IpAddr, extra_ips: &[IpAddr]) -> Self {
        let mut ips = vec![kubernetes_ip, IpAddr::from([127, 0, 0, 1])];
        for ip in extra_ips {
            if !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        Self {
            dns: vec![
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                format!("kubernetes.default.svc.{domain}"),
                "localhost".into(),
            ],
            ips,
        }
    }

    fn fingerprint(&self) -> String {
        let mut parts: Vec<String> = self.dns.clone();
        parts.extend(self.ips.iter().map(IpAddr::to_string));
        parts.join(",")
    }
}

fn read(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            action: "cannot read",
            path: path.into(),
            source,
        }),
    }
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |action, source| TlsError::Io {
        action,
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(|e| io("cannot write", e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("cannot set the mode of", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot write", e))
}

/// The current calendar year (UTC), from the clock.
fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    1970 + (secs / 31_556_952) as i32
}

fn ca_params(year: i32) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ferry-ca");
    dn.push(DnType::OrganizationName, "Ferry");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = date_time_ymd(year - 1, 1, 1);
    p.not_after = date_time_ymd(year + 10, 1, 1);
    p
}

/// The subject, names and usages of a serving certificate for `names` (CN `common_name`).
fn serving_params(common_name: &str, names: &ServingNames) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.subject_alt_names = names
        .dns
        .iter()
        .map(|d| d.clone().try_into().map(rcgen::SanType::DnsName))
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    p.subject_alt_names
        .extend(names.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(p)
}

/// Key of the key pair in `path`, made (0600) when missing.
fn ensure_key(path: &Path) -> Result<(KeyPair, String), TlsError> {
    if let Some(pem) = read(path)? {
        let key = KeyPair::from_pem(&pem).map_err(cert_err)?;
        return Ok((key, pem));
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
    let pem = key.serialize_pem();
    write(path, &pem, 0o600)?;
    Ok((key, pem))
}

/// The service-account signing key of `data_dir` (`<data dir>/pki/sa.key`, PKCS#8 PEM), made
/// at first use.
pub fn service_account_key(data_dir: &Path) -> Result<String, TlsError> {
    let dir = data_dir.join("pki");
    std::fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
        action: "cannot create",
        path: dir.clone(),
        source,
    })?;
    Ok(ensure_key(&dir.join("sa.key"))?.1)
}

impl Pki {
    /// Loads the PKI of `data_dir` (`<data dir>/pki`), creating what is missing, and
    /// re-issues the serving certificate when `names` changed or it is about to end.
    pub fn ensure(data_dir: &Path, names: &ServingNames) -> Result<Self, TlsError> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
            action: "cannot create",
            path: dir.clone(),
            source,
        })?;
        let year = this_year();
        let (ca_key, ca_key_pem) = ensure_key(&dir.join("ca.key"))?;
        let ca_path = dir.join("ca.crt");
        let ca_cert_pem = match read(&ca_path)? {
            Some(pem) => pem,
            None => {
                let cert = ca_params(year).self_signed(&ca_key).map_err(cert_err)?;
                let pem = cert.pem();
                write(&ca_path, &pem, 0o644)?;
                pem
            }
        };
        let (serving_key, serving_key_pem) = ensure_key(&dir.join("apiserver.key"))?;
        let leaf_path = dir.join("apiserver.crt");
        let stamp_path = dir.join("apiserver.names");
        // The stamp: the names, then the year the certificate ends.
        let stamp = read(&stamp_path)?.unwrap_or_default();
        let fresh = stamp.lines().next() == Some(names.fingerprint().as_str())
            && stamp
                .lines()
                .nth(1)
                .and_then(|y| y.parse::<i32>().ok())
                .is_some_and(|end| end > year);
        let leaf_pem = match read(&leaf_path)? {
            Some(pem) if fresh => pem,
            _ => {
                // The CA's subject and key are what a certificate's issuer is checked by.
                let issuer = Issuer::new(ca_params(year), &ca_key);
                let mut p = serving_params("kube-apiserver", names)?;
                p.use_authority_key_identifier_extension = true;
                p.not_before = date_time_ymd(year - 1, 1, 1);
                p.not_after = date_time_ymd(year + 2, 1, 1);
                let cert = p.signed_by(&serving_key, &issuer).map_err(cert_err)?;
                let pem = cert.pem();
                write(&leaf_path, &pem, 0o644)?;
                write(
                    &stamp_path,
                    &format!("{}\n{}\n", names.fingerprint(), year + 1),
                    0o644,
                )?;
                pem
            }
        };
        let (_, service_account_key_pem) = ensure_key(&dir.join("sa.key"))?;
        Ok(Self {
            dir,
            serving_cert_pem: format!("{leaf_pem}{ca_cert_pem}"),
            ca_cert_pem,
            ca_key_pem,
            serving_key_pem,
            service_account_key_pem,
        })
    }

    /// A client certificate signed by the cluster CA, as kube-apiserver authenticates them:
    /// CN = `user`, O = the group. Valid for a year (new key each call). At most one group:
    /// rcgen writes one value per subject attribute, so more are refused rather than lost
    /// (bind further groups' roles to the user, or use a token).
    pub fn issue_client_cert(&self, user: &str, groups: &[&str]) -> Result<Credentials, TlsError> {
        if groups.len() > 1 {
            return Err(TlsError::Cert(format!(
                "a client certificate holds one group here, not {} ({})",
                groups.len(),
                groups.join(", ")
            )));
        }
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user);
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(p, 1)
    }

    /// A serving certificate signed by the cluster CA for `names` (a node agent's endpoint:
    /// CN = `system:node:<name>`). Valid for two years (new key each call).
    pub fn issue_serving_cert(
        &self,
        common_name: &str,
        names: &ServingNames,
    ) -> Result<Credentials, TlsError> {
        self.issue(serving_params(common_name, names)?, 2)
    }

    fn issue(&self, mut p: CertificateParams, years: i32) -> Result<Credentials, TlsError> {
        let year = this_year();
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(cert_err)?;
        let issuer = Issuer::new(ca_params(year), &ca_key);
        p.use_authority_key_identifier_extension = true;
        p.not_before = date_time_ymd(year - 1, 1, 1);
        p.not_after = date_time_ymd(year + years, 1, 1);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let cert = p.signed_by(&key, &issuer).map_err(cert_err)?;
        Ok(Credentials {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The admin's client certificate (`kubernetes-admin` in `system:masters`), kept in
    /// `admin.crt` / `admin.key` (0600) and made at first use.
    pub fn ensure_admin(&self) -> Result<Credentials, TlsError> {
        let (cert_path, key_path) = (self.dir.join("admin.crt"), self.dir.join("admin.key"));
        if let (Some(cert_pem), Some(key_pem)) = (read(&cert_path)?, read(&key_path)?) {
            return Ok(Credentials { cert_pem, key_pem });
        }
        let creds =
            self.issue_client_cert(crate::auth::users::ADMIN, &[crate::auth::groups::MASTERS])?;
        write(&key_path, &creds.key_pem, 0o600)?;
        write(&cert_path, &creds.cert_pem, 0o600)?;
        Ok(creds)
    }

    /// The CA certificate file (`ca.crt`).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A verifier of client certificates against the cluster CA (what the x509
    /// authenticator checks a request's certificate with).
    pub fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        client_verifier(&self.ca_cert_pem)
    }

    /// A rustls server configuration for the serving certificate (ALPN h2, http/1.1) that
    /// asks clients for a certificate without requiring one: the x509 authenticator checks
    /// it, so a certificate of another CA is a `401`, as kube-apiserver answers, rather than
    /// a failed handshake.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.serving_cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Config(format!("serving certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.serving_key_pem.as_bytes())
            .map_err(|e| TlsError::Config(format!("serving key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(AskForClientCert {
                inner: self.client_verifier()?,
            }))
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A verifier of client certificates signed by `ca_pem`.
pub fn client_verifier(ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))
}

/// Asks for a client certificate and checks that the client holds its key (the handshake
/// signature), but leaves the certificate's chain to the x509 authenticator.
#[derive(Debug)]
struct AskForClientCert {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for AskForClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS listener serving the API's router.
pub struct TlsListener {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Stops accepting; open connections end gracefully (cut after 2 s).
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Binds `addr` and serves `app` over TLS with `config` (see [`crate::edge::serve`]).
pub async fn serve_tls(
    addr: SocketAddr,
    config: rustls::ServerConfig,
    app: Router,
    limits: &Limits,
) -> Result<TlsListener, TlsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TlsError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| TlsError::Listen { addr, source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = limits.clone();
    let task = tokio::spawn(async move {
        crate::edge::serve(listener, app, &limits, Some(acceptor), async {
            let _ = stop_rx.await;
        })
        .await;
    });
    tracing::info!(addr = %bound, "API server listening (TLS)");
    Ok(TlsListener {
        addr: bound,
        stop: Some(stop),
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ServingNames {
        ServingNames::for_cluster(
            "cluster.local",
            "10.96.0.1".parse().unwrap(),
            &["10.244.0.1".parse().unwrap()],
        )
    }

    #[test]
    fn pki_is_made_once_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::ensure(dir.path(), &names()).unwrap();
        for key in ["ca.key", "apiserver.key", "sa.key"] {
            let mode = std::fs::metadata(a.dir.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let b = Pki::ensure(dir.path(), &names()).unwrap();
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(a.serving_cert_pem, b.serving_cert_pem);
        assert_eq!(a.service_account_key_pem, b.service_account_key_pem);
        // Other names: a new serving certificate from the same CA and key.
        let other = ServingNames::for_cluster(
            "cluster.local",
            "10.96.0.1".parse().unwrap(),
            &["10.245.3.1".parse().unwrap()],
        );
        let c = Pki::ensure(dir.path(), &other).unwrap();
        assert_eq!(a.ca_cert_pem, c.ca_cert_pem);
        assert_ne!(a.serving_cert_pem, c.serving_cert_pem);
        assert_eq!(a.serving_key_pem, c.serving_key_pem);
        c.server_config().unwrap();
    }
}
