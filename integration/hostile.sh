#!/usr/bin/env bash
# A hostile network against a running pipevpn tunnel (A in ns1 initiates to B in
# ns2). An attacker namespace (ns3) reaches B's listening port over its own veth
# and sends replays, malformed and crafted messages, peers with wrong keys, and a
# flood of random datagrams. Each time: B must stay up, emit nothing it should not,
# count every drop under its reason (`pipevpn show --json`), and the tunnel must carry
# traffic afterwards. Also: low-order public keys in a config are refused before
# anything is created.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn tcpdump

# Both peers still running and the tunnel carrying pings both ways.
tunnel_still_up() {
	expect_alive "$TUN1"
	expect_alive "$TUN2"
	ping_ok "$NS1" "$INNER2"
	ping_ok "$NS2" "$INNER1"
}

# nothing_from_b CAPTURE: B sent nothing at all to the attacker.
nothing_from_b() {
	local got
	got=$(wire count "$TMP/$1.pcap" "$INTERNET_GW")
	[[ $got == "{}" ]] || fail "B answered the attacker: $got"
}

# send_and_expect NAME FILE EXPECTED_JSON [GAP]: sends FILE's datagrams from ns3 to B,
# then B's drop counters must have grown by exactly EXPECTED, nothing reached B's
# tun, and B sent nothing back.
send_and_expect() {
	local name=$1 file=$2 expected=$3 gap=${4:-0} d
	fresh_stats "$TUN2" "$TMP/$name.before"
	start_capture "$name" "$NS3" "$VETH4" udp and src host "$INTERNET_GW"
	n3 python3 "$WIRE" send "$INTERNET_GW" "$PORT" "$file" "$gap" >&2
	fresh_stats "$TUN2" "$TMP/$name.after"
	stop_capture "$name"
	log "expected drops: $expected"
	d=$(wire expect "$TMP/$name.before" "$TMP/$name.after" "$expected" 2>&1) || fail "$d"
	log "counted: $d"
	info "drops: $(wire delta "$TMP/$name.before" "$TMP/$name.after")"
	[[ $(python3 -c 'import json,sys; s=json.loads(sys.argv[1])["stages"]; print(s.get("tun_writer.packets", 0) + s.get("decryptor.packets", 0))' "$d") == 0 ]] ||
		fail "something was delivered to B's tun: $d"
	nothing_from_b "$name"
}

scenario topology
make_topology
make_attacker
setup_pair a yes
# Valid traffic to replay and to craft from: a handshake and pings both ways.
start_capture valid "$NS2" "$VETH2" udp port "$PORT"
start_pair pipevpn pipevpn a
wait_for_handshake "$NS1" "$INNER2"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
stop_capture valid
wire extract "$TMP/valid.pcap" "$UNDER1" >"$TMP/from_a.hex"
wire extract "$TMP/valid.pcap" "$UNDER2" >"$TMP/from_b.hex"
cat "$TMP/from_a.hex" "$TMP/from_b.hex" >"$TMP/captured.hex"
log "captured from A: $(wire count "$TMP/valid.pcap" "$UNDER1"), from B: $(wire count "$TMP/valid.pcap" "$UNDER2")"
grep -q '^01000000' "$TMP/from_a.hex" || fail "no handshake initiation captured from A"
pass

# Replayed transport packets and a replayed initiation, sent to B from the attacker:
# A's packets are replays, B's own carry an index B never gave out, the initiation's
# timestamp is not newer than the last one, and B's response is not keyed for B.
scenario replay
{
	sed 's/$/  # from A/' "$TMP/from_a.hex"
	sed 's/$/  # from B/' "$TMP/from_b.hex"
} >"$TMP/replay.hex"
expected=$(python3 -c '
import json, sys
e = {}
def add(r):
    e[r] = e.get(r, 0) + 1
for path, mine in ((sys.argv[1], True), (sys.argv[2], False)):
    for line in open(path):
        t = line[:8]
        if t == "01000000":
            add("stale_timestamp" if mine else "bad_mac1")
        elif t == "02000000":
            add("bad_mac1")
        elif t == "04000000":
            add("replay" if mine else "unknown_index")
print(json.dumps(e))' "$TMP/from_a.hex" "$TMP/from_b.hex")
send_and_expect replay "$TMP/replay.hex" "$expected" 0.06
grep -q "$INTERNET_HOST" "${LOG_OF[$TUN2]}" && fail "B took the attacker's address as A's endpoint: $(grep "$INTERNET_HOST" "${LOG_OF[$TUN2]}")"
tunnel_still_up
pass

# Every message type cut short and made long, reserved bytes set, unknown types,
# bad tags under fresh counters (also in datagrams longer than B's MTU), bad mac1,
# nonsense behind a valid mac1.
scenario malformed
expected=$(wire craft "$TMP/captured.hex" "${PUB[b]}" "$TMP/malformed.hex")
send_and_expect malformed "$TMP/malformed.hex" "$expected" 0.06
tunnel_still_up
pass

# Initiations whose ephemeral key is each small-order point, with a valid mac1:
# they pass the cheap checks and must fail at the Diffie-Hellman, silently.
scenario low-order-ephemeral
expected=$(wire lowinit "${PUB[b]}" "$TMP/lowinit.hex")
send_and_expect low-order-ephemeral "$TMP/lowinit.hex" "$expected" 0.06
tunnel_still_up
pass

# wrong_key_peer NAME PRIVATE PSK: a pipevpn peer in ns3 talking to B, as $TUN3, with
# a ping through it; A's ping to B runs meanwhile and must lose nothing.
wrong_key_peer() {
	local name=$1 conf="$TMP/$1.conf"
	write_conf "$conf" "$2" "$INNER1/24" "${PUB[b]}" "$INNER2/32" "$INTERNET_GW:$PORT" "$3"
	fresh_stats "$TUN2" "$TMP/$name.before"
	start_capture "$name" "$NS3" "$VETH4" udp and src host "$INTERNET_GW"
	start_ping "$name-real" "$NS1" "$INNER2" 0.1
	start_pipevpn "$NS3" "$conf" "$TUN3"
	# Its first packet starts a handshake, its retry comes 5 s later.
	! n3 ping -c 7 -i 1 -W 1 -q "$INNER2" >&2 || fail "the $name peer reached B through a tunnel"
	stop_ping "$name-real"
	fresh_stats "$TUN3" "$TMP/$name.self"
	stop_impl "$TUN3"
	fresh_stats "$TUN2" "$TMP/$name.after"
	stop_capture "$name"
	info "B $(wire delta "$TMP/$name.before" "$TMP/$name.after"); the $name peer: $(jq -c '{handshaker: .stages.handshaker, handshakes}' "$TMP/$name.self")"
	((PING_RECEIVED == PING_SENT)) || fail "A's ping through the tunnel lost $((PING_SENT - PING_RECEIVED)) of $PING_SENT while the $name peer tried"
	[[ $(stat_value "$TMP/$name.self" handshake completed) == 0 ]] || fail "the $name peer completed a handshake"
	[[ $(stat_value "$TMP/$name.after" handshake completed) == "$(stat_value "$TMP/$name.before" handshake completed)" ]] ||
		fail "B completed a handshake while only the $name peer initiated"
	expect_alive "$TUN2"
}

scenario wrong-psk
# A's own private key with the wrong preshared key: B can only tell from the
# PSK-mixed response, so it answers (the protocol allows exactly that), and the
# initiator fails to open the response.
wrong_key_peer wrong-psk "${PRIV[a]}" "$(wg genpsk)"
got=$(wire count "$TMP/wrong-psk.pcap" "$INTERNET_GW")
[[ $(json_get "$got" response) -ge 1 && $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.pop("response", 0); print(len(d))' "$got") == 0 ]] ||
	fail "B should send handshake responses only to a peer with the wrong PSK, sent $got"
[[ $(stat_value "$TMP/wrong-psk.self" handshaker drop_handshake_failed) -ge 1 ]] ||
	fail "the wrong-PSK peer did not count a failed handshake: $(stage_line "$TMP/wrong-psk.self" handshaker)"
tunnel_still_up
pass

scenario unknown-key
gen_keys c
wrong_key_peer unknown-key "${PRIV[c]}" -
nothing_from_b unknown-key
[[ $(python3 "$WIRE" delta "$TMP/unknown-key.before" "$TMP/unknown-key.after") == *'"unknown_peer": '[1-9]* ]] ||
	fail "B did not count the unknown peer's initiations as unknown_peer"
tunnel_still_up
pass

# 100k random datagrams of 0..2000 bytes (half of them with a plausible type field)
# while A pings B every 10 ms through the tunnel.
scenario garbage-flood
fresh_stats "$TUN2" "$TMP/flood.before"
fresh_stats "$TUN1" "$TMP/flood.a.before"
in_before=$(udp_counter "$NS2" InDatagrams)
rcvbuf_before=$(udp_counter "$NS2" RcvbufErrors)
start_capture flood "$NS3" "$VETH4" src host "$INTERNET_GW" and not arp
start_ping flood "$NS1" "$INNER2" 0.01
sleep 0.5
flood=$(n3 python3 "$WIRE" flood "$INTERNET_GW" "$PORT" "${PV_FLOOD:-100000}")
log "flood: $flood"
sleep 0.5
stop_ping flood
fresh_stats "$TUN2" "$TMP/flood.after"
fresh_stats "$TUN1" "$TMP/flood.a.after"
stop_capture flood
in_after=$(udp_counter "$NS2" InDatagrams)
rcvbuf_after=$(udp_counter "$NS2" RcvbufErrors)
alive "${PID_OF[$TUN2]}" || fail "B died under the flood: $(tail -n 5 "${LOG_OF[$TUN2]}" | tr '\n' ' ')"
replies=$(ip netns exec "$NS3" tcpdump -n -r "$TMP/flood.pcap" 2>/dev/null | wc -l)
# Datagrams B's socket took in (kernel count), less those A sent through the tunnel.
read -r from_a counted received delivered < <(python3 -c '
import json, sys
b = json.loads(sys.argv[1])["stages"]; a = json.loads(sys.argv[2])["stages"]
print(a.get("udp_sender.packets", 0),
      b.get("udp_receiver.drops", 0) + b.get("decryptor.drops", 0) + b.get("handshaker.drops", 0),
      b.get("udp_receiver.packets", 0) + b.get("udp_receiver.drops", 0),
      b.get("decryptor.packets", 0))' \
	"$(wire delta "$TMP/flood.before" "$TMP/flood.after")" "$(wire delta "$TMP/flood.a.before" "$TMP/flood.a.after")")
taken=$((in_after - in_before))
arrived=$((taken - from_a))
loss_pct=$(python3 -c "print(round(100 * (1 - $PING_RECEIVED / $PING_SENT), 2))")
info "sent $(json_get "$flood" sent) in $(json_get "$flood" seconds)s ($(json_get "$flood" empty) empty); B's socket took $taken (RcvbufErrors +$((rcvbuf_after - rcvbuf_before))), $from_a of them from A; pipevpn read $received (+ empty ones uncounted), counted $counted drops, delivered $delivered; ping $PING_RECEIVED/$PING_SENT (loss $loss_pct%); datagrams from B to the attacker: $replies"
info "drops by reason: $(wire delta "$TMP/flood.before" "$TMP/flood.after")"
((replies == 0)) || fail "B sent $replies packets to the attacker"
python3 -c "import sys; sys.exit(0 if $loss_pct < 1 else 1)" || fail "ping loss $loss_pct% during the flood (limit 1%)"
# Each garbage datagram B read is a counted drop; slack for the few tunnel packets
# (keepalives, handshake messages) that udp_sender's count leaves out.
slack=$((arrived / 1000 + 5))
((counted >= arrived - slack && counted <= arrived + slack)) ||
	fail "B read $arrived garbage datagrams but counted $counted drops"
tunnel_still_up
pass

# low_order_config NAME KEY: `pipevpn up` with that peer public key exits 2 naming
# the problem, and creates nothing (no interface, route or state file) meanwhile.
low_order_config() {
	local conf="$TMP/$1.conf" before rc=0 monitor
	write_conf "$conf" "${PRIV[a]}" "10.96.0.1/24" "$2" "10.96.0.2/32" "$UNDER2:$PORT" -
	before=$(route_snapshot "$NS1")
	echo "+ [$NS1] ip monitor link address route > $1.monitor &" >&2
	ip netns exec "$NS1" ip monitor link address route >"$TMP/$1.monitor" 2>&1 &
	monitor=$!
	STARTED_PIDS+=("$monitor")
	sleep 0.2
	echo "+ [$NS1] $PIPEVPN up $conf --interface $TUN3" >&2
	ip netns exec "$NS1" timeout --foreground 10 "$PIPEVPN" up "$conf" --interface "$TUN3" >"$TMP/$1.out" 2>&1 || rc=$?
	sleep 0.3
	kill "$monitor"
	wait "$monitor" || true
	log "pipevpn up with PublicKey $2: exit $rc: $(cat "$TMP/$1.out")"
	info "exit $rc: $(tr '\n' ' ' <"$TMP/$1.out")"
	((rc == 2)) || fail "exit status $rc, expected 2: $(cat "$TMP/$1.out")"
	grep -qiE 'low.order|small.order' "$TMP/$1.out" || fail "the message does not name the low-order key: $(cat "$TMP/$1.out")"
	[[ ! -s $TMP/$1.monitor ]] || fail "pipevpn changed the namespace before refusing: $(tr '\n' ' ' <"$TMP/$1.monitor")"
	same_routes "$NS1" "$before"
	! iface_exists "$NS1" "$TUN3" || fail "$TUN3 exists"
}

scenario low-order-public-key-config
low_order_config zero-key AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
low_order_config order8-key 4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=
tunnel_still_up
pass

# An empty UDP datagram is a datagram too: dropped and counted (too short).
scenario empty-datagrams-counted
for _ in 1 2 3 4 5; do echo "  # empty"; done >"$TMP/empty.hex"
send_and_expect empty "$TMP/empty.hex" '{"too_short": 5}'
tunnel_still_up
pass
