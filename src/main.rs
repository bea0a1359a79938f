//! The `dronectl` binary: parse arguments, build the one async runtime, run the command on
//! it, print, exit.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod cli;

/// The allocator of `dronectl router` as of the standalone `dronectl-router` (see
/// `router/src/main.rs`): the router container runs this binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let printer = cli::printer::Printer::new(
        cli.global.output,
        cli.global.verbose,
        cli.global.quiet,
        cli.global.no_progress,
    );
    let command = cli.command.name();
    let (code, result) = match run(cli, &printer) {
        Ok(outcome) => (outcome.code, outcome.result),
        Err(err) => {
            let code = dronectl::error::exit_code(&err);
            printer.error(&err, code);
            (code, serde_json::Value::Null)
        }
    };
    printer.summary(command, code, result);
    std::process::ExitCode::from(code.code())
}

/// Runs the command on the process's one runtime (multi-thread, two workers: Docker and
/// Kubernetes calls, the router's listener, the signals). The runtime is dropped, and the
/// tasks still on it cancelled, before the error and the summary are printed, so nothing a
/// task reports can come after the summary line.
fn run(cli: cli::Cli, printer: &cli::printer::Printer) -> anyhow::Result<cli::Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(cli::run(cli, printer));
    drop(runtime);
    result
}
