//! `SAL` and `OSIS` scripts in an embedded, sandboxed [Rhai](https://rhai.rs) engine.
//!
//! ## Sandbox
//! Every script runs in a fresh engine on a blocking thread, with the limits of
//! [`RhaiLimits`] (operations, string/array/map sizes, call depth, expression depth). No
//! `import` (modules resolve to nothing), no `eval`. Cancellation and deadlines abort a
//! running script between two operations. `print` becomes a stdout log line, `debug` a
//! stderr log line; nothing reaches the runner's own stdout (the wire).
//!
//! ## Result
//! The script's value as a string; when the script returns `()`, its printed lines joined
//! with newlines.
//!
//! ## SAL: system functions
//! | function | does |
//! |---|---|
//! | `run(cmd)` | runs `sh -c cmd` with the request's env; returns its stdout (trailing newline trimmed); a non-zero exit is an error carrying the stderr tail |
//! | `exec(cmd)` | the same, never an error for the exit: returns `#{code, stdout, stderr}` (`code` is -1 when killed by a signal) |
//! | `env(name)` | the request's `kwargs.env[name]`, else the runner's environment, else `""` |
//! | `read_file(path)` | the file's text (at most `max_string_size` bytes) |
//! | `write_file(path, text)` | writes (creates or truncates) the file |
//!
//! Commands run in their own process group, killed when the request is cancelled.
//!
//! ## OSIS: an object store per `context_id`
//! Kept in the runner process's memory, shared by every request with the same
//! `kwargs.context_id` (missing: `"default"`), lost when the runner exits.
//! | function | does |
//! |---|---|
//! | `osis_set(key, value)` | stores any value under `key` |
//! | `osis_get(key)` | the value, or `()` when absent |
//! | `osis_delete(key)` | removes it; `true` when it was there |
//! | `osis_keys()` | the keys of this context, sorted |

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use hero_protocol::{ExecutionRequest, LogStream};
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};

use super::{SCRIPT_ERROR, ScriptArgs};
use hero_runner::process::ProcessGroup;
use hero_runner::{Handler, HandlerContext, HandlerError, HandlerResult};

/// Limits of the Rhai sandbox. Every field has a default.
#[derive(Debug, Clone)]
pub struct RhaiLimits {
    /// Operations per script. Default 100 million (a few seconds of work).
    pub max_operations: u64,
    /// Bytes in one string. Default 4 MiB.
    pub max_string_size: usize,
    /// Items in one array. Default 100,000.
    pub max_array_size: usize,
    /// Entries in one object map. Default 100,000.
    pub max_map_size: usize,
    /// Nested function calls. Default 64.
    pub max_call_levels: usize,
    /// Expression nesting, at global level and in functions. Default (64, 32).
    pub max_expr_depths: (usize, usize),
    /// Keys per OSIS context. Default 100,000.
    pub max_osis_keys: usize,
}

impl Default for RhaiLimits {
    fn default() -> Self {
        RhaiLimits {
            max_operations: 100_000_000,
            max_string_size: 4 * 1024 * 1024,
            max_array_size: 100_000,
            max_map_size: 100_000,
            max_call_levels: 64,
            max_expr_depths: (64, 32),
            max_osis_keys: 100_000,
        }
    }
}

/// Which functions a Rhai script gets besides the standard library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RhaiFlavor {
    /// System functions: `run`, `exec`, `env`, `read_file`, `write_file`.
    Sal,
    /// The object store: `osis_set`, `osis_get`, `osis_delete`, `osis_keys`.
    Osis,
}

/// OSIS objects: context id -> key -> value. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct OsisStore {
    /// A std mutex: held only for a map operation, never across an await.
    contexts: Arc<Mutex<HashMap<String, BTreeMap<String, Dynamic>>>>,
}

impl OsisStore {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, BTreeMap<String, Dynamic>>) -> T) -> T {
        f(&mut self.contexts.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Runs SAL or OSIS scripts.
#[derive(Debug, Clone)]
pub struct RhaiHandler {
    flavor: RhaiFlavor,
    limits: RhaiLimits,
    store: OsisStore,
}

impl RhaiHandler {
    /// A handler of `flavor`; OSIS scripts keep their objects in `store`.
    pub fn new(flavor: RhaiFlavor, limits: RhaiLimits, store: OsisStore) -> Self {
        RhaiHandler {
            flavor,
            limits,
            store,
        }
    }
}

impl Handler for RhaiHandler {
    fn call(
        &self,
        request: ExecutionRequest,
        ctx: HandlerContext,
    ) -> BoxFuture<'static, HandlerResult> {
        let this = self.clone();
        Box::pin(async move {
            let args = ScriptArgs::parse(&request)?;
            let script = tokio::task::spawn_blocking(move || this.run(&args, &ctx));
            match script.await {
                Ok(result) => result,
                Err(join) if join.is_panic() => Err(HandlerError::typed(
                    hero_protocol::error_type::PANIC,
                    "the script engine panicked",
                )),
                Err(join) => Err(HandlerError::new(format!("script task failed: {join}"))),
            }
        })
    }
}

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

impl RhaiHandler {
    /// Runs one script to its end on the current (blocking) thread.
    fn run(&self, args: &ScriptArgs, ctx: &HandlerContext) -> HandlerResult {
        let mut engine = sandboxed_engine(&self.limits);
        let printed = Arc::new(Mutex::new(Printed::new(self.limits.max_string_size)));
        {
            let (printed, ctx) = (printed.clone(), ctx.clone());
            engine.on_print(move |line| {
                printed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
                ctx.log_blocking(LogStream::Stdout, line);
            });
        }
        {
            let ctx = ctx.clone();
            engine.on_debug(move |line, _source, _pos| ctx.log_blocking(LogStream::Stderr, line));
        }
        {
            let cancel = ctx.cancellation().clone();
            engine.on_progress(move |_| cancel.is_cancelled().then(|| Dynamic::from("cancelled")));
        }
        match self.flavor {
            RhaiFlavor::Sal => register_sal(&mut engine, args, ctx, &self.limits),
            RhaiFlavor::Osis => register_osis(&mut engine, args, &self.store, &self.limits),
        }
        match engine.eval::<Dynamic>(&args.script) {
            Ok(value) if value.is_unit() => {
                let printed = printed.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(serde_json::Value::String(printed.lines.join("\n")))
            }
            Ok(value) => Ok(serde_json::Value::String(value.to_string())),
            Err(err) if matches!(*err, EvalAltResult::ErrorTerminated(..)) => Err(
                HandlerError::typed(hero_protocol::error_type::CANCELLED, "script aborted"),
            ),
            Err(err) => Err(HandlerError::typed(SCRIPT_ERROR, err.to_string())),
        }
    }
}

/// Printed lines kept for the result, up to a byte budget.
struct Printed {
    lines: Vec<String>,
    budget: usize,
}

impl Printed {
    fn new(budget: usize) -> Self {
        Printed {
            lines: Vec::new(),
            budget,
        }
    }

    fn push(&mut self, line: &str) {
        if let Some(left) = self.budget.checked_sub(line.len() + 1) {
            self.budget = left;
            self.lines.push(line.to_owned());
        }
    }
}

fn sandboxed_engine(limits: &RhaiLimits) -> Engine {
    let mut engine = Engine::new();
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.set_max_operations(limits.max_operations);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(limits.max_expr_depths.0, limits.max_expr_depths.1);
    engine
}

fn register_sal(engine: &mut Engine, args: &ScriptArgs, ctx: &HandlerContext, limits: &RhaiLimits) {
    let env = Arc::new(args.env.clone());
    {
        let (env, ctx) = (env.clone(), ctx.clone());
        engine.register_fn("run", move |cmd: &str| -> RhaiResult<String> {
            let out = run_command(cmd, &env, &ctx)?;
            if out.code != Some(0) {
                let tail: Vec<&str> = out.stderr.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "command `{cmd}` failed ({}): {}",
                    out.code
                        .map_or("killed by a signal".to_owned(), |c| format!(
                            "exit status {c}"
                        )),
                    tail.join("\n")
                )
                .into());
            }
            let mut stdout = out.stdout;
            if stdout.ends_with('\n') {
                stdout.pop();
            }
            Ok(stdout)
        });
    }
    {
        let (env, ctx) = (env.clone(), ctx.clone());
        engine.register_fn("exec", move |cmd: &str| -> RhaiResult<Map> {
            let out = run_command(cmd, &env, &ctx)?;
            let mut map = Map::new();
            map.insert(
                "code".into(),
                Dynamic::from_int(out.code.map_or(-1, i64::from)),
            );
            map.insert("stdout".into(), out.stdout.into());
            map.insert("stderr".into(), out.stderr.into());
            Ok(map)
        });
    }
    engine.register_fn("env", move |name: &str| -> String {
        env.get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .unwrap_or_default()
    });
    let max = limits.max_string_size;
    engine.register_fn("read_file", move |path: &str| -> RhaiResult<String> {
        let file = std::fs::File::open(path).map_err(|e| format!("read_file {path}: {e}"))?;
        let mut text = String::new();
        let read = file
            .take(max as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("read_file {path}: {e}"))?;
        if read > max {
            return Err(
                format!("read_file {path}: larger than the string limit of {max} bytes").into(),
            );
        }
        Ok(text)
    });
    engine.register_fn("write_file", |path: &str, text: &str| -> RhaiResult<()> {
        std::fs::write(path, text).map_err(|e| format!("write_file {path}: {e}").into())
    });
}

struct CommandOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// How often a SAL command is checked for exit or cancellation.
const COMMAND_POLL: Duration = Duration::from_millis(10);

/// Runs `sh -c cmd` in its own process group, killed when the request is cancelled.
fn run_command(
    cmd: &str,
    env: &BTreeMap<String, String>,
    ctx: &HandlerContext,
) -> RhaiResult<CommandOutput> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run `{cmd}`: {e}"))?;
    let group = i32::try_from(child.id()).ok().map(ProcessGroup::from_pgid);
    // Readers on their own threads, so a full pipe never blocks the child.
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        if ctx.is_cancelled() {
            drop(group);
            let _ = child.wait();
            return Err("cancelled".into());
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(COMMAND_POLL),
            Err(e) => return Err(format!("run `{cmd}`: {e}").into()),
        }
    };
    // Kill whatever the command left running in its group, so the pipes close.
    drop(group);
    Ok(CommandOutput {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn register_osis(engine: &mut Engine, args: &ScriptArgs, store: &OsisStore, limits: &RhaiLimits) {
    let context = args
        .context_id
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let max_keys = limits.max_osis_keys;
    {
        let (store, context) = (store.clone(), context.clone());
        engine.register_fn(
            "osis_set",
            move |key: ImmutableString, value: Dynamic| -> RhaiResult<()> {
                store.with(|contexts| {
                    let objects = contexts.entry(context.clone()).or_default();
                    if objects.len() >= max_keys && !objects.contains_key(key.as_str()) {
                        return Err(format!(
                            "osis_set: context `{context}` holds its limit of {max_keys} keys"
                        )
                        .into());
                    }
                    objects.insert(key.to_string(), value.flatten());
                    Ok(())
                })
            },
        );
    }
    {
        let (store, context) = (store.clone(), context.clone());
        engine.register_fn("osis_get", move |key: &str| -> Dynamic {
            store.with(|contexts| {
                contexts
                    .get(&context)
                    .and_then(|objects| objects.get(key).cloned())
                    .unwrap_or(Dynamic::UNIT)
            })
        });
    }
    {
        let (store, context) = (store.clone(), context.clone());
        engine.register_fn("osis_delete", move |key: &str| -> bool {
            store.with(|contexts| {
                contexts
                    .get_mut(&context)
                    .is_some_and(|objects| objects.remove(key).is_some())
            })
        });
    }
    let store = store.clone();
    engine.register_fn("osis_keys", move || -> Array {
        store.with(|contexts| {
            contexts
                .get(&context)
                .map(|objects| objects.keys().map(|k| Dynamic::from(k.clone())).collect())
                .unwrap_or_default()
        })
    });
}
