//! Helper processes (authorizer, control plane) that die with the bench.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A child process killed when dropped.
pub struct Guard(Child);

impl Guard {
    /// Starts `program args…`, pinned to `cpus` if given, its stderr to `log`.
    pub fn spawn(
        program: &Path,
        args: &[&str],
        cpus: Option<&str>,
        log: &Path,
    ) -> io::Result<Guard> {
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| io::Error::other(format!("cannot start {}: {e}", program.display())))?;
        Ok(Guard(child))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits until `addr` accepts connections, failing early if the process exits.
    pub fn wait_port(&mut self, addr: SocketAddr, timeout: Duration, log: &Path) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                return Err(io::Error::other(format!("exited with {status}: {log}")));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("{addr} not listening in time")));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
