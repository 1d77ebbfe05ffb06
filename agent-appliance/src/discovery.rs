//! BMC discovery: which addresses of the configured ranges answer an RMCP presence
//! ping (IPMI, UDP 623) or serve a Redfish service root (HTTPS 443)?
//!
//! Two parts, as everywhere in the agent:
//! - a sans-IO core: [`Range`] parsing with hard caps, the [`Planner`] that says which
//!   probe goes out next and when (a token bucket driven by the `Instant`s passed in),
//!   and [`Findings`], which accepts a pong only from an address that was pinged with
//!   that tag;
//! - a smol shell, [`scan`], that sends the pings from one UDP socket, runs the
//!   Redfish probes (blocking, no credentials, certificate fingerprint recorded) on
//!   the blocking pool with bounded concurrency, and returns the endpoints found.
//!
//! Scans are bounded: at most [`MAX_RANGE`] addresses per range (a /20), at most
//! [`MAX_TOTAL`] over all ranges, at a configurable rate (default 50 probes/s).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outband_ipmi::asf;
use outband_redfish::Fingerprint;

/// Largest range: a /20 (4096 addresses).
pub const MAX_RANGE: u32 = 1 << 12;
/// Most addresses in one scan, over all ranges.
pub const MAX_TOTAL: u32 = 1 << 14;
/// Smallest prefix length accepted.
pub const MIN_PREFIX: u8 = 20;

/// Why a scan cannot be made as configured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    /// Not `a.b.c.d/len`.
    #[error("bad IPv4 range {0:?}: want a.b.c.d/len")]
    BadRange(String),
    /// Wider than a /20.
    #[error("range {0} is wider than /{MIN_PREFIX} ({MAX_RANGE} addresses)")]
    RangeTooLarge(String),
    /// All ranges together exceed [`MAX_TOTAL`] addresses.
    #[error("{0} addresses to scan, more than {MAX_TOTAL}")]
    TooManyAddresses(u64),
    /// A rate of zero.
    #[error("the probe rate must be at least 1 per second")]
    ZeroRate,
    /// The UDP socket could not be opened.
    #[error("UDP socket: {0}")]
    Socket(String),
}

/// An IPv4 CIDR range, at most a /20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    base: u32,
    prefix: u8,
}

impl Range {
    /// The number of addresses probed: all of it, less the network and broadcast
    /// addresses for prefixes up to /30.
    pub fn len(&self) -> u32 {
        let size = 1u32 << (32 - u32::from(self.prefix));
        if self.prefix <= 30 { size - 2 } else { size }
    }

    /// Whether nothing is probed (never: a /31 or /32 probes its addresses).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`th probed address (`i < len()`).
    fn addr(&self, i: u32) -> Ipv4Addr {
        let skip = u32::from(self.prefix <= 30);
        Ipv4Addr::from(self.base.wrapping_add(i).wrapping_add(skip))
    }
}

impl FromStr for Range {
    type Err = ScanError;

    fn from_str(s: &str) -> Result<Self, ScanError> {
        let bad = || ScanError::BadRange(s.chars().take(64).collect());
        let (addr, len) = s.trim().split_once('/').ok_or_else(bad)?;
        // Four plain decimal octets only (no 010.0.0.5, no 10.5).
        let octets: Vec<&str> = addr.split('.').collect();
        if octets.len() != 4
            || octets
                .iter()
                .any(|o| o.is_empty() || o.len() > 3 || (o.len() > 1 && o.starts_with('0')))
        {
            return Err(bad());
        }
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        if prefix < MIN_PREFIX {
            return Err(ScanError::RangeTooLarge(s.trim().to_owned()));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(Range {
            base: u32::from(addr) & mask,
            prefix,
        })
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// What to scan and how fast.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// The ranges (each at most a /20).
    pub ranges: Vec<Range>,
    /// UDP port of the presence ping (623).
    pub ipmi_port: u16,
    /// TCP port of the Redfish probe (443).
    pub redfish_port: u16,
    /// Probes per second (pings and Redfish connects together).
    pub rate: u32,
    /// Probes sent back to back before the rate applies.
    pub burst: u32,
    /// How long to wait for late pongs after the last ping.
    pub ping_grace: Duration,
    /// Deadline of one Redfish probe.
    pub redfish_timeout: Duration,
    /// Redfish probes in flight at once.
    pub redfish_concurrency: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            ranges: Vec::new(),
            ipmi_port: 623,
            redfish_port: 443,
            rate: 50,
            burst: 10,
            ping_grace: Duration::from_secs(1),
            redfish_timeout: Duration::from_secs(3),
            redfish_concurrency: 16,
        }
    }
}

impl ScanConfig {
    /// Checks the caps: total addresses and rate.
    pub fn validate(&self) -> Result<(), ScanError> {
        let total: u64 = self.ranges.iter().map(|r| u64::from(r.len())).sum();
        if total > u64::from(MAX_TOTAL) {
            return Err(ScanError::TooManyAddresses(total));
        }
        if self.rate == 0 {
            return Err(ScanError::ZeroRate);
        }
        Ok(())
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up. Time is
/// passed in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u32,
    burst: u32,
    /// Saved-up time: one token is worth 1/rate s of it.
    credit: Duration,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let rate = rate.max(1);
        let burst = burst.max(1);
        let per = Self::per_token(rate);
        Self {
            rate,
            burst,
            credit: per * burst,
            last: now,
        }
    }

    fn per_token(rate: u32) -> Duration {
        Duration::from_nanos(1_000_000_000 / u64::from(rate))
    }

    fn refill(&mut self, now: Instant) {
        let per = Self::per_token(self.rate);
        self.credit =
            (self.credit + now.saturating_duration_since(self.last)).min(per * self.burst);
        self.last = now.max(self.last);
    }

    /// Takes a token if there is one at `now`; else returns when there will be.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        self.refill(now);
        let per = Self::per_token(self.rate);
        if self.credit >= per {
            self.credit -= per;
            Ok(())
        } else {
            Err(self.last + (per - self.credit))
        }
    }
}

/// A probe to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// RMCP presence ping with this tag to this address.
    Ping(SocketAddrV4, u8),
    /// Redfish service root GET over HTTPS to this address.
    Redfish(SocketAddrV4),
}

/// What the shell does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send this probe now.
    Send(Probe),
    /// Nothing may be sent before this instant.
    Wait(Instant),
    /// Every probe has been handed out.
    Done,
}

/// Hands out every probe of a scan in order (per address: the ping, then the Redfish
/// probe), paced by a [`TokenBucket`].
#[derive(Debug, Clone)]
pub struct Planner {
    ranges: Vec<Range>,
    ipmi_port: u16,
    redfish_port: u16,
    range: usize,
    index: u32,
    redfish_next: bool,
    sent_pings: u32,
    bucket: TokenBucket,
}

impl Planner {
    /// A planner for `cfg` (validated) starting at `now`.
    pub fn new(cfg: &ScanConfig, now: Instant) -> Result<Self, ScanError> {
        cfg.validate()?;
        Ok(Self {
            ranges: cfg.ranges.clone(),
            ipmi_port: cfg.ipmi_port,
            redfish_port: cfg.redfish_port,
            range: 0,
            index: 0,
            redfish_next: false,
            sent_pings: 0,
            bucket: TokenBucket::new(cfg.rate, cfg.burst, now),
        })
    }

    /// The next step at `now`.
    pub fn poll(&mut self, now: Instant) -> Next {
        while let Some(r) = self.ranges.get(self.range) {
            if self.index >= r.len() {
                self.range += 1;
                self.index = 0;
                continue;
            }
            if let Err(at) = self.bucket.take(now) {
                return Next::Wait(at);
            }
            let ip = r.addr(self.index);
            return Next::Send(if self.redfish_next {
                self.redfish_next = false;
                self.index += 1;
                Probe::Redfish(SocketAddrV4::new(ip, self.redfish_port))
            } else {
                self.redfish_next = true;
                // Tags 0..=254 (255 means "no answer wanted").
                let tag = (self.sent_pings % 255) as u8;
                self.sent_pings += 1;
                Probe::Ping(SocketAddrV4::new(ip, self.ipmi_port), tag)
            });
        }
        Next::Done
    }
}

/// An endpoint found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Found {
    /// Answered a presence ping; `ipmi` is the pong's "IPMI supported" bit.
    Ipmi {
        /// The address that answered.
        addr: SocketAddrV4,
        /// Whether the pong says IPMI is supported.
        ipmi: bool,
    },
    /// Serves a Redfish service root.
    Redfish {
        /// The address.
        addr: SocketAddrV4,
        /// The SHA-256 fingerprint of its certificate (hex).
        fingerprint: Option<String>,
    },
}

impl Found {
    /// The endpoint URL: `ipmi://a.b.c.d:623` or `https://a.b.c.d:443`.
    pub fn url(&self) -> String {
        match self {
            Found::Ipmi { addr, .. } => format!("ipmi://{addr}"),
            Found::Redfish { addr, .. } => format!("https://{addr}"),
        }
    }
}

/// Collects answers, accepting a pong only from an address that was pinged with
/// the same tag, and each endpoint once.
#[derive(Debug, Default)]
pub struct Findings {
    pinged: HashMap<SocketAddrV4, u8>,
    found: BTreeMap<(SocketAddrV4, bool), Found>,
}

impl Findings {
    /// Records that `to` was pinged with `tag`.
    pub fn pinged(&mut self, to: SocketAddrV4, tag: u8) {
        self.pinged.insert(to, tag);
    }

    /// A datagram from `from`: a pong to one of our pings is recorded; anything else
    /// is ignored. Returns whether it was accepted.
    pub fn datagram(&mut self, from: SocketAddr, data: &[u8]) -> bool {
        let SocketAddr::V4(from) = from else {
            return false;
        };
        let Ok(pong) = asf::parse_pong(data) else {
            return false;
        };
        if self.pinged.get(&from) != Some(&pong.tag) {
            return false;
        }
        self.found.insert(
            (from, false),
            Found::Ipmi {
                addr: from,
                ipmi: pong.ipmi_supported(),
            },
        );
        true
    }

    /// A Redfish service found at `addr`.
    pub fn redfish(&mut self, addr: SocketAddrV4, fingerprint: Option<Fingerprint>) {
        self.found.insert(
            (addr, true),
            Found::Redfish {
                addr,
                fingerprint: fingerprint.map(|f| f.to_string()),
            },
        );
    }

    /// Everything found, ordered by address.
    pub fn into_found(self) -> Vec<Found> {
        self.found.into_values().collect()
    }
}

/// Runs a scan: pings and Redfish probes paced by `cfg.rate`, then waits
/// `cfg.ping_grace` for late pongs and for the Redfish probes in flight.
pub async fn scan(cfg: &ScanConfig) -> Result<Vec<Found>, ScanError> {
    let mut planner = Planner::new(cfg, Instant::now())?;
    let socket = smol::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| ScanError::Socket(e.to_string()))?;
    let findings = Arc::new(std::sync::Mutex::new(Findings::default()));
    let limit = Arc::new(smol::lock::Semaphore::new(cfg.redfish_concurrency.max(1)));
    let mut probes = Vec::new();
    let timeouts = outband_redfish::Timeouts {
        connect: cfg.redfish_timeout,
        total: cfg.redfish_timeout,
    };
    let mut buf = [0u8; 64];
    // Until every probe is out: send when the planner says so, read pongs meanwhile.
    loop {
        let wake = match planner.poll(Instant::now()) {
            Next::Send(Probe::Ping(to, tag)) => {
                lock(&findings).pinged(to, tag);
                // Per-address send errors (no route, refused) do not end the scan.
                let _ = socket.send_to(&asf::presence_ping(tag), to).await;
                continue;
            }
            Next::Send(Probe::Redfish(to)) => {
                let permit = limit.acquire_arc().await;
                let findings = findings.clone();
                probes.push(crate::rt::spawn(async move {
                    let url = format!("https://{to}");
                    let got = smol::unblock(move || outband_redfish::probe(&url, timeouts)).await;
                    if let Ok(p) = got {
                        lock(&findings).redfish(to, p.fingerprint);
                    }
                    drop(permit);
                }));
                continue;
            }
            Next::Wait(at) => at,
            Next::Done => break,
        };
        receive_until(&socket, &findings, &mut buf, wake).await;
    }
    // Late pongs, and the Redfish probes still running (each has its own deadline).
    let grace = Instant::now() + cfg.ping_grace;
    let all_probes = async {
        for p in probes {
            p.await;
        }
    };
    futures_lite::future::zip(
        receive_until(&socket, &findings, &mut buf, grace),
        all_probes,
    )
    .await;
    let findings = std::mem::take(&mut *lock(&findings));
    Ok(findings.into_found())
}

/// Scans at start and then every `d.interval`, and hands what it found to the relay
/// context, which reports it to the gateway. Never returns.
pub async fn run_periodic(d: crate::config::Discovery, ctx: Arc<crate::relay::RelayContext>) {
    loop {
        let t0 = Instant::now();
        match scan(&d.scan).await {
            Ok(found) => {
                tracing::info!(
                    "discovery: {} BMC endpoint(s) found in {:.1?}",
                    found.len(),
                    t0.elapsed()
                );
                ctx.set_discovered(found.iter().map(Found::to_endpoint).collect());
            }
            Err(e) => tracing::warn!("discovery scan failed: {e}"),
        }
        smol::Timer::after(d.interval).await;
    }
}

impl Found {
    /// The inventory entry for this endpoint.
    pub fn to_endpoint(&self) -> outband_proto::pb::Endpoint {
        let cert_sha256 = match self {
            Found::Redfish {
                fingerprint: Some(hex),
                ..
            } => data_encoding::HEXLOWER_PERMISSIVE
                .decode(hex.as_bytes())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        outband_proto::pb::Endpoint {
            url: self.url(),
            reachable: true,
            source: outband_proto::pb::EndpointSource::Discovery as i32,
            cert_sha256: cert_sha256.into(),
        }
    }
}

async fn receive_until(
    socket: &smol::net::UdpSocket,
    findings: &std::sync::Mutex<Findings>,
    buf: &mut [u8],
    until: Instant,
) {
    use futures_lite::FutureExt as _;
    loop {
        let got = async { Some(socket.recv_from(buf).await) }
            .or(async {
                smol::Timer::at(until).await;
                None
            })
            .await;
        match got {
            None => return,
            Some(Ok((n, from))) => {
                let data = buf.get(..n).unwrap_or_default();
                lock(findings).datagram(from, data);
            }
            // ICMP errors surface as recv errors on some systems: keep listening.
            Some(Err(_)) => {
                if Instant::now() >= until {
                    return;
                }
            }
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
