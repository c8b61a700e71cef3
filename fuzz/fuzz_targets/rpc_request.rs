//! Any text sent as a JSON-RPC request to the supervisor's API (every method, every
//! parameter decoder, validation, the store) yields a response, never a panic.
//!
//! The module is called in-process (`RpcModule::raw_json_request`), over a memory store
//! and no runners. A call that would wait for a job (run_job, play) is cut off after a
//! few milliseconds: waiting is not what this target is about.
#![no_main]

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hero_supervisor::clock::SystemClock;
use hero_supervisor::rpc::{RpcConfig, rpc_module};
use hero_supervisor::store::{MemoryStore, StoreConfig};
use hero_supervisor::{Supervisor, SupervisorConfig};
use libfuzzer_sys::fuzz_target;

struct Target {
    rt: tokio::runtime::Runtime,
    supervisor: Supervisor,
    module: jsonrpsee::RpcModule<()>,
}

static TARGET: LazyLock<Target> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (supervisor, module) = rt.block_on(async {
        let mut config = SupervisorConfig::with_runner_command("true", vec![]);
        config.pools.clear();
        let store = std::sync::Arc::new(MemoryStore::new(
            StoreConfig::default(),
            std::sync::Arc::new(SystemClock),
        ));
        let supervisor = Supervisor::start(config, store);
        // On the runtime: the signed calls' background tasks are spawned on it.
        let module = rpc_module(supervisor.clone(), &RpcConfig::default());
        (supervisor, module)
    });
    Target {
        rt,
        supervisor,
        module,
    }
});

static CALLS: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let t = &*TARGET;
    t.rt.block_on(async {
        let call = t.module.raw_json_request(text, 1);
        let _ = tokio::time::timeout(Duration::from_millis(5), call).await;
        // Keep the store small over a long run.
        if CALLS.fetch_add(1, Ordering::Relaxed) % 10_000 == 0 {
            let _ = t.supervisor.clear_all_jobs().await;
        }
    });
});
