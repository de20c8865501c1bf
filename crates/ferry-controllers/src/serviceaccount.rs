//! The `default` ServiceAccount of every namespace, as kube-controller-manager's
//! serviceaccount controller: created for existing and new namespaces, and again when it
//! is deleted (except in a namespace being deleted).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::Error;

/// The ServiceAccount every namespace has.
pub const DEFAULT: &str = "default";

/// Runs the serviceaccount controller until its future is dropped.
pub async fn run(client: kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            accounts,
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT}")),
            |sa| sa.namespace().map(|ns| ObjectRef::new(&ns)),
        )
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "serviceaccount controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(ns: Arc<Namespace>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(namespace = %ns.name_any(), %error, "cannot create the default ServiceAccount");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(ns: Arc<Namespace>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let terminating = ns.meta().deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced((*client).clone(), &ns.name_any());
    if api.get_metadata_opt(DEFAULT).await?.is_some() {
        return Ok(Action::await_change());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &account).await {
        Ok(_) => tracing::debug!(namespace = %ns.name_any(), "created the default ServiceAccount"),
        // Created meanwhile, or the namespace is going away.
        Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
