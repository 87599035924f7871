#!/usr/bin/env bash
# One pipevpn serving a whole VPN: a hub (ns2) with three clients in namespaces
# of their own, each on its own veth to the hub (whitepaper §2, cryptokey
# routing: the hub picks the peer by the destination's AllowedIPs):
#
#   c1 (pipevpn)   10.99.0.11 ── veth 10.96.1.0/24 ──┐
#   c2 (pipevpn)   10.99.0.12 ── veth 10.96.2.0/24 ──┼── hub 10.99.0.1, forwarding
#   c3 (wireguard-go) 10.99.0.13 ─ veth 10.96.3.0/24 ┘    (one tun, three [Peer]s)
#
#   hub-pings      every client pings the hub and the hub pings every client;
#   through-hub    every client pings the other two: in through the hub's tun,
#                  routed back out of it to the other client's peer;
#   two-at-once    iperf3 TCP from c1 (pipevpn) and c3 (wireguard-go) to the hub
#                  at the same time: both move data, the hub's inbound stages drop
#                  nothing, and its stats show three completed handshakes;
#   show-during-transfer  `pipevpn show`, `--json`, `--watch` and `--format
#                  prometheus` on the hub while c1 sends: peers, stages, growing
#                  counters, `wg show` agreeing, and Prometheus' parser reading it;
#   full-tunnel-two-peers  c1 alone, with a full tunnel to the hub and a second
#                  peer, a server on c2 (10.88.0.2), both endpoints behind c1's
#                  gateway: `up` adds a host route to each; c2's address changes
#                  three times, c1 follows it (roaming) and its host route moves
#                  with it, each time within 200 ms of c2's first packet from the
#                  new address; after the stop c1's routing table is as before.
# HUB_IMPL=wggo runs the same with wireguard-go as the hub: the check of the
# scenarios themselves.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HUB_IMPL=${HUB_IMPL:-pipevpn}
require_tools pipevpn wggo

declare -A C_IMPL=([1]=pipevpn [2]=pipevpn [3]=wggo)

scenario topology
make_hub 3
# c1 reaches the hub's address only through a gateway (a second address of the
# hub), as a client across the internet does: a full tunnel must then add host
# routes to its endpoints.
C1_GW=10.96.1.254
n2 ip addr add "$C1_GW/24" dev "${PREFIX}hv1"
in_ns "${C_NS[1]}" ip addr del "${C_UNDER[1]}/24" dev "${PREFIX}cv1"
in_ns "${C_NS[1]}" ip addr add "${C_UNDER[1]}/32" peer "$C1_GW/32" dev "${PREFIX}cv1"
in_ns "${C_NS[1]}" ip route add default via "$C1_GW" dev "${PREFIX}cv1"
hub_conf
start_impl "$HUB_IMPL" "$HUB_NS" "$HUB_TUN" "$TMP/hub.conf"
for c in "${CLIENTS[@]}"; do
	start_impl "${C_IMPL[$c]}" "${C_NS[$c]}" "${C_TUN[$c]}" "$TMP/c$c.conf"
done
pass

scenario hub-pings
for c in "${CLIENTS[@]}"; do
	wait_for_handshake "${C_NS[$c]}" "$HUB_INNER" 15
	ping_ok "${C_NS[$c]}" "$HUB_INNER"
	ping_ok "${C_NS[$c]}" "$HUB_INNER" 1392
	ping_ok "$HUB_NS" "${C_INNER[$c]}"
done
pass

scenario through-hub
for c in "${CLIENTS[@]}"; do
	for o in "${CLIENTS[@]}"; do
		((o != c)) || continue
		ping_ok "${C_NS[$c]}" "${C_INNER[$o]}"
	done
done
pass

scenario two-at-once
[[ $HUB_IMPL != pipevpn ]] || fresh_stats "$HUB_TUN" "$TMP/hub.before"
iperf_between c1 5 "$HUB_NS" "$HUB_INNER" "${C_NS[1]}" 5201
iperf_between c3 5 "$HUB_NS" "$HUB_INNER" "${C_NS[3]}" 5202
for c in c1 c3; do
	iperf_wait "$c"
	info "iperf3 $c -> hub: $IPERF_MBPS Mbit/s (slowest second $IPERF_WORST, seconds without data $IPERF_ZERO)"
	((IPERF_BYTES > 0)) || fail "iperf3 from $c moved no data"
	((IPERF_ZERO == 0)) || fail "iperf3 from $c had $IPERF_ZERO seconds without data: $IPERF_SECONDS"
done
if [[ $HUB_IMPL == pipevpn ]]; then
	fresh_stats "$HUB_TUN" "$TMP/hub.after"
	d=$(wire delta "$TMP/hub.before" "$TMP/hub.after")
	info "hub during both: $d"
	for stage in udp_receiver decryptor tun_writer; do
		(($(json_get "$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["stages"]))' "$d")" "$stage.drops") == 0)) ||
			fail "the hub's $stage dropped packets while two clients sent: $d"
	done
	(($(stat_value "$TMP/hub.after" handshake completed) >= 3)) ||
		fail "the hub completed fewer than 3 handshakes: $(jq -c .handshakes "$TMP/hub.after")"
fi
for c in "${CLIENTS[@]}"; do expect_alive "${C_TUN[$c]}"; done
expect_alive "$HUB_TUN"
pass

# show-during-transfer: `pipevpn show` and `show --json` on the hub while c1
# sends through it, each beside `wg show HUB dump`: the three peers and every
# stage are there, the counters grow from one call to the next, and wg, asked
# just after each call, agrees with it within what moved in between. Against a
# wireguard-go hub the same, without the stages. `--watch` into a file prints
# one frame a second, without escape codes. `--format prometheus` is read by
# the Prometheus client library's own parser (Debian's python3-prometheus-client).
scenario show-during-transfer
# Debian's module is for Debian's python3, which another python3 first on PATH
# (a pyenv's, a virtualenv's) does not see: take whichever has it.
PROM_PYTHON=""
for py in python3 /usr/bin/python3; do
	if "$py" -c 'import prometheus_client.parser' 2>/dev/null; then PROM_PYTHON=$py && break; fi
done
[[ -n $PROM_PYTHON ]] ||
	fail "no python3 with the module prometheus_client (Debian: apt-get install python3-prometheus-client)"
show_hub() { ip netns exec "$HUB_NS" "$PIPEVPN" show "$@"; }
# prom_check FILE: FILE (`pipevpn show HUB --format prometheus`) as the
# Prometheus parser reads it: exactly the families pipevpn writes for this hub
# (the stage ones only from pipevpn), each of its type, a sample for each of
# the three peers, and data counted where c1's transfer went.
prom_check() {
	"$PROM_PYTHON" - "$1" "$HUB_IMPL" "$HUB_TUN" "${PUB[c1]}" "${PUB[c2]}" "${PUB[c3]}" <<'EOF'
import sys
from prometheus_client.parser import text_string_to_metric_families

path, impl, iface, c1 = sys.argv[1:5]
peers = sys.argv[4:]
with open(path) as f:
    text = f.read()
families = {}
for fam in text_string_to_metric_families(text):
    if fam.name in families:
        sys.exit(f"family {fam.name} twice")
    families[fam.name] = fam
# The parser names a counter's family without its _total.
want = {
    "pipevpn_peer_received_bytes": "counter",
    "pipevpn_peer_sent_bytes": "counter",
    "pipevpn_peer_latest_handshake_timestamp_seconds": "gauge",
}
if impl == "pipevpn":
    want.update({
        "pipevpn_stage_packets": "counter",
        "pipevpn_stage_bytes": "counter",
        "pipevpn_stage_dropped_packets": "counter",
        "pipevpn_stage_queued_batches": "gauge",
        "pipevpn_stage_blocked_sends": "counter",
        "pipevpn_stage_blocked_seconds": "counter",
        "pipevpn_handshakes_completed": "counter",
        "pipevpn_last_handshake_duration_seconds": "gauge",
    })
if set(families) != set(want):
    sys.exit(f"families {sorted(families)}, expected {sorted(want)}")
for name, kind in want.items():
    if families[name].type != kind:
        sys.exit(f"{name} is a {families[name].type}, expected a {kind}")

def value(name, **labels):
    found = [s.value for s in families[name].samples
             if s.labels.get("interface") == iface
             and all(s.labels.get(k) == v for k, v in labels.items())]
    if len(found) != 1:
        sys.exit(f"{len(found)} samples of {name} for {labels}, expected 1")
    return found[0]

peer_families = list(want)[:3]
for key in peers:
    for name in peer_families:
        value(name, public_key=key)
for name in peer_families[:2]:
    if value(name, public_key=c1) <= 0:
        sys.exit(f"{name} of c1 is not above 0")
if value(peer_families[2], public_key=c1) < 1e9:
    sys.exit("c1's latest handshake is not a Unix time")
if impl == "pipevpn":
    for stage in ("udp_receiver", "decryptor", "tun_writer"):
        if value("pipevpn_stage_bytes", stage=stage) <= 0:
            sys.exit(f"the {stage} stage counted no bytes")
    if value("pipevpn_handshakes_completed") < 3:
        sys.exit("fewer than 3 handshakes completed")
    reasons = {}
    for s in families["pipevpn_stage_dropped_packets"].samples:
        reasons.setdefault(s.labels["stage"], set()).add(s.labels["reason"])
    if len(reasons) != 7 or len({frozenset(r) for r in reasons.values()}) != 1:
        sys.exit(f"drop reasons per stage: {reasons}")
print(f"{len(families)} families, {sum(len(f.samples) for f in families.values())} samples")
EOF
}
# show_vs_wg BEFORE_JSON WG_DUMP AFTER_JSON: for each peer, its rx/tx bytes in the
# dump lie between the two pipevpn answers (taken just before and just after it).
show_vs_wg() {
	local c key wg_rx wg_tx lo hi
	for c in "${CLIENTS[@]}"; do
		key=${PUB[c$c]}
		read -r wg_rx wg_tx < <(awk -v k="$key" '$1 == k { print $6, $7 }' <<<"$2")
		[[ -n $wg_rx ]] || fail "wg show dump lists no peer c$c ($key): $2"
		for f in rx_bytes:"$wg_rx" tx_bytes:"$wg_tx"; do
			lo=$(jq -r --arg k "$key" ".peers[] | select(.public_key == \$k) | .${f%%:*}" <<<"$1")
			hi=$(jq -r --arg k "$key" ".peers[] | select(.public_key == \$k) | .${f%%:*}" <<<"$3")
			[[ -n $lo && -n $hi ]] || fail "pipevpn show --json lists no peer c$c ($key)"
			((lo <= ${f#*:} && ${f#*:} <= hi)) ||
				fail "peer c$c: wg says ${f%%:*} ${f#*:}, pipevpn show said $lo just before and $hi just after"
		done
	done
}
iperf_between show 4 "$HUB_NS" "$HUB_INNER" "${C_NS[1]}" 5203
sleep 1
first=$(show_hub "$HUB_TUN" --json) || fail "pipevpn show $HUB_TUN --json failed"
dump1=$(in_ns "$HUB_NS" wg show "$HUB_TUN" dump)
second=$(show_hub "$HUB_TUN" --json) || fail "pipevpn show $HUB_TUN --json failed"
sleep 1
text=$(show_hub "$HUB_TUN") || fail "pipevpn show $HUB_TUN failed"
third=$(show_hub "$HUB_TUN" --json)
dump2=$(in_ns "$HUB_NS" wg show "$HUB_TUN" dump)
fourth=$(show_hub "$HUB_TUN" --json)
wgtext=$(in_ns "$HUB_NS" wg show "$HUB_TUN")
show_hub "$HUB_TUN" --format prometheus >"$TMP/hub.prom" || fail "pipevpn show $HUB_TUN --format prometheus failed"
timeout -s INT 2.6 ip netns exec "$HUB_NS" "$PIPEVPN" show "$HUB_TUN" --watch >"$TMP/watch.txt" || true
iperf_wait show
log "pipevpn show $HUB_TUN during the transfer:"$'\n'"$text"
log "wg show $HUB_TUN beside it:"$'\n'"$wgtext"
[[ $text == "interface: $HUB_TUN"$'\n'* ]] || fail "pipevpn show does not start with the interface: $text"
for c in "${CLIENTS[@]}"; do
	[[ $text == *"peer: ${PUB[c$c]}"* ]] || fail "pipevpn show lists no peer c$c: $text"
done
[[ $text == *"transfer: "*" received, "*" sent"* && $text == *"latest handshake: "* ]] ||
	fail "pipevpn show has no transfer or handshake line: $text"
[[ $text != *"${PRIV[hub]}"* && $first != *"${PRIV[hub]}"* ]] || fail "pipevpn show printed the private key"
[[ $(jq -r .public_key <<<"$first") == "${PUB[hub]}" ]] || fail "pipevpn show --json: public_key is not the hub's: $first"
[[ $(jq '.peers | length' <<<"$first") == 3 ]] || fail "pipevpn show --json: not 3 peers: $first"
show_vs_wg "$first" "$dump1" "$second"
show_vs_wg "$third" "$dump2" "$fourth"
c1_rx() { jq -r --arg k "${PUB[c1]}" '.peers[] | select(.public_key == $k) | .rx_bytes' <<<"$1"; }
(($(c1_rx "$third") > $(c1_rx "$first"))) || fail "c1's received bytes did not grow: $(c1_rx "$first") then $(c1_rx "$third")"
frames=$(grep -c "^interface: $HUB_TUN\$" "$TMP/watch.txt" || true)
((frames >= 2)) || fail "show --watch printed $frames frames in 2.6 s: $(cat "$TMP/watch.txt")"
! grep -q $'\x1b' "$TMP/watch.txt" || fail "show --watch into a file printed escape codes"
if [[ $HUB_IMPL == pipevpn ]]; then
	for stage in $(jq -r '.stages | keys[]' <<<"$first"); do
		[[ $text == *$'\n'"  $stage "* ]] || fail "pipevpn show has no row for stage $stage: $text"
	done
	for stage in udp_receiver decryptor tun_writer; do
		a=$(jq ".stages.$stage.bytes" <<<"$first") b=$(jq ".stages.$stage.bytes" <<<"$third")
		((b > a)) || fail "the hub's $stage bytes did not grow between two calls: $a then $b"
	done
	[[ $(jq '.handshakes.completed' <<<"$first") -ge 3 ]] || fail "show --json: fewer than 3 handshakes: $first"
	grep -q "pkt/s" "$TMP/watch.txt" || fail "show --watch has no rates: $(cat "$TMP/watch.txt")"
else
	[[ $text != *"pipeline:"* ]] || fail "pipevpn show of wireguard-go shows a pipeline"
fi
if ! parsed=$(prom_check "$TMP/hub.prom" 2>&1); then
	log "pipevpn show $HUB_TUN --format prometheus:"$'\n'"$(cat "$TMP/hub.prom")"
	fail "pipevpn show --format prometheus, as Prometheus' parser reads it: $parsed"
fi
info "pipevpn show $HUB_TUN --format prometheus: $parsed"
! grep -qF "${PRIV[hub]}" "$TMP/hub.prom" || fail "pipevpn show --format prometheus printed the private key"
err=$(show_hub "$HUB_TUN" --format prometheus --watch 2>&1) && fail "show --format prometheus --watch was taken: $err"
[[ $err == *"--watch"*"prometheus"* ]] || fail "show --format prometheus --watch: $err"
err=$(show_hub "${PREFIX}none" 2>&1) && fail "pipevpn show of a missing interface succeeded: $err"
[[ $err == *"no interface ${PREFIX}none"* ]] || fail "pipevpn show of a missing interface: $err"
info "pipevpn show $HUB_TUN: $(tr '\n' '|' <<<"$text")"
pass

scenario full-tunnel-two-peers
stop_impl "${C_TUN[1]}"
stop_impl "${C_TUN[2]}"
S2_TUN="${PREFIX}t6" S2_INNER=10.88.0.2 S2_PORT=51821 C1_CONF="$TMP/c1-full.conf"
gen_keys s2
{
	printf '[Interface]\nPrivateKey = %s\nAddress = %s/24\nListenPort = %s\nMTU = 1420\n' \
		"${PRIV[s2]}" "$S2_INNER" "$S2_PORT"
	printf '\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\n' "${PUB[c1]}" "${C_INNER[1]}"
} >"$TMP/s2.conf"
{
	printf '[Interface]\nPrivateKey = %s\nAddress = %s/24\nListenPort = %s\nMTU = 1420\n' \
		"${PRIV[c1]}" "${C_INNER[1]}" "$PORT"
	printf '\n[Peer]\nPublicKey = %s\nAllowedIPs = 0.0.0.0/0\nEndpoint = 10.96.1.1:%s\n' "${PUB[hub]}" "$PORT"
	printf '\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\nEndpoint = %s:%s\n' "${PUB[s2]}" "$S2_INNER" "${C_UNDER[2]}" "$S2_PORT"
} >"$C1_CONF"
chmod 600 "$TMP/s2.conf" "$C1_CONF"
before=$(route_snapshot "${C_NS[1]}")
start_pipevpn "${C_NS[2]}" "$TMP/s2.conf" "$S2_TUN"
start_pipevpn "${C_NS[1]}" "$C1_CONF" "${C_TUN[1]}"
host_route() { ip netns exec "${C_NS[1]}" ip -4 route show "$1/32" | grep -q "via $C1_GW dev ${PREFIX}cv1"; }
for ep in 10.96.1.1 "${C_UNDER[2]}"; do
	host_route "$ep" || fail "no host route to endpoint $ep via $C1_GW: $(ip netns exec "${C_NS[1]}" ip -4 route)"
done
wait_for_handshake "${C_NS[1]}" "$HUB_INNER" 15
wait_for_handshake "${C_NS[1]}" "$S2_INNER" 15
ping_ok "${C_NS[1]}" "$HUB_INNER"
ping_ok "${C_NS[1]}" "$S2_INNER"
# c2 moves three times (10.96.2.3, .4, .5: the new address added, the old one
# gone); each time c2 then sends one ping to c1 from the new address, and c1
# follows it (whitepaper §2.1): without that, only c2's handshake 15 s later would
# tell c1. The host route to the new address must be there within 200 ms of that
# ping (polled every 20 ms), or c1's replies loop into the tunnel until it is:
# `up` polled once a second before, which three roams in a row cannot all beat.
roam_c2() { # roam_c2 NEW OLD_CIDR
	in_ns "${C_NS[2]}" ip addr add "$1/32" dev "${PREFIX}cv2"
	in_ns "${C_NS[2]}" ip route replace 10.96.2.1 dev "${PREFIX}cv2" scope link src "$1"
	in_ns "${C_NS[2]}" ip route replace default via 10.96.2.1 dev "${PREFIX}cv2" src "$1"
	in_ns "${C_NS[2]}" ip addr del "$2" dev "${PREFIX}cv2"
}
moved() { # moved NEW OLD
	ip netns exec "${C_NS[2]}" ping -c1 -W1 -q "${C_INNER[1]}" || true
	ip netns exec "${C_NS[1]}" ping -c1 -W1 -q "$S2_INNER" && host_route "$1" && ! host_route "$2"
}
old=${C_UNDER[2]} old_cidr="${C_UNDER[2]}/24" follow_ms=()
for new in 10.96.2.3 10.96.2.4 10.96.2.5; do
	roam_c2 "$new" "$old_cidr"
	start=$(date +%s%N)
	ip netns exec "${C_NS[2]}" ping -c1 -W1 -q "${C_INNER[1]}" >/dev/null 2>&1 &
	roam_ping=$!
	STARTED_PIDS+=("$roam_ping")
	until host_route "$new" || (($(date +%s%N) - start > 2000000000)); do sleep 0.02; done
	ms=$((($(date +%s%N) - start) / 1000000))
	wait "$roam_ping" || true
	if host_route "$new"; then follow_ms+=("$new in $ms ms;"); else follow_ms+=("$new not within 2 s;"); fi
	((ms <= 200)) || fail "c1's host route did not follow c2 within 200 ms of its ping: ${follow_ms[*]}"
	wait_until 15 "c1's host route to follow c2 to $new" moved "$new" "$old"
	grep -q "endpoint changed: $old:$S2_PORT -> $new:$S2_PORT" "${LOG_OF[${C_TUN[1]}]}" ||
		fail "c1's log does not show the endpoint change to $new"
	old=$new old_cidr="$new/32"
	# Roams about half a second apart: a once-a-second poll, in whatever
	# phase, is late for at least one of them.
	sleep 0.3
done
info "c1's host route followed c2 after: ${follow_ms[*]}"
info "c1's routes after c2 moved: $(ip netns exec "${C_NS[1]}" ip -4 route | grep "via $C1_GW" | tr '\n' ';')"
ping_ok "${C_NS[1]}" "$S2_INNER"
ping_ok "${C_NS[1]}" "$HUB_INNER"
stop_impl "${C_TUN[1]}"
((STOP_RC == 0)) || fail "c1 exited with status $STOP_RC"
same_routes "${C_NS[1]}" "$before"
pass
