//! A private Redis Cluster: three masters and three replicas of
//! `redis-server --cluster-enabled yes` on free loopback ports, joined by
//! `redis-cli --cluster create`, killed on drop.
//!
//! No orphans: a static cluster (one per test binary, [`RedisCluster::shared`]) is never
//! dropped, so every cluster also starts a watchdog (`sh`, outside the test process's
//! control) that polls the test process every 200 ms and, once it is gone, SIGKILLs the
//! six servers and removes their directory. A dropped cluster is killed at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{find_on_path, free_tcp_port};

/// How long [`RedisCluster::start`] waits for the cluster to be up (every node
/// `cluster_state:ok`, every master with its replica connected and in sync).
pub const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Nodes of a test cluster: three masters, each with one replica.
const NODES: usize = 6;

/// `cluster-node-timeout` of the test cluster (ms): a killed master's replica takes over
/// within a few seconds.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// Options for a [`RedisCluster`].
#[derive(Debug, Clone, Default)]
pub struct RedisClusterBuilder {
    aof: bool,
}

impl RedisClusterBuilder {
    /// Turns every node's append-only file on (`appendfsync always`, a directory per
    /// node), so the data survives [`RedisCluster::kill_all_nodes`] and
    /// [`RedisCluster::restart_all`] (chaos tests). Off by default.
    pub fn aof(mut self, on: bool) -> Self {
        self.aof = on;
        self
    }

    /// Starts the cluster (see [`RedisCluster::start`]).
    pub fn start(self) -> RedisCluster {
        RedisCluster::start_with(&self)
    }
}

/// A private Redis Cluster (see the module docs). Killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    dir: PathBuf,
    server: PathBuf,
    aof: bool,
    ports: Vec<u16>,
    /// Each node's cluster bus port.
    buses: Vec<u16>,
    children: Vec<Option<Child>>,
    watchdog: Option<Child>,
}

impl RedisCluster {
    /// Starts six nodes and joins them (three masters, one replica each), then waits
    /// until the cluster answers. Panics with what to install when `redis-server` or
    /// `redis-cli` is missing. A port another process took meanwhile (the ports are
    /// picked free, then bound by the nodes) fails an attempt; up to three attempts are
    /// made, each on fresh ports.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(&RedisClusterBuilder::default())
    }

    /// Options (AOF) before starting.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    fn start_with(options: &RedisClusterBuilder) -> RedisCluster {
        let server = find_on_path("redis-server").unwrap_or_else(|| {
            panic!("redis-server not found: install it (apt-get install redis-server)")
        });
        let cli = find_on_path("redis-cli").unwrap_or_else(|| {
            panic!("redis-cli not found: install it (apt-get install redis-tools)")
        });
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(&server, &cli, options.aof) {
                Ok(cluster) => return cluster,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "the test cluster did not start in three attempts:\n{}",
            failures.join("\n---\n")
        );
    }

    fn try_start(
        server: &std::path::Path,
        cli: &std::path::Path,
        aof: bool,
    ) -> Result<RedisCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("hero-cluster-")
            .tempdir()
            .expect("create a temp dir for the cluster")
            .keep();
        // 2 x NODES distinct ports: each node's client port and cluster bus port.
        let mut picked = std::collections::BTreeSet::new();
        let mut all = Vec::new();
        while all.len() < 2 * NODES {
            let p = free_tcp_port();
            if picked.insert(p) {
                all.push(p);
            }
        }
        let (ports, buses) = (all[..NODES].to_vec(), all[NODES..].to_vec());
        let children: Vec<Option<Child>> = ports
            .iter()
            .zip(&buses)
            .map(|(&port, &bus)| Some(spawn_node(server, &dir, port, bus, aof)))
            .collect();
        let pids: Vec<String> = children
            .iter()
            .flatten()
            .map(|c| c.id().to_string())
            .collect();
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; kill -9 {pids} 2>/dev/null; rm -rf '{dir}'",
            me = std::process::id(),
            pids = pids.join(" "),
            dir = dir.display(),
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the cluster watchdog (sh)");
        // Dropped (killed, its directory removed) on any failure below.
        let mut cluster = RedisCluster {
            dir,
            server: server.to_owned(),
            aof,
            ports,
            buses,
            children,
            watchdog: Some(watchdog),
        };
        let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
        for i in 0..NODES {
            let (port, bus) = (cluster.ports[i], cluster.buses[i]);
            while command(port, &["PING"]).as_deref() != Some("PONG") {
                if let Some(child) = cluster.children[i].as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    let log = std::fs::read_to_string(cluster.dir.join(format!("node-{port}.log")))
                        .unwrap_or_default();
                    return Err(format!("node {port} exited ({status}):\n{log}"));
                }
                cluster.check_deadline(deadline, &format!("node {port} did not answer PING"))?;
                std::thread::sleep(Duration::from_millis(20));
            }
            // The bus listens once the node answers: if not, another process has it.
            if TcpStream::connect(("127.0.0.1", bus)).is_err() {
                return Err(format!(
                    "node {port}: its cluster bus port {bus} is not its own"
                ));
            }
        }
        let out = cluster.dir.join("create.out");
        let mut create = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create.out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-cli --cluster create");
        let status = loop {
            if let Some(status) = create.try_wait().expect("wait for redis-cli") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = create.kill();
                let _ = create.wait();
                let log = std::fs::read_to_string(&out).unwrap_or_default();
                return Err(format!("redis-cli --cluster create did not finish:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !status.success() {
            let log = std::fs::read_to_string(&out).unwrap_or_default();
            return Err(format!("redis-cli --cluster create failed:\n{log}"));
        }
        cluster.wait_until_up(deadline)?;
        Ok(cluster)
    }

    /// One cluster for the whole test binary, started by the first caller; tests
    /// sharing it use key prefixes of their own. Its nodes die with the test process
    /// (the watchdog, see the module docs).
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(RedisCluster::start)
    }

    /// The nodes' URLs (`redis://127.0.0.1:<port>`), masters and replicas alike: seeds.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The nodes' ports, in start order.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The ports of the nodes that are masters now (as `CLUSTER NODES` on a live node
    /// says), sorted.
    pub fn master_ports(&self) -> Vec<u16> {
        let mut masters = Vec::new();
        for line in self.nodes_lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 2
                && f[2].contains("master")
                && !f[2].contains("fail")
                && let Some(port) = parse_port(f[1])
            {
                masters.push(port);
            }
        }
        masters.sort_unstable();
        masters
    }

    /// The ports of the live replicas of the master on `port` now (`CLUSTER NODES`).
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let lines = self.nodes_lines();
        let Some(master_id) = lines.iter().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 2 && parse_port(f[1]) == Some(port)).then(|| f[0].to_owned())
        }) else {
            return Vec::new();
        };
        let mut replicas = Vec::new();
        for line in &lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 3
                && f[2].contains("slave")
                && !f[2].contains("fail")
                && f[3] == master_id
                && let Some(p) = parse_port(f[1])
            {
                replicas.push(p);
            }
        }
        replicas.sort_unstable();
        replicas
    }

    /// The port of the master serving hash slot `slot` now.
    pub fn master_of_slot(&self, slot: u16) -> Option<u16> {
        for line in self.nodes_lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            for range in &f[8..] {
                let (lo, hi) = match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse::<u16>().ok(), hi.parse::<u16>().ok()),
                    None => (range.parse().ok(), range.parse().ok()),
                };
                if let (Some(lo), Some(hi)) = (lo, hi)
                    && (lo..=hi).contains(&slot)
                {
                    return parse_port(f[1]);
                }
            }
        }
        None
    }

    /// SIGKILLs the node on `port` (a fault: its replica takes over after the node
    /// timeout). A no-op for a port already killed.
    pub fn kill_node(&mut self, port: u16) {
        if let Some(i) = self.ports.iter().position(|&p| p == port)
            && let Some(mut child) = self.children[i].take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node on `port` again after [`RedisCluster::kill_node`], with its
    /// cluster config file: it rejoins (a killed master whose replica took over comes
    /// back as that replica's replica) and answers PING. The cluster's watchdog does
    /// not know the new process: drop the cluster (or let the test end normally) to
    /// stop it.
    pub fn restart_node(&mut self, port: u16) {
        let Some(i) = self.ports.iter().position(|&p| p == port) else {
            panic!("no node on port {port}");
        };
        if self.children[i].is_some() {
            return;
        }
        self.children[i] = Some(spawn_node(
            &self.server,
            &self.dir,
            port,
            self.buses[i],
            self.aof,
        ));
        let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
        while command(port, &["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "node {port} did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Moves hash slot `slot` to the master on `to` the way `redis-cli --cluster
    /// reshard` does, while the cluster serves: `CLUSTER SETSLOT .. IMPORTING` on the
    /// target, `.. MIGRATING` on the source, then `CLUSTER GETKEYSINSLOT` and `MIGRATE`
    /// of up to `batch` keys at a time with `pause` between batches (the slot is half
    /// moved meanwhile), then `CLUSTER SETSLOT .. NODE` on the target, the source and
    /// every other master. Returns the number of keys moved (0 when `to` serves the
    /// slot already). Panics with the reply when a step fails.
    pub fn move_slot(&self, slot: u16, to: u16, batch: usize, pause: Duration) -> usize {
        let from = self
            .master_of_slot(slot)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        if from == to {
            return 0;
        }
        let id = |port: u16| {
            command(port, &["CLUSTER", "MYID"]).unwrap_or_else(|| panic!("CLUSTER MYID on {port}"))
        };
        let (from_id, to_id) = (id(from), id(to));
        let slot_arg = slot.to_string();
        let ok = |port: u16, args: &[&str]| match request(port, args) {
            Some(Reply::Simple(s)) if s == "OK" || s == "NOKEY" => {}
            other => panic!("{args:?} on {port}: {other:?}"),
        };
        ok(
            to,
            &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
        );
        ok(
            from,
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
        );
        let mut moved = 0;
        loop {
            let keys = match request(
                from,
                &["CLUSTER", "GETKEYSINSLOT", &slot_arg, &batch.to_string()],
            ) {
                Some(Reply::Array(keys)) => keys,
                other => panic!("CLUSTER GETKEYSINSLOT on {from}: {other:?}"),
            };
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            ok(from, &args);
            moved += keys.len();
            std::thread::sleep(pause);
        }
        let mut order = vec![to, from];
        order.extend(
            self.master_ports()
                .into_iter()
                .filter(|p| *p != to && *p != from),
        );
        for port in order {
            ok(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
        }
        moved
    }

    /// SIGKILLs every node at once: the whole cluster is down (with AOF on, see
    /// [`RedisClusterBuilder::aof`], its data survives for [`RedisCluster::restart_all`]).
    pub fn kill_all_nodes(&mut self) {
        for port in self.ports.clone() {
            self.kill_node(port);
        }
    }

    /// Starts every node killed by [`RedisCluster::kill_all_nodes`] (or
    /// [`RedisCluster::kill_node`]) again, the masters of `masters` first (so that no
    /// replica back before its master is elected in its place), then waits until the
    /// cluster is whole again ([`RedisCluster::wait_healthy`]).
    pub fn restart_all(&mut self, masters: &[u16], timeout: Duration) {
        let mut order: Vec<u16> = masters.to_vec();
        order.extend(self.ports.iter().filter(|p| !masters.contains(p)));
        for port in order {
            self.restart_node(port);
        }
        self.wait_healthy(timeout);
    }

    /// Waits until every live node says `cluster_state:ok` and every master has its
    /// replica connected and in sync: writes acknowledged with `WAIT 1` go through.
    /// Panics after `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.healthy() {
            assert!(
                Instant::now() < deadline,
                "the cluster was not whole again within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every live node `cluster_state:ok`, every live master with a replica in sync.
    fn healthy(&self) -> bool {
        let live = self.live_ports();
        live.iter().all(|&p| {
            command(p, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
        }) && live.iter().all(|&p| {
            command(p, &["INFO", "replication"]).is_some_and(|i| {
                !i.contains("role:master")
                    || (i.contains("connected_slaves:1") && i.contains("state=online"))
            })
        })
    }

    /// Whether the master on `port` has a replica in sync (`INFO replication`).
    pub fn has_synced_replica(&self, port: u16) -> bool {
        command(port, &["INFO", "replication"])
            .is_some_and(|i| i.contains("role:master") && i.contains("state=online"))
    }

    /// Waits until every live node says `cluster_state:ok` and no master has failed
    /// without a replacement. Panics after `timeout`.
    pub fn wait_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let live: Vec<u16> = self.live_ports();
            let ok = live.iter().all(|&p| {
                command(p, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not recover within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(&p, _)| p)
            .collect()
    }

    fn nodes_lines(&self) -> Vec<String> {
        for port in self.live_ports() {
            if let Some(text) = command(port, &["CLUSTER", "NODES"]) {
                return text.lines().map(str::to_owned).collect();
            }
        }
        Vec::new()
    }

    fn wait_until_up(&self, deadline: Instant) -> Result<(), String> {
        loop {
            if self.healthy() {
                return Ok(());
            }
            self.check_deadline(deadline, "the cluster did not come up")?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn check_deadline(&self, deadline: Instant, what: &str) -> Result<(), String> {
        if Instant::now() < deadline {
            return Ok(());
        }
        let log = self
            .ports
            .first()
            .map(|p| {
                std::fs::read_to_string(self.dir.join(format!("node-{p}.log"))).unwrap_or_default()
            })
            .unwrap_or_default();
        Err(format!(
            "{what} within {CLUSTER_START_TIMEOUT:?}; first node's log:\n{log}"
        ))
    }

    fn kill_all(&mut self) {
        for child in self.children.iter_mut() {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// One node of a test cluster (see [`RedisCluster::start`] for the settings).
fn spawn_node(
    server: &std::path::Path,
    dir: &std::path::Path,
    port: u16,
    bus: u16,
    aof: bool,
) -> Child {
    let mut cmd = Command::new(server);
    if aof {
        // One AOF directory per node: the nodes share `dir`.
        cmd.args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--appenddirname", &format!("aof-{port}")]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-port", &bus.to_string()])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        .args(["--cluster-require-full-coverage", "no"])
        .args(["--save", "", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(format!("node-{port}.log")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", server.display()))
}

/// `127.0.0.1:7000@17000` -> 7000.
fn parse_port(addr: &str) -> Option<u16> {
    let host_port = addr.split('@').next()?;
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// One command over RESP to 127.0.0.1:`port`: the reply as text (a simple or bulk
/// string), `None` on any failure or another kind of reply.
fn command(port: u16, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head).ok()?;
    let head = head.trim_end();
    if let Some(simple) = head.strip_prefix('+') {
        return Some(simple.to_owned());
    }
    let len: usize = head.strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0u8; len + 2];
    r.read_exact(&mut body).ok()?;
    body.truncate(len);
    String::from_utf8(body).ok()
}

/// A RESP reply, as far as [`request`] reads them.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the payloads are read through Debug, in panic messages"
)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    /// An array of bulk strings (nil entries left out).
    Array(Vec<String>),
}

/// One command over RESP to 127.0.0.1:`port`, its reply parsed: `None` on a
/// connection failure or a reply it cannot read.
fn request(port: u16, args: &[&str]) -> Option<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let line = |r: &mut BufReader<TcpStream>| -> Option<String> {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        Some(l.trim_end().to_owned())
    };
    let bulk = |r: &mut BufReader<TcpStream>, len: i64| -> Option<Option<String>> {
        if len < 0 {
            return Some(None);
        }
        let mut body = vec![0u8; usize::try_from(len).ok()? + 2];
        r.read_exact(&mut body).ok()?;
        body.truncate(body.len() - 2);
        Some(Some(String::from_utf8(body).ok()?))
    };
    let head = line(&mut r)?;
    let (kind, rest) = head.split_at(1);
    Some(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse().ok()?),
        "$" => Reply::Bulk(bulk(&mut r, rest.parse().ok()?)?),
        "*" => {
            let n: i64 = rest.parse().ok()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                let h = line(&mut r)?;
                let len = h.strip_prefix('$')?.parse().ok()?;
                items.extend(bulk(&mut r, len)?);
            }
            Reply::Array(items)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_serves_and_dies_on_drop() {
        let cluster = RedisCluster::start();
        assert_eq!(cluster.master_ports().len(), 3);
        let port = cluster.master_of_slot(0).expect("slot 0 is served");
        assert!(cluster.ports().contains(&port));

        // A slot moved with a key in it: the key is served by the new master.
        let slot = 15495; // CLUSTER KEYSLOT a
        let from = cluster.master_of_slot(slot).expect("slot served");
        assert_eq!(command(from, &["SET", "{a}k", "v"]).as_deref(), Some("OK"));
        let to = *cluster
            .master_ports()
            .iter()
            .find(|&&p| p != from)
            .expect("another master");
        assert_eq!(cluster.move_slot(slot, to, 10, Duration::ZERO), 1);
        assert_eq!(cluster.master_of_slot(slot), Some(to));
        assert_eq!(command(to, &["GET", "{a}k"]).as_deref(), Some("v"));
        assert_eq!(cluster.move_slot(slot, to, 10, Duration::ZERO), 0);

        let ports = cluster.ports().to_vec();
        drop(cluster);
        for p in ports {
            assert!(command(p, &["PING"]).is_none(), "node {p} still answers");
        }
    }
}
