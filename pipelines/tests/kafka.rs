//! The harness for tests through the real broker: the broker itself (`ops/broker.sh`),
//! generated scenarios with replay's actions as the reference, a daemon process with its
//! admin endpoint, and readers of topics.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Starts (idempotently) a broker on `port` with `ops/broker.sh`; its address.
pub(crate) fn broker(port: u16) -> String {
    static STARTED: OnceLock<std::sync::Mutex<Vec<u16>>> = OnceLock::new();
    let started = STARTED.get_or_init(Default::default);
    let mut started = started.lock().unwrap();
    if !started.contains(&port) {
        let o = Command::new(root().join("ops/broker.sh"))
            .arg("start")
            .env("ANNING_BROKER_PORT", port.to_string())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ops/broker.sh start failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        started.push(port);
    }
    format!("127.0.0.1:{port}")
}

pub(crate) fn broker_pid(port: u16) -> i32 {
    let pidfile = root().join(format!("ops/.run/broker-{port}.pid"));
    std::fs::read_to_string(pidfile).unwrap().trim().parse().unwrap()
}

pub(crate) fn tmp(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| crate::util::scratch("daemon")).join(name)
}

pub(crate) fn anning() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anning"))
}

pub(crate) fn run_ok(cmd: &mut Command) -> std::process::Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// A generated day, its registry and the actions replay gives for it.
pub(crate) struct Scenario {
    pub(crate) input: PathBuf,
    pub(crate) registry: PathBuf,
    pub(crate) expected: Vec<serde_json::Value>,
}

pub(crate) fn scenario(name: &str, records: u64, extra_lines: &[&str]) -> Scenario {
    let (gen_out, input, registry) = (
        tmp(&format!("{name}.gen.jsonl")),
        tmp(&format!("{name}.jsonl")),
        tmp(&format!("{name}.csv")),
    );
    run_ok(
        anning()
            .args(["gen", "double11", "--records", &records.to_string(), "--seed", "7", "-q"])
            .arg("--out")
            .arg(&gen_out)
            .arg("--registry")
            .arg(&registry),
    );
    // Bad lines go in the middle of the stream: processing must go on after them.
    let text = std::fs::read_to_string(&gen_out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut f = std::fs::File::create(&input).unwrap();
    for (i, l) in lines.iter().enumerate() {
        if i == lines.len() / 2 {
            for x in extra_lines {
                writeln!(f, "{x}").unwrap();
            }
        }
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let out = tmp(&format!("{name}.replay.jsonl"));
    run_ok(
        anning()
            .arg("replay")
            .arg(&input)
            .arg("--registry")
            .arg(&registry)
            .arg("--out")
            .arg(&out)
            .arg("-q"),
    );
    let expected: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(expected.len() >= 10, "the scenario gives actions to compare");
    Scenario { input, registry, expected }
}

pub(crate) struct Daemon {
    pub(crate) child: Child,
    admin: String,
}

/// A metric's value in a Prometheus exposition: the sum of its series (0 when absent).
pub(crate) fn metric_in(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Topic and group names unique to this test run (the broker outlives runs).
pub(crate) fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

impl Daemon {
    /// Starts a daemon on topics `NAME.in`, `NAME.actions`, `NAME.dlq` and group `NAME`
    /// (NAME from [`unique`]); waits until it is ready.
    pub(crate) fn start(brokers: &str, name: &str, admin_port: u16, registry: &Path) -> Daemon {
        Daemon::start_with(brokers, name, admin_port, registry, &[], &[])
    }

    /// [`Daemon::start`] with more flags and environment.
    pub(crate) fn start_with(brokers: &str, name: &str, admin_port: u16, registry: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let admin = format!("127.0.0.1:{admin_port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(tmp(&format!("{name}.daemon.log")))
            .unwrap();
        let child = anning()
            .args(["daemon", "--brokers", brokers, "--group", name, "--admin", &admin, "--threads", "2"])
            .args([
                "--input-topic",
                &format!("{name}.in"),
                "--actions-topic",
                &format!("{name}.actions"),
                "--dlq-topic",
                &format!("{name}.dlq"),
                "--shadow-topic",
                &format!("{name}.shadow"),
            ])
            .arg("--registry")
            .arg(registry)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon { child, admin };
        d.wait_for(Duration::from_secs(60), "ready", |d| d.get("/readyz").0 == 200);
        d
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, "")
    }

    pub(crate) fn request(&self, method: &str, path: &str, headers: &str) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(&self.admin) else {
            return (0, String::new());
        };
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
        (code, body)
    }

    pub(crate) fn metric(&self, name: &str) -> f64 {
        metric_in(&self.get("/metrics").1, name)
    }

    pub(crate) fn wait_for(&self, limit: Duration, what: &str, ok: impl Fn(&Daemon) -> bool) {
        let t = Instant::now();
        while !ok(self) {
            if t.elapsed() > limit {
                let (_, metrics) = self.get("/metrics");
                let metrics: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).collect();
                panic!("daemon not {what} within {limit:?}; metrics:\n{}", metrics.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill")
                .args([sig, &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// SIGKILL (no shutdown of any kind), and the process reaped.
    pub(crate) fn kill9(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit code.
    pub(crate) fn stop(mut self) -> i32 {
        self.signal("-TERM");
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(t.elapsed() < Duration::from_secs(60), "daemon did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A consumer for reading topics back (assigned, not subscribed; commits nothing).
fn reader(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// A message as read back: key, payload, headers.
type Msg = (Option<Vec<u8>>, Vec<u8>, Vec<(String, String)>);

/// Every message of a topic (all its partitions) from the beginning, until `want` of them
/// arrived or `limit` passed.
pub(crate) fn read_topic(brokers: &str, topic: &str, want: usize, limit: Duration) -> Vec<Msg> {
    read_topic_until(brokers, topic, limit, Duration::ZERO, |got| got.len() >= want)
}

/// Every message of a topic (all its partitions) from the beginning, with one consumer, until
/// `done` holds for what has arrived — then `more` longer, to catch any that should not be
/// there — or `limit` passed.
pub(crate) fn read_topic_until(
    brokers: &str,
    topic: &str,
    limit: Duration,
    more: Duration,
    mut done: impl FnMut(&[Msg]) -> bool,
) -> Vec<Msg> {
    let consumer = reader(brokers);
    let mut tpl = TopicPartitionList::new();
    let partitions = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map(|m| m.topics().first().map_or(1, |t| t.partitions().len().max(1)))
        .unwrap_or(1);
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let t = Instant::now();
    let mut complete: Option<Instant> = None;
    while t.elapsed() < limit {
        if complete.is_none() && done(&out) {
            complete = Some(Instant::now());
        }
        if complete.is_some_and(|c| c.elapsed() >= more) {
            break;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
                anning_pipelines::daemon::headers_of(&m),
            ));
        }
    }
    out
}

/// Actions from a topic (all its partitions) until every expected id has arrived (or
/// `limit`), then three seconds more to catch any that should not be there.
pub(crate) fn read_actions(brokers: &str, topic: &str, expected: &[serde_json::Value], limit: Duration) -> Vec<serde_json::Value> {
    actions_until(brokers, topic, &ids(expected).into_iter().collect(), limit)
}

/// Actions from a topic (all its partitions) until every id of `want` has arrived (or
/// `limit`), then three seconds more to catch any that should not be there.
pub(crate) fn actions_until(brokers: &str, topic: &str, want: &BTreeSet<String>, limit: Duration) -> Vec<serde_json::Value> {
    let value = |(_, p, _): &Msg| serde_json::from_slice::<serde_json::Value>(p).unwrap();
    let (mut seen, mut read) = (BTreeSet::new(), 0);
    read_topic_until(brokers, topic, limit, Duration::from_secs(3), |got| {
        seen.extend(got[read..].iter().map(|m| value(m)["id"].as_str().unwrap().to_string()));
        read = got.len();
        want.is_subset(&seen)
    })
    .iter()
    .map(value)
    .collect()
}

pub(crate) fn produce(brokers: &str, topic: &str, input: &Path) {
    run_ok(anning().args(["produce", "--brokers", brokers, "--topic", topic]).arg(input));
}

pub(crate) fn ids(actions: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = actions.iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}
