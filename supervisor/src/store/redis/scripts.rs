//! The Lua script registry: every script of `lua/`, with `common.lua` prepended, loaded
//! once per process. [`redis::Script`] sends `EVALSHA` and falls back to `EVAL` (loading
//! the script) when Redis does not know it yet, so a restarted Redis needs nothing more.
//!
//! Each script heads its file with its KEYS, ARGV and Returns; the Rust side that calls
//! it lives next to the operation in `mod.rs` (or `claim.rs` for the claim reply).

use std::sync::LazyLock;

use redis::Script;

macro_rules! lua {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
    // With `lifecycle.lua` (create_job, start_job) between the two.
    ($file:literal, lifecycle) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!("lua/lifecycle.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// One compiled script per store operation that needs one.
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
}

/// The registry, built on first use.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    create: lua!("create.lua", lifecycle),
    start: lua!("start.lua", lifecycle),
    create_start: lua!("create_start.lua", lifecycle),
    create_batch: lua!("create_batch.lua", lifecycle),
    claim: lua!("claim.lua"),
    renew: lua!("renew.lua"),
    complete_batch: lua!("complete_batch.lua"),
    promote_due: lua!("promote_due.lua"),
    reclaim_expired: lua!("reclaim_expired.lua"),
    cancel: lua!("cancel.lua"),
    delete: lua!("delete.lua"),
    clear_batch: lua!("clear_batch.lua"),
    append_logs: lua!("append_logs.lua"),
    logs_from: lua!("logs_from.lua"),
    trim_done: lua!("trim_done.lua"),
    list_page: lua!("list_page.lua"),
    backfill: lua!("backfill.lua"),
    mark_indexed: lua!("mark_indexed.lua"),
    route: lua!("route.lua"),
    ready: lua!("ready.lua"),
});
