#!/usr/bin/env bash
# Denial-of-service defences (PROTOCOL.md §7) against a running server B (ns2,
# the waiting side), attacked from ns3 with initiations that carry a valid mac1
# for B's public key and random contents:
#   rate-limit       a modest burst from one source, not under load: the
#                    limiter refuses all but the burst before any DH, silently;
#   cookie-under-load a flood puts B under load: B answers the attacker with
#                    64-byte cookie replies only, and the real client A still
#                    completes its handshake (cookie reply, then mac2);
#   wggo-cookie      wireguard-go as the server, flooded the same way: pipevpn
#                    takes its cookie reply and completes the handshake with mac2.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn wggo tcpdump

# sizes PCAP SRC DST: datagrams from SRC to DST as {"TYPE/LENGTH": n}.
sizes() {
	python3 -c '
import json, sys
sys.path.insert(0, sys.argv[1])
import wire
n = {}
for s, d, p in wire.pcap_udp(sys.argv[2]):
    if s == sys.argv[3] and d == sys.argv[4]:
        k = f"{wire.msg_type(p)}/{len(p)}"
        n[k] = n.get(k, 0) + 1
print(json.dumps(n, sort_keys=True))' "$(dirname "$WIRE")" "$@"
}
reason() { json_get "$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["reasons"]))' "$1")" "$2"; }

# start_client_verbose: A (ns1) with -v, so its log shows the cookie it receives.
start_client_verbose() {
	local real=$PIPEVPN
	printf '#!/bin/sh\nexec %q -v "$@"\n' "$real" >"$TMP/pipevpn-v"
	chmod +x "$TMP/pipevpn-v"
	PIPEVPN="$TMP/pipevpn-v"
	start_pipevpn "$NS1" "$TMP/a.conf" "$TUN1"
	PIPEVPN=$real
}

# flood_start NAME PUBKEY COUNT SECONDS: initiations with valid mac1 from ns3 to B.
flood_start() {
	echo "+ [$NS3] wire.py initflood $2 $INTERNET_GW $PORT $3 $4 > $1.flood &" >&2
	ip netns exec "$NS3" python3 "$WIRE" initflood "$2" "$INTERNET_GW" "$PORT" "$3" "$4" >"$TMP/$1.flood" 2>&1 &
	FLOOD_PID=$!
	STARTED_PIDS+=("$FLOOD_PID")
}
flood_wait() {
	wait_until 60 "the flood to finish" eval "! alive $FLOOD_PID"
	wait "$FLOOD_PID" || fail "the flood failed: $(cat "$TMP/$1.flood")"
	FLOOD=$(cat "$TMP/$1.flood")
	log "flood $1: $FLOOD"
}

scenario topology
make_topology
make_attacker
setup_pair a no
start_impl pipevpn "$NS2" "$TUN2" "$TMP/b.conf"
pass

# Not under load: 30 initiations from one source in 0.3 s, paced so the queue
# stays short. The burst of 5 plus 20/s pass the limiter (and then fail the
# handshake, their keys being random); the rest are refused before any DH work.
scenario rate-limit
fresh_stats "$TUN2" "$TMP/rl.before"
start_capture rl "$NS3" "$VETH4" udp and src host "$INTERNET_GW"
flood_start rl "${PUB[b]}" 30 0.3
flood_wait rl
fresh_stats "$TUN2" "$TMP/rl.after"
stop_capture rl
d=$(wire delta "$TMP/rl.before" "$TMP/rl.after")
info "30 initiations in 0.3 s: $d"
limited=$(reason "$d" rate_limited) failed=$(reason "$d" handshake_failed)
((limited > 0)) || fail "nothing counted as rate_limited: $d"
# The burst, plus 20/s over the time the 30 actually took, plus one for rounding.
most=$(python3 -c 'import json,math,sys; print(5 + math.ceil(20 * json.loads(sys.argv[1])["seconds"]) + 1)' "$FLOOD")
((failed >= 5 && failed <= most)) || fail "expected 5 to $most initiations past the limiter (handshake_failed), got $failed: $d"
((limited + failed == 30)) || fail "rate_limited + handshake_failed = $((limited + failed)), expected 30: $d"
(($(reason "$d" under_load_cookie_sent) == 0)) || fail "B was under load from a paced burst of 30: $d"
got=$(wire count "$TMP/rl.pcap" "$INTERNET_GW")
[[ $got == "{}" ]] || fail "B answered the attacker: $got"
expect_alive "$TUN2"
pass

# A flood of valid-mac1 initiations for 10 s; A starts 1 s in. B must answer
# the attacker with cookie replies only, and A must complete its handshake: its
# first initiation gets a cookie reply, the retry (5 s later) carries mac2.
scenario cookie-under-load
fresh_stats "$TUN2" "$TMP/load.before"
start_capture load-attacker "$NS3" "$VETH4" udp and src host "$INTERNET_GW"
start_capture load-client "$NS2" "$VETH2" udp and host "$UNDER1"
flood_start load "${PUB[b]}" 200000 10
sleep 1
start_client_verbose
t0=$SECONDS
wait_for_handshake "$NS1" "$INNER2" 15
info "A's handshake completed ~$((SECONDS - t0))s after it started, during the flood"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
alive "$FLOOD_PID" || log "the flood ended before A's handshake completed: $(cat "$TMP/load.flood")"
flood_wait load
fresh_stats "$TUN2" "$TMP/load.after"
stop_capture load-attacker
stop_capture load-client
d=$(wire delta "$TMP/load.before" "$TMP/load.after")
to_attacker=$(sizes "$TMP/load-attacker.pcap" "$INTERNET_GW" "$INTERNET_HOST")
to_client=$(sizes "$TMP/load-client.pcap" "$UNDER2" "$UNDER1")
info "flood: $FLOOD"
info "B: $d"
info "B to the attacker: $to_attacker; B to A: $to_client"
info "B's handshaker: $(grep '^handshaker' "$TMP/load.after"); A's: $(grep '^handshaker' "$TMP/$TUN1.stats")"
expect_alive "$TUN2"
expect_alive "$TUN1"
(($(reason "$d" under_load_cookie_sent) > 0)) || fail "B never counted under_load_cookie_sent: $d"
(($(json_get "$to_attacker" cookie/64) > 0)) || fail "no 64-byte cookie reply reached the attacker: $to_attacker"
[[ $(python3 -c 'import json,sys; print(sorted(json.loads(sys.argv[1])))' "$to_attacker") == "['cookie/64']" ]] ||
	fail "B sent the attacker something other than 64-byte cookie replies: $to_attacker"
(($(json_get "$to_client" cookie/64) > 0)) || fail "A's handshake completed without a cookie reply from B (B not under load?): $to_client"
(($(json_get "$to_client" response/92) == 1)) || fail "expected exactly one handshake response from B to A: $to_client"
grep -q "received a cookie" "${LOG_OF[$TUN1]}" || fail "A's log does not show the cookie reply"
(($(stat_value "$TMP/$TUN1.stats" handshaker packets) >= 2)) ||
	fail "A's handshaker should have passed the cookie reply and the response: $(grep '^handshaker' "$TMP/$TUN1.stats")"
stop_pair
pass

# wireguard-go as the server, flooded with 20000 valid-mac1 initiations at once
# (its "under load" is 512 queued handshake messages); pipevpn as the client,
# started meanwhile, must take the cookie reply and finish with mac2.
scenario wggo-cookie
start_capture wggo-client "$NS2" "$VETH2" udp and host "$UNDER1"
start_impl wggo "$NS2" "$TUN2" "$TMP/b.conf"
flood_start wggo "${PUB[b]}" 200000 10
sleep 1
start_client_verbose
t0=$SECONDS
wait_for_handshake "$NS1" "$INNER2" 15
info "A's handshake with wireguard-go completed ~$((SECONDS - t0))s after it started, during the flood"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
flood_wait wggo
stop_capture wggo-client
to_client=$(sizes "$TMP/wggo-client.pcap" "$UNDER2" "$UNDER1")
info "flood: $FLOOD"
info "wireguard-go to A: $to_client; A's handshaker: $(grep '^handshaker' "$TMP/$TUN1.stats")"
expect_alive "$TUN2"
(($(json_get "$to_client" cookie/64) > 0)) || fail "wireguard-go sent A no cookie reply (not under load?): $to_client"
grep -q "received a cookie" "${LOG_OF[$TUN1]}" || fail "A's log does not show wireguard-go's cookie reply"
(($(stat_value "$TMP/$TUN1.stats" handshaker packets) >= 2)) ||
	fail "A's handshaker should have passed the cookie reply and the response: $(grep '^handshaker' "$TMP/$TUN1.stats")"
stop_pair
pass
