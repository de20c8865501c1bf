//! Encryption at rest, as kube-apiserver does it: an `EncryptionConfiguration`
//! (`apiserver.config.k8s.io/v1`, the file `--encryption-provider-config` names) lists, per
//! resource, providers in order: the first encrypts every write, all of them decrypt.
//! Ferry's providers are `aesgcm` (AES-GCM from `ring`, 16- or 32-byte keys, a random 96-bit
//! nonce per write) and `identity` (plain). Values are stored as kube-apiserver stores them
//! in etcd: `k8s:enc:aesgcm:v1:<key name>:` + nonce + ciphertext and tag, with the object's
//! storage key (`/registry/<resource>/<namespace>/<name>`) as authenticated data, so a
//! ciphertext moved to another object does not decrypt.
//!
//! Without an explicit file the server creates `<data dir>/pki/encryption-config.yaml`
//! (mode 0600) at first start, encrypting `secrets` with a fresh random 32-byte key, `identity`
//! second so Secrets written before encryption stay readable. The store rewrites every row
//! whose stored form is stale (plain, an older key, or encrypted where the first provider is
//! now `identity`) in place when it opens, so after one restart no Secret is left on disk in
//! an older form; a row no configured key can read stops the start ([`ferry_store`]'s
//! `Unreadable` error).
//!
//! Rotating a key: put the new key first in the `aesgcm` provider's `keys`, keep the old one
//! after it, restart (every Secret is re-encrypted with the new key), then remove the old one.
//! With random nonces a key should encrypt fewer than 2^32 values, as kube-apiserver's
//! documentation says of `aesgcm`; rotate well before.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use base64::Engine;
use ferry_store::{FromStorage, ObjectKey, ValueTransformer};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use thiserror::Error;

/// The file name of the configuration created in `<data dir>/pki` when none is given.
pub const DEFAULT_FILE: &str = "encryption-config.yaml";

/// Every stored value a provider wrote starts with this.
const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// Why the encryption configuration cannot be used.
#[derive(Debug, Error)]
#[error("encryption configuration {}: {message}", path.display())]
pub struct EncryptionError {
    /// The configuration file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// `EncryptionConfiguration` as written in the file (the fields Ferry reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    resources: Vec<FileResources>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileResources {
    resources: Vec<String>,
    providers: Vec<FileProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    #[serde(default)]
    aesgcm: Option<FileKeys>,
    #[serde(default)]
    identity: Option<serde_json::Value>,
    #[serde(default)]
    aescbc: Option<serde_json::Value>,
    #[serde(default)]
    secretbox: Option<serde_json::Value>,
    #[serde(default)]
    kms: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    keys: Vec<FileKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    name: String,
    secret: String,
}

/// One provider of a resource entry, keys decoded.
#[derive(Debug)]
enum Provider {
    /// AES-GCM with named keys, the first one encrypting.
    AesGcm(Vec<NamedKey>),
    /// Values stored as they are.
    Identity,
}

struct NamedKey {
    name: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One `resources` entry: which resources, and their providers in order.
#[derive(Debug)]
struct Rule {
    /// As written: `secrets`, `deployments.apps`, `*.apps`, `*.` (all core), `*.*` (all).
    resources: Vec<String>,
    providers: Vec<Provider>,
}

/// The store's view of an object's resource (`secrets`, `apps/deployments`) as an
/// EncryptionConfiguration names it (`secrets`, `deployments.apps`) matches `pattern`.
fn matches(pattern: &str, store_resource: &str) -> bool {
    let (group, plural) = store_resource
        .split_once('/')
        .unwrap_or(("", store_resource));
    match pattern.split_once('.') {
        None => group.is_empty() && pattern == plural,
        Some(("*", "*")) => true,
        Some(("*", g)) => g == group,
        Some((p, g)) => p == plural && g == group,
    }
}

/// The storage key kube-apiserver authenticates an encrypted value with.
fn authenticated_data(key: &ObjectKey) -> String {
    if key.namespace.is_empty() {
        format!("/registry/{}/{}", key.resource, key.name)
    } else {
        format!("/registry/{}/{}/{}", key.resource, key.namespace, key.name)
    }
}

/// A loaded `EncryptionConfiguration`: the store's [`ValueTransformer`].
#[derive(Debug)]
pub struct EncryptionConfig {
    path: PathBuf,
    rules: Vec<Rule>,
    random: SystemRandomDebug,
}

/// `SystemRandom`, printable.
struct SystemRandomDebug(SystemRandom);

impl std::fmt::Debug for SystemRandomDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemRandom")
    }
}

impl EncryptionConfig {
    /// Parses the configuration in `text` (read from `path`, named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, EncryptionError> {
        let fail = |message: String| EncryptionError {
            path: path.to_path_buf(),
            message,
        };
        let file: FileConfig = serde_saphyr::from_str(text)
            .map_err(|e| fail(format!("not a valid EncryptionConfiguration: {e}")))?;
        if let Some(kind) = &file.kind
            && kind != "EncryptionConfiguration"
        {
            return Err(fail(format!(
                "kind is {kind:?}, expected \"EncryptionConfiguration\""
            )));
        }
        if let Some(version) = &file.api_version
            && version != "apiserver.config.k8s.io/v1"
        {
            return Err(fail(format!(
                "apiVersion is {version:?}, expected \"apiserver.config.k8s.io/v1\""
            )));
        }
        let mut rules = Vec::new();
        for (i, entry) in file.resources.into_iter().enumerate() {
            if entry.resources.is_empty() {
                return Err(fail(format!("resources[{i}].resources is empty")));
            }
            if entry.providers.is_empty() {
                return Err(fail(format!("resources[{i}].providers is empty")));
            }
            let mut providers = Vec::new();
            for (j, p) in entry.providers.into_iter().enumerate() {
                let at = format!("resources[{i}].providers[{j}]");
                let set = [
                    p.aesgcm.is_some(),
                    p.identity.is_some(),
                    p.aescbc.is_some(),
                    p.secretbox.is_some(),
                    p.kms.is_some(),
                ]
                .iter()
                .filter(|s| **s)
                .count();
                if set != 1 {
                    return Err(fail(format!("{at} must name exactly one provider")));
                }
                if p.aescbc.is_some() || p.secretbox.is_some() || p.kms.is_some() {
                    return Err(fail(format!(
                        "{at}: Ferry supports the aesgcm and identity providers only"
                    )));
                }
                if p.identity.is_some() {
                    providers.push(Provider::Identity);
                    continue;
                }
                let keys = p.aesgcm.map(|k| k.keys).unwrap_or_default();
                if keys.is_empty() {
                    return Err(fail(format!("{at}.aesgcm.keys is empty")));
                }
                let mut named = Vec::new();
                for (k, key) in keys.into_iter().enumerate() {
                    let at = format!("{at}.aesgcm.keys[{k}]");
                    if key.name.is_empty() || key.name.contains(':') {
                        return Err(fail(format!(
                            "{at}.name must be non-empty and must not contain ':'"
                        )));
                    }
                    if named.iter().any(|n: &NamedKey| n.name == key.name) {
                        return Err(fail(format!("{at}.name {:?} is used twice", key.name)));
                    }
                    let secret = base64::engine::general_purpose::STANDARD
                        .decode(key.secret.trim())
                        .map_err(|e| fail(format!("{at}.secret is not valid base64: {e}")))?;
                    let algorithm = match secret.len() {
                        16 => &AES_128_GCM,
                        32 => &AES_256_GCM,
                        n => {
                            return Err(fail(format!(
                                "{at}.secret is {n} bytes; an aesgcm key is 16 or 32 bytes (32 recommended)"
                            )));
                        }
                    };
                    let key_material = UnboundKey::new(algorithm, &secret)
                        .map_err(|_| fail(format!("{at}.secret is not a valid AES key")))?;
                    named.push(NamedKey {
                        name: key.name,
                        key: LessSafeKey::new(key_material),
                    });
                }
                providers.push(Provider::AesGcm(named));
            }
            rules.push(Rule {
                resources: entry.resources,
                providers,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            rules,
            random: SystemRandomDebug(SystemRandom::new()),
        })
    }

    /// Reads the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, EncryptionError> {
        let text = std::fs::read_to_string(path).map_err(|e| EncryptionError {
            path: path.to_path_buf(),
            message: format!("cannot read it: {e}"),
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path)
                && m.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", m.permissions().mode() & 0o777),
                    "the encryption configuration holds keys but is readable by others than its owner; chmod 600 it"
                );
            }
        }
        Self::parse(path, &text)
    }

    /// The configuration of a server with data directory `data_dir`: `explicit` (which must
    /// exist) or `<data dir>/pki/encryption-config.yaml`, created with a fresh key when
    /// missing. Makes the `pki` directory owner-only (0700).
    pub fn ensure(data_dir: &Path, explicit: Option<&Path>) -> Result<Self, EncryptionError> {
        if let Some(path) = explicit {
            return Self::load(path);
        }
        let dir = data_dir.join("pki");
        let path = dir.join(DEFAULT_FILE);
        let fail = |message: String| EncryptionError {
            path: path.clone(),
            message,
        };
        private_dir(&dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        if !path.exists() {
            let mut secret = [0u8; 32];
            SystemRandom::new()
                .fill(&mut secret)
                .map_err(|_| fail("the system's random generator failed".into()))?;
            write_private(&path, &default_file(&secret))
                .map_err(|e| fail(format!("cannot write it: {e}")))?;
            tracing::info!(path = %path.display(), "created the encryption configuration: Secrets are encrypted at rest with AES-GCM");
        }
        Self::load(&path)
    }

    /// The file this configuration was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The providers of `resource` (a store resource, `apps/deployments`), if configured.
    fn providers(&self, resource: &str) -> Option<&[Provider]> {
        self.rules
            .iter()
            .find(|r| r.resources.iter().any(|p| matches(p, resource)))
            .map(|r| r.providers.as_slice())
    }

    fn seal(&self, key: &ObjectKey, named: &NamedKey, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .0
            .fill(&mut nonce)
            .map_err(|_| "the system's random generator failed".to_string())?;
        let prefix = format!("k8s:enc:aesgcm:v1:{}:", named.name);
        let mut out = Vec::with_capacity(prefix.len() + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let mut sealed = out.split_off(start);
        named
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(authenticated_data(key).as_bytes()),
                &mut sealed,
            )
            .map_err(|_| format!("cannot encrypt {key}"))?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }
}

impl ValueTransformer for EncryptionConfig {
    fn transform_to_storage<'a>(
        &self,
        key: &ObjectKey,
        plain: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, String> {
        match self.providers(&key.resource).and_then(|p| p.first()) {
            Some(Provider::AesGcm(keys)) => {
                let first = keys.first().ok_or("the aesgcm provider has no key")?;
                self.seal(key, first, plain).map(Cow::Owned)
            }
            Some(Provider::Identity) | None => Ok(Cow::Borrowed(plain)),
        }
    }

    fn transform_from_storage<'a>(
        &self,
        key: &ObjectKey,
        stored: &'a [u8],
    ) -> Result<FromStorage<'a>, String> {
        let config = self.path.display();
        let providers = self.providers(&key.resource);
        let Some(rest) = stored.strip_prefix(ENCRYPTED_PREFIX) else {
            // Stored as it is.
            return match providers {
                None => Ok(FromStorage {
                    plain: Cow::Borrowed(stored),
                    stale: false,
                }),
                Some(providers) if providers.iter().any(|p| matches!(p, Provider::Identity)) => {
                    Ok(FromStorage {
                        plain: Cow::Borrowed(stored),
                        stale: !matches!(providers.first(), Some(Provider::Identity)),
                    })
                }
                Some(_) => Err(format!(
                    "stored unencrypted, and {config} lists no identity provider for {} to read it with (add `- identity: {{}}` last)",
                    key.resource
                )),
            };
        };
        let (provider, after) = split_colon(rest)
            .ok_or_else(|| "an encrypted value without a provider name".to_string())?;
        if provider != b"aesgcm" {
            return Err(format!(
                "encrypted by the {:?} provider, which Ferry does not support",
                String::from_utf8_lossy(provider)
            ));
        }
        let (version, after) =
            split_colon(after).ok_or_else(|| "an aesgcm value without a version".to_string())?;
        if version != b"v1" {
            return Err(format!(
                "an aesgcm value of version {:?} (expected v1)",
                String::from_utf8_lossy(version)
            ));
        }
        let (name, sealed) =
            split_colon(after).ok_or_else(|| "an aesgcm value without a key name".to_string())?;
        let name = String::from_utf8_lossy(name);
        let Some(providers) = providers else {
            return Err(format!(
                "encrypted with aesgcm key {name:?}, but {config} configures no provider for {}",
                key.resource
            ));
        };
        let found = providers.iter().enumerate().find_map(|(i, p)| match p {
            Provider::AesGcm(keys) => keys
                .iter()
                .position(|k| k.name == name)
                .map(|k| (i == 0 && k == 0, &keys[k])),
            Provider::Identity => None,
        });
        let Some((current, named)) = found else {
            return Err(format!(
                "encrypted with aesgcm key {name:?}, which {config} does not hold"
            ));
        };
        if sealed.len() < NONCE_LEN + 16 {
            return Err(format!("the aesgcm value of key {name:?} is truncated"));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| "an aesgcm value with a bad nonce".to_string())?;
        let mut buffer = ciphertext.to_vec();
        let plain_len = named
            .key
            .open_in_place(
                nonce,
                Aad::from(authenticated_data(key).as_bytes()),
                &mut buffer,
            )
            .map_err(|_| {
                format!(
                    "cannot be decrypted with aesgcm key {name:?} of {config}: the key's secret is not the one it was written with, or the value is damaged"
                )
            })?
            .len();
        buffer.truncate(plain_len);
        Ok(FromStorage {
            plain: Cow::Owned(buffer),
            stale: !current,
        })
    }
}

/// `head:tail` split at the first colon.
fn split_colon(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|b| *b == b':')?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

/// The configuration Ferry writes when there is none: Secrets under a fresh AES-256-GCM key,
/// plain ones still readable.
pub fn default_file(secret: &[u8; 32]) -> String {
    let secret = base64::engine::general_purpose::STANDARD.encode(secret);
    format!(
        "# Encryption at rest of Ferry's store (kube-apiserver's EncryptionConfiguration).\n\
         # The first provider encrypts, every listed key decrypts. To rotate: add a new key\n\
         # first, restart (every Secret is re-encrypted), then remove the old key. Losing\n\
         # this file loses every Secret: back it up apart from the data directory.\n\
         apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n\
         \x20 - resources:\n\
         \x20     - secrets\n\
         \x20   providers:\n\
         \x20     - aesgcm:\n\
         \x20         keys:\n\
         \x20           - name: key1\n\
         \x20             secret: {secret}\n\
         \x20     - identity: {{}}\n"
    )
}

/// Creates `dir` if needed and makes it owner-only (0700).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `contents` to `path` atomically, owner-only (0600) from the start.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: &[(&str, [u8; 32])], identity_first: bool) -> EncryptionConfig {
        let keys: String = keys
            .iter()
            .map(|(name, secret)| {
                format!(
                    "            - name: {name}\n              secret: {}\n",
                    base64::engine::general_purpose::STANDARD.encode(secret)
                )
            })
            .collect();
        let aesgcm = format!("      - aesgcm:\n          keys:\n{keys}");
        let identity = "      - identity: {}\n";
        let providers = if identity_first {
            format!("{identity}{aesgcm}")
        } else {
            format!("{aesgcm}{identity}")
        };
        let text = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n{providers}"
        );
        EncryptionConfig::parse(Path::new("enc.yaml"), &text).unwrap()
    }

    fn secret(ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new("secrets", ns, name)
    }

    const PLAIN: &[u8] = br#"{"data":{"password":"aHVudGVyMg=="}}"#;

    #[test]
    fn the_envelope_is_kube_apiservers() {
        let c = config(&[("key1", [1; 32])], false);
        let key = secret("default", "s");
        let stored = c.transform_to_storage(&key, PLAIN).unwrap().into_owned();
        let prefix = b"k8s:enc:aesgcm:v1:key1:";
        assert!(
            stored.starts_with(prefix),
            "{:?}",
            String::from_utf8_lossy(&stored)
        );
        // prefix, 12-byte nonce, ciphertext as long as the value, 16-byte tag
        assert_eq!(stored.len(), prefix.len() + 12 + PLAIN.len() + 16);
        assert!(!stored.windows(8).any(|w| w == b"password"));
        // Decrypted by hand with ring, as any reader of the format would.
        let (nonce, sealed) = stored[prefix.len()..].split_at(12);
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[1; 32]).unwrap());
        let mut buf = sealed.to_vec();
        let plain = k
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).unwrap(),
                Aad::from(b"/registry/secrets/default/s"),
                &mut buf,
            )
            .unwrap();
        assert_eq!(plain, PLAIN);
        let read = c.transform_from_storage(&key, &stored).unwrap();
        assert_eq!(read.plain, PLAIN);
        assert!(!read.stale);
    }

    #[test]
    fn nonces_are_fresh_and_the_object_key_is_authenticated() {
        let c = config(&[("key1", [1; 32])], false);
        let key = secret("default", "s");
        let a = c.transform_to_storage(&key, PLAIN).unwrap().into_owned();
        let b = c.transform_to_storage(&key, PLAIN).unwrap().into_owned();
        assert_ne!(a, b, "two writes of one value must not share a nonce");
        // The same ciphertext under another object's key does not decrypt.
        let err = c
            .transform_from_storage(&secret("other", "s"), &a)
            .unwrap_err();
        assert!(err.contains("cannot be decrypted"), "{err}");
        // Nor does a flipped byte.
        let mut damaged = a.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(c.transform_from_storage(&key, &damaged).is_err());
    }

    #[test]
    fn rotation_reads_old_keys_and_marks_them_stale() {
        let old = config(&[("key1", [1; 32])], false);
        let key = secret("default", "s");
        let by_old = old.transform_to_storage(&key, PLAIN).unwrap().into_owned();
        let rotated = config(&[("key2", [2; 32]), ("key1", [1; 32])], false);
        let read = rotated.transform_from_storage(&key, &by_old).unwrap();
        assert_eq!(read.plain, PLAIN);
        assert!(
            read.stale,
            "a value under the second key is to be re-encrypted"
        );
        let by_new = rotated
            .transform_to_storage(&key, PLAIN)
            .unwrap()
            .into_owned();
        assert!(by_new.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
        assert!(!rotated.transform_from_storage(&key, &by_new).unwrap().stale);
        // Without key1, the old value is an error naming the key, never an empty read.
        let only_new = config(&[("key2", [2; 32])], false);
        let err = only_new.transform_from_storage(&key, &by_old).unwrap_err();
        assert!(
            err.contains("\"key1\"") && err.contains("does not hold"),
            "{err}"
        );
        // Same name, different secret: a decryption error.
        let wrong = config(&[("key1", [9; 32])], false);
        let err = wrong.transform_from_storage(&key, &by_old).unwrap_err();
        assert!(err.contains("cannot be decrypted"), "{err}");
    }

    #[test]
    fn plain_values_are_read_through_identity_and_other_resources_pass() {
        let c = config(&[("key1", [1; 32])], false);
        let key = secret("default", "s");
        let read = c.transform_from_storage(&key, PLAIN).unwrap();
        assert_eq!(read.plain, PLAIN);
        assert!(read.stale, "a plain Secret is to be encrypted");
        let cm = ObjectKey::new("configmaps", "default", "c");
        assert_eq!(c.transform_to_storage(&cm, PLAIN).unwrap(), PLAIN);
        assert!(!c.transform_from_storage(&cm, PLAIN).unwrap().stale);
        // identity first: writes plain, encrypted values are read and marked stale.
        let decrypting = config(&[("key1", [1; 32])], true);
        assert_eq!(decrypting.transform_to_storage(&key, PLAIN).unwrap(), PLAIN);
        let sealed = c.transform_to_storage(&key, PLAIN).unwrap().into_owned();
        let read = decrypting.transform_from_storage(&key, &sealed).unwrap();
        assert_eq!(read.plain, PLAIN);
        assert!(read.stale);
        // An encrypted value of a resource the file does not name is an error.
        let err = c.transform_from_storage(&cm, &sealed).unwrap_err();
        assert!(err.contains("configures no provider"), "{err}");
    }

    #[test]
    fn resource_names_follow_the_encryption_configuration() {
        assert!(matches("secrets", "secrets"));
        assert!(!matches("secrets", "example.com/secrets"));
        assert!(matches("deployments.apps", "apps/deployments"));
        assert!(matches("*.apps", "apps/replicasets"));
        assert!(matches("*.", "configmaps"));
        assert!(!matches("*.", "apps/deployments"));
        assert!(matches("*.*", "apps/deployments"));
        assert!(matches("*.*", "secrets"));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let p = Path::new("enc.yaml");
        let bad = |text: &str| EncryptionConfig::parse(p, text).unwrap_err().to_string();
        let head =
            "kind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n";
        assert!(bad(&format!("{head}      - aesgcm:\n          keys:\n            - name: k\n              secret: AAAA\n")).contains("is 3 bytes"));
        assert!(
            bad(&format!("{head}      - aescbc:\n          keys: []\n"))
                .contains("aesgcm and identity")
        );
        assert!(
            bad(&format!("{head}      - aesgcm:\n          keys: []\n")).contains("keys is empty")
        );
        assert!(bad("kind: Other\n").contains("EncryptionConfiguration"));
        assert!(bad("resources: 3\n").contains("not a valid"));
    }

    #[test]
    fn the_default_file_is_created_owner_only_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = EncryptionConfig::ensure(dir.path(), None).unwrap();
        let path = dir.path().join("pki").join(DEFAULT_FILE);
        assert_eq!(first.path(), path);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("pki")), 0o700);
        let key = secret("default", "s");
        let stored = first
            .transform_to_storage(&key, PLAIN)
            .unwrap()
            .into_owned();
        let again = EncryptionConfig::ensure(dir.path(), None).unwrap();
        assert_eq!(
            again.transform_from_storage(&key, &stored).unwrap().plain,
            PLAIN
        );
        // An explicit file must exist.
        let missing = dir.path().join("nope.yaml");
        let err = EncryptionConfig::ensure(dir.path(), Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
}
