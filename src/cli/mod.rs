//! The command-line front end: parse, call the library, print, choose the exit code.

mod args;
mod commands;
mod compat;
mod edit;
mod ops;

use args::{Cli, Command};
use clap::{CommandFactory, FromArgMatches};
use compat::Personality;
use diskferry::{Capability, Error, Registry};

/// What a command hands back to `main`: its exit code, or an error to print.
pub type Outcome = Result<i32, Error>;

/// Runs the command line and returns the process exit code.
pub fn run() -> i32 {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let personality = argv
        .first()
        .map(|a| Personality::from_argv0(a))
        .unwrap_or(Personality::Diskferry);
    personality.install();
    let program = personality.program();
    // compare reports errors with 2 (1 means "different"); every other command with 1.
    // qemu-img's own usage errors exit 1 even for compare (its error_exit), and scripts run
    // under that name see qemu-img's code; an image it cannot open is still 2 there.
    let compare = argv.get(1).is_some_and(|a| a == "compare");
    let error_code = if compare { 2 } else { 1 };
    let usage_error_code = if personality == Personality::QemuImg {
        1
    } else {
        error_code
    };
    if argv.len() == 2 && (argv[1] == "--version" || argv[1] == "-V") {
        print!("{}", personality.version_text());
        return 0;
    }
    if let Some(cmd) = argv.get(1).and_then(|a| a.to_str())
        && NOT_YET.contains(&cmd)
    {
        eprintln!(
            "{program}: '{cmd}' is not supported by diskferry {} yet",
            env!("CARGO_PKG_VERSION")
        );
        return 1;
    }
    // clap's usage lines name the program; keep them "diskferry" whatever the link is called.
    if let Some(first) = argv.first_mut() {
        *first = "diskferry".into();
    }
    let parsed = Cli::command()
        .after_help(after_help())
        .mut_subcommand("migrate", |c| c.after_help(targets_help()))
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // No command at all: the whole help, which is what a person typing the bare name
            // wants to see.
            let _ = e.print();
            return usage_error_code;
        }
        Err(e) if e.use_stderr() => {
            eprintln!("{program}: {}", one_line(&e, argv.get(1)));
            return usage_error_code;
        }
        Err(e) => {
            let _ = e.print();
            return 0;
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
        Command::Snapshot(a) => edit::snapshot(a),
        Command::Resize(a) => edit::resize(a),
        Command::Amend(a) => edit::amend(a),
        Command::Bitmap(a) => {
            // The derive API loses the order of different flags; the matches keep it.
            let order = matches
                .subcommand_matches("bitmap")
                .map(args::bitmap_ops_in_order)
                .unwrap_or_default();
            edit::bitmap(a, order)
        }
        Command::Commit(a) => ops::commit(a),
        Command::Rebase(a) => ops::rebase(a),
        Command::Measure(a) => ops::measure(a),
        Command::Dd(a) => ops::dd(a),
        Command::Migrate(a) => commands::migrate(a),
        Command::Completions(a) => {
            let mut cmd = Cli::command();
            clap_complete::generate(a.shell, &mut cmd, "diskferry", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man(a) => write_man_pages(&a.dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{program}: {}", diskferry::info::printable(&e.to_string()));
            error_code
        }
    }
}

/// `diskferry.1` and `diskferry-COMMAND.1` for each command, from the command-line definition
/// (so they never disagree with `--help`).
fn write_man_pages(dir: &std::path::Path) -> Outcome {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", e).with_path(dir))?;
    let cmd = Cli::command().after_help(after_help());
    let mut pages = vec![("diskferry".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("diskferry-{}", sub.get_name());
        let bin = format!("diskferry {}", sub.get_name());
        pages.push((name.clone(), sub.clone().display_name(name).bin_name(bin)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut bytes)
            .map_err(|e| Error::io("cannot render the manual page", e).with_path(&path))?;
        std::fs::write(&path, bytes).map_err(|e| Error::io("cannot write", e).with_path(&path))?;
    }
    Ok(0)
}

/// qemu-img's commands diskferry does not have yet: named as such, rather than answered with
/// clap's "did you mean" suggestion of another command.
const NOT_YET: &[&str] = &["bench"];

/// A clap error as one line, like every other error: its message, then where to read more.
fn one_line(e: &clap::Error, command: Option<&std::ffi::OsString>) -> String {
    let text = e.to_string();
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let first = lines.next().unwrap_or("invalid arguments").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // Some messages name their subject on the indented lines below the heading ("the
    // following required arguments were not provided:" then "  <IMAGE>"): without them the
    // line does not say what is missing.
    let listed: Vec<&str> = lines
        .take_while(|l| l.starts_with([' ', '\t']) && !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = if listed.is_empty() {
        first.to_string()
    } else {
        format!("{first} {}", listed.join(" "))
    };
    let help = match command.and_then(|c| c.to_str()) {
        Some(c) if !c.starts_with('-') && Cli::command().find_subcommand(c).is_some() => {
            format!("diskferry {c} --help")
        }
        _ => "diskferry --help".to_string(),
    };
    format!("{} (see '{help}')", diskferry::info::printable(&message))
}

/// Every `--to` name, from the migrate targets and the configuration registry.
fn targets_help() -> String {
    let mut text = String::from("Targets (--to):\n");
    text.push_str(
        "  vsphere, esxi, workstation: an OVA in VMware's dialect (stream-optimized VMDK)\n",
    );
    text.push_str("  virtualbox: an OVA VirtualBox imports\n");
    text.push_str("  xenserver, xcp-ng: an XVA (an OVA for XenCenter when DEST ends in .ova)\n");
    text.push_str("  ovf: a folder with the OVF, its manifest and VMDK disks\n");
    text.push_str("  disks: a folder of the disks alone, in the -O format\n");
    for c in diskferry::vmconfig::CONFIGS {
        for (name, what) in c.targets() {
            text.push_str(&format!("  {name}: {what}\n"));
        }
    }
    text
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
