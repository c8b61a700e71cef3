//! `hero-runner`: runs SAL, OSIS, Python and V scripts for a hero supervisor.
//! See [`hero_script_runner::cli`] for the command line.

use clap::Parser;
use hero_script_runner::cli::RunnerArgs;

#[derive(Debug, Parser)]
#[command(
    name = "hero-runner",
    version,
    about = "Runs SAL, OSIS, Python and V scripts for a hero supervisor"
)]
struct Cli {
    #[command(flatten)]
    args: RunnerArgs,
}

fn main() -> anyhow::Result<()> {
    hero_script_runner::cli::init_logging();
    hero_script_runner::cli::main_with(Cli::parse().args)
}
