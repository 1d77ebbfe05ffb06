//! `POST /api/v1/gateway/events`: what a gateway did for users (power actions, BMC
//! requests, console sessions opened and closed), written to the audit log.
//!
//! Each event is checked on its own, so one bad event does not cost the batch: an
//! event with a bad field, or about a server not bound to the calling gateway (missing
//! servers answer the same, so a gateway learns nothing about servers behind others),
//! is refused and audited as a denial (`outcome=denied`, detail `<reason> via <gw>`).
//! An accepted event becomes one audit row: action `gateway_<action>`, the reported
//! outcome, the user as actor, the server as target, the gateway's address as source,
//! detail `via <gateway> at=<gateway time>[ session=<sid>][ detail=<detail>]`. More
//! than [`MAX_GATEWAY_EVENTS`] events is `400` (nothing written).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use outband_api::ErrorBody;
use outband_api::gateways::{
    GATEWAY_EVENT_ACTIONS, GatewayEvent, GatewayEventsRequest, GatewayEventsResponse,
    MAX_GATEWAY_EVENTS,
};

use super::extract::ApiJson;
use super::gateways::AuthGateway;
use crate::error::{ApiError, ErrorCode};
use crate::manager::Manager;
use crate::store::audit::NewAudit;

/// Audit actions of gateway events, in the order of [`GATEWAY_EVENT_ACTIONS`].
const AUDIT_ACTIONS: [&str; 12] = [
    "gateway_power_status",
    "gateway_power_on",
    "gateway_power_off",
    "gateway_power_cycle",
    "gateway_power_reset",
    "gateway_power_soft",
    "gateway_boot_device",
    "gateway_bmc_info",
    "gateway_serial_open",
    "gateway_serial_close",
    "gateway_graphical_open",
    "gateway_graphical_close",
];

/// The audit action of an event with an unknown action.
const UNKNOWN_ACTION: &str = "gateway_event";

/// Longest id accepted (user, session, server).
const MAX_ID: usize = 64;
/// Longest detail accepted.
const MAX_DETAIL: usize = 256;
/// Latest gateway time accepted (about year 36812: a sanity bound, not a clock check).
const MAX_AT: i64 = 1 << 40;

/// `gateway_<action>`, or `None` for an action not in the contract.
fn audit_action(action: &str) -> Option<&'static str> {
    GATEWAY_EVENT_ACTIONS
        .iter()
        .position(|a| *a == action)
        .map(|i| AUDIT_ACTIONS[i])
}

fn id_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID && s.bytes().all(|b| b > b' ' && b < 0x7f)
}

/// The fields of an event that passed their checks (the rest are left out of a
/// denial's audit row), and the first reason it is refused, if any.
struct Checked<'a> {
    action: Option<&'static str>,
    outcome: Option<&'static str>,
    user_id: Option<&'a str>,
    server_id: Option<&'a str>,
    refused: Option<&'static str>,
}

fn check(e: &GatewayEvent) -> Checked<'_> {
    let action = audit_action(&e.action);
    let outcome = match e.outcome.as_str() {
        "success" => Some("success"),
        "failure" => Some("failure"),
        _ => None,
    };
    let user_id = Some(e.user_id.as_str()).filter(|u| id_ok(u));
    let server_id = Some(e.server_id.as_str()).filter(|s| id_ok(s));
    let refused = if action.is_none() {
        Some("bad_action")
    } else if outcome.is_none() {
        Some("bad_outcome")
    } else if user_id.is_none() {
        Some("bad_user_id")
    } else if server_id.is_none() {
        Some("bad_server_id")
    } else if e.session_id.as_deref().is_some_and(|s| !id_ok(s)) {
        Some("bad_session_id")
    } else if !(0..=MAX_AT).contains(&e.at) {
        Some("bad_at")
    } else if e
        .detail
        .as_deref()
        .is_some_and(|d| d.len() > MAX_DETAIL || d.chars().any(char::is_control))
    {
        Some("bad_detail")
    } else {
        None
    };
    Checked {
        action,
        outcome,
        user_id,
        server_id,
        refused,
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/gateway/events",
    tag = "gateway",
    request_body = GatewayEventsRequest,
    security(("gateway" = [])),
    responses(
        (status = 200, description = "Every event audited: accepted ones as reported, refused ones as denials", body = GatewayEventsResponse),
        (status = 400, description = "invalid_request (more than 100 events)", body = ErrorBody),
        (status = 401, description = "unauthenticated / invalid_token (the gateway's)", body = ErrorBody),
        (status = 403, description = "insecure_transport", body = ErrorBody)
    )
)]
/// `POST /api/v1/gateway/events`.
pub async fn events(
    State(m): State<Arc<Manager>>,
    gw: AuthGateway,
    ApiJson(req): ApiJson<GatewayEventsRequest>,
) -> Result<Json<GatewayEventsResponse>, ApiError> {
    if req.events.len() > MAX_GATEWAY_EVENTS {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "at most 100 events per request",
        ));
    }
    let gateway = gw.gateway.id.as_str();
    let mut accepted = 0u32;
    for e in &req.events {
        let c = check(e);
        let mut refused = c.refused;
        if refused.is_none()
            && let Some(server_id) = c.server_id
        {
            let bound = m
                .store
                .server_by_id(server_id)
                .await?
                .is_some_and(|s| s.gateway_id.as_deref() == Some(gateway));
            if !bound {
                refused = Some("server_not_bound");
            }
        }
        let mut actor_id = c.user_id;
        if refused.is_none()
            && let Some(user_id) = c.user_id
            && m.store.user_by_id(user_id).await?.is_none()
        {
            // No such user (a deleted one stays known until purged): not an actor.
            refused = Some("unknown_user");
            actor_id = None;
        }
        let mut entry = NewAudit {
            action: c.action.unwrap_or(UNKNOWN_ACTION),
            actor_id: actor_id.map(str::to_owned),
            source_ip: Some(gw.source_ip.clone()),
            target: c.server_id.map(str::to_owned),
            ..NewAudit::default()
        };
        match refused {
            Some(reason) => {
                entry.outcome = "denied";
                entry.detail = Some(format!("{reason} via {gateway}"));
            }
            None => {
                entry.outcome = c.outcome.unwrap_or("failure");
                let mut detail = format!("via {gateway} at={}", e.at);
                if let Some(sid) = &e.session_id {
                    detail.push_str(&format!(" session={sid}"));
                }
                if let Some(d) = &e.detail {
                    detail.push_str(&format!(" detail={d}"));
                }
                entry.detail = Some(detail);
                accepted += 1;
            }
        }
        m.audit(entry).await?;
    }
    Ok(Json(GatewayEventsResponse { accepted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_action_has_its_audit_action() {
        assert_eq!(GATEWAY_EVENT_ACTIONS.len(), AUDIT_ACTIONS.len());
        for a in GATEWAY_EVENT_ACTIONS {
            assert_eq!(audit_action(a).unwrap(), format!("gateway_{a}"));
        }
        assert_eq!(audit_action("format_disk"), None);
        assert_eq!(audit_action("POWER_ON"), None);
    }
}
