//! Peer measurements: another job queue's burn-down, measured in the same run on the
//! same kind of private Redis, so the table can say how hero compares.
//!
//! Now one peer: BullMQ (npm), driven by `bench/peers/bullmq/burn_down.mjs` under
//! Node.js. Its dependencies are pinned by the committed `package-lock.json` and
//! installed with `npm ci` on first use. Every failure is a `String` reason: the table
//! then says "not measured: <reason>" and the rest of the benchmark goes on.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hero_testkit::RedisServer;

use crate::output::{progress, thousands};

/// The BullMQ worker's `concurrency` (the configuration the target names).
pub(crate) const BULLMQ_CONCURRENCY: usize = 64;

/// How long one `npm ci` may take (npm retries an unreachable
/// registry for minutes).
const NPM_LIMIT: Duration = Duration::from_secs(300);

/// What to install when Node.js or npm is missing.
const INSTALL_NODE: &str = "install Node.js 20 or later with npm (apt-get install nodejs npm)";

/// The BullMQ burn-down's figures over `--repeat` runs.
#[derive(Debug, Clone)]
pub(crate) struct Bullmq {
    /// The BullMQ version that ran (from its `package.json`).
    pub(crate) version: String,
    /// Jobs per second of each run, in order.
    pub(crate) rates: Vec<f64>,
}

impl Bullmq {
    /// The median of the runs' rates.
    pub(crate) fn median(&self) -> f64 {
        crate::median(self.rates.clone())
    }
}

/// One run's line from `burn_down.mjs`.
#[derive(Debug, Clone)]
struct Run {
    jobs: u64,
    queue_secs: f64,
    drain_secs: f64,
    jobs_per_sec: f64,
    version: String,
}

/// `bench/peers/bullmq`, next to this crate's sources.
pub(crate) fn bullmq_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join("bullmq")
}

/// Ok when `node` and `npm` run and the BullMQ script is where it should be.
pub(crate) fn bullmq_available() -> Result<(), String> {
    for tool in ["node", "npm"] {
        let out = Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("`{tool}` not found on PATH: {INSTALL_NODE}")
                }
                _ => format!("`{tool} --version` failed ({e}): {INSTALL_NODE}"),
            })?;
        if !out.status.success() {
            return Err(format!(
                "`{tool} --version` exited with {}: {INSTALL_NODE}",
                out.status
            ));
        }
    }
    let script = bullmq_dir().join("burn_down.mjs");
    if !script.is_file() {
        return Err(format!(
            "{} is missing (hero-bench must run from its source tree)",
            script.display()
        ));
    }
    Ok(())
}

/// Installs the pinned dependencies when `node_modules` lacks BullMQ: `npm ci`, which
/// installs exactly what `package-lock.json` says or fails. There is no fallback to an
/// unpinned `npm install`: a lock that `npm ci` rejects is a bug of this repository, and
/// the row says so instead of measuring whatever the registry serves that day.
fn ensure_installed(dir: &Path) -> Result<(), String> {
    let installed = || {
        dir.join("node_modules/bullmq/package.json").is_file()
            && dir.join("node_modules/ioredis/package.json").is_file()
    };
    if installed() {
        return Ok(());
    }
    npm(dir, &["ci", "--no-audit", "--no-fund"]).map_err(|why| {
        format!(
            "{why} (the BullMQ peer installs only from its lock file; if npm calls the lock \
             out of sync with package.json, regenerate it with `npm install --package-lock-only` \
             in {} and commit it)",
            dir.display()
        )
    })?;
    if !installed() {
        return Err(format!(
            "npm ci reported success but {} has no bullmq or ioredis",
            dir.join("node_modules").display()
        ));
    }
    Ok(())
}

/// Runs `npm <args>` in `dir`; the error names the command and npm's first error lines.
fn npm(dir: &Path, args: &[&str]) -> Result<(), String> {
    let command = format!("npm {}", args.join(" "));
    progress(&format!(
        "installing BullMQ: {command} in {}",
        dir.display()
    ));
    let mut cmd = Command::new("npm");
    cmd.args(args).current_dir(dir);
    let out = run_bounded(cmd, NPM_LIMIT, &command)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = out.stderr;
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("npm error"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect();
    let why = if errors.is_empty() {
        tail(&stderr)
    } else {
        errors.join(" / ").replace('|', "\\|")
    };
    Err(format!(
        "`{command}` in {} exited with {} (it needs the npm registry): {why}",
        dir.display(),
        out.status
    ))
}

/// Runs the BullMQ burn-down `repeat` times, each on a fresh private redis-server, with
/// `jobs` no-op jobs. Blocking (child processes): call it from `spawn_blocking`.
pub(crate) fn bullmq(jobs: usize, repeat: usize) -> Result<Bullmq, String> {
    bullmq_available()?;
    let dir = bullmq_dir();
    ensure_installed(&dir)?;
    let mut version = String::new();
    let mut rates = Vec::with_capacity(repeat);
    for r in 1..=repeat {
        let run = run_once(&dir, jobs)?;
        progress(&format!(
            "peer BullMQ {}, 1 worker x concurrency {BULLMQ_CONCURRENCY}, run {r}/{repeat}: \
             {} jobs in {:.3} s = {} jobs/s (queued in {:.1} s)",
            run.version,
            run.jobs,
            run.drain_secs,
            thousands(run.jobs_per_sec),
            run.queue_secs
        ));
        version = run.version;
        rates.push(run.jobs_per_sec);
    }
    Ok(Bullmq { version, rates })
}

/// One `node burn_down.mjs <socket> <jobs> 64` on its own private redis-server.
fn run_once(dir: &Path, jobs: usize) -> Result<Run, String> {
    let redis = RedisServer::start();
    let mut cmd = Command::new("node");
    cmd.arg("burn_down.mjs")
        .arg(redis.socket_path())
        .arg(jobs.to_string())
        .arg(BULLMQ_CONCURRENCY.to_string())
        .current_dir(dir);
    // The script gives up by itself after 120 s + 2 ms per job; this is the backstop.
    let limit = Duration::from_secs(150) + Duration::from_millis(2 * jobs as u64);
    let Finished {
        status,
        stdout,
        stderr,
    } = run_bounded(cmd, limit, "node burn_down.mjs")?;
    drop(redis);
    if !status.success() {
        // The script's own last word, else whatever node printed last.
        let why = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("burn_down.mjs: "))
            .map_or_else(|| tail(&stderr), |l| l.replace('|', "\\|"));
        return Err(format!("burn_down.mjs exited with {status}: {why}"));
    }
    let run = parse(&stdout)?;
    if run.jobs != jobs as u64 {
        return Err(format!(
            "burn_down.mjs reported {} jobs, {jobs} were asked",
            run.jobs
        ));
    }
    Ok(run)
}

/// BullMQ's `addBulk` enqueue figures over `--repeat` runs.
#[derive(Debug, Clone)]
pub(crate) struct BullmqEnqueue {
    /// The BullMQ version that ran.
    pub(crate) version: String,
    /// Jobs per second of each run, in order.
    pub(crate) rates: Vec<f64>,
}

/// Runs `enqueue.mjs` `repeat` times, each on a fresh private redis-server: `jobs` no-op
/// jobs added with `addBulk` calls of `chunk` jobs, `in_flight` calls at a time.
/// Blocking (child processes): call it from `spawn_blocking`.
pub(crate) fn bullmq_enqueue(
    jobs: usize,
    in_flight: usize,
    chunk: usize,
    repeat: usize,
) -> Result<BullmqEnqueue, String> {
    bullmq_available()?;
    let dir = bullmq_dir();
    ensure_installed(&dir)?;
    let mut version = String::new();
    let mut rates = Vec::with_capacity(repeat);
    for r in 1..=repeat {
        let redis = RedisServer::start();
        let mut cmd = Command::new("node");
        cmd.arg("enqueue.mjs")
            .arg(redis.socket_path())
            .arg(jobs.to_string())
            .arg(in_flight.to_string())
            .arg(chunk.to_string())
            .current_dir(&dir);
        let limit = Duration::from_secs(90) + Duration::from_millis(jobs as u64);
        let out = run_bounded(cmd, limit, "node enqueue.mjs")?;
        drop(redis);
        let v = result_line(&out, "enqueue.mjs")?;
        let rate = v
            .get("jobs_per_sec")
            .and_then(serde_json::Value::as_f64)
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| format!("no \"jobs_per_sec\" in enqueue.mjs's result {v}"))?;
        if v.get("jobs").and_then(serde_json::Value::as_u64) != Some(jobs as u64) {
            return Err(format!("enqueue.mjs reported {v}, {jobs} jobs were asked"));
        }
        v.get("bullmq")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .clone_into(&mut version);
        progress(&format!(
            "peer BullMQ {version} addBulk, {in_flight} x {chunk} jobs in flight, run {r}/{repeat}: \
             {} jobs/s",
            thousands(rate)
        ));
        rates.push(rate);
    }
    Ok(BullmqEnqueue { version, rates })
}

/// The JSON result line of a peer script that exited 0, else why not.
fn result_line(out: &Finished, script: &str) -> Result<serde_json::Value, String> {
    if !out.status.success() {
        let why = out
            .stderr
            .lines()
            .rev()
            .find(|l| l.starts_with(&format!("{script}: ")))
            .map_or_else(|| tail(&out.stderr), |l| l.replace('|', "\\|"));
        return Err(format!("{script} exited with {}: {why}", out.status));
    }
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| format!("{script} printed no result"))?;
    serde_json::from_str(line).map_err(|e| format!("{script} printed {line:?}, not JSON: {e}"))
}

/// What a child run by [`run_bounded`] left behind.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) for at most `limit`; past it
/// the child is killed and the error says so. `what` names the command in errors.
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Result<Finished, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{what}` ({e}): {INSTALL_NODE}"))?;
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                // The readers are left behind: a grandchild may still hold the pipes.
                return Err(format!(
                    "`{what}` did not finish within {} s (killed)",
                    limit.as_secs()
                ));
            }
            Err(e) => return Err(format!("wait for `{what}`: {e}")),
        }
    };
    Ok(Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Reads a child's pipe to the end on a thread, so neither pipe fills while it runs.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The script's result: the last non-empty stdout line, one JSON object.
fn parse(stdout: &str) -> Result<Run, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| "burn_down.mjs printed no result".to_owned())?;
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("burn_down.mjs printed {line:?}, not JSON: {e}"))?;
    let number = |key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_f64)
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("no number {key:?} in burn_down.mjs's result {line}"))
    };
    Ok(Run {
        jobs: v
            .get("jobs")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("no \"jobs\" in burn_down.mjs's result {line}"))?,
        queue_secs: number("queue_secs")?,
        drain_secs: number("drain_secs")?,
        jobs_per_sec: number("jobs_per_sec")?,
        version: v
            .get("bullmq")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("no \"bullmq\" version in burn_down.mjs's result {line}"))?
            .to_owned(),
    })
}

/// The last few lines of a child's stderr, on one line, for a table cell.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("npm warn"))
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() {
        "no output on stderr".to_owned()
    } else {
        tail.replace('|', "\\|")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::{Finished, parse, result_line, tail};

    #[test]
    fn a_peer_script_result_is_its_last_json_line_or_its_last_word() {
        let ok = Finished {
            status: ExitStatus::from_raw(0),
            stdout: "noise\n{\"jobs\":10,\"jobs_per_sec\":5000}\n\n".to_owned(),
            stderr: String::new(),
        };
        let v = result_line(&ok, "enqueue.mjs").expect("result");
        assert_eq!(v["jobs"], 10);
        // Exit status 1 (wait status 256): the script's own last line, `|` escaped.
        let failed = Finished {
            status: ExitStatus::from_raw(256),
            stdout: String::new(),
            stderr: "stack\nenqueue.mjs: added 10 jobs | 9 waiting\nmore\n".to_owned(),
        };
        let why = result_line(&failed, "enqueue.mjs").expect_err("failed");
        assert!(
            why.contains("enqueue.mjs: added 10 jobs \\| 9 waiting"),
            "{why}"
        );
        let silent = Finished {
            status: ExitStatus::from_raw(0),
            stdout: "not json\n".to_owned(),
            stderr: String::new(),
        };
        assert!(result_line(&silent, "enqueue.mjs").is_err());
    }

    #[test]
    fn parses_the_result_line() {
        let out = "{\"jobs\":20000,\"concurrency\":64,\"queue_secs\":1.2,\"drain_secs\":1.91,\
                   \"jobs_per_sec\":10471,\"bullmq\":\"6.7.0\",\"ioredis\":\"6.0.0\"}\n";
        let run = parse(out).expect("parse");
        assert_eq!(run.jobs, 20_000);
        assert_eq!(run.version, "6.7.0");
        assert!((run.jobs_per_sec - 10_471.0).abs() < 1e-9);
        assert!(parse("").is_err());
        assert!(parse("not json\n").is_err());
        assert!(parse("{\"jobs\":1}\n").is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines_for_a_cell() {
        assert_eq!(tail(""), "no output on stderr");
        assert_eq!(tail("npm warn x\na\nb|c\n"), "a / b\\|c");
    }
}
