//! # hero-script-runner: the `hero-runner` binary's engines and command line
//!
//! The runner that executes scripts for a hero supervisor, built on the runner SDK
//! (`hero-runner`): SAL and OSIS in an embedded, sandboxed Rhai engine, Python and V with
//! their interpreters, any script type mapped to a command. A crate of its own so that an
//! SDK user does not compile Rhai.
//!
//! - [`scripts`]: the handlers, one per script type ([`scripts::register`] adds them to a
//!   [`hero_runner::RunnerBuilder`]).
//! - [`cli`]: the command line ([`cli::RunnerArgs`], [`cli::main_with`], the TOML config
//!   file), a library so that `hero-supervisor runner` runs the same runner from the
//!   supervisor's own executable.
//!
//! The binary is `hero-runner` (`cargo run -p hero-script-runner --bin hero-runner`).

pub mod cli;
pub mod scripts;
