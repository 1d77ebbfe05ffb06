//! A bound on audit rows for denials a client can cause without credentials (garbage
//! access or gateway tokens, plain-HTTP gateway calls) or repeat at will (calls with a
//! one-time password): at most [`PER_SOURCE`] rows per source address (IPv6 per /64)
//! and [`TOTAL`] in all per [`WINDOW_SECS`] on each replica; the rest are counted
//! (`outband_manager_audit_suppressed_total`) instead of written. In memory, O(1) per
//! call, at most [`MAX_SOURCES`] addresses tracked (a new one beyond that is
//! suppressed): a spray from many addresses still hits [`TOTAL`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Rows per source address per window.
pub const PER_SOURCE: u32 = 10;
/// Rows in all per window (one replica).
pub const TOTAL: u32 = 600;
/// Window length.
pub const WINDOW_SECS: i64 = 60;
/// Addresses tracked per window.
pub const MAX_SOURCES: usize = 4096;

/// The limiter (see the module docs).
#[derive(Debug, Default)]
pub struct DenialAuditLimit {
    inner: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    index: i64,
    total: u32,
    per_source: HashMap<String, u32>,
}

impl DenialAuditLimit {
    /// Whether a denial from `ip` at unix second `now` may be written.
    pub fn allow(&self, ip: IpAddr, now: i64) -> bool {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let index = now.div_euclid(WINDOW_SECS);
        if w.index != index {
            *w = Window {
                index,
                ..Window::default()
            };
        }
        if w.total >= TOTAL {
            return false;
        }
        let key = crate::auth::throttle_source(ip);
        let full = w.per_source.len() >= MAX_SOURCES;
        let n = match w.per_source.get_mut(&key) {
            Some(n) => n,
            None if full => return false,
            None => w.per_source.entry(key).or_insert(0),
        };
        if *n >= PER_SOURCE {
            return false;
        }
        *n += 1;
        w.total += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_total_and_window() {
        let l = DenialAuditLimit::default();
        let t = 6000;
        for _ in 0..PER_SOURCE {
            assert!(l.allow(ip("192.0.2.1"), t));
        }
        assert!(!l.allow(ip("192.0.2.1"), t));
        // One /64 is one source.
        for i in 0..PER_SOURCE {
            assert!(l.allow(ip(&format!("2001:db8::{i}")), t));
        }
        assert!(!l.allow(ip("2001:db8::ffff"), t));
        assert!(l.allow(ip("192.0.2.2"), t));
        // The next window starts over.
        assert!(l.allow(ip("192.0.2.1"), t + WINDOW_SECS));
        // Many sources: the total caps them.
        let l = DenialAuditLimit::default();
        let allowed = (0..2 * TOTAL)
            .filter(|i| l.allow(ip(&format!("10.{}.{}.1", i / 256, i % 256)), t))
            .count();
        assert_eq!(allowed, TOTAL as usize);
    }
}
