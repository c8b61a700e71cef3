//! The handlers of the `hero-runner` binary: one per script type.
//!
//! A script request is `function_name` = the script type, `args[0]` = the script text,
//! `kwargs.env` = an object of string environment variables, `kwargs.context_id` and
//! `kwargs.caller_id` = optional strings. The result is the output as a JSON string.
//!
//! | type | runs in | output | log lines |
//! |---|---|---|---|
//! | `SAL` | embedded Rhai + system functions ([`rhai_engine`]) | the script's value, or its printed lines when it returns `()` | `print` (stdout), `debug` (stderr) |
//! | `OSIS` | embedded Rhai + an object store per `context_id` | same | same |
//! | `Python` | `python3 <file>` | stdout, one trailing newline trimmed | stderr lines, while it runs |
//! | `V` | `v run <file>` | same | same |
//! | mapped | `COMMAND... <file>` | same | same |
//!
//! Any type (a new one too) can be mapped to a command that takes the script file's path
//! as its last argument: [`ScriptConfig::commands`]. A mapping replaces the built-in
//! handler of that type.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;
use hero_protocol::ExecutionRequest;
use serde_json::Value;
use tokio::process::Command;

use hero_runner::RunnerBuilder;
use hero_runner::process::{ChildLimits, run_child};
use hero_runner::{Handler, HandlerContext, HandlerError, HandlerResult};

pub mod rhai_engine;

pub use rhai_engine::{OsisStore, RhaiFlavor, RhaiHandler, RhaiLimits};

/// `error.type` of a script that failed (non-zero exit, Rhai error).
pub const SCRIPT_ERROR: &str = "script_error";

/// `error.type` when the interpreter of a script type is not installed.
pub const INTERPRETER_NOT_FOUND: &str = "interpreter_not_found";

/// How the script handlers run.
#[derive(Debug, Clone)]
pub struct ScriptConfig {
    /// Script type -> command (program and leading arguments); the script file's path is
    /// appended. Defaults: `Python` = `python3`, `V` = `v run`. A type listed here is run by
    /// its command even when it is `SAL` or `OSIS`.
    pub commands: BTreeMap<String, Vec<String>>,
    /// Limits of the embedded Rhai engine (SAL, OSIS).
    pub rhai: RhaiLimits,
    /// Limits on child processes (output kept, stderr tail, SIGTERM grace).
    pub child: ChildLimits,
}

impl Default for ScriptConfig {
    fn default() -> Self {
        let mut commands = BTreeMap::new();
        commands.insert("Python".to_owned(), vec!["python3".to_owned()]);
        commands.insert("V".to_owned(), vec!["v".to_owned(), "run".to_owned()]);
        ScriptConfig {
            commands,
            rhai: RhaiLimits::default(),
            child: ChildLimits::default(),
        }
    }
}

impl ScriptConfig {
    /// Maps `script_type` to `command`, split on whitespace (e.g. `"v run"`,
    /// `"/usr/bin/python3 -u"`), replacing any mapping of the same type ignoring case.
    pub fn map(&mut self, script_type: &str, command: &str) -> Result<(), String> {
        let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            return Err(format!("empty command for script type `{script_type}`"));
        }
        self.commands
            .retain(|t, _| !t.eq_ignore_ascii_case(script_type));
        self.commands.insert(script_type.to_owned(), words);
        Ok(())
    }
}

/// Registers the script handlers (SAL, OSIS, then every mapped command) on `builder`.
pub fn register(builder: RunnerBuilder, config: &ScriptConfig) -> RunnerBuilder {
    let store = OsisStore::default();
    let mut builder = builder
        .handler(
            "SAL",
            RhaiHandler::new(RhaiFlavor::Sal, config.rhai.clone(), store.clone()),
        )
        .handler(
            "OSIS",
            RhaiHandler::new(RhaiFlavor::Osis, config.rhai.clone(), store),
        );
    for (script_type, command) in &config.commands {
        // A mapping replaces the built-in handler, whatever the case of its name.
        let name = ["SAL", "OSIS"]
            .into_iter()
            .find(|b| b.eq_ignore_ascii_case(script_type))
            .unwrap_or(script_type);
        builder = builder.handler(
            name,
            CommandHandler {
                script_type: script_type.clone(),
                command: Arc::from(command.as_slice()),
                limits: config.child.clone(),
            },
        );
    }
    builder
}

/// The parts of a script request.
#[derive(Debug, Clone)]
pub struct ScriptArgs {
    /// `args[0]`.
    pub script: String,
    /// `kwargs.env`.
    pub env: BTreeMap<String, String>,
    /// `kwargs.context_id`.
    pub context_id: Option<String>,
    /// `kwargs.caller_id`.
    pub caller_id: Option<String>,
}

impl ScriptArgs {
    /// Reads a script request; anything malformed is `invalid_request`.
    pub fn parse(request: &ExecutionRequest) -> Result<Self, HandlerError> {
        let script = match request.args.first() {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(HandlerError::invalid_request(format!(
                    "args[0] must be the script as a string, got {}",
                    json_kind(other)
                )));
            }
            None => {
                return Err(HandlerError::invalid_request(
                    "args[0] must be the script, got nothing",
                ));
            }
        };
        let mut env = BTreeMap::new();
        match request.kwargs.get("env") {
            None | Some(Value::Null) => {}
            Some(Value::Object(vars)) => {
                for (name, value) in vars {
                    let Value::String(value) = value else {
                        return Err(HandlerError::invalid_request(format!(
                            "kwargs.env.{name} must be a string, got {}",
                            json_kind(value)
                        )));
                    };
                    if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                        return Err(HandlerError::invalid_request(format!(
                            "kwargs.env has an invalid variable `{name}`"
                        )));
                    }
                    env.insert(name.clone(), value.clone());
                }
            }
            Some(other) => {
                return Err(HandlerError::invalid_request(format!(
                    "kwargs.env must be an object of strings, got {}",
                    json_kind(other)
                )));
            }
        }
        Ok(ScriptArgs {
            script,
            env,
            context_id: optional_string(request, "context_id")?,
            caller_id: optional_string(request, "caller_id")?,
        })
    }
}

fn optional_string(request: &ExecutionRequest, key: &str) -> Result<Option<String>, HandlerError> {
    match request.kwargs.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(HandlerError::invalid_request(format!(
            "kwargs.{key} must be a string, got {}",
            json_kind(other)
        ))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Runs a script type's command with the script in a temporary file as its last argument.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    script_type: String,
    command: Arc<[String]>,
    limits: ChildLimits,
}

impl CommandHandler {
    /// What to tell a user whose interpreter is missing.
    fn install_hint(&self) -> String {
        match self.script_type.to_ascii_lowercase().as_str() {
            "v" => "install V from vlang.io or map V to another command".to_owned(),
            "python" => "install Python 3, or pass --python or --map Python=COMMAND".to_owned(),
            _ => format!("install it or map {} to another command", self.script_type),
        }
    }

    /// File name suffix the interpreter expects.
    fn suffix(&self) -> &'static str {
        match self.script_type.to_ascii_lowercase().as_str() {
            "v" => ".v",
            "python" => ".py",
            "sal" | "osis" => ".rhai",
            _ => "",
        }
    }

    async fn run(&self, request: ExecutionRequest, ctx: HandlerContext) -> HandlerResult {
        let args = ScriptArgs::parse(&request)?;
        let Some((program, leading)) = self.command.split_first() else {
            return Err(HandlerError::new(format!(
                "no command for {}",
                self.script_type
            )));
        };
        let file = write_script(&args.script, self.suffix())
            .await
            .map_err(|e| {
                HandlerError::new(format!("writing the script to a temporary file: {e}"))
            })?;
        let mut command = Command::new(program);
        command.args(leading).arg(file.path()).envs(&args.env);
        command.env("HERO_JOB_ID", ctx.job_id());
        if let Some(id) = &args.context_id {
            command.env("HERO_CONTEXT_ID", id);
        }
        if let Some(id) = &args.caller_id {
            command.env("HERO_CALLER_ID", id);
        }
        let output = match run_child(command, &ctx, &self.limits).await {
            Ok(output) => output,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(HandlerError::typed(
                    INTERPRETER_NOT_FOUND,
                    format!("interpreter not found: {program} ({})", self.install_hint()),
                ));
            }
            Err(e) => return Err(HandlerError::new(format!("running {program}: {e}"))),
        };
        drop(file);
        if output.cancelled {
            return Err(HandlerError::typed(
                hero_protocol::error_type::CANCELLED,
                "script cancelled",
            ));
        }
        if !output.status.success() {
            let tail = output.stderr_tail.join("\n");
            let message = if tail.is_empty() {
                format!("{program} {}", describe_status(output.status))
            } else {
                format!("{program} {}: {tail}", describe_status(output.status))
            };
            return Err(HandlerError::typed(SCRIPT_ERROR, message).with_details(
                serde_json::json!({
                    "exit_code": output.status.code(),
                    "signal": std::os::unix::process::ExitStatusExt::signal(&output.status),
                    "stderr_tail": output.stderr_tail,
                }),
            ));
        }
        if output.stdout_truncated {
            return Err(HandlerError::typed(
                SCRIPT_ERROR,
                format!(
                    "output exceeds the limit of {} bytes",
                    self.limits.max_stdout
                ),
            ));
        }
        let mut stdout = output.stdout;
        if stdout.ends_with('\n') {
            stdout.pop();
            if stdout.ends_with('\r') {
                stdout.pop();
            }
        }
        Ok(Value::String(stdout))
    }
}

impl Handler for CommandHandler {
    fn call(
        &self,
        request: ExecutionRequest,
        ctx: HandlerContext,
    ) -> BoxFuture<'static, HandlerResult> {
        let this = self.clone();
        Box::pin(async move { this.run(request, ctx).await })
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

async fn write_script(script: &str, suffix: &str) -> io::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new()
        .prefix("hero-script-")
        .suffix(suffix)
        .tempfile()?;
    tokio::fs::write(file.path(), script).await?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(args: Value, kwargs: Value) -> Result<ScriptArgs, String> {
        let request: ExecutionRequest = serde_json::from_value(json!({
            "request_id": "r", "job_id": "j", "function_name": "SAL",
            "args": args, "kwargs": kwargs,
            "context": {"job_id": "j", "attempt": 1, "enqueue_time": "2024-01-01T00:00:00Z",
                        "queue_name": "q"},
        }))
        .unwrap();
        ScriptArgs::parse(&request).map_err(|e| e.to_string())
    }

    #[test]
    fn script_requests_are_validated() {
        let ok = parse(json!(["1"]), json!({"env": {"A": "b"}, "context_id": "c"})).unwrap();
        assert_eq!((ok.script.as_str(), ok.env["A"].as_str()), ("1", "b"));
        assert_eq!(ok.context_id.as_deref(), Some("c"));
        for (args, kwargs, expect) in [
            (
                json!([]),
                json!({}),
                "args[0] must be the script, got nothing",
            ),
            (
                json!([1]),
                json!({}),
                "args[0] must be the script as a string, got a number",
            ),
            (
                json!(["x"]),
                json!({"env": []}),
                "kwargs.env must be an object of strings, got an array",
            ),
            (
                json!(["x"]),
                json!({"env": {"A": 1}}),
                "kwargs.env.A must be a string, got a number",
            ),
            (
                json!(["x"]),
                json!({"env": {"A=B": "1"}}),
                "kwargs.env has an invalid variable `A=B`",
            ),
            (
                json!(["x"]),
                json!({"caller_id": 5}),
                "kwargs.caller_id must be a string, got a number",
            ),
        ] {
            let err = parse(args, kwargs).unwrap_err();
            assert_eq!(err, format!("invalid_request: {expect}"));
        }
    }

    #[test]
    fn a_mapping_replaces_any_case_of_its_type() {
        let mut config = ScriptConfig::default();
        config.map("python", "/opt/py -u").unwrap();
        assert_eq!(config.commands.get("Python"), None);
        assert_eq!(config.commands["python"], ["/opt/py", "-u"]);
        assert!(config.map("V", "  ").is_err());
    }
}
