//! Jobs (`batch/v1`): pods run to completion. Defaults as kube-apiserver's `SetDefaults_Job`
//! and the generated selector of `pkg/registry/batch/job`, validation as
//! `pkg/apis/batch/validation` (spec, pod failure and success policies, immutable fields on
//! update, status counters), and the columns `kubectl get jobs` prints.

use serde_json::{Map, Value, json};

use super::{Strategy, age_column, name_column, object_field, or_none};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation;

/// The label with the Job's uid that the generated selector chooses.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label with the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The legacy forms of those labels, still set by kube-apiserver.
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
/// See [`LEGACY_CONTROLLER_UID_LABEL`].
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// The most completions (and parallelism) an Indexed Job may have.
const MAX_INDEXED_COMPLETIONS: i64 = 100_000;
/// The most failed indexes an Indexed Job with a per-index back-off limit may tolerate.
const MAX_FAILED_INDEXES_LIMIT: i64 = 100_000;

/// The strategy of Jobs.
pub struct Jobs;

impl Strategy for Jobs {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("batch", "v1", "jobs", "Job", true, &[])
                .with_status()
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::batch::v1::Job>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        if object["spec"]["manualSelector"].as_bool() != Some(true) {
            generate_selector(object);
        }
        set_defaults(object);
        object["status"] = json!({});
        Ok(())
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, old: &Value, new: &mut Value) {
        super::keep_field(old, new, "status");
        set_defaults(new);
    }

    fn validate(&self, object: &Value, causes: &mut Vec<FieldCause>) {
        validate_job_spec(&object["spec"], "spec", true, causes);
        validate_status(&object["status"], causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        validate_spec_update(old, new, causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Status", "string", 0, "Status of the job."),
            Column::new(
                "Completions",
                "string",
                0,
                "The desired number of successfully finished pods the job should be run with.",
            ),
            Column::new(
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
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
        let status = &o["status"];
        let succeeded = status["succeeded"].as_i64().unwrap_or(0);
        let completions = match spec["completions"].as_i64() {
            Some(c) => format!("{succeeded}/{c}"),
            None => match spec["parallelism"].as_i64().unwrap_or(0) {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let start = status["startTime"].as_str().and_then(meta::parse_time);
        let end = status["completionTime"]
            .as_str()
            .and_then(meta::parse_time)
            .unwrap_or_else(k8s_openapi::jiff::Timestamp::now);
        let duration = start.map_or(String::new(), |s| {
            meta::human_duration((end.as_second() - s.as_second()).max(0))
        });
        vec![
            json!(meta::name(o)),
            json!(job_status(o)),
            json!(completions),
            json!(duration),
            super::age(o),
            json!(or_none(&template_containers(&spec["template"], "name"))),
            json!(or_none(&template_containers(&spec["template"], "image"))),
            json!(or_none(&selector_string(&spec["selector"]))),
        ]
    }
}

/// The STATUS column, as kubectl's printer words it.
fn job_status(o: &Value) -> &'static str {
    let has = |t: &str| {
        o["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if meta::is_deleting(o) {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

/// The comma-separated `field` of each container of a pod template.
pub fn template_containers(template: &Value, field: &str) -> String {
    template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c[field].as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A label selector as kubectl prints it (`a=b,c in (d,e)`).
pub fn selector_string(selector: &Value) -> String {
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    parts.join(",")
}

/// The selector and template labels kube-apiserver generates for a Job without
/// `manualSelector`: the Job's uid and name on its pods, the uid in the selector.
fn generate_selector(job: &mut Value) {
    let name = meta::name(job).to_string();
    let uid = meta::uid(job).to_string();
    let spec = object_field(job, "spec");
    let template = spec.entry("template").or_insert_with(|| json!({}));
    let labels = object_field(object_field_value(template, "metadata"), "labels");
    for key in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
        labels.entry(key).or_insert(json!(name));
    }
    for key in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
        labels.entry(key).or_insert(json!(uid));
    }
    let selector = object_field(spec_value(job), "selector");
    let match_labels = selector.entry("matchLabels").or_insert_with(|| json!({}));
    if !match_labels.is_object() {
        *match_labels = json!({});
    }
    if let Some(m) = match_labels.as_object_mut() {
        m.entry(CONTROLLER_UID_LABEL).or_insert(json!(uid));
    }
}

fn spec_value(job: &mut Value) -> &mut Value {
    object_field(job, "spec");
    &mut job["spec"]
}

fn object_field_value<'a>(v: &'a mut Value, field: &str) -> &'a mut Value {
    object_field(v, field);
    &mut v[field]
}

/// `SetDefaults_Job` (and the pod template's restart policy, as the pod defaults give it).
pub fn set_defaults(job: &mut Value) {
    let template_labels = job["spec"]["template"]["metadata"]["labels"].clone();
    {
        let spec = object_field(job, "spec");
        set_job_spec_defaults(spec);
    }
    // A Job without labels takes its template's.
    let labels_empty = job["metadata"]["labels"]
        .as_object()
        .is_none_or(Map::is_empty);
    if labels_empty && template_labels.as_object().is_some_and(|l| !l.is_empty()) {
        meta::metadata_mut(job).insert("labels".into(), template_labels);
    }
}

/// Defaults of a Job spec (also those of a CronJob's job template).
pub fn set_job_spec_defaults(spec: &mut Map<String, Value>) {
    spec.entry("completionMode").or_insert(json!("NonIndexed"));
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    if spec.get("parallelism").is_none_or(Value::is_null) {
        spec.insert("parallelism".into(), json!(1));
    }
    if spec.get("backoffLimit").is_none_or(Value::is_null) {
        let per_index = spec
            .get("backoffLimitPerIndex")
            .is_some_and(|v| !v.is_null());
        spec.insert(
            "backoffLimit".into(),
            json!(if per_index { i32::MAX as i64 } else { 6 }),
        );
    }
    spec.entry("suspend").or_insert(json!(false));
    let has_pod_failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    spec.entry("podReplacementPolicy")
        .or_insert(json!(if has_pod_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }));
    if let Some(rules) = spec
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut)
    {
        for rule in rules {
            for pattern in rule
                .get_mut("onPodConditions")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(p) = pattern.as_object_mut() {
                    p.entry("status").or_insert(json!("True"));
                }
            }
        }
    }
    if let Some(t) = spec.get_mut("template") {
        object_field(t, "spec")
            .entry("restartPolicy")
            .or_insert(json!("Always"));
    }
}

/// An invalid integer field, printed unquoted as kube-apiserver prints numbers.
pub fn invalid_int(field: impl Into<String>, n: i64, why: impl Into<String>) -> FieldCause {
    FieldCause {
        field: field.into(),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {n}: {}", why.into()),
    }
}

/// Validates a Job spec at `path` (`spec`, or a CronJob's `spec.jobTemplate.spec`);
/// `needs_selector`: a Job's spec (the selector is generated before validation).
pub fn validate_job_spec(
    spec: &Value,
    path: &str,
    needs_selector: bool,
    causes: &mut Vec<FieldCause>,
) {
    let at = |f: &str| format!("{path}.{f}");
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        crate::validation::non_negative(&spec[f], &at(f), causes);
    }
    if let Some(d) = spec["activeDeadlineSeconds"].as_i64()
        && d == 0
    {
        causes.push(invalid_int(
            at("activeDeadlineSeconds"),
            d,
            "must be greater than 0",
        ));
    }
    let mode = spec["completionMode"].as_str().unwrap_or("NonIndexed");
    let indexed = mode == "Indexed";
    if !matches!(mode, "NonIndexed" | "Indexed") {
        causes.push(FieldCause::not_supported(
            at("completionMode"),
            mode,
            &["NonIndexed", "Indexed"],
        ));
    }
    if indexed {
        match spec["completions"].as_i64() {
            None => causes.push(FieldCause {
                field: at("completions"),
                reason: "FieldValueRequired",
                message: "Required value: when completion mode is Indexed".into(),
            }),
            Some(c) if c > MAX_INDEXED_COMPLETIONS => causes.push(invalid_int(
                at("completions"),
                c,
                format!("must be less than or equal to {MAX_INDEXED_COMPLETIONS} when completion mode is Indexed"),
            )),
            Some(_) => {}
        }
        if let Some(p) = spec["parallelism"].as_i64()
            && p > MAX_INDEXED_COMPLETIONS
        {
            causes.push(invalid_int(
                at("parallelism"),
                p,
                format!("must be less than or equal to {MAX_INDEXED_COMPLETIONS} when completion mode is Indexed"),
            ));
        }
    }
    if let Some(limit) = spec["backoffLimitPerIndex"].as_i64() {
        crate::validation::non_negative(
            &spec["backoffLimitPerIndex"],
            &at("backoffLimitPerIndex"),
            causes,
        );
        let _ = limit;
        if !indexed {
            causes.push(FieldCause::forbidden(
                at("backoffLimitPerIndex"),
                "requires indexed completion mode",
            ));
        }
    }
    if let Some(max) = spec["maxFailedIndexes"].as_i64() {
        if spec["backoffLimitPerIndex"].is_null() {
            causes.push(FieldCause {
                field: at("backoffLimitPerIndex"),
                reason: "FieldValueRequired",
                message: "Required value: when maxFailedIndexes is specified".into(),
            });
        }
        if !indexed {
            causes.push(FieldCause::forbidden(
                at("maxFailedIndexes"),
                "requires indexed completion mode",
            ));
        }
        crate::validation::non_negative(&spec["maxFailedIndexes"], &at("maxFailedIndexes"), causes);
        if let Some(c) = spec["completions"].as_i64()
            && max > c
        {
            causes.push(invalid_int(
                at("maxFailedIndexes"),
                max,
                "must be less than or equal to completions",
            ));
        }
        if max > MAX_FAILED_INDEXES_LIMIT {
            causes.push(invalid_int(
                at("maxFailedIndexes"),
                max,
                format!("must be less than or equal to {MAX_FAILED_INDEXES_LIMIT}"),
            ));
        }
    }
    if let Some(policy) = spec["podReplacementPolicy"].as_str() {
        if !matches!(policy, "TerminatingOrFailed" | "Failed") {
            causes.push(FieldCause::not_supported(
                at("podReplacementPolicy"),
                policy,
                &["Failed", "TerminatingOrFailed"],
            ));
        } else if policy == "TerminatingOrFailed" && !spec["podFailurePolicy"].is_null() {
            causes.push(FieldCause::not_supported(
                at("podReplacementPolicy"),
                policy,
                &["Failed"],
            ));
        }
    }
    if needs_selector {
        match spec["selector"].as_object() {
            None => causes.push(FieldCause::required(at("selector"))),
            Some(_) => {
                let labels = &spec["template"]["metadata"]["labels"];
                if !selector_matches(&spec["selector"], labels) {
                    causes.push(FieldCause::invalid(
                        format!("{path}.template.metadata.labels"),
                        labels_string(labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    validate_template(&spec["template"], &at("template"), causes);
    let restart = spec["template"]["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or_default();
    let restart_field = format!("{path}.template.spec.restartPolicy");
    if !matches!(restart, "OnFailure" | "Never") {
        causes.push(FieldCause::not_supported(
            restart_field.clone(),
            restart,
            &["OnFailure", "Never"],
        ));
    }
    if !spec["podFailurePolicy"].is_null() {
        if restart == "OnFailure" {
            causes.push(FieldCause::invalid(
                restart_field,
                restart,
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
        validate_pod_failure_policy(spec, &at("podFailurePolicy"), causes);
    }
    if !spec["successPolicy"].is_null() {
        validate_success_policy(spec, &at("successPolicy"), causes);
    }
}

fn validate_template(template: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    let pod = json!({"metadata": template["metadata"], "spec": template["spec"]});
    let mut pod_causes = Vec::new();
    validation::validate_pod(&pod, &mut pod_causes);
    for mut c in pod_causes {
        c.field = format!("{path}.{}", c.field);
        causes.push(c);
    }
    if let Some(a) = template["spec"]["activeDeadlineSeconds"].as_i64()
        && a <= 0
    {
        causes.push(invalid_int(
            format!("{path}.spec.activeDeadlineSeconds"),
            a,
            "must be greater than 0",
        ));
    }
}

fn validate_pod_failure_policy(spec: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    let rules = spec["podFailurePolicy"]["rules"].as_array();
    if rules.is_some_and(|r| r.len() > 20) {
        causes.push(FieldCause {
            field: format!("{path}.rules"),
            reason: "FieldValueTooMany",
            message: format!(
                "Too many: {}: must have at most 20 items",
                rules.map_or(0, Vec::len)
            ),
        });
    }
    let container_names: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec["template"]["spec"][l].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let rule_path = format!("{path}.rules[{i}]");
        let action = rule["action"].as_str().unwrap_or_default();
        if !matches!(action, "FailJob" | "FailIndex" | "Ignore" | "Count") {
            causes.push(FieldCause::not_supported(
                format!("{rule_path}.action"),
                action,
                &["Count", "FailIndex", "FailJob", "Ignore"],
            ));
        }
        if action == "FailIndex" && spec["backoffLimitPerIndex"].is_null() {
            causes.push(FieldCause::forbidden(
                format!("{rule_path}.action"),
                "requires the backoffLimitPerIndex to be set",
            ));
        }
        let codes = &rule["onExitCodes"];
        let conditions = &rule["onPodConditions"];
        match (codes.is_null(), conditions.is_null()) {
            (true, true) => causes.push(FieldCause::invalid(
                rule_path.clone(),
                "null",
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            (false, false) => causes.push(FieldCause::invalid(
                rule_path.clone(),
                "null",
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            _ => {}
        }
        if !codes.is_null() {
            let codes_path = format!("{rule_path}.onExitCodes");
            if let Some(container) = codes["containerName"].as_str()
                && !container_names.contains(&container)
            {
                causes.push(FieldCause::invalid(
                    format!("{codes_path}.containerName"),
                    container,
                    "must be one of the container or initContainer names in the pod template",
                ));
            }
            let operator = codes["operator"].as_str().unwrap_or_default();
            if !matches!(operator, "In" | "NotIn") {
                causes.push(FieldCause::not_supported(
                    format!("{codes_path}.operator"),
                    operator,
                    &["In", "NotIn"],
                ));
            }
            let values: Vec<i64> = codes["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .collect();
            let values_path = format!("{codes_path}.values");
            if values.is_empty() {
                causes.push(FieldCause {
                    field: values_path.clone(),
                    reason: "FieldValueInvalid",
                    message: "Invalid value: \"null\": at least one value is required".into(),
                });
            }
            if values.len() > 255 {
                causes.push(FieldCause {
                    field: values_path.clone(),
                    reason: "FieldValueTooMany",
                    message: format!("Too many: {}: must have at most 255 items", values.len()),
                });
            }
            for (j, &v) in values.iter().enumerate() {
                let at = format!("{values_path}[{j}]");
                if operator == "In" && v == 0 {
                    causes.push(invalid_int(
                        at.clone(),
                        v,
                        "must not be 0 for the In operator",
                    ));
                }
                if j > 0 && values[j - 1] == v {
                    causes.push(FieldCause {
                        field: at,
                        reason: "FieldValueDuplicate",
                        message: format!("Duplicate value: {v}"),
                    });
                } else if j > 0 && values[j - 1] > v {
                    causes.push(invalid_int(at, v, "must be ordered"));
                }
            }
        }
        for (j, p) in conditions.as_array().into_iter().flatten().enumerate() {
            let at = format!("{rule_path}.onPodConditions[{j}]");
            let status = p["status"].as_str().unwrap_or_default();
            if !matches!(status, "True" | "False" | "Unknown") {
                causes.push(FieldCause::not_supported(
                    format!("{at}.status"),
                    status,
                    &["False", "True", "Unknown"],
                ));
            }
            if p["type"].as_str().is_none_or(str::is_empty) {
                causes.push(FieldCause::required(format!("{at}.type")));
            }
        }
    }
}

fn validate_success_policy(spec: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    if spec["completionMode"].as_str() != Some("Indexed") {
        causes.push(FieldCause::invalid(
            path,
            "successPolicy",
            "requires indexed completion mode",
        ));
        return;
    }
    let completions = spec["completions"].as_i64().unwrap_or(0);
    let rules = spec["successPolicy"]["rules"].as_array();
    if rules.is_none_or(Vec::is_empty) {
        causes.push(FieldCause::required(format!("{path}.rules")));
    }
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let at = format!("{path}.rules[{i}]");
        let indexes = rule["succeededIndexes"].as_str();
        let count = rule["succeededCount"].as_i64();
        if indexes.is_none() && count.is_none() {
            causes.push(FieldCause::required(format!(
                "{at}: at least one of succeededCount or succeededIndexes must be specified"
            )));
            continue;
        }
        let mut in_indexes = None;
        if let Some(text) = indexes {
            match parse_index_ranges(text, completions) {
                Ok(n) => in_indexes = Some(n),
                Err(why) => causes.push(FieldCause::invalid(
                    format!("{at}.succeededIndexes"),
                    text,
                    why,
                )),
            }
        }
        if let Some(c) = count {
            if c < 0 {
                causes.push(invalid_int(
                    format!("{at}.succeededCount"),
                    c,
                    "must be greater than or equal to 0",
                ));
            } else if c > completions {
                causes.push(invalid_int(
                    format!("{at}.succeededCount"),
                    c,
                    format!(
                        "must be less than or equal to {completions} (the number of completions)"
                    ),
                ));
            } else if let Some(n) = in_indexes
                && c > n
            {
                causes.push(invalid_int(
                    format!("{at}.succeededCount"),
                    c,
                    format!("must be less than or equal to {n} (the number of indexes in the specified succeededIndexes field)"),
                ));
            }
        }
    }
}

/// Parses an index interval list such as `0-3,5` below `completions`; returns how many.
pub fn parse_index_ranges(text: &str, completions: i64) -> Result<i64, String> {
    let mut count = 0;
    let mut last = -1;
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let lo: i64 = lo
            .parse()
            .map_err(|_| format!("error parsing index {part:?}"))?;
        let hi: i64 = hi
            .parse()
            .map_err(|_| format!("error parsing index {part:?}"))?;
        if lo > hi {
            return Err(format!(
                "non-increasing order, previous: {lo}, current: {hi}"
            ));
        }
        if lo <= last {
            return Err(format!(
                "overlapping intervals or non-increasing order, previous: {last}, current: {lo}"
            ));
        }
        if hi >= completions {
            return Err(format!(
                "too large: {hi}, must be less than completions: {completions}"
            ));
        }
        count += hi - lo + 1;
        last = hi;
    }
    Ok(count)
}

fn validate_status(status: &Value, causes: &mut Vec<FieldCause>) {
    for f in ["active", "ready", "succeeded", "failed", "terminating"] {
        crate::validation::non_negative(&status[f], &format!("status.{f}"), causes);
    }
    let finished = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            matches!(c["type"].as_str(), Some("Complete") | Some("Failed")) && c["status"] == "True"
        });
    let complete = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Complete" && c["status"] == "True");
    if !status["completionTime"].is_null() && !complete {
        causes.push(FieldCause::invalid(
            "status.completionTime",
            status["completionTime"].as_str().unwrap_or_default(),
            "completionTime can only be set when Complete condition is true",
        ));
    }
    if finished && status["active"].as_i64().unwrap_or(0) > 0 {
        causes.push(invalid_int(
            "status.active",
            status["active"].as_i64().unwrap_or(0),
            "active>0 is invalid is when Job is finished",
        ));
    }
}

/// The template fields a suspended Job that never started may still change
/// (`nodeSelector`, tolerations, affinity, scheduling gates, labels and annotations).
fn strip_mutable_scheduling(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("labels");
        m.remove("annotations");
    }
    if let Some(s) = t.get_mut("spec").and_then(Value::as_object_mut) {
        for f in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
            s.remove(f);
        }
    }
    t
}

fn immutable(old: &Value, new: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    if old != new {
        // Numbers and objects unquoted, strings quoted, as kube-apiserver prints them.
        let shown = match new {
            Value::Null => "null".to_string(),
            other => other.to_string(),
        };
        causes.push(FieldCause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {shown}: field is immutable"),
        });
    }
}

fn validate_spec_update(old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    let (o, n) = (&old["spec"], &new["spec"]);
    immutable(&o["selector"], &n["selector"], "spec.selector", causes);
    let may_mutate_scheduling =
        o["suspend"].as_bool() == Some(true) && old["status"]["startTime"].is_null();
    if may_mutate_scheduling {
        immutable(
            &strip_mutable_scheduling(&o["template"]),
            &strip_mutable_scheduling(&n["template"]),
            "spec.template",
            causes,
        );
    } else {
        immutable(&o["template"], &n["template"], "spec.template", causes);
    }
    let elastic = n["completionMode"] == "Indexed"
        && n["completions"] == n["parallelism"]
        && o["completions"] == o["parallelism"];
    if !elastic {
        immutable(
            &o["completions"],
            &n["completions"],
            "spec.completions",
            causes,
        );
    }
    for f in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "successPolicy",
        "manualSelector",
    ] {
        immutable(&o[f], &n[f], &format!("spec.{f}"), causes);
    }
}

/// Whether a label selector (matchLabels and matchExpressions) chooses `labels`.
pub fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let match_labels = selector["matchLabels"].as_object();
    let exprs = selector["matchExpressions"].as_array();
    if match_labels.is_none_or(Map::is_empty) && exprs.is_none_or(Vec::is_empty) {
        return false;
    }
    for (k, v) in match_labels.into_iter().flatten() {
        if get(k) != v.as_str() {
            return false;
        }
    }
    for e in exprs.into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let ok = match e["operator"].as_str().unwrap_or_default() {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn labels_string(labels: &Value) -> String {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Value {
        json!({
            "metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "pi", "image": "perl"}]
            }}}
        })
    }

    fn causes(job: &Value) -> Vec<FieldCause> {
        let mut c = Vec::new();
        validate_job_spec(&job["spec"], "spec", true, &mut c);
        c
    }

    #[test]
    fn defaults_and_generated_selector_match_kube_apiserver() {
        let mut j = job();
        generate_selector(&mut j);
        set_defaults(&mut j);
        let spec = &j["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(spec["selector"]["matchLabels"][CONTROLLER_UID_LABEL], "u-1");
        let labels = &spec["template"]["metadata"]["labels"];
        assert_eq!(labels[JOB_NAME_LABEL], "pi");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(j["metadata"]["labels"][CONTROLLER_UID_LABEL], "u-1");
        assert!(causes(&j).is_empty(), "{:?}", causes(&j));

        let mut per_index = job();
        per_index["spec"]["backoffLimitPerIndex"] = json!(1);
        per_index["spec"]["completions"] = json!(4);
        set_defaults(&mut per_index);
        assert_eq!(per_index["spec"]["backoffLimit"], i32::MAX as i64);
        assert_eq!(per_index["spec"]["parallelism"], 1);
    }

    #[test]
    fn bad_specs_get_kubes_messages() {
        let mut j = job();
        generate_selector(&mut j);
        j["spec"]["parallelism"] = json!(-1);
        let c = causes(&j);
        assert!(c.iter().any(|c| c.field == "spec.parallelism"
            && c.message == "Invalid value: -1: must be greater than or equal to 0"));

        let mut j = job();
        generate_selector(&mut j);
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let c = causes(&j);
        assert!(
            c.iter()
                .any(|c| c.message.starts_with("Unsupported value: \"Always\""))
        );

        let mut j = job();
        generate_selector(&mut j);
        j["spec"]["completionMode"] = json!("Indexed");
        j["spec"]["completions"] = Value::Null;
        let c = causes(&j);
        assert!(c.iter().any(|c| c.field == "spec.completions"));

        let mut j = job();
        generate_selector(&mut j);
        j["spec"]["backoffLimitPerIndex"] = json!(1);
        assert!(
            causes(&j)
                .iter()
                .any(|c| c.field == "spec.backoffLimitPerIndex")
        );
    }

    #[test]
    fn updates_keep_immutable_fields() {
        let mut old = job();
        generate_selector(&mut old);
        set_defaults(&mut old);
        let mut new = old.clone();
        new["spec"]["completions"] = json!(3);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        let mut c = Vec::new();
        validate_spec_update(&old, &new, &mut c);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.template", "spec.completions"]);
        assert!(c.iter().all(|c| c.message.ends_with("field is immutable")));

        let mut new = old.clone();
        new["spec"]["parallelism"] = json!(5);
        new["spec"]["suspend"] = json!(true);
        let mut c = Vec::new();
        validate_spec_update(&old, &new, &mut c);
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn index_ranges_parse() {
        assert_eq!(parse_index_ranges("0-3,5", 6), Ok(5));
        assert!(parse_index_ranges("3-1", 6).is_err());
        assert!(parse_index_ranges("0-9", 6).is_err());
    }
}
