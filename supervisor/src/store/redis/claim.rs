//! The claim reply: what `claim.lua` sends back, and how it becomes [`ClaimedJob`]s.
//!
//! The script returns one flat array, per claimed job: its id, its new attempt, then the
//! fields named in [`CLAIM_FIELDS`], in that order (nil when absent). The names are
//! passed to the script as ARGV ([`CLAIM_FIELDS`] is the one definition of the order):
//! the script `HMGET`s and returns exactly the names it is given, so Rust and Lua cannot
//! disagree on positions. The fields the claim sets itself (status, times, lease,
//! runner) are known to the caller and not sent back.
//!
//! Decoding never fails the batch for one job: a job whose fields do not decode is
//! reported as [`ClaimedJob::Undecodable`], and the caller decides what becomes of it.

use chrono::{DateTime, Utc};

use super::codec::{decode_base, json, opt_time};
use crate::job::{Job, JobError, JobId, JobStatus};
use crate::store::{ClaimedJob, StoreError, truncate_line};

/// The job fields claim.lua returns after the id and the attempt, in this order. Every
/// field [`super::codec::encode_job`] writes is either here or set by the claim itself
/// (a unit test checks it).
pub(super) const CLAIM_FIELDS: [&str; 15] = [
    "caller_id",
    "context_id",
    "script",
    "script_type",
    "timeout_secs",
    "retries",
    "prerequisites",
    "env_vars",
    "created_at",
    "output",
    "error",
    "finished_at",
    "cancel_requested",
    "queued_at",
    "traceparent",
];

/// Entries per claimed job in claim.lua's reply: id, attempt, then [`CLAIM_FIELDS`].
const CLAIM_STRIDE: usize = 2 + CLAIM_FIELDS.len();

/// A bulk string of a script reply as an owned `String` (no copy); nil as `None`.
fn reply_string(v: redis::Value) -> Result<Option<String>, StoreError> {
    match v {
        redis::Value::Nil => Ok(None),
        redis::Value::BulkString(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| StoreError::Unavailable("redis claim: a field is not UTF-8".to_owned())),
        other => Err(StoreError::Unavailable(format!(
            "redis claim: unexpected value {}",
            truncate_line(&format!("{other:?}"), 100)
        ))),
    }
}

/// Decodes claim.lua's flat reply into the claimed jobs, completing the fields the
/// claim set (status, times, lease, runner) from what the caller passed it. A job that
/// does not decode is [`ClaimedJob::Undecodable`], so one bad job does not hold up the
/// others.
///
/// An entry that is not a job id, or whose attempt is unreadable (claim.lua writes the
/// attempt itself, so neither happens unless the queue or the script was tampered with),
/// is logged and left out: with no attempt to name, nobody could complete it; its lease
/// expires and reclaim handles it.
pub(super) fn decode_claimed(
    reply: Vec<redis::Value>,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Vec<ClaimedJob>, StoreError> {
    if !reply.len().is_multiple_of(CLAIM_STRIDE) {
        return Err(StoreError::Unavailable(format!(
            "redis claim: reply of {} entries is not a whole number of jobs",
            reply.len()
        )));
    }
    let mut claimed = Vec::with_capacity(reply.len() / CLAIM_STRIDE);
    let mut it = reply.into_iter();
    while let Some(raw_id) = it.next() {
        // This job's entries; whatever decoding leaves of them is skipped below, so the
        // next job starts at its own id.
        let mut values = it.by_ref().take(CLAIM_STRIDE - 1);
        let raw_id = reply_string(raw_id).ok().flatten().unwrap_or_default();
        let Ok(id) = JobId::parse(&raw_id) else {
            // Ids are checked before they are queued: this one was put there by hand.
            tracing::error!(id = %truncate_line(&raw_id, 64), "claimed a queue entry that is not a job id; dropped");
            values.for_each(drop);
            continue;
        };
        let attempt = values
            .next()
            .map(reply_string)
            .and_then(|v| v.ok().flatten())
            .and_then(|a| a.parse::<u32>().ok());
        let Some(attempt) = attempt else {
            tracing::error!(job = %id, "claimed a job without a readable attempt; its lease will expire");
            values.for_each(drop);
            continue;
        };
        let decoded = decode_fields(id, attempt, &mut values, owner, now, lease_until);
        values.for_each(drop);
        claimed.push(match decoded {
            Ok(job) => ClaimedJob::Job(job),
            Err(e) => ClaimedJob::Undecodable {
                id,
                attempt,
                why: e.to_string(),
            },
        });
    }
    Ok(claimed)
}

/// One claimed job from its [`CLAIM_FIELDS`] entries.
fn decode_fields(
    id: JobId,
    attempt: u32,
    values: &mut impl Iterator<Item = redis::Value>,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Job, StoreError> {
    let mut fields: [Option<String>; CLAIM_FIELDS.len()] = Default::default();
    for f in &mut fields {
        *f = values.next().map(reply_string).transpose()?.flatten();
    }
    let mut take = |name: &str| {
        let i = CLAIM_FIELDS.iter().position(|f| *f == name)?;
        fields[i].take()
    };
    let base = decode_base(id, JobStatus::Started, attempt, now, &mut take)?;
    let owner = Some(owner.to_owned());
    Ok(Job {
        started_at: Some(now),
        finished_at: opt_time(id, "finished_at", take("finished_at"))?,
        output: take("output"),
        error: take("error")
            .map(|e| json::<JobError>(id, "error", e))
            .transpose()?,
        runner: owner.clone(),
        lease_owner: owner,
        lease_until: Some(lease_until),
        cancel_requested: take("cancel_requested").is_some_and(|v| v == "1"),
        queued_at: opt_time(id, "queued_at", take("queued_at"))?,
        ..base
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use redis::Value;

    use super::*;
    use crate::job::{JobParams, ScriptType};
    use crate::store::from_ms;
    use crate::store::redis::codec::encode_job;

    /// The fields claim.lua sets itself (or the key names): not returned, not needed.
    const SET_BY_CLAIM: [&str; 9] = [
        "id",
        "status",
        "attempt",
        "started_at",
        "updated_at",
        "lease_owner",
        "lease_until",
        "runner",
        "not_before",
    ];

    fn at(ms: i64) -> DateTime<Utc> {
        from_ms(ms).unwrap()
    }

    fn queued_job() -> Job {
        let params = JobParams {
            script: "x".to_owned(),
            script_type: ScriptType::Sal,
            caller_id: "c".to_owned(),
            context_id: "ctx".to_owned(),
            timeout: Some(9),
            prerequisites: vec![JobId::new()],
            retries: Some(1),
            env_vars: BTreeMap::from([("K".to_owned(), "V".to_owned())]),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        };
        Job {
            status: JobStatus::Dispatched,
            attempt: 1,
            error: Some(JobError::timeout("first try")),
            queued_at: Some(at(2_000)),
            ..Job::new(JobId::new(), params, at(1_000))
        }
    }

    /// What claim.lua would reply for `job` (its hash as `encode_job` wrote it), with
    /// `edit` applied to the fields by name.
    fn reply_for(job: &Job, edit: impl Fn(&str, Option<String>) -> Option<String>) -> Vec<Value> {
        let hash: BTreeMap<&str, String> = encode_job(job).into_iter().collect();
        let mut out = vec![
            Value::BulkString(job.id.to_string().into_bytes()),
            Value::BulkString((job.attempt + 1).to_string().into_bytes()),
        ];
        for name in CLAIM_FIELDS {
            out.push(match edit(name, hash.get(name).cloned()) {
                Some(v) => Value::BulkString(v.into_bytes()),
                None => Value::Nil,
            });
        }
        out
    }

    #[test]
    fn claim_fields_cover_every_stored_field() {
        let mut job = queued_job();
        job.output = Some("o".to_owned());
        job.finished_at = Some(at(3_000));
        job.runner = Some("r".to_owned());
        job.lease_owner = Some("r".to_owned());
        job.lease_until = Some(at(4_000));
        job.started_at = Some(at(3_500));
        job.not_before = Some(at(3_600));
        job.cancel_requested = true;
        for (name, _) in encode_job(&job) {
            assert!(
                CLAIM_FIELDS.contains(&name) || SET_BY_CLAIM.contains(&name),
                "{name} is neither returned by claim.lua nor set by it"
            );
        }
    }

    #[test]
    fn a_claimed_job_is_started_under_the_callers_lease() {
        let job = queued_job();
        let (now, until) = (at(10_000), at(40_000));
        let got = decode_claimed(reply_for(&job, |_, v| v), "me", now, until).unwrap();
        let want = Job {
            status: JobStatus::Started,
            attempt: 2,
            started_at: Some(now),
            updated_at: now,
            runner: Some("me".to_owned()),
            lease_owner: Some("me".to_owned()),
            lease_until: Some(until),
            ..job
        };
        assert_eq!(got, vec![ClaimedJob::Job(want)]);
    }

    #[test]
    fn an_undecodable_job_is_reported_and_the_others_decode() {
        let (a, b, c) = (queued_job(), queued_job(), queued_job());
        let mut reply = reply_for(&a, |_, v| v);
        reply.extend(reply_for(&b, |name, v| {
            if name == "env_vars" {
                Some("not json".to_owned())
            } else {
                v
            }
        }));
        reply.extend(reply_for(&c, |_, v| v));
        let got = decode_claimed(reply, "me", at(10_000), at(40_000)).unwrap();
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[0], ClaimedJob::Job(j) if j.id == a.id));
        match &got[1] {
            ClaimedJob::Undecodable { id, attempt, why } => {
                assert_eq!((*id, *attempt), (b.id, 2));
                assert!(why.contains("env_vars"), "{why}");
            }
            other => panic!("expected Undecodable, got {other:?}"),
        }
        assert!(matches!(&got[2], ClaimedJob::Job(j) if j.id == c.id));
    }

    #[test]
    fn entries_without_an_id_or_attempt_are_dropped() {
        let (a, b) = (queued_job(), queued_job());
        let mut bad_id = reply_for(&a, |_, v| v);
        bad_id[0] = Value::BulkString(b"not-an-id".to_vec());
        let mut bad_attempt = reply_for(&b, |_, v| v);
        bad_attempt[1] = Value::BulkString(b"1e+20".to_vec());
        let c = queued_job();
        let mut reply = bad_id;
        reply.extend(bad_attempt);
        reply.extend(reply_for(&c, |_, v| v));
        let got = decode_claimed(reply, "me", at(1), at(2)).unwrap();
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0], ClaimedJob::Job(j) if j.id == c.id));
    }

    #[test]
    fn a_reply_of_partial_jobs_is_refused() {
        let mut reply = reply_for(&queued_job(), |_, v| v);
        reply.pop();
        assert!(matches!(
            decode_claimed(reply, "me", at(1), at(2)),
            Err(StoreError::Unavailable(_))
        ));
        assert_eq!(
            decode_claimed(Vec::new(), "me", at(1), at(2)),
            Ok(Vec::new())
        );
    }
}
