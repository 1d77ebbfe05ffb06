//! Login: email + password → tokens.
//!
//! Every failure answers `invalid_credentials` after the same argon2 work (unknown
//! accounts are checked against a dummy hash). The throttle is keyed by the email as
//! typed and by the source address and answers the same for existing and unknown
//! accounts. Each attempt is reserved in the database before hashing (one conditional
//! upsert per key), so concurrent requests, on one replica or several, get at most the
//! limit's worth of password verifications; a success gives its reservation back.

use std::net::IpAddr;

use outband_api::auth::{LoginRequest, TokenResponse};

use super::{MAX_EMAIL_LEN, normalize_email, tokens};
use crate::error::{ApiError, ErrorCode};
use crate::manager::Manager;
use crate::metrics::inc;
use crate::password::MAX_PASSWORD_LEN;
use crate::store::audit::NewAudit;

/// Logs in.
pub async fn login(m: &Manager, req: LoginRequest, ip: IpAddr) -> Result<TokenResponse, ApiError> {
    let email = normalize_email(&req.email);
    if email.is_empty() || email.len() > MAX_EMAIL_LEN || req.password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "email must be 1-254 bytes and password at most 1024 bytes",
        ));
    }
    let ip_text = ip.to_string();
    let now = m.clock.now();
    let t = &m.config.throttle;
    let acct_key = format!("acct:{email}");
    let ip_key = format!("ip:{}", throttle_source(ip));
    let audit = |outcome: &'static str, actor_id: Option<String>, detail: &str| NewAudit {
        action: "login",
        outcome,
        actor_id,
        actor_email: Some(email.clone()),
        source_ip: Some(ip_text.clone()),
        detail: Some(detail.into()),
        ..NewAudit::default()
    };

    // Reserve the attempt on both keys before hashing (one conditional upsert each),
    // so concurrent guesses are counted before any of them reaches argon2.
    let window = t.window.as_secs() as i64;
    let lockout = t.lockout.as_secs() as i64;
    let mut locked_until = m
        .store
        .throttle_reserve(&ip_key, now, window, t.ip_limit, lockout)
        .await?;
    if locked_until == 0 {
        locked_until = m
            .store
            .throttle_reserve(&acct_key, now, window, t.account_limit, lockout)
            .await?;
        if locked_until > 0 {
            // The address's attempt was not spent on a guess.
            m.store.throttle_refund(&ip_key).await?;
        }
    }
    if locked_until > now {
        inc(&m.metrics.login_throttled);
        m.audit(audit("failure", None, "throttled")).await?;
        return Err(ApiError {
            retry_after: Some((locked_until - now) as u64),
            ..ApiError::new(
                ErrorCode::TooManyAttempts,
                "too many failed logins; try again later",
            )
        });
    }

    let user = m.store.user_by_email(&email).await?;
    let usable = user.as_ref().filter(|u| u.disabled_at.is_none());
    let ok = match m
        .hasher
        .verify(req.password, usable.map(|u| u.password_hash.clone()))
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            // No guess was checked (e.g. `busy`): give both reservations back.
            m.store.throttle_refund(&acct_key).await?;
            m.store.throttle_refund(&ip_key).await?;
            return Err(e.into());
        }
    };
    let Some(user) = usable.filter(|_| ok) else {
        let reason = match &user {
            None => "unknown_user",
            Some(u) if u.disabled_at.is_some() => "disabled",
            Some(_) => "bad_password",
        };
        inc(&m.metrics.login_failure);
        // The reserved attempts stay counted as failures.
        m.audit(audit(
            "failure",
            user.as_ref().map(|u| u.id.clone()),
            reason,
        ))
        .await?;
        return Err(ApiError::invalid_credentials());
    };

    m.store.throttle_reset(&acct_key).await?;
    m.store.throttle_refund(&ip_key).await?;
    let (session_id, resp) = tokens::start_session(m, user, &ip_text).await?;
    inc(&m.metrics.login_success);
    m.audit(NewAudit {
        target: Some(session_id),
        ..audit("success", Some(user.id.clone()), "password")
    })
    .await?;
    Ok(resp)
}

/// The throttle key for a source address: the address for IPv4, the /64 for IPv6 (one
/// host usually holds a whole /64, so per-address counting would be useless).
pub(crate) fn throttle_source(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::throttle_source;

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let a = throttle_source("2001:db8:1:2::1".parse().unwrap());
        let b = throttle_source("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = throttle_source("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(throttle_source("192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
