//! The CronJob controller, as kube-controller-manager's (`cronjob_controllerv2`): a Job per
//! scheduled time (`<cronjob>-<minutes since the epoch>`, so a restarted controller never
//! runs one time twice), `spec.timeZone`, `startingDeadlineSeconds`, the concurrency
//! policies Allow, Forbid and Replace, suspend, `status.active`, `lastScheduleTime` and
//! `lastSuccessfulTime`, and the successful and failed history limits.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::cron::Schedule;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::Error;

/// The annotation with the time a CronJob's Job was scheduled for (RFC 3339).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The most missed start times looked at before the controller gives up counting.
const MAX_MISSED_SCHEDULES: usize = 100;

/// Runs the controller until the process stops.
pub async fn run(client: kube::Client) {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    Controller::new(cronjobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cronjob controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(cronjob: Arc<CronJob>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::debug!(cronjob = %cronjob.name_any(), %error, "cannot sync the CronJob; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The finished condition of a Job (`Complete` or `Failed`), if it finished.
fn finished_as(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The time zone of the CronJob's schedule (the controller's own without `spec.timeZone`).
fn zone_of(cronjob: &CronJob) -> Option<TimeZone> {
    match cronjob.spec.time_zone.as_deref() {
        Some(name) => TimeZone::get(name).ok(),
        None => Some(TimeZone::system()),
    }
}

/// The most recent scheduled time after `earliest` and not after `now`, and how many
/// were missed in between (counted up to [`MAX_MISSED_SCHEDULES`]).
fn most_recent(
    schedule: &Schedule,
    zone: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let mut last = None;
    let mut missed = 0;
    let mut t = earliest;
    while let Some(next) = schedule.next_after(t, zone) {
        if next > now {
            break;
        }
        last = Some(next);
        missed += 1;
        t = next;
        if missed > MAX_MISSED_SCHEDULES * 100 {
            break;
        }
    }
    (last, missed)
}

async fn reconcile(cached: Arc<CronJob>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let cronjobs: Api<CronJob> = Api::namespaced((*client).clone(), &ns);
    let jobs: Api<Job> = Api::namespaced((*client).clone(), &ns);
    let Some(cronjob) = cronjobs.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if cronjob.uid() != cached.uid() || cronjob.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = cronjob.uid().unwrap_or_default();
    let spec = cronjob.spec.clone();
    let children: Vec<Job> = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    let old_status = cronjob.status.clone().unwrap_or_default();
    let mut status = old_status.clone();

    // status.active: the children still running; lastSuccessfulTime from finished ones.
    let mut active: Vec<ObjectReference> = children
        .iter()
        .filter(|j| finished_as(j).is_none() && j.meta().deletion_timestamp.is_none())
        .map(reference)
        .collect();
    for j in &children {
        if finished_as(j) == Some("Complete")
            && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            && status
                .last_successful_time
                .as_ref()
                .is_none_or(|t| t.0 < done.0)
        {
            status.last_successful_time = Some(done);
        }
    }

    let now = Timestamp::now();
    let mut requeue = None;
    let schedule = Schedule::parse(&spec.schedule).ok();
    let zone = zone_of(&cronjob);
    if spec.suspend != Some(true)
        && let (Some(schedule), Some(zone)) = (schedule.as_ref(), zone.as_ref())
    {
        let created = cronjob
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, |t| t.0);
        let mut earliest = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
        if let Some(deadline) = spec.starting_deadline_seconds {
            let window = Timestamp::from_second(now.as_second() - deadline).unwrap_or(now);
            if window > earliest {
                earliest = window;
            }
        }
        let (scheduled, missed) = most_recent(schedule, zone, earliest, now);
        if missed > MAX_MISSED_SCHEDULES {
            tracing::warn!(cronjob = %name, missed, "too many missed start times; check the clock or the schedule");
        }
        if let Some(at) = scheduled {
            let too_late = spec
                .starting_deadline_seconds
                .is_some_and(|d| at.as_second() + d < now.as_second());
            let job_name = format!("{name}-{}", at.as_second() / 60);
            let already = children.iter().any(|j| j.name_any() == job_name);
            if too_late {
                tracing::info!(cronjob = %name, "missed the starting window of a scheduled time");
            } else if already {
                status.last_schedule_time = Some(Time(at));
            } else if spec.concurrency_policy.as_deref() == Some("Forbid") && !active.is_empty() {
                // Try again once the running Job is done (the next event) or at the next time.
            } else {
                if spec.concurrency_policy.as_deref() == Some("Replace") {
                    for r in &active {
                        delete_job(&jobs, r.name.as_deref().unwrap_or_default()).await?;
                    }
                    active.clear();
                }
                let job = job_for(&cronjob, &job_name, at, zone);
                match jobs.create(&PostParams::default(), &job).await {
                    Ok(created) => {
                        tracing::info!(cronjob = %name, job = %job_name, "created a scheduled Job");
                        active.push(reference(&created));
                        status.last_schedule_time = Some(Time(at));
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        // Created before a restart: that time has run.
                        status.last_schedule_time = Some(Time(at));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if let Some(next) = schedule.next_after(now, zone) {
            let wait = (next.as_second() - now.as_second()).max(1) as u64;
            requeue = Some(Duration::from_secs(wait) + Duration::from_millis(100));
        }
    }
    active.sort_by(|a, b| a.name.cmp(&b.name));
    status.active = (!active.is_empty()).then_some(active);

    clean_history(&jobs, &children, &spec).await?;
    if status != old_status {
        write_status(&cronjobs, &cronjob, status).await?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

async fn write_status(
    api: &Api<CronJob>,
    cronjob: &CronJob,
    status: CronJobStatus,
) -> Result<(), Error> {
    let mut next = cronjob.clone();
    next.status = Some(status);
    api.replace_status(&cronjob.name_any(), &PostParams::default(), &next)
        .await?;
    Ok(())
}

async fn delete_job(jobs: &Api<Job>, name: &str) -> Result<(), Error> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the oldest finished Jobs beyond the history limits.
async fn clean_history(
    jobs: &Api<Job>,
    children: &[Job],
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
) -> Result<(), Error> {
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut finished: Vec<&Job> = children
            .iter()
            .filter(|j| finished_as(j) == Some(kind) && j.meta().deletion_timestamp.is_none())
            .collect();
        // Newest first, by start time (then name).
        finished.sort_by_key(|j| {
            std::cmp::Reverse((
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0),
                j.name_any(),
            ))
        });
        for j in finished.iter().skip(limit.max(0) as usize) {
            delete_job(jobs, &j.name_any()).await?;
        }
    }
    Ok(())
}

/// The Job a CronJob runs for the time `at`.
fn job_for(cronjob: &CronJob, name: &str, at: Timestamp, zone: &TimeZone) -> Job {
    let template = cronjob.spec.job_template.clone();
    let template_meta = template.metadata.unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.into(),
        at.to_zoned(zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace("+00:00", "Z"),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: cronjob.namespace(),
            labels: template_meta.labels,
            annotations: Some(annotations),
            owner_references: cronjob.controller_owner_ref(&()).map(|mut o| {
                o.block_owner_deletion = Some(true);
                vec![o]
            }),
            ..Default::default()
        },
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recent_missed_time_runs() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        let (last, missed) = most_recent(
            &s,
            &TimeZone::UTC,
            at("2026-01-01T10:00:00Z"),
            at("2026-01-01T10:17:00Z"),
        );
        assert_eq!(last, Some(at("2026-01-01T10:15:00Z")));
        assert_eq!(missed, 3);
        let (none, _) = most_recent(
            &s,
            &TimeZone::UTC,
            at("2026-01-01T10:15:00Z"),
            at("2026-01-01T10:17:00Z"),
        );
        assert_eq!(none, None);
    }

    #[test]
    fn scheduled_jobs_are_named_by_minute_and_owned() {
        let cj: CronJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello", "namespace": "default", "uid": "u1"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {}}}}
        }))
        .unwrap();
        let at: Timestamp = "2026-01-01T10:01:00Z".parse().unwrap();
        let job = job_for(
            &cj,
            &format!("hello-{}", at.as_second() / 60),
            at,
            &TimeZone::UTC,
        );
        assert_eq!(job.name_any(), "hello-29454361");
        assert_eq!(
            job.annotations()[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2026-01-01T10:01:00Z"
        );
        assert_eq!(job.owner_references()[0].controller, Some(true));
    }
}
