//! Runs wrk against one Envoy and parses what it prints.

use crate::envoy::KEY_HEADER;
use crate::stats;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How wrk is run.
pub struct Load<'a> {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    /// CPUs to pin wrk to (`taskset -c`), if any.
    pub cpus: Option<&'a str>,
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// CPU time wrk itself used.
    pub cpu: Duration,
}

/// Runs wrk against `addr`, presenting `key` if given. Fails on any non-2xx answer.
pub fn run(load: &Load<'_>, addr: SocketAddr, key: Option<&str>) -> io::Result<Measured> {
    let mut command = match load.cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .arg("--latency");
    if let Some(key) = key {
        command.arg("-H").arg(format!("{KEY_HEADER}: {key}"));
    }
    let mut child = command
        .arg(format!("http://{addr}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (mut text, mut errors) = (String::new(), String::new());
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut text)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut errors)?;
    }
    // Read wrk's CPU time while it is a zombie: exited, not yet reaped.
    let cpu = stats::cpu_time_at_exit(child.id());
    let status = child.wait()?;
    if !status.success() {
        return Err(io::Error::other(format!("wrk failed: {text}{errors}")));
    }
    let mut measured =
        parse(&text).map_err(|e| io::Error::other(format!("{e}; wrk printed:\n{text}")))?;
    measured.cpu = cpu?;
    Ok(measured)
}

/// Parses wrk's `--latency` output.
pub fn parse(text: &str) -> Result<Measured, String> {
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
    {
        return Err(format!("refused requests: {}", line.trim()));
    }
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors")) {
        return Err(format!("failed connections: {}", line.trim()));
    }
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("no {prefix:?} line"))
    };
    let requests_per_second = field("Requests/sec:")?
        .parse()
        .map_err(|_| "bad Requests/sec".to_string())?;
    Ok(Measured {
        requests_per_second,
        p50: duration(field("50%")?)?,
        p99: duration(field("99%")?)?,
        cpu: Duration::ZERO,
    })
}

/// A wrk duration such as `312.00us`, `1.20ms` or `2.01s`.
fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("bad number {text:?}"))?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(format!("unknown unit in {text:?}")),
    };
    Ok(Duration::from_secs_f64(number * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 5s test @ http://127.0.0.1:1/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   610.12us  100.00us   5.00ms   90.00%
    Req/Sec    52.10k     1.00k   55.00k    70.00%
  Latency Distribution
     50%  590.00us
     75%  650.00us
     90%  700.00us
     99%    1.20ms
  259000 requests in 5.00s, 30.00MB read
Requests/sec:  51800.25
Transfer/sec:      6.00MB
";

    #[test]
    fn parses_wrk_output() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.requests_per_second, 51800.25);
        assert_eq!(m.p50, Duration::from_micros(590));
        assert_eq!(m.p99, Duration::from_micros(1200));
    }

    #[test]
    fn refuses_non_2xx_and_socket_errors() {
        let text = format!("{SAMPLE}  Non-2xx or 3xx responses: 12\n");
        assert!(parse(&text).is_err());
        let text = format!("{SAMPLE}  Socket errors: connect 0, read 3, write 0, timeout 0\n");
        assert!(parse(&text).is_err());
    }
}
