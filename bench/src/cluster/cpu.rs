//! CPU time (user + system) of a process, from `/proc/<pid>/stat`, in
//! clock ticks of 10 ms (`getconf CLK_TCK` = 100 on Linux).

use std::time::Duration;

const TICK: Duration = Duration::from_millis(10);

/// This process's CPU time so far, all threads.
pub fn process() -> Duration {
    of_pid("self")
}

/// The CPU time of process `pid` (or `self`) so far; zero if unreadable.
pub fn of_pid(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces), from field 3:
    // utime is field 14, stime field 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u32>().ok())
            .unwrap_or(0)
    };
    TICK * (ticks(11) + ticks(12))
}
