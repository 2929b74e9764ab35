//! The command-line front end: parse, call the library, print, choose the exit code.

mod args;
mod commands;

use args::{Cli, Command};
use clap::{CommandFactory, FromArgMatches};
use diskferry::{Capability, Error, Registry};

/// What a command hands back to `main`: its exit code, or an error to print.
pub type Outcome = Result<i32, Error>;

/// Runs the command line and returns the process exit code.
pub fn run() -> i32 {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // compare reports errors with 2 (1 means "different"); every other command with 1.
    let error_code = if argv.get(1).is_some_and(|a| a == "compare") {
        2
    } else {
        1
    };
    let cli = match Cli::command()
        .after_help(after_help())
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { error_code } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if let Err(e) = diskferry::staging::install_interrupt_cleanup() {
        eprintln!("diskferry: warning: {e}");
    }
    let result = match cli.command {
        Command::Info(a) => commands::info(a),
        Command::Convert(a) => commands::convert(a),
        Command::Create(a) => commands::create(a),
        Command::Check(a) => commands::check(a),
        Command::Compare(a) => commands::compare(a),
        Command::Map(a) => commands::map(a),
        Command::Snapshot(a) => commands::snapshot(a),
        Command::Migrate(a) => commands::migrate(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("diskferry: {}", diskferry::info::printable(&e.to_string()));
            error_code
        }
    }
}

/// The formats and what diskferry does with each, from the registry, for `--help`.
fn after_help() -> String {
    let registry = Registry::builtin();
    let mut text = String::from("Formats (detected by content, never by file name):\n");
    for f in registry.formats() {
        let aliases = f.driver().aliases();
        let can: Vec<&str> = [
            (Capability::Read, "read"),
            (Capability::Write, "write"),
            (Capability::Check, "check"),
        ]
        .iter()
        .filter(|(c, _)| f.can(*c))
        .map(|(_, w)| *w)
        .collect();
        text.push_str(&format!(
            "  {}{}: {}{}\n",
            f.name(),
            if aliases.is_empty() {
                String::new()
            } else {
                format!(" (alias {})", aliases.join(", "))
            },
            f.driver().description(),
            if can.is_empty() {
                String::new()
            } else {
                format!(" [{}]", can.join(", "))
            }
        ));
    }
    text.push_str(
        "Exit codes: 0 success, 1 error (compare: 0 same, 1 different, 2 error; check: 0 clean, 2 corruptions, 3 leaks, 1 check failed).",
    );
    text
}
