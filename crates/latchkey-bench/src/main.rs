//! latchkey-bench: a rerunnable benchmark of the session hot path (docs/benchmarks.md).
//!
//! One process holds three things on loopback: the real latchkey server (production router,
//! production settings but for a cheap SCRAM verifier) on a fresh database, a hello-world axum
//! server, and the load generator. The two servers share one multi-threaded tokio runtime built
//! as `latchkey serve` builds its own; the load generator runs on a second runtime of its own
//! threads, so server and client compete for the same cores as they would with an external
//! generator on the same machine.
//!
//! Sequence: start both servers; seed N sessions straight into the store (not cached); log in once
//! with SCRAM over HTTP for a JWT; send one keepalive per sampled token so each is loaded into the
//! hot-path cache as in production; then measure `hello`, `keepalive` and `validate-jwt` one
//! after another, each with a warm-up.

mod cpu;
mod load;
mod setup;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION};
use hyper::Uri;
use serde_json::json;

use load::{Expect, Measured, Plan, Swept};

#[derive(Parser, Debug)]
#[command(
    name = "latchkey-bench",
    about = "Benchmark of latchkey's session hot path against a hello-world axum handler"
)]
struct Cli {
    /// Sessions stored before measuring.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Stored sessions whose tokens drive the load (each is loaded into the cache by one
    /// keepalive before measuring); at most --sessions.
    #[arg(long, default_value_t = 10_000)]
    sample: usize,
    /// Keep-alive HTTP/1.1 connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds per target.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Unmeasured warm-up seconds per target.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Rounds of the whole sequence of targets; each target's median round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Targets to measure, in order: hello, healthz (latchkey's router and middleware with a
    /// trivial handler: a diagnostic baseline), keepalive, validate-jwt.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hello,healthz,keepalive,validate-jwt"
    )]
    targets: Vec<Target>,
    /// PostgreSQL URL of an empty database (default: a fresh SQLite file in a temp folder).
    #[arg(long)]
    database: Option<String>,
    /// Inserts in flight while seeding.
    #[arg(long, default_value_t = 4)]
    seed_concurrency: usize,
    /// Worker threads of the servers' runtime (default: tokio's default, one per core, as
    /// `latchkey serve`).
    #[arg(long)]
    server_threads: Option<usize>,
    /// Worker threads of the load generator's runtime (default: one per core).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Before each measurement, wait up to this many seconds for the rest of the machine to be
    /// quiet (under 0.15 cores busy elsewhere over one second), and measure a round again (up to
    /// 3 times) when other processes were busy during it; 0: do neither.
    #[arg(long, default_value_t = 0)]
    wait_quiet: u64,
    /// Print one JSON object with every number instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Hello,
    Healthz,
    Keepalive,
    ValidateJwt,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hello" => Ok(Target::Hello),
            "healthz" => Ok(Target::Healthz),
            "keepalive" => Ok(Target::Keepalive),
            "validate-jwt" => Ok(Target::ValidateJwt),
            other => Err(format!(
                "unknown target {other:?} (hello, healthz, keepalive, validate-jwt)"
            )),
        }
    }
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kib = line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Bytes of growth per item, `None` without items.
fn per_item(after: u64, before: u64, items: usize) -> Option<f64> {
    (items > 0).then(|| (after as f64 - before as f64) / items as f64)
}

struct Memory {
    idle: u64,
    after_seed: u64,
    before_prime: u64,
    after_prime: u64,
    end: u64,
    cached_before_prime: usize,
    cached_after_prime: usize,
    cached_end: usize,
}

struct Report {
    cores: usize,
    server_threads: usize,
    client_threads: usize,
    database: String,
    seeded: usize,
    seed_seconds: f64,
    sample: usize,
    prime: Swept,
    prime_settle: f64,
    memory: Memory,
    results: Vec<TargetResult>,
}

/// One target over all rounds.
struct TargetResult {
    name: &'static str,
    rounds: Vec<Round>,
}

/// One measured run of a target and the cores each thread group kept busy meanwhile.
struct Round {
    measured: Measured,
    cpu: BTreeMap<&'static str, f64>,
    /// Seconds waited before this round for the store's background writes to finish.
    settled_after: f64,
}

impl Round {
    /// CPU time of the server side (the servers' runtime and SQLite's threads) per response, in
    /// microseconds: the cost of a request independent of how fast the load generator is.
    fn server_us_per_request(&self) -> f64 {
        let cores = self.cpu.get("server").copied().unwrap_or(0.0)
            + self.cpu.get("sqlite").copied().unwrap_or(0.0);
        if self.measured.rps > 0.0 {
            cores / self.measured.rps * 1e6
        } else {
            0.0
        }
    }
}

impl TargetResult {
    /// The round with the median rate (the lower middle one for an even count).
    fn median(&self) -> Option<&Round> {
        let mut order: Vec<&Round> = self.rounds.iter().collect();
        order.sort_by(|a, b| a.measured.rps.total_cmp(&b.measured.rps));
        order.get(order.len().saturating_sub(1) / 2).copied()
    }

    fn errors(&self) -> u64 {
        self.rounds.iter().map(|r| r.measured.errors).sum()
    }

    fn first_error(&self) -> Option<&str> {
        self.rounds
            .iter()
            .find_map(|r| r.measured.first_error.as_deref())
    }

    fn rps_range(&self) -> (f64, f64) {
        self.rounds.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), r| {
            (lo.min(r.measured.rps), hi.max(r.measured.rps))
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(&cli) {
        Ok(report) => {
            if cli.json {
                println!("{}", to_json(&cli, &report));
            } else {
                print_table(&cli, &report);
            }
            let failed: u64 =
                report.results.iter().map(|r| r.errors()).sum::<u64>() + report.prime.errors;
            if failed > 0 {
                eprintln!();
                eprintln!("!!! latchkey-bench: {failed} REQUESTS FAILED: the numbers above do not measure the hot path !!!");
                for r in report.results.iter().filter(|r| r.errors() > 0) {
                    eprintln!(
                        "!!!   {}: {} errors, first: {}",
                        r.name,
                        r.errors(),
                        r.first_error().unwrap_or("?")
                    );
                }
                if report.prime.errors > 0 {
                    eprintln!(
                        "!!!   priming: {} errors, first: {}",
                        report.prime.errors,
                        report.prime.first_error.as_deref().unwrap_or("?")
                    );
                }
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("latchkey-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<Report> {
    if cli.seconds == 0 || cli.connections == 0 || cli.rounds == 0 {
        bail!("--seconds, --connections and --rounds must be at least 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server_threads = cli.server_threads.unwrap_or(cores).max(1);
    let client_threads = cli.client_threads.unwrap_or(cores).max(1);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .thread_name("server")
        .enable_all()
        .build()
        .context("building the servers' runtime")?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .thread_name("load")
        .enable_all()
        .build()
        .context("building the load generator's runtime")?;
    let say = |text: String| {
        if !cli.json {
            eprintln!("{text}");
        }
    };
    let progress = true;

    let servers = server_rt.block_on(setup::start(cli.database.as_deref(), setup::settings()))?;
    say(format!(
        "latchkey on {}, hello on {}, database {}",
        servers.latchkey_addr, servers.hello_addr, servers.database
    ));
    let idle = rss_bytes();

    let sample = cli.sample.min(cli.sessions);
    say(format!(
        "seeding {} sessions ({} in flight), keeping {} tokens to drive the load...",
        cli.sessions, cli.seed_concurrency, sample
    ));
    let seeded = server_rt.block_on(setup::seed(
        &servers,
        cli.sessions,
        sample,
        cli.seed_concurrency,
        progress,
    ))?;
    say(format!(
        "  seeded in {:.1} s ({:.0}/s)",
        seeded.seconds,
        cli.sessions as f64 / seeded.seconds.max(1e-9)
    ));
    let after_seed = rss_bytes();
    if seeded.tokens.is_empty() {
        bail!("no session to drive the load with: --sessions and --sample must be at least 1");
    }

    let (jwt, jwt_session) = client_rt.block_on(setup::scram_login(servers.latchkey_addr))?;
    say(format!("  SCRAM login: JWT for session {jwt_session}"));

    let hello = Plan {
        name: "hello",
        addr: servers.hello_addr,
        uris: Arc::from(vec![Uri::from_static("/")]),
        header: None,
        expect: Expect::OkContaining(setup::HELLO.as_bytes()),
    };
    let healthz = Plan {
        name: "healthz",
        addr: servers.latchkey_addr,
        uris: Arc::from(vec![Uri::from_static("/healthz")]),
        header: None,
        expect: Expect::OkContaining(b"ok"),
    };
    let token_values = seeded
        .tokens
        .iter()
        .map(|t| HeaderValue::from_str(t))
        .collect::<Result<Vec<_>, _>>()?;
    let keepalive = Plan {
        name: "keepalive",
        addr: servers.latchkey_addr,
        uris: Arc::from(vec![Uri::from_static("/session/keepalive")]),
        header: Some((
            HeaderName::from_static("x-auth-token"),
            Arc::from(token_values),
        )),
        expect: Expect::Ok,
    };
    let validate_uris = seeded
        .ids
        .iter()
        .map(|id| Uri::try_from(format!("/sessions/validate/{id}")))
        .collect::<Result<Vec<_>, _>>()?;
    let validate = Plan {
        name: "validate-jwt",
        addr: servers.latchkey_addr,
        uris: Arc::from(validate_uris),
        header: Some((
            AUTHORIZATION,
            Arc::from(vec![HeaderValue::from_str(&format!("Bearer {jwt}"))?]),
        )),
        expect: Expect::OkContaining(br#""valid":true"#),
    };
    drop(seeded.tokens);

    // Warm-up of the cache: the first keepalive of each sampled token loads it from the store.
    let cached_before_prime = servers.core.cached_sessions();
    let before_prime = rss_bytes();
    say(format!(
        "priming: one keepalive per sampled token ({sample}) to load it into the cache..."
    ));
    let prime = client_rt.block_on(load::sweep(&keepalive, cli.connections, progress))?;
    // Let the coalesced "last active" writes of the priming pass reach the store first.
    let prime_settle = settle(SETTLE_LIMIT);
    let after_prime = rss_bytes();
    let cached_after_prime = servers.core.cached_sessions();
    say(format!(
        "  primed in {:.1} s ({:.0}/s, each a cache miss read from the store), {} errors; {} sessions cached; then {:.0} s until the store's background writes were done",
        prime.seconds,
        prime.requests as f64 / prime.seconds.max(1e-9),
        prime.errors,
        cached_after_prime,
        prime_settle
    ));

    let warmup = Duration::from_secs(cli.warmup);
    let measure = Duration::from_secs(cli.seconds);
    let mut results: Vec<TargetResult> = Vec::new();
    for round in 1..=cli.rounds {
        for target in &cli.targets {
            let plan = match target {
                Target::Hello => &hello,
                Target::Healthz => &healthz,
                Target::Keepalive => &keepalive,
                Target::ValidateJwt => &validate,
            };
            say(format!(
                "round {round}/{}: {} ({} connections, {} s warm-up + {} s)...",
                cli.rounds, plan.name, cli.connections, cli.warmup, cli.seconds
            ));
            // With --wait-quiet, a round disturbed by other processes is measured again (up to
            // DISTURBED_RETRIES times); the last attempt is kept whatever it was.
            let retries = if cli.wait_quiet > 0 {
                DISTURBED_RETRIES
            } else {
                0
            };
            let mut attempt = 0;
            let settled_after = settle(SETTLE_LIMIT);
            if settled_after > 2.0 {
                say(format!(
                    "  waited {settled_after:.0} s for the store's background writes (coalesced activity of the previous target) to finish"
                ));
            }
            let (measured, cpu) = loop {
                if cli.wait_quiet > 0 {
                    wait_quiet(Duration::from_secs(cli.wait_quiet), &say);
                }
                let before = cpu::sample();
                let measured =
                    client_rt.block_on(load::measure(plan, cli.connections, warmup, measure))?;
                let cpu = cpu::busy(&before, &cpu::sample());
                say(format!(
                    "  {:.0} req/s, p50 {} µs, p99 {} µs, {} errors; cores busy: {}",
                    measured.rps,
                    measured.p50_us,
                    measured.p99_us,
                    measured.errors,
                    cpu_text(&cpu)
                ));
                let elsewhere = cpu.get("elsewhere").copied().unwrap_or(0.0);
                if elsewhere <= NOISY_CORES {
                    break (measured, cpu);
                }
                eprintln!(
                    "  WARNING: {elsewhere:.2} cores were busy outside this benchmark during {}: this round is disturbed",
                    plan.name
                );
                if attempt >= retries {
                    break (measured, cpu);
                }
                attempt += 1;
                say(format!("  measuring {} again", plan.name));
            };
            let round = Round {
                measured,
                cpu,
                settled_after,
            };
            match results.iter_mut().find(|r| r.name == plan.name) {
                Some(result) => result.rounds.push(round),
                None => results.push(TargetResult {
                    name: plan.name,
                    rounds: vec![round],
                }),
            }
        }
    }
    let end = rss_bytes();
    let cached_end = servers.core.cached_sessions();

    server_rt.block_on(servers.stop())?;
    client_rt.shutdown_timeout(Duration::from_secs(1));
    server_rt.shutdown_timeout(Duration::from_secs(1));

    Ok(Report {
        cores,
        server_threads,
        client_threads,
        database: if cli.database.is_some() {
            "postgresql".into()
        } else {
            "sqlite".into()
        },
        seeded: cli.sessions,
        seed_seconds: seeded.seconds,
        sample,
        prime,
        prime_settle,
        memory: Memory {
            idle,
            after_seed,
            before_prime,
            after_prime,
            end,
            cached_before_prime,
            cached_after_prime,
            cached_end,
        },
        results,
    })
}

/// Cores busy outside the benchmark above which a round is reported as disturbed.
const NOISY_CORES: f64 = 0.25;
/// How long to wait at most for SQLite's background writes to finish before a measurement.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);
/// How many times a disturbed round is measured again (with --wait-quiet).
const DISTURBED_RETRIES: u32 = 3;

/// Waits (at most `limit`) until SQLite's threads have been idle for a second: the coalesced
/// "last active" writes of the previous target (or of priming) are flushed in the background and
/// would otherwise be charged to the next target. Answers the seconds waited.
fn settle(limit: Duration) -> f64 {
    let start = std::time::Instant::now();
    loop {
        let before = cpu::sample();
        std::thread::sleep(Duration::from_secs(1));
        let busy = cpu::busy(&before, &cpu::sample());
        if busy.get("sqlite").copied().unwrap_or(0.0) < 0.05 || start.elapsed() >= limit {
            return start.elapsed().as_secs_f64();
        }
    }
}

/// Waits (at most `limit`) until the machine outside this process has been quiet for a second.
fn wait_quiet(limit: Duration, say: &dyn Fn(String)) {
    let start = std::time::Instant::now();
    let mut told = false;
    loop {
        let before = cpu::sample();
        std::thread::sleep(Duration::from_secs(1));
        let busy = cpu::busy(&before, &cpu::sample());
        let elsewhere = busy.get("elsewhere").copied().unwrap_or(0.0);
        if elsewhere < 0.15 {
            return;
        }
        if start.elapsed() >= limit {
            say(format!(
                "  the machine is still busy elsewhere ({elsewhere:.2} cores) after {} s: measuring anyway",
                limit.as_secs()
            ));
            return;
        }
        if !told {
            say(format!(
                "  waiting for the machine to be quiet ({elsewhere:.2} cores busy elsewhere)..."
            ));
            told = true;
        }
    }
}

fn cpu_text(cpu: &BTreeMap<&'static str, f64>) -> String {
    cpu::GROUPS
        .iter()
        .map(|g| format!("{g} {:.2}", cpu.get(g).copied().unwrap_or(0.0)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn hello_rps(report: &Report) -> Option<f64> {
    report
        .results
        .iter()
        .find(|r| r.name == "hello")
        .and_then(TargetResult::median)
        .map(|r| r.measured.rps)
        .filter(|rps| *rps > 0.0)
}

fn print_table(cli: &Cli, report: &Report) {
    let m = &report.memory;
    println!();
    println!(
        "latchkey-bench: {} cores, server runtime {} threads, load generator {} threads (same cores), {} connections, {} s per target after {} s warm-up, median of {} rounds",
        report.cores, report.server_threads, report.client_threads, cli.connections, cli.seconds, cli.warmup, cli.rounds
    );
    println!(
        "store: {}, {} sessions seeded in {:.1} s; {} sampled tokens drive the load; cache primed in {:.1} s ({:.0} cold keepalives/s)",
        report.database,
        report.seeded,
        report.seed_seconds,
        report.sample,
        report.prime.seconds,
        report.prime.requests as f64 / report.prime.seconds.max(1e-9)
    );
    println!();
    println!(
        "{:<13} {:>10} {:>17} {:>7} {:>7} {:>8} {:>7}  {:<14} {:>12}  cores busy (median round)",
        "target",
        "req/s",
        "(min-max)",
        "p50 µs",
        "p99 µs",
        "max µs",
        "errors",
        "vs hello",
        "server µs/req"
    );
    let hello = hello_rps(report);
    for r in &report.results {
        let Some(median) = r.median() else { continue };
        let ratio = hello.map_or_else(
            || "-".to_owned(),
            |h| format!("{:.0}% of hello", 100.0 * median.measured.rps / h),
        );
        let (lo, hi) = r.rps_range();
        println!(
            "{:<13} {:>10.0} {:>17} {:>7} {:>7} {:>8} {:>7}  {:<14} {:>12.1}  {}",
            r.name,
            median.measured.rps,
            format!("({lo:.0}-{hi:.0})"),
            median.measured.p50_us,
            median.measured.p99_us,
            median.measured.max_us,
            r.errors(),
            ratio,
            median.server_us_per_request(),
            cpu_text(&median.cpu)
        );
    }
    let disturbed = report.results.iter().any(|r| {
        r.median()
            .and_then(|m| m.cpu.get("elsewhere").copied())
            .is_some_and(|e| e > NOISY_CORES)
    });
    if disturbed {
        println!(
            "WARNING: other processes were busy during some median rounds (cores busy elsewhere > {NOISY_CORES}): rerun on a quiet machine"
        );
    }
    println!();
    println!(
        "RSS: idle (servers up, nothing seeded) {:.1} MiB; after seeding {:.1} MiB; after priming the cache {:.1} MiB; at the end {:.1} MiB",
        mib(m.idle),
        mib(m.after_seed),
        mib(m.after_prime),
        mib(m.end)
    );
    if let Some(b) = per_item(m.after_prime, m.idle, m.cached_after_prime) {
        println!(
            "  (after priming - idle) / {} cached sessions = {:.0} bytes per cached session (includes the store client's memory{} and the bench's own copy of the sample)",
            m.cached_after_prime,
            b,
            if report.database == "sqlite" { ", SQLite's page cache" } else { "" }
        );
    }
    let loaded = m.cached_after_prime.saturating_sub(m.cached_before_prime);
    if let Some(b) = per_item(m.after_prime, m.before_prime, loaded) {
        println!(
            "  growth while priming / {loaded} sessions loaded = {b:.0} bytes per cached session (cache maps and entries, dirty set{})",
            if report.database == "sqlite" { ", SQLite page cache growth" } else { "" }
        );
    }
}

fn to_json(cli: &Cli, report: &Report) -> serde_json::Value {
    let m = &report.memory;
    let hello = hello_rps(report);
    let measured_json = |r: &Round| {
        json!({
            "requests": r.measured.requests,
            "seconds": r.measured.seconds,
            "requests_per_second": r.measured.rps,
            "p50_us": r.measured.p50_us,
            "p99_us": r.measured.p99_us,
            "max_us": r.measured.max_us,
            "errors": r.measured.errors,
            "first_error": r.measured.first_error,
            "cores_busy": r.cpu,
            "server_cpu_us_per_request": r.server_us_per_request(),
            "settle_seconds_before": r.settled_after,
        })
    };
    let targets: Vec<_> = report
        .results
        .iter()
        .map(|r| {
            let median = r.median();
            json!({
                "target": r.name,
                "requests_per_second": median.map(|m| m.measured.rps),
                "p50_us": median.map(|m| m.measured.p50_us),
                "p99_us": median.map(|m| m.measured.p99_us),
                "errors": r.errors(),
                "ratio_to_hello": median.and_then(|m| hello.map(|h| m.measured.rps / h)),
                "server_cpu_us_per_request": median.map(Round::server_us_per_request),
                "rounds": r.rounds.iter().map(measured_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let loaded = m.cached_after_prime.saturating_sub(m.cached_before_prime);
    json!({
        "cores": report.cores,
        "server_threads": report.server_threads,
        "client_threads": report.client_threads,
        "connections": cli.connections,
        "seconds": cli.seconds,
        "warmup_seconds": cli.warmup,
        "rounds": cli.rounds,
        "database": report.database,
        "sessions": report.seeded,
        "seed_seconds": report.seed_seconds,
        "sample": report.sample,
        "prime": {
            "requests": report.prime.requests,
            "errors": report.prime.errors,
            "seconds": report.prime.seconds,
            "first_error": report.prime.first_error,
            "settle_seconds_after": report.prime_settle,
        },
        "memory": {
            "rss_idle_bytes": m.idle,
            "rss_after_seed_bytes": m.after_seed,
            "rss_before_prime_bytes": m.before_prime,
            "rss_after_prime_bytes": m.after_prime,
            "rss_end_bytes": m.end,
            "cached_before_prime": m.cached_before_prime,
            "cached_after_prime": m.cached_after_prime,
            "cached_end": m.cached_end,
            "bytes_per_cached_session": per_item(m.after_prime, m.idle, m.cached_after_prime),
            "bytes_per_cached_session_priming_growth": per_item(m.after_prime, m.before_prime, loaded),
        },
        "targets": targets,
    })
}
