//! Garbage collection by owner references, as kube-controller-manager's garbage collector:
//! a dependent whose owners are all gone is deleted (background); the dependents of an owner
//! deleted in the foreground are deleted before it; the dependents of an owner deleted with
//! orphan propagation lose their reference to it. The `foregroundDeletion` and `orphan`
//! finalizers are removed once no dependent is left; the API server then deletes the owner.
//!
//! The graph comes from a metadata-only reflector per resource type (Events excepted, as in
//! Kubernetes). An owner missing from the caches is looked up live before its dependents are
//! deleted, so a cache that lags never deletes a dependent whose owner exists.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::resources::{ResourceType, Resources};
use crate::{Backoff, Error};

/// The finalizer of an owner deleted with foreground propagation.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer of an owner deleted with orphan propagation.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// Longest time between sweeps when nothing changed.
const PERIODIC_SWEEP: Duration = Duration::from_secs(30);
/// Shortest time between sweeps: changes arriving meanwhile share one sweep.
const MIN_SWEEP_GAP: Duration = Duration::from_millis(100);
/// How long garbage collection waits for a resource type's first list before it sweeps
/// without that type (as the Kubernetes garbage collector goes on without unsynced monitors).
const SYNC_GRACE: Duration = Duration::from_secs(30);

type Meta = PartialObjectMeta<DynamicObject>;

struct Watched {
    kind: ResourceType,
    store: Store<Meta>,
    since: tokio::time::Instant,
}

impl Watched {
    /// Whether the cache holds the type's objects; a type that cannot be listed (forbidden,
    /// an aggregated API that is down) stops holding the others back after [`SYNC_GRACE`].
    fn usable(&self) -> bool {
        futures::FutureExt::now_or_never(self.store.wait_until_ready()).is_some()
            || self.since.elapsed() > SYNC_GRACE
    }
}

/// Runs the garbage collector until its future is dropped.
pub async fn run(client: kube::Client, mut resources: Resources) {
    let changed = Arc::new(Notify::new());
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut reflectors: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut wait = PERIODIC_SWEEP;
    loop {
        // Follow the set of resource types.
        let types = resources.borrow_and_update().clone();
        let keys: HashSet<String> = types.iter().map(ResourceType::key).collect();
        watched.retain(|k, _| keys.contains(k));
        reflectors.retain(|k, task| {
            let keep = keys.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        for kind in types.iter().filter(|t| t.api.plural != "events") {
            let key = kind.key();
            if watched.contains_key(&key) {
                continue;
            }
            let writer = reflector::store::Writer::new(kind.api.clone());
            let store = writer.as_reader();
            let api: Api<Meta> = Api::all_with(client.clone(), &kind.api);
            let changed = changed.clone();
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer);
            let task = tasks.spawn(async move {
                stream
                    .for_each(|event| {
                        if event.as_ref().is_ok_and(matters) {
                            changed.notify_one();
                        }
                        futures::future::ready(())
                    })
                    .await;
            });
            reflectors.insert(key.clone(), task);
            watched.insert(
                key,
                Watched {
                    kind: kind.clone(),
                    store,
                    since: tokio::time::Instant::now(),
                },
            );
        }
        tokio::select! {
            () = changed.notified() => {}
            r = resources.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
            () = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(MIN_SWEEP_GAP).await;
        // Sweep only over complete caches: a type still listing would hide dependents.
        if !watched.values().all(Watched::usable) {
            wait = MIN_SWEEP_GAP;
            continue;
        }
        let graph: Vec<(&ResourceType, Arc<Meta>)> = watched
            .values()
            .flat_map(|w| w.store.state().into_iter().map(move |o| (&w.kind, o)))
            .collect();
        if sweep(&client, &types, &graph).await {
            backoff.reset();
            wait = PERIODIC_SWEEP;
        } else {
            wait = backoff.next_delay();
            tracing::debug!(retry_in = ?wait, "garbage collection retries failed writes");
        }
    }
}

/// Whether a watch event can call for garbage collection: a deletion, an object being
/// deleted, or an object with owners (it may name an owner that is already gone).
fn matters(event: &watcher::Event<Meta>) -> bool {
    match event {
        watcher::Event::Delete(_) | watcher::Event::InitDone => true,
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
            o.metadata.deletion_timestamp.is_some()
                || o.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
        }
        watcher::Event::Init => false,
    }
}

fn has_finalizer(o: &Meta, finalizer: &str) -> bool {
    o.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// One pass over the graph; `false` if a write failed (the caller retries with back-off).
async fn sweep(
    client: &kube::Client,
    types: &[ResourceType],
    graph: &[(&ResourceType, Arc<Meta>)],
) -> bool {
    let by_uid: HashMap<&str, &Meta> = graph
        .iter()
        .filter_map(|(_, o)| Some((o.metadata.uid.as_deref()?, &**o)))
        .collect();
    let referenced: HashSet<&str> = graph
        .iter()
        .flat_map(|(_, o)| o.metadata.owner_references.iter().flatten())
        .map(|r| r.uid.as_str())
        .collect();
    let mut ok = true;
    for (kind, o) in graph {
        let deleting = o.metadata.deletion_timestamp.is_some();
        let refs = o.metadata.owner_references.as_deref().unwrap_or_default();
        if !refs.is_empty() {
            let mut keep: Vec<&OwnerReference> = Vec::new();
            let mut orphaned = 0;
            let mut foreground = false;
            for r in refs {
                match by_uid.get(r.uid.as_str()) {
                    None => match owner_exists(client, types, kind, o, r).await {
                        Ok(false) => {} // owner gone
                        Ok(true) => keep.push(r),
                        Err(e) => {
                            tracing::debug!(error = %e, owner = %r.name, "cannot look up an owner");
                            keep.push(r);
                            ok = false;
                        }
                    },
                    Some(owner)
                        if owner.metadata.deletion_timestamp.is_some()
                            && has_finalizer(owner, ORPHAN_FINALIZER) =>
                    {
                        orphaned += 1;
                    }
                    Some(owner)
                        if owner.metadata.deletion_timestamp.is_some()
                            && has_finalizer(owner, FOREGROUND_FINALIZER) =>
                    {
                        foreground = true;
                        keep.push(r);
                    }
                    Some(_) => keep.push(r),
                }
            }
            if keep.is_empty() && orphaned == 0 && !deleting {
                ok &= delete(client, kind, o, DeleteParams::background()).await;
                continue;
            }
            if foreground && !deleting {
                ok &= delete(client, kind, o, DeleteParams::foreground()).await;
                continue;
            }
            if keep.len() != refs.len() {
                let patch = json!({"metadata": {
                    "resourceVersion": o.metadata.resource_version,
                    "ownerReferences": keep,
                }});
                ok &= patch_metadata(client, kind, o, &patch).await;
            }
        }
        if deleting {
            let finalizers = o.metadata.finalizers.as_deref().unwrap_or_default();
            let ours = |f: &String| f == FOREGROUND_FINALIZER || f == ORPHAN_FINALIZER;
            let uid = o.metadata.uid.as_deref().unwrap_or_default();
            if finalizers.iter().any(ours) && !referenced.contains(uid) {
                let rest: Vec<&String> = finalizers.iter().filter(|f| !ours(f)).collect();
                let patch = json!({"metadata": {
                    "resourceVersion": o.metadata.resource_version,
                    "finalizers": rest,
                }});
                ok &= patch_metadata(client, kind, o, &patch).await;
            }
        }
    }
    ok
}

fn api_for(
    client: &kube::Client,
    kind: &ResourceType,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace.filter(|_| kind.namespaced) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.api),
        None => Api::all_with(client.clone(), &kind.api),
    }
}

/// Whether the owner `r` of `o` exists, asked of the API server (the caches may lag).
/// An owner of a kind the server does not serve cannot be confirmed gone: it counts as there.
async fn owner_exists(
    client: &kube::Client,
    types: &[ResourceType],
    dependent_kind: &ResourceType,
    o: &Meta,
    r: &OwnerReference,
) -> Result<bool, Error> {
    let Some(owner_kind) = types
        .iter()
        .find(|t| t.api.api_version == r.api_version && t.api.kind == r.kind)
    else {
        return Ok(true);
    };
    let namespace = o
        .metadata
        .namespace
        .as_deref()
        .filter(|_| dependent_kind.namespaced);
    let api = api_for(client, owner_kind, namespace);
    let live = api.get_metadata_opt(&r.name).await?;
    Ok(live.is_some_and(|owner| owner.metadata.uid.as_deref() == Some(r.uid.as_str())))
}

async fn delete(
    client: &kube::Client,
    kind: &ResourceType,
    o: &Meta,
    mut params: DeleteParams,
) -> bool {
    // Only this object: not a newer one that took its name.
    params.preconditions = Some(Preconditions {
        uid: o.metadata.uid.clone(),
        resource_version: None,
    });
    let name = o.metadata.name.as_deref().unwrap_or_default();
    let api = api_for(client, kind, o.metadata.namespace.as_deref());
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::debug!(resource = %kind.api.plural, namespace = ?o.metadata.namespace, %name, "garbage collected");
            true
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => true,
        Err(e) => {
            tracing::warn!(resource = %kind.api.plural, %name, error = %e, "garbage collection failed");
            false
        }
    }
}

async fn patch_metadata(
    client: &kube::Client,
    kind: &ResourceType,
    o: &Meta,
    patch: &serde_json::Value,
) -> bool {
    let name = o.metadata.name.as_deref().unwrap_or_default();
    let api = api_for(client, kind, o.metadata.namespace.as_deref());
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => true,
        // Gone, or changed since the cache saw it: the next sweep sees the news.
        Err(kube::Error::Api(s)) if s.code == 404 => true,
        Err(kube::Error::Api(s)) if s.code == 409 => false,
        Err(e) => {
            tracing::warn!(resource = %kind.api.plural, %name, error = %e, "garbage collector could not update an object");
            false
        }
    }
}
