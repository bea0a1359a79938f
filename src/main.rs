//! The `dronectl` binary: parse arguments, run the command, print, exit.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod cli;

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
    let (code, result) = match cli::run(cli, &printer) {
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
