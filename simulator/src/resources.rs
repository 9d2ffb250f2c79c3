//! The simulator's own CPU and memory, read from the kernel (`getrusage`, `/proc/self/statm`),
//! so a report can say what the simulator cost and whether it was the bottleneck.

/// CPU and memory of this process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU since the process started, seconds.
    pub cpu_s: f64,
    /// Resident memory now, bytes.
    pub rss_bytes: u64,
    /// Peak resident memory so far, bytes.
    pub peak_rss_bytes: u64,
}

/// This process's usage now (zeros where the kernel does not say).
pub fn usage() -> Usage {
    use nix::sys::resource::{UsageWho, getrusage};
    let (cpu_s, peak_rss_bytes) = match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            // ru_maxrss is in kilobytes on Linux.
            (
                secs(u.user_time()) + secs(u.system_time()),
                u64::try_from(u.max_rss()).unwrap_or(0) * 1024,
            )
        }
        Err(_) => (0.0, 0),
    };
    Usage {
        cpu_s,
        rss_bytes: rss_bytes(),
        peak_rss_bytes,
    }
}

/// Resident memory now: the second field of `/proc/self/statm`, in pages.
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    pages * page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_cpu_are_read_and_grow_with_use() {
        let before = usage();
        assert!(
            before.rss_bytes > 0 && before.peak_rss_bytes > 0,
            "{before:?}"
        );
        // Touch 64 MiB and spin a little.
        let block = vec![1u8; 64 << 20];
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        let after = usage();
        assert!(std::hint::black_box(x) != 1 || !block.is_empty());
        assert!(
            after.rss_bytes >= before.rss_bytes + (48 << 20),
            "{before:?} → {after:?}"
        );
        assert!(after.peak_rss_bytes >= after.rss_bytes.min(before.peak_rss_bytes));
        assert!(after.cpu_s > before.cpu_s, "{before:?} → {after:?}");
        drop(block);
    }
}
