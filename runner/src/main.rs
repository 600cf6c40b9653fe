//! `rootbox`: build filesystem images owned by root, without being root.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod completions;
mod doctor;
mod error_text;
mod inspect;
mod pipeline;
mod run;

/// Build filesystem images whose files are owned by root, without being root.
///
/// rootbox creates a user and mount namespace in which you are uid 0,
/// stages a root filesystem and a Nix store closure there, and runs
/// mkfs.btrfs on it, so the image records the owners the booted system
/// needs.
#[derive(Parser, Debug)]
#[command(
    name = "rootbox",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Build(Box<pipeline::BuildArgs>),
    Run(run::RunArgs),
    Inspect(inspect::InspectArgs),
    Doctor(doctor::DoctorArgs),
    Completions(completions::CompletionsArgs),
    /// (internal) Writes the man pages, rootbox(1) and
    /// rootbox-SUBCOMMAND(1), into DIR (scripts/man).
    #[command(name = "__man", hide = true)]
    Man {
        dir: std::path::PathBuf,
    },
    /// (internal) The staging step of a build, run inside the sandbox.
    #[command(name = "__stage", hide = true)]
    Stage {
        job: std::path::PathBuf,
    },
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    // rootbox's own steps in the sandbox (`__stage`) log like their parent.
    let default = std::env::var("ROOTBOX_LOG_LEVEL").unwrap_or_else(|_| {
        std::env::set_var("ROOTBOX_LOG_LEVEL", default);
        default.to_string()
    });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose, cli.quiet);
    let result = match &cli.command {
        Command::Run(args) => run::main(args, matches.subcommand_matches("run").expect("run")),
        Command::Build(args) => pipeline::main(args),
        Command::Inspect(args) => inspect::run(args).map(|()| ExitCode::SUCCESS),
        Command::Doctor(args) => doctor::main(args),
        Command::Stage { job } => pipeline::stage::main(job),
        Command::Completions(args) => completions::completions(args, Cli::command()),
        Command::Man { dir } => completions::man(Cli::command(), dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rootbox: error: {}", error_text::error_text(&e));
            ExitCode::from(1)
        }
    }
}
