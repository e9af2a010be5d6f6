//! A private PostgreSQL for one test: `scripts/pg.sh while <this process>`
//! (initdb in a temp dir, pg_ctl on a free loopback port), stopped and
//! removed when the handle drops, or at the latest once the test binary
//! exits.

use crate::paths::repo_root;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running server; stopped on drop.
pub struct Postgres {
    /// `postgres://keygate:<password>@127.0.0.1:<port>/postgres`.
    pub url: String,
    script: Child,
}

impl Postgres {
    /// Starts a server (Debian's PostgreSQL must be installed: `make test`
    /// and `.ci/run` install it with `scripts/pg.sh ensure`).
    pub fn start() -> Postgres {
        let mut script = Command::new(repo_root().join("scripts/pg.sh"))
            .arg("while")
            .arg(std::process::id().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run scripts/pg.sh: {e}"));
        let mut url = String::new();
        if let Some(out) = script.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut url);
        }
        assert!(
            url.starts_with("postgres://"),
            "scripts/pg.sh did not start PostgreSQL"
        );
        Postgres {
            url: url.trim().to_string(),
            script,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGTERM: the script stops the server and removes its directory.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.script.id().to_string())
            .status();
        let _ = self.script.wait();
    }
}
