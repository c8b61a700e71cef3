//! No runner outlives its supervisor: when `hero-supervisor` is killed with SIGKILL (no
//! chance to clean up), its built-in stdio runner sees its stdin close and exits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Child pids of `pid`, from /proc (every thread's `children` list).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purpose: it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn killing_the_supervisor_leaves_no_runner_behind() {
    let port = hero_testkit::free_tcp_port();
    let mut sup = Command::new(env!("CARGO_BIN_EXE_hero-supervisor"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hero-supervisor");
    let deadline = Instant::now() + Duration::from_secs(20);
    let runners = loop {
        let kids = children(sup.id());
        if !kids.is_empty() {
            break kids;
        }
        assert!(
            Instant::now() < deadline,
            "the supervisor never spawned its runner"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    sup.kill().expect("SIGKILL the supervisor");
    sup.wait().expect("reap the supervisor");
    let deadline = Instant::now() + Duration::from_secs(10);
    while runners.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "runner(s) {runners:?} outlived their supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
