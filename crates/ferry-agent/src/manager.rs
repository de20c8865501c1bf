//! Watches the pods bound to this node (`spec.nodeName` field selector) and hands each to its
//! worker; after the first complete list, stops the processes of pods that no longer exist
//! (deleted while the agent was away) and removes their files.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::gpu::{POD_ASSIGNED_ANNOTATION, parse_assigned};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::layout::safe_component;
use crate::pod::{PodWorker, Shared};

/// How long the uid of a finished pod is remembered, to ignore late watch events about it.
const FINISHED_MEMORY: Duration = Duration::from_secs(600);

struct Workers {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    senders: HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
    tasks: JoinSet<String>,
    finished: HashMap<String, Instant>,
}

impl Workers {
    /// Gives `pod` to its worker, starting one if needed.
    fn dispatch(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if self.finished.contains_key(&uid) {
            return;
        }
        if !safe_component(&uid) {
            tracing::warn!(uid, "ignoring a pod whose uid cannot be a directory name");
            return;
        }
        let pod = Arc::new(pod);
        if let Some(tx) = self.senders.get(&uid) {
            tx.send_replace(Some(pod));
            return;
        }
        let (tx, rx) = watch::channel(Some(pod));
        self.spawn(uid, tx, rx);
    }

    fn spawn(
        &mut self,
        uid: String,
        tx: watch::Sender<Option<Arc<Pod>>>,
        rx: watch::Receiver<Option<Arc<Pod>>>,
    ) {
        let worker = PodWorker::new(self.shared.clone(), uid.clone(), rx);
        let shutdown = self.shutdown.clone();
        let id = uid.clone();
        self.tasks.spawn(async move {
            worker.run(shutdown).await;
            id
        });
        self.senders.insert(uid, tx);
    }

    /// Tells the worker of `uid` that its pod is gone.
    fn gone(&mut self, uid: &str) {
        if let Some(tx) = self.senders.get(uid) {
            tx.send_replace(None);
        }
    }

    /// Starts workers for pod directories whose pod no longer exists.
    fn adopt_orphans(&mut self, live: &HashSet<String>) {
        for uid in self.shared.layout.pod_uids() {
            if live.contains(&uid) || self.senders.contains_key(&uid) {
                continue;
            }
            tracing::info!(
                uid,
                "found the files of a pod that no longer exists; stopping what is left of it"
            );
            let (tx, rx) = watch::channel(None);
            self.spawn(uid, tx, rx);
        }
    }

    fn finished(&mut self, uid: String) {
        self.senders.remove(&uid);
        let now = Instant::now();
        self.finished
            .retain(|_, t| now.duration_since(*t) < FINISHED_MEMORY);
        self.finished.insert(uid, now);
    }
}

/// Runs the pods of this node until `shutdown` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let stream =
        watcher::watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut workers = Workers {
        shared: shared.clone(),
        shutdown: shutdown.clone(),
        senders: HashMap::new(),
        tasks: JoinSet::new(),
        finished: HashMap::new(),
    };
    let mut batch: Vec<Pod> = Vec::new();
    let mut orphans_checked = false;
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(Event::Init)) => batch.clear(),
                Some(Ok(Event::InitApply(pod))) => batch.push(pod),
                Some(Ok(Event::InitDone)) => {
                    let pods = std::mem::take(&mut batch);
                    let live: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                    // Hold every scheduler-assigned GPU before any worker picks devices itself.
                    for p in &pods {
                        let terminal = p.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
                        let assigned = p.metadata.annotations.as_ref().and_then(|a| a.get(POD_ASSIGNED_ANNOTATION));
                        if let (Some(uid), Some(value), false) = (&p.metadata.uid, assigned, terminal)
                            && let Ok(indices) = parse_assigned(value)
                        {
                            shared.hold(uid, indices);
                        }
                    }
                    let stale: Vec<String> = workers.senders.keys().filter(|u| !live.contains(*u)).cloned().collect();
                    for uid in stale {
                        workers.gone(&uid);
                    }
                    for p in pods {
                        workers.dispatch(p);
                    }
                    if !orphans_checked {
                        workers.adopt_orphans(&live);
                        orphans_checked = true;
                    }
                }
                Some(Ok(Event::Apply(pod))) => {
                    let terminal = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
                    if let (Some(uid), Some(value), false) = (
                        &pod.metadata.uid,
                        pod.metadata.annotations.as_ref().and_then(|a| a.get(POD_ASSIGNED_ANNOTATION)),
                        terminal,
                    ) && !workers.senders.contains_key(uid)
                        && let Ok(indices) = parse_assigned(value)
                    {
                        shared.hold(uid, indices);
                    }
                    workers.dispatch(pod);
                }
                Some(Ok(Event::Delete(pod))) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        workers.gone(uid);
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "watching this node's pods failed; retrying"),
                None => break,
            },
            Some(done) = workers.tasks.join_next(), if !workers.tasks.is_empty() => {
                match done {
                    Ok(uid) => workers.finished(uid),
                    Err(e) => tracing::error!(error = %e, "a pod worker failed"),
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    // Workers return on shutdown without touching their processes.
    workers.senders.clear();
    let wait_all = async { while workers.tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), wait_all)
        .await
        .is_err()
    {
        workers.tasks.abort_all();
    }
}
