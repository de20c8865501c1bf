//! Namespace termination, as kube-controller-manager's namespace controller: a namespace
//! being deleted is emptied (every namespaced object deleted, in the background), and once
//! nothing is left its `kubernetes` finalizer is removed through the `finalize` subresource.
//! The API server deletes the namespace when its last finalizer is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::resources::Resources;
use crate::{Backoff, Error};

/// The finalizer the namespace controller owns (in `spec.finalizers`).
pub const FINALIZER: &str = "kubernetes";
/// How soon a namespace whose objects are still going away is looked at again.
const CONTENT_RECHECK: Duration = Duration::from_millis(500);

struct Context {
    client: kube::Client,
    resources: Resources,
    failures: Mutex<HashMap<String, Backoff>>,
}

/// Runs the namespace controller until its future is dropped.
pub async fn run(client: kube::Client, resources: Resources) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let context = Arc::new(Context {
        client,
        resources,
        failures: Mutex::new(HashMap::new()),
    });
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "namespace controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(ns: Arc<Namespace>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let delay = failures
        .entry(ns.name_any())
        .or_insert_with(|| Backoff::new(Duration::from_millis(200), Duration::from_secs(60)))
        .next_delay();
    tracing::warn!(namespace = %ns.name_any(), %error, retry_in = ?delay, "namespace termination failed");
    Action::requeue(delay)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let action = terminate(&ns, &ctx).await?;
    ctx.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&ns.name_any());
    Ok(action)
}

async fn terminate(ns: &Namespace, ctx: &Context) -> Result<Action, Error> {
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_deref())
        .unwrap_or_default();
    if ns.meta().deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    if remaining(ctx, &name).await? > 0 {
        return Ok(Action::requeue(CONTENT_RECHECK));
    }
    let mut finalized = ns.clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(
            finalizers
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect(),
        );
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => tracing::info!(namespace = %name, "namespace emptied and finalized"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Deletes what is left in namespace `name`; returns how many objects still exist (being
/// deleted: pods that stop gracefully, objects with finalizers).
async fn remaining(ctx: &Context, name: &str) -> Result<usize, Error> {
    let types = ctx.resources.borrow().clone();
    let mut left = 0;
    for kind in types.iter().filter(|t| t.namespaced) {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), name, &kind.api);
        let objects = match api.list_metadata(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(s)) if s.code == 404 => continue, // type no longer served
            Err(e) => return Err(e.into()),
        };
        for o in objects {
            if o.metadata.deletion_timestamp.is_some() {
                left += 1;
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: o.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(&o.name_any(), &params).await {
                Ok(either) if either.is_left() => left += 1, // marked, not gone yet
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(left)
}
