#!/usr/bin/env bash
# pipevpn <-> pipevpn under the events of a real network and a real operator:
# a second `up` on a running interface, rekeying under load, a peer restarting,
# both peers initiating at once, MTU limits (and a packet above the tunnel MTU on
# the tun), and the client's underlay address changing mid-transfer.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn tcpdump

scenario topology
make_topology
pass

# refused NAME CONFIG WHAT...: `pipevpn up CONFIG --interface $TUN2` in ns2, while B
# runs there, exits non-zero with a message matching WHAT (an extended regex), and
# leaves the running tunnel as it was.
refused() {
	local name=$1 conf=$2 what=$3 rc=0 before
	before=$(route_snapshot "$NS2")
	echo "+ [$NS2] $PIPEVPN up $conf --interface $TUN2" >&2
	ip netns exec "$NS2" timeout --foreground 10 "$PIPEVPN" up "$conf" --interface "$TUN2" >"$TMP/$name.out" 2>&1 || rc=$?
	info "$name: exit $rc: $(tr '\n' ' ' <"$TMP/$name.out")"
	((rc != 0 && rc != 124)) || fail "$name: exit status $rc, expected a refusal: $(cat "$TMP/$name.out")"
	grep -qiE "$what" "$TMP/$name.out" || fail "$name: the message does not say '$what': $(cat "$TMP/$name.out")"
	expect_alive "$TUN2"
	same_routes "$NS2" "$before"
	ping_ok "$NS1" "$INNER2"
	ping_ok "$NS2" "$INNER1"
}

# A second `pipevpn up` for an interface that is running: bad configs fail on
# their own fault, a good one is refused because the interface is in use; the
# running tunnel keeps its routes and traffic every time.
scenario same-interface-twice
setup_pair a no
start_pair pipevpn pipevpn a
wait_for_handshake "$NS1" "$INNER2"
sed 's|^PrivateKey = .*|PrivateKey = not-a-key|' "$TMP/b.conf" >"$TMP/bad-key.conf"
refused bad-key "$TMP/bad-key.conf" "bad-key\.conf:2: .*(base64|key)"
sed 's|^PublicKey = .*|PublicKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=|' "$TMP/b.conf" >"$TMP/low-order.conf"
refused low-order "$TMP/low-order.conf" "low.order"
sed 's|^MTU = .*|MTU = 100|' "$TMP/b.conf" >"$TMP/bad-mtu.conf"
refused bad-mtu "$TMP/bad-mtu.conf" "bad-mtu\.conf:5: .*MTU"
{
	cat "$TMP/b.conf"
	echo "Endpoint = no-such-host.invalid:51820"
} >"$TMP/bad-endpoint.conf"
refused bad-endpoint "$TMP/bad-endpoint.conf" "no-such-host"
sed 's|^ListenPort = .*|ListenPort = 51821|' "$TMP/b.conf" >"$TMP/good.conf"
refused good-config "$TMP/good.conf" "in use"
refused same-config "$TMP/b.conf" "in use"
stop_pair
pass

# Rekey every 5 s on both sides during 30 s of TCP: every handshake completes, and
# the transfer never stalls. (The timers must stay consistent: the last-minute
# rekey age, reject_after - keepalive - rekey_timeout, must be positive.)
scenario rekey-under-load
export PIPEVPN_TEST_TIMING="rekey_after=5,reject_after=12,keepalive=2"
setup_pair a no
start_pair pipevpn pipevpn a
unset PIPEVPN_TEST_TIMING
wait_for_handshake "$NS1" "$INNER2"
iperf_start rekey 30
iperf_wait rekey
fresh_stats "$TUN1" "$TMP/$TUN1.stats"
fresh_stats "$TUN2" "$TMP/$TUN2.stats"
hs_a=$(stat_value "$TMP/$TUN1.stats" handshake completed)
hs_b=$(stat_value "$TMP/$TUN2.stats" handshake completed)
info "30 s TCP: $IPERF_MBPS Mbit/s, $IPERF_RETRANS retransmits, slowest second $IPERF_WORST Mbit/s (median $IPERF_MEDIAN), $IPERF_ZERO seconds without data; handshakes completed: A $hs_a, B $hs_b; Mbit/s per second: $IPERF_SECONDS; retransmits per second: $IPERF_RETRANS_SECONDS"
info "A: $(jq -c .stages "$TMP/$TUN1.stats")"
info "B: $(jq -c .stages "$TMP/$TUN2.stats")"
((hs_a >= 4 && hs_b >= 4)) || fail "only $hs_a (A) / $hs_b (B) handshakes completed in 30 s with rekey_after=5"
((IPERF_ZERO == 0)) || fail "$IPERF_ZERO one-second intervals without any data"
((IPERF_WORST * 100 >= IPERF_MEDIAN)) || fail "the slowest second ($IPERF_WORST Mbit/s) is under 1% of the median ($IPERF_MEDIAN Mbit/s): a stall"
stop_pair
pass

# Peer restart: B (no Endpoint, so it waits for A) comes back with the same keys.
# A alone would notice only once its data has gone unanswered for KEEPALIVE +
# REKEY_TIMEOUT = 15 s (WireGuard's rule; wireguard-go does the same), about 8 s
# after a return from 7 s down. But B remembers where A last was
# (src/last_endpoint.rs) and initiates there at once, so A's ping must be answered
# within 3 s of B's return, with no action on A: after kill -9, and after a clean
# SIGTERM stop. Then A restarts (it has B's Endpoint), with no action on B.
scenario peer-restart
setup_pair a no
start_pair pipevpn pipevpn a
wait_for_handshake "$NS1" "$INNER2"
start_ping restart "$NS1" "$INNER2" 0.2
# B writes down A's endpoint within a second of learning it.
wait_until 5 "B to remember A's endpoint" test -s "${RUN_DIR_OF[$NS2]}/$TUN2.endpoint"
restart_peer "$TUN2" "$TMP/b.conf" 7 restart 3 KILL
restart_peer "$TUN2" "$TMP/b.conf" 7 restart 3 TERM
grep -q "initiating to where it last was" "${LOG_OF[$TUN2]}" || fail "B did not start from A's last endpoint: $(grep ' up, ' "${LOG_OF[$TUN2]}")"
restart_peer "$TUN1" "$TMP/a.conf" 1 restart
stop_ping restart
stop_pair
pass

# Both peers know each other's Endpoint and start pinging at the same instant:
# two crossing initiations must converge on one working session.
scenario simultaneous-initiation
gen_keys a
gen_keys b
write_conf "$TMP/a.conf" "${PRIV[a]}" "$INNER1/24" "${PUB[b]}" "$INNER2/32" "$UNDER2:$PORT" -
write_conf "$TMP/b.conf" "${PRIV[b]}" "$INNER2/24" "${PUB[a]}" "$INNER1/32" "$UNDER1:$PORT" -
start_pair pipevpn pipevpn a
start_ping sim-a "$NS1" "$INNER2" 0.1
start_ping sim-b "$NS2" "$INNER1" 0.1
wait_until 20 "answers on both sides" eval "grep -q 'bytes from' $TMP/sim-a.ping && grep -q 'bytes from' $TMP/sim-b.ping"
sleep 2
stop_ping sim-a
sent_a=$PING_SENT received_a=$PING_RECEIVED
stop_ping sim-b
fresh_stats "$TUN1" "$TMP/$TUN1.stats"
fresh_stats "$TUN2" "$TMP/$TUN2.stats"
info "A->B $received_a/$sent_a, B->A $PING_RECEIVED/$PING_SENT answered; handshakes: A $(stat_value "$TMP/$TUN1.stats" handshake completed), B $(stat_value "$TMP/$TUN2.stats" handshake completed)"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
# Converged: a burst each way loses nothing.
n1 ping -c 20 -i 0.05 -W 1 -q "$INNER2" >&2 || fail "A->B lost pings after convergence"
n2 ping -c 20 -i 0.05 -W 1 -q "$INNER1" >&2 || fail "B->A lost pings after convergence"
stop_pair
pass

# Sticky source: B has a second underlay address and A's Endpoint names it. B must
# answer from that address, as kernel WireGuard does, though routing would pick
# B's first one: a NAT or a stateful firewall in front of a client drops answers
# from any other address. A's endpoint must never move.
SECOND2=10.98.0.3
scenario sticky-source
n2 ip addr add "$SECOND2/24" dev "$VETH2"
setup_pair a no
set_conf "$TMP/a.conf" Endpoint "$SECOND2:$PORT"
start_capture sticky "$NS1" "$VETH1" udp port "$PORT"
start_pair pipevpn pipevpn a
wait_for_handshake "$NS1" "$INNER2"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
stop_capture sticky
from_first=$(wire count "$TMP/sticky.pcap" "$UNDER2")
from_second=$(wire count "$TMP/sticky.pcap" "$SECOND2")
info "datagrams from B's $SECOND2: $from_second; from its first address $UNDER2: $from_first"
[[ $from_first == "{}" ]] || fail "B sent from $UNDER2, not from $SECOND2 that A talks to: $from_first"
[[ $(json_get "$from_second" transport) -gt 0 ]] || fail "no transport data from $SECOND2: $from_second"
! grep -q "endpoint changed" "${LOG_OF[$TUN1]}" || fail "A's endpoint moved: $(grep 'endpoint changed' "${LOG_OF[$TUN1]}")"
stop_pair
n2 ip addr del "$SECOND2/24" dev "$VETH2"
pass

# Roaming: A's underlay address changes from $UNDER1 to $ROAMED during a TCP
# transfer; B must follow A to the new address and the transfer continue.
ROAMED=10.98.0.11
scenario roaming
setup_pair a no
start_pair pipevpn pipevpn a
wait_for_handshake "$NS1" "$INNER2"
iperf_start roam 10
sleep 4
roam_a "$ROAMED"
iperf_wait roam
info "10 s TCP: $IPERF_MBPS Mbit/s, $IPERF_RETRANS retransmits, Mbit/s per second (the change at ~4 s): $IPERF_SECONDS; B's log: $(grep 'endpoint changed' "${LOG_OF[$TUN2]}" | tr '\n' ' ')"
grep -q "endpoint changed: $UNDER1:$PORT -> $ROAMED:$PORT" "${LOG_OF[$TUN2]}" || fail "B's log shows no endpoint change to $ROAMED:$PORT"
((IPERF_ZERO == 0)) || fail "$IPERF_ZERO one-second intervals without data around the address change"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
stop_pair
pass

# MTU: the default 1420 over a 1500 underlay carries full-size packets with DF;
# a 1200 tunnel over a 1280 underlay carries TCP; above the tunnel MTU the sender
# gets "message too long", and a packet above the MTU forced onto the tun (its MTU
# raised behind pipevpn's back) is dropped and counted, nothing crashes.
# underlay_mtu N: both ends of the veth between A and B.
underlay_mtu() {
	in_ns "$NS1" ip link set "$VETH1" mtu "$1"
	in_ns "$NS2" ip link set "$VETH2" mtu "$1"
}

scenario mtu
setup_pair a no
start_pair pipevpn pipevpn a
wait_for_handshake "$NS1" "$INNER2"
ping_ok "$NS1" "$INNER2" 1392
ping_ok "$NS2" "$INNER1" 1392
stop_pair
underlay_mtu 1280
set_conf "$TMP/a.conf" MTU 1200
set_conf "$TMP/b.conf" MTU 1200
start_pair pipevpn pipevpn a
wait_for_handshake "$NS1" "$INNER2"
ping_ok "$NS1" "$INNER2" 1172
ping_ok "$NS2" "$INNER1" 1172
iperf_ok "$NS2" "$INNER2" "$NS1"
iperf_ok "$NS1" "$INNER1" "$NS2"
too_long=$(ip netns exec "$NS1" ping -c1 -W1 -M "do" -s 1400 "$INNER2" 2>&1) && fail "a 1428-byte DF ping went through a 1200 MTU tunnel"
[[ $too_long == *"message too long"* ]] || fail "ping -s 1400 did not fail with 'message too long': $too_long"
info "ping -M do -s 1400 over MTU 1200: $(tr '\n' ' ' <<<"$too_long")"
fresh_stats "$TUN1" "$TMP/mtu.a.before"
fresh_stats "$TUN2" "$TMP/mtu.b.before"
n1 ip link set "$TUN1" mtu 9000
for size in 1400 8000; do
	n1 ping -c 3 -i 0.2 -W 1 -M "do" -s "$size" "$INNER2" >&2 && fail "a $size-byte ping above the tunnel MTU was answered"
done
alive "${PID_OF[$TUN1]}" || fail "pipevpn died of packets above its MTU on the tun: $(tail -n 5 "${LOG_OF[$TUN1]}" | tr '\n' ' ')"
fresh_stats "$TUN1" "$TMP/mtu.a.after"
fresh_stats "$TUN2" "$TMP/mtu.b.after"
n1 ip link set "$TUN1" mtu 1200
a_delta=$(wire delta "$TMP/mtu.a.before" "$TMP/mtu.a.after")
b_delta=$(wire delta "$TMP/mtu.b.before" "$TMP/mtu.b.after")
info "6 packets above the MTU on A's tun: A $a_delta; B $b_delta"
python3 -c 'import json,sys; d=json.loads(sys.argv[1])["stages"]; sys.exit(0 if d.get("tun_reader.drops",0) + d.get("encryptor.drops",0) >= 6 else 1)' "$a_delta" ||
	fail "A did not count the 6 packets above its MTU as drops: $a_delta"
python3 -c 'import json,sys; d=json.loads(sys.argv[1])["stages"]; sys.exit(0 if d.get("tun_writer.packets",0) == 0 else 1)' "$b_delta" ||
	fail "packets above the tunnel MTU reached B's tun: $b_delta"
ping_ok "$NS1" "$INNER2" 1172
ping_ok "$NS2" "$INNER1" 1172
stop_pair
underlay_mtu 1500
pass
