//! The `robustness` command-line tool: parses arguments, calls the library, prints results.

/// `println!` that ends the process quietly when stdout is closed (e.g. piped into `head`)
/// instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if writeln!(out, $($arg)*).and_then(|_| out.flush()).is_err() {
            std::process::exit(0);
        }
    }};
}

mod cli;
mod commands;
mod config_file;
mod progress;

use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the training and attack steps allocate the same large
/// activation buffers every step, and glibc maps and unmaps them each time (page faults and
/// TLB shootdowns were ~19% of the small CNN's train step; BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_e` (mimalloc v3's
/// `include/mimalloc.h`, as built by libmimalloc-sys 0.1.49, which names only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped for reuse (mimalloc returns it to the OS 10 ms after a free by
/// default, so each step faulted its buffers in again). Only memory that was live at some
/// point stays mapped, but freed blocks are not coalesced back for other sizes, so the
/// resident set is higher (small CNN train, batch 128: 142 -> 244 MiB; BENCHMARKS.md).
fn keep_freed_memory() {
    // SAFETY: sets one integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    keep_freed_memory();
    // `--config FILE`: the file's options join the command line before clap parses it.
    let root = cli::Cli::command();
    let (args, from_file) = match config_file::expand(&root, std::env::args_os().collect()) {
        Ok(expanded) => expanded,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let parsed = root
        .clone()
        .try_get_matches_from(args)
        .and_then(|matches| Ok((cli::Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // clap formats help/version (exit 0) and usage errors (exit 2) itself.
            let _ = e.print();
            if let Some(file) = from_file.filter(|_| e.use_stderr()) {
                eprintln!(
                    "note: options read from {}: {}",
                    file.path,
                    file.tokens.join(" ")
                );
            }
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let options = config_file::explicit_options(&root, &matches);
    match commands::run(cli, &options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
