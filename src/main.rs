//! The `turnout` binary: parses the command line, sets up logging, calls the library.

#![forbid(unsafe_code)]

/// jemalloc, returning freed memory to the system on its own (see [`return_freed_memory`]).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long freed pages stay cached before jemalloc gives them back to the system.
const DIRTY_DECAY_MS: isize = 1000;

/// Makes memory freed after a burst go back to the system within about a second, even when
/// the proxy then sits idle: jemalloc's background threads purge freed pages on a timer
/// (without them, purging only happens inside later allocations, which an idle sidecar never
/// makes). Measured with `scripts/bench-memory.sh` (10,000 idle connections, 1 MiB values on
/// 100 of them): RSS back within 1.0–2.3 MiB of its pre-burst level, where mimalloc (the
/// previous allocator) kept about 150 MiB. Failure only costs that, so it is logged, not fatal.
fn return_freed_memory() {
    if let Err(e) = purge_promptly() {
        tracing::warn!(cause = %e, "cannot make the allocator return freed memory promptly");
    }
}

/// Turns on jemalloc's background threads and the short decay, for arenas made from now on
/// and for those that exist already: at start-up arena 0, the main thread's, which serves
/// every client when the runtime has one thread (the current-thread scheduler). Every
/// setting is tried; the first failure is returned. `arena.<i>` of an index no arena uses
/// yet fails, which is expected past arena 0. This setting takes no "all arenas" index: the
/// 4096 written here before failed in release builds (a warning at every start) and left
/// arena 0 at jemalloc's 10 s default, unnoticed while the sessions ran on a worker thread,
/// whose arena was made after `arenas.dirty_decay_ms` was set.
fn purge_promptly() -> tikv_jemalloc_ctl::Result<()> {
    use tikv_jemalloc_ctl::{Access, AsName};
    let mut result = tikv_jemalloc_ctl::background_thread::write(true)
        .and(b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS));
    for i in 0..tikv_jemalloc_ctl::arenas::narenas::read().unwrap_or(1) {
        let written = format!("arena.{i}.dirty_decay_ms\0")
            .as_bytes()
            .name()
            .write(DIRTY_DECAY_MS);
        if i == 0 {
            result = result.and(written);
        }
    }
    result
}

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use turnout::config::Config;
use turnout::ctl::{CtlArgs, CtlCommand};

/// A RESP-aware sidecar proxy for zero-downtime Redis endpoint cutover.
#[derive(Parser)]
#[command(name = "turnout", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy and its admin API until SIGTERM or SIGINT.
    Run {
        /// The config file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file, print every problem, and exit non-zero if there are any.
    Check {
        /// The config file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Talk to a running turnout's admin API.
    Ctl {
        #[command(flatten)]
        args: CtlArgs,
        // Boxed: ctl's arguments would make every `Command` as large as they are.
        #[command(subcommand)]
        command: Box<CtlCommand>,
    },
    /// Start two local redis-server processes (legacy, and new as its replica) and the proxy.
    Demo {
        /// The demo config file.
        #[arg(short, long, value_name = "FILE", default_value = "config/demo.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => exit(run(&config)),
        Command::Ctl { args, command } => {
            exit(runtime(None).and_then(|rt| rt.block_on(turnout::ctl::run(args, *command))))
        }
        Command::Demo { config } => {
            // Sized like `run`; a config that does not load is reported by the demo itself.
            let threads = Config::load(&config).ok().map(|c| c.proxy.worker_threads);
            exit(runtime(threads).and_then(|rt| rt.block_on(turnout::demo::run(&config))))
        }
    }
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The async runtime: `worker_threads` threads, or tokio's default (one per CPU).
///
/// One thread means tokio's current-thread scheduler, not a multi-thread one with one
/// worker. The multi-thread scheduler keeps at most 256 woken tasks in a worker's own queue
/// and moves the overflow to a shared queue that it looks at only now and then (tokio
/// 1.54's source), so when one shared upstream connection answers a thousand sessions at
/// once, those moved there can wait behind sessions woken later. That fits what was
/// measured on 2 vCPUs (`redis-benchmark -c 1000 -P 1 -t get`, Redis and turnout pinned to
/// one core, the load generator to the other, 3 rounds): p99 latency 55–89 ms with the
/// one-worker multi-thread scheduler, 14–17 ms with this one (direct Redis 12–20,
/// twemproxy 20–22). W1 and W3 SET also gained throughput and spent less CPU per request,
/// W2 stayed level. The current-thread scheduler's one queue is first in, first out, and
/// waking a task is no cross-thread hand-off. See docs/benchmarks.md.
fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = worker_threads {
                builder.worker_threads(n);
            }
            builder
        }
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// 0 on success; on an error, its message on stderr and exit status 1, or the status a
/// [`turnout::ctl::Failure`] asks for.
fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnout: {e:#}");
            match e.downcast_ref::<turnout::ctl::Failure>() {
                Some(failure) => ExitCode::from(failure.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "config OK: {} endpoints, {} namespaces, proxy on {}, admin on {}",
                config.endpoints.len(),
                config.namespaces.len(),
                config.proxy.listen,
                config.admin.listen
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let lines = e.lines();
            eprintln!("{}: {} problem(s):", path.display(), lines.len());
            for line in lines {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config =
        Config::load(path).with_context(|| format!("invalid config {}", path.display()))?;
    return_freed_memory();
    runtime(Some(config.proxy.worker_threads))?
        .block_on(turnout::server::run_until_signalled(config))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{purge_promptly, runtime, DIRTY_DECAY_MS};
    use tikv_jemalloc_ctl::{Access, AsName};
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn every_arena_in_use_returns_freed_memory_within_the_short_decay() {
        purge_promptly().expect("jemalloc accepts the settings");
        let narenas = tikv_jemalloc_ctl::arenas::narenas::read().expect("narenas");
        // Arena 0 (the main thread's) and this test thread's arena were made before the
        // settings; an index not in use cannot be read and is skipped.
        let in_use: Vec<(u32, isize)> = (0..narenas)
            .filter_map(|i| {
                let name = format!("arena.{i}.dirty_decay_ms\0");
                name.as_bytes().name().read().ok().map(|ms| (i, ms))
            })
            .collect();
        assert!(in_use.iter().any(|&(i, _)| i == 0), "{in_use:?}");
        assert!(
            in_use.iter().all(|&(_, ms)| ms == DIRTY_DECAY_MS),
            "{in_use:?}"
        );
        let later: isize = b"arenas.dirty_decay_ms\0"
            .name()
            .read()
            .expect("new arenas");
        assert_eq!(later, DIRTY_DECAY_MS);
    }

    #[test]
    fn one_worker_thread_runs_the_current_thread_scheduler() {
        let flavor = |threads| runtime(threads).expect("runtime").handle().runtime_flavor();
        assert_eq!(flavor(Some(1)), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(Some(2)), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(None), RuntimeFlavor::MultiThread);
    }
}
