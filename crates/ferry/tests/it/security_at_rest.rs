//! Secrets at rest (issue 9, points 7 and 8): Secrets are encrypted in the store (kube-apiserver's
//! EncryptionConfiguration, `aesgcm`), never found in plain form under the data directory while
//! kubectl reads them back, across restarts and key rotation; a wrong key stops the start; the
//! data directory and every file with secret material is owner-only; request bodies a browser
//! sends cross-site (`text/plain` and friends) get `415` and create nothing.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use ferry::up::{ControlPlane, UpConfig};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;
use serde_json::Value;

use common::TestPlane;

const WAIT: Duration = Duration::from_secs(30);

/// `n` random bytes.
fn random(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("random bytes");
    bytes
}

/// A random value no file could hold by chance (hex, so kubectl takes it as a literal).
fn random_value() -> String {
    random(16).iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn data_dir(t: &TestPlane) -> PathBuf {
    t.dir.path().join("data")
}

fn encryption_config(t: &TestPlane) -> PathBuf {
    data_dir(t).join("pki").join("encryption-config.yaml")
}

/// Every file under `dir` whose bytes contain `needle` (a `grep -r` that also reads the
/// binary files: the SQLite database, its WAL, the side files).
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files += 1;
                let bytes = std::fs::read(entry.path()).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(entry.path());
                }
            }
        }
    }
    assert!(files >= 4, "only {files} files under {}", dir.display());
    found
}

/// Asserts that neither `value` nor its base64 form (a Secret's `data`) is anywhere under the
/// data directory.
#[track_caller]
fn assert_nowhere_in_plain(t: &TestPlane, value: &str) {
    for needle in [value.to_string(), b64(value.as_bytes())] {
        let found = files_containing(&data_dir(t), needle.as_bytes());
        assert!(
            found.is_empty(),
            "the secret {needle:?} is in plain form in {found:?}"
        );
    }
}

/// The value of key `password` of Secret `name`, as kubectl reads it.
fn read_secret(t: &TestPlane, name: &str) -> String {
    let encoded = t
        .kubectl(&["get", "secret", name, "-o", "jsonpath={.data.password}"])
        .success();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap(),
    )
    .unwrap()
}

/// A control plane on `t`'s data directory and network plan (the one before must be stopped).
fn config_like(t: &TestPlane) -> UpConfig {
    let mut config = UpConfig::new(data_dir(t));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.agent = None;
    config.network = t.network.clone();
    config.token_file = Some(t.dir.path().join("tokens.csv"));
    config
}

/// Starts a control plane with `config`, or panics with its error.
async fn start(config: UpConfig) -> ControlPlane {
    ControlPlane::start(config)
        .await
        .expect("control plane starts")
}

/// Stops `$t`'s plane and puts one started with `$config` on the same data directory in its
/// place (a macro: the plane moves out of the harness's struct while it restarts).
macro_rules! restart {
    ($t:ident, $config:expr) => {{
        let config = $config;
        let plane = $t.plane;
        plane.stop().await;
        $t.plane = start(config).await;
        $t.client = $t.plane.client().await.expect("client");
    }};
}

/// An EncryptionConfiguration encrypting Secrets with `keys` (name, 32-byte secret) in order,
/// `identity` last.
fn aesgcm_config(keys: &[(&str, &[u8])]) -> String {
    let keys: String = keys
        .iter()
        .map(|(name, secret)| {
            format!(
                "            - name: {name}\n              secret: {}\n",
                b64(secret)
            )
        })
        .collect();
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n      - aesgcm:\n          keys:\n{keys}      - identity: {{}}\n"
    )
}

/// The `secret:` of key `name` in the configuration `text`.
fn key_secret(text: &str, name: &str) -> Vec<u8> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.contains(&format!("name: {name}")));
    lines.next().expect("the key is in the file");
    let secret = lines
        .next()
        .unwrap()
        .trim()
        .strip_prefix("secret: ")
        .unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(secret)
        .unwrap()
}

fn write_config(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The `ferry` binary's `store check` on `dir` (the plane stopped): its output, or a panic
/// when it finds a problem.
fn store_check(dir: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["store", "check", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("ferry store check runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ferry store check failed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_across_restarts_rotation_and_a_wrong_key() {
    let mut t = common::start().await;
    let base = config_like(&t);
    let dir = data_dir(&t);
    let config = encryption_config(&t);
    let value = random_value();
    t.kubectl(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={value}"),
    ])
    .success();
    assert_eq!(read_secret(&t, "db"), value);
    // An update writes a second row; a ConfigMap shows that other kinds are stored as they
    // are (the search below can find what is there).
    let second = random_value();
    t.kubectl(&[
        "patch",
        "secret",
        "db",
        "-p",
        &format!("{{\"stringData\":{{\"second\":\"{second}\"}}}}"),
    ])
    .success();
    let marker = random_value();
    t.kubectl(&[
        "create",
        "configmap",
        "plain",
        &format!("--from-literal=v={marker}"),
    ])
    .success();
    assert!(
        !files_containing(&data_dir(&t), marker.as_bytes()).is_empty(),
        "the search does not see what the store wrote"
    );
    assert_nowhere_in_plain(&t, &value);
    assert_nowhere_in_plain(&t, &second);
    let state_db = std::fs::read(data_dir(&t).join("state.db")).unwrap_or_default();
    let wal = std::fs::read(data_dir(&t).join("state.db-wal")).unwrap_or_default();
    let prefix = b"k8s:enc:aesgcm:v1:key1:";
    assert!(
        [&state_db, &wal]
            .iter()
            .any(|f| f.windows(prefix.len()).any(|w| w == prefix)),
        "no value in kube-apiserver's aesgcm envelope in the store"
    );

    // Restarted on the same data directory: read back; the check needs no key.
    let plane = t.plane;
    plane.stop().await;
    let report = store_check(&dir);
    assert!(report.contains("intact"), "{report}");
    t.plane = start(base.clone()).await;
    t.client = t.plane.client().await.unwrap();
    assert_eq!(read_secret(&t, "db"), value);
    assert_nowhere_in_plain(&t, &value);

    // Rotation: key2 first, key1 still listed. After the restart every Secret is under key2.
    let text = std::fs::read_to_string(&config).unwrap();
    let key1 = key_secret(&text, "key1");
    let key2 = random(32);
    write_config(&config, &aesgcm_config(&[("key2", &key2), ("key1", &key1)]));
    restart!(t, base.clone());
    assert_eq!(read_secret(&t, "db"), value);
    let plane = t.plane;
    plane.stop().await;
    let db = [
        std::fs::read(dir.join("state.db")).unwrap(),
        std::fs::read(dir.join("state.db-wal")).unwrap_or_default(),
    ]
    .concat();
    let has = |needle: &[u8]| db.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"k8s:enc:aesgcm:v1:key2:"),
        "not re-encrypted with the new key"
    );
    assert!(
        !has(b"k8s:enc:aesgcm:v1:key1:"),
        "a row is left under the old key"
    );
    // key1 can go now.
    write_config(&config, &aesgcm_config(&[("key2", &key2)]));
    t.plane = start(base.clone()).await;
    t.client = t.plane.client().await.unwrap();
    assert_eq!(read_secret(&t, "db"), value);

    // A wrong secret under the right name: a clear start error, nothing changed.
    let plane = t.plane;
    plane.stop().await;
    let before = std::fs::read(dir.join("state.db")).unwrap();
    write_config(&config, &aesgcm_config(&[("key2", &random(32))]));
    let error = match ControlPlane::start(base.clone()).await {
        Ok(_) => panic!("the control plane started with a key that cannot read its Secrets"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("cannot be decrypted with aesgcm key \"key2\"")
            && error.contains("secrets \"db\" in namespace \"default\"")
            && error.contains("Nothing was changed"),
        "unclear error: {error}"
    );
    // A file without the key: the error names the key that is missing.
    write_config(&config, &aesgcm_config(&[("key9", &random(32))]));
    let error = match ControlPlane::start(base.clone()).await {
        Ok(_) => panic!("the control plane started without the key of its Secrets"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("encrypted with aesgcm key \"key2\", which")
            && error.contains("does not hold"),
        "unclear error: {error}"
    );
    assert_eq!(std::fs::read(dir.join("state.db")).unwrap(), before);
    // The right key again: everything is there.
    write_config(&config, &aesgcm_config(&[("key2", &key2)]));
    t.plane = start(base.clone()).await;
    t.client = t.plane.client().await.unwrap();
    assert_eq!(read_secret(&t, "db"), value);
    let configmaps: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    assert!(configmaps.get("plain").await.is_ok());
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stored_in_plain_form_before_are_encrypted_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    // The store as it was before encryption: an identity-only configuration.
    let identity = dir.path().join("identity.yaml");
    write_config(
        &identity,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n",
    );
    let mut t = common::start_with(|c| c.encryption_provider_config = Some(identity.clone())).await;
    let base = config_like(&t);
    let data = data_dir(&t);
    let value = random_value();
    t.kubectl(&[
        "create",
        "secret",
        "generic",
        "old",
        &format!("--from-literal=password={value}"),
    ])
    .success();
    // Plain on disk (the search finds it: this is what the encryption below removes).
    let plane = t.plane;
    plane.stop().await;
    assert!(
        !files_containing(&data, b64(value.as_bytes()).as_bytes()).is_empty(),
        "an identity configuration should have stored the Secret as it is"
    );
    // The default configuration (aesgcm first, identity to read the old rows): the rows are
    // rewritten in place when the store opens.
    t.plane = start(base.clone()).await;
    t.client = t.plane.client().await.unwrap();
    assert_eq!(read_secret(&t, "old"), value);
    assert_nowhere_in_plain(&t, &value);
    t.plane.stop().await;
}

/// A request through the admin's kube-rs client (its credentials, its transport): the answer's
/// status code and body.
async fn raw(
    t: &TestPlane,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("origin", "https://evil.example");
    if let Some(c) = content_type {
        request = request.header("content-type", c);
    }
    send(
        &t.client,
        request.body(body.as_bytes().to_vec()).unwrap(),
        method,
        path,
    )
    .await
}

/// Sends `request` through `client`: the status code and body of the answer.
async fn send(
    client: &kube::Client,
    request: http::Request<Vec<u8>>,
    method: &str,
    path: &str,
) -> (u16, Value) {
    match client.request_text(request).await {
        Ok(text) => (200, serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(kube::Error::Api(s)) => (s.code, serde_json::to_value(&*s).unwrap()),
        Err(other) => panic!("{method} {path}: no API answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_a_browser_sends_cross_site_get_415_and_create_nothing() {
    let t = common::start().await;
    let configmap =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"csrf"},"data":{"a":"b"}}"#;
    let path = "/api/v1/namespaces/default/configmaps";
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=----x"),
        None,
    ] {
        let (code, status) = raw(&t, "POST", path, content_type, configmap).await;
        assert_eq!(code, 415, "POST with {content_type:?}: {status}");
        assert_eq!(status["reason"], "UnsupportedMediaType", "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains("the body of the request was in an unknown format"),
            "{status}"
        );
    }
    // PUT and PATCH of an existing object: refused too, the object unchanged.
    t.kubectl(&["create", "configmap", "target", "--from-literal=a=1"])
        .success();
    let replace =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"target"},"data":{"a":"2"}}"#;
    let (code, status) = raw(
        &t,
        "PUT",
        &format!("{path}/target"),
        Some("text/plain"),
        replace,
    )
    .await;
    assert_eq!(code, 415, "{status}");
    let (code, status) = raw(
        &t,
        "PATCH",
        &format!("{path}/target"),
        Some("text/plain"),
        r#"{"data":{"a":"3"}}"#,
    )
    .await;
    assert_eq!(code, 415, "{status}");
    let configmaps: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    assert!(
        configmaps.get_opt("csrf").await.unwrap().is_none(),
        "a text/plain POST created an object"
    );
    let target = configmaps.get("target").await.unwrap();
    assert_eq!(target.data.unwrap()["a"], "1");
    // The API's own types still work: JSON (kube-rs), YAML, and kubectl's apply and patch.
    let (code, status) = raw(&t, "POST", path, Some("application/json"), configmap).await;
    assert_eq!(code, 200, "{status}");
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n";
    let (code, status) = raw(&t, "POST", path, Some("application/yaml"), yaml).await;
    assert_eq!(code, 200, "{status}");
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied}\ndata: {a: b}\n",
    )
    .success();
    t.kubectl(&[
        "patch",
        "configmap",
        "target",
        "-p",
        r#"{"data":{"a":"4"}}"#,
    ])
    .success();
    t.kubectl(&[
        "patch",
        "configmap",
        "target",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/a","value":"5"}]"#,
    ])
    .success();
    assert_eq!(
        configmaps.get("target").await.unwrap().data.unwrap()["a"],
        "5"
    );
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_files_with_secret_material_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let t = common::start_with_node("1xA100-80GB").await;
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: talker}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'echo hello']\n";
    t.kubectl_stdin(&["apply", "-f", "-"], manifest).success();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    common::eventually("talker to succeed", WAIT, async || {
        let phase = pods.get_opt("talker").await.ok().flatten()?.status?.phase;
        (phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    assert_eq!(t.kubectl(&["logs", "talker"]).success(), "hello\n");
    let data = data_dir(&t);
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "the data directory");
    assert_eq!(mode(&data.join("pki")), 0o700, "the pki directory");
    for name in [
        "state.db",
        "state.db-wal",
        "state.db-shm",
        "kubeconfig",
        "pki/encryption-config.yaml",
        "pki/ca.key",
        "pki/sa.key",
    ] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    // The container's log files (`log`) and the supervisor's (`shim.log`) of every attempt.
    let mut logs = Vec::new();
    let mut pending = vec![data.join("agent")];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else if matches!(entry.file_name().to_str(), Some("log" | "shim.log")) {
                logs.push(entry.path());
            }
        }
    }
    assert!(logs.len() >= 2, "no pod log files found: {logs:?}");
    for log in &logs {
        assert_eq!(
            mode(log) & 0o077,
            0,
            "{} is readable by others",
            log.display()
        );
    }
    t.plane.stop().await;
}
