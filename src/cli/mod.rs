//! The command-line front end: parse, call the library, print, choose the exit code.

mod args;
mod commands;

use args::{Cli, Command};
use clap::Parser;
use diskferry::Error;

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
    let cli = match Cli::try_parse_from(&argv) {
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("diskferry: {e}");
            error_code
        }
    }
}
