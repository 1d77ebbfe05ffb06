//! Login sessions the manager reported as ended (`GET /api/v1/gateway/revocations`),
//! kept in memory with the feed cursor. BMC sessions opened under one of these login
//! sessions must end (sessions arrive with the next issue; [`Revocations::is_revoked`]
//! is the hook).
//!
//! Sans-IO: pages go in, the next `since` and `after` come out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use outband_api::gateways::RevocationPage;

/// Most revoked sessions remembered; the oldest are forgotten first. The manager keeps
/// ended sessions a day, and an access token lives minutes, so old entries only
/// matter for BMC sessions that outlived their token by hours.
pub const MAX_REVOKED: usize = 100_000;

/// Longest session or user id accepted from the feed.
const MAX_ID: usize = 128;

/// The set of ended login sessions and the feed cursor.
#[derive(Debug, Default)]
pub struct Revocations {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Unix seconds for the next `since`; `None` until the first heartbeat told the
    /// manager's clock.
    cursor: Option<i64>,
    /// The manager's `next_after` within the cursor's second: where in that second
    /// the feed goes on, so a second with more ended sessions than a page still
    /// moves on. `None` is the start of the second.
    after: Option<String>,
    /// session id → user id.
    sessions: HashMap<String, String>,
    /// Insertion order, for eviction.
    order: VecDeque<String>,
}

/// What one page changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Sessions not seen before.
    pub added: usize,
    /// Whether the page was full, so the next page should be fetched at once.
    pub more: bool,
}

impl Revocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `since` to ask for, or `None` before the cursor is known.
    pub fn cursor(&self) -> Option<i64> {
        self.lock().cursor
    }

    /// The `since` and `after` to ask for, or `None` before the cursor is known.
    pub fn query(&self) -> Option<(i64, Option<String>)> {
        let g = self.lock();
        g.cursor.map(|c| (c, g.after.clone()))
    }

    /// Sets the start of the feed if it is not set yet (the manager's `now` from the
    /// first heartbeat: sessions ended before the gateway started cannot matter).
    pub fn start_at(&self, now: i64) {
        let mut g = self.lock();
        if g.cursor.is_none() {
            g.cursor = Some(now);
        }
    }

    /// Adds a page. The cursor (`since`, `after`) only moves forward; entries at or
    /// just before it may repeat (deduped by session id); ids that are empty or too
    /// long are skipped, and so is a `next_after` the manager could not have sent.
    /// `page_limit` is the manager's page size (1000): a page that full means more.
    pub fn apply(&self, page: &RevocationPage, page_limit: usize) -> Applied {
        let mut g = self.lock();
        let mut added = 0;
        let list = &page.list;
        for s in &list.sessions {
            let ok = |id: &str| !id.is_empty() && id.len() <= MAX_ID;
            if !ok(&s.session_id) || !ok(&s.user_id) || g.sessions.contains_key(&s.session_id) {
                continue;
            }
            g.sessions.insert(s.session_id.clone(), s.user_id.clone());
            g.order.push_back(s.session_id.clone());
            added += 1;
            while g.order.len() > MAX_REVOKED {
                if let Some(old) = g.order.pop_front() {
                    g.sessions.remove(&old);
                }
            }
        }
        let next_after = page.next_after.as_ref().filter(|a| {
            !a.is_empty() && a.len() <= MAX_ID && a.bytes().all(|b| b.is_ascii_graphic())
        });
        let before = (g.cursor, g.after.clone());
        match g.cursor {
            Some(c) if list.next_since < c => {}
            Some(c) if list.next_since == c => {
                // Within one second the manager's position only moves forward; an
                // absent one means it listed nothing settled past ours.
                if let Some(a) = next_after {
                    g.after = Some(a.clone());
                }
            }
            _ => {
                g.cursor = Some(list.next_since);
                g.after = next_after.cloned();
            }
        }
        let moved = before != (g.cursor, g.after.clone());
        Applied {
            added,
            // A full page whose cursor did not move would be fetched forever (a
            // manager without `after` with more than a page of revocations in one
            // second). Wait for the next tick instead.
            more: list.sessions.len() >= page_limit && moved,
        }
    }

    /// Whether login session `session_id` has ended.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.lock().sessions.contains_key(session_id)
    }

    /// Number of ended sessions remembered.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use outband_api::gateways::{RevocationList, RevokedSession};

    use super::*;

    fn page(entries: &[(&str, i64)], next_since: i64) -> RevocationPage {
        paged(entries, next_since, None)
    }

    fn paged(entries: &[(&str, i64)], next_since: i64, next_after: Option<&str>) -> RevocationPage {
        RevocationPage {
            list: RevocationList {
                sessions: entries
                    .iter()
                    .map(|(id, at)| RevokedSession {
                        session_id: (*id).into(),
                        user_id: "usr_1".into(),
                        revoked_at: *at,
                    })
                    .collect(),
                next_since,
            },
            next_after: next_after.map(Into::into),
        }
    }

    /// A second with more ended sessions than a page: the manager's `next_after`
    /// moves the cursor within the second, so every page is new and the feed goes on.
    #[test]
    fn after_cursor_moves_within_a_second() {
        let r = Revocations::default();
        r.start_at(100);
        assert_eq!(r.query(), Some((100, None)));
        let a = r.apply(&paged(&[("s1", 100), ("s2", 100)], 100, Some("s2")), 2);
        assert!(a.more, "a full page that moved the cursor asks for more");
        assert_eq!(r.query(), Some((100, Some("s2".into()))));
        let a = r.apply(&paged(&[("s3", 100), ("s4", 100)], 100, Some("s4")), 2);
        assert_eq!(
            a,
            Applied {
                added: 2,
                more: true
            }
        );
        // Nothing settled past ours: the manager sends our position back or none.
        let a = r.apply(&paged(&[("s4", 100)], 100, None), 2);
        assert!(!a.more);
        assert_eq!(r.query(), Some((100, Some("s4".into()))));
        // A later second starts at its beginning unless the manager says where.
        r.apply(&paged(&[("s5", 101)], 101, None), 2);
        assert_eq!(r.query(), Some((101, None)));
        r.apply(&paged(&[("s6", 102)], 102, Some("s6")), 2);
        assert_eq!(r.query(), Some((102, Some("s6".into()))));
        // An older second or a hostile position never moves it.
        r.apply(&paged(&[], 101, Some("s9")), 2);
        r.apply(&paged(&[], 102, Some("bad after")), 2);
        r.apply(&paged(&[], 102, Some(&"x".repeat(200))), 2);
        assert_eq!(r.query(), Some((102, Some("s6".into()))));
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn cursor_dedupe_and_paging() {
        let r = Revocations::default();
        assert_eq!(r.cursor(), None);
        r.start_at(100);
        r.start_at(50);
        assert_eq!(r.cursor(), Some(100), "set once");
        let a = r.apply(&page(&[("s1", 100), ("s2", 101)], 101), 1000);
        assert_eq!(
            a,
            Applied {
                added: 2,
                more: false
            }
        );
        assert_eq!(r.cursor(), Some(101));
        // The second of the cursor repeats: deduped.
        let a = r.apply(&page(&[("s2", 101), ("s3", 101)], 101), 1000);
        assert_eq!(a.added, 1);
        assert!(r.is_revoked("s1") && r.is_revoked("s3") && !r.is_revoked("s4"));
        assert_eq!(r.len(), 3);
        // An empty page keeps the cursor; a stale next_since never moves it back.
        r.apply(&page(&[], 101), 1000);
        r.apply(&page(&[], 90), 1000);
        assert_eq!(r.cursor(), Some(101));
        // A full page asks for more, unless the cursor is stuck in one second.
        assert!(r.apply(&page(&[("s5", 105), ("s6", 105)], 105), 2).more);
        assert!(!r.apply(&page(&[("s7", 105), ("s8", 105)], 105), 2).more);
        // Hostile ids are skipped.
        let long = "x".repeat(200);
        let a = r.apply(&page(&[("", 106), (long.as_str(), 106)], 106), 1000);
        assert_eq!(a.added, 0);
    }

    #[test]
    fn bounded() {
        let r = Revocations::default();
        let ids: Vec<String> = (0..MAX_REVOKED + 10).map(|i| format!("s{i}")).collect();
        let entries: Vec<(&str, i64)> = ids.iter().map(|s| (s.as_str(), 1)).collect();
        r.apply(&page(&entries, 1), usize::MAX);
        assert_eq!(r.len(), MAX_REVOKED);
        assert!(!r.is_revoked("s0"), "oldest forgotten");
        assert!(r.is_revoked(&format!("s{}", MAX_REVOKED + 9)));
    }
}
