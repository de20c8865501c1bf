//! `ferry tenant add/list/remove`: a team's share of the cluster in one command. A pure API
//! client (the admin's kubeconfig, `<data dir>/kubeconfig` by default), so it works against
//! `ferry up` and against any Kubernetes cluster whose signer issues
//! `kubernetes.io/kube-apiserver-client` certificates.
//!
//! A tenant is a namespace labelled `ferry.dev/tenant: <name>` holding:
//! - Pod Security Admission labels (`enforce`, `warn` and `audit` at one level, `restricted`
//!   by default);
//! - the queue binding `scheduling.ferry.dev/queue: <queue>`, the Queue itself created with a
//!   GPU guarantee when missing (and then removed with the tenant);
//! - the ResourceQuota [`QUOTA_NAME`] (`requests.nvidia.com/gpu`, plus cpu, memory and pods
//!   when given);
//! - the RoleBinding [`ROLE_BINDING_NAME`] of the ClusterRole `admin` to its users and groups;
//! - for `--user`: a client certificate from a CertificateSigningRequest (`CN=<user>,
//!   O=ferry:tenant:<name>`) that the admin approves, and a kubeconfig for that user.
//!
//! `add` is idempotent: it applies the same objects again (server-side apply), adds the user
//! or group to the binding, and issues a fresh certificate for `--user`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::{RoleBinding, Subject};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use ferry_api::scheduling::{QUEUE_LABEL, Queue};

/// The label naming the tenant a namespace (and its Queue and CSRs) belongs to.
pub const TENANT_LABEL: &str = "ferry.dev/tenant";

/// The annotation of a tenant namespace whose Queue `ferry tenant add` created.
pub const QUEUE_CREATED_ANNOTATION: &str = "ferry.dev/tenant-created-queue";

/// The tenant's ResourceQuota.
pub const QUOTA_NAME: &str = "tenant-quota";

/// The tenant's RoleBinding (ClusterRole `admin`).
pub const ROLE_BINDING_NAME: &str = "tenant-admin";

/// The group every tenant user's certificate carries: `ferry:tenant:<name>`.
pub fn tenant_group(name: &str) -> String {
    format!("ferry:tenant:{name}")
}

/// The signer of tenant users' client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

const FIELD_MANAGER: &str = "ferry-tenant";

/// `ferry tenant ...`.
#[derive(Debug, Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create or update a tenant: namespace, Pod Security level, queue, ResourceQuota, admin
    /// binding, and for `--user` a client certificate and kubeconfig.
    Add(Box<AddArgs>),
    /// List the tenants: quotas, GPUs used, queues, users and groups.
    List(ClusterArgs),
    /// Remove a tenant: its namespace and everything in it (and its queue, if `add` made it).
    Remove(RemoveArgs),
}

/// How to reach the cluster as its admin.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The admin's kubeconfig [default: <data dir>/kubeconfig].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The data directory of `ferry up` (for its kubeconfig).
    #[arg(long, env = "FERRY_DATA_DIR", default_value_os_t = crate::commands::default_data_dir())]
    pub data_dir: PathBuf,
}

impl ClusterArgs {
    fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig
            .clone()
            .unwrap_or_else(|| self.data_dir.join("kubeconfig"))
    }
}

/// Arguments of `ferry tenant add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The tenant's name (also its namespace's): a DNS label.
    pub name: String,
    /// GPUs the tenant may request (`requests.nvidia.com/gpu` of its ResourceQuota and its
    /// queue's guarantee when the queue is created).
    #[arg(long)]
    pub gpus: u32,
    /// CPU the tenant's pods may request in all (`requests.cpu`), such as `32` or `500m`.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory the tenant's pods may request in all (`requests.memory`), such as `256Gi`.
    #[arg(long)]
    pub memory: Option<String>,
    /// Pods the tenant may have at once.
    #[arg(long)]
    pub pods: Option<u32>,
    /// The scheduling queue of the tenant's pods [default: the tenant's name].
    #[arg(long)]
    pub queue: Option<String>,
    /// A user to bind as the namespace's admin; a client certificate and kubeconfig are made
    /// for them.
    #[arg(long, conflicts_with = "group")]
    pub user: Option<String>,
    /// A group to bind as the namespace's admin.
    #[arg(long)]
    pub group: Option<String>,
    /// The Pod Security Admission level enforced in the namespace.
    #[arg(long, default_value = "restricted", value_parser = ["restricted", "baseline", "privileged"])]
    pub pod_security: String,
    /// Where to write the user's kubeconfig [default: ./<tenant>-<user>.kubeconfig].
    #[arg(long, value_name = "PATH", requires = "user")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Validity of the user's certificate in seconds (the signer may grant less).
    #[arg(long, default_value_t = 365 * 24 * 3600)]
    pub certificate_seconds: i32,
    /// How long to wait for the signer to issue the certificate, in seconds.
    #[arg(long, default_value_t = 60)]
    pub wait_seconds: u64,
    /// PEM CA the user's kubeconfig trusts [default: the admin kubeconfig's].
    #[arg(long, value_name = "PATH")]
    pub certificate_authority: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Arguments of `ferry tenant remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The tenant's name.
    pub name: String,
    /// Confirm: the namespace and everything in it are deleted.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Runs `ferry tenant ...`.
pub async fn run(args: TenantArgs) -> anyhow::Result<()> {
    match args.command {
        TenantCommand::Add(a) => add(*a).await,
        TenantCommand::List(a) => list(a).await,
        TenantCommand::Remove(a) => remove(a).await,
    }
}

/// Why `name` cannot name a tenant (a namespace: a DNS-1123 label), if it cannot.
pub fn name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        return Some(format!(
            "invalid tenant name {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, at most 63 characters"
        ));
    }
    if name.starts_with("kube-") || ["default", "ferry-system"].contains(&name) {
        return Some(format!(
            "invalid tenant name {name:?}: reserved for the cluster's own namespaces"
        ));
    }
    None
}

fn subject_problem(kind: &str, name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some(format!("the {kind} name is empty"));
    }
    if name.starts_with("system:") {
        return Some(format!(
            "invalid {kind} {name:?}: names starting with \"system:\" are reserved for Kubernetes"
        ));
    }
    None
}

async fn admin_client(cluster: &ClusterArgs) -> anyhow::Result<(kube::Client, PathBuf)> {
    let path = cluster.kubeconfig_path();
    if !path.exists() {
        bail!(
            "no admin kubeconfig at {} (start `ferry up`, or pass --kubeconfig)",
            path.display()
        );
    }
    Ok((crate::commands::kube_client(Some(&path)).await?, path))
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    if let Some(problem) = name_problem(&args.name) {
        bail!(problem);
    }
    if let Some(user) = &args.user
        && let Some(problem) = subject_problem("user", user)
    {
        bail!(problem);
    }
    if let Some(group) = &args.group
        && let Some(problem) = subject_problem("group", group)
    {
        bail!(problem);
    }
    for (flag, value) in [("--cpu", &args.cpu), ("--memory", &args.memory)] {
        if let Some(v) = value {
            ferry_api::quantity::parse_milli(v)
                .map_err(|e| anyhow::anyhow!("invalid {flag} {v:?}: {e}"))?;
        }
    }
    let queue = args.queue.clone().unwrap_or_else(|| args.name.clone());
    if let Some(problem) = name_problem(&queue) {
        bail!("invalid --queue: {problem}");
    }
    let (client, kubeconfig_path) = admin_client(&args.cluster).await?;
    let name = args.name.as_str();
    let apply = PatchParams::apply(FIELD_MANAGER).force();

    // The queue: created (labelled as the tenant's) when missing.
    let queues: Api<Queue> = Api::all(client.clone());
    let existing_queue = queues.get_opt(&queue).await?;
    let queue_is_new = existing_queue.is_none();
    // A queue the tenant made (now or by an earlier `add`) follows `--gpus`; another stays.
    let created_queue = match &existing_queue {
        Some(q) => q.labels().get(TENANT_LABEL).map(String::as_str) == Some(name),
        None => true,
    };
    if created_queue {
        let body = json!({
            "apiVersion": "scheduling.ferry.dev/v1alpha1",
            "kind": "Queue",
            "metadata": {"name": queue, "labels": {TENANT_LABEL: name}},
            "spec": {"resources": [{"name": ferry_api::RESOURCE_NVIDIA_GPU, "guaranteed": args.gpus}]},
        });
        queues
            .patch(&queue, &apply, &Patch::Apply(body))
            .await
            .with_context(|| format!("cannot create the queue {queue}"))?;
    }

    // The namespace, its Pod Security level and queue.
    let level = args.pod_security.as_str();
    let mut annotations = BTreeMap::new();
    if created_queue {
        annotations.insert(QUEUE_CREATED_ANNOTATION, "true");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(existing) = namespaces.get_opt(name).await?
        && existing.labels().get(TENANT_LABEL).map(String::as_str) != Some(name)
    {
        bail!("namespace {name} exists and is not a Ferry tenant's; pick another name");
    }
    let ns = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                TENANT_LABEL: name,
                QUEUE_LABEL: queue,
                "pod-security.kubernetes.io/enforce": level,
                "pod-security.kubernetes.io/enforce-version": "latest",
                "pod-security.kubernetes.io/warn": level,
                "pod-security.kubernetes.io/audit": level,
            },
            "annotations": annotations,
        },
    });
    namespaces
        .patch(name, &apply, &Patch::Apply(ns))
        .await
        .with_context(|| format!("cannot create the namespace {name}"))?;

    // The ResourceQuota.
    let mut hard = serde_json::Map::new();
    hard.insert(
        format!("requests.{}", ferry_api::RESOURCE_NVIDIA_GPU),
        json!(args.gpus.to_string()),
    );
    if let Some(cpu) = &args.cpu {
        hard.insert("requests.cpu".into(), json!(cpu));
    }
    if let Some(memory) = &args.memory {
        hard.insert("requests.memory".into(), json!(memory));
    }
    if let Some(pods) = args.pods {
        hard.insert("pods".into(), json!(pods.to_string()));
    }
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), name);
    let quota = json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME, "labels": {TENANT_LABEL: name}},
        "spec": {"hard": hard},
    });
    quotas
        .patch(QUOTA_NAME, &apply, &Patch::Apply(quota))
        .await
        .with_context(|| format!("cannot write the ResourceQuota {name}/{QUOTA_NAME}"))?;

    // The admin binding: the subjects already bound, plus this user or group.
    let new_subject = match (&args.user, &args.group) {
        (Some(user), _) => Some(("User", user.clone())),
        (None, Some(group)) => Some(("Group", group.clone())),
        (None, None) => None,
    };
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), name);
    let mut subjects: Vec<Subject> = bindings
        .get_opt(ROLE_BINDING_NAME)
        .await
        .with_context(|| format!("cannot read the RoleBinding {name}/{ROLE_BINDING_NAME}"))?
        .and_then(|b| b.subjects)
        .unwrap_or_default();
    if let Some((kind, subject)) = &new_subject
        && !subjects
            .iter()
            .any(|s| s.kind == *kind && s.name == *subject)
    {
        subjects.push(Subject {
            kind: kind.to_string(),
            name: subject.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        });
    }
    if !subjects.is_empty() {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ROLE_BINDING_NAME, "labels": {TENANT_LABEL: name}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": subjects,
        });
        bindings
            .patch(ROLE_BINDING_NAME, &apply, &Patch::Apply(binding))
            .await
            .with_context(|| format!("cannot write the RoleBinding {name}/{ROLE_BINDING_NAME}"))?;
    }
    println!(
        "tenant {name}: namespace {name} (pod security {level}), queue {queue}{}, quota {} GPU{}",
        match (queue_is_new, created_queue) {
            (true, _) => " (created)",
            (false, true) => " (updated)",
            (false, false) => " (existing, unchanged)",
        },
        args.gpus,
        if args.gpus == 1 { "" } else { "s" }
    );
    if let Some((kind, subject)) = &new_subject {
        println!("  {kind} {subject} is admin of namespace {name}");
    }

    // The user's certificate and kubeconfig.
    if let Some(user) = &args.user {
        let ca = match &args.certificate_authority {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            None => admin_ca(&kubeconfig_path)?,
        };
        let server = admin_server(&kubeconfig_path)?;
        let credentials = issue_certificate(&client, name, user, &args).await?;
        let out = args
            .kubeconfig_out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{name}-{}.kubeconfig", file_safe(user))));
        let config = ferry_apiserver::kubeconfig_with(
            &server,
            &ca,
            ferry_apiserver::KubeconfigUser::Certificate(&credentials),
            name,
        );
        write_private(&out, &config)?;
        println!("  kubeconfig for {user}: {}", out.display());
    }
    Ok(())
}

/// Makes a key, asks the signer for a client certificate for `user` in the tenant's group,
/// approves the request as the admin and waits for the certificate.
async fn issue_certificate(
    client: &kube::Client,
    tenant: &str,
    user: &str,
    args: &AddArgs,
) -> anyhow::Result<ferry_apiserver::tls::Credentials> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("cannot generate a key")?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, tenant_group(tenant));
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .context("cannot make a certificate signing request")?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr_name = format!("ferry-tenant-{tenant}-{}", dns_safe(user));
    // A fresh request each time: an earlier one (and its certificate) is replaced.
    if csrs.get_opt(&csr_name).await?.is_some() {
        csrs.delete(&csr_name, &DeleteParams::default()).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while csrs.get_opt(&csr_name).await?.is_some() {
            if Instant::now() > deadline {
                bail!("the earlier CertificateSigningRequest {csr_name} is not going away");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut labels = BTreeMap::new();
    labels.insert(TENANT_LABEL.to_string(), tenant.to_string());
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            name: Some(csr_name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(request.into_bytes()),
            signer_name: CLIENT_SIGNER.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            expiration_seconds: Some(args.certificate_seconds),
            ..Default::default()
        },
        status: None,
    };
    csrs.create(&PostParams::default(), &csr)
        .await
        .with_context(|| format!("cannot create the CertificateSigningRequest {csr_name}"))?;
    let approved = CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some("FerryTenantAdd".into()),
        message: Some(format!("approved by ferry tenant add for tenant {tenant}")),
        ..Default::default()
    };
    csrs.patch_approval(
        &csr_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [approved]}})),
    )
    .await
    .with_context(|| format!("cannot approve the CertificateSigningRequest {csr_name}"))?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_seconds);
    loop {
        let csr = csrs.get(&csr_name).await?;
        let status = csr.status.unwrap_or_default();
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert_pem =
                String::from_utf8(cert.0).context("the signer's certificate is not PEM text")?;
            return Ok(ferry_apiserver::tls::Credentials {
                cert_pem,
                key_pem: key.serialize_pem(),
            });
        }
        if let Some(failed) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Failed" || c.type_ == "Denied") && c.status == "True")
        {
            bail!(
                "the CertificateSigningRequest {csr_name} was not signed: {} {}: {}",
                failed.type_,
                failed.reason.as_deref().unwrap_or_default(),
                failed.message.as_deref().unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {}s waiting for the signer {CLIENT_SIGNER} to issue the certificate of CertificateSigningRequest {csr_name} (is a signer running: `ferry up`, or kube-controller-manager with --cluster-signing-cert-file?)",
                args.wait_seconds
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The current context's cluster of a kubeconfig.
fn current_cluster(path: &Path) -> anyhow::Result<kube::config::Cluster> {
    let config = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    let context_name = config.current_context.clone().unwrap_or_default();
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
        .with_context(|| format!("{} has no current context", path.display()))?;
    config
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .with_context(|| format!("{} names no cluster {}", path.display(), context.cluster))
}

fn admin_server(path: &Path) -> anyhow::Result<String> {
    current_cluster(path)?
        .server
        .with_context(|| format!("the cluster of {} has no server", path.display()))
}

/// The CA (PEM) the admin kubeconfig trusts.
fn admin_ca(path: &Path) -> anyhow::Result<String> {
    let cluster = current_cluster(path)?;
    if let Some(data) = cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("the admin kubeconfig's certificate-authority-data is not base64")?;
        return String::from_utf8(pem).context("the admin kubeconfig's CA is not PEM text");
    }
    if let Some(file) = cluster.certificate_authority {
        return std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"));
    }
    bail!(
        "the admin kubeconfig {} names no certificate authority; pass --certificate-authority",
        path.display()
    )
}

/// Writes `contents` to `path`, readable by its owner only (a private key is inside).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn dns_safe(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    mapped.trim_matches(|c| c == '-' || c == '.').to_string()
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One row of `ferry tenant list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// The tenant (and namespace).
    pub name: String,
    /// `requests.nvidia.com/gpu` of its quota.
    pub gpus: String,
    /// GPUs its pods request now.
    pub gpus_used: String,
    /// Its queue.
    pub queue: String,
    /// `User:alice`, `Group:team-a`… bound as admin.
    pub subjects: Vec<String>,
}

/// The tenants of the cluster behind `client`.
pub async fn tenants(client: &kube::Client) -> anyhow::Result<Vec<TenantRow>> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut rows = Vec::new();
    for ns in namespaces
        .list(&ListParams::default().labels(TENANT_LABEL))
        .await?
    {
        let name = ns.name_any();
        let quota = Api::<ResourceQuota>::namespaced(client.clone(), &name)
            .get_opt(QUOTA_NAME)
            .await
            .ok()
            .flatten();
        let gpu_key = format!("requests.{}", ferry_api::RESOURCE_NVIDIA_GPU);
        let hard = quota
            .as_ref()
            .and_then(|q| q.spec.as_ref()?.hard.as_ref()?.get(&gpu_key).cloned());
        let used = quota
            .as_ref()
            .and_then(|q| q.status.as_ref()?.used.as_ref()?.get(&gpu_key).cloned());
        let subjects = Api::<RoleBinding>::namespaced(client.clone(), &name)
            .get_opt(ROLE_BINDING_NAME)
            .await
            .ok()
            .flatten()
            .and_then(|b| b.subjects)
            .unwrap_or_default()
            .into_iter()
            .map(|s| format!("{}:{}", s.kind, s.name))
            .collect();
        rows.push(TenantRow {
            gpus: hard.map_or_else(|| "-".into(), |q| q.0),
            gpus_used: used.map_or_else(|| "0".into(), |q| q.0),
            queue: ns
                .labels()
                .get(QUEUE_LABEL)
                .cloned()
                .unwrap_or_else(|| "-".into()),
            subjects,
            name,
        });
    }
    Ok(rows)
}

/// The table `ferry tenant list` prints.
pub fn table(rows: &[TenantRow]) -> String {
    let header = [
        "NAME",
        "NAMESPACE",
        "GPUS",
        "GPUS-USED",
        "QUEUE",
        "USERS/GROUPS",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.name.clone(),
                r.gpus.clone(),
                r.gpus_used.clone(),
                r.queue.clone(),
                if r.subjects.is_empty() {
                    "<none>".into()
                } else {
                    r.subjects.join(",")
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cols: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}   ", width = widths[i]));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

async fn list(cluster: ClusterArgs) -> anyhow::Result<()> {
    let (client, _) = admin_client(&cluster).await?;
    let rows = tenants(&client).await?;
    if rows.is_empty() {
        println!("No tenants.");
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    if let Some(problem) = name_problem(name) {
        bail!(problem);
    }
    let (client, _) = admin_client(&args.cluster).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = namespaces.get_opt(name).await? else {
        bail!("no tenant {name}: namespace {name} does not exist");
    };
    if ns.labels().get(TENANT_LABEL).map(String::as_str) != Some(name) {
        bail!("namespace {name} is not a Ferry tenant's (no label {TENANT_LABEL}={name})");
    }
    if !args.yes {
        bail!(
            "removing tenant {name} deletes namespace {name} and everything in it; run again with --yes to confirm"
        );
    }
    let queue = ns.labels().get(QUEUE_LABEL).cloned();
    let created_queue = ns
        .annotations()
        .get(QUEUE_CREATED_ANNOTATION)
        .is_some_and(|v| v == "true");
    namespaces
        .delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("cannot delete namespace {name}"))?;
    println!("namespace {name} deleted");
    if created_queue && let Some(queue) = queue {
        let queues: Api<Queue> = Api::all(client.clone());
        if let Some(q) = queues.get_opt(&queue).await?
            && q.labels().get(TENANT_LABEL).map(String::as_str) == Some(name)
        {
            queues.delete(&queue, &DeleteParams::default()).await?;
            println!("queue {queue} deleted");
        }
    }
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let selector = format!("{TENANT_LABEL}={name}");
    if let Ok(list) = csrs.list(&ListParams::default().labels(&selector)).await {
        for csr in list {
            let _ = csrs.delete(&csr.name_any(), &DeleteParams::default()).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_dns_labels_and_not_the_clusters_own() {
        assert!(name_problem("team-a").is_none());
        assert!(name_problem("Team_A").unwrap().contains("RFC 1123"));
        assert!(name_problem("-a").is_some());
        assert!(name_problem(&"a".repeat(64)).is_some());
        assert!(name_problem("kube-system").unwrap().contains("reserved"));
        assert!(subject_problem("user", "system:admin").is_some());
        assert!(subject_problem("user", "alice@example.com").is_none());
    }

    #[test]
    fn the_table_aligns_columns() {
        let rows = vec![TenantRow {
            name: "team-a".into(),
            gpus: "8".into(),
            gpus_used: "2".into(),
            queue: "team-a".into(),
            subjects: vec!["User:alice".into(), "Group:ml".into()],
        }];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("NAME     NAMESPACE   GPUS   GPUS-USED   QUEUE    USERS/GROUPS"),
            "{t}"
        );
        assert!(lines[1].ends_with("User:alice,Group:ml"), "{t}");
        assert_eq!(dns_safe("Alice@Example.com"), "alice-example.com");
    }
}
