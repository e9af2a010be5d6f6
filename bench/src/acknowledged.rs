//! What "acknowledged means usable" costs (SPEC §16): `POST /api/v1/api-keys`
//! answers once every Envoy connected to the control plane's feed holds the
//! new key. One client creates keys one after the other on a keep-alive
//! connection to a fresh control plane (SQLite): with no Envoy connected
//! (nobody to wait for), then with one Envoy (`--concurrency 2`) of each
//! adapter on the feed, where each new key is also used through Envoy on a
//! fresh connection the moment its answer arrives (a refusal is counted).

use crate::control_plane::{create_key, create_tenant, ControlPlane};
use crate::envoy::{self, Envoy, Filter};
use crate::fanout::wait_envoys;
use crate::http::Conn;
use crate::stats::{self, percentile};
use crate::{Bench, FEED_TOKEN};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The creation-latency rows.
pub fn run(bench: &Bench) -> io::Result<()> {
    let n = if bench.options.quick { 50 } else { 200 };
    println!(
        "## Creation latency (real control plane on SQLite, 1 client, {n} keys one after the other, \
each used at once through Envoy)"
    );
    row(bench, n, "no Envoy connected", None)?;
    let wasm = |feed| Filter::Keygate {
        wasm: &bench.keygate_wasm,
        feed,
        token: FEED_TOKEN,
        usage: true,
    };
    row(bench, n, "wasm Envoy connected", Some(&wasm))?;
    if bench.native() {
        let native = |feed| Filter::KeygateNative {
            dir: &bench.native_dir,
            feed,
            token: FEED_TOKEN,
            usage: true,
        };
        row(bench, n, "native Envoy connected", Some(&native))?;
    }
    println!();
    Ok(())
}

/// One row on its own control plane (so no Envoy of another row lingers
/// on its feed), with an Envoy running the filter `filter` makes if given.
fn row<'a>(
    bench: &'a Bench,
    n: usize,
    what: &str,
    filter: Option<&dyn Fn(SocketAddr) -> Filter<'a>>,
) -> io::Result<()> {
    let name = format!("acknowledged-{}", what.replace(' ', "-"));
    let cp = ControlPlane::start(bench, &name, &ControlPlane::sqlite(bench, &name))?;
    let admin = create_tenant(cp.addr)?;
    let envoy = match filter {
        Some(filter) => {
            let e = Envoy::start(&bench.launch(2), &name, &filter(cp.addr))?;
            let timeout = Duration::from_secs(30);
            envoy::wait_status(
                e.listen,
                Some(&admin),
                |s| s == 200,
                Instant::now(),
                timeout,
            )?;
            // Its fetch stream, not only a worker's own first table.
            wait_envoys(cp.addr, 1)?;
            Some(e)
        }
        None => None,
    };
    let mut conn = Conn::connect(cp.addr)?;
    let (mut took, mut refused) = (Vec::with_capacity(n), 0);
    for i in 0..n {
        let start = Instant::now();
        let (_, key) = create_key(&mut conn, &admin, &format!("acknowledged-{i}"))?;
        took.push(start.elapsed());
        if let Some(e) = &envoy {
            refused += usize::from(envoy::probe(e.listen, Some(&key))? != 200);
        }
    }
    let used = match envoy {
        Some(_) => format!("  first use refused {refused}/{n}"),
        None => String::new(),
    };
    println!(
        "  {what:<24} p50 {:>9}  p99 {:>9}  max {:>9}{used}",
        stats::show(percentile(&took, 50.0)),
        stats::show(percentile(&took, 99.0)),
        stats::show(percentile(&took, 100.0)),
    );
    Ok(())
}
