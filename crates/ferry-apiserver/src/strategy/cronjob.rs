//! CronJobs (`batch/v1`): Jobs created on a schedule. Defaults as kube-apiserver's
//! `SetDefaults_CronJob`, validation as `pkg/apis/batch/validation` (the schedule parses in
//! the standard cron dialect, the time zone exists, the job template is a valid Job spec),
//! and the columns `kubectl get cronjobs` prints.

use ferry_api::cron::{Schedule, names_time_zone};
use serde_json::{Value, json};

use super::job::{selector_string, set_job_spec_defaults, template_containers, validate_job_spec};
use super::{Strategy, age_column, name_column, object_field, or_none};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;

/// The longest CronJob name: its Jobs append 11 characters (`-` and the scheduled minute).
const MAX_CRONJOB_NAME_LENGTH: usize = 52;

/// The strategy of CronJobs.
pub struct CronJobs;

impl Strategy for CronJobs {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("batch", "v1", "cronjobs", "CronJob", true, &["cj"])
                .with_status()
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::batch::v1::CronJob>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        set_defaults(object);
        object["status"] = json!({});
        Ok(())
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, old: &Value, new: &mut Value) {
        super::keep_field(old, new, "status");
        set_defaults(new);
    }

    fn validate(&self, object: &Value, causes: &mut Vec<FieldCause>) {
        let name = meta::name(object);
        if name.len() > MAX_CRONJOB_NAME_LENGTH {
            causes.push(FieldCause::invalid(
                "metadata.name",
                name,
                format!("must be no more than {MAX_CRONJOB_NAME_LENGTH} characters"),
            ));
        }
        validate_spec(&object["spec"], causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new(
                "Schedule",
                "string",
                0,
                "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
            ),
            Column::new(
                "Timezone",
                "string",
                0,
                "The time zone name for the given schedule.",
            ),
            Column::new(
                "Suspend",
                "boolean",
                0,
                "This flag tells the controller to suspend subsequent executions.",
            ),
            Column::new(
                "Active",
                "integer",
                0,
                "A list of pointers to currently running jobs.",
            ),
            Column::new(
                "Last Schedule",
                "string",
                0,
                "Information when was the last time the job was successfully scheduled.",
            ),
            age_column(),
            Column::new(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            Column::new(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            Column::new(
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count.",
            ),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let spec = &o["spec"];
        let template = &spec["jobTemplate"]["spec"]["template"];
        let last = match o["status"]["lastScheduleTime"].as_str() {
            Some(t) => meta::human_age(t),
            None => "<none>".into(),
        };
        vec![
            json!(meta::name(o)),
            json!(spec["schedule"].as_str().unwrap_or_default()),
            json!(or_none(spec["timeZone"].as_str().unwrap_or_default())),
            // kube's printer writes the boolean as a word.
            json!(if spec["suspend"].as_bool().unwrap_or(false) {
                "True"
            } else {
                "False"
            }),
            json!(o["status"]["active"].as_array().map_or(0, Vec::len)),
            json!(last),
            super::age(o),
            json!(or_none(&template_containers(template, "name"))),
            json!(or_none(&template_containers(template, "image"))),
            json!(or_none(&selector_string(
                &spec["jobTemplate"]["spec"]["selector"]
            ))),
        ]
    }
}

/// `SetDefaults_CronJob`, and the Job defaults of its template.
fn set_defaults(cronjob: &mut Value) {
    let spec = object_field(cronjob, "spec");
    spec.entry("concurrencyPolicy").or_insert(json!("Allow"));
    spec.entry("suspend").or_insert(json!(false));
    spec.entry("successfulJobsHistoryLimit").or_insert(json!(3));
    spec.entry("failedJobsHistoryLimit").or_insert(json!(1));
    if let Some(template) = spec.get_mut("jobTemplate") {
        set_job_spec_defaults(object_field(template, "spec"));
    }
}

fn validate_spec(spec: &Value, causes: &mut Vec<FieldCause>) {
    let schedule = spec["schedule"].as_str().unwrap_or_default();
    if schedule.is_empty() {
        causes.push(FieldCause::required("spec.schedule"));
    } else if let Err(e) = Schedule::parse(schedule) {
        causes.push(FieldCause::invalid("spec.schedule", schedule, e.0));
    }
    if let Some(tz) = spec["timeZone"].as_str() {
        if names_time_zone(schedule) {
            causes.push(FieldCause::invalid(
                "spec.schedule",
                schedule,
                "cannot use both timeZone field and TZ or CRON_TZ in schedule",
            ));
        }
        if let Some(why) = time_zone_problem(tz) {
            causes.push(FieldCause::invalid("spec.timeZone", tz, why));
        }
    }
    let policy = spec["concurrencyPolicy"].as_str().unwrap_or_default();
    if !matches!(policy, "Allow" | "Forbid" | "Replace") {
        causes.push(FieldCause::not_supported(
            "spec.concurrencyPolicy",
            policy,
            &["Allow", "Forbid", "Replace"],
        ));
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        if let Some(n) = spec[f].as_i64()
            && n < 0
        {
            causes.push(super::job::invalid_int(
                format!("spec.{f}"),
                n,
                "must be greater than or equal to 0",
            ));
        }
    }
    validate_job_spec(
        &spec["jobTemplate"]["spec"],
        "spec.jobTemplate.spec",
        false,
        causes,
    );
}

/// Why `tz` is not an IANA time zone name the controller can load, if it is not.
fn time_zone_problem(tz: &str) -> Option<String> {
    if tz.eq_ignore_ascii_case("local") {
        return Some(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    if tz.is_empty() || tz.contains(' ') || k8s_openapi::jiff::tz::TimeZone::get(tz).is_err() {
        return Some(format!("unknown time zone {tz}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cronjob(schedule: &str) -> Value {
        json!({
            "metadata": {"name": "hello"},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "hello", "image": "busybox"}]
            }}}}}
        })
    }

    fn causes(o: &Value) -> Vec<FieldCause> {
        let mut c = Vec::new();
        CronJobs.validate(o, &mut c);
        c
    }

    #[test]
    fn defaults_as_kube_apiserver() {
        let mut c = cronjob("* * * * *");
        set_defaults(&mut c);
        assert_eq!(c["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(c["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(c["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(c["spec"]["suspend"], false);
        assert_eq!(c["spec"]["jobTemplate"]["spec"]["backoffLimit"], 6);
        assert!(causes(&c).is_empty(), "{:?}", causes(&c));
    }

    #[test]
    fn bad_schedules_and_zones_are_invalid() {
        let mut c = cronjob("not a schedule");
        set_defaults(&mut c);
        let found = causes(&c);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "spec.schedule");
        assert!(found[0].message.contains("expected exactly 5 fields"));

        let mut c = cronjob("TZ=UTC * * * * *");
        c["spec"]["timeZone"] = json!("Mars/Olympus");
        set_defaults(&mut c);
        let fields: Vec<String> = causes(&c).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["spec.schedule", "spec.timeZone"]);

        let mut c = cronjob("@hourly");
        c["spec"]["timeZone"] = json!("Europe/Paris");
        set_defaults(&mut c);
        assert!(causes(&c).is_empty());
    }
}
