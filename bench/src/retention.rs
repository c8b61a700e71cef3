//! Retention: the memory store's RSS while many jobs finish, with retention on and off.
//!
//! Each measurement runs in a fresh child process (this binary, `--retention-probe`), so
//! the allocator's state of other scenarios does not blur it. The child finishes jobs in
//! rounds straight through the store (create, start, claim, complete: no runner), runs
//! retention after each round as the upkeep task does (`trim_finished` in bounded calls
//! until it says there is no more), and prints its `VmRSS` after each round.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use hero_supervisor::clock::SystemClock;
use hero_supervisor::job::{Job, JobId, JobParams, ScriptType};
use hero_supervisor::store::{Completion, JobStore, MemoryStore, StoreConfig};

use crate::machine::own_rss_kb;

/// Jobs finished per round.
pub(crate) const ROUND: usize = 20_000;
/// Rounds per probe.
pub(crate) const ROUNDS: usize = 50;
/// `keep_finished_count` of the probe with retention on.
pub(crate) const KEEP: usize = 10_000;
/// Jobs per store call (claim, complete).
const BATCH: usize = 1_000;

/// One probe's figures: per round, `(jobs finished so far, jobs stored, VmRSS kB)`.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) rounds: Vec<(usize, usize, u64)>,
}

/// Parent side: run a child probe, retention on (`keep`) or off (`None`).
pub(crate) async fn measure(keep: Option<usize>) -> Result<Probe> {
    let exe = std::env::current_exe().context("locate the current executable")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--retention-probe");
    if let Some(keep) = keep {
        cmd.arg("--retention-keep").arg(keep.to_string());
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("run the retention probe")?;
    if !out.status.success() {
        bail!("the retention probe failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rounds = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("round ")) {
        let field = |name: &str| -> Result<u64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .with_context(|| format!("no {name} in the probe's line: {line}"))
        };
        rounds.push((
            field("finished")? as usize,
            field("stored")? as usize,
            field("rss_kb")?,
        ));
    }
    if rounds.len() != ROUNDS {
        bail!(
            "the retention probe printed {} rounds: {text}",
            rounds.len()
        );
    }
    Ok(Probe { rounds })
}

/// Child side: finish `ROUNDS * ROUND` jobs in a memory store with retention to `keep`
/// finished jobs (or none), printing one line per round.
pub(crate) async fn probe(keep: Option<usize>) -> Result<()> {
    let config = StoreConfig {
        keep_finished_count: keep.unwrap_or(usize::MAX),
        ..StoreConfig::default()
    };
    let store = MemoryStore::new(config, Arc::new(SystemClock));
    let mut finished = 0;
    for round in 1..=ROUNDS {
        for _ in 0..ROUND / BATCH {
            finish_batch(&store).await?;
            finished += BATCH;
        }
        if keep.is_some() {
            loop {
                let t = store.trim_finished(500).await?;
                if !t.more {
                    break;
                }
            }
        }
        let stored = store.list_ids().await?.len();
        let (_, rss_kb) = own_rss_kb();
        crate::output::probe_result(&format!(
            "round {round} finished={finished} stored={stored} rss_kb={rss_kb}"
        ));
    }
    Ok(())
}

/// `BATCH` jobs created, started, claimed and finished.
async fn finish_batch(store: &MemoryStore) -> Result<()> {
    for _ in 0..BATCH {
        let params = JobParams {
            script: "40 + 2".to_owned(),
            script_type: ScriptType::Sal,
            caller_id: "bench".to_owned(),
            context_id: "default".to_owned(),
            timeout: None,
            prerequisites: Vec::new(),
            retries: None,
            env_vars: Default::default(),
            traceparent: None,
        };
        let job = Job::new(JobId::new(), params, Utc::now());
        store.create(&job).await?;
        store.start(job.id).await?;
    }
    let claimed = store
        .claim(ScriptType::Sal, BATCH, "bench", Duration::from_secs(30))
        .await?;
    let items: Vec<Completion> = claimed
        .iter()
        .map(|c| Completion::finish(c.id(), 1, "42"))
        .collect();
    for r in store.complete(&items).await {
        r?;
    }
    Ok(())
}
