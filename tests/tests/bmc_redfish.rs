//! The agent's Redfish client against a real Redfish service: sushy-tools' emulator
//! over HTTPS with a pinned certificate and Basic auth.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use outband_e2e::TestContext;
use outband_e2e::sushy::{SYSTEM_NAME, SYSTEM_UUID, Sushy, SushyOptions};
use outband_redfish::{
    BootOverride, BootTarget, Client, Credentials, Fingerprint, PowerState, ResetType, SystemId,
    Timeouts, TlsPolicy,
};

fn creds() -> Credentials {
    Credentials::new("admin", "password")
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        total: Duration::from_secs(15),
    }
}

fn pin(s: &Sushy) -> TlsPolicy {
    TlsPolicy::Pinned(Fingerprint::of_der(s.cert_der()))
}

fn connect(s: &Sushy) -> anyhow::Result<Client> {
    Client::connect(&s.url(), &creds(), pin(s), timeouts()).context("connect to sushy")
}

/// Polls the power state until it is `want` (sushy applies changes later).
fn wait_power(
    c: &Client,
    sys: &SystemId,
    want: PowerState,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let now = c.power_state(sys)?;
        if now == want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "power state still {now:?} after {within:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Requests with `method` in a settled request log.
fn count(s: &Sushy, method: &str) -> anyhow::Result<usize> {
    let m = format!("\"{method} ");
    Ok(s.settle_log()?.iter().filter(|l| l.contains(&m)).count())
}

#[test]
fn power_state_and_every_advertised_reset() {
    TestContext::run("redfish_resets", |ctx| {
        let s = Sushy::start(ctx, &SushyOptions::default())?;
        let c = connect(&s)?;
        assert!(!c.uses_session(), "sushy has no SessionService");
        assert_eq!(c.fingerprint(), Some(Fingerprint::of_der(s.cert_der())));
        let sys = c.default_system()?;
        assert_eq!(sys.path(), format!("/redfish/v1/Systems/{SYSTEM_UUID}"));
        assert_eq!(c.power_state(&sys)?, PowerState::Off);
        let allowed = c
            .allowed_resets(&sys)?
            .context("sushy advertises reset types")?;
        assert_eq!(
            allowed,
            [
                ResetType::On,
                ResetType::ForceOff,
                ResetType::GracefulShutdown,
                ResetType::GracefulRestart,
                ResetType::ForceRestart,
                ResetType::Nmi,
            ]
        );
        let quick = Duration::from_secs(5);
        for (kind, after) in [
            (ResetType::On, PowerState::On),
            (ResetType::GracefulShutdown, PowerState::Off),
            (ResetType::On, PowerState::On),
            (ResetType::ForceRestart, PowerState::On),
            (ResetType::GracefulRestart, PowerState::On),
            (ResetType::ForceOff, PowerState::Off),
        ] {
            c.reset(&sys, kind)
                .with_context(|| format!("reset {kind:?}"))?;
            wait_power(&c, &sys, after, quick).with_context(|| format!("after {kind:?}"))?;
        }
        // Advertised, but sushy's fake driver refuses it: the BMC's message comes back.
        let e = c.reset(&sys, ResetType::Nmi).unwrap_err();
        assert_eq!(e.code(), "bmc_error", "{e}");
        assert!(
            e.to_string().contains("501") && e.to_string().contains("Nmi is not supported"),
            "{e}"
        );
        // Not advertised: refused here, nothing is POSTed.
        let before = count(&s, "POST")?;
        let e = c.reset(&sys, ResetType::PowerCycle).unwrap_err();
        assert_eq!(e.code(), "bmc_unsupported", "{e}");
        // (A POSTed PowerCycle would have drawn sushy's own error: bmc_error.)
        assert_eq!(
            count(&s, "POST")?,
            before,
            "no reset request for an unadvertised type"
        );
        c.close()?;
        Ok(())
    });
}

#[test]
fn power_change_lands_late_with_the_real_delay() {
    TestContext::run("redfish_delay", |ctx| {
        let opts = SushyOptions {
            instant_power: false,
            ..SushyOptions::default()
        };
        let s = Sushy::start(ctx, &opts)?;
        let c = connect(&s)?;
        let sys = c.default_system()?;
        let start = Instant::now();
        c.reset(&sys, ResetType::On)?;
        // The fake driver applies it 1–11 s later.
        wait_power(&c, &sys, PowerState::On, Duration::from_secs(20))?;
        assert!(
            start.elapsed() >= Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        Ok(())
    });
}

#[test]
fn alias_redirect_on_the_same_origin_is_followed() {
    TestContext::run("redfish_alias", |ctx| {
        let s = Sushy::start(ctx, &SushyOptions::default())?;
        let c = connect(&s)?;
        let alias = SystemId::new(format!("/redfish/v1/Systems/{SYSTEM_NAME}"));
        assert_eq!(c.power_state(&alias)?, PowerState::Off);
        c.reset(&alias, ResetType::On)?;
        wait_power(&c, &alias, PowerState::On, Duration::from_secs(5))?;
        let redirect = format!("GET /redfish/v1/Systems/{SYSTEM_NAME} HTTP/1.1\" 307");
        s.wait_request("the alias answered 307", |l| l.contains(&redirect))?;
        Ok(())
    });
}

#[test]
fn wrong_password_is_auth_failed() {
    TestContext::run("redfish_auth", |ctx| {
        let s = Sushy::start(ctx, &SushyOptions::default())?;
        let bad = Credentials::new("admin", "not-the-password");
        let e = Client::connect(&s.url(), &bad, pin(&s), timeouts()).unwrap_err();
        assert_eq!(e.code(), "bmc_auth_failed", "{e}");
        assert!(!format!("{e} {e:?} {bad:?}").contains("not-the-password"));
        let e = Client::connect(
            &s.url(),
            &Credentials::new("root", "password"),
            pin(&s),
            timeouts(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "bmc_auth_failed", "{e}");
        Ok(())
    });
}

#[test]
fn wrong_pin_sends_nothing_and_tofu_reports_the_fingerprint() {
    TestContext::run("redfish_pin", |ctx| {
        let s = Sushy::start(ctx, &SushyOptions::default())?;
        let real = Fingerprint::of_der(s.cert_der());
        let mut wrong = real;
        wrong.0[31] ^= 0x80;
        let e =
            Client::connect(&s.url(), &creds(), TlsPolicy::Pinned(wrong), timeouts()).unwrap_err();
        assert_eq!(e.code(), "bmc_tls_pin_mismatch", "{e}");
        assert!(e.to_string().contains(&real.to_string()), "{e}");
        // werkzeug logs every request it parsed: only the marker's arrived.
        let log = s.settle_log()?;
        assert_eq!(log.len(), 1, "{log:?}");

        let c = Client::connect(&s.url(), &creds(), TlsPolicy::TrustOnFirstUse, timeouts())?;
        assert_eq!(c.fingerprint(), Some(real));
        let p = outband_redfish::probe(&s.url(), timeouts())?;
        assert_eq!(p.fingerprint, Some(real));
        assert_eq!(p.redfish_version.as_deref(), Some("1.5.0"));
        Ok(())
    });
}

#[test]
fn boot_override() {
    TestContext::run("redfish_boot", |ctx| {
        let s = Sushy::start(ctx, &SushyOptions::default())?;
        let c = connect(&s)?;
        let sys = c.default_system()?;
        c.set_boot_override(&sys, BootTarget::Pxe, BootOverride::Once)?;
        assert_eq!(c.boot_override(&sys)?.0.as_deref(), Some("Pxe"));
        c.set_boot_override(&sys, BootTarget::Hdd, BootOverride::Continuous)?;
        assert_eq!(c.boot_override(&sys)?.0.as_deref(), Some("Hdd"));
        // sushy offers Pxe, Cd, Hdd, UefiHttp: BiosSetup is refused before any PATCH.
        let patches = count(&s, "PATCH")?;
        assert_eq!(patches, 2);
        let e = c
            .set_boot_override(&sys, BootTarget::BiosSetup, BootOverride::Once)
            .unwrap_err();
        assert_eq!(e.code(), "bmc_unsupported", "{e}");
        assert_eq!(count(&s, "PATCH")?, patches);
        Ok(())
    });
}
