//! The `ResourceQuota` admission plugin, as kube-apiserver's: a write that would take a
//! namespace over one of its quotas is refused `403 Forbidden` with
//! `exceeded quota: <name>, requested: …, used: …, limited: …`, and a pod that does not state
//! the cpu or memory a quota constrains with `failed quota: <name>: must specify …`.
//!
//! Usage is computed from the store's current objects (plus the one being admitted), not from
//! the quota's status, and admission and the write that follows are serialized per namespace
//! (the plugin hands back the namespace's lock as a guard), so two writes racing for the last
//! unit cannot both pass. Dry runs are checked like any write and charge nothing (nothing is
//! stored). What the quotas count is [`ferry_api::quota`]'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_api::quota::{self, Usage};
use serde_json::{Value, json};

use super::{Admitted, Attributes, Operation, Plugin};
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::service::Service;

/// The ResourceQuota admission plugin.
#[derive(Default)]
pub struct ResourceQuota {
    /// One lock per namespace, held from admission until the write is stored.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// `<resource> "<name>" is forbidden: <reason>`, as kube-apiserver's admission refusals.
pub(crate) fn forbidden(attributes: &Attributes<'_>, reason: &str) -> ApiError {
    let info = attributes.info;
    let resource = if info.group.is_empty() {
        info.plural.clone()
    } else {
        format!("{}.{}", info.plural, info.group)
    };
    let mut e = ApiError::forbidden(format!(
        "{resource} \"{}\" is forbidden: {reason}",
        attributes.name
    ));
    e.details = Some(json!({"name": attributes.name, "group": info.group, "kind": info.plural}));
    e
}

/// What an object counts, or nothing for a pod that no longer counts.
fn usage_of(group: &str, plural: &str, object: &Value, now: &str) -> Usage {
    if group.is_empty() && plural == "pods" && quota::pod_is_terminal(object, now) {
        return Usage::new();
    }
    quota::object_usage(group, plural, object)
}

impl ResourceQuota {
    fn lock_of(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(namespace.to_string()).or_default().clone()
    }

    /// The quotas of `namespace` that track objects of the written kind, by name.
    fn quotas(service: &Service, namespace: &str, group: &str, plural: &str) -> Vec<Arc<Value>> {
        let Some(info) = service.registry.get("", "v1", "resourcequotas") else {
            return Vec::new();
        };
        service
            .store
            .list(&info.storage_resource(), Some(namespace), None, 0, |q| {
                quota::quota_tracks(&q["spec"], group, plural)
            })
            .items
            .into_iter()
            .map(|o| o.value)
            .collect()
    }
}

#[async_trait::async_trait]
impl Plugin for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    async fn validate(
        &self,
        service: &Service,
        attributes: &Attributes<'_>,
        object: &Value,
    ) -> ApiResult<Admitted> {
        let a = attributes;
        let Some(namespace) = a.namespace else {
            return Ok(Admitted::default());
        };
        if a.operation == Operation::Delete || !a.info.namespaced {
            return Ok(Admitted::default());
        }
        // Status writes change what pods count only downwards (a pod that finished).
        if a.subresource.is_some_and(|s| s != "status") {
            return Ok(Admitted::default());
        }
        let (group, plural) = (a.info.group.as_str(), a.info.plural.as_str());
        if Self::quotas(service, namespace, group, plural).is_empty() {
            return Ok(Admitted::default());
        }
        let now = meta::now_time();
        let new = usage_of(group, plural, object, &now);
        let old = a
            .old
            .map(|o| usage_of(group, plural, o, &now))
            .unwrap_or_default();
        let delta: Usage = new
            .iter()
            .map(|(k, v)| (k.clone(), v - old.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let is_pod = group.is_empty() && plural == "pods";
        let check_constraints = is_pod && a.operation == Operation::Create;
        if delta.is_empty() && !check_constraints {
            return Ok(Admitted::default());
        }
        let guard = self.lock_of(namespace).lock_owned().await;
        // Read again under the lock: the quotas and the objects as they are now.
        let mut quotas = Self::quotas(service, namespace, group, plural);
        quotas.sort_by(|x, y| meta::name(x).cmp(meta::name(y)));
        let Some(info) = service.registry.get(group, &a.info.version, plural) else {
            return Ok(Admitted::default());
        };
        let objects = service
            .store
            .list(&info.storage_resource(), Some(namespace), None, 0, |_| true)
            .items;
        for q in &quotas {
            let name = meta::name(q);
            let spec = &q["spec"];
            let scopes = quota::scope_requirements(spec);
            if is_pod && !quota::pod_matches_scopes(&scopes, object) {
                continue;
            }
            let hard = quota::hard_of(spec);
            if check_constraints {
                let missing = quota::missing_constraints(&hard, &object["spec"]);
                if !missing.is_empty() {
                    let list: Vec<String> = missing
                        .iter()
                        .map(|(r, containers)| format!("{r} for: {}", containers.join(",")))
                        .collect();
                    return Err(forbidden(
                        a,
                        &format!("failed quota: {name}: must specify {}", list.join("; ")),
                    ));
                }
            }
            let requested: Usage = delta
                .iter()
                .filter(|(k, _)| hard.contains_key(*k))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            if requested.is_empty() {
                continue;
            }
            let mut used = Usage::new();
            for o in &objects {
                let o = &o.value;
                if is_pod && !quota::pod_matches_scopes(&scopes, o) {
                    continue;
                }
                quota::add_into(&mut used, &usage_of(group, plural, o, &now));
            }
            let exceeded: Vec<&String> = requested
                .iter()
                .filter(|(k, v)| used.get(*k).copied().unwrap_or(0) + **v > hard[*k])
                .map(|(k, _)| k)
                .collect();
            if exceeded.is_empty() {
                continue;
            }
            let mask = |u: &Usage| -> Usage {
                exceeded
                    .iter()
                    .map(|k| ((*k).clone(), u.get(*k).copied().unwrap_or(0)))
                    .collect()
            };
            return Err(forbidden(
                a,
                &format!(
                    "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                    quota::pretty(&mask(&requested)),
                    quota::pretty(&mask(&used)),
                    quota::pretty(&mask(&hard)),
                ),
            ));
        }
        Ok(Admitted {
            warnings: Vec::new(),
            guards: vec![Box::new(guard)],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::service::WriteOptions;

    async fn service() -> (tempfile::TempDir, Arc<Service>) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ferry_store::Store::open(ferry_store::StoreConfig::new(dir.path().join("state.db")))
                .unwrap();
        let service = Arc::new(Service::new(store));
        let ns = service.registry.get("", "v1", "namespaces").unwrap();
        service
            .create(
                &ns,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}}),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        (dir, service)
    }

    async fn create(service: &Service, plural: &str, body: Value, dry_run: bool) -> ApiResult<()> {
        let info = service.registry.get("", "v1", plural).unwrap();
        let options = WriteOptions {
            dry_run,
            ..Default::default()
        };
        service
            .create(&info, Some("t"), body, &options)
            .await
            .map(|_| ())
    }

    fn quota(hard: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "q"}, "spec": {"hard": hard}})
    }

    fn pod(name: &str, limits: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"limits": limits}}]}})
    }

    #[tokio::test]
    async fn gpus_whole_and_shared_are_counted() {
        let (_dir, s) = service().await;
        create(
            &s,
            "resourcequotas",
            quota(json!({"requests.nvidia.com/gpu": "1"})),
            false,
        )
        .await
        .unwrap();
        create(
            &s,
            "pods",
            pod("half-a", json!({"ferry.dev/gpu-milli": "500"})),
            false,
        )
        .await
        .unwrap();
        // A dry run is checked but charges nothing.
        create(
            &s,
            "pods",
            pod("dry", json!({"ferry.dev/gpu-milli": "500"})),
            true,
        )
        .await
        .unwrap();
        create(
            &s,
            "pods",
            pod("half-b", json!({"ferry.dev/gpu-milli": "500"})),
            false,
        )
        .await
        .unwrap();
        let e = create(
            &s,
            "pods",
            pod("half-c", json!({"ferry.dev/gpu-milli": "500"})),
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"half-c\" is forbidden: exceeded quota: q, requested: requests.nvidia.com/gpu=500m, used: requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1"
        );
        // A pod asking for no GPU is not affected by a GPU-only quota.
        create(&s, "pods", pod("cpu-only", json!({"cpu": "1"})), false)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn terminal_pods_do_not_count_and_cpu_quotas_need_requests() {
        let (_dir, s) = service().await;
        create(
            &s,
            "resourcequotas",
            quota(json!({"pods": "1", "limits.cpu": "2"})),
            false,
        )
        .await
        .unwrap();
        let e = create(&s, "pods", pod("bare", json!({})), false)
            .await
            .unwrap_err();
        assert_eq!(
            e.message,
            "pods \"bare\" is forbidden: failed quota: q: must specify limits.cpu for: c"
        );
        create(&s, "pods", pod("a", json!({"cpu": "1"})), false)
            .await
            .unwrap();
        let e = create(&s, "pods", pod("b", json!({"cpu": "1"})), false)
            .await
            .unwrap_err();
        assert!(
            e.message
                .ends_with("exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"),
            "{}",
            e.message
        );
        // The first pod finishes: it no longer counts.
        let pods = s.registry.get("", "v1", "pods").unwrap();
        let old = s.get(&pods, Some("t"), "a").unwrap();
        let mut done = (*old.value).clone();
        done["status"] = json!({"phase": "Succeeded"});
        s.update(
            &pods,
            Some("t"),
            "a",
            done,
            Some("status"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
        create(&s, "pods", pod("b", json!({"cpu": "1"})), false)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn object_counts_and_racing_creates() {
        let (_dir, s) = service().await;
        create(
            &s,
            "resourcequotas",
            quota(json!({"count/configmaps": "3", "secrets": "1"})),
            false,
        )
        .await
        .unwrap();
        let cm = |n: usize| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{n}")}});
        // Ten creates race for three places: exactly three win.
        let results = futures::future::join_all((0..10).map(|n| {
            let s = s.clone();
            let body = cm(n);
            tokio::spawn(async move { create(&s, "configmaps", body, false).await })
        }))
        .await;
        let won = results
            .iter()
            .filter(|r| r.as_ref().unwrap().is_ok())
            .count();
        assert_eq!(won, 3);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}});
        create(&s, "secrets", secret, false).await.unwrap();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s2"}});
        let e = create(&s, "secrets", secret, false).await.unwrap_err();
        assert!(
            e.message.contains(
                "exceeded quota: q, requested: secrets=1, used: secrets=1, limited: secrets=1"
            ),
            "{}",
            e.message
        );
    }
}
