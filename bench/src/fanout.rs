//! Fan-out: many held long-polls on one control plane, and how fast one
//! revocation reaches them all.
//!
//! One current-thread tokio runtime plays N filters: each holds one
//! keep-alive connection and long-polls `GET /v1/key-table?since=V&wait=60`
//! with the key set and its own `client` id, as docs/feed-protocol.md says,
//! and on each answer asks again from the version it got (which is what
//! makes it count as reached). The bench then revokes keys one at a time
//! and times every poll's answer from the moment the DELETE was sent.

use crate::control_plane::{api, create_key, create_tenant, expect, ControlPlane, Postgres};
use crate::http::{self, Conn};
use crate::stats::{self, percentile};
use crate::{Bench, FEED_TOKEN};
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What the feed's first answer says: version and key set.
fn feed_head(cp: SocketAddr) -> io::Result<(u64, String)> {
    let auth = format!("Bearer {FEED_TOKEN}");
    let r = http::once(
        cp,
        "GET",
        "/v1/key-table?since=0",
        &[("authorization", &auth)],
        None,
    )?;
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| io::Error::other(format!("feed answered {} without {name}", r.status)))
    };
    let version = header("x-keygate-version")?
        .parse()
        .map_err(|_| io::Error::other("bad x-keygate-version"))?;
    Ok((version, header("x-keygate-key-set")?))
}

/// Reads one answer's head and body; the version it names.
async fn read_answer(reader: &mut BufReader<TcpStream>) -> io::Result<Option<u64>> {
    let mut line = String::new();
    let (mut length, mut version) = (0usize, None);
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(io::Error::other("feed closed the connection"));
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = l.strip_prefix("x-keygate-version:") {
            version = v.trim().parse().ok();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(version)
}

/// One simulated filter: long-polls forever, sending each answer's time.
async fn filter(
    cp: SocketAddr,
    id: usize,
    mut since: u64,
    key_set: String,
    answers: mpsc::Sender<Instant>,
) -> io::Result<()> {
    let stream = TcpStream::connect(cp).await?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    loop {
        let request = format!(
            "GET /v1/key-table?since={since}&wait=60&key_set={key_set}&client=bench-{id} HTTP/1.1\r\n\
host: {cp}\r\nauthorization: Bearer {FEED_TOKEN}\r\n\r\n"
        );
        reader.get_mut().write_all(request.as_bytes()).await?;
        let version = read_answer(&mut reader).await?;
        if let Some(v) = version.filter(|&v| v > since) {
            since = v;
            let _ = answers.send(Instant::now());
        }
    }
}

/// Starts `n` filters on a thread of their own; their answer times, and
/// the thread's id (for its CPU time).
fn start_filters(
    cp: SocketAddr,
    n: usize,
    since: u64,
    key_set: String,
) -> io::Result<(mpsc::Receiver<Instant>, u32)> {
    let (tx, rx) = mpsc::channel();
    let (tid_tx, tid_rx) = mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    thread::spawn(move || {
        let _ = tid_tx.send(thread_id());
        runtime.block_on(async move {
            for id in 0..n {
                tokio::spawn(filter(cp, id, since, key_set.clone(), tx.clone()));
                if id % 200 == 199 {
                    // Spread the connects over the listen backlog.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            std::future::pending::<()>().await
        })
    });
    let tid = tid_rx
        .recv()
        .map_err(|_| io::Error::other("the polling thread did not start"))??;
    Ok((rx, tid))
}

/// The calling thread's id (`/proc/thread-self` is `<pid>/task/<tid>`).
fn thread_id() -> io::Result<u32> {
    std::fs::read_link("/proc/thread-self")?
        .file_name()
        .and_then(|n| n.to_str()?.parse().ok())
        .ok_or_else(|| io::Error::other("no thread id in /proc/thread-self"))
}

/// `keygate_feed_bodies_built_total` of the control plane.
fn built(cp: SocketAddr) -> io::Result<u64> {
    metric(cp, "keygate_feed_bodies_built_total")
}

/// A sample of the control plane's `/metrics` (0 when absent).
fn metric(cp: SocketAddr, name: &str) -> io::Result<u64> {
    let r = http::once(cp, "GET", "/metrics", &[], None)?;
    Ok(r.text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0))
}

/// `keygate_feed_envoys` of the control plane.
fn envoys(cp: SocketAddr) -> io::Result<u64> {
    metric(cp, "keygate_feed_envoys")
}

/// Waits (up to 2 minutes) until `n` Envoys are connected to the feed of `cp`.
pub(crate) fn wait_envoys(cp: SocketAddr, n: usize) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while envoys(cp)? < n as u64 {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "only {} of {n} polls held",
                envoys(cp)?
            )));
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    stats::show(d)
}

/// One row: `n` filters long-poll `poll`, `revocations` keys are revoked through `write`.
fn fanout_row(
    write: &ControlPlane,
    poll: &ControlPlane,
    backend: &str,
    n: usize,
    revocations: usize,
) -> io::Result<()> {
    let cp = write;
    let admin = create_tenant(cp.addr)?;
    let mut conn = Conn::connect(cp.addr)?;
    let keys = (0..revocations)
        .map(|i| create_key(&mut conn, &admin, &format!("fanout-{i}")))
        .collect::<io::Result<Vec<_>>>()?;
    thread::sleep(Duration::from_millis(500));
    let (since, key_set) = feed_head(poll.addr)?;
    let idle_rss = stats::memory(poll.guard.pid(), "VmRSS")?;
    let (answers, client_thread) = start_filters(poll.addr, n, since, key_set)?;
    wait_envoys(poll.addr, n)?;
    thread::sleep(Duration::from_secs(1));
    let held_rss = stats::memory(poll.guard.pid(), "VmRSS")?;
    if n > 1 {
        println!(
        "  {backend}: {n} held long-polls; control plane RSS {} idle, {} holding them: {:.1} KiB per held poll",
        stats::mib(idle_rss),
        stats::mib(held_rss),
        held_rss.saturating_sub(idle_rss) as f64 / 1024.0 / n as f64
    );
    }
    let (mut after_answer, mut after_first, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    let mut costs = Costs::default();
    for (id, _) in &keys {
        let before = Cost::now(poll, client_thread)?;
        let sent = Instant::now();
        let r = api(
            cp.addr,
            "DELETE",
            &format!("/api/v1/api-keys/{id}"),
            &admin,
            None,
        )?;
        let answered = sent.elapsed();
        let propagated = expect(&r, 200, "revoke")?
            .get("propagated")
            .cloned()
            .unwrap_or_default();
        let mut times = (0..n)
            .map(|_| {
                answers
                    .recv_timeout(Duration::from_secs(30))
                    .map(|t| t.duration_since(sent))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| io::Error::other("a long-poll was not answered within 30 s"))?;
        times.sort();
        let first = times.first().copied().unwrap_or_default();
        let last = times.last().copied().unwrap_or_default();
        if revocations <= 10 {
            println!(
            "    DELETE answered after {} ({propagated}); polls answered from {} to {} after it was sent",
            ms(answered),
            ms(first),
            ms(last)
        );
        }
        costs.add(
            &before,
            &Cost::now(poll, client_thread)?,
            first,
            last - first,
        );
        deletes.push(answered);
        after_answer.extend(times.iter().map(|t| t.saturating_sub(answered)));
        after_first.extend(times.iter().map(|t| t.saturating_sub(first)));
        thread::sleep(Duration::from_millis(200));
    }
    let line = |what: &str, v: &[Duration]| {
        println!(
            "    {what:<44} p50 {:>9}  p99 {:>9}  max {:>9}",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(percentile(v, 100.0))
        )
    };
    line("DELETE sent -> its 200", &deletes);
    line("first poll answered (~commit) -> each answer", &after_first);
    line("DELETE 200 -> each answer (0 = before it)", &after_answer);
    if n > 1 {
        costs.print();
    }
    Ok(())
}

/// What the process side of one revocation cost so far: the control
/// plane's CPU, the bench's polling thread's CPU, the feed's builds.
struct Cost {
    server: Duration,
    client: Duration,
    built: u64,
}

impl Cost {
    fn now(cp: &ControlPlane, client_thread: u32) -> io::Result<Cost> {
        Ok(Cost {
            server: stats::cpu_time(cp.guard.pid())?,
            client: stats::cpu_time(client_thread)?,
            built: built(cp.addr)?,
        })
    }
}

/// Where each revocation's time went, one sample per revocation.
#[derive(Default)]
struct Costs {
    /// DELETE sent -> first poll answered: commit, wake, one read and encode.
    first: Vec<Duration>,
    /// First -> last poll answered: writing every answer, the client reading them.
    spread: Vec<Duration>,
    server: Vec<Duration>,
    client: Vec<Duration>,
    built: Vec<u64>,
}

impl Costs {
    fn add(&mut self, before: &Cost, after: &Cost, first: Duration, spread: Duration) {
        self.first.push(first);
        self.spread.push(spread);
        self.server.push(after.server.saturating_sub(before.server));
        self.client.push(after.client.saturating_sub(before.client));
        self.built.push(after.built.saturating_sub(before.built));
    }

    fn print(&self) {
        let median = |v: &[Duration]| ms(percentile(v, 50.0));
        let mut built = self.built.clone();
        built.sort_unstable();
        println!(
            "    breakdown per revocation (median): DELETE sent -> first answer {} (commit, one wake, \
one read + encode); first -> last answer {} (every answer written and read back); \
CPU: control plane {}, the bench's polling thread {} (parsing answers, sending re-polls); \
feed bodies built per change: {:?}",
            median(&self.first),
            median(&self.spread),
            median(&self.server),
            median(&self.client),
            built
        );
    }
}

/// The fan-out rows, SQLite then PostgreSQL.
pub fn run(bench: &Bench) -> io::Result<()> {
    let n = if bench.options.quick { 1000 } else { 10_000 };
    let revocations = if bench.options.quick { 3 } else { 10 };
    println!("## Fan-out (real control plane, simulated filters in one tokio thread, {revocations} revocations)");
    let sqlite = ControlPlane::start(
        bench,
        "fanout-sqlite",
        &ControlPlane::sqlite(bench, "fanout"),
    )?;
    fanout_row(&sqlite, &sqlite, "SQLite", n, revocations)?;
    drop(sqlite);
    let pg = Postgres::start()?;
    let postgres = ControlPlane::start(bench, "fanout-postgres", &pg.url)?;
    fanout_row(&postgres, &postgres, "PostgreSQL", n, revocations)?;
    println!();
    Ok(())
}

/// Revocation across replicas: two control planes on one PostgreSQL, the
/// DELETE through A, one simulated filter long-polling B.
pub fn replicas(bench: &Bench) -> io::Result<()> {
    let revocations = if bench.options.quick { 10 } else { 50 };
    println!("## Revocation across replicas (2 control planes on one PostgreSQL; DELETE on A, one long-poll on B)");
    let pg = Postgres::start()?;
    let a = ControlPlane::start(bench, "replica-a", &pg.url)?;
    let b = ControlPlane::start(bench, "replica-b", &pg.url)?;
    fanout_row(
        &a,
        &b,
        &format!("{revocations} revocations"),
        1,
        revocations,
    )?;
    println!();
    Ok(())
}
