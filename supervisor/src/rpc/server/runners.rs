//! `runner.create` / `runner.load` on [`RpcHandler`]; see
//! [`crate::coordination::runner`] for the record and its connection extensions, and
//! [`crate::coordination::registry`] for how registrations become pools.
//!
//! Decisions:
//! - Both are for the context's admins and server admins; outsiders get -32001 (as for
//!   an unknown runner), other members -32006.
//! - A runner with a `port` gets its context's jobs of its script types (its lanes, see
//!   [`crate::coordination::registry`]), never another context's. Registering one is
//!   still a server admin's: it makes the server open connections to an address of the
//!   registrant's choosing (any port of any host it can reach, loopback included), an
//!   operator's decision. A context admin doing it gets -32006; context admins
//!   register runners without a port (records).
//! - Replacing a registration is a compare-and-set on the record read; its `revision`
//!   goes up by one, `created_at` stays.

use jsonrpsee::Extensions;
use jsonrpsee::core::RpcResult;

use super::coordinator::{UPSERT_ATTEMPTS, kept_changing, store_error};
use super::{RpcHandler, now_secs};
use crate::access::{Caller, Role};
use crate::coordination::SpecRunner;
use crate::rpc::error::{context_not_found, coordinator_not_found, forbidden, invalid_params};
use crate::rpc::types::{RunnerCreateParams, RunnerLoadParams};

impl RpcHandler {
    pub(super) async fn coordinator_runner_create(
        &self,
        ext: &Extensions,
        params: RunnerCreateParams,
    ) -> RpcResult<SpecRunner> {
        let who = self.who(ext).await?;
        let context = params.context_id;
        self.in_context(&who.caller, context, Role::Admin, || {
            context_not_found(&context.to_string())
        })
        .await?;
        let mut record = params
            .runner
            .into_record(context, now_secs())
            .map_err(|e| invalid_params(e.0))?;
        if record.port.is_some() && who.caller != Caller::ServerAdmin {
            return Err(forbidden(
                "a runner with a port makes the server connect to the address given: \
                 registering one is a server admin's",
            ));
        }
        for _ in 0..UPSERT_ATTEMPTS {
            let previous = self
                .coordination
                .runner(context, record.id)
                .await
                .map_err(store_error)?;
            if let Some(prev) = &previous {
                record.created_at = prev.created_at;
                record.revision = prev.revision + 1;
            }
            if self
                .coordination
                .put_runner(&record, previous.as_ref())
                .await
                .map_err(store_error)?
            {
                if let Some(runners) = &self.runners
                    && let Err(e) = runners.register(&record).await
                {
                    // The record is stored: the next sync (2 s) opens its lanes.
                    tracing::warn!(error = %e, "runner registered; its lanes wait for the next sync");
                }
                return Ok(record.to_spec());
            }
        }
        Err(kept_changing("runner.create"))
    }

    pub(super) async fn coordinator_runner_load(
        &self,
        ext: &Extensions,
        params: RunnerLoadParams,
    ) -> RpcResult<SpecRunner> {
        let who = self.who(ext).await?;
        let (context, id) = (params.context_id, params.id);
        let missing = || coordinator_not_found("runner", context, id);
        self.in_context(&who.caller, context, Role::Admin, missing)
            .await?;
        let record = self
            .coordination
            .runner(context, id)
            .await
            .map_err(store_error)?
            .ok_or_else(missing)?;
        Ok(record.to_spec())
    }
}
