//! The supervisor with its built-in runner (`hero-supervisor runner --stdio`, spawned
//! from the real executable) running real scripts of every type.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hero_supervisor::clock::SystemClock;
use hero_supervisor::job::{JobParams, ScriptType};
use hero_supervisor::store::{MemoryStore, StoreConfig};
use hero_supervisor::{Supervisor, SupervisorConfig, SupervisorError};

async fn start() -> Supervisor {
    let mut config = SupervisorConfig::with_runner_command(
        env!("CARGO_BIN_EXE_hero-supervisor"),
        vec!["runner".to_owned(), "--stdio".to_owned()],
    );
    config.dispatch.backoff_base = Duration::from_millis(20);
    let store = Arc::new(MemoryStore::new(
        StoreConfig::default(),
        Arc::new(SystemClock),
    ));
    Supervisor::start(config, store)
}

fn params(script_type: ScriptType, script: &str) -> JobParams {
    JobParams {
        traceparent: None,
        script: script.to_owned(),
        script_type,
        caller_id: "tester".to_owned(),
        context_id: "ctx".to_owned(),
        timeout: Some(20),
        prerequisites: vec![],
        retries: Some(2),
        env_vars: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_type_runs_for_real() {
    let sup = start().await;
    let out = sup
        .submit_and_wait(params(ScriptType::Sal, r#"print("working"); 40 + 2"#))
        .await
        .unwrap();
    assert_eq!(out, "42");

    let out = sup
        .submit_and_wait(params(
            ScriptType::Osis,
            r#"osis_set("k", "v1"); osis_get("k")"#,
        ))
        .await
        .unwrap();
    assert_eq!(out, "v1");

    let py = "import os, sys\nprint('to the log', file=sys.stderr)\nprint(os.environ['GREETING'] + ' from python')";
    let id = sup
        .create_job(params(ScriptType::Python, py))
        .await
        .unwrap();
    sup.start_job(id).await.unwrap();
    let job = sup.wait_for_job(id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        job.output.as_deref(),
        Some("hello from python"),
        "{:?}",
        job.error
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sup.get_job_logs(id).await.unwrap().as_deref() != Some("to the log") {
        assert!(
            std::time::Instant::now() < deadline,
            "python's stderr never reached the logs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sup.shutdown().await;
}

/// A missing interpreter cannot be fixed by retrying: the job fails on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_interpreter_fails_at_once() {
    let sup = start().await;
    if which("v") {
        // V is installed here: the job must then simply run.
        let out = sup
            .submit_and_wait(params(ScriptType::V, "println('v ok')"))
            .await
            .unwrap();
        assert_eq!(out, "v ok");
        return;
    }
    let id = sup
        .create_job(params(ScriptType::V, "println('hi')"))
        .await
        .unwrap();
    sup.start_job(id).await.unwrap();
    let job = sup.wait_for_job(id, Duration::from_secs(20)).await.unwrap();
    let error = job.error.expect("typed error");
    assert_eq!(error.error_type, "interpreter_not_found");
    assert!(error.message.contains("v"), "{}", error.message);
    assert_eq!(job.attempt, 1, "not retried");
    let res = sup
        .submit_and_wait(params(ScriptType::V, "println('hi')"))
        .await;
    assert!(
        matches!(res, Err(SupervisorError::JobFailed { .. })),
        "{res:?}"
    );
    sup.shutdown().await;
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
