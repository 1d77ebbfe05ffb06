//! Serial over LAN (payload type 1, IPMI 2.0 chapter 15), sans IO: packet sequence
//! numbers 1..=15, acknowledgements with accepted-character counts (partial
//! acceptance), NACKs, retransmission of unacknowledged data, and break.
//!
//! The [`Connection`](crate::conn::Connection) seals the payloads this produces and
//! hands over the SOL payloads it receives.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// Operation bit: generate a break.
const OP_BREAK: u8 = 0x10;
/// Status/operation bit: NACK.
const NACK: u8 = 0x40;
/// Status bit from the BMC: character transfer unavailable.
const STATUS_UNAVAILABLE: u8 = 0x20;
/// Consecutive refusals (NACK with nothing accepted) before giving up: with the
/// hold of a quarter timeout each, about 10 timeouts.
const MAX_NACKS: u32 = 40;
/// Characters per packet when the BMC reports no usable payload size.
const DEFAULT_CHUNK: usize = 128;
/// Status bit from the BMC: SOL deactivating.
const STATUS_DEACTIVATING: u8 = 0x10;

#[derive(Debug)]
struct Inflight {
    seq: u8,
    data: Vec<u8>,
    op: u8,
    deadline: Instant,
    tries_left: u32,
    resend: bool,
}

/// SOL flow state for one activated payload instance.
#[derive(Debug)]
pub struct SolState {
    max_chunk: usize,
    tx: VecDeque<u8>,
    tx_cap: usize,
    rx: VecDeque<u8>,
    rx_cap: usize,
    inflight: Option<Inflight>,
    next_seq: u8,
    last_rx: Option<(u8, u8)>,
    ack: Option<(u8, u8, bool)>,
    pending_break: bool,
    hold_until: Option<Instant>,
    timeout: Duration,
    retries: u32,
    error: Option<Error>,
    deactivating: bool,
    nacks: u32,
}

impl SolState {
    /// SOL state for a BMC that accepts payloads of `inbound_max` bytes (from
    /// Activate Payload), retransmitting after `timeout` up to `retries` times.
    pub fn new(inbound_max: u16, timeout: Duration, retries: u32) -> SolState {
        // 4 header bytes; the accepted count is one byte, so at most 255 characters.
        // A size too small to carry a header is bogus (pyghmi reports 1, meaning
        // 256 in the wrong byte order): assume a modest packet then.
        let max_chunk = if inbound_max <= 4 {
            DEFAULT_CHUNK
        } else {
            (inbound_max as usize - 4).min(255)
        };
        SolState {
            max_chunk,
            tx: VecDeque::new(),
            tx_cap: 16 * 1024,
            rx: VecDeque::new(),
            rx_cap: 64 * 1024,
            inflight: None,
            next_seq: 1,
            last_rx: None,
            ack: None,
            pending_break: false,
            hold_until: None,
            timeout,
            retries,
            error: None,
            deactivating: false,
            nacks: 0,
        }
    }

    /// Queues bytes for the BMC's serial port; returns how many fit in the buffer.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.tx_cap - self.tx.len());
        self.tx.extend(&data[..n]);
        n
    }

    /// Bytes queued or in flight, not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.tx.len() + self.inflight.as_ref().map_or(0, |i| i.data.len())
    }

    /// Takes received serial bytes into `buf`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.rx.len());
        for (b, v) in buf.iter_mut().zip(self.rx.drain(..n)) {
            *b = v;
        }
        n
    }

    /// Received bytes waiting to be read.
    pub fn readable(&self) -> usize {
        self.rx.len()
    }

    /// Asks for a serial break to be sent with the next packet.
    pub fn send_break(&mut self) {
        self.pending_break = true;
    }

    /// Whether the BMC said SOL is being deactivated.
    pub fn deactivating(&self) -> bool {
        self.deactivating
    }

    /// A fatal error (the BMC stopped acknowledging), once.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.inflight.as_ref().map(|i| i.deadline), self.hold_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Retransmits unacknowledged data, or gives up after the retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.hold_until.is_some_and(|h| now >= h) {
            self.hold_until = None;
        }
        if let Some(i) = self.inflight.as_mut()
            && now >= i.deadline
        {
            if i.tries_left == 0 {
                self.inflight = None;
                self.error = Some(Error::new(
                    ErrorKind::Timeout,
                    "SOL: the BMC stopped acknowledging serial data",
                ));
                return;
            }
            i.tries_left -= 1;
            i.deadline = now + self.timeout;
            i.resend = true;
        }
    }

    /// The next SOL payload to send, if any.
    pub fn poll_payload(&mut self, now: Instant) -> Option<Vec<u8>> {
        let (ack_seq, accepted, nack) = self.ack.unwrap_or((0, 0, false));
        let nack_bit = if nack { NACK } else { 0 };
        if let Some(i) = self.inflight.as_mut()
            && i.resend
        {
            i.resend = false;
            self.ack = None;
            let mut p = vec![i.seq, ack_seq, accepted, i.op | nack_bit];
            p.extend_from_slice(&i.data);
            return Some(p);
        }
        let hold = self.hold_until.is_some_and(|h| now < h);
        if self.inflight.is_none() && !hold && (!self.tx.is_empty() || self.pending_break) {
            let n = self.tx.len().min(self.max_chunk);
            let data: Vec<u8> = self.tx.drain(..n).collect();
            let op = if std::mem::take(&mut self.pending_break) {
                OP_BREAK
            } else {
                0
            };
            let seq = self.next_seq;
            self.next_seq = if seq >= 15 { 1 } else { seq + 1 };
            let mut p = vec![seq, ack_seq, accepted, op | nack_bit];
            p.extend_from_slice(&data);
            self.inflight = Some(Inflight {
                seq,
                data,
                op,
                deadline: now + self.timeout,
                tries_left: self.retries,
                resend: false,
            });
            self.ack = None;
            return Some(p);
        }
        if self.ack.take().is_some() {
            return Some(vec![0, ack_seq, accepted, nack_bit]);
        }
        None
    }

    /// Handles a SOL payload from the BMC (already authenticated and decrypted).
    /// Malformed payloads (under 4 bytes) are ignored.
    pub fn handle_payload(&mut self, p: &[u8], now: Instant) {
        let [seq, ack_seq, accepted, status, ..] = *p else {
            return;
        };
        let (seq, ack_seq) = (seq & 0x0f, ack_seq & 0x0f);
        let data = p.get(4..).unwrap_or_default();
        if status & STATUS_DEACTIVATING != 0 {
            self.deactivating = true;
        }
        if ack_seq != 0
            && let Some(i) = self.inflight.as_ref()
            && i.seq == ack_seq
        {
            let Some(mut i) = self.inflight.take() else {
                return;
            };
            let taken = (accepted as usize).min(i.data.len());
            let rest = i.data.split_off(taken);
            // Unaccepted characters go back to the front of the queue, to be sent in
            // a new packet.
            for b in rest.into_iter().rev() {
                self.tx.push_front(b);
            }
            if taken > 0 {
                self.nacks = 0;
            }
            if status & (NACK | STATUS_UNAVAILABLE) != 0 && taken == 0 {
                // The BMC cannot take characters now: wait a little before retrying,
                // but not forever.
                self.nacks += 1;
                if self.nacks > MAX_NACKS {
                    self.error = Some(Error::new(
                        ErrorKind::Timeout,
                        format!("SOL: the BMC refused serial input {MAX_NACKS} times in a row"),
                    ));
                }
                self.hold_until = Some(now + self.timeout / 4);
                if i.op & OP_BREAK != 0 {
                    self.pending_break = true;
                }
            }
        }
        if seq != 0 {
            if let Some((last, count)) = self.last_rx
                && last == seq
            {
                // A retransmission of what we already have: acknowledge it again.
                self.ack = Some((seq, count, false));
                return;
            }
            let space = self.rx_cap - self.rx.len();
            let take = data.len().min(space);
            self.rx.extend(&data[..take]);
            let nack = take < data.len() && take == 0;
            self.ack = Some((seq, take as u8, nack));
            if !nack {
                self.last_rx = Some((seq, take as u8));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn send_ack_and_partial_accept() {
        let now = Instant::now();
        let mut s = SolState::new(8, T, 2); // 4 data bytes per packet
        assert_eq!(s.write(b"abcdef"), 6);
        assert_eq!(
            s.poll_payload(now).unwrap(),
            [1, 0, 0, 0, b'a', b'b', b'c', b'd']
        );
        assert_eq!(s.poll_payload(now), None, "one packet in flight at a time");
        // BMC accepts 3 of 4: "d" is sent again in packet 2 with "ef".
        s.handle_payload(&[0, 1, 3, 0], now);
        assert_eq!(s.poll_payload(now).unwrap(), [2, 0, 0, 0, b'd', b'e', b'f']);
        s.handle_payload(&[0, 2, 3, 0], now);
        assert_eq!(s.unacked(), 0);
        assert_eq!(s.poll_payload(now), None);
    }

    #[test]
    fn retransmit_then_give_up() {
        let now = Instant::now();
        let mut s = SolState::new(100, T, 1);
        s.write(b"x");
        assert_eq!(s.poll_payload(now).unwrap(), [1, 0, 0, 0, b'x']);
        assert_eq!(s.poll_timeout(), Some(now + T));
        s.handle_timeout(now + T);
        assert_eq!(
            s.poll_payload(now + T).unwrap(),
            [1, 0, 0, 0, b'x'],
            "same seq"
        );
        s.handle_timeout(now + T * 2);
        assert_eq!(s.take_error().unwrap().kind(), ErrorKind::Timeout);
    }

    #[test]
    fn receive_ack_and_dedupe() {
        let now = Instant::now();
        let mut s = SolState::new(100, T, 1);
        s.handle_payload(&[3, 0, 0, 0, b'h', b'i'], now);
        assert_eq!(s.poll_payload(now).unwrap(), [0, 3, 2, 0]);
        // The BMC resends packet 3 (our ack was lost): acked again, not delivered twice.
        s.handle_payload(&[3, 0, 0, 0, b'h', b'i'], now);
        assert_eq!(s.poll_payload(now).unwrap(), [0, 3, 2, 0]);
        let mut buf = [0u8; 10];
        assert_eq!(s.read(&mut buf), 2);
        assert_eq!(&buf[..2], b"hi");
        // Ack piggybacks on data.
        s.handle_payload(&[4, 0, 0, 0, b'!'], now);
        s.write(b"k");
        assert_eq!(s.poll_payload(now).unwrap(), [1, 4, 1, 0, b'k']);
    }

    #[test]
    fn nack_holds_then_resends_and_break() {
        let now = Instant::now();
        let mut s = SolState::new(100, T, 3);
        s.write(b"ab");
        s.send_break();
        assert_eq!(
            s.poll_payload(now).unwrap(),
            [1, 0, 0, OP_BREAK, b'a', b'b']
        );
        s.handle_payload(&[0, 1, 0, NACK], now);
        assert_eq!(s.poll_payload(now), None, "held after a NACK");
        let later = s.poll_timeout().unwrap();
        s.handle_timeout(later);
        assert_eq!(
            s.poll_payload(later).unwrap(),
            [2, 0, 0, OP_BREAK, b'a', b'b']
        );
        s.handle_payload(&[0, 2, 2, 0], later);
        assert_eq!(s.unacked(), 0);
        s.handle_payload(&[0, 0, 0, STATUS_DEACTIVATING], later);
        assert!(s.deactivating());
        s.handle_payload(&[1, 2], later); // too short: ignored
    }

    #[test]
    fn endless_nacks_end_in_an_error() {
        let mut now = Instant::now();
        let mut s = SolState::new(100, T, 3);
        s.write(b"x");
        for _ in 0..=MAX_NACKS {
            assert!(s.take_error().is_none());
            let p = s.poll_payload(now).expect("sent again after the hold");
            s.handle_payload(&[0, p[0], 0, NACK], now);
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
        }
        assert_eq!(s.take_error().unwrap().kind(), ErrorKind::Timeout);
    }

    #[test]
    fn bogus_payload_size_uses_default_chunk() {
        let now = Instant::now();
        let mut s = SolState::new(1, T, 1);
        s.write(&[b'z'; 300]);
        assert_eq!(s.poll_payload(now).unwrap().len(), 4 + DEFAULT_CHUNK);
        let mut s = SolState::new(1000, T, 1);
        s.write(&[b'z'; 300]);
        assert_eq!(s.poll_payload(now).unwrap().len(), 4 + 255);
    }

    #[test]
    fn seq_wraps_1_to_15() {
        let now = Instant::now();
        let mut s = SolState::new(100, T, 1);
        for i in 0..20u8 {
            s.write(&[i]);
            let p = s.poll_payload(now).unwrap();
            assert_eq!(p[0], i % 15 + 1);
            s.handle_payload(&[0, p[0], 1, 0], now);
        }
    }
}
