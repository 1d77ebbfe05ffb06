//! Join tokens presented by agents in their hello: the gateway spends them at the
//! manager (`POST /api/v1/gateway/join`) and tells the agent what became of them
//! (a `JoinResult` request on the agent's connection).
//!
//! - Off the connection task: the agent link never waits for the manager. At most
//!   [`MAX_CONCURRENT_JOINS`] calls run at once; a connection presents its token at
//!   most once, so the waiting is bounded by the connected agents.
//! - A token of the wrong shape (`check_join_token`) is refused without a call.
//! - Only an explicit verdict of the manager is final: 200 (adopted), 401
//!   `invalid_credentials` (unknown, used or expired token: refused), 409 (agent
//!   already adopted or rejected). Anything else (no manager link, not registered
//!   yet, manager down or slow, our gateway token refused, 5xx) is `NOT_USED`: the
//!   agent keeps the token and presents it on its next connection.
//! - One call per agent and token: a connection that presents the same token while
//!   a call for it is in flight waits for that call, and a final outcome is
//!   remembered for [`REMEMBER`] (at most [`MAX_REMEMBERED`] agents and tokens, by
//!   SHA-256, never the token). So an agent that dropped its connection during the
//!   call and came back learns "accepted", not "token already used".
//! - Outcomes are logged with the agent id and counted
//!   (`outband_gateway_agent_joins_total{result}`); the token is never logged.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use outband_api::agents::{Agent, JoinRequest};
use outband_proto::pb::{self, JoinOutcome, JoinResult};
use outband_tunnel::Tunnel;
use tokio::sync::{OnceCell, Semaphore};

use super::ManagerLink;
use super::client::ClientError;
use super::secret::Secret;
use crate::metrics::Metrics;

/// Most join calls to the manager at once.
pub const MAX_CONCURRENT_JOINS: usize = 8;
/// How long the agent has to acknowledge a `JoinResult`.
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a final outcome is remembered per agent and token.
pub const REMEMBER: Duration = Duration::from_secs(600);
/// Most agents and tokens remembered or in flight; beyond that a token is not used.
pub const MAX_REMEMBERED: usize = 4096;

/// SHA-256 of agent id and token: the key of [`Joiner::recent`].
type Key = [u8; 32];

#[derive(Debug)]
struct Recent {
    outcome: Arc<OnceCell<JoinResult>>,
    since: Instant,
}

/// Spends agents' join tokens at the manager.
#[derive(Debug)]
pub struct Joiner {
    link: Option<Arc<ManagerLink>>,
    permits: Semaphore,
    metrics: Arc<Metrics>,
    /// In-flight and recently final joins.
    recent: Mutex<HashMap<Key, Recent>>,
}

fn key(agent_id: &str, token: &Secret) -> Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(agent_id.as_bytes());
    ctx.update(&[0]);
    ctx.update(token.expose().as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(ctx.finish().as_ref());
    k
}

fn is_final(r: &JoinResult) -> bool {
    matches!(
        JoinOutcome::try_from(r.outcome),
        Ok(JoinOutcome::Accepted | JoinOutcome::Refused | JoinOutcome::AlreadyDecided)
    )
}

fn result(outcome: JoinOutcome, message: impl Into<String>) -> JoinResult {
    JoinResult {
        outcome: outcome as i32,
        message: message.into(),
        tenant_id: String::new(),
    }
}

/// The agent's `JoinResult` for the manager's answer to a join call.
pub fn classify(answer: Result<Agent, ClientError>) -> JoinResult {
    match answer {
        Ok(agent) => JoinResult {
            outcome: JoinOutcome::Accepted as i32,
            message: "adopted by the manager with the join token".into(),
            tenant_id: agent.tenant_id.unwrap_or_default(),
        },
        Err(ClientError::Status {
            status,
            code,
            message,
            ..
        }) if status == StatusCode::UNAUTHORIZED && code == "invalid_credentials" => {
            result(JoinOutcome::Refused, message)
        }
        Err(ClientError::Status {
            status, message, ..
        }) if status == StatusCode::CONFLICT => result(JoinOutcome::AlreadyDecided, message),
        Err(e) => result(
            JoinOutcome::NotUsed,
            format!("the gateway could not reach a verdict from the manager: {e}"),
        ),
    }
}

impl Joiner {
    /// A joiner that calls the manager through `link` (none: standalone gateway).
    pub fn new(link: Option<Arc<ManagerLink>>, metrics: Arc<Metrics>) -> Self {
        Self {
            link,
            permits: Semaphore::new(MAX_CONCURRENT_JOINS),
            metrics,
            recent: Mutex::default(),
        }
    }

    /// The outcome for `key`: the one remembered or in flight, else `call`'s. Only
    /// final outcomes stay remembered.
    async fn once<F>(&self, key: Key, now: Instant, call: F) -> JoinResult
    where
        F: Future<Output = JoinResult>,
    {
        let cell = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= MAX_REMEMBERED {
                recent.retain(|_, r| {
                    r.outcome.get().is_none() || now.duration_since(r.since) < REMEMBER
                });
            }
            match recent.get(&key) {
                Some(r) if r.outcome.get().is_none() || now.duration_since(r.since) < REMEMBER => {
                    r.outcome.clone()
                }
                _ if recent.len() >= MAX_REMEMBERED => {
                    return result(
                        JoinOutcome::NotUsed,
                        "the gateway has too many join tokens in progress",
                    );
                }
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    recent.insert(
                        key,
                        Recent {
                            outcome: cell.clone(),
                            since: now,
                        },
                    );
                    cell
                }
            }
        };
        let r = cell.get_or_init(|| call).await.clone();
        if !is_final(&r) {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent
                .get(&key)
                .is_some_and(|e| Arc::ptr_eq(&e.outcome, &cell))
            {
                recent.remove(&key);
            }
        }
        r
    }

    /// Spends `token` for the agent at the manager; logs and counts the outcome.
    pub async fn join(&self, agent_id: &str, pairing_code: &str, token: Secret) -> JoinResult {
        let key = key(agent_id, &token);
        let r = self
            .once(
                key,
                Instant::now(),
                self.call(agent_id, pairing_code, token),
            )
            .await;
        let outcome = JoinOutcome::try_from(r.outcome).unwrap_or(JoinOutcome::NotUsed);
        let slot = match outcome {
            JoinOutcome::Accepted => 0,
            JoinOutcome::Refused => 1,
            JoinOutcome::AlreadyDecided => 2,
            JoinOutcome::NotUsed | JoinOutcome::Unspecified => 3,
        };
        self.metrics.joins[slot].fetch_add(1, Ordering::Relaxed);
        match outcome {
            JoinOutcome::Accepted => tracing::info!(
                agent_id = %agent_id,
                tenant_id = %r.tenant_id,
                "agent joined with its join token"
            ),
            JoinOutcome::Refused => tracing::warn!(
                agent_id = %agent_id,
                reason = %r.message,
                "agent's join token refused"
            ),
            JoinOutcome::AlreadyDecided => tracing::info!(
                agent_id = %agent_id,
                reason = %r.message,
                "agent's join token not needed"
            ),
            JoinOutcome::NotUsed | JoinOutcome::Unspecified => tracing::warn!(
                agent_id = %agent_id,
                reason = %r.message,
                "agent's join token not used; it presents it again on its next connection"
            ),
        }
        r
    }

    async fn call(&self, agent_id: &str, pairing_code: &str, token: Secret) -> JoinResult {
        // Junk never reaches the manager (and can never work).
        if let Err(e) = outband_proto::handshake::check_join_token(token.expose()) {
            return result(JoinOutcome::Refused, e);
        }
        let Some(link) = &self.link else {
            return result(
                JoinOutcome::NotUsed,
                "this gateway has no manager link (standalone)",
            );
        };
        let Some(gateway_token) = link.gateway_token() else {
            return result(
                JoinOutcome::NotUsed,
                "this gateway is not registered with the manager (yet)",
            );
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return result(JoinOutcome::NotUsed, "the gateway is shutting down");
        };
        let body = JoinRequest {
            join_token: token.expose().to_owned(),
            agent_id: agent_id.to_owned(),
            pairing_code: pairing_code.to_owned(),
        };
        let answer = link
            .client
            .call::<_, Agent>(
                Method::POST,
                "/api/v1/gateway/join",
                Some(&gateway_token),
                Some(&body),
            )
            .await;
        classify(answer)
    }

    /// Spends the token and delivers the outcome to the agent on `tunnel`. Runs in
    /// its own task; the connection does not wait for it.
    pub async fn join_and_report(
        self: Arc<Self>,
        tunnel: Tunnel,
        agent_id: String,
        pairing_code: String,
        token: Secret,
    ) {
        let r = self.join(&agent_id, &pairing_code, token).await;
        let body = pb::request::Body::JoinResult(r);
        match tokio::time::timeout(RESULT_TIMEOUT, tunnel.request(body)).await {
            Ok(Ok(pb::Reply {
                body: Some(pb::reply::Body::JoinResult(_)),
                ..
            })) => tracing::debug!(agent_id = %agent_id, "agent recorded its join result"),
            Ok(Ok(reply)) => tracing::warn!(
                agent_id = %agent_id,
                reply = ?reply.body,
                "agent did not record its join result"
            ),
            Ok(Err(e)) => tracing::info!(
                agent_id = %agent_id,
                error = %e,
                "agent gone before its join result reached it"
            ),
            Err(_) => tracing::warn!(
                agent_id = %agent_id,
                "agent did not answer its join result within {RESULT_TIMEOUT:?}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outband_api::agents::AgentStatus;

    fn status(status: StatusCode, code: &str) -> ClientError {
        ClientError::Status {
            call: "POST /api/v1/gateway/join".into(),
            status,
            code: code.into(),
            message: "the manager's words".into(),
        }
    }

    fn outcome(r: &JoinResult) -> JoinOutcome {
        JoinOutcome::try_from(r.outcome).unwrap()
    }

    #[test]
    fn only_an_explicit_verdict_is_final() {
        let agent = Agent {
            id: "ag-1".into(),
            pairing_code: "ABCD-EFGH".into(),
            gateway_id: None,
            status: AgentStatus::Adopted,
            tenant_id: Some("tn-7".into()),
            endpoints: vec![],
            first_seen_at: 0,
            decided_at: None,
        };
        let ok = classify(Ok(agent));
        assert_eq!(outcome(&ok), JoinOutcome::Accepted);
        assert_eq!(ok.tenant_id, "tn-7");
        let refused = classify(Err(status(StatusCode::UNAUTHORIZED, "invalid_credentials")));
        assert_eq!(outcome(&refused), JoinOutcome::Refused);
        assert!(refused.message.contains("the manager's words"));
        assert_eq!(
            outcome(&classify(Err(status(StatusCode::CONFLICT, "conflict")))),
            JoinOutcome::AlreadyDecided
        );
        // Our gateway token refused, the endpoint missing, bad request, overload,
        // server errors, timeouts: the token is kept for the next connection.
        for e in [
            status(StatusCode::UNAUTHORIZED, "invalid_token"),
            status(StatusCode::NOT_FOUND, "not_found"),
            status(StatusCode::BAD_REQUEST, "invalid_request"),
            status(StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            status(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ClientError::Timeout {
                call: "POST /api/v1/gateway/join".into(),
                timeout: Duration::from_secs(5),
            },
            ClientError::Transport {
                call: "POST /api/v1/gateway/join".into(),
                message: "connection refused".into(),
            },
        ] {
            let text = e.to_string();
            assert_eq!(outcome(&classify(Err(e))), JoinOutcome::NotUsed, "{text}");
        }
    }

    #[tokio::test]
    async fn one_call_per_agent_and_token_and_final_outcomes_are_remembered() {
        let joiner = Joiner::new(None, Arc::new(Metrics::default()));
        let calls = std::sync::atomic::AtomicU32::new(0);
        let call = |outcome: JoinOutcome| {
            let calls = &calls;
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                result(outcome, "")
            }
        };
        let t0 = Instant::now();
        let a = key("ag-1", &Secret::new("objt_a".into()));
        // Two connections at once: one call, both get its outcome.
        let (r1, r2) = tokio::join!(
            joiner.once(a, t0, call(JoinOutcome::Accepted)),
            joiner.once(a, t0, call(JoinOutcome::Refused)),
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            (outcome(&r1), outcome(&r2)),
            (JoinOutcome::Accepted, JoinOutcome::Accepted)
        );
        // Later (the agent reconnected): remembered, no call.
        let r = joiner
            .once(a, t0 + Duration::from_secs(60), call(JoinOutcome::Refused))
            .await;
        assert_eq!(
            (outcome(&r), calls.load(Ordering::SeqCst)),
            (JoinOutcome::Accepted, 1)
        );
        // After REMEMBER the manager is asked again.
        let r = joiner
            .once(a, t0 + REMEMBER, call(JoinOutcome::Refused))
            .await;
        assert_eq!(
            (outcome(&r), calls.load(Ordering::SeqCst)),
            (JoinOutcome::Refused, 2)
        );
        // Another agent with the same token, or the same agent with another token, is
        // a different key.
        assert_ne!(a, key("ag-2", &Secret::new("objt_a".into())));
        assert_ne!(a, key("ag-1", &Secret::new("objt_b".into())));
        // NOT_USED is not remembered: the next connection tries again.
        let b = key("ag-3", &Secret::new("objt_a".into()));
        joiner.once(b, t0, call(JoinOutcome::NotUsed)).await;
        let r = joiner.once(b, t0, call(JoinOutcome::Accepted)).await;
        assert_eq!(
            (outcome(&r), calls.load(Ordering::SeqCst)),
            (JoinOutcome::Accepted, 4)
        );
    }

    #[tokio::test]
    async fn remembered_set_is_bounded() {
        let joiner = Joiner::new(None, Arc::new(Metrics::default()));
        let t0 = Instant::now();
        for i in 0..MAX_REMEMBERED {
            let k = key(&format!("ag-{i}"), &Secret::new("objt_x".into()));
            joiner
                .once(k, t0, async { result(JoinOutcome::Refused, "") })
                .await;
        }
        let k = key("ag-new", &Secret::new("objt_x".into()));
        let r = joiner
            .once(k, t0, async { result(JoinOutcome::Accepted, "") })
            .await;
        assert_eq!(outcome(&r), JoinOutcome::NotUsed);
        assert!(r.message.contains("too many"), "{}", r.message);
        // Once the old outcomes are stale they make room.
        let later = t0 + REMEMBER;
        let r = joiner
            .once(k, later, async { result(JoinOutcome::Accepted, "") })
            .await;
        assert_eq!(outcome(&r), JoinOutcome::Accepted);
        assert!(joiner.recent.lock().unwrap().len() <= MAX_REMEMBERED);
    }

    #[tokio::test]
    async fn standalone_gateway_does_not_use_the_token() {
        let metrics = Arc::new(Metrics::default());
        let joiner = Joiner::new(None, metrics.clone());
        let r = joiner
            .join("ag-1", "ABCD-EFGH", Secret::new("objt_x".into()))
            .await;
        assert_eq!(outcome(&r), JoinOutcome::NotUsed);
        assert!(r.message.contains("no manager link"), "{}", r.message);
        assert_eq!(metrics.joins[3].load(Ordering::Relaxed), 1);
        let r = joiner
            .join("ag-1", "ABCD-EFGH", Secret::new("obgr_canary".into()))
            .await;
        assert_eq!(outcome(&r), JoinOutcome::Refused);
        assert!(!r.message.contains("canary"), "{}", r.message);
        assert_eq!(metrics.joins[1].load(Ordering::Relaxed), 1);
    }
}
