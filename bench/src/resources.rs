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
//! 0 and 1M keys again with one worker split the 1M-key cost into what each
//! worker adds and what the process holds once. Envoy's heap (admin
//! `/memory`) splits RSS into Envoy's side (shared data, buffers) and the rest
//! (mostly wasm VM memory). Every Envoy here may use every CPU.

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

    let mut rows: Vec<(&str, u32, Loaded)> = Vec::new();
    let cases = [
        ("keygate 0 keys", 0, 2),
        ("keygate 10k keys", KEYS_10K, 2),
        ("keygate 1M keys", KEYS_1M, 2),
        ("  same, 1 worker: 0", 0, 1),
        ("  same, 1 worker: 1M", KEYS_1M, 1),
    ];
    for (label, total, concurrency) in cases {
        let real = if total == 0 {
            &[][..]
        } else {
            bench.keys.get(..1).unwrap_or(&[])
        };
        let feed = FeedServer::start(keys::snapshot(1, total, real), 1, FEED_TOKEN)?;
        stats::settle(label.trim(), Duration::from_secs(120))?;
        let filter = Filter::Keygate {
            wasm: &bench.keygate_wasm,
            feed: feed.addr,
            token: FEED_TOKEN,
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
            .find(|(_, c, _)| *c == concurrency)
            .map_or(loaded.rss, |(_, _, l)| l.rss);
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
        rows.push((label, concurrency, loaded));
    }
    let table_cost = |concurrency: u32| {
        let of = |i: usize| rows.get(i).map_or(0, |(_, _, l)| l.rss);
        match concurrency {
            2 => of(2).saturating_sub(of(0)),
            _ => of(4).saturating_sub(of(3)),
        }
    };
    println!(
        "1M-key table: {} with 2 workers, {} with 1 worker: each worker adds {}",
        mib(table_cost(2)),
        mib(table_cost(1)),
        mib(table_cost(2).saturating_sub(table_cost(1)))
    );
    println!(
        "(first pass / all workers: from spawning Envoy; after feed: from the feed server \
finishing the snapshot to the first pass; idle CPU over {} s with an unchanged table, \
% of one core, the whole Envoy process; no-filter Envoy idles at {:.2}% and {})",
        idle.as_secs(),
        baseline.1,
        mib(baseline.0)
    );
    let mut targets = Vec::new();
    if let (Some((_, _, zero)), Some((_, _, big))) = (rows.first(), rows.get(2)) {
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
    println!();
    Ok(targets)
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
    let mut gauges: Vec<String> = e
        .stats("^wasmcustom\\.keygate_(table_keys|table_version|fetches)")?
        .into_iter()
        .map(|(name, value)| format!("{}={value}", name.trim_start_matches("wasmcustom.")))
        .collect();
    thread::sleep(SETTLE);
    let rss = stats::memory(e.pid(), "VmRSS")?;
    let peak = stats::memory(e.pid(), "VmHWM")?;
    if let Some((live, physical)) = e.heap() {
        gauges.push(format!(
            "Envoy heap {} live / {} resident (the rest of RSS: wasm VMs, code)",
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
