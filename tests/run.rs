//! `churnwatch run` as its own process, against a broker in another process: the demo's
//! in-process broker serves as the cluster, `run` joins it with its own consumer group, scores
//! the same traffic, serves its metrics, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Some((status, body.to_string()))
}

/// Sum of a metric's samples (all label sets) in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_joins_a_cluster_scores_and_stops_on_sigterm() {
    let bin = env!("CARGO_BIN_EXE_churnwatch");
    let demo_port = free_port();
    let mut demo = Kill(
        Command::new(bin)
            .args(["demo", "--duration", "60", "--customers", "2000"])
            .args(["--listen", &format!("127.0.0.1:{demo_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the demo"),
    );
    // The demo prints its broker's address on stderr.
    let (tx, rx) = mpsc::channel();
    let stderr = demo.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("in-process Kafka broker:").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let bootstrap = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the demo prints its bootstrap address");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("churnwatch.toml");
    let run_port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"run-under-test\"\n\
             alerts_topic = \"run-alerts\"\n\n[http]\nlisten = \"127.0.0.1:{run_port}\"\n\n\
             [input]\nmax_future_skew_secs = 0\n"
        ),
    )
    .unwrap();
    let mut run = Kill(
        Command::new(bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start run"),
    );

    // It consumes, scores and alerts (to its own alerts topic, which the mock broker creates).
    let start = Instant::now();
    let (mut events, mut alerts, mut ready) = (0.0, 0.0, false);
    while start.elapsed() < Duration::from_secs(45) && (events == 0.0 || alerts == 0.0 || !ready) {
        std::thread::sleep(Duration::from_millis(500));
        if let Some((200, text)) = http_get(run_port, "/metrics") {
            events = metric_sum(&text, "churnwatch_events_total");
            alerts = metric_sum(&text, "churnwatch_alerts_total");
        }
        ready = matches!(http_get(run_port, "/readyz"), Some((200, _)));
    }
    assert!(events > 0.0, "run consumed no events");
    assert!(alerts > 0.0, "run raised no alerts after {events} events");
    assert!(ready, "/readyz never became ready");
    assert_eq!(http_get(run_port, "/healthz").map(|r| r.0), Some(200));

    // SIGTERM: finish, flush, commit, exit 0.
    let pid = run.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = run.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "run did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "run exited with {exit}");
}
