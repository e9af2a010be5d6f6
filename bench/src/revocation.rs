//! Revocation latency against the real control plane.
//!
//! `keygate-control-plane serve` runs on a fresh SQLite file; the bench
//! creates a tenant and N keys through its API, starts Envoy
//! (`--concurrency 2`, keygate fed by that control plane) and waits until
//! every key passes. Then, one key at a time: `DELETE /api/v1/api-keys/{id}`,
//! and from its 200 answer, poll Envoy with that key on keep-alive
//! connections that cover every worker, until the first 401 and until every
//! connection has seen 401. With the dynamic module built, the same again
//! with keygate native (its own keys, on the same control plane).

use crate::control_plane::{api, create_key, create_tenant, ControlPlane};
use crate::envoy::{self, Envoy, Filter, KEY_HEADER};
use crate::http::Conn;
use crate::stats::{self, percentile};
use crate::throughput::verdict;
use crate::{Bench, FEED_TOKEN};
use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// Most polling connections opened to cover every worker.
const MAX_CONNECTIONS: usize = 32;
/// Longest wait for one revocation to show.
const GIVE_UP: Duration = Duration::from_secs(10);

struct Key {
    id: String,
    secret: String,
}

/// Creates a tenant and `n` keys; the admin key and the keys.
fn create_keys(cp: SocketAddr, n: usize) -> io::Result<(String, Vec<Key>)> {
    let admin = create_tenant(cp)?;
    let mut conn = Conn::connect(cp)?;
    let keys = (0..n)
        .map(|i| {
            let (id, secret) = create_key(&mut conn, &admin, &format!("revoke-me-{i}"))?;
            Ok(Key { id, secret })
        })
        .collect::<io::Result<Vec<Key>>>()?;
    Ok((admin, keys))
}

/// Workers that have at least one active connection on the bench listener, and how many there are.
fn workers_covered(e: &Envoy) -> io::Result<(usize, usize)> {
    let active: Vec<u64> = e
        .stats("downstream_cx_active")?
        .into_iter()
        .filter(|(name, _)| name.starts_with("listener.") && name.contains(".worker_"))
        .filter(|(name, _)| !name.contains("admin"))
        .map(|(_, v)| v.parse().unwrap_or(0))
        .collect();
    Ok((active.iter().filter(|&&n| n > 0).count(), active.len()))
}

/// Keep-alive connections to `e`, each having passed one request, until every
/// worker holds one; and whether every worker does.
fn connections(e: &Envoy, key: &str) -> io::Result<(Vec<Conn>, bool)> {
    let mut conns = Vec::new();
    loop {
        let mut c = Conn::connect(e.listen)?;
        let r = c.request("GET", "/", &[(KEY_HEADER, key)], None)?;
        if r.status != 200 {
            return Err(io::Error::other(format!(
                "warm-up request answered {}",
                r.status
            )));
        }
        conns.push(c);
        let (covered, workers) = workers_covered(e)?;
        let everywhere = covered == workers && workers > 0;
        if (conns.len() >= 4 && everywhere) || conns.len() >= MAX_CONNECTIONS {
            return Ok((conns, everywhere));
        }
    }
}

/// What one revocation took, from the DELETE's answer.
struct Revoked {
    first_401: Duration,
    every_401: Duration,
    /// Every worker had a polling connection.
    everywhere: bool,
}

fn revoke_once(cp: SocketAddr, admin: &str, e: &Envoy, key: &Key) -> io::Result<Revoked> {
    let (mut conns, everywhere) = connections(e, &key.secret)?;
    let r = api(
        cp,
        "DELETE",
        &format!("/api/v1/api-keys/{}", key.id),
        admin,
        None,
    )?;
    if r.status != 200 {
        return Err(io::Error::other(format!(
            "revoke: {} {}",
            r.status,
            r.text()
        )));
    }
    let t0 = Instant::now();
    let mut seen: Vec<Option<Duration>> = vec![None; conns.len()];
    while seen.iter().any(Option::is_none) {
        if t0.elapsed() > GIVE_UP {
            return Err(io::Error::other(format!(
                "key {} still accepted after {GIVE_UP:?}",
                key.id
            )));
        }
        for (conn, seen) in conns.iter_mut().zip(seen.iter_mut()) {
            if seen.is_some() {
                continue;
            }
            let status = match conn.request("GET", "/", &[(KEY_HEADER, &key.secret)], None) {
                Ok(r) => r.status,
                Err(_) => {
                    *conn = Conn::connect(e.listen)?;
                    continue;
                }
            };
            if status == 401 {
                *seen = Some(t0.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(Revoked {
        first_401: seen.iter().flatten().min().copied().unwrap_or_default(),
        every_401: seen.iter().flatten().max().copied().unwrap_or_default(),
        everywhere,
    })
}

/// Runs the revocation phase; returns the target lines.
pub fn run(bench: &Bench) -> io::Result<Vec<String>> {
    println!("## Revocation latency (real control plane, Envoy --concurrency 2)");
    let control_plane = ControlPlane::start(
        bench,
        "control-plane",
        &ControlPlane::sqlite(bench, "control-plane"),
    )?;
    let cp = control_plane.addr;
    let wasm = Filter::Keygate {
        wasm: &bench.keygate_wasm,
        feed: cp,
        token: FEED_TOKEN,
        usage: true,
    };
    let mut targets = measure(bench, cp, &control_plane, "wasm", &wasm)?;
    if bench.native() {
        let native = Filter::KeygateNative {
            dir: &bench.native_dir,
            feed: cp,
            token: FEED_TOKEN,
            usage: true,
        };
        targets.extend(measure(bench, cp, &control_plane, "native", &native)?);
    }
    Ok(targets)
}

/// Revocation latency of one adapter (`what`) against the control plane at `cp`.
fn measure(
    bench: &Bench,
    cp: SocketAddr,
    control_plane: &ControlPlane,
    what: &str,
    filter: &Filter<'_>,
) -> io::Result<Vec<String>> {
    let n = bench.options.revocations;
    let (admin, keys) = create_keys(cp, n)?;
    println!("{what}:");
    let e = Envoy::start(&bench.launch(2), &format!("revocation-{what}"), filter)?;
    for key in &keys {
        envoy::wait_status(
            e.listen,
            Some(&key.secret),
            |s| s == 200,
            Instant::now(),
            Duration::from_secs(30),
        )?;
    }
    stats::settle("revocations", bench.options.patience)?;
    let mut first = Vec::with_capacity(n);
    let mut all = Vec::with_capacity(n);
    let mut covered = 0;
    for key in &keys {
        let r = revoke_once(cp, &admin, &e, key)?;
        first.push(r.first_401);
        all.push(r.every_401);
        covered += usize::from(r.everywhere);
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{n} revocations, each polled every ~1 ms on 4+ keep-alive connections \
(every worker had one in {covered}/{n} revocations, per Envoy's per-worker listener stats):"
    );
    let line = |what: &str, v: &[Duration]| {
        println!(
            "  {what:<28} p50 {:>9}  p99 {:>9}  max {:>9}",
            stats::show(percentile(v, 50.0)),
            stats::show(percentile(v, 99.0)),
            stats::show(percentile(v, 100.0))
        )
    };
    line("DELETE 200 -> first 401", &first);
    line("DELETE 200 -> 401 everywhere", &all);

    let idle = bench.options.idle_window;
    let (envoy_cpu, inner) = stats::cpu_percent_during(e.pid(), || {
        stats::cpu_percent_during(control_plane.guard.pid(), || thread::sleep(idle))
    })?;
    let (cp_cpu, ()) = inner?;
    println!(
        "idle over {} s afterwards (unchanged table, long-poll open): Envoy {envoy_cpu:.2}% of a core, control plane {cp_cpu:.2}%",
        idle.as_secs()
    );
    let p99 = percentile(&all, 99.0);
    println!();
    Ok(vec![
        verdict(
            p99 < Duration::from_secs(1),
            &format!("{what}: revocation p99 < 1 s: {}", stats::show(p99)),
        ),
        verdict(
            p99 < Duration::from_millis(100),
            &format!("{what}: revocation p99 < 100 ms: {}", stats::show(p99)),
        ),
    ])
}
