//! The Lua script registry: every script of `lua/`, with `common.lua` prepended, loaded
//! once per process. [`redis::Script`] sends `EVALSHA` and falls back to `EVAL` (loading
//! the script) when Redis does not know it yet, so a restarted Redis needs nothing more.
//!
//! Three registries of the same sources: [`SCRIPTS`] for one Redis, [`CLUSTER_SCRIPTS`]
//! for a Redis Cluster with sharded pub/sub (Redis 7+), [`CLUSTER_PLAIN_SCRIPTS`] for
//! one without. They differ only in their first two lines, `local CLUSTER = false|true`
//! and `local SHARDED = false|true`, which `common.lua` reads: on a cluster, a script
//! leaves the server-wide keys (the ready sets, `spaces`) to the Rust side, since they
//! live in another hash slot; with `SHARDED` it SPUBLISHes its events on its
//! namespace's own channel instead of PUBLISHing them on the server-wide one.
//!
//! Each script heads its file with its KEYS, ARGV and Returns; the Rust side that calls
//! it lives next to the operation in `mod.rs` (or `claim.rs` for the claim reply).

use std::sync::LazyLock;

use redis::Script;

macro_rules! lua {
    ($head:literal, $file:literal) => {
        Script::new(concat!(
            $head,
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
    // With `lifecycle.lua` (create_job, start_job) between the two.
    ($head:literal, $file:literal, lifecycle) => {
        Script::new(concat!(
            $head,
            include_str!("lua/common.lua"),
            include_str!("lua/lifecycle.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

macro_rules! registry {
    ($head:literal) => {
        Scripts {
            create: lua!($head, "create.lua", lifecycle),
            start: lua!($head, "start.lua", lifecycle),
            create_start: lua!($head, "create_start.lua", lifecycle),
            create_batch: lua!($head, "create_batch.lua", lifecycle),
            claim: lua!($head, "claim.lua"),
            renew: lua!($head, "renew.lua"),
            complete_batch: lua!($head, "complete_batch.lua"),
            promote_due: lua!($head, "promote_due.lua"),
            reclaim_expired: lua!($head, "reclaim_expired.lua"),
            cancel: lua!($head, "cancel.lua"),
            delete: lua!($head, "delete.lua"),
            clear_batch: lua!($head, "clear_batch.lua"),
            append_logs: lua!($head, "append_logs.lua"),
            logs_from: lua!($head, "logs_from.lua"),
            trim_done: lua!($head, "trim_done.lua"),
            list_page: lua!($head, "list_page.lua"),
            backfill: lua!($head, "backfill.lua"),
            mark_indexed: lua!($head, "mark_indexed.lua"),
            route: lua!($head, "route.lua"),
            ready: lua!($head, "ready.lua"),
            enter_space: lua!($head, "enter_space.lua"),
        }
    };
}

/// One compiled script per store operation that needs one.
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) start: Script,
    pub(super) create_start: Script,
    pub(super) create_batch: Script,
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) complete_batch: Script,
    pub(super) promote_due: Script,
    pub(super) reclaim_expired: Script,
    pub(super) cancel: Script,
    pub(super) delete: Script,
    pub(super) clear_batch: Script,
    pub(super) append_logs: Script,
    pub(super) logs_from: Script,
    pub(super) trim_done: Script,
    pub(super) list_page: Script,
    pub(super) backfill: Script,
    pub(super) mark_indexed: Script,
    pub(super) route: Script,
    pub(super) ready: Script,
    pub(super) enter_space: Script,
}

/// The registry for one Redis, built on first use.
pub(super) static SCRIPTS: LazyLock<Scripts> =
    LazyLock::new(|| registry!("local CLUSTER = false\nlocal SHARDED = false\n"));

/// The registry for a Redis Cluster with sharded pub/sub, built on first use.
pub(super) static CLUSTER_SCRIPTS: LazyLock<Scripts> =
    LazyLock::new(|| registry!("local CLUSTER = true\nlocal SHARDED = true\n"));

/// The registry for a Redis Cluster without sharded pub/sub (before Redis 7): events on
/// the server-wide channel, as on one Redis. Built on first use.
pub(super) static CLUSTER_PLAIN_SCRIPTS: LazyLock<Scripts> =
    LazyLock::new(|| registry!("local CLUSTER = true\nlocal SHARDED = false\n"));
