//! The machine the figures were measured on, and this process's memory.

use std::fs;

/// Cores, CPU model, total memory.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory: String,
}

impl Machine {
    /// Reads `/proc/cpuinfo` and `/proc/meminfo` (Linux).
    pub(crate) fn detect() -> Machine {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = proc_kb(&meminfo, "MemTotal")
            .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cores,
            cpu_model,
            memory,
        }
    }
}

/// A `Name:   1234 kB` field of a `/proc` file, in kB.
pub(crate) fn proc_kb(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != name {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// This process's peak resident set size (`VmHWM`) and current one (`VmRSS`), in kB.
pub(crate) fn own_rss_kb() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    (
        proc_kb(&status, "VmHWM").unwrap_or(0),
        proc_kb(&status, "VmRSS").unwrap_or(0),
    )
}

/// The load averages over 1, 5 and 15 minutes (`/proc/loadavg`), as it writes them.
pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
