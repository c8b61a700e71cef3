//! Job <-> HASH codec: how a [`Job`] is laid out in `<prefix>:job:<id>` and read back.
//!
//! Every field is a string: `prerequisites`, `env_vars` and `error` as JSON, times as
//! epoch milliseconds, `cancel_requested` as `1`/`0`; an absent `Option` is an absent
//! field. Decoding never panics on what a hash holds (it may have been edited by hand):
//! a missing or malformed field is [`StoreError::Corrupt`] naming it.
//!
//! Plain functions over plain maps, so they are tested here without a Redis.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::super::{StoreError, from_ms, to_ms};
use crate::job::{Job, JobError, JobId, JobParams, JobStatus};

pub(super) fn corrupt(id: JobId, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id,
        reason: reason.into(),
    }
}

pub(super) fn parse_status(id: JobId, s: &str) -> Result<JobStatus, StoreError> {
    s.parse().map_err(|e| corrupt(id, format!("{e}")))
}

/// The job as HASH field/value pairs (absent `Option`s are left out).
pub(super) fn encode_job(job: &Job) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("id", job.id.to_string()),
        ("caller_id", job.caller_id.clone()),
        ("context_id", job.context_id.clone()),
        ("script", job.script.clone()),
        ("script_type", job.script_type.to_string()),
        ("timeout_secs", job.timeout_secs.to_string()),
        ("retries", job.retries.to_string()),
        ("prerequisites", to_json(&job.prerequisites)),
        ("env_vars", to_json(&job.env_vars)),
        ("status", job.status.to_string()),
        ("attempt", job.attempt.to_string()),
        ("created_at", to_ms(job.created_at).to_string()),
        ("updated_at", to_ms(job.updated_at).to_string()),
        (
            "cancel_requested",
            if job.cancel_requested { "1" } else { "0" }.to_owned(),
        ),
    ];
    let times = [
        ("started_at", job.started_at),
        ("finished_at", job.finished_at),
        ("lease_until", job.lease_until),
        ("not_before", job.not_before),
        ("queued_at", job.queued_at),
    ];
    for (name, t) in times {
        if let Some(t) = t {
            f.push((name, to_ms(t).to_string()));
        }
    }
    let strings = [
        ("output", &job.output),
        ("runner", &job.runner),
        ("lease_owner", &job.lease_owner),
        ("traceparent", &job.traceparent),
    ];
    for (name, s) in strings {
        if let Some(s) = s {
            f.push((name, s.clone()));
        }
    }
    if let Some(e) = &job.error {
        f.push(("error", to_json(e)));
    }
    f
}

/// JSON text of a plain value (strings, string maps, ids): serializing them can't fail.
pub(super) fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(super) fn required(id: JobId, name: &str, v: Option<String>) -> Result<String, StoreError> {
    v.ok_or_else(|| corrupt(id, format!("missing field {name}")))
}

pub(super) fn number<T: std::str::FromStr>(
    id: JobId,
    name: &str,
    v: String,
) -> Result<T, StoreError> {
    v.parse()
        .map_err(|_| corrupt(id, format!("bad {name} {v:?}")))
}

pub(super) fn time(id: JobId, name: &str, v: String) -> Result<DateTime<Utc>, StoreError> {
    from_ms(number(id, name, v)?).ok_or_else(|| corrupt(id, format!("bad {name}")))
}

pub(super) fn opt_time(
    id: JobId,
    name: &str,
    v: Option<String>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    v.map(|v| time(id, name, v)).transpose()
}

pub(super) fn json<T: serde::de::DeserializeOwned>(
    id: JobId,
    name: &str,
    v: String,
) -> Result<T, StoreError> {
    serde_json::from_str(&v).map_err(|e| corrupt(id, format!("bad {name}: {e}")))
}

/// The fields every job has from `create` on, each taken by name from `take`: the job
/// as `Job::new` made it, but for the status, attempt and update time it has now.
pub(super) fn decode_base(
    id: JobId,
    status: JobStatus,
    attempt: u32,
    updated_at: DateTime<Utc>,
    mut take: impl FnMut(&str) -> Option<String>,
) -> Result<Job, StoreError> {
    let traceparent = take("traceparent");
    let mut field = |name: &str| required(id, name, take(name));
    let params = JobParams {
        caller_id: field("caller_id")?,
        context_id: field("context_id")?,
        script: field("script")?,
        script_type: field("script_type")?
            .parse()
            .map_err(|e| corrupt(id, format!("{e}")))?,
        timeout: Some(number(id, "timeout_secs", field("timeout_secs")?)?),
        retries: Some(number(id, "retries", field("retries")?)?),
        prerequisites: json(id, "prerequisites", field("prerequisites")?)?,
        env_vars: json(id, "env_vars", field("env_vars")?)?,
        traceparent,
    };
    let created_at = time(id, "created_at", field("created_at")?)?;
    Ok(Job {
        status,
        attempt,
        updated_at,
        ..Job::new(id, params, created_at)
    })
}

/// Decodes a job HASH (as field -> value).
pub(super) fn decode_job(id: JobId, mut h: HashMap<String, String>) -> Result<Job, StoreError> {
    let stored_id = required(id, "id", h.remove("id"))?;
    if stored_id != id.to_string() {
        return Err(corrupt(id, "id field does not match the key"));
    }
    let status = required(id, "status", h.remove("status"))?;
    let status = parse_status(id, &status)?;
    let attempt = number(id, "attempt", required(id, "attempt", h.remove("attempt"))?)?;
    let updated_at = time(
        id,
        "updated_at",
        required(id, "updated_at", h.remove("updated_at"))?,
    )?;
    let base = decode_base(id, status, attempt, updated_at, |name| h.remove(name))?;
    let mut take = |name: &str| h.remove(name);
    Ok(Job {
        started_at: opt_time(id, "started_at", take("started_at"))?,
        finished_at: opt_time(id, "finished_at", take("finished_at"))?,
        output: take("output"),
        error: take("error")
            .map(|e| json::<JobError>(id, "error", e))
            .transpose()?,
        runner: take("runner"),
        lease_owner: take("lease_owner"),
        lease_until: opt_time(id, "lease_until", take("lease_until"))?,
        not_before: opt_time(id, "not_before", take("not_before"))?,
        cancel_requested: take("cancel_requested").is_some_and(|v| v == "1"),
        queued_at: opt_time(id, "queued_at", take("queued_at"))?,
        ..base
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::job::ScriptType;

    fn at(ms: i64) -> DateTime<Utc> {
        from_ms(ms).unwrap()
    }

    /// A job with every field set, at whole milliseconds (the stored resolution).
    fn full_job() -> Job {
        let params = JobParams {
            script: "print(1)".to_owned(),
            script_type: ScriptType::Python,
            caller_id: "caller".to_owned(),
            context_id: "ctx".to_owned(),
            timeout: Some(7),
            prerequisites: vec![JobId::new(), JobId::new()],
            retries: Some(3),
            env_vars: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        };
        Job {
            status: JobStatus::Started,
            attempt: 2,
            updated_at: at(1_000_005),
            started_at: Some(at(1_000_001)),
            finished_at: Some(at(1_000_002)),
            output: Some("out".to_owned()),
            error: Some(JobError::timeout("slow")),
            runner: Some("hero-1/sal".to_owned()),
            lease_owner: Some("hero-1/sal".to_owned()),
            lease_until: Some(at(1_030_000)),
            not_before: Some(at(1_000_003)),
            cancel_requested: true,
            queued_at: Some(at(1_000_004)),
            ..Job::new(JobId::new(), params, at(1_000_000))
        }
    }

    fn hash(job: &Job) -> HashMap<String, String> {
        encode_job(job)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// Decodes `job`'s hash after `edit`; the reason when it is corrupt.
    fn check(job: &Job, edit: impl FnOnce(&mut HashMap<String, String>)) -> Result<Job, String> {
        let mut h = hash(job);
        edit(&mut h);
        decode_job(job.id, h).map_err(|e| match e {
            StoreError::Corrupt { id, reason } => {
                assert_eq!(id, job.id);
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        })
    }

    #[test]
    fn every_field_round_trips() {
        let job = full_job();
        assert_eq!(check(&job, |_| {}), Ok(job));
    }

    #[test]
    fn absent_options_are_absent_fields() {
        let job = Job::new(
            JobId::new(),
            JobParams {
                script: String::new(),
                script_type: ScriptType::Sal,
                caller_id: String::new(),
                context_id: String::new(),
                timeout: None,
                prerequisites: Vec::new(),
                retries: None,
                env_vars: BTreeMap::new(),
                traceparent: None,
            },
            at(5),
        );
        let h = hash(&job);
        for absent in [
            "started_at",
            "finished_at",
            "lease_until",
            "not_before",
            "queued_at",
            "output",
            "runner",
            "lease_owner",
            "traceparent",
            "error",
        ] {
            assert!(!h.contains_key(absent), "{absent}");
        }
        assert_eq!(h["prerequisites"], "[]");
        assert_eq!(h["cancel_requested"], "0");
        assert_eq!(check(&job, |_| {}), Ok(job));
    }

    #[test]
    fn a_bad_field_is_corrupt_and_named() {
        let job = full_job();
        let cases: [(&str, Option<&str>, &str); 8] = [
            ("status", Some("Sleeping"), "Sleeping"),
            ("attempt", Some("-1"), "bad attempt"),
            ("created_at", None, "missing field created_at"),
            ("updated_at", Some("soon"), "bad updated_at"),
            ("env_vars", Some("not json"), "bad env_vars"),
            ("error", Some("{}"), "bad error"),
            ("started_at", Some("x"), "bad started_at"),
            (
                "id",
                Some("00000000-0000-4000-8000-000000000000"),
                "does not match",
            ),
        ];
        for (field, value, want) in cases {
            let got = check(&job, |h| match value {
                Some(v) => {
                    h.insert(field.to_owned(), v.to_owned());
                }
                None => {
                    h.remove(field);
                }
            });
            match got {
                Err(reason) => assert!(reason.contains(want), "{field}: {reason}"),
                Ok(_) => panic!("{field}: decoded"),
            }
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let job = full_job();
        let got = check(&job, |h| {
            h.insert("has_dependents".to_owned(), "1".to_owned());
        });
        assert_eq!(got, Ok(job));
    }
}
