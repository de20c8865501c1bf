//! The pod worker's containerd side: runtime choice at admission, the CRI sandbox, image
//! pulls with back-off, container creation, and exit records (see [`crate::cri`]). The worker
//! calls these at a few points; everything else (restarts, grace periods, status) is shared
//! with the host runtime, because a containerd container's attempt directory holds the same
//! records.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::Api;

use super::{PodError, PodWorker};
use crate::cri::select::{self, Choice};
use crate::cri::{self, container};
use crate::events::EventType;
use crate::runtime::{AttemptState, ShimSpec};
use crate::sandbox::{self, SandboxRecord};

/// An image that could not be made present, and when to try again.
#[derive(Debug, Clone)]
pub(super) struct PullFailure {
    /// `ErrImagePull`, `ImagePullBackOff` or `ErrImageNeverPull`.
    reason: String,
    message: String,
    failures: u32,
    retry_at: Instant,
}

impl PodWorker {
    /// Runs under containerd?
    pub(super) fn is_cri(&self) -> bool {
        matches!(self.meta.runtime, Some(Choice::Containerd { .. }))
    }

    /// Decides (once, recorded in `pod.json`) which runtime the pod gets.
    pub(super) async fn choose_runtime(
        &mut self,
        pod: &Pod,
    ) -> Result<(), super::status::PodFailure> {
        if self.meta.runtime.is_some() {
            return Ok(());
        }
        let choice = select::choose(&self.shared.client, pod, self.shared.cri.is_some()).await?;
        self.meta.runtime = Some(choice);
        if let Err(e) = self.save_meta() {
            tracing::warn!(pod = %self.display_name(), error = %e, "cannot record the pod's runtime");
        }
        Ok(())
    }

    /// Makes or adopts the pod's sandbox with its runtime.
    pub(super) async fn make_sandbox(&self, pod: &Pod) -> Result<SandboxRecord, String> {
        let dir = self.shared.layout.pod(&self.uid);
        match (&self.meta.runtime, &self.shared.cri) {
            (Some(Choice::Containerd { handler }), Some(cri)) => {
                cri::sandbox::ensure(cri, &self.shared.sandbox, pod, &self.uid, &dir, handler)
                    .await
                    .map_err(|e| e.to_string())
            }
            (Some(Choice::Containerd { .. }), None) => {
                Err("the pod runs under containerd, but this agent has no CRI endpoint".into())
            }
            _ => sandbox::ensure(&self.shared.sandbox, pod, &self.uid, &dir)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Removes the pod's containerd sandbox and containers (before the generic teardown).
    pub(super) async fn cri_teardown(&self) -> Result<(), String> {
        let dir = self.shared.layout.pod(&self.uid);
        let Some(cri) = &self.shared.cri else {
            return Ok(());
        };
        cri::sandbox::teardown(cri, &self.shared.sandbox, &self.uid, &dir)
            .await
            .map_err(|e| e.to_string())
    }

    /// Records starts and exits containerd reports for the pod's latest attempts; `true` when
    /// one must be looked at again soon (see [`container::refresh`]).
    pub(super) async fn cri_refresh(&self) -> bool {
        let Some(cri) = &self.shared.cri else {
            return false;
        };
        let containers = self.shared.layout.pod(&self.uid).join("containers");
        let names: Vec<String> = std::fs::read_dir(&containers)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let mut pending = false;
        for name in names {
            let Some(&latest) = self.shared.layout.attempts(&self.uid, &name).last() else {
                continue;
            };
            let dir = self.shared.layout.attempt(&self.uid, &name, latest);
            match container::refresh(cri, &dir).await {
                Ok(again) => pending |= again,
                Err(e) => {
                    pending = true;
                    tracing::warn!(pod = %self.display_name(), container = %name, error = %e, "cannot read the container's state from containerd");
                }
            }
        }
        pending
    }

    /// The waiting reason and message of a container whose image is not there.
    pub(super) fn pull_view(&self, name: &str) -> Option<(String, String)> {
        self.pull_errors
            .get(name)
            .map(|p| (p.reason.clone(), p.message.clone()))
    }

    /// The CRI id of a container attempt, as the status shows it.
    pub(super) fn cri_container_id(&self, name: &str, attempt: u32) -> Option<String> {
        container::container_id(&self.shared.layout.attempt(&self.uid, name, attempt))
            .map(|id| format!("containerd://{id}"))
    }

    /// Makes container `c`'s image present as its pull policy says. `Some(time)`: not there
    /// (the reason is in [`Self::pull_view`]); look again then.
    pub(super) async fn cri_pull(&mut self, pod: &Pod, c: &Container) -> Option<Instant> {
        let cri = self.shared.cri.clone()?;
        if !self.is_cri() {
            return None;
        }
        let image = c.image.clone().unwrap_or_default();
        let now = Instant::now();
        if let Some(p) = self.pull_errors.get_mut(&c.name)
            && now < p.retry_at
        {
            if p.reason == "ErrImagePull" {
                p.reason = "ImagePullBackOff".into();
                p.message = format!("Back-off pulling image {image:?}: {}", p.message);
                let message = format!("Back-off pulling image {image:?}");
                self.event(Some(&c.name), EventType::Normal, "BackOff", &message)
                    .await;
            }
            return Some(self.pull_errors[&c.name].retry_at);
        }
        let policy = container::pull_policy(c);
        let mut secrets: Vec<Secret> = Vec::new();
        let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &self.meta.namespace);
        for r in pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
        {
            match api.get_opt(&r.name).await {
                Ok(Some(s)) => secrets.push(s),
                Ok(None) => {
                    let message = format!(
                        "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                        r.name
                    );
                    self.event(
                        None,
                        EventType::Warning,
                        "FailedToRetrieveImagePullSecret",
                        &message,
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.display_name(), error = %e, "cannot read an image pull secret")
                }
            }
        }
        let auths = container::auths_for(&image, &secrets);
        let record = self.sandbox.clone().unwrap_or_default();
        let dir = self.shared.layout.pod(&self.uid);
        let config = cri::sandbox::config(&self.shared.sandbox, pod, &self.uid, &dir, &record);
        let started = Instant::now();
        match container::ensure_image(&cri, &image, &policy, &auths, &config).await {
            Ok(pulled) => {
                self.pull_errors.remove(&c.name);
                let message = if pulled {
                    format!(
                        "Successfully pulled image {image:?} in {:?}",
                        started.elapsed()
                    )
                } else {
                    format!("Container image {image:?} already present on machine")
                };
                self.event(Some(&c.name), EventType::Normal, "Pulled", &message)
                    .await;
                None
            }
            Err(e) => {
                let failures = self.pull_errors.get(&c.name).map_or(0, |p| p.failures) + 1;
                let cfg = &self.shared.config;
                let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
                let delay = cfg
                    .backoff_initial
                    .saturating_mul(factor)
                    .min(cfg.backoff_max)
                    .max(Duration::from_secs(1));
                let retry_at = now + delay;
                let what = if e.reason == "ErrImageNeverPull" {
                    e.message.clone()
                } else {
                    format!("Failed to pull image {image:?}: {}", e.message)
                };
                self.event(Some(&c.name), EventType::Warning, "Failed", &what)
                    .await;
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {}", e.reason),
                )
                .await;
                self.pull_errors.insert(
                    c.name.clone(),
                    PullFailure {
                        reason: e.reason.into(),
                        message: e.message,
                        failures,
                        retry_at,
                    },
                );
                // Show the error now, the back-off a moment later, retry when it ends.
                Some(retry_at.min(now + Duration::from_secs(1)))
            }
        }
    }

    /// Creates and starts attempt `attempt` of container `c` in the pod's containerd sandbox.
    pub(super) async fn cri_start(
        &mut self,
        pod: &Pod,
        c: &Container,
        dir: &std::path::Path,
        attempt: u32,
        spec: &ShimSpec,
    ) -> Result<AttemptState, PodError> {
        let fail = |e: cri::CriError| PodError::Process {
            action: "start container",
            container: c.name.clone(),
            error: std::io::Error::other(e.to_string()),
        };
        let cri = self
            .shared
            .cri
            .clone()
            .ok_or_else(|| fail(cri::CriError::Invalid("no CRI endpoint".into())))?;
        let record = self.sandbox.clone().unwrap_or_default();
        let sandbox_id = record
            .cri_sandbox_id
            .clone()
            .ok_or_else(|| fail(cri::CriError::Invalid("the pod has no CRI sandbox".into())))?;
        // Containers of attempts the worker no longer keeps (their directories are gone).
        let labels = cri::sandbox::labels(pod, &self.uid, Some(&c.name));
        let filter = cri::proto::ContainerFilter {
            pod_sandbox_id: sandbox_id.clone(),
            label_selector: [
                (cri::POD_UID_LABEL.to_string(), self.uid.clone()),
                (cri::CONTAINER_NAME_LABEL.to_string(), c.name.clone()),
            ]
            .into(),
            ..Default::default()
        };
        for old in cri.list_containers(Some(filter)).await.map_err(fail)? {
            let n = old.metadata.as_ref().map_or(0, |m| m.attempt);
            if n + 1 < attempt || n == attempt {
                cri.remove_container(&old.id).await.map_err(fail)?;
            }
        }
        let pod_dir = self.shared.layout.pod(&self.uid);
        let log_path = dir
            .join(crate::runtime::files::LOG)
            .strip_prefix(&pod_dir)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| dir.join(crate::runtime::files::LOG).display().to_string());
        let config = container::config(
            c,
            attempt,
            spec,
            &log_path,
            labels,
            cri::sandbox::namespace_options(pod),
        );
        let sandbox_config =
            cri::sandbox::config(&self.shared.sandbox, pod, &self.uid, &pod_dir, &record);
        container::create_and_start(&cri, &sandbox_id, &sandbox_config, config, dir)
            .await
            .map_err(fail)
    }
}
