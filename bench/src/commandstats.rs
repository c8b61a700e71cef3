//! Redis work per job: `INFO commandstats`, `INFO stats` and `INFO cpu` of the bench's
//! private redis-server read before and after each phase of a Redis burn-down, as
//! calls and microseconds per job for each command Redis reports.
//!
//! Redis counts a command a script runs under its own name too (and its time inside the
//! script's `evalsha`), so the rows do not add up: `evalsha` is the scripts' whole
//! time, the other rows say what it is made of (plus what the store sends directly).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};

/// Counters of one `INFO` reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// Command (lowercase, as Redis names it) -> (calls, usec).
    commands: BTreeMap<String, (u64, u64)>,
    /// `total_commands_processed`.
    total_commands: u64,
    /// `used_cpu_user + used_cpu_sys` of redis-server, microseconds.
    cpu_usec: u64,
}

impl Snapshot {
    /// Reads the counters of the Redis at `url` (one `INFO commandstats stats cpu`).
    pub(crate) async fn read(url: &str) -> Result<Snapshot> {
        let client = redis::Client::open(url).context("open the bench's Redis")?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .context("connect to the bench's Redis")?;
        let text: String = redis::cmd("INFO")
            .arg("commandstats")
            .arg("stats")
            .arg("cpu")
            .query_async(&mut conn)
            .await
            .context("INFO commandstats stats cpu")?;
        Ok(Snapshot::parse(&text))
    }

    /// Parses an `INFO` reply; lines it does not know are skipped.
    pub(crate) fn parse(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        let mut cpu = 0.0f64;
        for line in text.lines() {
            let Some((name, value)) = line.trim().split_once(':') else {
                continue;
            };
            if let Some(command) = name.strip_prefix("cmdstat_") {
                let mut calls = 0;
                let mut usec = 0;
                for kv in value.split(',') {
                    match kv.split_once('=') {
                        Some(("calls", v)) => calls = v.parse().unwrap_or(0),
                        Some(("usec", v)) => usec = v.parse().unwrap_or(0),
                        _ => {}
                    }
                }
                s.commands.insert(command.to_owned(), (calls, usec));
            } else if name == "total_commands_processed" {
                s.total_commands = value.parse().unwrap_or(0);
            } else if name == "used_cpu_user" || name == "used_cpu_sys" {
                cpu += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        s.cpu_usec = (cpu * 1e6).round() as u64;
        s
    }

    /// What happened from `before` to `self`, less the `INFO` call that read `before`.
    pub(crate) fn since(&self, before: &Snapshot) -> Delta {
        let mut commands = BTreeMap::new();
        for (name, &(calls, usec)) in &self.commands {
            if name == "info" {
                continue;
            }
            let (c0, u0) = before.commands.get(name).copied().unwrap_or((0, 0));
            let d = (calls.saturating_sub(c0), usec.saturating_sub(u0));
            if d.0 > 0 {
                commands.insert(name.clone(), d);
            }
        }
        Delta {
            commands,
            total_commands: self
                .total_commands
                .saturating_sub(before.total_commands)
                .saturating_sub(1),
            cpu_usec: self.cpu_usec.saturating_sub(before.cpu_usec),
        }
    }
}

/// The counters' change over one phase (or the sum over several runs).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Delta {
    commands: BTreeMap<String, (u64, u64)>,
    total_commands: u64,
    cpu_usec: u64,
}

impl Delta {
    /// redis-server's CPU (user + system) over the phase, µs.
    pub(crate) fn cpu_usec(&self) -> u64 {
        self.cpu_usec
    }

    /// Commands Redis processed over the phase (scripts' own commands not counted).
    pub(crate) fn total_commands(&self) -> u64 {
        self.total_commands
    }

    fn add(&mut self, other: &Delta) {
        for (name, &(calls, usec)) in &other.commands {
            let e = self.commands.entry(name.clone()).or_default();
            e.0 += calls;
            e.1 += usec;
        }
        self.total_commands += other.total_commands;
        self.cpu_usec += other.cpu_usec;
    }
}

/// Redis work of burn-down runs: queueing (create + start per job) and draining
/// (supervisor claims and completes), summed over runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Work {
    pub(crate) jobs: u64,
    pub(crate) runs: usize,
    pub(crate) queue: Delta,
    pub(crate) drain: Delta,
}

impl Work {
    pub(crate) fn add(&mut self, other: &Work) {
        self.jobs += other.jobs;
        self.runs += other.runs;
        self.queue.add(&other.queue);
        self.drain.add(&other.drain);
    }

    /// The markdown table: per command, calls and usec per job while queueing and while
    /// draining, and usec per call over both; then every command and redis-server's CPU.
    pub(crate) fn table(&self) -> String {
        let jobs = self.jobs.max(1) as f64;
        let mut names: Vec<&String> = self
            .queue
            .commands
            .keys()
            .chain(self.drain.commands.keys())
            .collect();
        names.sort();
        names.dedup();
        let get = |d: &Delta, n: &str| d.commands.get(n).copied().unwrap_or((0, 0));
        // Most time first.
        names.sort_by_key(|n| {
            let (q, d) = (get(&self.queue, n), get(&self.drain, n));
            std::cmp::Reverse(q.1 + d.1)
        });
        let per_job = |x: u64| x as f64 / jobs;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| command | queue calls/job | queue usec/job | drain calls/job | drain usec/job | usec/call |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for n in names {
            let (q, d) = (get(&self.queue, n), get(&self.drain, n));
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.2} | {:.3} | {:.2} | {:.2} |",
                n.to_uppercase(),
                per_job(q.0),
                per_job(q.1),
                per_job(d.0),
                per_job(d.1),
                (q.1 + d.1) as f64 / (q.0 + d.0).max(1) as f64,
            );
        }
        let _ = writeln!(
            out,
            "| all commands (total_commands_processed) | {:.3} | - | {:.3} | - | - |",
            per_job(self.queue.total_commands),
            per_job(self.drain.total_commands),
        );
        let _ = writeln!(
            out,
            "| redis-server CPU (used_cpu_user + used_cpu_sys) | - | {:.2} | - | {:.2} | - |",
            per_job(self.queue.cpu_usec),
            per_job(self.drain.cpu_usec),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=1,usec=5,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        \r\n# Stats\r\ntotal_commands_processed:50\r\n\
        # CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:0.25\r\n";
    const AFTER: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=30,usec=400,usec_per_call=13.33,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_zadd:calls=20,usec=60,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=2,usec=9,usec_per_call=4.50,rejected_calls=0,failed_calls=0\r\n\
        \r\n# Stats\r\ntotal_commands_processed:91\r\n\
        # CPU\r\nused_cpu_sys:2.0\r\nused_cpu_user:0.5\r\n";

    #[test]
    fn a_delta_counts_commands_but_not_info() {
        let d = Snapshot::parse(AFTER).since(&Snapshot::parse(BEFORE));
        assert_eq!(d.commands.get("evalsha"), Some(&(20, 300)));
        assert_eq!(d.commands.get("zadd"), Some(&(20, 60)));
        assert_eq!(d.commands.get("info"), None);
        assert_eq!(d.total_commands, 40);
        assert_eq!(d.cpu_usec, 750_000);
    }

    #[test]
    fn the_table_is_per_job() {
        let d = Snapshot::parse(AFTER).since(&Snapshot::parse(BEFORE));
        let work = Work {
            jobs: 10,
            runs: 1,
            queue: d.clone(),
            drain: Delta::default(),
        };
        let table = work.table();
        assert!(table.contains("| EVALSHA | 2.000 | 30.00 | 0.000 | 0.00 | 15.00 |"));
        assert!(table.contains("| ZADD | 2.000 | 6.00 | 0.000 | 0.00 | 3.00 |"));
        let evalsha = table.find("EVALSHA").unwrap_or(usize::MAX);
        let zadd = table.find("ZADD").unwrap_or(0);
        assert!(evalsha < zadd, "most time first");
    }
}
