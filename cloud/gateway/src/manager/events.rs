//! What the gateway did for users (power actions, BMC identity reads, ...), reported
//! to the manager's audit log with `POST /api/v1/gateway/events`.
//!
//! A user's request never waits for this: events go into a bounded in-memory queue
//! ([`EventBuffer`], sans-IO) and a background task sends them in batches of at most
//! [`MAX_BATCH`] (the manager's limit). A failed send (manager down, 5xx, timeout, 401
//! while the token is being replaced, 429) keeps the batch and retries with
//! exponential backoff (1 s doubling to 60 s, ±20 % jitter). Any other refusal (400,
//! 404: the manager does not know the endpoint) drops the batch with a warning: it
//! would never be accepted. When the manager is down long enough for the queue to fill
//! ([`MAX_QUEUED`]), the oldest events are dropped and counted
//! (`outband_gateway_manager_events_total{result="dropped"}`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use outband_api::gateways::{GatewayEvent, GatewayEventsRequest, GatewayEventsResponse};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::client::ClientError;
use super::{Backoff, ManagerLink, jittered, random_u16};

/// Most events in one request (the manager's limit).
pub const MAX_BATCH: usize = 100;
/// Most events waiting; beyond it the oldest are dropped.
pub const MAX_QUEUED: usize = 10_000;
/// Longest `detail` sent (the manager's limit), in bytes.
pub const MAX_DETAIL: usize = 256;

/// The queue: events with sequence numbers, oldest first (sans-IO).
#[derive(Debug)]
pub struct EventBuffer {
    queue: VecDeque<(u64, GatewayEvent)>,
    next_seq: u64,
    cap: usize,
    dropped: u64,
}

impl EventBuffer {
    /// A queue of at most `cap` events.
    pub fn new(cap: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            next_seq: 0,
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// Adds an event (its `detail` cut to [`MAX_DETAIL`] bytes); drops the oldest if
    /// full.
    pub fn push(&mut self, mut event: GatewayEvent) {
        if let Some(d) = event.detail.as_mut() {
            truncate_utf8(d, MAX_DETAIL);
        }
        if self.queue.len() == self.cap {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back((self.next_seq, event));
        self.next_seq += 1;
    }

    /// The oldest `max` events and the sequence number of the last of them.
    pub fn batch(&self, max: usize) -> Option<(Vec<GatewayEvent>, u64)> {
        let events: Vec<GatewayEvent> = self
            .queue
            .iter()
            .take(max)
            .map(|(_, e)| e.clone())
            .collect();
        let last = self.queue.get(events.len().checked_sub(1)?)?.0;
        Some((events, last))
    }

    /// Forgets every event up to sequence `last` (sent, or given up). Events dropped
    /// meanwhile for space are simply no longer there.
    pub fn ack(&mut self, last: u64) -> usize {
        let mut n = 0;
        while self.queue.front().is_some_and(|(s, _)| *s <= last) {
            self.queue.pop_front();
            n += 1;
        }
        n
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Events dropped for space so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The queue shared by request handlers (push) and the sender task.
#[derive(Debug)]
pub struct EventQueue {
    buffer: Mutex<EventBuffer>,
    wake: Notify,
    sent: AtomicU64,
    refused: AtomicU64,
    send_errors: AtomicU64,
}

impl Default for EventQueue {
    fn default() -> Self {
        Self::with_capacity(MAX_QUEUED)
    }
}

impl EventQueue {
    /// A queue of at most `cap` events.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buffer: Mutex::new(EventBuffer::new(cap)),
            wake: Notify::new(),
            sent: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EventBuffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an event for the manager; never blocks on the network.
    pub fn push(&self, event: GatewayEvent) {
        self.lock().push(event);
        self.wake.notify_one();
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends queued events until `cancel`.
    pub async fn run(self: Arc<Self>, link: Arc<ManagerLink>, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let next = self.lock().batch(MAX_BATCH);
            let Some((events, last)) = next else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.wake.notified() => continue,
                }
            };
            let n = events.len();
            let retry = match self.send(&link, events).await {
                Ok(accepted) => {
                    self.lock().ack(last);
                    self.sent.fetch_add(accepted as u64, Ordering::Relaxed);
                    if accepted < n {
                        let refused = n - accepted;
                        self.refused.fetch_add(refused as u64, Ordering::Relaxed);
                        tracing::warn!(
                            refused,
                            "the manager refused some reported events (audited there as denials)"
                        );
                    }
                    backoff.reset();
                    false
                }
                Err(SendError::Permanent(e)) => {
                    self.lock().ack(last);
                    self.refused.fetch_add(n as u64, Ordering::Relaxed);
                    tracing::warn!(error = %e, events = n, "the manager refused reported events; dropping them");
                    false
                }
                Err(SendError::Retry(e)) => {
                    self.send_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, queued = self.len(), "reporting events to the manager failed; retrying");
                    true
                }
            };
            if retry {
                let delay = jittered(backoff.next_delay(), random_u16());
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    async fn send(
        &self,
        link: &ManagerLink,
        events: Vec<GatewayEvent>,
    ) -> Result<usize, SendError> {
        let token = link
            .gateway_token()
            .ok_or_else(|| SendError::Retry("the gateway is not registered yet".into()))?;
        let body = GatewayEventsRequest { events };
        match link
            .client
            .call::<_, GatewayEventsResponse>(
                Method::POST,
                "/api/v1/gateway/events",
                Some(&token),
                Some(&body),
            )
            .await
        {
            Ok(r) => Ok((r.accepted as usize).min(body.events.len())),
            Err(e) if is_permanent(&e) => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Retry(e.to_string())),
        }
    }

    /// Prometheus lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let (queued, dropped) = {
            let b = self.lock();
            (b.len(), b.dropped())
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP outband_gateway_manager_events_total User actions reported to the manager's audit log: sent, refused by the manager, dropped for queue space.\n\
             # TYPE outband_gateway_manager_events_total counter\n\
             outband_gateway_manager_events_total{{result=\"sent\"}} {}\n\
             outband_gateway_manager_events_total{{result=\"refused\"}} {}\n\
             outband_gateway_manager_events_total{{result=\"dropped\"}} {dropped}\n\
             # HELP outband_gateway_manager_event_send_errors_total Failed event reports (retried).\n\
             # TYPE outband_gateway_manager_event_send_errors_total counter\n\
             outband_gateway_manager_event_send_errors_total {}\n\
             # HELP outband_gateway_manager_events_queued Events waiting to be reported.\n\
             # TYPE outband_gateway_manager_events_queued gauge\n\
             outband_gateway_manager_events_queued {queued}",
            get(&self.sent),
            get(&self.refused),
            get(&self.send_errors),
        );
    }
}

enum SendError {
    /// Worth retrying.
    Retry(String),
    /// Would be refused again.
    Permanent(String),
}

/// A 4xx the manager would answer again (not 401: a token being replaced; not 408/429).
fn is_permanent(e: &ClientError) -> bool {
    match e {
        ClientError::Status { status, .. } => {
            status.is_client_error()
                && !matches!(
                    *status,
                    StatusCode::UNAUTHORIZED
                        | StatusCode::REQUEST_TIMEOUT
                        | StatusCode::TOO_MANY_REQUESTS
                )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: usize) -> GatewayEvent {
        GatewayEvent {
            action: "power_on".into(),
            outcome: "success".into(),
            user_id: "usr_1".into(),
            session_id: Some("ses_1".into()),
            server_id: format!("srv_{i}"),
            at: 1_700_000_000,
            detail: None,
        }
    }

    #[test]
    fn batches_ack_and_drop_oldest() {
        let mut b = EventBuffer::new(5);
        assert!(b.batch(100).is_none());
        for i in 0..3 {
            b.push(ev(i));
        }
        let (batch, last) = b.batch(2).unwrap();
        assert_eq!(
            batch
                .iter()
                .map(|e| e.server_id.as_str())
                .collect::<Vec<_>>(),
            vec!["srv_0", "srv_1"]
        );
        // More arrive (and push out the oldest) while that batch is in flight.
        for i in 3..8 {
            b.push(ev(i));
        }
        assert_eq!(b.dropped(), 3);
        assert_eq!(b.len(), 5);
        // The acknowledged batch was dropped already: nothing newer is lost.
        assert_eq!(b.ack(last), 0);
        let (batch, last) = b.batch(100).unwrap();
        assert_eq!(batch.len(), 5);
        assert_eq!(batch[0].server_id, "srv_3");
        assert_eq!(b.ack(last), 5);
        assert!(b.is_empty());
    }

    #[test]
    fn detail_is_cut_on_a_char_boundary() {
        let mut b = EventBuffer::new(2);
        let mut e = ev(0);
        e.detail = Some("é".repeat(200));
        b.push(e);
        let (batch, _) = b.batch(1).unwrap();
        let d = batch[0].detail.as_deref().unwrap();
        assert!(
            d.len() <= MAX_DETAIL && d.len() >= MAX_DETAIL - 1,
            "{}",
            d.len()
        );
    }

    #[tokio::test]
    async fn a_manager_that_is_down_keeps_the_newest_events_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let link = Arc::new(
            ManagerLink::new(
                crate::config::ManagerConfig {
                    url: "http://127.0.0.1:1".into(),
                    registration_credential_file: None,
                    ca_file: None,
                    heartbeat_interval: Duration::from_secs(60),
                    timeout: Duration::from_secs(1),
                },
                dir.path().to_owned(),
            )
            .unwrap(),
        );
        // A token, so the sender really calls the (absent) manager.
        *link.token.lock().unwrap() = Some(super::super::secret::Secret::new("obg_x".into()));
        let queue = Arc::new(EventQueue::with_capacity(3));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(queue.clone().run(link, cancel.clone()));
        for i in 0..5 {
            queue.push(ev(i));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while queue.send_errors.load(Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < deadline, "no send attempt");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(queue.len(), 3, "the newest three wait for the manager");
        let mut text = String::new();
        queue.render(&mut text);
        assert!(
            text.contains("outband_gateway_manager_events_total{result=\"dropped\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("outband_gateway_manager_events_total{result=\"sent\"} 0"),
            "{text}"
        );
        cancel.cancel();
        task.await.unwrap();
    }

    #[test]
    fn which_refusals_are_retried() {
        let status = |s: StatusCode| ClientError::Status {
            call: "POST /api/v1/gateway/events".into(),
            status: s,
            code: String::new(),
            message: String::new(),
        };
        assert!(is_permanent(&status(StatusCode::BAD_REQUEST)));
        assert!(is_permanent(&status(StatusCode::NOT_FOUND)));
        assert!(!is_permanent(&status(StatusCode::UNAUTHORIZED)));
        assert!(!is_permanent(&status(StatusCode::TOO_MANY_REQUESTS)));
        assert!(!is_permanent(&status(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(!is_permanent(&ClientError::Timeout {
            call: String::new(),
            timeout: Duration::from_secs(1),
        }));
    }
}
