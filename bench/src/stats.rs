//! Medians, percentiles and process CPU/memory from /proc.

use std::fs;
use std::io;
use std::time::{Duration, Instant};

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(f64::NAN),
        _ => {
            let a = v.get(n / 2 - 1).copied().unwrap_or(f64::NAN);
            let b = v.get(n / 2).copied().unwrap_or(f64::NAN);
            (a + b) / 2.0
        }
    }
}

/// The nearest-rank `p`-th percentile (0–100) of `values`.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1)).copied().unwrap_or_default()
}

/// Fields of `/proc/<pid>/stat` after the command name (which is in
/// parentheses and may hold spaces): state first.
fn proc_stat(pid: u32) -> io::Result<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("bad /proc stat"))?;
    Ok(rest.split_whitespace().map(String::from).collect())
}

/// CPU time (user + system) a process has used so far, all its threads.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let fields = proc_stat(pid)?;
    // utime and stime are fields 14 and 15 of stat, 12 and 13 of `rest`.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("bad /proc stat field"))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks()))
}

/// CPU time of a child that has exited but is not reaped yet (waits for that).
pub fn cpu_time_at_exit(pid: u32) -> io::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let zombie = proc_stat(pid)?.first().is_some_and(|s| s == "Z");
        if zombie || Instant::now() > deadline {
            return cpu_time(pid);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whole-machine CPU counters from `/proc/stat`, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct SystemCpu {
    /// Time the CPUs were busy (user, nice, system, irq, softirq).
    pub busy: f64,
    /// Time the hypervisor gave our virtual CPUs to someone else.
    pub steal: f64,
}

impl SystemCpu {
    /// The counters now.
    pub fn now() -> io::Result<SystemCpu> {
        let stat = fs::read_to_string("/proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .ok_or_else(|| io::Error::other("no cpu line in /proc/stat"))?;
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / clock_ticks();
        // user nice system idle iowait irq softirq steal
        Ok(SystemCpu {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            steal: at(7),
        })
    }
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on every Linux we know.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Busy CPU (% of one core, all processes) under which the machine counts as
/// quiet before a measurement; the bench's idle Envoys use a few % together.
pub const QUIET: f64 = 10.0;

/// Waits for a quiet machine before a measurement that is not a throughput
/// run; warns when it is not quiet after `patience`.
pub fn settle(what: &str, patience: Duration) -> io::Result<()> {
    let (waited, quiet) = wait_quiet(QUIET, patience)?;
    if !quiet {
        eprintln!(
            "  warning: the machine was still busy after {:.0} s; measuring {what} anyway",
            waited.as_secs_f64()
        );
    }
    Ok(())
}

/// Waits (up to `patience`) until the machine is quiet: over one second, all
/// processes together use less than `threshold` % of one core. Returns how
/// long it waited and whether it is quiet. Call it while the bench's own
/// processes are idle: their CPU counts too.
pub fn wait_quiet(threshold: f64, patience: Duration) -> io::Result<(Duration, bool)> {
    let t0 = Instant::now();
    loop {
        let (before, start) = (SystemCpu::now()?, Instant::now());
        std::thread::sleep(Duration::from_secs(1));
        let after = SystemCpu::now()?;
        let busy = 100.0 * (after.busy - before.busy + after.steal - before.steal)
            / start.elapsed().as_secs_f64();
        if busy < threshold {
            return Ok((t0.elapsed(), true));
        }
        if t0.elapsed() > patience {
            return Ok((t0.elapsed(), false));
        }
    }
}

/// Share of one core a process used while `during` ran, in percent.
pub fn cpu_percent_during<T>(pid: u32, during: impl FnOnce() -> T) -> io::Result<(f64, T)> {
    let (cpu0, t0) = (cpu_time(pid)?, Instant::now());
    let out = during();
    let (cpu1, wall) = (cpu_time(pid)?, t0.elapsed());
    Ok((
        100.0 * (cpu1.saturating_sub(cpu0)).as_secs_f64() / wall.as_secs_f64(),
        out,
    ))
}

/// A `/proc/<pid>/status` memory field (`VmRSS`, `VmHWM`) in bytes.
pub fn memory(pid: u32, field: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other(format!("no {field} for {pid}")))
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A duration in the unit that reads best.
pub fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&ms, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&ms[..1], 99.0), Duration::from_millis(1));
    }

    #[test]
    fn reads_own_process_and_machine() {
        let pid = std::process::id();
        assert!(memory(pid, "VmRSS").unwrap() > 0);
        assert!(cpu_time(pid).is_ok());
        assert!(SystemCpu::now().unwrap().busy > 0.0);
    }

    #[test]
    fn cpu_of_an_exited_child() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        assert!(cpu_time_at_exit(child.id()).is_ok());
        child.wait().unwrap();
    }
}
