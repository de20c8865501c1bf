//! The `serviceAccountToken` source of projected volumes, as the kubelet serves it: a token
//! requested for the pod (`serviceaccounts/<name>/token`, bound to the pod) written to
//! `<volume>/<path>`, and requested again once 80% of its lifetime has passed.
//!
//! Nothing is cached in memory: the token file is the state. Its own `iat`/`exp` claims say
//! when it is due, so a restarted agent refreshes exactly when the previous one would have.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::Api;
use kube::api::PostParams;

use crate::layout::Layout;
use crate::pod::volumes::VolumeError;

/// Lifetime asked for when the projection names none (Kubernetes' default: one hour).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Share of a token's lifetime after which it is replaced (the kubelet's: 80%).
const REFRESH_AT: f64 = 0.8;

fn retryable(message: String) -> VolumeError {
    VolumeError {
        message,
        retryable: true,
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `(iat, exp)` of a JWT, if it has them.
fn lifetime(token: &str) -> Option<(i64, i64)> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    Some((claims["iat"].as_i64()?, claims["exp"].as_i64()?))
}

/// When a token issued at `iat` ending at `exp` is due for replacement (unix seconds).
fn due_at(iat: i64, exp: i64) -> i64 {
    iat + ((exp - iat).max(0) as f64 * REFRESH_AT) as i64
}

/// `dir/rel`, refusing absolute paths and `..`.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, VolumeError> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(VolumeError {
            message: format!(
                "serviceAccountToken path {rel:?} must be a relative path without '..'"
            ),
            retryable: false,
        });
    }
    Ok(dir.join(p))
}

/// Writes `token` to `path`: created 0600 (never readable by others while written), then
/// given `mode` (the projected volume's, 0644 by default) and moved into place.
fn write_token(path: &Path, token: &str, mode: u32) -> Result<(), VolumeError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| retryable(format!("cannot write {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("ferry-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(token.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Requests a token for `pod`'s ServiceAccount as `projection` asks, bound to the pod.
async fn request(
    client: &kube::Client,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
) -> Result<String, VolumeError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let mut spec = serde_json::json!({
        "expirationSeconds": projection.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.metadata.name,
            "uid": pod.metadata.uid,
        },
    });
    if let Some(aud) = projection.audience.as_ref().filter(|a| !a.is_empty()) {
        spec["audiences"] = serde_json::json!([aud]);
    }
    let request = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": spec,
    });
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let answer: serde_json::Value = api
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            retryable(format!(
                "cannot get a token for service account {ns}/{sa}: {e}"
            ))
        })?;
    answer["status"]["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| retryable(format!("the token request for {ns}/{sa} returned no token")))
}

/// Writes every projected `serviceAccountToken` of `pod` that is missing or due, under
/// `layout.volume(uid, "projected", <volume>)`. Returns when the next one falls due.
pub(crate) async fn ensure(
    client: &kube::Client,
    layout: &Layout,
    pod: &Pod,
    uid: &str,
) -> Result<Option<Instant>, VolumeError> {
    let mut next: Option<i64> = None;
    let now = now_secs();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(projected) = &v.projected else {
            continue;
        };
        let mode = projected.default_mode.unwrap_or(0o644) as u32 & 0o777;
        for source in projected.sources.iter().flatten() {
            let Some(projection) = &source.service_account_token else {
                continue;
            };
            let dir = layout.volume(uid, "projected", &v.name);
            let path = inside(&dir, &projection.path)?;
            let current = std::fs::read_to_string(&path).ok();
            let due = current
                .as_deref()
                .and_then(lifetime)
                .map(|(iat, exp)| due_at(iat, exp));
            let due = match due {
                Some(d) if d > now => d,
                _ => {
                    let token = request(client, pod, projection).await?;
                    // On the volume's tmpfs, never on the node's disk.
                    let owner = crate::pod::volumes::VolumeOwner::of(pod);
                    owner.private_dir(&dir)?;
                    write_token(&path, &token, mode)?;
                    owner.own_tree(&dir, true, false)?;
                    tracing::debug!(path = %path.display(), "wrote a service-account token");
                    lifetime(&token)
                        .map(|(iat, exp)| due_at(iat, exp))
                        .unwrap_or(now + 60)
                }
            };
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    Ok(next.map(|at| Instant::now() + Duration::from_secs((at - now).max(1) as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(iat: i64, exp: i64) -> String {
        let claims = serde_json::json!({"iat": iat, "exp": exp});
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    #[test]
    fn tokens_are_due_at_80_percent_of_their_lifetime() {
        assert_eq!(lifetime(&jwt(1000, 2000)), Some((1000, 2000)));
        assert_eq!(due_at(1000, 2000), 1800);
        assert_eq!(lifetime("not a jwt"), None);
    }

    #[test]
    fn token_files_end_with_the_volume_mode_and_stay_inside() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = inside(dir.path(), "token").unwrap();
        write_token(&path, "abc", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(inside(dir.path(), "../x").is_err());
        assert!(inside(dir.path(), "/etc/x").is_err());
    }
}
