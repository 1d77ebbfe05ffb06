//! An in-process fake BMC for the faults real simulators cannot produce: a BMC that
//! offers only cipher suite 0, a forged RAKP 2, malformed/truncated/oversized answers,
//! replayed session sequence numbers, a privilege refusal after the session is open,
//! and silence. Also suite 17 (HMAC-SHA256), which neither ipmi_sim nor pyghmi
//! implements. Each fault must end in a clear error, never a hang.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use outband_ipmi::crypto::SessionKeys;
use outband_ipmi::message::checksum;
use outband_ipmi::packet::{self, Packet, Security, payload};
use outband_ipmi::rakp::CipherSuite;
use outband_ipmi::{ChassisAction, Credentials, ErrorKind, Options, Session};
use zeroize::Zeroizing;

const PASSWORD: &[u8] = b"secret";
const GUID: [u8; 16] = [0x42; 16];
const BMC_SID: u32 = 0x0bad_cafe;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Lists only suite 0 and refuses every Open Session.
    Cipher0Only,
    /// RAKP 2 with a wrong key exchange auth code.
    BadRakp2,
    /// Answers everything with garbage of various shapes.
    Garbage,
    /// Uses session sequence number 1 for every answer.
    ReplaySeq,
    /// Refuses Set Session Privilege Level (after RAKP 4: the session is open).
    DenyPrivilege,
    /// Never answers.
    Silent,
    /// A channel with IPMI 1.5 sessions only, offering only auth type none.
    Ipmi15Only,
    /// Ignores the first Get Chassis Status (as if lost), answers the retry.
    DropFirstStatus,
}

#[derive(Debug, Default)]
struct Seen {
    /// (session seq, rqSeq) of every Get Chassis Status received.
    status_requests: Vec<(u32, u8)>,
    rakp3_status: Vec<u8>,
    close_session: usize,
    commands: Vec<u8>,
    /// Commands received in IPMI 1.5 (auth type none) packets.
    v15_commands: Vec<u8>,
    suites_offered: Vec<u8>,
}

struct FakeBmc {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FakeBmc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    fault: Fault,
    suite: Option<CipherSuite>,
    console_sid: u32,
    rm: [u8; 16],
    rc: [u8; 16],
    role: u8,
    user: Vec<u8>,
    sec: Option<Security>,
    seq: u32,
    garbage_round: usize,
}

/// (netFn, rqSeq, cmd) of a request (the fake trusts its client).
fn parse_request(m: &[u8]) -> (u8, u8, u8) {
    assert!(m.len() >= 7, "request too short");
    assert_eq!(checksum(&m[3..]), 0, "request checksum");
    (m[1] >> 2, m[4] >> 2, m[5])
}

fn response(req: &[u8], cc: u8, data: &[u8]) -> Vec<u8> {
    let (netfn, seq, cmd) = parse_request(req);
    let mut m = vec![0x81, (netfn + 1) << 2];
    m.push(checksum(&m));
    m.extend_from_slice(&[0x20, seq << 2, cmd, cc]);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

impl State {
    fn handle(&mut self, d: &[u8], seen: &Mutex<Seen>) -> Vec<Vec<u8>> {
        if self.fault == Fault::Silent {
            return vec![];
        }
        if self.fault == Fault::Garbage {
            self.garbage_round += 1;
            let good = packet::encode_v15(&[0x81, 0x1c, 0x63, 0x20, 0x04, 0x38, 0, 0]).unwrap();
            return vec![
                vec![],
                vec![0x06],
                good[..good.len() - 3].to_vec(),
                vec![0xff; 2000],
                vec![
                    6, 0, 0xff, 7, 6, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2,
                ],
                {
                    let mut g = good.clone();
                    g[13] = 200; // message length beyond the datagram
                    g
                },
            ];
        }
        let in_session = self.sec.is_some();
        let Ok(p) = packet::decode(d, self.sec.as_ref()) else {
            return vec![];
        };
        match p {
            Packet::V15(req) => {
                seen.lock()
                    .unwrap()
                    .v15_commands
                    .push(parse_request(&req).2);
                // Get Channel Authentication Capabilities: IPMI 2.0 supported (or
                // IPMI 1.5 with auth type none only).
                let (auth, v) = if self.fault == Fault::Ipmi15Only {
                    (0x81, 0x01)
                } else {
                    (0x80, 0x02)
                };
                let data = [0x01, auth, 0x04, v, 0, 0, 0, 0];
                vec![packet::encode_v15(&response(&req, 0, &data)).unwrap()]
            }
            Packet::V2(p) if !in_session => match p.payload_type {
                payload::IPMI => {
                    // Get Channel Cipher Suites.
                    let recs: Vec<u8> = if self.fault == Fault::Cipher0Only {
                        vec![0x01, 0xc0, 0x00, 0x00, 0x40, 0x80]
                    } else {
                        vec![
                            0x01, 0xc0, 0x03, 0x01, 0x41, 0x81, 0xc0, 0x11, 0x03, 0x44, 0x81,
                        ]
                    };
                    let m = response(&p.payload, 0, &recs);
                    vec![packet::encode_v2(payload::IPMI, 0, 0, &m, None, &[0; 16]).unwrap()]
                }
                payload::OPEN_SESSION_REQ => {
                    let b = &p.payload;
                    let tag = b[0];
                    self.console_sid = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                    let (a, i) = (b[12], b[20]);
                    let suite = match (a, i) {
                        (1, 1) => CipherSuite::by_id(3),
                        (3, 4) => CipherSuite::by_id(17),
                        _ => None,
                    };
                    seen.lock()
                        .unwrap()
                        .suites_offered
                        .push(suite.map_or(0, |s| s.id));
                    let mut r = vec![tag];
                    if self.fault == Fault::Cipher0Only || suite.is_none() {
                        r.extend_from_slice(&[0x11, 0, 0]);
                        r.extend_from_slice(&self.console_sid.to_le_bytes());
                    } else {
                        self.suite = suite;
                        r.extend_from_slice(&[0, 4, 0]);
                        r.extend_from_slice(&self.console_sid.to_le_bytes());
                        r.extend_from_slice(&BMC_SID.to_le_bytes());
                        r.extend_from_slice(&b[8..32]);
                    }
                    vec![
                        packet::encode_v2(payload::OPEN_SESSION_RESP, 0, 0, &r, None, &[0; 16])
                            .unwrap(),
                    ]
                }
                payload::RAKP1 => {
                    let b = &p.payload;
                    let suite = self.suite.unwrap();
                    self.rm.copy_from_slice(&b[8..24]);
                    self.role = b[24];
                    self.user = b[28..28 + b[27] as usize].to_vec();
                    self.rc = [0x77; 16];
                    let mut mac = suite
                        .auth
                        .mac(
                            PASSWORD,
                            &[
                                &self.console_sid.to_le_bytes(),
                                &BMC_SID.to_le_bytes(),
                                &self.rm,
                                &self.rc,
                                &GUID,
                                &[self.role, self.user.len() as u8],
                                &self.user,
                            ],
                        )
                        .to_vec();
                    if self.fault == Fault::BadRakp2 {
                        mac[0] ^= 1;
                    }
                    let mut r = vec![b[0], 0, 0, 0];
                    r.extend_from_slice(&self.console_sid.to_le_bytes());
                    r.extend_from_slice(&self.rc);
                    r.extend_from_slice(&GUID);
                    r.extend_from_slice(&mac);
                    vec![packet::encode_v2(payload::RAKP2, 0, 0, &r, None, &[0; 16]).unwrap()]
                }
                payload::RAKP3 => {
                    let b = &p.payload;
                    seen.lock().unwrap().rakp3_status.push(b[1]);
                    if b[1] != 0 {
                        return vec![];
                    }
                    let suite = self.suite.unwrap();
                    let keys = SessionKeys::derive(
                        suite.auth, PASSWORD, &self.rm, &self.rc, self.role, &self.user,
                    );
                    let mut icv = suite
                        .auth
                        .mac(&keys.sik, &[&self.rm, &BMC_SID.to_le_bytes(), &GUID])
                        .to_vec();
                    icv.truncate(suite.auth.icv_len());
                    self.sec = Some(Security {
                        integrity: suite.integrity,
                        k1: keys.k1.clone(),
                        aes_key: Some(Zeroizing::new(keys.aes_key())),
                    });
                    let mut r = vec![b[0], 0, 0, 0];
                    r.extend_from_slice(&self.console_sid.to_le_bytes());
                    r.extend_from_slice(&icv);
                    vec![packet::encode_v2(payload::RAKP4, 0, 0, &r, None, &[0; 16]).unwrap()]
                }
                _ => vec![],
            },
            Packet::V2(p) => {
                assert_eq!(p.session_id, BMC_SID, "client used the wrong session id");
                let (netfn, rq_seq, cmd) = parse_request(&p.payload);
                let mut s = seen.lock().unwrap();
                s.commands.push(cmd);
                if (netfn, cmd) == (0x00, 0x01) {
                    s.status_requests.push((p.seq, rq_seq));
                    if self.fault == Fault::DropFirstStatus && s.status_requests.len() == 1 {
                        return vec![];
                    }
                }
                let (cc, data): (u8, Vec<u8>) = match (netfn, cmd) {
                    (0x06, 0x3b) if self.fault == Fault::DenyPrivilege => (0x81, vec![]),
                    (0x06, 0x3b) => (0, vec![4]),
                    (0x06, 0x3c) => {
                        s.close_session += 1;
                        (0, vec![])
                    }
                    (0x00, 0x01) => (0, vec![0x01, 0, 0]),
                    (0x00, 0x02) => (0, vec![]),
                    _ => (0xc1, vec![]),
                };
                drop(s);
                let m = response(&p.payload, cc, &data);
                self.seq = if self.fault == Fault::ReplaySeq {
                    1
                } else {
                    self.seq + 1
                };
                vec![
                    packet::encode_v2(
                        payload::IPMI,
                        self.console_sid,
                        self.seq,
                        &m,
                        self.sec.as_ref(),
                        &[9; 16],
                    )
                    .unwrap(),
                ]
            }
        }
    }
}

fn start(fault: Fault) -> FakeBmc {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (st, se) = (stop.clone(), seen.clone());
    let thread = std::thread::spawn(move || {
        let mut state = State {
            fault,
            suite: None,
            console_sid: 0,
            rm: [0; 16],
            rc: [0; 16],
            role: 0,
            user: vec![],
            sec: None,
            seq: 0,
            garbage_round: 0,
        };
        let mut buf = [0u8; 2048];
        while !st.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            for out in state.handle(&buf[..n], &se) {
                let _ = sock.send_to(&out, from);
            }
        }
    });
    FakeBmc {
        addr,
        stop,
        seen,
        thread: Some(thread),
    }
}

fn opts() -> Options {
    Options {
        timeout: Duration::from_millis(200),
        retries: 1,
        ..Options::default()
    }
}

fn creds() -> Credentials {
    Credentials::new("admin", "secret")
}

fn open(bmc: &FakeBmc, o: &Options) -> Result<Session, outband_ipmi::Error> {
    smol::block_on(Session::open(bmc.addr, &creds(), o))
}

#[test]
fn suite_17_sha256_session_works() {
    let bmc = start(Fault::None);
    let mut s = open(&bmc, &opts()).expect("open");
    assert_eq!(s.cipher_suite(), 17, "17 is preferred and offered");
    smol::block_on(async {
        assert!(s.chassis_status().await.unwrap().power_on);
        s.chassis_control(ChassisAction::PowerCycle).await.unwrap();
        s.close().await.unwrap();
    });
    let seen = bmc.seen.lock().unwrap();
    assert_eq!(seen.suites_offered, [17]);
    assert_eq!(seen.commands, [0x3b, 0x01, 0x02, 0x3c]);
}

#[test]
fn suite_3_when_asked() {
    let bmc = start(Fault::None);
    let mut o = opts();
    o.cipher_suites = vec![3];
    let s = open(&bmc, &o).expect("open");
    assert_eq!(s.cipher_suite(), 3);
    smol::block_on(s.close()).unwrap();
}

#[test]
fn cipher_0_only_bmc_is_refused() {
    let bmc = start(Fault::Cipher0Only);
    let e = open(&bmc, &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CipherRefused, "{e}");
    assert_eq!(e.code(), "bmc_cipher_refused");
    assert!(
        e.to_string().contains("[0]"),
        "names what the BMC offers: {e}"
    );
    assert!(
        bmc.seen.lock().unwrap().suites_offered.is_empty(),
        "nothing proposed"
    );
    // Without the listing (one suite configured), Open Session is refused instead.
    let mut o = opts();
    o.cipher_suites = vec![3];
    let e = open(&bmc, &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CipherRefused, "{e}");
    // And suite 0 cannot even be asked for.
    o.cipher_suites = vec![0, 1, 2];
    let e = open(&bmc, &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CipherRefused, "{e}");
}

#[test]
fn forged_rakp2_is_auth_failure_and_aborts_rakp() {
    let bmc = start(Fault::BadRakp2);
    let e = open(&bmc, &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
    assert!(!e.to_string().contains("secret"));
    // The client told the BMC with RAKP 3 status "invalid integrity check value".
    let t = Instant::now();
    while bmc.seen.lock().unwrap().rakp3_status.is_empty() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bmc.seen.lock().unwrap().rakp3_status, [0x0f]);
}

#[test]
fn garbage_answers_give_protocol_error_in_bounded_time() {
    let bmc = start(Fault::Garbage);
    let o = opts();
    let t = Instant::now();
    let e = open(&bmc, &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert_eq!(e.code(), "bmc_protocol");
    assert!(e.to_string().contains("rejected"), "{e}");
    assert!(t.elapsed() < o.timeout * (o.retries + 1) + Duration::from_millis(300));
}

#[test]
fn replayed_sequence_numbers_are_rejected() {
    let bmc = start(Fault::ReplaySeq);
    let mut s = open(&bmc, &opts()).expect("open: the first answer (seq 1) is fine");
    // Every later answer reuses seq 1: dropped as replays, so the command fails.
    let e = smol::block_on(s.chassis_status()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert!(e.to_string().contains("replayed sequence number 1"), "{e}");
}

#[test]
fn privilege_refused_after_open_closes_the_session() {
    let bmc = start(Fault::DenyPrivilege);
    let e = open(&bmc, &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
    let t = Instant::now();
    while bmc.seen.lock().unwrap().close_session == 0 && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        bmc.seen.lock().unwrap().close_session,
        1,
        "Close Session sent on error"
    );
}

#[test]
fn dropped_session_sends_close() {
    let bmc = start(Fault::None);
    let s = open(&bmc, &opts()).expect("open");
    drop(s);
    let t = Instant::now();
    while bmc.seen.lock().unwrap().close_session == 0 && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bmc.seen.lock().unwrap().close_session, 1);
}

#[test]
fn silent_bmc_times_out_without_hanging() {
    let bmc = start(Fault::Silent);
    let o = opts();
    let t = Instant::now();
    let e = open(&bmc, &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let took = t.elapsed();
    assert!(took >= o.timeout * (o.retries + 1), "{took:?}");
    assert!(
        took < o.timeout * (o.retries + 1) + Duration::from_millis(300),
        "{took:?}"
    );
}

#[test]
fn null_user_and_ipmi15_auth_type_none_refused() {
    let bmc = start(Fault::None);
    let e =
        smol::block_on(Session::open(bmc.addr, &Credentials::new("", "x"), &opts())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
    assert!(e.to_string().contains("null"), "{e}");
    let bmc = start(Fault::Ipmi15Only);
    let e = open(&bmc, &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(e.code(), "bmc_unsupported");
    assert!(e.to_string().contains("allow_ipmi15"), "{e}");
    // Opted in, but the BMC offers only auth type none: refused before Get Session
    // Challenge (only the capabilities query, 0x38, reaches the BMC).
    let mut o = opts();
    o.allow_ipmi15 = true;
    let e = open(&bmc, &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CipherRefused, "{e}");
    assert!(e.to_string().contains("never none"), "{e}");
    let cmds = bmc.seen.lock().unwrap().v15_commands.clone();
    assert!(cmds.iter().all(|&c| c == 0x38), "{cmds:02x?}");
    // force_ipmi15 without allow_ipmi15 is refused before anything is sent.
    let mut o = opts();
    o.force_ipmi15 = true;
    let e = open(&bmc, &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("requires allow_ipmi15"), "{e}");
}

#[test]
fn lost_request_is_retransmitted_with_new_session_seq_same_rqseq() {
    let bmc = start(Fault::DropFirstStatus);
    let o = opts();
    let mut s = open(&bmc, &o).expect("open");
    let t = Instant::now();
    assert!(smol::block_on(s.chassis_status()).unwrap().power_on);
    assert!(
        t.elapsed() >= o.timeout,
        "answered only after a retransmission"
    );
    let seen = bmc.seen.lock().unwrap();
    let [(seq1, rq1), (seq2, rq2)] = seen.status_requests[..] else {
        panic!("{:?}", seen.status_requests)
    };
    assert!(
        seq2 > seq1,
        "fresh session sequence number ({seq1} then {seq2})"
    );
    assert_eq!(rq1, rq2, "same rqSeq so the BMC can spot the duplicate");
}

#[test]
fn cancelled_command_leaves_the_session_usable() {
    let bmc = start(Fault::DropFirstStatus);
    let mut s = open(&bmc, &opts()).expect("open");
    // The caller gives up on the first status (its request was "lost") early.
    let first = smol::block_on(futures_lite::future::or(
        async { Some(s.chassis_status().await) },
        async {
            smol::Timer::after(Duration::from_millis(50)).await;
            None
        },
    ));
    assert!(first.is_none(), "the first request had no answer");
    // The next command works; the abandoned one's late answer cannot be mistaken
    // for it (different rqSeq).
    assert!(smol::block_on(s.chassis_status()).unwrap().power_on);
    smol::block_on(s.close()).unwrap();
    let seen = bmc.seen.lock().unwrap();
    assert_eq!(seen.status_requests.len(), 2);
    assert_ne!(seen.status_requests[0].1, seen.status_requests[1].1);
}
