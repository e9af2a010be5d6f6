//! A 1M-key table served by the real control plane (`--only cp-1m`), on
//! SQLite and on PostgreSQL: how long a fresh Envoy takes to load every
//! page, and the control plane's CPU and memory while it serves them.
//!
//! Seeding goes through the control plane's own schema, not 1M API calls:
//! the control plane starts once on an empty database (its migrations make
//! the schema), a tenant and one probe key are created through the API, the
//! control plane stops, bulk SQL (`sqlite3`, or PostgreSQL's `psql`) adds
//! keys with random 32-byte hashes until the table holds 1M, and moves the
//! feed version on with `compacted_through` at it (so any older base gets a
//! snapshot, as after a compaction). The control plane then starts again on
//! that database and a fresh Envoy (`--concurrency 2`, the wasm filter, then
//! the native module when built) is timed from its spawn until
//! `keygate_table_keys` says 1M and the probe key passes on eight fresh
//! connections in a row (every worker has the table); the first Envoy finds
//! no page built for the version, the second (native) finds them all in the
//! control plane's cache. Then the bench reads every page itself (the
//! control plane's share of the load time), and a herd of 100 clients (98
//! of the bench's, 2 Envoys) starts at once after a change moved the version.

use crate::control_plane::{create_key, create_tenant, ControlPlane, Postgres};
use crate::envoy::{self, Envoy, Filter};
use crate::http::{self, Conn};
use crate::stats::{self, mib};
use crate::{Bench, FEED_TOKEN, KEYS_1M};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Fresh connections in a row that must pass before every worker counts as loaded.
const ALL_WORKERS_STREAK: usize = 8;
/// Longest wait for Envoy to load the table.
const GIVE_UP: Duration = Duration::from_secs(180);

/// Where the bulk SQL goes.
enum Database<'a> {
    Sqlite(&'a str),
    Postgres(&'a str),
}

impl Database<'_> {
    /// The `--database` argument of the control plane.
    fn argument(&self) -> &str {
        match self {
            Database::Sqlite(path) | Database::Postgres(path) => path,
        }
    }

    /// Bulk SQL filling the key table up to `total` keys (random hashes, the
    /// first tenant's), then moving the feed version on past every revision.
    fn seed_sql(&self, total: usize) -> String {
        let missing = format!(
            "{total} - (SELECT count(*) FROM api_keys WHERE in_table = {})",
            self.truth()
        );
        let columns = "id, tenant_id, name, key_hash, display_prefix, scopes, environment, tier, \
                       created_at, in_table";
        let values = |hash: &str| {
            format!(
                "SELECT i, (SELECT id FROM tenants ORDER BY id LIMIT 1), 'bulk', {hash}, \
                 'rk_live_bulk', 'memory:read', 'live', 'free', 1700000000, {}",
                self.truth()
            )
        };
        let keys = match self {
            Database::Sqlite(_) => format!(
                "BEGIN;\nWITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                 WHERE i < ({missing})) INSERT INTO api_keys ({columns}) {} FROM n;",
                values("randomblob(32)")
            ),
            Database::Postgres(_) => format!(
                "BEGIN;\nINSERT INTO api_keys ({columns}) {} FROM generate_series(1, ({missing})) AS i;",
                values("sha256(int8send(i))")
            ),
        };
        format!(
            "{keys}\nUPDATE feed_state SET version = version + 1, compacted_through = version + 1;\n\
             COMMIT;\n"
        )
    }

    fn truth(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "1",
            Database::Postgres(_) => "TRUE",
        }
    }

    /// Runs `sql` with the backend's command-line client.
    fn execute(&self, sql: &str) -> io::Result<()> {
        let mut command = match self {
            Database::Sqlite(path) => {
                let mut c = Command::new("sqlite3");
                c.args(["-bail", path]);
                c
            }
            Database::Postgres(url) => {
                let mut c = Command::new(Path::new(&pg_bin()?).join("psql"));
                c.args(["-q", "-v", "ON_ERROR_STOP=1", url]);
                c
            }
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::other(format!("cannot start the SQL client: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes())?;
        }
        let status = child.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("bulk SQL failed: {status}")))
        }
    }
}

/// The PostgreSQL server behind `url` (the postmaster started with `-p
/// <port>`), if it runs on this machine.
fn postmaster(url: &str) -> Option<u32> {
    let port = url.rsplit_once(':')?.1.split('/').next()?.to_string();
    processes().into_iter().find(|&pid| {
        let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = args.split(|&b| b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"postgres"))
            && args
                .windows(2)
                .any(|w| w.first() == Some(&&b"-p"[..]) && w.get(1) == Some(&port.as_bytes()))
    })
}

/// Every process id in /proc.
fn processes() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The parent of `pid` (field 4 of `/proc/<pid>/stat`).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU used so far by a server and its live children (PostgreSQL's
/// backends: the control plane's pooled connections stay open).
fn server_cpu(server: u32) -> Duration {
    processes()
        .into_iter()
        .filter(|&pid| pid == server || parent(pid) == Some(server))
        .filter_map(|pid| stats::cpu_time(pid).ok())
        .sum()
}

/// The directory of PostgreSQL's programs (`scripts/pg.sh bin`).
fn pg_bin() -> io::Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh");
    let out = Command::new("bash").arg(script).arg("bin").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs the `cp-1m` rows, SQLite then PostgreSQL.
pub fn run(bench: &Bench) -> io::Result<()> {
    println!(
        "## {KEYS_1M}-key table from the real control plane (fresh Envoy --concurrency 2: wasm, then native)"
    );
    let file = ControlPlane::sqlite(bench, "cp-1m");
    row(bench, "SQLite", &Database::Sqlite(&file))?;
    let pg = Postgres::start()?;
    row(bench, "PostgreSQL", &Database::Postgres(&pg.url))?;
    println!(
        "  (load: from spawning Envoy; table: keygate_table_keys = {KEYS_1M}; every worker: the probe \
key passes on {ALL_WORKERS_STREAK} fresh connections in a row; control plane CPU: user + system \
over that time, % of one core; peak: VmHWM of the restarted control plane)\n"
    );
    Ok(())
}

/// One backend: seed, restart, load a fresh Envoy from it (wasm, then
/// native when the dynamic module is built).
fn row(bench: &Bench, backend: &str, database: &Database<'_>) -> io::Result<()> {
    let name = format!("cp-1m-{}", backend.to_ascii_lowercase());
    let probe = seed(bench, &name, backend, database)?;
    let t0 = Instant::now();
    let cp = ControlPlane::start(bench, &name, database.argument())?;
    println!(
        "  {backend}: control plane up in {}",
        stats::show(t0.elapsed())
    );
    thread::sleep(Duration::from_secs(1));
    let wasm = Filter::Keygate {
        wasm: &bench.keygate_wasm,
        feed: cp.addr,
        token: FEED_TOKEN,
        usage: true,
    };
    load(bench, &cp, database, &probe, "wasm", &wasm)?;
    if bench.native() {
        let native = Filter::KeygateNative {
            dir: &bench.native_dir,
            feed: cp.addr,
            token: FEED_TOKEN,
            usage: true,
        };
        load(bench, &cp, database, &probe, "native", &native)?;
    }
    println!("    {}", read_pages(cp.addr)?);
    herd(bench, &cp, &probe, &wasm)?;
    Ok(())
}

/// Migrates an empty database through the control plane, makes a tenant
/// and a probe key through its API, stops it and fills the table with bulk
/// SQL; the probe key.
fn seed(bench: &Bench, name: &str, backend: &str, database: &Database<'_>) -> io::Result<String> {
    let probe = {
        let cp = ControlPlane::start(bench, &format!("{name}-migrate"), database.argument())?;
        let admin = create_tenant(cp.addr)?;
        let (_, secret) = create_key(&mut Conn::connect(cp.addr)?, &admin, "probe")?;
        secret
    };
    let t0 = Instant::now();
    database.execute(&database.seed_sql(KEYS_1M))?;
    println!(
        "  {backend}: seeded to {KEYS_1M} keys in {} (bulk SQL)",
        stats::show(t0.elapsed())
    );
    Ok(probe)
}

/// A fresh Envoy with `filter` loads the table from `cp`: its load times,
/// and the control plane's (and PostgreSQL's) CPU and memory meanwhile.
fn load(
    bench: &Bench,
    cp: &ControlPlane,
    database: &Database<'_>,
    probe: &str,
    what: &str,
    filter: &Filter<'_>,
) -> io::Result<()> {
    let pid = cp.guard.pid();
    let idle_rss = stats::memory(pid, "VmRSS")?;
    stats::settle(what, bench.options.patience)?;
    let server = match database {
        Database::Postgres(url) => postmaster(url),
        Database::Sqlite(_) => None,
    };
    let (cpu0, server0, pages0, built0) = (
        stats::cpu_time(pid)?,
        server.map(server_cpu),
        snapshot_answers(cp.addr),
        bodies_built(cp.addr),
    );
    let mut launch = bench.launch(2);
    launch.cpus = bench.all_cpus.as_deref();
    let mut e = Envoy::spawn(&launch, &format!("cp-1m-{what}"), filter)?;
    e.wait_live(Duration::from_secs(60))?;
    let (table, every) = wait_loaded(&e, probe, filter)?;
    let cpu = stats::cpu_time(pid)?.saturating_sub(cpu0);
    let server_cpu = match (server, server0) {
        (Some(server), Some(before)) => format!(
            "; PostgreSQL server and backends: {:.2} s of CPU",
            server_cpu(server).saturating_sub(before).as_secs_f64()
        ),
        _ => String::new(),
    };
    let (rss, peak) = (stats::memory(pid, "VmRSS")?, stats::memory(pid, "VmHWM")?);
    println!(
        "    {what}: Envoy spawn -> table of {KEYS_1M} keys {}, -> every worker passing {}",
        stats::show(table),
        stats::show(every)
    );
    println!(
        "      control plane: {:.2} s of CPU while serving it ({:.0}% of one core over the load), \
RSS {} before -> {} after, peak {}; {} snapshot pages served, {} built{server_cpu}",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / every.as_secs_f64(),
        mib(idle_rss),
        mib(rss),
        mib(peak),
        snapshot_answers(cp.addr).saturating_sub(pages0),
        bodies_built(cp.addr).saturating_sub(built0)
    );
    Ok(())
}

/// Polls Envoy until its table holds every key, then until the probe key
/// passes on every worker; both times from Envoy's spawn.
fn wait_loaded(e: &Envoy, probe: &str, filter: &Filter<'_>) -> io::Result<(Duration, Duration)> {
    let gauge = format!("^{}\\.keygate_table_keys$", filter.stats_prefix());
    let deadline = e.started + GIVE_UP;
    let table = loop {
        let keys: u64 = e
            .stats(&gauge)?
            .first()
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        if keys >= KEYS_1M as u64 {
            break e.started.elapsed();
        }
        if Instant::now() > deadline {
            return Err(e.failure(&format!("table holds {keys} keys after {GIVE_UP:?}")));
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut streak = 0;
    while streak < ALL_WORKERS_STREAK {
        if envoy::probe(e.listen, Some(probe)).is_ok_and(|s| s == 200) {
            streak += 1;
        } else {
            streak = 0;
            thread::sleep(Duration::from_millis(2));
        }
        if Instant::now() > deadline {
            return Err(e.failure("the probe key does not pass on every worker"));
        }
    }
    Ok((table, e.started.elapsed()))
}

/// The bench itself reads every snapshot page on one keep-alive connection
/// (after Envoy did: from the control plane's cache); the whole read and
/// the median page.
fn read_pages(cp: SocketAddr) -> io::Result<String> {
    let t0 = Instant::now();
    let (times, keys) = read_table(cp)?;
    Ok(format!(
        "the bench reading the same {} pages ({keys} keys) on one connection: {}, median page {}",
        times.len(),
        stats::show(t0.elapsed()),
        stats::show(stats::percentile(&times, 50.0))
    ))
}

/// Reads and checks every page of a snapshot, as a filter does, on one
/// keep-alive connection; each page's time and the keys.
fn read_table(cp: SocketAddr) -> io::Result<(Vec<Duration>, usize)> {
    let auth = format!("Bearer {FEED_TOKEN}");
    let mut conn = Conn::connect(cp)?;
    let (mut after, mut times, mut keys) = (None::<[u8; 32]>, Vec::new(), 0);
    loop {
        let path = match after {
            Some(hash) => format!("{}?since=0&after={}", PATH, hex(&hash)),
            None => format!("{PATH}?since=0"),
        };
        let start = Instant::now();
        let r = conn.request("GET", &path, &[("authorization", &auth)], None)?;
        times.push(start.elapsed());
        let page = keygate::feed::check_snapshot_page(&r.body, after.as_ref())
            .map_err(|e| io::Error::other(format!("bad snapshot page: {e:?}")))?;
        keys += page.keys;
        if !page.more {
            return Ok((times, keys));
        }
        after = page.last_hash;
    }
}

/// Feed clients of the herd row: the bench's own, plus [`HERD_ENVOYS`].
const HERD: usize = 100;
/// Real Envoys (wasm) in the herd.
const HERD_ENVOYS: usize = 2;

/// A rolling restart: the version moves (a new tenant: the pages of the
/// old version are of no use), then [`HERD`] clients start at once, the
/// bench's own (one thread and connection each, reading and checking every
/// page) and [`HERD_ENVOYS`] fresh Envoys; when each holds the table.
fn herd(bench: &Bench, cp: &ControlPlane, probe: &str, filter: &Filter<'_>) -> io::Result<()> {
    create_tenant(cp.addr)?;
    stats::settle("herd", bench.options.patience)?;
    let own = HERD - HERD_ENVOYS;
    let (pid, built0) = (cp.guard.pid(), bodies_built(cp.addr));
    let cpu0 = stats::cpu_time(pid)?;
    let start = std::sync::Arc::new(std::sync::Barrier::new(own + 1));
    let clients: Vec<_> = (0..own)
        .map(|_| {
            let (start, addr) = (std::sync::Arc::clone(&start), cp.addr);
            thread::spawn(move || {
                start.wait();
                let t0 = Instant::now();
                read_table(addr).map(|(_, keys)| (t0.elapsed(), keys))
            })
        })
        .collect();
    let mut launch = bench.launch(2);
    launch.cpus = bench.all_cpus.as_deref();
    let envoys = (0..HERD_ENVOYS)
        .map(|i| Envoy::spawn(&launch, &format!("cp-1m-herd-{i}"), filter))
        .collect::<io::Result<Vec<_>>>()?;
    start.wait();
    let mut times = Vec::new();
    for client in clients {
        let (took, keys) = client
            .join()
            .map_err(|_| io::Error::other("a herd client panicked"))??;
        if keys < KEYS_1M {
            return Err(io::Error::other(format!("a herd client got {keys} keys")));
        }
        times.push(took);
    }
    let mut envoy_times = Vec::new();
    for mut e in envoys {
        e.wait_live(Duration::from_secs(60))?;
        envoy_times.push(stats::show(wait_loaded(&e, probe, filter)?.1));
    }
    let cpu = stats::cpu_time(pid)?.saturating_sub(cpu0);
    println!(
        "    herd after a change: {own} feed clients of the bench and {HERD_ENVOYS} Envoys (wasm) starting \
together; the bench's clients hold the table after p50 {} / max {}, the Envoys (spawn -> every worker \
passing) after {}; control plane {:.2} s of CPU, {} bodies built",
        stats::show(stats::percentile(&times, 50.0)),
        stats::show(stats::percentile(&times, 100.0)),
        envoy_times.join(", "),
        cpu.as_secs_f64(),
        bodies_built(cp.addr).saturating_sub(built0)
    );
    Ok(())
}

/// The feed's path.
const PATH: &str = "/v1/key-table";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sample of the control plane's `/metrics` (0 when absent).
fn metric(cp: SocketAddr, sample: &str) -> u64 {
    let text = http::once(cp, "GET", "/metrics", &[], None)
        .map(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The control plane's count of snapshot answers (pages).
fn snapshot_answers(cp: SocketAddr) -> u64 {
    metric(cp, "keygate_feed_requests_total{answer=\"snapshot\"}")
}

/// The control plane's count of feed answers read and encoded.
fn bodies_built(cp: SocketAddr) -> u64 {
    metric(cp, "keygate_feed_bodies_built_total")
}
