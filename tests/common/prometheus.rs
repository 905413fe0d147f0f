//! A real Prometheus server for integration tests.
//!
//! ```ignore
//! mod common;
//! use common::prometheus::{Backfill, PrometheusServer};
//!
//! let data = Backfill::new()
//!     .counter("http_requests_total", &[("service", "checkout-v2"), ("code", "200")], 9.8)
//!     .counter("http_requests_total", &[("service", "checkout-v2"), ("code", "500")], 0.2);
//! let prometheus = PrometheusServer::start_with_openmetrics(&data.to_openmetrics());
//! let address = prometheus.address(); // "http://127.0.0.1:PORT"
//! // or: PrometheusServer::start_scraping("127.0.0.1:8080") scrapes /metrics every second.
//! ```
//!
//! The binaries come from `PROMETHEUS_BIN` / `PROMTOOL_BIN`, else `PATH`,
//! else `/usr/bin`. When they are missing the test panics (it does not skip):
//! run `bash scripts/install-test-deps.sh`.
//!
//! Each server has its own temporary directory and a free port on 127.0.0.1.
//! It is stopped, and its directory removed, when the [`PrometheusServer`] is
//! dropped -- and also when the test process exits without dropping it (e.g.
//! a server kept in a `static OnceLock`): the server runs under a small `sh`
//! supervisor that stops it when its stdin, a pipe from the test process,
//! closes.
#![allow(dead_code)] // each test crate uses part of this module

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long to wait for `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Scrape (and rule evaluation) interval of [`PrometheusServer::start_scraping`].
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// Started by `sh -c SUPERVISOR sh <prometheus> <args...>`, with `$DIR` the
/// server's temporary directory and stdin a pipe from the test process.
/// Stops Prometheus when stdin reaches EOF (the test dropped the server or
/// exited) and then removes `$DIR`; exits with Prometheus's status when
/// Prometheus exits by itself (leaving `$DIR/prometheus.log` to read).
const SUPERVISOR: &str = r#"
exec 3<&0 </dev/null
"$@" >"$DIR/prometheus.log" 2>&1 &
pid=$!
echo "$pid" >"$DIR/prometheus.pid"
( read -r _ <&3; : >"$DIR/stop"; kill "$pid" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
if [ -e "$DIR/stop" ]; then
    rm -rf "$DIR"
else
    kill "$watcher" 2>/dev/null
fi
exit "$status"
"#;

/// A running Prometheus server; stopped on drop.
pub struct PrometheusServer {
    port: u16,
    supervisor: Child,
    /// Closing it stops the server (see [`SUPERVISOR`]).
    stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// A server whose TSDB holds `openmetrics` (backfilled with
    /// `promtool tsdb create-blocks-from openmetrics` before it starts).
    /// Timestamps are in seconds; a trailing `# EOF` is added if missing.
    /// Instant queries look back 5 minutes and `rate(x[1m])` needs two
    /// samples in the last minute, so make the samples reach "now" (or
    /// beyond): [`Backfill`] does, up to 10 minutes into the future.
    pub fn start_with_openmetrics(openmetrics: &str) -> Self {
        let dir = temp_dir();
        let input = dir.path().join("backfill.om");
        let mut text = openmetrics.trim_end().to_string();
        if !text.ends_with("# EOF") {
            text.push_str("\n# EOF");
        }
        text.push('\n');
        std::fs::write(&input, text).expect("write the OpenMetrics file");
        let promtool = binary("PROMTOOL_BIN", "promtool");
        let output = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
        assert!(
            output.status.success(),
            "promtool could not backfill the OpenMetrics data ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        Self::start_in(dir, "global:\n  evaluation_interval: 1m\n".to_string())
    }

    /// An empty server: no data, no scraping.
    pub fn start() -> Self {
        Self::start_in(
            temp_dir(),
            "global:\n  evaluation_interval: 1m\n".to_string(),
        )
    }

    /// A server scraping `http://<target>/metrics` (`target` is `host:port`)
    /// every [`SCRAPE_INTERVAL`], as job `test`. Until the first scrape
    /// queries return no data: poll until they do. The first scrape comes
    /// about 5 s after the start (Prometheus 2.x applies discovered targets
    /// every 5 s), then one every second.
    pub fn start_scraping(target: &str) -> Self {
        let interval = format!("{}s", SCRAPE_INTERVAL.as_secs());
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\n\
             scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{target:?}]\n"
        );
        Self::start_in(temp_dir(), config)
    }

    /// `http://127.0.0.1:PORT`, the base address of the HTTP API.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server logged so far (it logs warnings and errors only).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn start_in(mut dir: tempfile::TempDir, config: String) -> Self {
        let prometheus = binary("PROMETHEUS_BIN", "prometheus");
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write the Prometheus config");
        // The port is free when picked but may be taken before Prometheus
        // binds it: retry with another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            let mut supervisor = Command::new("/bin/sh")
                .arg("-c")
                .arg(SUPERVISOR)
                .arg("sh")
                .arg(&prometheus)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // Backfilled samples may be old, keep them all.
                .arg("--storage.tsdb.retention.time=10y")
                .arg("--log.level=warn")
                .env("DIR", dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {} under sh: {e}", prometheus.display()));
            let stdin = supervisor.stdin.take();
            let mut server = PrometheusServer {
                port,
                supervisor,
                stdin,
                dir,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(log) if attempts < 3 && log.contains("address already in use") => {
                    dir = server.take_dir();
                }
                Err(log) => panic!(
                    "Prometheus ({}) did not become ready on 127.0.0.1:{port}:\n{log}",
                    prometheus.display()
                ),
            }
        }
    }

    /// Poll `/-/ready`; on failure return the server's log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .supervisor
                .try_wait()
                .expect("poll the Prometheus supervisor")
            {
                return Err(format!(
                    "Prometheus exited ({status}); its output:\n{}",
                    self.log()
                ));
            }
            if http_get_is_ok(self.port, "/-/ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "/-/ready not OK after {READY_TIMEOUT:?}; the server's output:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server but keep its directory (to retry on another port).
    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill_now();
        let placeholder = temp_dir();
        let dir = std::mem::replace(&mut self.dir, placeholder);
        let _ = std::fs::remove_file(dir.path().join("prometheus.log"));
        dir
    }

    fn kill_now(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("prometheus.pid")) {
            let _ = Command::new("/bin/sh")
                .args(["-c", "kill -KILL \"$1\" 2>/dev/null", "sh", pid.trim()])
                .status();
        }
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        // EOF on the supervisor's stdin: it stops Prometheus (SIGTERM) and
        // removes the directory.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.supervisor.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        self.kill_now();
    }
}

/// OpenMetrics text for [`PrometheusServer::start_with_openmetrics`]: series
/// sampled every [`Backfill::STEP`] seconds from [`Backfill::PAST`] seconds
/// ago to [`Backfill::FUTURE`] seconds ahead, so that instant queries,
/// `rate(...[1m])` included, see data for the next 10 minutes. (Samples in
/// the future are fine for a server that only serves backfilled data; a
/// scraping server would reject scraped samples older than its newest block.)
#[derive(Debug, Clone)]
pub struct Backfill {
    /// First timestamp (seconds).
    start: i64,
    /// (family, type, series lines), in insertion order.
    families: Vec<(String, &'static str, String)>,
}

impl Default for Backfill {
    fn default() -> Self {
        Self::new()
    }
}

impl Backfill {
    /// Seconds between samples.
    pub const STEP: i64 = 15;
    /// How far back the samples start (seconds).
    pub const PAST: i64 = 30 * 60;
    /// How far ahead the samples go (seconds).
    pub const FUTURE: i64 = 10 * 60;

    pub fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let now = i64::try_from(now).expect("time fits i64");
        Backfill {
            start: now - Self::PAST,
            families: Vec::new(),
        }
    }

    /// A counter named `name` (ending in `_total`) increasing by
    /// `per_second` (0 for a counter that does not move), starting at 0.
    pub fn counter(self, name: &str, labels: &[(&str, &str)], per_second: f64) -> Self {
        let family = name
            .strip_suffix("_total")
            .unwrap_or_else(|| panic!("counter {name:?} must end in _total"));
        self.series(family, "counter", name, labels, |elapsed| {
            per_second * elapsed as f64
        })
    }

    /// A gauge with a constant value.
    pub fn gauge(self, name: &str, labels: &[(&str, &str)], value: f64) -> Self {
        self.series(name, "gauge", name, labels, |_| value)
    }

    fn series(
        mut self,
        family: &str,
        kind: &'static str,
        name: &str,
        labels: &[(&str, &str)],
        value_after: impl Fn(i64) -> f64,
    ) -> Self {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let series = if labels.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", labels.join(","))
        };
        let mut lines = String::new();
        let mut elapsed = 0;
        while elapsed <= Self::PAST + Self::FUTURE {
            let _ = writeln!(
                lines,
                "{series} {} {}",
                value_after(elapsed),
                self.start + elapsed
            );
            elapsed += Self::STEP;
        }
        match self.families.iter_mut().find(|(f, _, _)| f == family) {
            Some((_, existing, body)) => {
                assert_eq!(
                    *existing, kind,
                    "metric family {family:?} used with two types"
                );
                body.push_str(&lines);
            }
            None => self.families.push((family.to_string(), kind, lines)),
        }
        self
    }

    /// The OpenMetrics text, `# EOF` included.
    pub fn to_openmetrics(&self) -> String {
        let mut out = String::new();
        for (family, kind, body) in &self.families {
            let _ = writeln!(out, "# TYPE {family} {kind}");
            out.push_str(body);
        }
        out.push_str("# EOF\n");
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rollwise-prometheus-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// `$ENV`, else `name` on `PATH`, else `/usr/bin/name`; panics if none exists.
fn binary(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env}={} does not exist; unset it or fix it",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p));
    let fallback = Path::new("/usr/bin").join(name);
    on_path.or_else(|| is_executable(&fallback).then_some(fallback)).unwrap_or_else(|| {
        panic!(
            "`{name}` not found (set {env}, or put it on PATH). These tests need a real Prometheus: \
             run `bash scripts/install-test-deps.sh` (installs Debian's prometheus package)"
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A tiny blocking HTTP/1.0 GET; true on status 200.
fn http_get_is_ok(port: u16, path: &str) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200"
}
