//! Everything the benchmark prints: progress on stderr, the report on stdout.
// The table is the program's output; progress goes to stderr so stdout stays the report.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;

use crate::machine::Machine;

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) store: String,
    pub(crate) setting: String,
    pub(crate) figure: String,
    pub(crate) ceiling: String,
    pub(crate) target: String,
    pub(crate) met: Option<bool>,
}

/// Progress while the benchmark runs (stderr).
pub(crate) fn progress(line: &str) {
    eprintln!("[hero-bench] {line}");
}

/// The report: the machine, the Redis ceiling, the table, the notes, then further
/// tables (each with its caption).
pub(crate) fn report(
    machine: &Machine,
    ceiling: &[String],
    rows: &[Row],
    notes: &[String],
    tables: &[String],
) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Machine: {} cores, {}, {} memory",
        machine.cores, machine.cpu_model, machine.memory
    );
    let _ = writeln!(out);
    for line in ceiling {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| scenario | store | setting | figure | vs Redis ceiling | target | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "met",
            Some(false) => "not met",
            None => "-",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario, r.store, r.setting, r.figure, r.ceiling, r.target, met
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(out);
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    for t in tables {
        let _ = writeln!(out);
        let _ = write!(out, "{t}");
    }
    print!("{out}");
}

/// The one line a memory probe child prints for its parent.
pub(crate) fn probe_result(line: &str) {
    println!("{line}");
}

/// `1234567.8` -> `"1,234,568"`.
pub(crate) fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }
}
