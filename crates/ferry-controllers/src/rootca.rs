//! The `kube-root-ca.crt` ConfigMap of every namespace, as kube-controller-manager's root-ca
//! publisher: the cluster CA (`ca.crt`) pods use to trust the API server, created for existing
//! and new namespaces, and put back when it is deleted or changed (except in a namespace being
//! deleted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::Error;

/// The ConfigMap's name.
pub const NAME: &str = "kube-root-ca.crt";

/// The key holding the CA certificate (PEM).
pub const KEY: &str = "ca.crt";

struct Context {
    client: kube::Client,
    ca: String,
}

/// Runs the publisher of `ca_pem` until its future is dropped.
pub async fn run(client: kube::Client, ca_pem: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let maps: Api<ConfigMap> = Api::all(client.clone());
    let context = Arc::new(Context { client, ca: ca_pem });
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            maps,
            watcher::Config::default().fields(&format!("metadata.name={NAME}")),
            |cm| cm.namespace().map(|ns| ObjectRef::new(&ns)),
        )
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "root-ca publisher");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(ns: Arc<Namespace>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(namespace = %ns.name_any(), %error, "cannot publish kube-root-ca.crt");
    Action::requeue(Duration::from_secs(5))
}

/// The ConfigMap's data.
pub fn data(ca_pem: &str) -> BTreeMap<String, String> {
    [(KEY.to_string(), ca_pem.to_string())].into()
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let terminating = ns.meta().deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns.name_any());
    let want = data(&ctx.ca);
    let result = match api.get_opt(NAME).await? {
        Some(cm) if cm.data.as_ref() == Some(&want) => return Ok(Action::await_change()),
        Some(mut cm) => {
            cm.data = Some(want);
            api.replace(NAME, &PostParams::default(), &cm).await
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(NAME.into()),
                    annotations: Some(
                        [(
                            "kubernetes.io/description".to_string(),
                            "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                data: Some(want),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await
        }
    };
    match result {
        Ok(_) => tracing::debug!(namespace = %ns.name_any(), "published kube-root-ca.crt"),
        // Changed meanwhile (the watch brings it back), or the namespace is going away.
        Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
