//! Shell completions (`rootbox completions bash|zsh|fish|elvish|powershell`)
//! and the man pages (`rootbox __man DIR`, hidden; `scripts/man` writes
//! `rootbox.1` and one `rootbox-SUBCOMMAND.1` each), both generated from the clap definitions, so they name
//! exactly the subcommands and flags the binary accepts.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Print a completion script for a shell.
///
/// bash: `source <(rootbox completions bash)`, or install it as
/// /usr/share/bash-completion/completions/rootbox. zsh: as `_rootbox` in a
/// directory of $fpath. fish: as ~/.config/fish/completions/rootbox.fish.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

/// Writes the completion script for `args.shell` to standard output.
pub fn completions(args: &CompletionsArgs, cmd: clap::Command) -> Result<ExitCode> {
    // clap_complete offers hidden subcommands (rootbox's internal ones) in
    // some shells: complete a copy without them.
    let mut cmd = cmd.get_subcommands().filter(|s| !s.is_hide_set()).fold(
        clap::Command::new("rootbox").args(cmd.get_arguments().cloned()),
        |c, s| c.subcommand(s.clone()),
    );
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "rootbox", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the man pages into `dir`: rootbox.1 — the command, its global
/// options, every subcommand — and rootbox-NAME.1 for each (visible)
/// subcommand, with its options; prints the paths written.
pub fn man(cmd: clap::Command, dir: &Path) -> Result<ExitCode> {
    let cmd = cmd.disable_help_subcommand(true);
    let version = cmd.get_version().unwrap_or_default().to_string();
    let mut pages = vec![("rootbox".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let page = sub
            .clone()
            .name(format!("rootbox-{name}"))
            .bin_name(format!("rootbox {name}"))
            .version(version.clone());
        pages.push((format!("rootbox-{name}"), page));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut out)
            .with_context(|| format!("rendering {name}(1)"))?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
