//! A throwaway PostgreSQL cluster for tests (the `test-support` feature):
//! `initdb` in a temporary folder, the server on a free loopback port with
//! no Unix socket, trust authentication for the user `tradebox`, stopped
//! and removed when the [`PgCluster`] is dropped (a panicking test drops it
//! too). `initdb` refuses to run as root, so a root caller runs the
//! server as `nobody`.
//!
//! The binaries are found in `TRADEBOX_PG_BIN`, else in the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package, which
//! `scripts/test` installs), else on `PATH`. Without them, [`PgCluster::start`]
//! fails and says so: the tests that need it fail rather than skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The unprivileged user a root caller runs the server as.
const NOBODY: (u32, u32) = (65534, 65534);

/// A running throwaway cluster; see the module documentation.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_nobody: bool,
    databases: AtomicU32,
    /// TLS only ([`PgCluster::start_tls`]).
    tls: bool,
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("TRADEBOX_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists());
    on_path.ok_or_else(|| {
        "PostgreSQL's initdb and pg_ctl were not found (TRADEBOX_PG_BIN, \
         /usr/lib/postgresql/*/bin, PATH): install Debian's `postgresql` package \
         (scripts/test does)"
            .to_string()
    })
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl PgCluster {
    /// Makes and starts a cluster.
    pub fn start() -> Result<PgCluster, String> {
        PgCluster::start_with(false)
    }

    /// Makes and starts a cluster that takes TLS connections only, with a
    /// server certificate for `localhost` and `127.0.0.1` signed by a CA of
    /// its own ([`PgCluster::ca_file`]); [`PgCluster::url`] asks for
    /// `sslmode=require`.
    pub fn start_tls() -> Result<PgCluster, String> {
        PgCluster::start_with(true)
    }

    fn start_with(tls: bool) -> Result<PgCluster, String> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("tradebox-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let as_nobody = is_root();
        if as_nobody {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        if as_nobody {
            std::os::unix::fs::chown(&data, Some(NOBODY.0), Some(NOBODY.1))
                .map_err(|e| format!("chown {}: {e}", data.display()))?;
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            as_nobody,
            databases: AtomicU32::new(0),
            tls,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "tradebox",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        )?;
        if tls {
            cluster.make_tls()?;
        }
        // A port taken between its choice and the start is tried again.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.pg_ctl("start") {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The CA file of a [`PgCluster::start_tls`] cluster (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Writes a CA, the server's certificate and key, and the settings
    /// that make TLS the only way in.
    fn make_tls(&self) -> Result<(), String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tradebox test CA");
        let ca = ca.self_signed(&ca_key).map_err(e)?;
        let key = KeyPair::generate().map_err(e)?;
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(e)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = server.signed_by(&key, &ca, &ca_key).map_err(e)?;
        let io = |e: std::io::Error| e.to_string();
        std::fs::write(self.ca_file(), ca.pem()).map_err(io)?;
        let data = self.data();
        let (crt, pem) = (data.join("server.crt"), data.join("server.key"));
        std::fs::write(&crt, server.pem()).map_err(io)?;
        std::fs::write(&pem, key.serialize_pem()).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .map_err(io)?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(io)?;
        std::io::Write::write_all(
            &mut conf,
            b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .map_err(io)?;
        if self.as_nobody {
            for f in [&crt, &pem, &data.join("pg_hba.conf")] {
                std::os::unix::fs::chown(f, Some(NOBODY.0), Some(NOBODY.1))
                    .map_err(|e| format!("chown {}: {e}", f.display()))?;
            }
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if self.as_nobody {
            use std::os::unix::process::CommandExt;
            cmd.uid(NOBODY.0).gid(NOBODY.1);
        }
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C");
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pg_ctl(&self, action: &str) -> Result<(), String> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c shared_buffers=16MB -c max_connections=200",
            self.port
        );
        let data = self.data().to_string_lossy().into_owned();
        let log = self.log().to_string_lossy().into_owned();
        let mut args = vec!["-D", &data, "-w", "-t", "60"];
        match action {
            "start" | "restart" => args.extend(["-l", &log, "-o", &options]),
            "stop-fast" => args.extend(["-m", "fast"]),
            _ => args.extend(["-m", "immediate"]),
        }
        args.push(action.trim_end_matches("-fast"));
        // The log is written by the server's user.
        if self.as_nobody && !self.log().exists() {
            std::fs::write(self.log(), b"").map_err(|e| e.to_string())?;
            std::os::unix::fs::chown(self.log(), Some(NOBODY.0), Some(NOBODY.1))
                .map_err(|e| e.to_string())?;
        }
        self.run("pg_ctl", &args).map_err(|e| {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })
    }

    /// Stops the server at once (as a crash would), keeping its data.
    pub fn stop(&self) -> Result<(), String> {
        self.pg_ctl("stop")
    }

    /// Stops the server cleanly, as an operator's restart does (`-m fast`:
    /// sessions are ended and what was committed is kept, which
    /// [`PgCluster::stop`] does not promise with this cluster's settings).
    pub fn stop_clean(&self) -> Result<(), String> {
        self.pg_ctl("stop-fast")
    }

    /// Starts the server again after [`PgCluster::stop`], on the same port.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl("start")
    }

    /// The connection string of database `db`.
    pub fn url(&self, db: &str) -> String {
        let tls = if self.tls { "?sslmode=require" } else { "" };
        format!("postgres://tradebox@127.0.0.1:{}/{db}{tls}", self.port)
    }

    /// The port it listens on (loopback).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new empty database, for one test; its connection string.
    pub fn database(&self) -> Result<String, String> {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{n}");
        let db = crate::PgDb::open(&self.url("postgres")).map_err(|e| e.to_string())?;
        db.write_one(|c| c.run(|client| client.batch_execute(&format!("CREATE DATABASE {name}"))))
            .map_err(|e: crate::DbError| e.to_string())?;
        Ok(self.url(&name))
    }

    /// The folder the cluster lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl("stop");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::{PgDb, IDLE_PROBE};
    use crate::DbError;

    #[test]
    fn a_cluster_serves_a_database_and_stops_when_dropped() {
        let cluster = PgCluster::start().unwrap();
        let url = cluster.database().unwrap();
        let db = PgDb::open(&url).unwrap();
        let n: i32 = db
            .read(|c| c.run(|tx| tx.query_one("SELECT 1 + 1", &[]).map(|r| r.get(0))))
            .unwrap();
        assert_eq!(n, 2);
        assert!(
            db.target().ends_with(&format!(":{}/t0", cluster.port)),
            "{}",
            db.target()
        );
        assert!(!db.target().contains("tradebox@"));

        // Writes commit together or not at all.
        db.write(1, |c| {
            c.run(|tx| tx.batch_execute("CREATE TABLE x (v INT); INSERT INTO x VALUES (1)"))
        })
        .unwrap();
        let failed: Result<(), DbError> = db.write(1, |c| {
            c.run(|tx| tx.batch_execute("INSERT INTO x VALUES (2)"))?;
            c.run(|tx| tx.batch_execute("INSERT INTO nowhere VALUES (3)"))
        });
        assert!(
            matches!(failed, Err(DbError::Postgres { .. })),
            "{failed:?}"
        );
        let sum: i64 = db
            .read(|c| c.run(|tx| tx.query_one("SELECT sum(v) FROM x", &[]).map(|r| r.get(0))))
            .unwrap();
        assert_eq!(sum, 1);

        // The server gone: unavailable at once, not a hang; back by itself.
        cluster.stop().unwrap();
        let down: Result<i32, DbError> =
            db.read(|c| c.run(|tx| tx.query_one("SELECT 1", &[]).map(|r| r.get(0))));
        assert!(matches!(down, Err(DbError::Unavailable { .. })), "{down:?}");
        assert!(down.unwrap_err().is_locked());
        cluster.restart().unwrap();
        let up: i32 = db
            .read(|c| c.run(|tx| tx.query_one("SELECT 3", &[]).map(|r| r.get(0))))
            .unwrap();
        assert_eq!(up, 3);
        // A restart between two operations: the first one after it begins
        // again on a new connection instead of failing.
        cluster.stop().unwrap();
        cluster.restart().unwrap();
        let again: i32 = db
            .read(|c| c.run(|tx| tx.query_one("SELECT 4", &[]).map(|r| r.get(0))))
            .unwrap();
        assert_eq!(again, 4);
        // The same for a single-statement write (no BEGIN to find the
        // broken connection out): it runs once, on a new connection. (The
        // cluster runs without synchronous commits: a checkpoint keeps the
        // table through the crash-like stop.)
        db.write(1, |c| {
            c.run(|tx| tx.batch_execute("CREATE TABLE y (v INT)"))
        })
        .unwrap();
        db.write_one(|c| c.run(|tx| tx.batch_execute("CHECKPOINT")))
            .unwrap();
        std::thread::sleep(IDLE_PROBE);
        cluster.stop().unwrap();
        cluster.restart().unwrap();
        db.write_one(|c| c.execute("INSERT INTO y VALUES (5)", &[]))
            .unwrap();
        let rows: i64 = db
            .read(|c| {
                c.run(|tx| {
                    tx.query_one("SELECT count(*) FROM y", &[])
                        .map(|r| r.get(0))
                })
            })
            .unwrap();
        assert_eq!(rows, 1, "written once");

        let dir = cluster.dir().to_path_buf();
        drop(cluster);
        assert!(!dir.exists());
        assert!(matches!(PgDb::open(&url), Err(DbError::Unavailable { .. })));
    }

    #[test]
    fn settings_that_cannot_be_used_are_refused() {
        for bad in [
            "postgres://h/db?sslmode=allow",
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem",
            "postgres://h:notaport/db",
        ] {
            let e = PgDb::open(bad).unwrap_err();
            assert!(matches!(e, DbError::Config { .. }), "{bad}: {e:?}");
        }
    }
}
