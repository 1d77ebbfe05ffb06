use super::*;

fn r(s: &str) -> Range {
    s.parse().unwrap()
}

#[test]
fn ranges_parse_with_caps() {
    assert_eq!(r("10.0.0.5/24").to_string(), "10.0.0.0/24");
    assert_eq!(r("10.0.0.0/24").len(), 254);
    assert_eq!(r("10.0.0.0/20").len(), 4094);
    assert_eq!(r("10.0.0.4/31").len(), 2);
    assert_eq!(r("10.0.0.4/32").len(), 1);
    let range = r("192.168.7.0/30");
    assert_eq!(range.addr(0), Ipv4Addr::new(192, 168, 7, 1));
    assert_eq!(range.addr(1), Ipv4Addr::new(192, 168, 7, 2));
    assert_eq!(r("10.0.0.6/31").addr(0), Ipv4Addr::new(10, 0, 0, 6));
    assert!(matches!(
        "10.0.0.0/19".parse::<Range>(),
        Err(ScanError::RangeTooLarge(_))
    ));
    assert!(matches!(
        "0.0.0.0/0".parse::<Range>(),
        Err(ScanError::RangeTooLarge(_))
    ));
    for bad in [
        "10.0.0.0",
        "10.0.0/24",
        "010.0.0.0/24",
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/+5",
        "10.0.0.0/024",
        "0x0a.0.0.0/24",
        "10.0.0.256/24",
        "10.0.0.0/2 4",
        "",
        "::1/128",
    ] {
        assert!(
            matches!(bad.parse::<Range>(), Err(ScanError::BadRange(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn total_and_rate_are_capped() {
    let mut cfg = ScanConfig {
        ranges: (0..4).map(|i| r(&format!("10.{i}.0.0/20"))).collect(),
        ..ScanConfig::default()
    };
    assert_eq!(cfg.validate(), Ok(()));
    cfg.ranges.push(r("10.9.0.0/20"));
    assert_eq!(cfg.validate(), Err(ScanError::TooManyAddresses(5 * 4094)));
    let cfg = ScanConfig {
        ranges: vec![r("10.0.0.0/24")],
        rate: 0,
        ..ScanConfig::default()
    };
    assert_eq!(cfg.validate(), Err(ScanError::ZeroRate));
}

fn sa(a: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a), port)
}

#[test]
fn planner_order_and_pacing() {
    let t0 = Instant::now();
    let cfg = ScanConfig {
        ranges: vec![r("10.0.0.0/30"), r("10.0.1.9/32")],
        rate: 10,
        burst: 2,
        ..ScanConfig::default()
    };
    let mut p = Planner::new(&cfg, t0).unwrap();
    let ms = |n| t0 + Duration::from_millis(n);
    assert_eq!(
        p.poll(t0),
        Next::Send(Probe::Ping(sa([10, 0, 0, 1], 623), 0))
    );
    assert_eq!(
        p.poll(t0),
        Next::Send(Probe::Redfish(sa([10, 0, 0, 1], 443)))
    );
    assert_eq!(p.poll(t0), Next::Wait(ms(100)));
    assert_eq!(p.poll(ms(99)), Next::Wait(ms(100)));
    assert_eq!(
        p.poll(ms(100)),
        Next::Send(Probe::Ping(sa([10, 0, 0, 2], 623), 1))
    );
    assert_eq!(p.poll(ms(100)), Next::Wait(ms(200)));
    assert_eq!(
        p.poll(ms(250)),
        Next::Send(Probe::Redfish(sa([10, 0, 0, 2], 443)))
    );
    assert_eq!(
        p.poll(ms(300)),
        Next::Send(Probe::Ping(sa([10, 0, 1, 9], 623), 2))
    );
    // After a long pause the bucket holds only `burst` tokens.
    assert_eq!(
        p.poll(ms(10_000)),
        Next::Send(Probe::Redfish(sa([10, 0, 1, 9], 443)))
    );
    assert_eq!(p.poll(ms(10_000)), Next::Done);
}

#[test]
fn rate_holds_over_a_long_scan() {
    let t0 = Instant::now();
    let cfg = ScanConfig {
        ranges: vec![r("10.0.0.0/22")],
        rate: 50,
        burst: 10,
        ..ScanConfig::default()
    };
    let mut p = Planner::new(&cfg, t0).unwrap();
    let mut now = t0;
    let mut sent = 0u32;
    let mut tags = Vec::new();
    loop {
        match p.poll(now) {
            Next::Send(Probe::Ping(_, tag)) => {
                sent += 1;
                tags.push(tag);
            }
            Next::Send(Probe::Redfish(_)) => sent += 1,
            Next::Wait(at) => {
                assert!(at > now);
                now = at;
            }
            Next::Done => break,
        }
    }
    assert_eq!(sent, 2 * 1022);
    let took = now - t0;
    // (sent - burst) tokens at 50/s.
    let want = Duration::from_millis(u64::from(sent - 10) * 20);
    assert!(
        took >= want - Duration::from_millis(5) && took <= want + Duration::from_millis(25),
        "{took:?} vs {want:?}"
    );
    assert!(
        tags.iter().all(|&t| t != 255),
        "tag 255 means no answer wanted"
    );
    assert_eq!(tags[255], 0, "tags wrap at 255");
}

#[test]
fn bucket_never_saves_more_than_burst() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(1000, 3, t0);
    let later = t0 + Duration::from_secs(60);
    assert!((0..3).all(|_| b.take(later).is_ok()));
    assert_eq!(b.take(later), Err(later + Duration::from_millis(1)));
    // A clock that goes backwards does not mint tokens.
    assert!(b.take(t0).is_err());
}

/// A presence pong as a BMC sends it (DSP0136 3.2.4.3).
fn pong(tag: u8, entities: u8) -> Vec<u8> {
    let mut p = vec![
        0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x40, tag, 0x00, 0x10,
    ];
    p.extend_from_slice(&[0x00, 0x00, 0x11, 0xbe, 0, 0, 0, 0, entities, 0x00]);
    p.extend_from_slice(&[0; 6]);
    p
}

#[test]
fn findings_accept_only_answers_to_our_pings() {
    let mut f = Findings::default();
    let bmc = sa([10, 0, 0, 7], 623);
    f.pinged(bmc, 7);
    assert!(
        !f.datagram(SocketAddr::V4(bmc), &pong(8, 0x81)),
        "wrong tag"
    );
    assert!(
        !f.datagram(SocketAddr::V4(sa([10, 0, 0, 8], 623)), &pong(7, 0x81)),
        "not pinged"
    );
    assert!(
        !f.datagram(SocketAddr::V4(sa([10, 0, 0, 7], 624)), &pong(7, 0x81)),
        "other port"
    );
    assert!(
        !f.datagram(SocketAddr::V4(bmc), &pong(7, 0x81)[..27]),
        "truncated"
    );
    assert!(
        !f.datagram(SocketAddr::V4(bmc), &asf::presence_ping(7)),
        "a ping"
    );
    assert!(!f.datagram("[::1]:623".parse().unwrap(), &pong(7, 0x81)));
    assert!(f.datagram(SocketAddr::V4(bmc), &pong(7, 0x81)));
    assert!(
        f.datagram(SocketAddr::V4(bmc), &pong(7, 0x81)),
        "a duplicate is harmless"
    );
    let fp = Fingerprint([0xab; 32]);
    f.redfish(sa([10, 0, 0, 7], 443), Some(fp));
    let found = f.into_found();
    assert_eq!(found.len(), 2);
    // Ordered by address and port.
    assert_eq!(
        found[0],
        Found::Redfish {
            addr: sa([10, 0, 0, 7], 443),
            fingerprint: Some("ab".repeat(32))
        }
    );
    assert_eq!(found[0].url(), "https://10.0.0.7:443");
    assert_eq!(
        found[1],
        Found::Ipmi {
            addr: bmc,
            ipmi: true
        }
    );
    assert_eq!(found[1].url(), "ipmi://10.0.0.7:623");
}

/// An in-process RMCP responder on 127.0.0.1 (for replies real BMCs do not send):
/// answers each ping with what `reply` makes of the ping's tag, from its own socket or
/// from a second one (a spoofed source port).
fn responder(reply: fn(u8) -> Vec<(bool, Vec<u8>)>) -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Some(tag) = buf.get(..n).filter(|p| p.len() == 12).map(|p| p[9]) else {
                continue;
            };
            for (spoof, bytes) in reply(tag) {
                let s = if spoof { &other } else { &sock };
                let _ = s.send_to(&bytes, from);
            }
        }
    });
    port
}

fn scan_one(port: u16) -> Vec<Found> {
    let cfg = ScanConfig {
        ranges: vec![r("127.0.0.1/32")],
        ipmi_port: port,
        // Nothing listens on TCP port 1: the Redfish probe is refused at once.
        redfish_port: 1,
        ping_grace: Duration::from_millis(300),
        ..ScanConfig::default()
    };
    crate::rt::block_on(scan(&cfg)).unwrap()
}

#[test]
fn scan_ignores_garbage_wrong_tags_and_other_ports() {
    let port = responder(|tag| {
        vec![
            (false, b"garbage".to_vec()),
            (false, pong(tag.wrapping_add(1), 0x81)),
            (true, pong(tag, 0x81)),
            (false, asf::presence_ping(tag).to_vec()),
        ]
    });
    assert_eq!(scan_one(port), []);
}

#[test]
fn scan_records_a_proper_pong() {
    let port = responder(|tag| vec![(false, b"noise".to_vec()), (false, pong(tag, 0x81))]);
    assert_eq!(
        scan_one(port),
        [Found::Ipmi {
            addr: sa([127, 0, 0, 1], port),
            ipmi: true
        }]
    );
}
