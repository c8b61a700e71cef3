//! `SAL` and `OSIS` scripts in an embedded, sandboxed [Rhai](https://rhai.rs) engine.
//!
//! ## Sandbox
//! Every script runs with the limits of [`RhaiLimits`]
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
//! parsed again; a cached AST carries no state of the run that compiled it. Each run
//! evaluates the AST in a fresh `Scope`: no variable or function of one script is seen by
//! the next.
//!
//! ## Speed: inline first, a blocking thread past a budget
//! Handing a script to a blocking thread and back costs more than running a trivial one
//! (measured with `hero-bench --only builtin-http`: the hop was about half of the runner's
//! CPU per call). So a script first runs *inline*, on the runtime's thread, for at most
//! [`INLINE_OPERATIONS`] operations, and only when its AST is cached or it is at most
//! [`INLINE_COMPILE_MAX`] bytes (compiling a long script would stall the thread). The
//! inline run is speculative and has no effect anyone can see: its `print`/`debug` lines
//! are held back, its OSIS writes go to a per-call overlay (read back by its own
//! `osis_get`/`osis_keys`), and the SAL functions that block or touch the system (`run`,
//! `exec`, `read_file`, `write_file`) are not called at all. When it ends within the
//! budget, the lines are sent and the OSIS writes applied (at once, under the store's
//! lock). When it runs past the budget, calls one of those functions, holds back more
//! than [`INLINE_LOG_BYTES`] of lines, or its OSIS writes no longer fit the key limit,
//! it is dropped (nothing of it was applied) and the script runs again from the start on
//! a blocking thread, as before, with the full limits. Cancellation is checked in both.
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

/// OSIS writes of an inline run, applied when it ends: key -> new value, `None` for a
/// delete.
type OsisWrites = BTreeMap<String, Option<Dynamic>>;

impl OsisStore {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, BTreeMap<String, Dynamic>>) -> T) -> T {
        f(&mut self.contexts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `key`'s value in `context`, as seen through `overlay`.
    fn get(&self, context: &str, overlay: Option<&OsisWrites>, key: &str) -> Option<Dynamic> {
        if let Some(pending) = overlay.and_then(|o| o.get(key)) {
            return pending.clone();
        }
        self.with(|contexts| contexts.get(context)?.get(key).cloned())
    }

    /// The keys of `context`, sorted, as seen through `overlay`.
    fn keys(&self, context: &str, overlay: Option<&OsisWrites>) -> Vec<String> {
        let mut keys: std::collections::BTreeSet<String> = self.with(|contexts| {
            contexts
                .get(context)
                .map(|objects| objects.keys().cloned().collect())
                .unwrap_or_default()
        });
        for (key, value) in overlay.into_iter().flatten() {
            match value {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        keys.into_iter().collect()
    }

    /// Sets `key`, in the store or, in an inline run, in its `overlay`; an error when the
    /// context (as seen through the overlay) already holds `max_keys` other keys.
    fn set(
        &self,
        context: &str,
        overlay: Option<&mut OsisWrites>,
        key: &str,
        value: Dynamic,
        max_keys: usize,
    ) -> RhaiResult<()> {
        let full = || -> RhaiResult<()> {
            Err(format!("osis_set: context `{context}` holds its limit of {max_keys} keys").into())
        };
        match overlay {
            None => self.with(|contexts| {
                let objects = contexts.entry(context.to_owned()).or_default();
                if objects.len() >= max_keys && !objects.contains_key(key) {
                    return full();
                }
                objects.insert(key.to_owned(), value);
                Ok(())
            }),
            Some(overlay) => {
                let (present, len) = self.with(|contexts| {
                    let empty = BTreeMap::new();
                    let objects = contexts.get(context).unwrap_or(&empty);
                    let present = match overlay.get(key) {
                        Some(pending) => pending.is_some(),
                        None => objects.contains_key(key),
                    };
                    (present, len_through(objects, overlay))
                });
                if len >= max_keys && !present {
                    return full();
                }
                overlay.insert(key.to_owned(), Some(value));
                Ok(())
            }
        }
    }

    /// Removes `key` (in an inline run: marks it removed in its `overlay`); whether it
    /// was there.
    fn delete(&self, context: &str, overlay: Option<&mut OsisWrites>, key: &str) -> bool {
        match overlay {
            None => self.with(|contexts| {
                contexts
                    .get_mut(context)
                    .is_some_and(|objects| objects.remove(key).is_some())
            }),
            Some(overlay) => {
                let present = match overlay.get(key) {
                    Some(pending) => pending.is_some(),
                    None => self.with(|contexts| {
                        contexts
                            .get(context)
                            .is_some_and(|objects| objects.contains_key(key))
                    }),
                };
                overlay.insert(key.to_owned(), None);
                present
            }
        }
    }

    /// Applies an inline run's writes at once. `false`, applying nothing, when they would
    /// take the context past `max_keys` (other calls wrote meanwhile): the script then
    /// runs again on a blocking thread, where the limit stops it at the exact call.
    fn commit(&self, context: &str, writes: OsisWrites, max_keys: usize) -> bool {
        self.with(|contexts| {
            let objects = contexts.entry(context.to_owned()).or_default();
            let len = len_through(objects, &writes);
            if len > max_keys && len > objects.len() {
                return false;
            }
            for (key, value) in writes {
                match value {
                    Some(value) => objects.insert(key, value),
                    None => objects.remove(&key),
                };
            }
            true
        })
    }
}

/// The number of keys of `objects` once `overlay` is applied.
fn len_through(objects: &BTreeMap<String, Dynamic>, overlay: &OsisWrites) -> usize {
    overlay.iter().fold(objects.len(), |len, (key, value)| {
        match (objects.contains_key(key), value.is_some()) {
            (false, true) => len + 1,
            (true, false) => len - 1,
            _ => len,
        }
    })
}

/// Operations a script may run inline on the runtime's thread before it is moved to a
/// blocking thread (module docs). An estimate, not measured apart: the engine bench's
/// loop of 1,000 (about 3,000 operations) took 311 µs on these machines, so the inline
/// run stalls the runner's thread for about 100 µs at most, about one Redis round trip;
/// trivial scripts take a handful of operations.
pub const INLINE_OPERATIONS: u64 = 1_000;
/// Longer scripts not yet in the AST cache are compiled on a blocking thread.
pub const INLINE_COMPILE_MAX: usize = 1024;
/// Bytes of `print`/`debug` lines an inline run may hold back before it is moved.
pub const INLINE_LOG_BYTES: usize = 64 * 1024;

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
    store: OsisStore,
    /// Runs that went to a blocking thread (tests check which path a script took).
    #[cfg(test)]
    blocking_runs: Arc<std::sync::atomic::AtomicUsize>,
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
            RhaiFlavor::Osis => register_osis(&mut engine, store.clone(), &limits),
        }
        RhaiHandler {
            limits,
            engine: Arc::new(engine),
            asts: Arc::default(),
            store,
            #[cfg(test)]
            blocking_runs: Arc::default(),
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
    /// `Some` while the script runs inline (module docs).
    inline: Option<Inline>,
}

/// What an inline run holds back until it ends (module docs).
#[derive(Default)]
struct Inline {
    /// The script needs a blocking thread: it runs again there from the start.
    moved: bool,
    /// `print` and `debug` lines, in order, and their bytes.
    logs: Vec<(LogStream, String)>,
    log_bytes: usize,
    /// OSIS writes: key -> new value, `None` for a delete.
    osis: OsisWrites,
}

impl Inline {
    /// Holds a log line back; past [`INLINE_LOG_BYTES`] the run moves instead.
    fn hold(&mut self, stream: LogStream, line: &str) {
        self.log_bytes = self.log_bytes.saturating_add(line.len());
        if self.log_bytes > INLINE_LOG_BYTES {
            self.moved = true;
        } else {
            self.logs.push((stream, line.to_owned()));
        }
    }
}

/// The `ErrorTerminated` token of an inline run that moves to a blocking thread.
const MOVED: &str = "moved to a blocking thread";

/// Stops an inline run so that it runs again on a blocking thread; `Ok` outside one.
/// Called by the functions that block or touch the system, before they do anything.
fn needs_blocking_thread() -> RhaiResult<()> {
    let inline = with_call(|call| {
        call.inline
            .as_mut()
            .map(|inline| inline.moved = true)
            .is_some()
    });
    if inline == Some(true) {
        // Not catchable by the script's `try`/`catch`: the run ends here.
        return Err(EvalAltResult::ErrorTerminated(MOVED.into(), rhai::Position::NONE).into());
    }
    Ok(())
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

    /// Ends the call; its state.
    fn finish(self) -> Option<CallState> {
        CALL.with(|c| c.borrow_mut().take())
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
            match this.run_inline(&args, &ctx) {
                Ok(Some((result, logs))) => {
                    for (stream, line) in logs {
                        ctx.log_async(stream, line).await;
                    }
                    return result;
                }
                Ok(None) => {}
                Err(_) => {
                    return Err(HandlerError::typed(
                        hero_protocol::error_type::PANIC,
                        "the script engine panicked",
                    ));
                }
            }
            #[cfg(test)]
            this.blocking_runs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

/// What an inline run that ended gives: the result, and the log lines to send first.
type InlineEnd = (HandlerResult, Vec<(LogStream, String)>);

impl RhaiHandler {
    /// The script's AST, from the cache or compiled (and cached).
    fn compile(&self, script: &str) -> Result<Arc<AST>, HandlerError> {
        if let Some(ast) = self.cached(script) {
            return Ok(ast);
        }
        let ast = Arc::new(
            self.engine
                .compile(script)
                .map_err(|e| HandlerError::typed(SCRIPT_ERROR, e.to_string()))?,
        );
        self.asts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(script, ast.clone());
        Ok(ast)
    }

    fn cached(&self, script: &str) -> Option<Arc<AST>> {
        self.asts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(script)
    }

    /// Runs the script inline (module docs): `Some` when it ended there, `None` when it
    /// must run on a blocking thread (nothing of the inline run was applied); `Err` when
    /// the engine panicked.
    fn run_inline(
        &self,
        args: &ScriptArgs,
        ctx: &HandlerContext,
    ) -> std::thread::Result<Option<InlineEnd>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let ast = match self.cached(&args.script) {
                Some(ast) => ast,
                None if args.script.len() <= INLINE_COMPILE_MAX => {
                    match self.compile(&args.script) {
                        Ok(ast) => ast,
                        Err(e) => return Some((Err(e), Vec::new())),
                    }
                }
                None => return None,
            };
            let (result, state) = self.eval(&ast, args, ctx, Some(Inline::default()));
            let inline = state.inline.unwrap_or_default();
            if inline.moved {
                return None;
            }
            if !inline.osis.is_empty()
                && !self
                    .store
                    .commit(&state.context_id, inline.osis, self.limits.max_osis_keys)
            {
                return None;
            }
            Some((finish(result, state.printed.lines), inline.logs))
        }))
    }

    /// Runs one script to its end on the current (blocking) thread.
    fn run(&self, args: &ScriptArgs, ctx: &HandlerContext) -> HandlerResult {
        let ast = self.compile(&args.script)?;
        let (result, state) = self.eval(&ast, args, ctx, None);
        finish(result, state.printed.lines)
    }

    /// Evaluates `ast` with this call's state on the thread; the state back when it ends.
    fn eval(
        &self,
        ast: &AST,
        args: &ScriptArgs,
        ctx: &HandlerContext,
        inline: Option<Inline>,
    ) -> (RhaiResult<Dynamic>, CallState) {
        let call = CallGuard::enter(CallState {
            ctx: ctx.clone(),
            env: Arc::new(args.env.clone()),
            context_id: args
                .context_id
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            printed: Printed::new(self.limits.max_string_size),
            inline,
        });
        // A fresh scope per run: nothing of an earlier script is visible.
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut rhai::Scope::new(), ast);
        match call.finish() {
            Some(state) => (result, state),
            // The callbacks never take the state away; should they, the call fails.
            None => (
                Err("the call's state was lost".into()),
                CallState {
                    ctx: ctx.clone(),
                    env: Arc::default(),
                    context_id: String::new(),
                    printed: Printed::new(0),
                    inline: None,
                },
            ),
        }
    }
}

/// The handler's answer for a script's end.
fn finish(result: RhaiResult<Dynamic>, printed: Vec<String>) -> HandlerResult {
    match result {
        Ok(value) if value.is_unit() => Ok(serde_json::Value::String(printed.join("\n"))),
        Ok(value) => Ok(serde_json::Value::String(value.to_string())),
        Err(err) if matches!(*err, EvalAltResult::ErrorTerminated(..)) => Err(HandlerError::typed(
            hero_protocol::error_type::CANCELLED,
            "script aborted",
        )),
        Err(err) => Err(HandlerError::typed(SCRIPT_ERROR, err.to_string())),
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
            match &mut call.inline {
                Some(inline) => inline.hold(LogStream::Stdout, line),
                None => call.ctx.log_blocking(LogStream::Stdout, line),
            }
        });
    });
    engine.on_debug(|line, _source, _pos| {
        with_call(|call| match &mut call.inline {
            Some(inline) => inline.hold(LogStream::Stderr, line),
            None => call.ctx.log_blocking(LogStream::Stderr, line),
        });
    });
    engine.on_progress(|operations| {
        with_call(|call| {
            if call.ctx.is_cancelled() {
                return Some("cancelled");
            }
            let inline = call.inline.as_mut()?;
            if operations > INLINE_OPERATIONS {
                inline.moved = true;
            }
            inline.moved.then_some(MOVED)
        })
        .flatten()
        .map(Dynamic::from)
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
            needs_blocking_thread()?;
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
            needs_blocking_thread()?;
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
        needs_blocking_thread()?;
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
        needs_blocking_thread()?;
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

/// Runs `f` with the running call's OSIS context id and, in an inline run, its overlay
/// (outside a call, which never happens, the default context).
fn with_osis<T>(f: impl FnOnce(&str, Option<&mut OsisWrites>) -> T) -> T {
    CALL.with(|c| match c.borrow_mut().as_mut() {
        Some(call) => f(
            &call.context_id,
            call.inline.as_mut().map(|inline| &mut inline.osis),
        ),
        None => f("default", None),
    })
}

fn register_osis(engine: &mut Engine, store: OsisStore, limits: &RhaiLimits) {
    let max_keys = limits.max_osis_keys;
    {
        let store = store.clone();
        engine.register_fn(
            "osis_set",
            move |key: ImmutableString, value: Dynamic| -> RhaiResult<()> {
                with_osis(|context, overlay| {
                    store.set(context, overlay, key.as_str(), value.flatten(), max_keys)
                })
            },
        );
    }
    {
        let store = store.clone();
        engine.register_fn("osis_get", move |key: &str| -> Dynamic {
            with_osis(|context, overlay| store.get(context, overlay.as_deref(), key))
                .unwrap_or(Dynamic::UNIT)
        });
    }
    {
        let store = store.clone();
        engine.register_fn("osis_delete", move |key: &str| -> bool {
            with_osis(|context, overlay| store.delete(context, overlay, key))
        });
    }
    engine.register_fn("osis_keys", move || -> Array {
        with_osis(|context, overlay| store.keys(context, overlay.as_deref()))
            .into_iter()
            .map(Dynamic::from)
            .collect()
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

    async fn outcome(handler: &RhaiHandler, script: &str, ctx: HandlerContext) -> HandlerResult {
        handler
            .call(request(script, json!({}), "limits"), ctx)
            .await
    }

    fn blocking_runs(handler: &RhaiHandler) -> usize {
        handler
            .blocking_runs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Burns more than `INLINE_OPERATIONS`, so what follows runs on a blocking thread.
    const MOVE: &str = "let burn = 0; for i in 0..2000 { burn += i; } ";

    /// Trivial scripts end inline; a long one, and one that calls a function that blocks,
    /// move to a blocking thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trivial_scripts_run_inline_and_others_move() {
        let store = OsisStore::default();
        let sal = RhaiHandler::new(RhaiFlavor::Sal, RhaiLimits::default(), store.clone());
        let osis = RhaiHandler::new(RhaiFlavor::Osis, RhaiLimits::default(), store);
        assert_eq!(run(&sal, "1", json!({}), "x").await, "1");
        assert_eq!(
            run(&sal, "env(\"A\") + 1", json!({"A": "b"}), "x").await,
            "b1"
        );
        let set_get = "osis_set(\"k\", 41); osis_get(\"k\") + 1";
        assert_eq!(run(&osis, set_get, json!({}), "x").await, "42");
        assert_eq!((blocking_runs(&sal), blocking_runs(&osis)), (0, 0));

        assert_eq!(run(&sal, &format!("{MOVE} 2"), json!({}), "x").await, "2");
        assert_eq!(blocking_runs(&sal), 1);
        let out = run(&sal, "print(\"a\"); run(\"echo hi\")", json!({}), "x").await;
        assert_eq!(out, "hi");
        assert_eq!(blocking_runs(&sal), 2);
        // A script too long to compile inline.
        let long = format!("{}1", " ".repeat(INLINE_COMPILE_MAX));
        assert_eq!(run(&sal, &long, json!({}), "x").await, "1");
        assert_eq!(blocking_runs(&sal), 3);
    }

    /// A script that moves runs again from the start, and what it did inline is not
    /// seen twice: its printed lines and OSIS writes appear once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_moved_script_has_its_effects_once() {
        let store = OsisStore::default();
        let osis = RhaiHandler::new(RhaiFlavor::Osis, RhaiLimits::default(), store.clone());
        let script = format!(
            "let n = osis_get(\"n\"); if n == () {{ n = 0; }} osis_set(\"n\", n + 1); \
             print(\"n=\" + (n + 1)); {MOVE} ()"
        );
        assert_eq!(run(&osis, &script, json!({}), "c").await, "n=1");
        assert_eq!(blocking_runs(&osis), 1);
        assert_eq!(run(&osis, &script, json!({}), "c").await, "n=2");
        assert_eq!(run(&osis, "osis_get(\"n\")", json!({}), "c").await, "2");
        let sal = RhaiHandler::new(RhaiFlavor::Sal, RhaiLimits::default(), store);
        let script = "print(\"before\"); let x = run(\"echo x\"); print(x); ()";
        assert_eq!(run(&sal, script, json!({}), "c").await, "before\nx");
    }

    /// An inline run's OSIS writes are read back by the same script through its
    /// overlay, written when it ends (also when it then fails, as on a blocking thread),
    /// and bound by the key limit like direct writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inline_osis_writes_read_back_and_respect_the_key_limit() {
        let limits = RhaiLimits {
            max_osis_keys: 2,
            ..RhaiLimits::default()
        };
        for prefix in ["", MOVE] {
            let store = OsisStore::default();
            let osis = RhaiHandler::new(RhaiFlavor::Osis, limits.clone(), store);
            let ctx = format!("ctx{}", prefix.len());
            run(&osis, "osis_set(\"b\", 1); ()", json!({}), &ctx).await;
            let script = format!(
                "{prefix} osis_set(\"a\", 1); let gone = osis_delete(\"b\"); \
                 let again = osis_delete(\"b\"); [osis_keys(), osis_get(\"b\"), gone, again]"
            );
            let out = run(&osis, &script, json!({}), &ctx).await;
            assert_eq!(out, "[[\"a\"], (), true, false]", "{prefix:?}");
            let full = format!("{prefix} osis_set(\"c\", 3); osis_set(\"d\", 4)");
            let context = HandlerContext::detached("j", "r", CancellationToken::new());
            let err = osis
                .call(request(&full, json!({}), &ctx), context)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("limit of 2 keys"), "{err}");
            let keys = run(&osis, "osis_keys()", json!({}), &ctx).await;
            assert_eq!(
                keys, "[\"a\", \"c\"]",
                "{prefix:?}: writes before the error stay"
            );
        }
    }

    /// The commit of an inline run refuses writes that no longer fit (another call
    /// filled the context meanwhile) and applies nothing.
    #[test]
    fn an_inline_commit_that_does_not_fit_applies_nothing() {
        let store = OsisStore::default();
        let mut overlay = OsisWrites::new();
        store
            .set("c", Some(&mut overlay), "a", Dynamic::from(1_i64), 2)
            .unwrap();
        store.set("c", None, "x", Dynamic::from(1_i64), 2).unwrap();
        store.set("c", None, "y", Dynamic::from(1_i64), 2).unwrap();
        assert!(!store.commit("c", overlay.clone(), 2));
        assert_eq!(store.keys("c", None), ["x", "y"]);
        assert!(store.commit("c", overlay, 3));
        assert_eq!(store.keys("c", None), ["a", "x", "y"]);
    }

    /// Script A's variables and functions are not seen by script B, inline or not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_script_sees_nothing_of_the_one_before() {
        let sal = RhaiHandler::new(RhaiFlavor::Sal, RhaiLimits::default(), OsisStore::default());
        for prefix in ["", MOVE] {
            let a = format!("{prefix} let secret = 42; fn leak() {{ 7 }} leak() + secret");
            assert_eq!(run(&sal, &a, json!({}), "x").await, "49");
            for b in ["secret", "leak()"] {
                let b = format!("{prefix} {b}");
                let ctx = HandlerContext::detached("j", "r", CancellationToken::new());
                let err = outcome(&sal, &b, ctx).await.unwrap_err().to_string();
                assert!(err.starts_with("script_error"), "{b}: {err}");
                assert!(err.contains("not found"), "{b}: {err}");
            }
        }
    }

    /// Every sandbox limit stops a script inline and on a blocking thread alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limits_hold_inline_and_on_a_blocking_thread() {
        let limits = RhaiLimits {
            max_operations: 50_000,
            max_string_size: 100,
            max_array_size: 10,
            max_map_size: 10,
            max_call_levels: 8,
            max_expr_depths: (16, 8),
            max_osis_keys: 100,
        };
        let sal = RhaiHandler::new(RhaiFlavor::Sal, limits, OsisStore::default());
        let deep = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        let cases = [
            ("loop { }", "Too many operations"),
            ("let s = \"x\"; loop { s += s; }", "Length of string"),
            ("let a = []; loop { a.push(1); }", "Size of array"),
            (
                "let m = #{}; let i = 0; loop { m += #{}; m[`k${i}`] = i; i += 1; }",
                "Size of object map",
            ),
            ("fn f(n) { f(n + 1) } f(0)", "Stack overflow"),
            (deep.as_str(), "Expression exceeds maximum complexity"),
        ];
        for (script, expect) in cases {
            for prefix in ["", MOVE] {
                let script = format!("{prefix}{script}");
                let ctx = HandlerContext::detached("j", "r", CancellationToken::new());
                let err = outcome(&sal, &script, ctx).await.unwrap_err().to_string();
                assert!(err.starts_with("script_error"), "{script}: {err}");
                assert!(err.contains(expect), "{script}: {err}");
            }
        }
        // The operations limit counts from the start of the run that ends the script.
        let ok = format!("{MOVE}{MOVE} 1");
        assert_eq!(run(&sal, &ok, json!({}), "x").await, "1");
    }

    /// A runaway script is stopped by its cancellation: it moves to a blocking thread
    /// past the inline budget, and the token reaches it there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_runaway_script_stops_when_cancelled() {
        let sal = RhaiHandler::new(RhaiFlavor::Sal, RhaiLimits::default(), OsisStore::default());
        let token = CancellationToken::new();
        let ctx = HandlerContext::detached("j", "r", token.clone());
        let call = tokio::spawn({
            let sal = sal.clone();
            async move { outcome(&sal, "loop { }", ctx).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!call.is_finished());
        token.cancel();
        let err = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the script stops")
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().starts_with("cancelled"), "{err}");
        assert_eq!(blocking_runs(&sal), 1);
        // Cancelled before it starts: a trivial script ends inline, cancelled too.
        let token = CancellationToken::new();
        token.cancel();
        let ctx = HandlerContext::detached("j", "r", token);
        let err = outcome(&sal, "let x = 1; x + 1", ctx).await.unwrap_err();
        assert!(err.to_string().starts_with("cancelled"), "{err}");
        assert_eq!(blocking_runs(&sal), 1);
    }
}
