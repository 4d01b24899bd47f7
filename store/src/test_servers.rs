//! Throwaway PostgreSQL and S3 (moto) servers on 127.0.0.1, for tests, benches and
//! `cargo xtask dev-servers`. Feature `test-servers`.
//!
//! Each is started at most once per process ([`postgres`], [`s3`]) in a temp directory,
//! under a watchdog shell that stops the server and removes the directory as soon as
//! this process has exited (however it exits: statics are never dropped, so nothing in
//! the process could be trusted to do it). When a server's programs are not installed,
//! the first call prints one line `skipped: install …` on stderr (not captured by the
//! test harness) and returns `None`.
//!
//! - PostgreSQL: `initdb` and `postgres` from `BRAID_PG_BIN`, else the newest
//!   `/usr/lib/postgresql/*/bin`, else `PATH`. `initdb` refuses to run as root, so as
//!   root both run as the `postgres` user (through `setpriv`), in a directory it owns.
//!   `fsync=off`; TCP on 127.0.0.1 only, the unix socket in the temp directory; the
//!   superuser `braid` with password [`PG_PASSWORD`] (scram), so authentication is real.
//! - S3: moto's server (`moto_server`, or `python3 -m moto.server`; pip package
//!   `moto[server]`), which checks no credentials; [`S3Server::env`] gives the `AWS_*`
//!   variables that point a client at it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The password of the test server's superuser `braid`.
pub const PG_PASSWORD: &str = "braid-test-secret";
/// The PostgreSQL superuser of the test server.
pub(crate) const PG_USER: &str = "braid";

/// A running throwaway PostgreSQL.
#[derive(Debug)]
pub struct PgServer {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Its data directory, removed when the process ends.
    pub dir: PathBuf,
}

impl PgServer {
    /// Restarts the server the way an operator does (`pg_ctl restart -m fast`): every
    /// client's connection is closed, connecting is refused until it is back, and it
    /// comes back on the same port with the same data. Returns once it takes queries.
    /// For a server of one's own ([`private_postgres`]): the shared one's other users
    /// would see the outage too.
    pub fn restart(&self) {
        let bin = bin_dir().unwrap_or_default();
        let out = as_postgres_user(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres-restarted.log"))
            .args(["restart", "-m", "fast", "-w", "-t", "60"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => wait_for_query(&bin, self.port, &self.dir.join("postgres-restarted.log")),
            Ok(o) => {
                panic!("pg_ctl restart: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
            }
            Err(e) => panic!("run pg_ctl: {e}"),
        }
    }
}

/// A running throwaway S3 server (moto).
#[derive(Debug)]
pub struct S3Server {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

static PG: OnceLock<Result<PgServer, String>> = OnceLock::new();
static S3: OnceLock<Result<S3Server, String>> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn loud(line: &str) {
    // Straight to the stream: the test harness captures `eprintln!`, not this.
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{line}");
}

/// The PostgreSQL server of this process, started on first use; `None` (after one
/// loud `skipped:` line) when PostgreSQL is not installed. A server that is installed
/// but fails to start panics with its log: that is a broken machine, not a skip.
pub fn postgres() -> Option<&'static PgServer> {
    match PG.get_or_init(start_postgres) {
        Ok(s) => Some(s),
        Err(reason) => {
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| loud(&format!("skipped: install postgresql ({reason})")));
            None
        }
    }
}

/// A PostgreSQL server of the caller's own, started now and stopped when the process
/// ends, for a test that restarts it ([`PgServer::restart`]); `None` as [`postgres`].
pub fn private_postgres() -> Option<PgServer> {
    postgres()?;
    match start_postgres() {
        Ok(s) => Some(s),
        Err(reason) => panic!("a second postgres did not start: {reason}"),
    }
}

/// The S3 server of this process, started on first use; `None` (after one loud
/// `skipped:` line) when moto is not installed.
pub fn s3() -> Option<&'static S3Server> {
    match S3.get_or_init(start_moto) {
        Ok(s) => Some(s),
        Err(reason) => {
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| loud(&format!("skipped: install moto's S3 server ({reason})")));
            None
        }
    }
}

/// A name unique in this process and across processes.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl PgServer {
    /// The location of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new empty database and returns its location.
    pub fn fresh_database(&self) -> String {
        let name = unique("t");
        let out = Command::new(bin_dir().map(|b| b.join("psql")).unwrap_or_else(|| "psql".into()))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", PG_USER, "-d", "postgres", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .env("PGPASSWORD", PG_PASSWORD)
            .output();
        match out {
            Ok(o) if o.status.success() => self.url(&name),
            Ok(o) => panic!("createdb {name}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("run psql: {e}"),
        }
    }
}

impl S3Server {
    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `AWS_*` variables that point an S3 client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Creates a new empty bucket and returns `s3://bucket/braid`.
    pub fn fresh_bucket(&self) -> String {
        let name = unique("b");
        self.create_bucket(&name);
        format!("s3://{name}/braid")
    }

    /// Creates bucket `name` (moto takes an unsigned request).
    pub fn create_bucket(&self, name: &str) {
        let status =
            http(self.port, "PUT", &format!("/{name}")).unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
        assert!(status == 200, "create bucket {name}: HTTP {status}");
    }
}

fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad reply {text:?}")))
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn bin_dir() -> Option<PathBuf> {
    if let Ok(b) = std::env::var("BRAID_PG_BIN") {
        return Some(PathBuf::from(b));
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false)
}

/// Starts `script` (sh) under a watchdog: once this process is gone, `$STOP` runs.
fn watchdog(start: &str, stop: &str, envs: &[(&str, String)]) -> std::io::Result<()> {
    let script = format!("{start}\nwhile kill -0 $WATCH 2>/dev/null; do sleep 0.5; done\n{stop}\n");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).env("WATCH", std::process::id().to_string());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // The watchdog outlives this process on purpose; nothing waits for it.
    cmd.spawn().map(drop)
}

fn wait_for_port(port: u16, what: &str, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    Err(format!("{what} did not listen on 127.0.0.1:{port} within 60 s; its log:\n{log}"))
}

/// `program` run as the `postgres` user when this process is root (PostgreSQL's
/// programs refuse to run as root), else as this user.
fn as_postgres_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start_postgres() -> Result<PgServer, String> {
    let Some(bin) = bin_dir().filter(|b| b.join("initdb").is_file() && b.join("postgres").is_file()) else {
        return Err(
            "apt-get install postgresql; looked for initdb in BRAID_PG_BIN and /usr/lib/postgresql/*/bin".to_owned()
        );
    };
    let root = is_root();
    if root && !on_path("setpriv") {
        return Err("running as root needs setpriv (util-linux) to run the server as the postgres user".into());
    }
    let dir = tempfile::Builder::new().prefix("braid-pg-").tempdir().map_err(|e| e.to_string())?.keep();
    let data = dir.join("data");
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, PG_PASSWORD).map_err(|e| e.to_string())?;
    if root {
        let ok = Command::new("chown").args(["-R", "postgres:"]).arg(&dir).status().map(|s| s.success());
        if !matches!(ok, Ok(true)) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(
                "cannot hand the temp directory to the postgres user (chown failed; is there a `postgres` user?)"
                    .into(),
            );
        }
    }
    let out = as_postgres_user(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", PG_USER, "-E", "UTF8", "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .map_err(|e| format!("run initdb: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        panic!("initdb failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let port = free_port();
    let log = dir.join("postgres.log");
    let run = if root { "setpriv --reuid=postgres --regid=postgres --init-groups" } else { "" };
    let start = format!(
        "{run} \"$BIN/postgres\" -D \"$DIR/data\" -k \"$DIR\" -h 127.0.0.1 -p {port} -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=300 -c shared_buffers=128MB >\"$DIR/postgres.log\" 2>&1 &\npg=$!"
    );
    // `pg_ctl stop` reaches the server whichever process started it last (a restart
    // starts a new one); the `kill` covers one that never wrote its pid file.
    let stop = format!(
        "{run} \"$BIN/pg_ctl\" -D \"$DIR/data\" stop -m fast -w >/dev/null 2>&1; kill -INT $pg 2>/dev/null; wait $pg; rm -rf \"$DIR\""
    );
    watchdog(&start, &stop, &[("BIN", bin.display().to_string()), ("DIR", dir.display().to_string())])
        .map_err(|e| format!("start postgres: {e}"))?;
    if let Err(e) = wait_for_port(port, "postgres", &log) {
        panic!("{e}");
    }
    wait_for_query(&bin, port, &log);
    Ok(PgServer { port, dir })
}

/// Waits until a query on `port` goes through (listening is not ready), panicking with
/// the server's log after 30 s.
fn wait_for_query(bin: &Path, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                PG_USER,
                "-d",
                "postgres",
                "-qAt",
                "-c",
                "SELECT 1",
            ])
            .env("PGPASSWORD", PG_PASSWORD)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "postgres on port {port} never answered; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_moto() -> Result<S3Server, String> {
    let program = if on_path("moto_server") {
        "moto_server".to_owned()
    } else if Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        "python3 -m moto.server".to_owned()
    } else {
        return Err("pip install 'moto[server]'; looked for moto_server on PATH and python3's moto.server".into());
    };
    let dir = tempfile::Builder::new().prefix("braid-s3-").tempdir().map_err(|e| e.to_string())?.keep();
    let port = free_port();
    let log = dir.join("moto.log");
    let start = format!("{program} -H 127.0.0.1 -p {port} >\"$DIR/moto.log\" 2>&1 &\nm=$!");
    let stop = "kill $m 2>/dev/null; wait $m; rm -rf \"$DIR\"";
    watchdog(&start, stop, &[("DIR", dir.display().to_string())]).map_err(|e| format!("start moto: {e}"))?;
    if let Err(e) = wait_for_port(port, "moto", &log) {
        panic!("{e}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/").is_err() {
        if Instant::now() > deadline {
            panic!("moto on port {port} never answered; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(S3Server { port })
}
