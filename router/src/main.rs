//! `dronectl-router`: the router as a standalone binary, for running it outside dronectl.
//! dronectl's local router container does not run this binary but `dronectl router` (its
//! image is the dronectl binary); both are [`dronectl_router::cli`], so they take the same
//! flags and environment variables, log the same way and exit with the same codes.

use std::process::ExitCode;

use clap::Parser;
use dronectl_router::cli::{self, CliError};

/// mimalloc instead of glibc's allocator: the router allocates and frees a few small buffers
/// per request on two threads, and glibc's malloc/free were 10 % of its user-space time
/// (docs/router.md, "Performance").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// dronectl's L7 HTTP traffic router (internal and public data ports + admin API).
#[derive(Debug, Parser)]
#[command(name = "dronectl-router", version, about)]
struct Standalone {
    #[command(flatten)]
    args: cli::Args,
}

fn main() -> ExitCode {
    let Standalone { args } = Standalone::parse();
    if let Err(e) = args.init_logging() {
        // No subscriber to report through: this is the one line the binary prints itself.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("dronectl-router: {e}");
        }
        return exit_code(&e);
    }
    let result = args
        .options()
        .and_then(|opts| cli::runtime()?.block_on(cli::serve(opts)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "router failed");
            exit_code(&e)
        }
    }
}

fn exit_code(e: &CliError) -> ExitCode {
    ExitCode::from(if e.is_usage() { 2 } else { 1 })
}
