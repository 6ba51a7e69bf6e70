//! Running the real `churnwatch` binary: hermetic commands, time limits, piped output read on
//! background threads (so a chatty child never blocks on a full pipe), signals, free ports and
//! a hand-written HTTP/1.1 GET.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_churnwatch");

/// The crate root (where `config/churnwatch.toml` lives).
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A command for the binary, run from the crate root, without any `CHURNWATCH_*` or `RUST_LOG`
/// variable inherited from the environment running the tests.
pub fn churnwatch() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(manifest_dir());
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("CHURNWATCH_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Output accumulated by a reader thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn pump(reader: impl Read + Send + 'static, into: Captured) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => into.0.lock().unwrap().extend_from_slice(&line),
            }
        }
    })
}

/// What a finished (or killed) process left behind.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The process did not exit within the limit and was killed.
    pub timed_out: bool,
    /// From spawning to exit (or kill).
    pub elapsed: Duration,
    pub command: String,
}

impl Output {
    /// A one-stop description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {:?} (timed out: {}, after {:.1} s)\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            self.timed_out,
            self.elapsed.as_secs_f64(),
            tail(&self.stdout, 4000),
            tail(&self.stderr, 8000)
        )
    }
}

/// The last `max` bytes of `s` (at a char boundary), for readable failure messages.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A running child with its stdout and stderr being read on background threads.
pub struct Running {
    child: Child,
    stdout: Captured,
    stderr: Captured,
    pumps: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
    started: Instant,
    command: String,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = format!("{cmd:?}");
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {command}: {e}"));
        let stdout = Captured::default();
        let stderr = Captured::default();
        let pumps = vec![
            pump(child.stdout.take().unwrap(), stdout.clone()),
            pump(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Running {
            child,
            stdout,
            stderr,
            pumps,
            status: None,
            started,
            command,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Wait up to `limit` for the process to exit.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait up to `limit` for a stderr line containing `needle`; returns that line.
    pub fn wait_for_stderr_line(&mut self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.stderr().lines().find(|l| l.contains(needle)) {
                return Some(l.to_string());
            }
            if Instant::now() >= deadline || self.try_status().is_some() {
                // One last look: the line may have arrived together with the exit.
                return self
                    .stderr()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_string);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send a signal by name (`TERM`, `INT`, ...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill(1)");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Wait up to `limit` for the process to exit (killing it if it does not), then collect
    /// its output.
    pub fn finish(&mut self, limit: Duration) -> Output {
        let mut timed_out = false;
        let status = match self.wait_timeout(limit) {
            Some(s) => s,
            None => {
                timed_out = true;
                let _ = self.child.kill();
                let s = self.child.wait().expect("wait after kill");
                self.status = Some(s);
                s
            }
        };
        let elapsed = self.started.elapsed();
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
        Output {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
            timed_out,
            elapsed,
            command: self.command.clone(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave a child behind when a test fails half-way.
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `cmd` to completion, killing it after `limit`.
pub fn run(cmd: Command, limit: Duration) -> Output {
    Running::spawn(cmd).finish(limit)
}

/// A currently free TCP port on 127.0.0.1, never the same twice in one test process.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding 127.0.0.1:0")
            .port();
        if handed_out.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET path` over a fresh connection (HTTP/1.1, `Connection: close`).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    s.flush()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad("no status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("bad chunked body"))?
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Sum of every sample of the metric `name` (any labels) in a Prometheus text exposition;
/// `None` when the metric has no sample at all.
pub fn metric_sum(exposition: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in exposition.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = series.split('{').next().unwrap_or("").trim();
        if metric == name {
            if let Ok(v) = value.trim().parse::<f64>() {
                found = true;
                sum += v;
            }
        }
    }
    found.then_some(sum)
}

/// The sample lines of the metric `name`, for failure messages.
pub fn metric_lines(exposition: &str, name: &str) -> String {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Start `churnwatch demo` as a Kafka cluster with traffic for another process to use: its
/// in-process broker and simulated customers, for `duration_secs`. Returns the demo and the
/// broker's bootstrap address.
pub fn demo_cluster(duration_secs: u32, customers: u32) -> (Running, String) {
    const MARKER: &str = "in-process Kafka broker:";
    let mut cmd = churnwatch();
    cmd.args(["demo", "--duration", &duration_secs.to_string()])
        .args(["--customers", &customers.to_string()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())]);
    let mut demo = Running::spawn(cmd);
    let line = demo
        .wait_for_stderr_line(MARKER, Duration::from_secs(30))
        .expect("the demo prints its bootstrap address");
    let bootstrap = line.split(MARKER).nth(1).unwrap().trim().to_string();
    (demo, bootstrap)
}
