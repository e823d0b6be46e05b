//! Where the CPU goes: user + system time of this process's threads, grouped by thread name, from
//! /proc/self/task/*/stat, and the busy time of the whole machine from /proc/stat. Both servers,
//! the load generator and SQLite's worker threads share the same cores, so a target's rate only
//! makes sense next to who used them, and a round during which other processes were busy
//! (`elsewhere`: other processes, and interrupt time not charged to a thread) is suspect.

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of /proc times (USER_HZ, 100 on Linux whatever the kernel's HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// The thread groups of this process, then the rest of the machine.
pub const GROUPS: [&str; 5] = ["server", "load", "sqlite", "other", "elsewhere"];

/// CPU ticks used so far, per thread group, and when they were read.
#[derive(Clone, Debug)]
pub struct Sample {
    at: Instant,
    ticks: BTreeMap<&'static str, u64>,
    /// Busy ticks of the whole machine (all cores).
    machine: u64,
    /// This process's ticks, ended threads included.
    process: u64,
}

/// Busy (not idle, not waiting for I/O) ticks of all cores, from the `cpu` line of /proc/stat.
fn machine_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| values.get(i))
        .sum();
    Some(busy)
}

/// Which group a thread belongs to, by its name (truncated to 15 bytes by the kernel).
fn group(comm: &str) -> &'static str {
    if comm.starts_with("server") {
        "server"
    } else if comm.starts_with("load") {
        "load"
    } else if comm.starts_with("sqlx-sqlite") {
        "sqlite"
    } else {
        "other"
    }
}

/// utime + stime of one thread from its `stat` line (fields 14 and 15, after the `(comm)`).
fn thread_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After the comm come state (3), ppid (4) ... utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Reads every thread's CPU time (threads that ended since are not counted).
pub fn sample() -> Sample {
    let mut ticks: BTreeMap<&'static str, u64> = GROUPS.iter().map(|g| (*g, 0)).collect();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            if let Some(t) = thread_ticks(&stat) {
                *ticks.entry(group(comm.trim())).or_default() += t;
            }
        }
    }
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| machine_ticks(&s))
        .unwrap_or(0);
    let process = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| thread_ticks(&s))
        .unwrap_or(0);
    Sample {
        at: Instant::now(),
        ticks,
        machine,
        process,
    }
}

/// Cores kept busy between two samples, per group (1.0 = one core all the time).
pub fn busy(before: &Sample, after: &Sample) -> BTreeMap<&'static str, f64> {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
    let mut busy: BTreeMap<&'static str, f64> = GROUPS
        .iter()
        .map(|g| {
            let a = after.ticks.get(g).copied().unwrap_or(0);
            let b = before.ticks.get(g).copied().unwrap_or(0);
            (*g, cores(a.saturating_sub(b)))
        })
        .collect();
    let machine = after.machine.saturating_sub(before.machine);
    let process = after.process.saturating_sub(before.process);
    busy.insert("elsewhere", cores(machine.saturating_sub(process)));
    busy
}

#[cfg(test)]
mod tests {
    use super::{group, machine_ticks, thread_ticks};

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 50 2 10 500 3 0 1 1 0 0\n";
        assert_eq!(machine_ticks(stat), Some(100 + 5 + 20 + 1 + 2 + 3));
    }

    #[test]
    fn reads_utime_and_stime_even_with_spaces_in_the_name() {
        let stat = "4242 (load worker) S 1 2 3 0 -1 4194368 100 0 0 0 250 75 0 0 20 0 3 0 9 0 0";
        assert_eq!(thread_ticks(stat), Some(325));
    }

    #[test]
    fn groups_threads_by_name() {
        assert_eq!(group("server"), "server");
        assert_eq!(group("load"), "load");
        assert_eq!(group("sqlx-sqlite-wor"), "sqlite");
        assert_eq!(group("latchkey-bench"), "other");
    }
}
