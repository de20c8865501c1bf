//! The resource types the API server serves, found by discovery and found again when CRDs
//! change (and every [`REDISCOVER_EVERY`] anyway).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::Backoff;

/// Longest time between two discoveries.
const REDISCOVER_EVERY: Duration = Duration::from_secs(30);

/// A resource type whose objects can be listed, watched and deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// Group, version, kind and plural.
    pub api: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

impl ResourceType {
    /// `group/version/plural`: a key that names the type.
    pub fn key(&self) -> String {
        format!("{}/{}", self.api.api_version, self.api.plural)
    }
}

/// The current resource types; updated as discovery changes.
pub type Resources = watch::Receiver<Arc<Vec<ResourceType>>>;

/// Discovers the resource types once (retrying until the server answers), then keeps the
/// answer current in the background for as long as a receiver lives.
pub async fn watch(client: kube::Client) -> Resources {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let first = loop {
        match discover(&client).await {
            Ok(types) => break types,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, ?delay, "API discovery failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    };
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(keep_current(client, tx));
    rx
}

async fn keep_current(client: kube::Client, tx: watch::Sender<Arc<Vec<ResourceType>>>) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut changes = watcher(crds, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        tokio::select! {
            () = tx.closed() => return,
            _ = changes.next() => {}
            () = tokio::time::sleep(REDISCOVER_EVERY) => {}
        }
        match discover(&client).await {
            Ok(types) => {
                tx.send_if_modified(|current| {
                    let changed = **current != types;
                    if changed {
                        *current = Arc::new(types);
                    }
                    changed
                });
            }
            Err(e) => tracing::debug!(error = %e, "API discovery failed; kept the last answer"),
        }
    }
}

async fn discover(client: &kube::Client) -> Result<Vec<ResourceType>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut types = Vec::new();
    for group in discovery.groups() {
        for (api, caps) in group.recommended_resources() {
            if [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v))
            {
                types.push(ResourceType {
                    api,
                    namespaced: caps.scope == Scope::Namespaced,
                });
            }
        }
    }
    types.sort_by_key(ResourceType::key);
    Ok(types)
}
