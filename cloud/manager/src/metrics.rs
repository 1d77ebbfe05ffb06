//! Counters and their Prometheus text rendering (`GET /metrics`). Per process: each
//! replica reports its own.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($field:ident => $name:literal, $help:literal;)*) => {
        /// Process-wide counters.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $field: AtomicU64,)*
        }

        impl Metrics {
            /// Prometheus text exposition; `argon2_free` is the free hashing slots.
            pub fn render(&self, argon2_free: usize) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP {} {}", $name, $help);
                    let _ = writeln!(out, "# TYPE {} counter", $name);
                    let _ = writeln!(out, "{} {}", $name, self.$field.load(Ordering::Relaxed));
                )*
                let _ = writeln!(out, "# HELP outband_manager_argon2_free_slots Free password-hashing slots.");
                let _ = writeln!(out, "# TYPE outband_manager_argon2_free_slots gauge");
                let _ = writeln!(out, "outband_manager_argon2_free_slots {argon2_free}");
                out
            }
        }
    };
}

counters! {
    login_success => "outband_manager_login_success_total", "Successful logins.";
    login_failure => "outband_manager_login_failure_total", "Failed logins (bad credentials).";
    login_throttled => "outband_manager_login_throttled_total", "Logins refused by the throttle.";
    refresh_success => "outband_manager_refresh_success_total", "Refresh tokens rotated.";
    refresh_failure => "outband_manager_refresh_failure_total", "Refresh attempts refused.";
    refresh_reuse => "outband_manager_refresh_reuse_total", "Reused refresh tokens (session revoked).";
    logout => "outband_manager_logout_total", "Sessions ended by logout.";
    token_rejected => "outband_manager_access_token_rejected_total", "Access tokens refused.";
    authz_denied => "outband_manager_authz_denied_total", "Authorization denials.";
    audit_suppressed => "outband_manager_audit_suppressed_total", "Denial audit rows not written (per-address and total limit, see audit_limit).";
}

/// Adds one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
