#!/usr/bin/env bash
# SIGHUP reloads a running `pipevpn up` with `wg syncconf` semantics, and the endpoint
# host routes follow the live peers (src/reload.rs, src/up.rs). A (ns1) is a full-tunnel
# client of B (ns2); C (ns3, behind B's forwarding) waits for A:
#   ns1 A ══ 0.0.0.0/0 ══ ns2 B ── 10.97.0.0/24 ── ns3 C (10.99.0.3 in the tunnel)
# - `kill -HUP` with the file unchanged, and `wg syncconf` of the stripped file: the
#   latest handshake stays and a 20/s ping across it loses nothing;
# - a file that does not parse: the log names its line, nothing changes, pings pass;
# - a file with B removed and C added (and a new MTU): `wg show` follows, C connects,
#   B's host route is gone and C's is there at once, MTU is named as "restart to
#   apply", and the routes through the tunnel stay as made at start (as wg-quick);
# - `wg set` adding a peer with an endpoint: its host route within 0.5 s, three
#   times, and its removal takes the host route with it as fast;
# - SaveConfig after `wg set` added a peer and removed another writes the live peers.
# pipevpn only: the reload and the host routes are pipevpn's own.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn
command -v wg-quick >/dev/null || fail "wg-quick is missing (Debian: apt-get install wireguard-tools)"

INNER3=10.99.0.3

scenario topology
make_topology
make_internet "$UNDER1/32"
original=$(route_snapshot "$NS1")
gen_keys a
gen_keys b
gen_keys c
gen_keys d
write_conf "$TMP/a.conf" "${PRIV[a]}" "$INNER1/24" "${PUB[b]}" 0.0.0.0/0 "$UNDER2:$PORT" -
write_conf "$TMP/b.conf" "${PRIV[b]}" "$INNER2/24" "${PUB[a]}" "$INNER1/32" - -
write_conf "$TMP/c.conf" "${PRIV[c]}" "$INNER3/24" "${PUB[a]}" "$INNER1/32" - -
start_pipevpn "$NS2" "$TMP/b.conf" "$TUN2"
start_pipevpn "$NS3" "$TMP/c.conf" "$TUN3"
start_pipevpn "$NS1" "$TMP/a.conf" "$TUN1"
wait_for_handshake "$NS1" "$INNER2"
full_tunnel_routes_ok "$NS1" "$TUN1" "$VETH1" "$UNDER2"
A_LOG=${LOG_OF[$TUN1]}
pass

# hup: sends SIGHUP to A and waits for the log line that ends the reload it caused.
hup() {
	local done='SIGHUP: .*( applied: |nothing changed|applying it failed)' before
	before=$(grep -cE "$done" "$A_LOG" || true)
	echo "+ kill -HUP ${PID_OF[$TUN1]}  (pipevpn on $TUN1)" >&2
	kill -HUP "${PID_OF[$TUN1]}"
	wait_until 5 "A to log the end of the reload" \
		eval "(( \$(grep -cE '$done' '$A_LOG') > $before )) || ! alive ${PID_OF[$TUN1]}"
	expect_alive "$TUN1"
	log "$(grep 'SIGHUP' "$A_LOG" | tail -n 3)"
}
handshakes() { ip netns exec "$NS1" wg show "$TUN1" latest-handshakes; }
no_ping() { ! in_ns "$1" ping -c2 -i0.3 -W1 -q "$2" >&2 || fail "$3"; }
host_route() { ip netns exec "$NS1" ip -4 route show "$1/32"; }
# until_route ADDR present|absent: seconds until A's host route to ADDR is so (0.5 s
# at most: the tick that once moved them came only every second), in ELAPSED.
until_route() {
	local start now
	start=$(now_epoch)
	while :; do
		now=$(now_epoch)
		case $2 in
		present) [[ $(host_route "$1") == *"via $GATEWAY1 dev $VETH1"* ]] && break ;;
		absent) [[ -z $(host_route "$1") ]] && break ;;
		esac
		awk -v s="$start" -v n="$now" 'BEGIN { exit !(n - s < 0.5) }' ||
			fail "A's host route to $1 not $2 within 0.5 s: '$(host_route "$1")'"
	done
	ELAPSED=$(awk -v s="$start" -v n="$now" 'BEGIN { printf "%.3f", n - s }')
}
# keeps_the_session NAME CMD...: CMD leaves A's handshake and a 20/s ping untouched.
keeps_the_session() {
	local name=$1 before
	shift
	before=$(handshakes)
	start_ping "$name" "$NS1" "$INNER2" 0.05
	sleep 1
	"$@"
	sleep 1
	stop_ping "$name"
	((PING_SENT > 20 && PING_RECEIVED == PING_SENT)) ||
		fail "$name: the ping across it got $PING_RECEIVED of $PING_SENT answers"
	[[ $(handshakes) == "$before" ]] || fail "$name: latest handshake $before -> $(handshakes)"
	info "$name: $PING_RECEIVED of $PING_SENT pings answered, latest handshake unchanged"
}

scenario sighup-with-the-file-unchanged-keeps-the-session
keeps_the_session hup hup
grep -q "SIGHUP: $TMP/a.conf applied: 1 peers, 0 added, changed or removed" "$A_LOG" ||
	fail "no log line of an unchanged reload: $(grep SIGHUP "$A_LOG")"
pass

scenario wg-syncconf-with-the-file-unchanged-keeps-the-session
wg-quick strip "$TMP/a.conf" >"$TMP/a.stripped"
keeps_the_session syncconf n1 wg syncconf "$TUN1" "$TMP/a.stripped"
pass

scenario sighup-with-a-broken-file-changes-nothing
cp "$TMP/a.conf" "$TMP/a.good"
echo "Nonsense = 1" >>"$TMP/a.conf"
line=$(wc -l <"$TMP/a.conf")
before=$(n1 wg show "$TUN1" dump)
hup
grep -q "SIGHUP: $TMP/a.conf:$line: .*Nonsense.*; nothing changed, the tunnel runs on" "$A_LOG" ||
	fail "the log does not name line $line: $(grep SIGHUP "$A_LOG" | tail -n 1)"
[[ $(n1 wg show "$TUN1" dump | cut -f1-4) == $(cut -f1-4 <<<"$before") ]] || fail "a broken file changed the interface"
ping_ok "$NS1" "$INNER2"
cp "$TMP/a.good" "$TMP/a.conf"
pass

scenario sighup-removes-b-and-adds-c
tunnel_routes=$(n1 ip -4 route show dev "$TUN1")
{
	sed -e '/^\[Peer\]/,$d' -e 's/^MTU = .*/MTU = 1400/' "$TMP/a.good"
	printf '[Peer]\nPublicKey = %s\nAllowedIPs = %s/32, 10.95.0.0/24\nEndpoint = %s:%s\n' \
		"${PUB[c]}" "$INNER3" "$INTERNET_HOST" "$PORT"
} >"$TMP/a.conf"
[[ -n $(host_route "$UNDER2") ]] || fail "no host route to B before the reload"
hup
until_route "$UNDER2" absent
info "B's host route gone ${ELAPSED}s after the reload's log line"
until_route "$INTERNET_HOST" present
grep -q "SIGHUP: $TMP/a.conf: MTU changed: not applied, restart to apply" "$A_LOG" ||
	fail "no warning naming MTU: $(grep SIGHUP "$A_LOG" | tail -n 3)"
for change in "${PUB[b]} removed" "${PUB[c]} added"; do
	grep -qF "SIGHUP: $TMP/a.conf: peer $change" "$A_LOG" ||
		fail "no log line 'SIGHUP: $TMP/a.conf: peer $change': $(grep -F "peer " "$A_LOG" | tail -n 3)"
done
[[ $(n1 wg show "$TUN1" peers) == "${PUB[c]}" ]] || fail "wg show lists $(n1 wg show "$TUN1" peers), not C alone"
[[ $(n1 wg show "$TUN1" allowed-ips) == "${PUB[c]}	$INNER3/32 10.95.0.0/24" ]] ||
	fail "C's AllowedIPs: $(n1 wg show "$TUN1" allowed-ips)"
wait_for_handshake "$NS1" "$INNER3"
ping_ok "$NS1" "$INNER3"
no_ping "$NS1" "$INNER2" "B, removed from the file, still answers through the tunnel"
[[ $(n1 ip link show "$TUN1") == *"mtu 1420"* ]] || fail "the MTU changed without a restart"
[[ $(n1 ip -4 route show dev "$TUN1") == "$tunnel_routes" ]] ||
	fail "routes through $TUN1 changed: $tunnel_routes -> $(n1 ip -4 route show dev "$TUN1")"
pass

scenario wg-set-gives-and-takes-host-routes-at-once
for host in 10.97.0.5 10.97.0.6 10.97.0.7; do
	n1 wg set "$TUN1" peer "${PUB[d]}" allowed-ips 10.99.0.5/32 endpoint "$host:$PORT"
	until_route "$host" present
	added=$ELAPSED
	n1 wg set "$TUN1" peer "${PUB[d]}" remove
	until_route "$host" absent
	info "$host: host route ${added}s after wg set added the peer, gone ${ELAPSED}s after its removal"
done
[[ $(host_route "$INTERNET_HOST") == *"via $GATEWAY1"* ]] || fail "C's host route went with D's"
(($(grep -cF "control socket: peer ${PUB[d]} added" "$A_LOG") == 3)) ||
	fail "not three log lines 'control socket: peer ${PUB[d]} added': $(grep -F "peer ${PUB[d]}" "$A_LOG")"
pass

scenario saveconfig-writes-the-live-peers
stop_impl "$TUN1"
[[ $STOP_RC == 0 ]] || fail "A exited $STOP_RC after SIGTERM"
set_conf "$TMP/a.conf" SaveConfig true
start_pipevpn "$NS1" "$TMP/a.conf" "$TUN1"
n1 wg set "$TUN1" peer "${PUB[d]}" allowed-ips 10.99.0.5/32,10.94.0.0/16 endpoint "10.97.0.5:$PORT" persistent-keepalive 25
n1 wg set "$TUN1" peer "${PUB[c]}" remove
stop_impl "$TUN1"
[[ $STOP_RC == 0 ]] || fail "A exited $STOP_RC after SIGTERM"
cat "$TMP/a.conf" >&2
for want in "PublicKey = ${PUB[d]}" "AllowedIPs = 10.99.0.5/32, 10.94.0.0/16" "Endpoint = 10.97.0.5:$PORT" \
	"PersistentKeepalive = 25" "Address = $INNER1/24" "SaveConfig = true" "MTU = 1400"; do
	grep -qxF "$want" "$TMP/a.conf" || fail "the saved file lacks '$want'"
done
! grep -q "${PUB[c]}" "$TMP/a.conf" || fail "the saved file still has C, removed over the socket"
same_routes "$NS1" "$original"
no_route_record "$TUN1"
pass
