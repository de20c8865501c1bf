//! ResourceQuota status, as kube-controller-manager's resource quota controller: keeps every
//! quota's `status.hard` (its `spec.hard`) and `status.used` (what the namespace's objects
//! count, by [`ferry_api::quota`]) true to the observed objects, so `kubectl describe quota`
//! and `kubectl get quota` show usage. Reconciles when a quota or a pod changes and every
//! [`RESYNC`] (object counts of other kinds), retrying failures with exponential back-off.
//!
//! Enforcement is the API server's (its ResourceQuota admission plugin computes usage from
//! its store); this status is what people and tools read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_api::quota::{self, Usage};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::{Backoff, Error};

/// How often every quota is recounted even without a change it watches.
pub const RESYNC: Duration = Duration::from_secs(10);

struct Context {
    client: kube::Client,
    failures: Mutex<HashMap<String, Backoff>>,
}

/// Runs the quota status controller until its future is dropped.
pub async fn run(client: kube::Client) {
    let quotas: Api<ResourceQuota> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let context = Arc::new(Context {
        client,
        failures: Mutex::new(HashMap::new()),
    });
    let controller = Controller::new(quotas, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            let ns = pod.namespace().unwrap_or_default();
            store
                .state()
                .into_iter()
                .filter(|q| q.namespace().as_deref() == Some(ns.as_str()))
                .map(|q| ObjectRef::from_obj(&*q))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "resourcequota controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn key(q: &ResourceQuota) -> String {
    format!("{}/{}", q.namespace().unwrap_or_default(), q.name_any())
}

fn error_policy(q: Arc<ResourceQuota>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key(&q))
        .or_insert_with(|| Backoff::new(Duration::from_millis(200), Duration::from_secs(30)))
        .next_delay();
    tracing::warn!(quota = %key(&q), %error, ?delay, "cannot update the quota's status");
    Action::requeue(delay)
}

/// The kinds (group, plural) whose objects the quota's hard resources count.
fn counted_kinds(hard: &BTreeMap<String, Quantity>) -> BTreeSet<(String, String)> {
    let mut kinds = BTreeSet::new();
    for name in hard.keys() {
        if let Some(rest) = name.strip_prefix("count/") {
            let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
            kinds.insert((group.to_string(), plural.to_string()));
        } else if quota::object_count_names("", name).len() == 2 && name != "pods" {
            kinds.insert((String::new(), name.clone()));
        } else if name.starts_with("services.") {
            kinds.insert((String::new(), "services".into()));
        } else {
            kinds.insert((String::new(), "pods".into()));
        }
    }
    kinds
}

/// The API resource of (group, plural), found through discovery; `None` if not served.
async fn api_resource(
    client: &kube::Client,
    group: &str,
    plural: &str,
) -> Result<Option<ApiResource>, Error> {
    if group.is_empty() {
        return Ok(Some(ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: String::new(),
            plural: plural.into(),
        }));
    }
    let api_group = match kube::discovery::group(client, group).await {
        Ok(g) => g,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(api_group
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r)
        .find(|r| r.plural == plural))
}

/// What the namespace's objects count against a quota with `spec`, for its hard resources.
pub fn usage(spec: &Value, objects: &[(String, String, Value)], now: &str) -> Usage {
    let scopes = quota::scope_requirements(spec);
    let hard = quota::hard_of(spec);
    let mut used = Usage::new();
    for (group, plural, object) in objects {
        let pod = group.is_empty() && plural == "pods";
        if !quota::quota_tracks(spec, group, plural) {
            continue;
        }
        if pod
            && (quota::pod_is_terminal(object, now) || !quota::pod_matches_scopes(&scopes, object))
        {
            continue;
        }
        quota::add_into(&mut used, &quota::object_usage(group, plural, object));
    }
    hard.keys()
        .map(|k| (k.clone(), used.get(k).copied().unwrap_or(0)))
        .collect()
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn reconcile(q: Arc<ResourceQuota>, ctx: Arc<Context>) -> Result<Action, Error> {
    if q.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = q.namespace().unwrap_or_default();
    let hard = q
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let mut objects = Vec::new();
    for (group, plural) in counted_kinds(&hard) {
        let Some(resource) = api_resource(&ctx.client, &group, &plural).await? else {
            continue;
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            // A kind this server does not serve counts nothing.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        for o in list.items {
            let value = serde_json::to_value(&o).unwrap_or(Value::Null);
            objects.push((group.clone(), plural.clone(), value));
        }
    }
    let spec = serde_json::to_value(&q.spec).unwrap_or(Value::Null);
    let used = usage(&spec, &objects, &now());
    let want_used: BTreeMap<String, Quantity> = used
        .iter()
        .map(|(k, v)| (k.clone(), Quantity(quota::format_quantity(k, *v))))
        .collect();
    let status = q.status.clone().unwrap_or_default();
    ctx.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key(&q));
    if status.hard.as_ref() == Some(&hard) && status.used.as_ref() == Some(&want_used) {
        return Ok(Action::requeue(RESYNC));
    }
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({"status": {"hard": hard, "used": want_used}});
    match api
        .patch_status(
            &q.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        // Deleted meanwhile.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_kinds_named_by_the_quota() {
        let hard: BTreeMap<String, Quantity> = [
            "pods",
            "requests.nvidia.com/gpu",
            "count/deployments.apps",
            "secrets",
            "services.nodeports",
        ]
        .iter()
        .map(|k| (k.to_string(), Quantity("1".into())))
        .collect();
        let kinds: Vec<(String, String)> = counted_kinds(&hard).into_iter().collect();
        assert_eq!(
            kinds,
            [
                ("".to_string(), "pods".to_string()),
                ("".into(), "secrets".into()),
                ("".into(), "services".into()),
                ("apps".into(), "deployments".into()),
            ]
        );
    }

    #[test]
    fn usage_leaves_out_terminal_pods_and_other_scopes() {
        let spec = json!({"hard": {"pods": "5", "requests.nvidia.com/gpu": "2"}});
        let pod = |phase: &str, milli: &str| {
            (
                String::new(),
                "pods".to_string(),
                json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"ferry.dev/gpu-milli": milli}}}]},
                       "status": {"phase": phase}}),
            )
        };
        let objects = [
            pod("Running", "500"),
            pod("Pending", "250"),
            pod("Succeeded", "1000"),
        ];
        let used = usage(&spec, &objects, "2026-01-01T00:00:00Z");
        assert_eq!(used["pods"], 2000);
        assert_eq!(used["requests.nvidia.com/gpu"], 750);
        // The pods state no cpu or memory: they are BestEffort.
        let best_effort = json!({"hard": {"pods": "5"}, "scopes": ["BestEffort"]});
        assert_eq!(
            usage(&best_effort, &objects, "2026-01-01T00:00:00Z")["pods"],
            2000
        );
        let not_best_effort = json!({"hard": {"pods": "5"}, "scopes": ["NotBestEffort"]});
        assert_eq!(
            usage(&not_best_effort, &objects, "2026-01-01T00:00:00Z")["pods"],
            0
        );
    }
}
