//! Child processes that die with their request: each runs in its own process group,
//! killed as a whole (SIGKILL) when its [`ProcessGroup`] guard is dropped: on hard kill,
//! deadline, or when the handler's future is dropped for any reason.

use std::collections::VecDeque;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use hero_protocol::LogStream;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::handler::HandlerContext;

/// Default [`ChildLimits::max_stdout`]: stdout kept as the result. 8 MiB: below the
/// default frame limit, so the response still fits one frame.
pub const DEFAULT_MAX_STDOUT: usize = 8 * 1024 * 1024;

/// Default [`ChildLimits::stderr_tail_lines`].
pub const DEFAULT_STDERR_TAIL_LINES: usize = 20;

/// Default [`ChildLimits::term_grace`].
pub const DEFAULT_TERM_GRACE: Duration = Duration::from_secs(2);

/// How long stdout/stderr may stay open after the child exits (held by a process it
/// started) before its group is killed.
const PIPE_LINGER: Duration = Duration::from_secs(1);

/// Longest stderr line forwarded as a log line; the rest of the line is cut.
const MAX_LOG_LINE: usize = 64 * 1024;

/// Kills a process group with SIGKILL when dropped, unless [`disarm`](Self::disarm)ed.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: Option<Pid>,
}

impl ProcessGroup {
    /// Guards the process group led by `child`, which must have been spawned with
    /// `process_group(0)`. `None` when the child has already been reaped.
    pub fn of(child: &Child) -> Option<Self> {
        let pid = i32::try_from(child.id()?).ok()?;
        Some(ProcessGroup {
            pgid: Some(Pid::from_raw(pid)),
        })
    }

    /// Guards process group `pgid` (e.g. the pid of a `std::process::Child` spawned with
    /// `process_group(0)`).
    pub fn from_pgid(pgid: i32) -> Self {
        ProcessGroup {
            pgid: Some(Pid::from_raw(pgid)),
        }
    }

    /// The group's id (the leader's pid).
    pub fn id(&self) -> Option<i32> {
        self.pgid.map(Pid::as_raw)
    }

    /// Sends `signal` to every process of the group.
    pub fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH: the group is already gone, which is what we wanted.
            let _ = killpg(pgid, signal);
        }
    }

    /// Stops guarding: the group will not be killed on drop.
    pub fn disarm(mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Bounds on what [`run_child`] keeps.
#[derive(Debug, Clone)]
pub struct ChildLimits {
    /// Bytes of stdout kept; more is an error. Default [`DEFAULT_MAX_STDOUT`].
    pub max_stdout: usize,
    /// Last stderr lines kept for an error message. Default [`DEFAULT_STDERR_TAIL_LINES`].
    pub stderr_tail_lines: usize,
    /// After a graceful cancel, how long the group has between SIGTERM and SIGKILL.
    /// Default [`DEFAULT_TERM_GRACE`].
    pub term_grace: Duration,
}

impl Default for ChildLimits {
    fn default() -> Self {
        ChildLimits {
            max_stdout: DEFAULT_MAX_STDOUT,
            stderr_tail_lines: DEFAULT_STDERR_TAIL_LINES,
            term_grace: DEFAULT_TERM_GRACE,
        }
    }
}

/// How a child run by [`run_child`] ended.
#[derive(Debug)]
pub struct ChildOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout, lossily decoded as UTF-8.
    pub stdout: String,
    /// Whether stdout went over [`ChildLimits::max_stdout`] (and was cut there).
    pub stdout_truncated: bool,
    /// The last lines of its stderr.
    pub stderr_tail: Vec<String>,
    /// Whether it was stopped because the request was cancelled.
    pub cancelled: bool,
}

/// Runs `command` in its own process group: stdin closed, stdout collected, stderr
/// streamed line by line to the request's log while it runs. On cancellation the group
/// gets SIGTERM, then SIGKILL after [`ChildLimits::term_grace`]; if this future is
/// dropped, the group gets SIGKILL at once.
pub async fn run_child(
    mut command: Command,
    ctx: &HandlerContext,
    limits: &ChildLimits,
) -> io::Result<ChildOutput> {
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let group = ProcessGroup::of(&child);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("child stdout missing"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("child stderr missing"))?;

    let ended = {
        let read_stdout = read_capped(stdout, limits.max_stdout);
        let stream_stderr = stream_lines(stderr, ctx, limits.stderr_tail_lines);
        let group_ref = &group;
        let wait = async move {
            let group = group_ref;
            tokio::select! {
                status = child.wait() => (status, false),
                _ = ctx.cancellation().cancelled() => {
                    if let Some(g) = group {
                        g.signal(Signal::SIGTERM);
                    }
                    match tokio::time::timeout(limits.term_grace, child.wait()).await {
                        Ok(status) => (status, true),
                        Err(_) => {
                            if let Some(g) = group {
                                g.signal(Signal::SIGKILL);
                            }
                            (child.wait().await, true)
                        }
                    }
                }
            }
        };
        // The pipes close when every process holding them exits. A leader that exits while
        // something it started keeps them open gets a moment, then its group is killed.
        let readers = async { tokio::join!(read_stdout, stream_stderr) };
        let mut readers = std::pin::pin!(readers);
        let mut wait = std::pin::pin!(wait);
        let mut outputs = None;
        let (status, cancelled) = tokio::select! {
            exited = &mut wait => exited,
            done = &mut readers => {
                outputs = Some(done);
                wait.as_mut().await
            }
        };
        if outputs.is_none() {
            outputs = tokio::time::timeout(PIPE_LINGER, &mut readers).await.ok();
        }
        let ((stdout, stdout_truncated), stderr_tail) = match outputs {
            Some(done) => done,
            None => {
                if let Some(g) = &group {
                    g.signal(Signal::SIGKILL);
                }
                readers.as_mut().await
            }
        };
        (status, cancelled, stdout, stdout_truncated, stderr_tail)
    };
    let (status, cancelled, stdout, stdout_truncated, stderr_tail) = ended;
    let status = status?;
    // The leader is gone; kill stragglers it left in the group.
    drop(group);
    Ok(ChildOutput {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stdout_truncated,
        stderr_tail,
        cancelled,
    })
}

/// Reads all of `reader`, keeping at most `max` bytes (and draining the rest, so the
/// child never blocks on a full pipe).
async fn read_capped(mut reader: impl AsyncRead + Unpin, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut truncated = false;
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

/// Forwards each line of `reader` as a stderr log line; returns the last `tail` lines.
/// A line longer than [`MAX_LOG_LINE`] is cut there (the rest is skipped).
async fn stream_lines(
    reader: impl AsyncRead + Unpin,
    ctx: &HandlerContext,
    tail: usize,
) -> Vec<String> {
    let mut reader = BufReader::new(reader);
    let mut last = VecDeque::with_capacity(tail.min(1024));
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let (chunk, end, used) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], true, i + 1),
            None => (buf, false, buf.len()),
        };
        let room = MAX_LOG_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if end {
            let text = String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned();
            push_line(ctx, &mut last, tail, text).await;
        }
    }
    if !line.is_empty() {
        let text = String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned();
        push_line(ctx, &mut last, tail, text).await;
    }
    last.into()
}

async fn push_line(ctx: &HandlerContext, last: &mut VecDeque<String>, tail: usize, line: String) {
    if tail > 0 {
        if last.len() == tail {
            last.pop_front();
        }
        last.push_back(line.clone());
    }
    ctx.log_async(LogStream::Stderr, line).await;
}
