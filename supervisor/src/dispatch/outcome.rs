//! The outcome policy (DESIGN.md, "Outcome mapping"): what an attempt's [`Verdict`]
//! makes of its job, as the [`Completion`] the recorder writes.
//!
//! [`decide`] is a pure function of the job, the verdict, "now" (from the dispatcher's
//! [`crate::clock::Clock`]) and a jitter sample: no I/O, no clock of its own, so the
//! table test below pins every row.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hero_protocol::{ExecutionOutcome, OutcomeStatus, error_type};
use serde_json::Value;

use crate::job::{Job, JobError};
use crate::store::Completion;

/// The built-in runner's error type for a missing interpreter (`v`, `python3`): as
/// final as `handler_not_found`, retrying cannot install it.
const INTERPRETER_NOT_FOUND: &str = "interpreter_not_found";
/// How long a job answered `runner_busy` waits before it goes back to its queue.
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// How one attempt ended.
#[derive(Debug)]
pub(super) enum Verdict {
    /// The runner answered.
    Outcome(ExecutionOutcome),
    /// The connection to the runner was lost before it answered.
    Lost(String),
    /// No answer within the job's timeout (the request was cancelled).
    Timeout(Duration),
    /// `stop_job` (the request was cancelled).
    Stopped,
    /// Shutdown handed the job back (the request was cancelled).
    Release,
}

/// The retry settings the policy reads (from [`super::DispatchConfig`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    /// First retry delay; doubles per attempt.
    pub(super) backoff_base: Duration,
    /// Largest retry delay, also the cap on `retry_after_seconds`.
    pub(super) backoff_max: Duration,
}

/// A jitter sample in `[0, 1)` from `now`'s sub-second digits: no RNG for a spread this
/// coarse, and a [`crate::clock::ManualClock`] makes it fixed.
pub(super) fn jitter_of(now: DateTime<Utc>) -> f64 {
    f64::from(now.timestamp_subsec_nanos() % 1000) / 1000.0
}

/// Exponential backoff, capped, with ±25% jitter: `base * 2^(attempt-1)` times
/// `0.75 + jitter / 2` (`jitter` in `[0, 1)`), never above `backoff_max`.
pub(super) fn backoff(policy: RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let raw = policy.backoff_base.saturating_mul(1u32 << exp);
    let capped = raw.min(policy.backoff_max);
    let factor = 0.75 + jitter.clamp(0.0, 1.0) / 2.0;
    capped.mul_f64(factor).min(policy.backoff_max)
}

/// How long to wait before writing the verdict's completion: a runner that said it was
/// busy is not hammered with the job again at once.
pub(super) fn pause_before_writing(verdict: &Verdict) -> Option<Duration> {
    match verdict {
        Verdict::Outcome(o)
            if o.status == OutcomeStatus::Error
                && o.error_type() == Some(error_type::RUNNER_BUSY) =>
        {
            Some(BUSY_PAUSE)
        }
        _ => None,
    }
}

/// What an attempt's verdict makes of the job.
pub(super) fn decide(
    job: &Job,
    verdict: Verdict,
    now: DateTime<Utc>,
    jitter: f64,
    policy: RetryPolicy,
) -> Completion {
    let (id, attempt) = (job.id, job.attempt);
    let attempts_left = attempt < job.max_attempts();
    let retry_in = |delay: Duration, error: Option<JobError>| {
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
        Completion::retry_later(id, attempt, now + delay, error)
    };
    let retry_or_fail = |error: JobError| {
        if attempts_left {
            retry_in(backoff(policy, attempt, jitter), Some(error))
        } else {
            Completion::fail(id, attempt, error)
        }
    };
    let outcome = match verdict {
        Verdict::Release => return Completion::release(id, attempt),
        Verdict::Stopped => {
            return Completion::fail(id, attempt, JobError::cancelled("stopped by request"));
        }
        Verdict::Timeout(after) => {
            return retry_or_fail(JobError::timeout(format!(
                "no answer within {}s",
                after.as_secs()
            )));
        }
        Verdict::Lost(why) => return retry_or_fail(JobError::runner_lost(why)),
        Verdict::Outcome(outcome) => outcome,
    };
    let error = outcome.error.clone().map(|e| {
        JobError::new(
            e.error_type.unwrap_or_else(|| "error".to_owned()),
            e.message,
        )
    });
    match outcome.status {
        OutcomeStatus::Success => Completion::finish(
            id,
            attempt,
            match outcome.result {
                Some(Value::String(s)) => s,
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            },
        ),
        OutcomeStatus::Retry if !attempts_left => {
            let why = error.map(|e| e.message).unwrap_or_default();
            Completion::fail(
                id,
                attempt,
                JobError::retries_exhausted(format!(
                    "runner asked for a retry after the last attempt ({attempt}): {why}"
                )),
            )
        }
        OutcomeStatus::Retry => {
            let delay = outcome
                .retry_after_seconds
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(policy.backoff_max.as_secs_f64())))
                .unwrap_or_else(|| backoff(policy, attempt, jitter));
            retry_in(delay, error)
        }
        OutcomeStatus::Timeout => {
            let error = error.unwrap_or_else(|| JobError::timeout("runner reported a timeout"));
            retry_or_fail(JobError::new(JobError::TIMEOUT, error.message))
        }
        OutcomeStatus::Error if outcome.error_type() == Some(error_type::RUNNER_BUSY) => {
            // The runner had no room (it serves other clients too, or it lowered its
            // limit): the attempt does not count.
            Completion::release(id, attempt)
        }
        OutcomeStatus::Error => {
            let error = error.unwrap_or_else(|| JobError::new("error", "runner reported an error"));
            let fatal = matches!(
                error.error_type.as_str(),
                error_type::HANDLER_NOT_FOUND
                    | error_type::INVALID_REQUEST
                    | error_type::CANCELLED
                    | INTERPRETER_NOT_FOUND
            );
            if fatal {
                Completion::fail(id, attempt, error)
            } else {
                retry_or_fail(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hero_protocol::ExecutionError;

    use super::*;
    use crate::job::{JobId, JobParams, ScriptType};

    const POLICY: RetryPolicy = RetryPolicy {
        backoff_base: Duration::from_millis(250),
        backoff_max: Duration::from_secs(30),
    };
    /// A jitter sample of 0.5: a factor of exactly 1.
    const NO_SPREAD: f64 = 0.5;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_704_067_200_000).unwrap()
    }

    /// A job on `attempt` of 3 (two retries).
    fn job(attempt: u32) -> Job {
        let params = JobParams {
            script: "x".to_owned(),
            script_type: ScriptType::Sal,
            caller_id: "c".to_owned(),
            context_id: "ctx".to_owned(),
            timeout: None,
            prerequisites: Vec::new(),
            retries: Some(2),
            env_vars: Default::default(),
            traceparent: None,
        };
        Job {
            attempt,
            ..Job::new(JobId::new(), params, now())
        }
    }

    fn outcome(status: OutcomeStatus, error: Option<(&str, &str)>) -> Verdict {
        let mut o = ExecutionOutcome::success("j", "r", Value::Null);
        o.status = status;
        o.result = None;
        o.error = error.map(|(t, m)| ExecutionError::typed(t, m));
        Verdict::Outcome(o)
    }

    fn error(t: &str, m: &str) -> Option<(String, String)> {
        Some((t.to_owned(), m.to_owned()))
    }

    /// What the completion says, compactly: the kind, a delay from now for a retry, and
    /// the error's type and message.
    #[derive(Debug, PartialEq)]
    enum Want {
        Finish(String),
        Fail(String, String),
        Retry(Duration, Option<(String, String)>),
        Release,
    }

    fn finish(output: &str) -> Want {
        Want::Finish(output.to_owned())
    }

    fn fail(error_type: &str, message: &str) -> Want {
        Want::Fail(error_type.to_owned(), message.to_owned())
    }

    fn check(attempt: u32, verdict: Verdict, jitter: f64, want: Want) {
        let job = job(attempt);
        let got = decide(&job, verdict, now(), jitter, POLICY);
        assert_eq!((got.id, got.attempt), (job.id, attempt));
        let got = match got.outcome {
            crate::store::Outcome::Finish(out) => Want::Finish(out),
            crate::store::Outcome::Fail(e) => Want::Fail(e.error_type, e.message),
            crate::store::Outcome::RetryLater { not_before, error } => Want::Retry(
                (not_before - now()).to_std().unwrap(),
                error.map(|e| (e.error_type, e.message)),
            ),
            crate::store::Outcome::Release => Want::Release,
        };
        assert_eq!(got, want);
    }

    #[test]
    fn every_verdict_maps_to_its_completion() {
        let ms = Duration::from_millis;
        let success = |v: Value| Verdict::Outcome(ExecutionOutcome::success("j", "r", v));
        // Successes: a JSON string is stored as its text, anything else as JSON text.
        check(
            1,
            success(Value::String("hi".into())),
            NO_SPREAD,
            finish("hi"),
        );
        check(
            3,
            success(serde_json::json!({"a": 1})),
            NO_SPREAD,
            finish(r#"{"a":1}"#),
        );
        check(1, success(Value::Null), NO_SPREAD, finish(""));

        // error / timeout / lost runner: backoff while attempts remain, else final.
        let boom = || outcome(OutcomeStatus::Error, Some(("script_error", "boom")));
        check(
            1,
            boom(),
            NO_SPREAD,
            Want::Retry(ms(250), error("script_error", "boom")),
        );
        check(
            2,
            boom(),
            NO_SPREAD,
            Want::Retry(ms(500), error("script_error", "boom")),
        );
        check(3, boom(), NO_SPREAD, fail("script_error", "boom"));
        let untyped = outcome(OutcomeStatus::Error, None);
        check(
            3,
            untyped,
            NO_SPREAD,
            fail("error", "runner reported an error"),
        );
        let timed_out = || outcome(OutcomeStatus::Timeout, Some(("whatever", "slow")));
        check(
            1,
            timed_out(),
            NO_SPREAD,
            Want::Retry(ms(250), error("timeout", "slow")),
        );
        check(3, timed_out(), NO_SPREAD, fail("timeout", "slow"));
        let deadline = || Verdict::Timeout(Duration::from_secs(7));
        check(
            2,
            deadline(),
            NO_SPREAD,
            Want::Retry(ms(500), error("timeout", "no answer within 7s")),
        );
        check(
            3,
            deadline(),
            NO_SPREAD,
            fail("timeout", "no answer within 7s"),
        );
        let lost = || Verdict::Lost("eof".to_owned());
        check(
            1,
            lost(),
            NO_SPREAD,
            Want::Retry(ms(250), error("runner_lost", "eof")),
        );
        check(3, lost(), NO_SPREAD, fail("runner_lost", "eof"));

        // Fatal error types, even with attempts left.
        for fatal in [
            "handler_not_found",
            "invalid_request",
            "cancelled",
            "interpreter_not_found",
        ] {
            let v = outcome(OutcomeStatus::Error, Some((fatal, "no")));
            check(1, v, NO_SPREAD, fail(fatal, "no"));
        }

        // retry: the runner's delay, capped at backoff_max; the backoff without one;
        // retries_exhausted after the last attempt.
        let retry = |after: Option<f64>| {
            let mut o = ExecutionOutcome::retry("j", "r", "later", after);
            o.error = Some(ExecutionError::new("later"));
            Verdict::Outcome(o)
        };
        let later = || error("error", "later");
        check(
            1,
            retry(Some(2.0)),
            NO_SPREAD,
            Want::Retry(ms(2000), later()),
        );
        check(
            1,
            retry(Some(3600.0)),
            NO_SPREAD,
            Want::Retry(Duration::from_secs(30), later()),
        );
        check(2, retry(None), NO_SPREAD, Want::Retry(ms(500), later()));
        check(
            1,
            retry(Some(f64::NAN)),
            NO_SPREAD,
            Want::Retry(ms(250), later()),
        );
        check(
            3,
            retry(Some(1.0)),
            NO_SPREAD,
            fail(
                "retries_exhausted",
                "runner asked for a retry after the last attempt (3): later",
            ),
        );

        // Not the job's fault: runner_busy and shutdown hand it back; stop ends it.
        let busy = Verdict::Outcome(ExecutionOutcome::runner_busy("j", "r", 4));
        check(1, busy, NO_SPREAD, Want::Release);
        check(3, Verdict::Release, NO_SPREAD, Want::Release);
        check(
            1,
            Verdict::Stopped,
            NO_SPREAD,
            fail("cancelled", "stopped by request"),
        );
    }

    #[test]
    fn the_backoff_doubles_with_jitter_and_is_capped() {
        let ms = Duration::from_millis;
        let b = |attempt, jitter| backoff(POLICY, attempt, jitter);
        assert_eq!(b(0, NO_SPREAD), ms(250));
        assert_eq!(b(1, NO_SPREAD), ms(250));
        assert_eq!(b(2, NO_SPREAD), ms(500));
        assert_eq!(b(4, NO_SPREAD), ms(2000));
        assert_eq!(b(1, 0.0), ms(187) + Duration::from_micros(500), "-25%");
        assert_eq!(b(2, 0.999), ms(500).mul_f64(1.2495), "just under +25%");
        assert_eq!(b(8, NO_SPREAD), Duration::from_secs(30), "capped");
        assert_eq!(
            b(8, 0.999),
            Duration::from_secs(30),
            "jitter never passes the cap"
        );
        assert_eq!(
            b(8, 0.0),
            Duration::from_millis(22_500),
            "the cap, less 25%"
        );
        assert_eq!(
            b(u32::MAX, NO_SPREAD),
            Duration::from_secs(30),
            "no overflow"
        );
    }

    #[test]
    fn the_jitter_sample_comes_from_now() {
        let t = |nanos| DateTime::from_timestamp(1_704_067_200, nanos).unwrap();
        assert_eq!(jitter_of(t(0)), 0.0);
        assert_eq!(jitter_of(t(1_000_500)), 0.5);
        assert_eq!(jitter_of(t(999)), 0.999);
    }

    #[test]
    fn only_a_busy_runner_pauses_the_write() {
        let busy = Verdict::Outcome(ExecutionOutcome::runner_busy("j", "r", 1));
        assert_eq!(pause_before_writing(&busy), Some(BUSY_PAUSE));
        for other in [
            outcome(OutcomeStatus::Error, Some(("script_error", "x"))),
            Verdict::Release,
            Verdict::Stopped,
        ] {
            assert_eq!(pause_before_writing(&other), None);
        }
    }
}
