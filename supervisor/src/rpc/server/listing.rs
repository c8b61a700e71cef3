//! `list_jobs` on [`RpcHandler`]: every visible id without a filter, a page with one.
//!
//! A caller sees only the jobs of contexts it has a role in (server admins: all). The
//! store pages by `(created_at, id)` and knows nothing of access; for an actor the pages
//! are filtered here, each context's role looked up once per call. So that one call stays
//! bounded even when the actor sees few of many jobs, it looks at no more than
//! [`LIST_BUDGET`] index entries in all and then answers what it found with a cursor to
//! go on from.

use std::collections::HashMap;

use jsonrpsee::core::RpcResult;

use super::{RpcHandler, Who};
use crate::access::Caller;
use crate::rpc::error::to_rpc_error;
use crate::rpc::types::{JobList, JobSummaryInfo};
use crate::service::SupervisorError;
use crate::store::JobFilter;

/// Index entries one filtered `list_jobs` call looks at, at most.
pub(crate) const LIST_BUDGET: usize = 5000;

impl RpcHandler {
    /// Whether `actor` has a role in `context_id` (cached in `roles` for the call).
    async fn sees(
        &self,
        actor: u32,
        context_id: &str,
        roles: &mut HashMap<String, bool>,
    ) -> RpcResult<bool> {
        if let Some(seen) = roles.get(context_id) {
            return Ok(*seen);
        }
        let context = self.context_of(context_id).await?;
        let seen = context.is_some_and(|c| c.role_of(actor).is_some());
        roles.insert(context_id.to_owned(), seen);
        Ok(seen)
    }

    /// `list_jobs` without a filter: every visible id, oldest first.
    pub(super) async fn list_ids(&self, who: &Who) -> RpcResult<Vec<String>> {
        let ids = self.supervisor.list_jobs().await.map_err(to_rpc_error)?;
        let Caller::Actor { id: actor, .. } = who.caller else {
            return Ok(ids.iter().map(ToString::to_string).collect());
        };
        // Each job is read once and each context once per call.
        let mut roles = HashMap::new();
        let mut visible = Vec::new();
        for id in ids {
            let job = match self.supervisor.get_job(id).await {
                Ok(job) => job,
                Err(SupervisorError::NotFound(_)) => continue, // deleted meanwhile
                Err(e) => return Err(to_rpc_error(e)),
            };
            if self.sees(actor, &job.context_id, &mut roles).await? {
                visible.push(id.to_string());
            }
        }
        Ok(visible)
    }

    /// `list_jobs` with a filter: one page of the visible jobs matching it.
    pub(super) async fn list_page(&self, who: &Who, mut filter: JobFilter) -> RpcResult<JobList> {
        let Caller::Actor { id: actor, .. } = who.caller else {
            let page = self
                .supervisor
                .list_jobs_page(&filter, LIST_BUDGET)
                .await
                .map_err(to_rpc_error)?;
            return Ok(JobList {
                jobs: page.jobs.into_iter().map(JobSummaryInfo::from).collect(),
                next_cursor: page.next.map(|c| c.encode()),
            });
        };
        let mut roles = HashMap::new();
        if let Some(context_id) = &filter.context_id
            && !self.sees(actor, context_id, &mut roles).await?
        {
            // A context the caller may not see lists like one without jobs.
            return Ok(JobList {
                jobs: Vec::new(),
                next_cursor: None,
            });
        }
        let limit = filter.limit;
        let mut jobs = Vec::new();
        let mut budget = LIST_BUDGET;
        loop {
            filter.limit = limit - jobs.len();
            let page = self
                .supervisor
                .list_jobs_page(&filter, budget)
                .await
                .map_err(to_rpc_error)?;
            budget = budget.saturating_sub(page.looked_at.max(1));
            for job in page.jobs {
                if self.sees(actor, &job.context_id, &mut roles).await? {
                    jobs.push(JobSummaryInfo::from(job));
                }
            }
            filter.after = page.next;
            if page.next.is_none() || jobs.len() >= limit || budget == 0 {
                break;
            }
        }
        Ok(JobList {
            jobs,
            next_cursor: filter.after.map(|c| c.encode()),
        })
    }
}
