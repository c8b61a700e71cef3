//! `SAL` and `OSIS` scripts in an embedded, sandboxed [Rhai](https://rhai.rs) engine.
//!
//! ## Sandbox
//! Every script runs on a blocking thread, with the limits of [`RhaiLimits`]
//! (operations, string/array/map sizes, call depth, expression depth). No `import`
//! (modules resolve to nothing), no `eval`. Cancellation and deadlines abort a running
//! script between two operations. `print` becomes a stdout log line, `debug` a stderr
//! log line; nothing reaches the runner's own stdout (the wire).
//!
//! ## Speed: one engine, per-call state on the thread
//! Building a Rhai `Engine` (its standard library, our functions) costs far more than
//! running a small script, so each handler builds its engine once. What belongs to one
//! call (the request's env and `context_id`, its log sink and cancellation, the lines it
//! printed) lives in a thread-local [`CallState`] for the duration of that call: a
//! script runs on one thread from start to end, and the engine's callbacks and our
//! functions read the state of the call running on their thread. Nothing of one call can
//! reach another: the state is set before the script starts and taken away when it ends
//! (also when it panics). Compiled scripts are cached (bounded: [`AST_CACHE_ENTRIES`]
//! scripts of at most [`AST_CACHE_MAX_SCRIPT`] bytes), so a script run again is not
//! parsed again; a cached AST carries no state of the run that compiled it.
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

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use hero_protocol::{ExecutionRequest, LogStream};
use rhai::{AST, Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};

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

/// Scripts whose compiled form is kept, at most.
pub const AST_CACHE_ENTRIES: usize = 256;
/// Longer scripts are compiled each time (the cache holds small, repeated scripts).
pub const AST_CACHE_MAX_SCRIPT: usize = 16 * 1024;

/// Runs SAL or OSIS scripts. Cheap to clone (the engine and cache are shared).
#[derive(Clone)]
pub struct RhaiHandler {
    limits: RhaiLimits,
    engine: Arc<Engine>,
    asts: Arc<Mutex<AstCache>>,
}

impl std::fmt::Debug for RhaiHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RhaiHandler")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RhaiHandler {
    /// A handler of `flavor`; OSIS scripts keep their objects in `store`.
    pub fn new(flavor: RhaiFlavor, limits: RhaiLimits, store: OsisStore) -> Self {
        let mut engine = sandboxed_engine(&limits);
        match flavor {
            RhaiFlavor::Sal => register_sal(&mut engine, &limits),
            RhaiFlavor::Osis => register_osis(&mut engine, store, &limits),
        }
        RhaiHandler {
            limits,
            engine: Arc::new(engine),
            asts: Arc::default(),
        }
    }
}

/// Compiled scripts by source text, oldest evicted first.
#[derive(Default)]
struct AstCache {
    by_script: HashMap<Arc<str>, Arc<AST>>,
    order: VecDeque<Arc<str>>,
}

impl AstCache {
    fn get(&self, script: &str) -> Option<Arc<AST>> {
        self.by_script.get(script).cloned()
    }

    fn put(&mut self, script: &str, ast: Arc<AST>) {
        if script.len() > AST_CACHE_MAX_SCRIPT || self.by_script.contains_key(script) {
            return;
        }
        while self.order.len() >= AST_CACHE_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.by_script.remove(&old);
            }
        }
        let key: Arc<str> = Arc::from(script);
        self.order.push_back(key.clone());
        self.by_script.insert(key, ast);
    }
}

/// What belongs to the one call running on this thread (module docs).
struct CallState {
    ctx: HandlerContext,
    env: Arc<BTreeMap<String, String>>,
    context_id: String,
    printed: Printed,
}

thread_local! {
    static CALL: RefCell<Option<CallState>> = const { RefCell::new(None) };
}

/// Sets this thread's [`CallState`] and clears it on drop, also when the script panics.
struct CallGuard;

impl CallGuard {
    fn enter(state: CallState) -> CallGuard {
        CALL.with(|c| *c.borrow_mut() = Some(state));
        CallGuard
    }

    /// Ends the call; its printed lines.
    fn finish(self) -> Vec<String> {
        CALL.with(|c| c.borrow_mut().take())
            .map(|s| s.printed.lines)
            .unwrap_or_default()
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        CALL.with(|c| c.borrow_mut().take());
    }
}

/// Reads the running call's state (`None` outside a call: a callback never runs there).
fn with_call<T>(f: impl FnOnce(&mut CallState) -> T) -> Option<T> {
    CALL.with(|c| c.borrow_mut().as_mut().map(f))
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
        let cached = self
            .asts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&args.script);
        let ast = match cached {
            Some(ast) => ast,
            None => {
                let ast = Arc::new(
                    self.engine
                        .compile(&args.script)
                        .map_err(|e| HandlerError::typed(SCRIPT_ERROR, e.to_string()))?,
                );
                self.asts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .put(&args.script, ast.clone());
                ast
            }
        };
        let call = CallGuard::enter(CallState {
            ctx: ctx.clone(),
            env: Arc::new(args.env.clone()),
            context_id: args
                .context_id
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            printed: Printed::new(self.limits.max_string_size),
        });
        let result = self.engine.eval_ast::<Dynamic>(&ast);
        let printed = call.finish();
        match result {
            Ok(value) if value.is_unit() => Ok(serde_json::Value::String(printed.join("\n"))),
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

/// The engine with its limits, and callbacks that act on the call running on their
/// thread: `print` and `debug` become log lines, cancellation stops the script.
fn sandboxed_engine(limits: &RhaiLimits) -> Engine {
    let mut engine = Engine::new();
    engine.on_print(|line| {
        with_call(|call| {
            call.printed.push(line);
            call.ctx.log_blocking(LogStream::Stdout, line);
        });
    });
    engine.on_debug(|line, _source, _pos| {
        with_call(|call| call.ctx.log_blocking(LogStream::Stderr, line));
    });
    engine.on_progress(|_| {
        with_call(|call| call.ctx.is_cancelled())
            .unwrap_or(false)
            .then(|| Dynamic::from("cancelled"))
    });
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

/// The running call's env and context, for the SAL functions.
fn call_env() -> RhaiResult<(Arc<BTreeMap<String, String>>, HandlerContext)> {
    with_call(|call| (call.env.clone(), call.ctx.clone()))
        .ok_or_else(|| "no script is running on this thread".into())
}

fn register_sal(engine: &mut Engine, limits: &RhaiLimits) {
    {
        engine.register_fn("run", move |cmd: &str| -> RhaiResult<String> {
            let (env, ctx) = call_env()?;
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
        engine.register_fn("exec", move |cmd: &str| -> RhaiResult<Map> {
            let (env, ctx) = call_env()?;
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
        with_call(|call| call.env.get(name).cloned())
            .flatten()
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

/// The running call's OSIS context id.
fn call_context() -> String {
    with_call(|call| call.context_id.clone()).unwrap_or_else(|| "default".to_owned())
}

fn register_osis(engine: &mut Engine, store: OsisStore, limits: &RhaiLimits) {
    let max_keys = limits.max_osis_keys;
    {
        let store = store.clone();
        engine.register_fn(
            "osis_set",
            move |key: ImmutableString, value: Dynamic| -> RhaiResult<()> {
                let context = call_context();
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
        let store = store.clone();
        engine.register_fn("osis_get", move |key: &str| -> Dynamic {
            let context = call_context();
            store.with(|contexts| {
                contexts
                    .get(&context)
                    .and_then(|objects| objects.get(key).cloned())
                    .unwrap_or(Dynamic::UNIT)
            })
        });
    }
    {
        let store = store.clone();
        engine.register_fn("osis_delete", move |key: &str| -> bool {
            let context = call_context();
            store.with(|contexts| {
                contexts
                    .get_mut(&context)
                    .is_some_and(|objects| objects.remove(key).is_some())
            })
        });
    }
    engine.register_fn("osis_keys", move || -> Array {
        let context = call_context();
        store.with(|contexts| {
            contexts
                .get(&context)
                .map(|objects| objects.keys().map(|k| Dynamic::from(k.clone())).collect())
                .unwrap_or_default()
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    fn request(script: &str, env: serde_json::Value, context: &str) -> ExecutionRequest {
        serde_json::from_value(json!({
            "request_id": "r", "job_id": "j", "function_name": "SAL",
            "args": [script], "kwargs": {"env": env, "context_id": context},
            "context": {"job_id": "j", "attempt": 1, "enqueue_time": "2024-01-01T00:00:00Z",
                        "queue_name": "q"},
        }))
        .unwrap()
    }

    async fn run(handler: &RhaiHandler, script: &str, env: serde_json::Value, ctx: &str) -> String {
        let context = HandlerContext::detached("j", "r", CancellationToken::new());
        let out = handler
            .call(request(script, env, ctx), context)
            .await
            .expect("the script runs");
        out.as_str().expect("text").to_owned()
    }

    /// One shared engine, many calls at once: each sees its own env, its own printed
    /// lines and its own OSIS context, never another call's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_sharing_an_engine_do_not_see_each_other() {
        let store = OsisStore::default();
        let sal = RhaiHandler::new(RhaiFlavor::Sal, RhaiLimits::default(), store.clone());
        let osis = RhaiHandler::new(RhaiFlavor::Osis, RhaiLimits::default(), store);
        let calls = (0..64).map(|i| {
            let (sal, osis) = (sal.clone(), osis.clone());
            async move {
                let script = "let n = env(\"N\"); for i in 0..200 { } print(\"line \" + n); ()";
                let out = run(&sal, script, json!({"N": i.to_string()}), "x").await;
                assert_eq!(out, format!("line {i}"));
                let ctx = format!("ctx-{}", i % 4);
                run(
                    &osis,
                    &format!("osis_set(\"k{i}\", {i}); ()"),
                    json!({}),
                    &ctx,
                )
                .await;
                let keys = run(&osis, "osis_keys()", json!({}), &ctx).await;
                assert!(keys.contains(&format!("\"k{i}\"")), "{keys}");
                for other in 0..64 {
                    if other % 4 != i % 4 {
                        assert!(!keys.contains(&format!("\"k{other}\"")), "{ctx}: {keys}");
                    }
                }
            }
        });
        futures::future::join_all(calls).await;
        // Outside a call, nothing is left on the thread.
        assert!(CALL.with(|c| c.borrow().is_none()));
    }

    /// A cached script runs again with the new call's state, and a script that failed to
    /// compile is not cached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_script_takes_each_calls_state() {
        let sal = RhaiHandler::new(RhaiFlavor::Sal, RhaiLimits::default(), OsisStore::default());
        let script = "env(\"WHO\")";
        assert_eq!(run(&sal, script, json!({"WHO": "a"}), "x").await, "a");
        assert_eq!(run(&sal, script, json!({"WHO": "b"}), "x").await, "b");
        let ctx = HandlerContext::detached("j", "r", CancellationToken::new());
        let err = sal.call(request("let = ;", json!({}), "x"), ctx).await;
        assert!(err.is_err());
        let cache = sal.asts.lock().unwrap();
        assert_eq!(cache.by_script.len(), 1);
    }

    #[test]
    fn the_ast_cache_is_bounded() {
        let engine = Engine::new();
        let mut cache = AstCache::default();
        for i in 0..(AST_CACHE_ENTRIES + 10) {
            let script = format!("{i}");
            cache.put(&script, Arc::new(engine.compile(&script).unwrap()));
        }
        assert_eq!(cache.by_script.len(), AST_CACHE_ENTRIES);
        assert_eq!(cache.order.len(), AST_CACHE_ENTRIES);
        assert!(cache.get("0").is_none(), "the oldest went first");
        assert!(cache.get(&format!("{}", AST_CACHE_ENTRIES + 9)).is_some());
        let long = "1".repeat(AST_CACHE_MAX_SCRIPT + 1);
        cache.put(&long, Arc::new(engine.compile(&long).unwrap()));
        assert!(cache.get(&long).is_none(), "long scripts are not kept");
    }
}
