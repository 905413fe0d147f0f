//! Giving freed memory back to the system.
//!
//! The operator's memory has two parts: what it keeps (a trimmed metadata
//! entry per Rollout, the index of what each Rollout depends on, per-Rollout
//! metric series) and what it handles for a moment (a page of a listing, a
//! Rollout read for a reconcile, a request and its response). glibc's
//! allocator keeps the pages of the second part once freed, so without help
//! the resident size stays at the high-water mark of the busiest moment (the
//! start-up listings, a burst of reconciles) long after it passed. Every
//! [`TRIM_EVERY`] the operator asks the allocator to return free pages
//! (`malloc_trim(0)`: a walk over the heap, well under a millisecond at the
//! operator's size). With another allocator (musl) this does nothing.

use std::time::Duration;

/// How often freed memory is handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Return the allocator's free pages to the system; true when some were.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists; it
        // takes the allocator's locks and is safe to call from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// How many allocator arenas the operator's threads share.
pub const ARENAS: i32 = 2;

/// Let all threads share [`ARENAS`] allocator arenas. glibc gives each
/// thread that allocates while another holds an arena its own, up to eight
/// per core: on a node with 32 cores the async workers alone (one per core)
/// would each keep their own free pages, and the operator's resident size
/// would grow with the node, not with the Rollouts. The operator's threads
/// mostly wait on the network; two arenas are enough for them. Call it
/// before the first thread starts. True when the allocator took it.
pub fn limit_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets the allocator's parameter; called before
        // other threads allocate.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Hand freed memory back every [`TRIM_EVERY`], for as long as the operator
/// runs.
pub async fn keep_releasing() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The walk is short but blocking: off the async workers.
        let _ = tokio::task::spawn_blocking(release_free_memory).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_pages_are_given_back() {
        // Allocate and free 64 MiB in many small blocks (as parsed listings
        // are); the allocator keeps some; the trim returns pages.
        let blocks: Vec<Vec<u8>> = (0..64 * 1024).map(|i| vec![i as u8; 1024]).collect();
        let keep: Vec<Vec<u8>> = blocks.iter().step_by(4096).cloned().collect();
        drop(blocks);
        assert!(release_free_memory(), "malloc_trim released nothing");
        assert_eq!(keep.len(), 16);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_allocator_takes_the_arena_limit() {
        assert!(limit_arenas());
    }
}
