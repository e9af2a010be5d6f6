//! Throughput and latency of the variants (seven, and four dynamic-module
//! ones when built), median of interleaved rounds. Rows `5L`/`8L` are
//! keygate 10k with a load key that has its own rate limits (counted on
//! every request, never reached), against `5`/`8`: the cost of the limits.
//! Rows `5U`/`8U` are keygate 10k with usage counting off; every other
//! keygate row counts usage (and reports it every 10 s) as shipped, so
//! `5`/`8` against them is the cost of counting.
//!
//! All the Envoys run at once (idle between their turns), each with one
//! worker pinned to the same CPU; every round runs wrk against each in turn,
//! starting from a different variant each round so no variant always goes
//! first or last. Each run starts on a quiet machine and is repeated when
//! other processes disturbed it.

use crate::child::Guard;
use crate::envoy::{self, Envoy, Filter};
use crate::feed_server::FeedServer;
use crate::stats::{self, median};
use crate::wrk::{self, Load, Measured};
use crate::{keys, Bench, FEED_TOKEN, KEYS_10K, KEYS_1M};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// CPU (% of one core) taken by other processes or steal that makes a run disturbed.
const DISTURBED: f64 = 5.0;

/// One wrk run against one variant.
struct Sample {
    measured: Measured,
    /// % of one core: the Envoy under load, wrk, everything else on the
    /// machine (other builds, the idle Envoys…), and hypervisor steal.
    envoy_cpu: f64,
    wrk_cpu: f64,
    other_cpu: f64,
    steal: f64,
}

struct Variant {
    name: &'static str,
    envoy: Envoy,
    samples: Vec<Sample>,
}

impl Variant {
    fn median_of(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&self.samples.iter().map(f).collect::<Vec<_>>())
    }

    fn median_rps(&self) -> f64 {
        self.median_of(|s| s.measured.requests_per_second)
    }

    fn median_latency(&self, f: impl Fn(&Measured) -> Duration) -> Duration {
        Duration::from_secs_f64(self.median_of(|s| f(&s.measured).as_secs_f64()))
    }
}

/// Runs wrk against `v` and accounts for where the machine's CPU went.
fn sample(v: &Variant, load: &Load<'_>, key: &str, helpers: &[u32]) -> io::Result<Sample> {
    let envoy = v.envoy.pid();
    let sum = |pids: &[u32]| -> f64 {
        pids.iter()
            .filter_map(|&p| stats::cpu_time(p).ok())
            .map(|d| d.as_secs_f64())
            .sum()
    };
    let (sys0, envoy0, helpers0) = (stats::SystemCpu::now()?, sum(&[envoy]), sum(helpers));
    let t0 = Instant::now();
    let measured = wrk::run(load, v.envoy.listen, Some(key))?;
    let wall = t0.elapsed().as_secs_f64();
    let (sys1, envoy1, helpers1) = (stats::SystemCpu::now()?, sum(&[envoy]), sum(helpers));
    let (envoy_d, wrk_d) = (envoy1 - envoy0, measured.cpu.as_secs_f64());
    let other = (sys1.busy - sys0.busy) - envoy_d - wrk_d - (helpers1 - helpers0);
    let percent = |t: f64| 100.0 * t.max(0.0) / wall;
    Ok(Sample {
        measured,
        envoy_cpu: percent(envoy_d),
        wrk_cpu: percent(wrk_d),
        other_cpu: percent(other),
        steal: percent(sys1.steal - sys0.steal),
    })
}

/// Runs the throughput phase; returns the target lines.
pub fn run(bench: &Bench) -> io::Result<Vec<String>> {
    let o = &bench.options;
    let launch = bench.launch(1);
    let dir = bench.dir.path();
    let real = bench.keys.get(..KEYS_10K).unwrap_or(&bench.keys);

    println!("## Throughput (Envoy --concurrency 1, direct_response route)");
    let keys_file = dir.join("authorizer-keys.txt");
    std::fs::write(&keys_file, real.join("\n"))?;
    let authorizer_addr = SocketAddr::from(([127, 0, 0, 1], envoy::free_port()?));
    let log = dir.join("fast-authorizer.log");
    let mut authorizer = Guard::spawn(
        &bench.authorizer,
        &[
            "--listen",
            &authorizer_addr.to_string(),
            "--keys",
            &keys_file.display().to_string(),
        ],
        bench.load_cpus.as_deref(),
        &log,
    )?;
    authorizer.wait_port(authorizer_addr, Duration::from_secs(10), &log)?;

    let feed_10k = FeedServer::start(keys::snapshot(1, KEYS_10K, real), 1, FEED_TOKEN)?;
    let feed_1m = FeedServer::start(keys::snapshot(1, KEYS_1M, real), 1, FEED_TOKEN)?;
    let feed_limited = FeedServer::start(keys::limited_snapshot(1, KEYS_10K, real), 1, FEED_TOKEN)?;

    let minimal = |mode| Filter::Minimal {
        wasm: &bench.minimal_wasm,
        mode,
    };
    let mut filters: Vec<(&'static str, Filter<'_>)> = vec![
        ("1 no auth", Filter::None),
        ("2 minimal wasm", minimal("")),
        ("3 api_key_auth 10k", Filter::ApiKeyAuth { keys: real }),
        (
            "4 ext_authz http",
            Filter::ExtAuthz {
                authorizer: authorizer_addr,
            },
        ),
        (
            "5 keygate 10k",
            Filter::Keygate {
                wasm: &bench.keygate_wasm,
                feed: feed_10k.addr,
                token: FEED_TOKEN,
                usage: true,
            },
        ),
        (
            "6 keygate 1M",
            Filter::Keygate {
                wasm: &bench.keygate_wasm,
                feed: feed_1m.addr,
                token: FEED_TOKEN,
                usage: true,
            },
        ),
    ];
    filters.push((
        NO_USAGE_WASM,
        Filter::Keygate {
            wasm: &bench.keygate_wasm,
            feed: feed_10k.addr,
            token: FEED_TOKEN,
            usage: false,
        },
    ));
    filters.push((
        OWN_LIMITS_WASM,
        Filter::Keygate {
            wasm: &bench.keygate_wasm,
            feed: feed_limited.addr,
            token: FEED_TOKEN,
            usage: true,
        },
    ));
    if bench.native() {
        filters.push((
            NATIVE_FLOOR,
            Filter::MinimalNative {
                dir: &bench.native_dir,
            },
        ));
        for (name, feed) in [
            ("8 keygate native 10k", &feed_10k),
            ("9 keygate native 1M", &feed_1m),
        ] {
            filters.push((
                name,
                Filter::KeygateNative {
                    dir: &bench.native_dir,
                    feed: feed.addr,
                    token: FEED_TOKEN,
                    usage: true,
                },
            ));
        }
        filters.push((
            NO_USAGE_NATIVE,
            Filter::KeygateNative {
                dir: &bench.native_dir,
                feed: feed_10k.addr,
                token: FEED_TOKEN,
                usage: false,
            },
        ));
        filters.push((
            OWN_LIMITS_NATIVE,
            Filter::KeygateNative {
                dir: &bench.native_dir,
                feed: feed_limited.addr,
                token: FEED_TOKEN,
                usage: true,
            },
        ));
    }
    if o.diagnose {
        filters.push(("2b wasm 7 host calls", minimal("hostcalls")));
        filters.push(("2c wasm get+set map", minimal("one-set")));
        filters.push(("2d wasm by-name", minimal("by-name")));
        if let Some(wasm) = &bench.baseline_wasm {
            filters.push((
                "5B keygate 10k, baseline",
                Filter::Keygate {
                    wasm,
                    feed: feed_10k.addr,
                    token: FEED_TOKEN,
                    usage: true,
                },
            ));
        }
    }
    let mut variants = Vec::new();
    for (i, (name, filter)) in filters.iter().enumerate() {
        let envoy = Envoy::start(&launch, &format!("throughput-{}", i + 1), filter)?;
        let key = Some(bench.load_key());
        envoy::wait_status(
            envoy.listen,
            key,
            |s| s == 200,
            envoy.started,
            Duration::from_secs(60),
        )
        .map_err(|e| io::Error::other(format!("{name}: the load key is not accepted: {e}")))?;
        variants.push(Variant {
            name,
            envoy,
            samples: Vec::new(),
        });
    }
    // The refusal path works too (a wrong key is not let through).
    let authenticating = filters.iter().map(|(_, f)| {
        matches!(
            f,
            Filter::ApiKeyAuth { .. }
                | Filter::ExtAuthz { .. }
                | Filter::Keygate { .. }
                | Filter::KeygateNative { .. }
        )
    });
    for (v, _) in variants.iter().zip(authenticating).filter(|(_, a)| *a) {
        let status = envoy::probe(v.envoy.listen, Some("rk_live_not-a-key"))?;
        if status == 200 {
            return Err(io::Error::other(format!(
                "{}: a bad key was let through",
                v.name
            )));
        }
    }

    let load = |duration| Load {
        threads: 1,
        connections: o.connections,
        duration,
        cpus: bench.load_cpus.as_deref(),
    };
    // Warm up (V8 tiers the wasm code up under load; connection pools fill).
    for v in &variants {
        wrk::run(
            &load(Duration::from_secs(1)),
            v.envoy.listen,
            Some(bench.load_key()),
        )?;
    }
    // The bench itself and the authorizer are accounted for; they are not "other".
    let helpers = [std::process::id(), authorizer.pid()];
    let n = variants.len();
    let (mut repeated, mut waited) = (0, Duration::ZERO);
    for round in 0..o.rounds {
        for j in 0..n {
            let Some(v) = variants.get_mut((round + j) % n) else {
                continue;
            };
            // Start on a quiet machine; a run disturbed all the same is run again.
            let mut s = None;
            for attempt in 0..=o.repeats {
                waited += stats::wait_quiet(stats::QUIET, o.patience)?.0;
                let this = sample(v, &load(o.duration), bench.load_key(), &helpers)?;
                let disturbed = this.other_cpu > DISTURBED || this.steal > DISTURBED;
                s = Some(this);
                if !disturbed {
                    break;
                }
                if attempt < o.repeats {
                    repeated += 1;
                }
            }
            v.samples.extend(s);
        }
        eprintln!("  round {}/{} done", round + 1, o.rounds);
    }

    // Ratios: the median over rounds of each round's ratio, so a machine that
    // drifts between rounds (a VM's host does) moves both sides of a ratio.
    let ratio = |i: usize, base: usize| -> f64 {
        let (Some(v), Some(b)) = (variants.get(i), variants.get(base)) else {
            return f64::NAN;
        };
        let per_round: Vec<f64> = v
            .samples
            .iter()
            .zip(&b.samples)
            .map(|(s, b)| s.measured.requests_per_second / b.measured.requests_per_second)
            .collect();
        median(&per_round)
    };
    let native_floor = variants.iter().position(|v| v.name == NATIVE_FLOOR);
    println!(
        "\n{:<22} {:>8} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "variant", "req/s", "p50", "p99", "vs (1)", "vs (2)", "vs (3)", "vs (7)", "Envoy", "wrk"
    );
    for (i, v) in variants.iter().enumerate() {
        let rps = v.median_rps();
        println!(
            "{:<22} {:>8.0} {:>9} {:>9} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>6.0}% {:>6.0}%",
            v.name,
            rps,
            stats::show(v.median_latency(|m| m.p50)),
            stats::show(v.median_latency(|m| m.p99)),
            ratio(i, 0),
            ratio(i, 1),
            ratio(i, 2),
            native_floor.map_or(f64::NAN, |floor| ratio(i, floor)),
            v.median_of(|s| s.envoy_cpu),
            v.median_of(|s| s.wrk_cpu),
        );
    }
    println!(
        "(req/s, p50, p99: median of {} round(s); vs (1), (2), (3), (7): median of the rounds' ratios; \
Envoy and wrk: CPU used during the run, % of one core; Envoy near 100% means the worker, \
not wrk, was the bottleneck)",
        o.rounds
    );
    if o.diagnose {
        // CPU time per request moves less than req/s when other processes
        // share Envoy's core: a second view of a disturbed run.
        println!("Envoy CPU per request (µs, median of the rounds):");
        for v in &variants {
            let us = v.median_of(|s| 1e4 * s.envoy_cpu / s.measured.requests_per_second);
            println!("  {:<22} {us:.1}", v.name);
        }
    }
    let rounds: Vec<String> = variants
        .iter()
        .map(|v| {
            let all: Vec<String> = v
                .samples
                .iter()
                .map(|s| format!("{:.0}", s.measured.requests_per_second))
                .collect();
            format!("  {:<22} {}", v.name, all.join(" "))
        })
        .collect();
    println!("req/s of each round:\n{}", rounds.join("\n"));
    let all: Vec<&Sample> = variants.iter().flat_map(|v| &v.samples).collect();
    let worst = |f: fn(&Sample) -> f64| all.iter().map(|s| f(s)).fold(0.0, f64::max);
    let (other, steal) = (worst(|s| s.other_cpu), worst(|s| s.steal));
    println!(
        "quiet machine check: at most {other:.1}% of a core went to other processes and \
{steal:.1}% to hypervisor steal during any kept run ({repeated} disturbed run(s) repeated, \
{:.0} s spent waiting for a quiet machine){}",
        waited.as_secs_f64(),
        if other > DISTURBED || steal > DISTURBED {
            " -- NOT QUIET: these numbers are disturbed, rerun"
        } else {
            ""
        }
    );

    let mut targets = Vec::new();
    for i in [4, 5] {
        let name = variants.get(i).map_or("", |v| v.name);
        let (vs_floor, vs_ext_authz) = (ratio(i, 1), ratio(i, 3));
        targets.push(verdict(
            vs_floor >= 0.95,
            &format!("{name} >= 0.95 x minimal wasm: {vs_floor:.3}"),
        ));
        targets.push(verdict(
            vs_ext_authz >= 3.0,
            &format!("{name} >= 3 x ext_authz: {vs_ext_authz:.2}"),
        ));
    }
    for (limited, plain) in [
        (OWN_LIMITS_WASM, "5 keygate 10k"),
        (OWN_LIMITS_NATIVE, "8 keygate native 10k"),
    ] {
        let at = |name: &str| variants.iter().position(|v| v.name == name);
        if let (Some(i), Some(base)) = (at(limited), at(plain)) {
            let cost = ratio(i, base);
            targets.push(verdict(
                cost >= 0.95,
                &format!("{limited} >= 0.95 x {plain} (own limits cost <= 5%): {cost:.3}"),
            ));
        }
    }
    for (counted, plain) in [
        ("5 keygate 10k", NO_USAGE_WASM),
        ("8 keygate native 10k", NO_USAGE_NATIVE),
    ] {
        let at = |name: &str| variants.iter().position(|v| v.name == name);
        if let (Some(i), Some(base)) = (at(counted), at(plain)) {
            let cost = ratio(i, base);
            targets.push(verdict(
                cost >= 0.95,
                &format!("{counted} >= 0.95 x {plain} (usage counting costs <= 5%): {cost:.3}"),
            ));
        }
    }
    for (i, v) in variants
        .iter()
        .enumerate()
        .filter(|(_, v)| v.name.contains("keygate native") && v.name != OWN_LIMITS_NATIVE)
    {
        let vs_api_key_auth = ratio(i, 2);
        targets.push(verdict(
            vs_api_key_auth >= 0.95,
            &format!("{} >= 0.95 x api_key_auth: {vs_api_key_auth:.3}", v.name),
        ));
    }
    println!();
    Ok(targets)
}

/// The name of the dynamic-module floor's row (the base of `vs (7)`).
const NATIVE_FLOOR: &str = "7 minimal native";
/// Rows of keygate 10k whose load key has its own rate limits (never reached).
const OWN_LIMITS_WASM: &str = "5L keygate own limits";
const OWN_LIMITS_NATIVE: &str = "8L native own limits";
/// Rows of keygate 10k with usage counting off (`usage.enabled: false`);
/// every other keygate row counts, as the shipped configs do.
const NO_USAGE_WASM: &str = "5U keygate no usage";
const NO_USAGE_NATIVE: &str = "8U native no usage";

/// A target line: reached or missed.
pub fn verdict(ok: bool, what: &str) -> String {
    format!("[{}] {what}", if ok { "reached" } else { "MISSED " })
}
