//! The `rootbox` command line: the subcommands, logging set-up and the
//! dispatch of rootbox's own internal steps (`__stage`, `__fs-stage`, …),
//! which the builds start by re-executing the running program.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use tracing_subscriber::filter::LevelFilter;

use crate::{completions, disk, doctor, error_text, fs, inspect, pipeline, run};

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
pub(crate) struct Cli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Command,
}

// The options every subcommand takes. (A `//` comment: a flattened
// struct's doc comment would become the command's about text.)
#[derive(clap::Args, Debug)]
struct Global {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    /// Colour in log output: auto (only when stderr is a terminal and
    /// NO_COLOR is not set), always, or never.
    #[arg(long, value_name = "WHEN", global = true, default_value = "auto")]
    color: Color,
}

// `rootbox run`'s command line alone: the same program name, version
// and global options as `Cli`, with `run` its only subcommand. Building
// every subcommand's arguments (and their help) is most of what clap
// costs, and `run` is timed as a sandbox's start-up; `run`'s parsing,
// help and errors read the same either way. (`//`: a doc comment would
// become the about text of `rootbox`, which `Cli` gives.)
#[derive(Parser, Debug)]
#[command(
    name = "rootbox",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct RunCli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Subcommand, Debug)]
enum RunOnly {
    Run(run::RunArgs),
}

/// Whether the command line is `rootbox [GLOBAL OPTIONS] run …`, judged
/// without clap: anything else (`--help`, another subcommand, an option
/// this does not know) takes the whole command line's parser.
fn is_run(args: &[std::ffi::OsString]) -> bool {
    let mut rest = args.iter().skip(1).map(|a| a.to_str());
    while let Some(Some(arg)) = rest.next() {
        match arg {
            "run" => return true,
            "--verbose" | "--quiet" | "--color=auto" | "--color=always" | "--color=never" => {}
            "--color" => {
                if !matches!(rest.next(), Some(Some("auto" | "always" | "never"))) {
                    return false;
                }
            }
            a if a.len() > 1
                && a.starts_with('-')
                && !a.starts_with("--")
                && a[1..].bytes().all(|b| b == b'v' || b == b'q') => {}
            _ => return false,
        }
    }
    false
}

/// `rootbox run …`, parsed by [`RunCli`]: the sandbox's start-up path.
fn main_run(args: Vec<std::ffi::OsString>) -> ExitCode {
    let matches = RunCli::command().get_matches_from(args);
    let cli = match RunCli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let RunOnly::Run(args) = &cli.command;
    init_logging(cli.global.verbose, cli.global.quiet, cli.global.color);
    let result = run::main(args, matches.subcommand_matches("run").expect("run"));
    finish(result)
}

#[derive(Subcommand, Debug)]
enum Command {
    Build(Box<pipeline::BuildArgs>),
    Disk(Box<disk::DiskArgs>),
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
    /// (internal) An ext4, erofs or squashfs image from a staged tree.
    #[command(name = "__fs-make", hide = true)]
    FsMake(fs::cli::MakeArgs),
    /// (internal) A build's ext4, erofs or squashfs step, in a nested sandbox.
    #[command(name = "__fs-stage", hide = true)]
    FsStage {
        step: std::path::PathBuf,
        outcome: std::path::PathBuf,
    },
    /// (internal) Every inode of an ext4, erofs or squashfs image, as JSON.
    #[command(name = "__fs-read", hide = true)]
    FsRead(fs::cli::ReadArgs),
}

/// When log output is coloured.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    /// Whether to colour, decided once; rootbox's own steps in the sandbox
    /// (`__stage`, whose stderr is this one) inherit it through
    /// ROOTBOX_COLOR.
    fn decide(self) -> bool {
        let inherited = std::env::var("ROOTBOX_COLOR").ok();
        let on = match (self, inherited.as_deref()) {
            (Color::Always, _) | (Color::Auto, Some("always")) => true,
            (Color::Never, _) | (Color::Auto, Some("never")) => false,
            (Color::Auto, _) => {
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        };
        std::env::set_var("ROOTBOX_COLOR", if on { "always" } else { "never" });
        on
    }
}

fn init_logging(verbose: u8, quiet: bool, color: Color) {
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
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(color.decide())
        .with_target(false)
        .without_time();
    // A plain level needs no EnvFilter (whose set-up is a measurable part
    // of a sandbox's start-up); RUST_LOG directives do.
    match (std::env::var_os("RUST_LOG"), default.parse::<LevelFilter>()) {
        (None, Ok(level)) => fmt.with_max_level(level).init(),
        _ => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&default));
            fmt.with_env_filter(filter).init()
        }
    }
}

/// The `rootbox` program: parses the command line, sets up logging and runs
/// the subcommand; errors are printed with their causes and give exit 1.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if is_run(&args) {
        return main_run(args);
    }
    let matches = Cli::command().get_matches_from(args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.global.verbose, cli.global.quiet, cli.global.color);
    let result = match &cli.command {
        Command::Run(args) => run::main(args, matches.subcommand_matches("run").expect("run")),
        Command::Build(args) => pipeline::main(args),
        Command::Disk(args) => disk::main(args),
        Command::Inspect(args) => inspect::run(args).map(|()| ExitCode::SUCCESS),
        Command::Doctor(args) => doctor::main(args),
        Command::Stage { job } => pipeline::stage::main(job),
        Command::FsMake(args) => fs::cli::make(args),
        Command::FsRead(args) => fs::cli::read(args),
        Command::FsStage { step, outcome } => fs::cli::stage(step, outcome),
        Command::Completions(args) => completions::completions(args, Cli::command()),
        Command::Man { dir } => completions::man(Cli::command(), dir),
    };
    finish(result)
}

/// The exit code of a subcommand's result; errors are printed with their
/// causes and give exit 1.
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rootbox: error: {}", error_text::error_text(&e));
            ExitCode::from(1)
        }
    }
}
