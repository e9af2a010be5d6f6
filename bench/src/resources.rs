//! Memory, table load time and idle CPU of Envoy with keygate (`--concurrency 2`).
//!
//! For 0, 10k and 1M keys: start Envoy on a feed holding that table, time
//! until a request with the key passes (first pass, and passes on eight fresh
//! connections in a row so every worker has it), read the filter's gauges,
//! RSS once settled (after the filter let the snapshot pages go from shared
//! data) and the peak RSS while loading, then the CPU Envoy burns over an
//! idle window with an unchanged table (the fetch loop long-polls; workers
//! check for new versions).
//! An Envoy without any filter gives the baseline for memory and idle CPU;
//! 0 and 1M keys again with one and four workers split the 1M-key cost into
//! what each worker adds (the slope from one to four) and what the process
//! holds once. Envoy's heap (admin
//! `/memory`) splits RSS into Envoy's side (shared data, buffers) and the rest
//! (mostly wasm VM memory). Every Envoy here may use every CPU.
//!
//! When the dynamic module is built, the same for keygate native with 0 and
//! 1M keys at `--concurrency 2` and 4: its one table per process should cost
//! the same at both.

use crate::envoy::{self, Envoy, Filter};
use crate::feed_server::FeedServer;
use crate::stats::{self, mib};
use crate::throughput::verdict;
use crate::{keys, Bench, FEED_TOKEN, KEYS_10K, KEYS_1M};
use std::io;
use std::thread;
use std::time::{Duration, Instant};

/// Fresh connections in a row that must pass before every worker counts as loaded.
const ALL_WORKERS_STREAK: usize = 8;
/// From every worker passing to reading RSS: the filter keeps snapshot pages
/// in shared data for 2 s after publication, then lets them go.
const SETTLE: Duration = Duration::from_secs(4);
/// The memory target: 100 MB (decimal) per Envoy for a 1M-key table.
const TARGET_BYTES: u64 = 100_000_000;
/// The wasm adapter's: 40 MiB per worker (each worker's VM holds a table).
const WASM_WORKER_TARGET_BYTES: u64 = 40 * 1024 * 1024;
/// The native adapter's: 45 MiB per Envoy for a 1M-key table, at 2 and 4 workers.
const NATIVE_TARGET_BYTES: u64 = 45 * 1024 * 1024;
/// The native adapter's load time target (spawn to every worker passing).
const NATIVE_LOAD_TARGET: Duration = Duration::from_secs(1);

/// One row: which adapter, how many keys, how many workers.
struct Case {
    label: &'static str,
    total: usize,
    concurrency: u32,
    native: bool,
}

const fn case(label: &'static str, total: usize, concurrency: u32, native: bool) -> Case {
    Case {
        label,
        total,
        concurrency,
        native,
    }
}

struct Loaded {
    rss: u64,
    /// Peak RSS (`VmHWM`), reached while loading.
    peak: u64,
    /// The filter's table gauges and the feed's idle polls, on one line.
    gauges: String,
    idle_cpu: f64,
    first_pass: Option<Duration>,
    all_workers: Option<Duration>,
    after_feed: Option<Duration>,
}

/// Runs the resources phase; returns the target lines.
pub fn run(bench: &Bench) -> io::Result<Vec<String>> {
    let idle = bench.options.idle_window;
    println!("## Memory, load time and idle CPU (Envoy --concurrency 2)");
    let native_1m = native_decode_time(bench);
    println!(
        "(reference: decoding the 1M-key snapshot natively, outside wasm, takes {})",
        stats::show(native_1m)
    );
    println!(
        "\n{:<22} {:>10} {:>12} {:>10} {:>12} {:>14} {:>12} {:>10}",
        "Envoy",
        "RSS",
        "RSS - 0 keys",
        "peak RSS",
        "first pass",
        "all workers",
        "after feed",
        "idle CPU"
    );

    let baseline = {
        let e = Envoy::start(&bench.launch(2), "resources-none", &Filter::None)?;
        thread::sleep(Duration::from_millis(500));
        let rss = stats::memory(e.pid(), "VmRSS")?;
        let (cpu, ()) = stats::cpu_percent_during(e.pid(), || thread::sleep(idle))?;
        println!(
            "{:<22} {:>10} {:>12} {:>10} {:>12} {:>14} {:>12} {:>9.2}%",
            "no filter",
            mib(rss),
            "",
            "",
            "",
            "",
            "",
            cpu
        );
        (rss, cpu)
    };

    let mut rows: Vec<(Case, Loaded)> = Vec::new();
    let mut cases = vec![
        case("keygate 0 keys", 0, 2, false),
        case("keygate 10k keys", KEYS_10K, 2, false),
        case("keygate 1M keys", KEYS_1M, 2, false),
        case("  same, 1 worker: 0", 0, 1, false),
        case("  same, 1 worker: 1M", KEYS_1M, 1, false),
        case("  same, 4 workers: 0", 0, 4, false),
        case("  same, 4 workers: 1M", KEYS_1M, 4, false),
    ];
    if bench.native() {
        cases.extend([
            case("native 0 keys", 0, 2, true),
            case("native 1M keys", KEYS_1M, 2, true),
            case("  same, 4 workers: 0", 0, 4, true),
            case("  same, 4 workers: 1M", KEYS_1M, 4, true),
        ]);
    }
    for c in cases {
        let (label, total, concurrency) = (c.label, c.total, c.concurrency);
        let real = if total == 0 {
            &[][..]
        } else {
            bench.keys.get(..1).unwrap_or(&[])
        };
        let feed = FeedServer::start(keys::snapshot(1, total, real), 1, FEED_TOKEN)?;
        stats::settle(label.trim(), bench.options.patience)?;
        let filter = if c.native {
            Filter::KeygateNative {
                dir: &bench.native_dir,
                feed: feed.addr,
                token: FEED_TOKEN,
                usage: true,
            }
        } else {
            Filter::Keygate {
                wasm: &bench.keygate_wasm,
                feed: feed.addr,
                token: FEED_TOKEN,
                usage: true,
            }
        };
        // Idle CPU only with the workers of the main rows.
        let window = if concurrency == 2 {
            idle
        } else {
            Duration::ZERO
        };
        let mut launch = bench.launch(concurrency);
        launch.cpus = bench.all_cpus.as_deref();
        let loaded = measure(bench, &launch, &filter, total, &feed, window)?;
        let zero = rows
            .iter()
            .find(|(r, _)| r.concurrency == concurrency && r.native == c.native)
            .map_or(loaded.rss, |(_, l)| l.rss);
        let opt = |d: Option<Duration>| d.map_or("-".to_string(), stats::show);
        let cpu = if window.is_zero() {
            "-".to_string()
        } else {
            format!("{:.2}%", loaded.idle_cpu)
        };
        println!(
            "{:<22} {:>10} {:>12} {:>10} {:>12} {:>14} {:>12} {:>10}",
            label,
            mib(loaded.rss),
            mib(loaded.rss.saturating_sub(zero)),
            mib(loaded.peak),
            opt(loaded.first_pass),
            opt(loaded.all_workers),
            opt(loaded.after_feed),
            cpu
        );
        println!("    {}", loaded.gauges);
        rows.push((c, loaded));
    }
    // RSS of the 1M-key Envoy over the 0-key one, same adapter and workers.
    let find = |native: bool, concurrency: u32, total: usize| {
        rows.iter()
            .find(|(c, _)| c.native == native && c.concurrency == concurrency && c.total == total)
            .map(|(_, l)| l)
    };
    let table_cost = |native: bool, concurrency: u32| {
        let rss = |total| find(native, concurrency, total).map(|l| l.rss);
        Some(rss(KEYS_1M)?.saturating_sub(rss(0)?))
    };
    let per_worker = wasm_per_worker(
        table_cost(false, 1),
        table_cost(false, 2),
        table_cost(false, 4),
    );
    if let (Some(two), Some(four)) = (table_cost(true, 2), table_cost(true, 4)) {
        println!(
            "1M-key table, native: {} with 2 workers, {} with 4 workers (one table per process)",
            mib(two),
            mib(four)
        );
    }
    println!(
        "(first pass / all workers: from spawning Envoy; after feed: from the feed server \
finishing the snapshot to the first pass; idle CPU over {} s with an unchanged table, \
% of one core, the whole Envoy process; no-filter Envoy idles at {:.2}% and {})",
        idle.as_secs(),
        baseline.1,
        mib(baseline.0)
    );
    let mut targets = Vec::new();
    if let (Some(zero), Some(big)) = (find(false, 2, 0), find(false, 2, KEYS_1M)) {
        let cost = big.rss.saturating_sub(zero.rss);
        targets.push(verdict(
            cost < TARGET_BYTES,
            &format!(
                "1M-key table costs < 100 MB per Envoy (concurrency 2, RSS once loaded): {:.1} MB ({}; peak while loading {} above the 0-key Envoy)",
                cost as f64 / 1e6,
                mib(cost),
                mib(big.peak.saturating_sub(zero.rss))
            ),
        ));
        let load = big.all_workers.unwrap_or(Duration::MAX);
        targets.push(verdict(
            load < Duration::from_secs(2),
            &format!(
                "1M-key table loads in < 2 s (Envoy spawn to every worker passing): {}",
                stats::show(load)
            ),
        ));
    }
    if let Some(per_worker) = per_worker {
        targets.push(verdict(
            per_worker <= WASM_WORKER_TARGET_BYTES,
            &format!(
                "wasm: 1M-key table costs <= 40 MiB per worker (1 to 4 workers): {}",
                mib(per_worker)
            ),
        ));
    }
    for concurrency in [2, 4] {
        if let (Some(cost), Some(big)) = (
            table_cost(true, concurrency),
            find(true, concurrency, KEYS_1M),
        ) {
            targets.push(verdict(
                cost <= NATIVE_TARGET_BYTES,
                &format!(
                    "native: 1M-key table costs <= 45 MiB per Envoy at --concurrency {concurrency}: {}",
                    mib(cost)
                ),
            ));
            let load = big.all_workers.unwrap_or(Duration::MAX);
            targets.push(verdict(
                load <= NATIVE_LOAD_TARGET,
                &format!(
                    "native: 1M-key table loads in <= 1 s at --concurrency {concurrency}: {}",
                    stats::show(load)
                ),
            ));
        }
    }
    println!();
    Ok(targets)
}

/// Prints what each wasm worker adds for the 1M-key table (each worker's VM
/// holds its own) and returns it: the slope from 1 to 4 workers, which
/// divides the noise of what the process holds once (Envoy's heap, the
/// leader's VM) by three; the 1-to-2 step is printed beside it.
fn wasm_per_worker(one: Option<u64>, two: Option<u64>, four: Option<u64>) -> Option<u64> {
    let (one, two) = (one?, two?);
    let slope = four.map(|four| four.saturating_sub(one) / 3);
    println!(
        "1M-key table, wasm: {} with 1 worker, {} with 2, {} with 4: each worker adds {} (1 to 4), {} (1 to 2)",
        mib(one),
        mib(two),
        four.map_or("-".to_string(), mib),
        slope.map_or("-".to_string(), mib),
        mib(two.saturating_sub(one))
    );
    slope
}

fn measure(
    bench: &Bench,
    launch: &envoy::Launch<'_>,
    filter: &Filter<'_>,
    total: usize,
    feed: &FeedServer,
    idle: Duration,
) -> io::Result<Loaded> {
    let name = format!("resources-{total}-c{}", launch.concurrency);
    let mut e = Envoy::spawn(launch, &name, filter)?;
    let key = bench.load_key();
    // With an empty table the key is unknown: "loaded" means 401 instead of 503.
    let want = move |s: u16| if total == 0 { s == 401 } else { s == 200 };
    e.wait_live(Duration::from_secs(60))?;
    let first_pass = envoy::wait_status(
        e.listen,
        Some(key),
        want,
        e.started,
        Duration::from_secs(60),
    )?;
    let passed_at = Instant::now();
    let after_feed = feed
        .snapshot_sent()
        .map(|sent| passed_at.saturating_duration_since(sent));
    let mut streak = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while streak < ALL_WORKERS_STREAK && Instant::now() < deadline {
        if envoy::probe(e.listen, Some(key)).is_ok_and(want) {
            streak += 1;
        } else {
            streak = 0;
            thread::sleep(Duration::from_millis(2));
        }
    }
    let all_workers = (streak == ALL_WORKERS_STREAK).then(|| e.started.elapsed());
    let prefix = filter.stats_prefix();
    let mut gauges: Vec<String> = e
        .stats(&format!(
            "^{prefix}\\.keygate_(table_keys|table_version|fetches)"
        ))?
        .into_iter()
        .map(|(name, value)| {
            let name = name.strip_prefix(prefix).unwrap_or(&name);
            format!("{}={value}", name.trim_start_matches('.'))
        })
        .collect();
    thread::sleep(SETTLE);
    let rss = stats::memory(e.pid(), "VmRSS")?;
    let peak = stats::memory(e.pid(), "VmHWM")?;
    if let Some((live, physical)) = e.heap() {
        gauges.push(format!(
            "Envoy heap {} live / {} resident (the rest of RSS: wasm VMs or the native table, code)",
            mib(live),
            mib(physical)
        ));
    }
    let polls = feed.not_modified();
    let (idle_cpu, ()) = stats::cpu_percent_during(e.pid(), || thread::sleep(idle))?;
    if !idle.is_zero() {
        gauges.push(format!(
            "feed 304s while idle={}",
            feed.not_modified() - polls
        ));
    }
    Ok(Loaded {
        rss,
        peak,
        gauges: gauges.join(", "),
        idle_cpu,
        first_pass: Some(first_pass),
        all_workers,
        after_feed,
    })
}

/// How long the core crate takes to decode a 1M-key snapshot natively.
fn native_decode_time(bench: &Bench) -> Duration {
    let body = keys::snapshot(1, KEYS_1M, bench.keys.get(..1).unwrap_or(&[]));
    let t0 = Instant::now();
    let decoded = keygate::table::decode(&body);
    let elapsed = t0.elapsed();
    drop(decoded);
    elapsed
}
