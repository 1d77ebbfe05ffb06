//! Giving memory back to the system once a burst of work is over.
//!
//! mimalloc keeps pages that a burst of traffic emptied in its thread heap, ready
//! for the next burst, and returns them only when the heap is collected. The agent
//! does all its work on one thread, which allocates nothing while idle, so without
//! an explicit collection a bulk transfer's buffers (a few hundred KiB) stayed
//! resident forever: 2.7 MiB when connected, 3.5 MiB after the benchmark run.

use std::time::Duration;

/// How often the heap is collected. A collection with nothing to give back takes
/// microseconds; one after a burst a few hundred.
pub const COLLECT_INTERVAL: Duration = Duration::from_secs(1);

/// Frees the calling thread's empty pages and returns free memory to the system.
pub fn collect() {
    // SAFETY: `mi_collect` has no preconditions: it may be called at any time from
    // any thread, and only touches mimalloc's own bookkeeping.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

/// Collects the heap every [`COLLECT_INTERVAL`], forever. Run it on the thread that
/// does the agent's work (its heap is the one that grows).
pub async fn collect_periodically() {
    loop {
        smol::Timer::after(COLLECT_INTERVAL).await;
        collect();
    }
}

#[cfg(test)]
mod tests {
    /// Resident set size of this process in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// A burst of 32 KiB buffers (a bulk transfer's frames), all freed again, leaves
    /// its pages resident in mimalloc's heap until `collect` gives them back.
    #[test]
    fn collect_returns_a_freed_burst() {
        let before = rss_kib();
        let burst: Vec<Vec<u8>> = (0..512).map(|i| vec![i as u8; 32 * 1024]).collect();
        let peak = rss_kib();
        assert!(
            peak >= before + 12 * 1024,
            "the burst is resident: {before} → {peak} KiB"
        );
        drop(burst);
        super::collect();
        let after = rss_kib();
        assert!(
            after <= before + 2 * 1024,
            "collect gave the burst back: {before} KiB before, {peak} at the peak, {after} after"
        );
    }
}
