//! What the process under load costs, read from Linux's `/proc`: CPU seconds (user + system) and
//! resident memory (now and at its peak). Other systems give `None` and the report says so.

use std::path::PathBuf;

/// Linux reports CPU times in `USER_HZ` ticks, fixed at 100 per second on every architecture
/// the kernel exposes to user space through `/proc` (it is not the kernel's `HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

fn proc_file(pid: u32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

/// User plus system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(proc_file(pid, "stat")).ok()?;
    // The command name, in parentheses, may itself hold spaces and parentheses: count fields
    // from the last ')'. After it come state (field 3), …, utime (14), stime (15).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Resident memory in KiB: `(now, peak)` (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(proc_file(pid, "status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_and_memory() {
        let pid = std::process::id();
        // Burn a little CPU so the tick counter has moved.
        let mut x: u64 = 1;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 0);
        let cpu = cpu_seconds(pid).expect("linux /proc");
        assert!(cpu > 0.0, "{cpu}");
        let (now, peak) = rss_kib(pid).expect("linux /proc");
        assert!(now > 0 && peak >= now, "{now} {peak}");
    }

    #[test]
    fn a_missing_process_gives_none() {
        assert_eq!(cpu_seconds(u32::MAX), None);
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
