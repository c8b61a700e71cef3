//! `message.create` / `message.load` on [`RpcHandler`]; see
//! [`crate::coordination::message`] for the model.
//!
//! Decisions:
//! - `message.create` is for executors (it runs jobs), `message.load` for readers;
//!   outsiders get -32001.
//! - A message is dispatched when created, so it cannot be replaced: a second
//!   `message.create` of the same id is -32004 `conflict`.
//! - Its jobs must be new or still unstarted jobs of the context (as `job.create`
//!   allows), with distinct ids, whose `depends` stay inside the message (-32020,
//!   -32021 as for flows). Everything is checked before anything is created.

use std::collections::{BTreeMap, BTreeSet};

use jsonrpsee::Extensions;
use jsonrpsee::core::RpcResult;
use serde_json::json;

use super::RpcHandler;
use super::coordinator::store_error;
use crate::access::Role;
use crate::coordination::deadlines::{message_jobs, message_status};
use crate::coordination::message::{JobProgress, MessageFormatType, delivery};
use crate::coordination::{MAX_FLOW_JOBS, MessageRecord, SpecJob, SpecMessage, dag, job_result};
use crate::job::JobStatus;
use crate::rpc::error::{
    conflict, context_not_found, coordinator_not_found, dag_error, invalid_params,
    invalid_params_with, to_rpc_error,
};
use crate::rpc::types::{MessageCreateParams, MessageLoadParams, parse_script_type};
use crate::trace::TraceParent;

/// Longest message text, in bytes.
const MAX_MESSAGE_LEN: usize = 1024 * 1024;
/// Log lines given with a message, at most.
const MAX_MESSAGE_LOGS: usize = 1000;

fn format_type(text: &str) -> RpcResult<MessageFormatType> {
    match text.to_ascii_lowercase().as_str() {
        "html" => Ok(MessageFormatType::Html),
        "text" => Ok(MessageFormatType::Text),
        "md" => Ok(MessageFormatType::Md),
        _ => Err(invalid_params(format!(
            "message_format_type must be Html, Text or Md, not {text:?}"
        ))),
    }
}

impl RpcHandler {
    pub(super) async fn coordinator_message_create(
        &self,
        ext: &Extensions,
        params: MessageCreateParams,
    ) -> RpcResult<SpecMessage> {
        let who = self.who(ext).await?;
        let (context, input) = (params.context_id, params.message);
        self.in_context(&who.caller, context, Role::Executor, || {
            context_not_found(&context.to_string())
        })
        .await?;
        if input.context_id != context {
            return Err(invalid_params(format!(
                "message.context_id {} differs from context_id {context}",
                input.context_id
            )));
        }
        let message_type = parse_script_type(&input.message_type)?;
        let message_format_type = format_type(&input.message_format_type)?;
        if input.message.len() > MAX_MESSAGE_LEN || input.logs.len() > MAX_MESSAGE_LOGS {
            return Err(invalid_params(format!(
                "a message is at most {MAX_MESSAGE_LEN} bytes with {MAX_MESSAGE_LOGS} log lines"
            )));
        }
        if input.job.len() > MAX_FLOW_JOBS {
            return Err(invalid_params(format!(
                "a message carries at most {MAX_FLOW_JOBS} jobs"
            )));
        }
        let mut ids = BTreeSet::new();
        let repeated: Vec<u32> = input
            .job
            .iter()
            .filter(|j| !ids.insert(j.id))
            .map(|j| j.id)
            .collect();
        if !repeated.is_empty() {
            return Err(invalid_params_with(
                format!("job ids {repeated:?} appear twice in the message"),
                json!({ "repeated_jobs": repeated }),
            ));
        }
        for j in &input.job {
            if j.context_id != context {
                return Err(invalid_params(format!(
                    "job {}: context_id {} differs from context_id {context}",
                    j.id, j.context_id
                )));
            }
            parse_script_type(&j.script_type)?;
        }
        let graph: BTreeMap<u32, Vec<u32>> = input
            .job
            .iter()
            .map(|j| (j.id, j.depends.clone()))
            .collect();
        let layout = dag::layout(&graph).map_err(|e| dag_error(&e))?;
        let taken = self
            .coordination
            .message(context, input.id)
            .await
            .map_err(store_error)?;
        if taken.is_some() {
            return Err(conflict(format!(
                "message {} of context {context} was dispatched already",
                input.id
            )));
        }
        for j in &input.job {
            if let Some(prev) = self
                .coordination
                .job(context, j.id)
                .await
                .map_err(store_error)?
                && self.backing_job(&prev).await?.status != JobStatus::Created
            {
                return Err(conflict(format!(
                    "job {} of context {context} has started: a message cannot carry it",
                    j.id
                )));
            }
        }

        // Create the jobs, dependencies first (so each maps its depends at once).
        let trace = ext.get::<TraceParent>().map(TraceParent::to_string);
        let order: Vec<u32> = input.job.iter().map(|j| j.id).collect();
        let mut by_id: BTreeMap<u32, _> = input.job.into_iter().map(|j| (j.id, j)).collect();
        let mut records = Vec::with_capacity(by_id.len());
        for id in layout.levels.iter().flatten() {
            let Some(mut j) = by_id.remove(id) else {
                continue;
            };
            if j.timeout == 0 {
                j.timeout = input.timeout;
            }
            records.push(self.put_job(&who, context, j, trace.clone()).await?);
        }
        let now = chrono::Utc::now();
        let record = MessageRecord {
            id: input.id,
            caller_id: super::coordinator::creator(&who, input.caller_id),
            context_id: context,
            message: input.message,
            message_type,
            message_format_type,
            timeout: input.timeout,
            timeout_ack: input.timeout_ack,
            timeout_result: input.timeout_result,
            jobs: order,
            logs: input.logs,
            created_at: now.timestamp(),
            updated_at: now.timestamp(),
            created_ms: now.timestamp_millis(),
            failed: None,
        };
        if !self
            .coordination
            .put_message(&record, None)
            .await
            .map_err(store_error)?
        {
            for r in &records {
                self.discard(r.job_id).await;
            }
            return Err(conflict(format!(
                "message {} of context {context} was dispatched already",
                record.id
            )));
        }
        let label = format!("message {}", record.id);
        self.start_jobs(records, &layout.levels, &label).await?;
        let (message, jobs) = self.message_with_jobs(record).await?;
        let status = message_status(&message, &jobs);
        self.deadlines
            .schedule(&message, status)
            .await
            .map_err(to_rpc_error)?;
        self.spec_message(message, jobs).await
    }

    pub(super) async fn coordinator_message_load(
        &self,
        ext: &Extensions,
        params: MessageLoadParams,
    ) -> RpcResult<SpecMessage> {
        let who = self.who(ext).await?;
        let (context, id) = (params.context_id, params.id);
        let missing = || coordinator_not_found("message", context, id);
        self.in_context(&who.caller, context, Role::Reader, missing)
            .await?;
        let record = self
            .coordination
            .message(context, id)
            .await
            .map_err(store_error)?
            .ok_or_else(missing)?;
        let (message, jobs) = self.message_with_jobs(record).await?;
        self.spec_message(message, jobs).await
    }

    async fn message_with_jobs(
        &self,
        message: MessageRecord,
    ) -> RpcResult<(
        MessageRecord,
        Vec<(crate::coordination::JobRecord, crate::job::Job)>,
    )> {
        let jobs = message_jobs(&self.supervisor, self.coordination.as_ref(), &message)
            .await
            .map_err(to_rpc_error)?;
        Ok((message, jobs))
    }

    /// The wire message: its jobs as `job.load` shows them, the statuses derived from
    /// them, and the logs: its own lines, each job's lines, why the server ended it.
    async fn spec_message(
        &self,
        message: MessageRecord,
        jobs: Vec<(crate::coordination::JobRecord, crate::job::Job)>,
    ) -> RpcResult<SpecMessage> {
        let progress: Vec<JobProgress> = jobs.iter().map(|(_, j)| JobProgress::of(j)).collect();
        let (status, transport_status) = delivery(message.failed.is_some(), &progress);
        let mut logs = message.logs.clone();
        let mut wire_jobs = Vec::with_capacity(jobs.len());
        for (record, j) in jobs {
            match self.supervisor.job_log_lines(j.id).await {
                Ok(lines) => logs.extend(
                    lines
                        .into_iter()
                        .map(|l| format!("[job {}] {l}", record.id)),
                ),
                Err(crate::service::SupervisorError::NotFound(_)) => {}
                Err(e) => return Err(to_rpc_error(e)),
            }
            wire_jobs.push(SpecJob::new(record, j.status.into(), job_result(&j)));
        }
        if let Some(why) = &message.failed {
            logs.push(format!("[message] {why}"));
        }
        Ok(SpecMessage {
            id: message.id,
            caller_id: message.caller_id,
            context_id: message.context_id,
            message: message.message,
            message_type: message.message_type,
            message_format_type: message.message_format_type,
            timeout: message.timeout,
            timeout_ack: message.timeout_ack,
            timeout_result: message.timeout_result,
            job: wire_jobs,
            logs,
            created_at: message.created_at,
            updated_at: message.updated_at,
            status,
            transport_status,
        })
    }
}
