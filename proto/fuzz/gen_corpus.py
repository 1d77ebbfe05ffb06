#!/usr/bin/env python3
"""Writes the seed corpus for the fuzz targets (corpus/<target>/<name>).

The inputs follow the formats documented in proto/src/fuzzing.rs. Run from
proto/fuzz; the output is committed and replayed by proto/tests/fuzz_replay.rs, which
also checks the expected outcome of the named seeds. Deterministic.
"""
import os
import random
import struct


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def frame(kind_num, body):
    msg = field(kind_num, 2, body)
    return struct.pack(">I", len(msg)) + msg


HELLO = frame(1, field(1, 0, 1) + field(2, 0, 1) + field(3, 2, b"tcp-relay")
              + field(5, 2, b"ABCD-EFGH") + field(6, 0, 262144))
HEARTBEAT = frame(3, field(1, 0, 42))
OPEN = frame(4, field(1, 0, 1) + field(2, 0, 1) + field(3, 2, b"vnc://10.0.0.5:5900"))
DATA = frame(7, field(1, 0, 7) + field(2, 2, b"RFB 003.008\n"))
DATA_FIN = frame(7, field(1, 0, 7) + field(2, 2, b"bye") + field(3, 0, 1))
WINDOW = frame(8, field(1, 0, 9) + field(2, 0, 32768))
CLOSE = frame(9, field(1, 0, 11) + field(2, 0, 2) + field(3, 2, b"bmc reset"))
REQUEST = frame(10, field(1, 0, 17) + field(2, 2, b""))
GO_AWAY = frame(13, field(1, 2, b"bye"))
ALL = HELLO + HEARTBEAT + OPEN + DATA + DATA_FIN + WINDOW + CLOSE + REQUEST + GO_AWAY


def dec(first, ctrl, stream):
    """frame_decoder input: config byte, split-size bytes, then the byte stream."""
    assert (first >> 1) % 8 == len(ctrl)
    return bytes([first]) + bytes(ctrl) + stream


def decoder_seeds(rng):
    s = {}
    s["len_zero"] = dec(0, [], b"\0\0\0\0")
    s["len_ffffffff"] = dec(0, [], b"\xff\xff\xff\xff" + b"\0" * 64)
    s["len_ffffffff_split"] = dec(2, [1], b"\xff\xff\xff\xff")
    s["over_limit_small_max"] = dec(1, [], struct.pack(">I", 66) + b"\x1a\x00" * 33)
    s["at_limit_small_max"] = dec(1, [], frame(7, field(1, 0, 1) + field(2, 2, b"x" * 59)))
    s["over_default_max"] = dec(0, [], struct.pack(">I", 256 * 1024 + 1) + b"\0" * 16)
    s["truncated_body"] = dec(0, [], HELLO[:-3])
    s["truncated_header"] = dec(0, [], b"\0\0")
    s["unknown_kind_field_99"] = dec(0, [], struct.pack(">I", 3) + field(99, 0, 5))
    s["unknown_kind_then_valid"] = dec(0, [], struct.pack(">I", 3) + field(99, 0, 5) + HEARTBEAT)
    s["malformed_length_overrun"] = dec(0, [], struct.pack(">I", 3) + b"\x3a\x64\x08")
    s["malformed_wire_type"] = dec(0, [], struct.pack(">I", 2) + b"\x0f\x00")
    s["all_kinds_one_piece"] = dec(0, [], ALL)
    s["all_kinds_fib_splits"] = dec(14, [1, 2, 3, 5, 8, 13, 0], ALL)
    s["all_kinds_byte_by_byte"] = dec(2, [1], ALL)
    s["heartbeats_100_split_3"] = dec(2, [3], HEARTBEAT * 100)
    s["valid_then_garbage"] = dec(4, [7, 0], DATA + b"\x00\x00\x00\x00")
    s["duplicate_oneof"] = dec(0, [], struct.pack(">I", 4) + field(3, 2, b"") + field(13, 2, b""))
    s["empty_hello"] = dec(0, [], frame(1, b""))
    s["big_data_frame"] = dec(6, [255, 200, 0], frame(7, field(1, 0, 1) + field(2, 2, b"z" * 60000)))
    s["padded_data_unknown_field"] = dec(0, [], frame(7, field(1, 0, 1) + field(2, 2, b"x") + field(99, 2, b"\0" * 5000)))
    s["varint_10_bytes"] = dec(0, [], struct.pack(">I", 12) + b"\x1a\x0a\x08" + b"\xff" * 9 + b"\x01")
    for i in range(10):
        n = rng.randrange(1, 200)
        s[f"random_{i}"] = bytes(rng.randrange(256) for _ in range(n))
    for i in range(4):
        n = rng.randrange(1, 60)
        body = bytes(rng.randrange(256) for _ in range(n))
        s[f"random_body_{i}"] = dec(0, [], struct.pack(">I", n) + body)
    return s


# mux input: op bytes as in fuzzing::mux. Peer frames: 0 raw, 1 open, 2 accept,
# 3 refuse, 4 data, 6 window, 7 close, 8 misc. Local: 9 open, 10 accept, 11 refuse,
# 12 send, 13 finish, 14 release, 15 close, 16 detach, 17 request, 18 advance,
# 19 transmit. The multiplexer is the gateway: it opens odd ids, the peer even ones.
def p_open(i, window=0):
    return bytes([1, i, 1]) + struct.pack("<H", window)


def p_accept(i, window=1000):
    return bytes([2, i]) + struct.pack("<H", window)


def p_data(i, units, fin=False):
    return bytes([4, i, units | (0x80 if fin else 0)])


def p_window(i, b, raise_to=0):
    # raise_to: 0 for a plain grant, else 0xC0 + n raises the window to n << 19.
    return bytes([6, i, b, raise_to])


def p_close(i):
    return bytes([7, i, 1])


def p_misc(sel):
    return bytes([8, sel])


def p_raw(raw):
    return bytes([0, len(raw)]) + raw


def l_open():
    return bytes([9])


def l_accept(i):
    return bytes([10, i])


def l_send(i, n):
    return bytes([12, i]) + struct.pack("<H", n)


def l_finish(i):
    return bytes([13, i])


def l_release(i, n):
    return bytes([14, i]) + struct.pack("<H", n)


def l_close(i):
    return bytes([15, i])


def l_detach(i):
    return bytes([16, i])


def l_advance(ms4):
    return bytes([18]) + struct.pack("<H", ms4)


def mux_seeds(rng):
    s = {}
    opened = p_open(2) + l_accept(2)
    ours = l_open() + p_accept(1)
    s["duplicate_open"] = p_open(2) + p_open(2)
    s["reused_lower_id"] = p_open(6) + p_open(4)
    s["wrong_parity_open"] = p_open(3)
    s["open_id_zero"] = p_open(0)
    s["data_unknown_stream"] = p_data(10, 1)
    s["data_unknown_huge_id"] = p_data(0xF0, 1)
    s["data_before_accept"] = p_open(2) + p_data(2, 1)
    s["data_after_fin"] = opened + p_data(2, 1, fin=True) + p_data(2, 1)
    s["data_after_peer_close"] = opened + p_close(2) + p_data(2, 1)
    s["data_exceeding_window"] = opened + p_data(2, 100) + p_data(2, 100)
    s["window_overflow"] = ours + p_window(1, 0xFF) + p_window(1, 0xFF)
    s["window_raised"] = ours + p_window(1, 100, 0xC1) + l_send(1, 2500) + p_window(1, 200)
    s["window_raised_over_limit"] = ours + p_window(1, 1, 0xFF)
    s["accept_unknown"] = p_accept(5)
    s["accept_twice"] = ours + p_accept(1)
    s["refuse_peer_stream"] = opened + bytes([3, 2, 1])
    s["close_unknown"] = p_close(7)
    s["hello_after_handshake"] = p_raw(b"\x0a\x00")
    s["hello_ack_after_handshake"] = p_raw(b"\x12\x02\x08\x01")
    s["go_away"] = opened + p_misc(5)
    s["too_many_streams"] = b"".join(p_open(i) for i in (2, 4, 6, 8, 10, 12))
    s["heartbeat_flood"] = p_misc(0) * 300
    s["silence_is_dead"] = l_advance(0x1000) + l_advance(0x1000)
    s["heartbeats_answered"] = (p_misc(0) + l_advance(300)) * 20
    s["request_reply_inventory"] = p_misc(2) + p_misc(3) + p_misc(4) + bytes([17])
    s["happy_send_and_release"] = (
        ours + l_send(1, 2500) + p_window(1, 100) + l_send(1, 2500) + opened
        + p_data(2, 50) + l_release(2, 450) + p_data(2, 60) + l_release(2, 540)
        + p_data(2, 50, fin=True) + l_finish(1) + p_data(1, 0, fin=True)
    )
    s["close_crossing_fin"] = ours + l_finish(1) + l_close(1) + p_data(1, 0, fin=True)
    s["detach_after_finish"] = ours + l_send(1, 900) + l_finish(1) + l_detach(1) + p_data(1, 5) + p_close(1)
    s["close_then_in_flight_data"] = opened + l_close(2) + p_data(2, 3) + p_close(2)
    s["cancelled_open_refused"] = l_open() + l_close(1) + bytes([3, 1, 6]) + p_accept(1)
    s["raw_garbage"] = p_raw(b"\xff\xff\xff") + p_raw(b"")
    for i in range(8):
        n = rng.randrange(10, 300)
        s[f"random_{i}"] = bytes(rng.randrange(256) for _ in range(n))
    return s


def write(target, seeds):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    rng = random.Random(20261203)
    write("frame_decoder", decoder_seeds(rng))
    write("mux", mux_seeds(rng))
