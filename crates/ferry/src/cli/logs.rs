//! `ferry logs NAME [-f] [--tail N] [-i INSTANCE]`: an instance's output, rank 0 by default.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;

use super::view::job_info;
use super::{ClusterArgs, JobType, find_job};

/// Arguments of `ferry logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job.
    pub name: String,
    /// The instance (pod) [default: the chief: master, chief or launcher, else worker 0].
    #[arg(short = 'i', long)]
    pub instance: Option<String>,
    /// Keep printing as the instance writes (waits for it to start first).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<i64>,
    /// Only lines newer than this (`30s`, `5m`, `1h`).
    #[arg(long, value_parser = super::submit::parse_duration_secs)]
    pub since: Option<i64>,
    /// Prefix each line with its time.
    #[arg(long)]
    pub timestamps: bool,
    /// The container [default: the framework's].
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// The kind, when two kinds have a job of that name.
    #[arg(short = 'T', long = "type", value_enum)]
    pub job_type: Option<JobType>,
    /// Cluster and namespace.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `ferry logs`.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let (t, job) = find_job(&client, &namespace, &args.name, args.job_type).await?;
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &namespace);
    let mut said_waiting = false;
    // Wait (with -f) for the instance to exist and start.
    let instance = loop {
        let info = job_info(&client, t, &job, false).await?;
        let wanted = args.instance.clone().or(info.chief_name.clone());
        let found = wanted
            .as_ref()
            .and_then(|w| info.instances.iter().find(|i| &i.name == w).cloned());
        match (found, &wanted) {
            (Some(i), _) if i.status != "Pending" => break i,
            (Some(i), _) if !args.follow => bail!(
                "instance {} is Pending{}: no output yet (-f waits for it)",
                i.name,
                i.waiting_reason
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            ),
            (None, Some(w)) if args.instance.is_some() => bail!(
                "job {:?} has no instance {w:?} (404 NotFound); instances: {}",
                info.name,
                info.instances
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, _) if !args.follow => bail!(
                "job {:?} has no instances yet (-f waits for them)",
                info.name
            ),
            (i, w) => {
                if !said_waiting {
                    let why = i.and_then(|i| i.waiting_reason).or(info.waiting_reason);
                    eprintln!(
                        "waiting for {} to start{}",
                        w.as_deref().unwrap_or("the job's instances"),
                        why.map(|w| format!(" ({w})")).unwrap_or_default()
                    );
                    said_waiting = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let params = LogParams {
        container: args.container.clone().or_else(|| {
            // The framework's container when the pod has several.
            Some(t.container().to_string())
        }),
        follow: args.follow,
        tail_lines: args.tail,
        since_seconds: args.since,
        timestamps: args.timestamps,
        ..Default::default()
    };
    let pod = pods
        .get(&instance.name)
        .await
        .context("cannot read the instance")?;
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let mut params = params;
    if args.container.is_none()
        && !params
            .container
            .as_ref()
            .is_some_and(|c| containers.contains(c))
    {
        params.container = containers.first().cloned();
    }
    if args.follow {
        let stream = pods
            .log_stream(&instance.name, &params)
            .await
            .with_context(|| format!("cannot read the output of {}", instance.name))?;
        let mut lines = std::pin::pin!(stream.lines());
        while let Some(line) = lines.try_next().await? {
            println!("{line}");
        }
    } else {
        let text = pods
            .logs(&instance.name, &params)
            .await
            .with_context(|| format!("cannot read the output of {}", instance.name))?;
        print!("{text}");
    }
    Ok(())
}
