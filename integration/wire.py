#!/usr/bin/env python3
"""Hostile-network tools for the netns scenarios: floods, pcap extraction,
crafted WireGuard messages, and arithmetic on `pipevpn show --json` output.

Subcommands (all output is JSON on stdout unless noted):
  flood HOST PORT COUNT                  random datagrams of 0..2000 bytes
  extract PCAP SRC_IP                    UDP payloads sent by SRC_IP, as hex lines
  send HOST PORT FILE [GAP]              send each hex line of FILE as one datagram
  craft CAPTURED PUBKEY OUT              malformed messages from captured ones
  lowinit PUBKEY OUT                     initiations with low-order ephemerals, valid mac1
  initflood PUBKEY HOST PORT COUNT SECS [SRC_IP SRC_PORT]
                                         COUNT initiations with valid mac1, random
                                         contents, spread over SECS (0: at once),
                                         sent from SRC_IP:SRC_PORT if given (a
                                         local address: spoofing another host's)
  handshakes HUB_PUBKEY HOST PORT KEYS SECS WINDOW
                                         real initiations from the peers whose private
                                         keys are the lines of KEYS, WINDOW in flight at
                                         a time for SECS: responses per second, latency
  count PCAP SRC_IP                      datagrams from SRC_IP by message type
  stats FILE                             `pipevpn show --json` output as {stage: {field: n}}
  delta BEFORE AFTER                     per-reason drop deltas summed over stages
  expect BEFORE AFTER EXPECTED           exit 1 unless the drop deltas equal EXPECTED
"""

import base64
import hashlib
import hmac
import json
import os
import random
import socket
import struct
import sys
import time

INITIATION, RESPONSE, COOKIE, TRANSPORT = 1, 2, 3, 4
LENGTHS = {INITIATION: 148, RESPONSE: 92, COOKIE: 64}

# Curve25519 points of small order (the published list), little-endian u-coordinates.
LOW_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


def udp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


def send_all(sock, dest, datagram):
    """sendto, retrying while the local queue is full; False if refused."""
    while True:
        try:
            sock.sendto(datagram, dest)
            return True
        except BlockingIOError:
            time.sleep(0.0005)
        except OSError as e:
            if e.errno == 105:  # ENOBUFS: the qdisc is full, wait a little
                time.sleep(0.0005)
                continue
            return False


def flood(host, port, count):
    """Random datagrams: half pure noise, half with a plausible type field so
    they reach the deeper checks (handshake lengths, transport lookup)."""
    sock = udp_socket()
    dest = (host, int(port))
    kinds = {}
    sent = errors = empty = 0
    start = time.monotonic()
    for _ in range(int(count)):
        pick = random.random()
        if pick < 0.5:
            kind, body = "noise", os.urandom(random.randint(0, 2000))
        elif pick < 0.7:
            kind = "transport"
            body = struct.pack("<I", TRANSPORT) + os.urandom(random.randint(28, 1996))
        else:
            t = random.choice([INITIATION, RESPONSE, COOKIE])
            kind = {INITIATION: "initiation", RESPONSE: "response", COOKIE: "cookie"}[t]
            body = struct.pack("<I", t) + os.urandom(LENGTHS[t] - 4)
        if send_all(sock, dest, body):
            sent += 1
            empty += len(body) == 0
            kinds[kind] = kinds.get(kind, 0) + 1
        else:
            errors += 1
    took = time.monotonic() - start
    print(json.dumps({"sent": sent, "empty": empty, "errors": errors,
                      "seconds": round(took, 3), "kinds": kinds}))


def pcap_udp(path):
    """(src_ip, dst_ip, payload) of each IPv4/UDP packet of an Ethernet pcap."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    at = 24
    while at + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + caplen]
        at += 16 + caplen
        if linktype == 1:  # Ethernet
            if len(frame) < 14 or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
        elif linktype == 113:  # Linux cooked
            if len(frame) < 16 or frame[14:16] != b"\x08\x00":
                continue
            ip = frame[16:]
        elif linktype == 276:  # Linux cooked v2 (tcpdump -i any)
            if len(frame) < 20 or frame[0:2] != b"\x08\x00":
                continue
            ip = frame[20:]
        else:
            continue
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        frag = struct.unpack(">H", ip[6:8])[0]
        if frag & 0x3FFF:  # a fragment: not a whole datagram
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        udp = ip[ihl:total]
        yield socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), udp[8:]


def msg_type(payload):
    if len(payload) < 4:
        return "short"
    t = struct.unpack("<I", payload[:4])[0]
    return {1: "initiation", 2: "response", 3: "cookie", 4: "transport"}.get(t, "other")


def extract(path, src):
    for s, _, payload in pcap_udp(path):
        if s == src:
            print(payload.hex())


def send(host, port, path, gap="0"):
    """One datagram per line `HEX  # comment`; an empty HEX is an empty datagram."""
    sock = udp_socket()
    n = 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            send_all(sock, (host, int(port)), bytes.fromhex(line.split("#")[0].strip()))
            n += 1
            time.sleep(float(gap))
    print(json.dumps({"sent": n}))


def count(path, src):
    kinds = {}
    for s, _, payload in pcap_udp(path):
        if s == src:
            k = msg_type(payload)
            kinds[k] = kinds.get(k, 0) + 1
    print(json.dumps(kinds))


def mac1(pubkey, msg):
    key = hashlib.blake2s(b"mac1----" + pubkey).digest()
    return hashlib.blake2s(msg, key=key, digest_size=16).digest()


def with_mac1(pubkey, msg):
    """Sets mac1 (and zeroes mac2) of an initiation or response."""
    end = len(msg) - 32
    return msg[:end] + mac1(pubkey, msg[:end]) + bytes(16)


def captured(path):
    """The longest captured message of each type (hex lines in): for
    transport, a data packet rather than a keepalive."""
    found = {}
    with open(path) as f:
        for line in f:
            p = bytes.fromhex(line.strip())
            if len(p) > len(found.get(msg_type(p), b"")):
                found[msg_type(p)] = p
    return found


def craft(captured_path, pubkey_b64, out):
    """Every type cut short and made long, reserved bytes set, unknown types,
    fresh transport counters under bad tags, datagrams past the MTU. Writes hex
    lines to OUT and prints the drop reasons they must be counted under."""
    pub = base64.b64decode(pubkey_b64)
    got = captured(captured_path)
    for need in ("initiation", "response", "transport"):
        if need not in got:
            sys.exit(f"craft: no captured {need} in {captured_path}")
    init, resp, trans = got["initiation"], got["response"], got["transport"]
    cookie = struct.pack("<I", COOKIE) + os.urandom(60)
    fresh = trans[:8] + struct.pack("<Q", 1 << 40) + trans[16:]  # a counter never used
    items = []  # (datagram, reason, why)

    def add(d, reason, why):
        items.append((d, reason, why))

    for name, m in (("initiation", init), ("response", resp), ("cookie", cookie)):
        add(m[:-1], "bad_length", f"{name} one byte short")
        add(m + b"\0", "bad_length", f"{name} one byte long")
        add(m[:32], "bad_length", f"{name} cut to 32 bytes")
        add(m[:31], "too_short", f"{name} cut to 31 bytes")
        add(m + bytes(100), "bad_length", f"{name} 100 bytes long")
    add(trans[:31], "too_short", "transport cut to 31 bytes")
    add(trans[:1], "too_short", "one byte")
    add(trans[:4], "too_short", "type field only")
    add(fresh[:32], "decrypt", "transport cut to header + 16 (fresh counter)")
    add(fresh[:-1], "decrypt", "transport one byte short (fresh counter)")
    add(fresh + bytes(16), "decrypt", "transport 16 bytes long (fresh counter)")
    add(trans[:4] + os.urandom(4) + trans[8:], "unknown_index", "transport to a random index")
    for i, m in enumerate((init, resp, cookie, trans)):
        r = 1 + i % 3
        add(m[:r] + b"\x01" + m[r + 1:], "unknown_type", f"{msg_type(m)} with reserved byte {r} set")
    for t in (0, 5, 255, 0x01000000):
        add(struct.pack("<I", t) + os.urandom(60), "unknown_type", f"type {t:#x}")
    # Longer than B's MTU: a peer's MTU may be larger, so B opens them (and fails).
    for size in (1500, 9000, 65000):
        add(fresh[:16] + os.urandom(size - 16), "decrypt", f"transport of {size} bytes (fresh counter)")
    # Right length and mac1, nonsense inside: the full handshake check fails.
    add(with_mac1(pub, init[:8] + os.urandom(108) + bytes(32)), "handshake_failed",
        "initiation with valid mac1, random contents")
    add(init[:116] + bytes(16) + init[132:], "bad_mac1", "initiation with mac1 zeroed")
    add(cookie, "unexpected_message", "cookie reply with no handshake of ours pending")
    # Its mac1 is keyed with the initiator's public key, not the responder's.
    add(resp, "bad_mac1", "captured response sent back to the responder")
    write_items(items, out)


def lowinit(pubkey_b64, out):
    """An initiation per low-order point as the ephemeral key, with a valid
    mac1, so it passes the cheap checks and reaches the DH."""
    pub = base64.b64decode(pubkey_b64)
    items = []
    for point in LOW_ORDER:
        body = struct.pack("<II", INITIATION, random.getrandbits(32)) + bytes.fromhex(point)
        body += os.urandom(48 + 28)
        items.append((with_mac1(pub, body + bytes(32)), "handshake_failed",
                      f"initiation with ephemeral {point[:8]}..."))
    write_items(items, out)


def initflood(pubkey_b64, host, port, count, seconds, src_ip=None, src_port=None):
    """Initiations that pass the mac1 check (random sender, ephemeral and
    payload), as a flood: a pool made up front, so sending is not held up by
    hashing. Paced evenly over SECONDS, or as fast as possible for 0. From
    SRC_IP:SRC_PORT when given, e.g. a victim's address put on our interface."""
    pub = base64.b64decode(pubkey_b64)
    pool = [with_mac1(pub, struct.pack("<I", INITIATION) + os.urandom(112) + bytes(32))
            for _ in range(min(int(count), 512))]
    sock = udp_socket()
    if src_ip is not None:
        sock.bind((src_ip, int(src_port)))
    dest = (host, int(port))
    total, span = int(count), float(seconds)
    sent = errors = 0
    start = time.monotonic()
    for i in range(total):
        if span > 0:
            wait = start + span * i / total - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if send_all(sock, dest, pool[i % len(pool)]):
            sent += 1
        else:
            errors += 1
    took = time.monotonic() - start
    print(json.dumps({"sent": sent, "errors": errors, "seconds": round(took, 3),
                      "per_second": int(sent / took) if took > 0 else sent}))


# The Noise IKpsk2 initiator of whitepaper §5.4.2, enough to make initiations a
# responder accepts: see handshakes().
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"


def blake(*parts):
    return hashlib.blake2s(b"".join(parts)).digest()


def kdf(chain, data, n):
    prk = hmac.new(chain, data, hashlib.blake2s).digest()
    out, t = [], b""
    for i in range(1, n + 1):
        t = hmac.new(prk, t + bytes([i]), hashlib.blake2s).digest()
        out.append(t)
    return out


def handshakes(hub_b64, host, port, keys_path, seconds, window):
    """A responder's handshake rate, closed loop: WINDOW initiations in flight
    (kept under the responder's "under load" queue length, so it answers
    with responses, not cookie replies), each from the next of the peers in
    KEYS (private keys, one a line, all known to the responder), no peer more
    often than every 25 ms (the 20 ms flood check, whitepaper §5.3) and
    with strictly growing timestamps. A response counts when its receiver
    index is an initiation in flight and its mac1 is right for that peer;
    its latency is from the initiation's sendto to its recvfrom. An
    initiation unanswered after 1 s is lost and its slot freed. The
    response itself is not opened: that would measure this script."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def raw(pub):
        return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)

    hub = base64.b64decode(hub_b64)
    hub_key = X25519PublicKey.from_public_bytes(hub)
    c0 = blake(CONSTRUCTION)
    h0 = blake(blake(c0, IDENTIFIER), hub)
    mac1_to_hub = hashlib.blake2s(b"mac1----" + hub).digest()
    peers = []  # [static pub, ss, mac1 key for answers, next allowed send, last timestamp]
    with open(keys_path) as f:
        for line in f:
            if line.strip():
                priv = X25519PrivateKey.from_private_bytes(base64.b64decode(line.strip()))
                pub = raw(priv.public_key())
                peers.append([pub, priv.exchange(hub_key),
                              hashlib.blake2s(b"mac1----" + pub).digest(), 0.0, 0])
    if not peers:
        sys.exit(f"handshakes: no keys in {keys_path}")
    zero12 = bytes(12)

    def initiation(peer, index):
        pub, ss, _, _, last = peer
        eph = X25519PrivateKey.generate()
        epub = raw(eph.public_key())
        c = kdf(c0, epub, 1)[0]
        h = blake(h0, epub)
        c, k = kdf(c, eph.exchange(hub_key), 2)
        static = ChaCha20Poly1305(k).encrypt(zero12, pub, h)
        h = blake(h, static)
        c, k = kdf(c, ss, 2)
        # TAI64N (2^62 + 10 + seconds, nanoseconds), strictly above the last one.
        stamp = max(time.time_ns(), last + 1)
        peer[4] = stamp
        tai = struct.pack(">QI", 0x400000000000000A + stamp // 10**9, stamp % 10**9)
        ts = ChaCha20Poly1305(k).encrypt(zero12, tai, h)
        body = struct.pack("<II", INITIATION, index) + epub + static + ts
        return body + hashlib.blake2s(body, key=mac1_to_hub, digest_size=16).digest() + bytes(16)

    sock = udp_socket()
    sock.settimeout(0.001)
    dest = (host, int(port))
    span, window = float(seconds), int(window)
    pending = {}  # sender index -> (peer, send time)
    latencies, cookies, lost, sent, bad = [], 0, 0, 0, 0
    turn = 0
    start = time.monotonic()
    end = start + span
    while True:
        now = time.monotonic()
        if now >= end and not pending:
            break
        while now < end and len(pending) < window:
            peer = peers[turn % len(peers)]
            if peer[3] > now:
                break  # every peer sent within 25 ms: the peer count caps the rate
            turn += 1
            index = random.getrandbits(32)
            msg = initiation(peer, index)
            peer[3] = time.monotonic() + 0.025
            pending[index] = (peer, time.monotonic())
            if send_all(sock, dest, msg):
                sent += 1
            else:
                del pending[index]
            now = time.monotonic()
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            data = None
        got = time.monotonic()
        if data is not None:
            kind = msg_type(data)
            if kind == "cookie":
                cookies += 1
                pending.pop(struct.unpack("<I", data[4:8])[0], None)
            elif kind == "response" and len(data) == 92:
                entry = pending.pop(struct.unpack("<I", data[8:12])[0], None)
                if entry and hashlib.blake2s(data[:60], key=entry[0][2], digest_size=16).digest() == data[60:76]:
                    latencies.append(got - entry[1])
                else:
                    bad += 1
            else:
                bad += 1
        for index, (_, when) in list(pending.items()):
            if got - when > 1.0:
                del pending[index]
                lost += 1
    took = max(time.monotonic() - start, 1e-9)
    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3) if latencies else None

    print(json.dumps({"sent": sent, "answered": len(latencies), "cookies": cookies, "lost": lost,
                      "unmatched": bad, "seconds": round(took, 3), "peers": len(peers), "window": window,
                      "per_second": round(len(latencies) / took, 1),
                      "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
                                     "max": pct(1.0)}}))


def write_items(items, out):
    with open(out, "w") as f:
        for d, reason, why in items:
            f.write(f"{d.hex()}  # {reason}: {why}\n")
    expected = {}
    for _, reason, _ in items:
        expected[reason] = expected.get(reason, 0) + 1
    print(json.dumps(expected, sort_keys=True))


def stats(path):
    """{stage: {field: int}} from what `pipevpn show --json` printed: each
    stage's packets, bytes, drops, queue, blocked, blocked_ns and drop_REASON,
    and "handshake": {completed, last_ms}."""
    with open(path) as f:
        shown = json.load(f)
    out = {}
    for stage, fields in shown["stages"].items():
        out[stage] = {k: v for k, v in fields.items() if isinstance(v, int)}
        for reason, n in fields["drops_by_reason"].items():
            out[stage]["drop_" + reason] = n
    out["handshake"] = dict(shown["handshakes"])
    return out


def delta(before, after):
    """Drop deltas by reason summed over the stages, plus per-stage packet and
    drop deltas."""
    a, b = stats(before), stats(after)
    reasons, stages = {}, {}
    for stage, fields in b.items():
        old = a.get(stage, {})
        for k, v in fields.items():
            d = v - old.get(k, 0)
            if k.startswith("drop_") and d:
                reasons[k[5:]] = reasons.get(k[5:], 0) + d
            if k in ("packets", "drops", "completed"):
                stages[f"{stage}.{k}"] = d
    return {"reasons": reasons, "stages": stages}


def expect(before, after, expected_json):
    d = delta(before, after)
    expected = json.loads(expected_json)
    print(json.dumps(d, sort_keys=True))
    if d["reasons"] != expected:
        sys.exit(f"drop counters {json.dumps(d['reasons'], sort_keys=True)}, "
                 f"expected {json.dumps(expected, sort_keys=True)}")


def main():
    cmds = {"flood": flood, "extract": extract, "send": send, "craft": craft,
            "lowinit": lowinit, "initflood": initflood, "handshakes": handshakes,
            "count": count,
            "stats": lambda p: print(json.dumps(stats(p))),
            "delta": lambda a, b: print(json.dumps(delta(a, b), sort_keys=True)),
            "expect": expect}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
