#!/usr/bin/env bash
# IPv6 end to end, pipevpn on both sides, over the harness of lib.sh but with an
# underlay of its own:
#
#            ns1 (A, initiates)                         ns2 (B, waits)
#   ┌─────────────────────────────────────┐  ┌─────────────────────────────────────┐
#   │ $TUN1 10.99.0.1/24 fd00:99::1/64    │  │ 10.99.0.2/24 fd00:99::2/64 $TUN2    │
#   │                                     │  │ lo: 10.97.0.2/32 fd00:97::2/128     │
#   │ $VETH1 fd00:98::1/64 fe80::1 ───────┼──┼─────── fd00:98::2/64 fe80::2 $VETH2 │
#   └─────────────────────────────────────┘  └─────────────────────────────────────┘
#
# Scenario ipv6-underlay: the veth has IPv6 addresses only, A's Endpoint is
# [fd00:98::2]:PORT. Both tunnels carry an IPv4 and an IPv6 Address; A's AllowedIPs
# also hold 10.97.0.0/24 and fd00:97::/64, which only the routes pipevpn adds lead to
# (B's loopback). Checks: ping of both families both ways (also MTU-sized, DF set),
# the routes pipevpn added, iperf3 TCP over IPv6 for 3 s; then SIGTERM, and both
# routing tables (IPv4 and IPv6) equal to before, with no route record left.
# Scenario ipv6-full-tunnel: AllowedIPs = 0.0.0.0/0, ::/0 on A, whose default route
# leads to the endpoint (B's fd00:96::2 on lo): ::/1 + 8000::/1 and a host route to
# the endpoint through the old default route; the same checks.
# Scenario dual-stack-socket: the same over an IPv4 underlay (10.98.0.0/24 added),
# so the dual-stack [::] socket talks to an IPv4 endpoint.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn ipv6

# has_routes NS DEV FAMILY ROUTE...: each ROUTE starts a line of `ip -FAMILY route
# show dev DEV` in NS.
has_routes() {
	local ns=$1 dev=$2 family=$3 got want
	shift 3
	got=$(ip -n "$ns" "-$family" route show dev "$dev")
	for want in "$@"; do
		grep -q "^$want" <<<"$got" || fail "no route '$want' on $dev: $got"
	done
}

# tun_tx NS DEV: packets the kernel has sent into tun DEV.
tun_tx() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/tx_packets"; }

# up_pair ENDPOINT ALLOWED_A: snapshots both routing tables, then B (waiting) and A
# (initiating, to ENDPOINT, routing ALLOWED_A) up, and the first handshake.
up_pair() {
	BEFORE1=$(route_snapshot "$NS1")
	BEFORE2=$(route_snapshot "$NS2")
	write_conf "$TMP/a.conf" "${PRIV[a]}" "10.99.0.1/24, fd00:99::1/64" "${PUB[b]}" "$2" "$1" -
	write_conf "$TMP/b.conf" "${PRIV[b]}" "10.99.0.2/24, fd00:99::2/64" "${PUB[a]}" \
		"10.99.0.1/32, fd00:99::1/128" - -
	start_pair pipevpn pipevpn a
	wait_for_handshake "$NS1" fd00:99::2
}

# common_checks: no link-local address on the tunnel, a dual-stack socket, pings of
# both families both ways (small, and filling the 1420-byte MTU: 1420 - 28 and
# 1420 - 48 bytes of payload), iperf3 TCP over IPv6 for 3 s.
common_checks() {
	local got addr
	got=$(n1 ip -6 addr show dev "$TUN1")
	! grep -q "inet6 fe80" <<<"$got" || fail "$TUN1 has a link-local address: $got"
	got=$(n2 ss -u -l -n -p)
	grep -q "\(\[::\]\|\*\):$PORT .*pipevpn" <<<"$got" ||
		fail "pipevpn does not listen on [::]:$PORT: $got"
	for addr in 10.99.0.2 fd00:99::2 10.97.0.2 fd00:97::2; do
		ping_ok "$NS1" "$addr"
	done
	ping_ok "$NS2" 10.99.0.1
	ping_ok "$NS2" fd00:99::1
	ping_ok "$NS1" 10.99.0.2 1392
	ping_ok "$NS1" fd00:99::2 1372
	iperf_ok "$NS2" fd00:99::2 "$NS1"
}

# down_pair: SIGTERM to both (exit 0, no route record left); routing tables as before.
down_pair() {
	stop_pair
	same_routes "$NS1" "$BEFORE1"
	same_routes "$NS2" "$BEFORE2"
}

scenario topology
add_ns "$NS1"
add_ns "$NS2"
n1 ip link add "$VETH1" mtu 1500 type veth peer name "$VETH2" netns "$NS2"
n1 ip addr add fd00:98::1/64 dev "$VETH1" nodad
n2 ip addr add fd00:98::2/64 dev "$VETH2" nodad
# Static link-local addresses (neighbour discovery needs one) instead of the
# generated ones, which would appear a second or so after link up, in the middle
# of a before/after comparison of the routing tables.
n1 ip link set "$VETH1" addrgenmode none
n2 ip link set "$VETH2" addrgenmode none
n1 ip addr add fe80::1/64 dev "$VETH1" nodad
n2 ip addr add fe80::2/64 dev "$VETH2" nodad
n1 ip link set "$VETH1" up
n2 ip link set "$VETH2" up
n2 ip addr add 10.97.0.2/32 dev lo
n2 ip addr add fd00:97::2/128 dev lo
n1 ping -6 -c1 -W2 -q fd00:98::2 >&2
[[ -z $(n1 ip -4 addr show dev "$VETH1") ]] || fail "$VETH1 has an IPv4 address"
# Without the tunnel, neither tunnel nor loopback addresses are reachable.
for addr in 10.97.0.2 fd00:97::2; do
	! n1 ping -c1 -W1 -q "$addr" >&2 || fail "$addr answers outside the tunnel"
done
gen_keys a
gen_keys b
pass

SPLIT_ALLOWED="10.99.0.2/32, fd00:99::2/128, 10.97.0.0/24, fd00:97::/64"

scenario ipv6-underlay
up_pair "[fd00:98::2]:$PORT" "$SPLIT_ALLOWED"
has_routes "$NS1" "$TUN1" 6 "fd00:97::/64 metric 1" "fd00:99::2 metric 1" \
	"fd00:99::/64 proto kernel metric 256"
has_routes "$NS1" "$TUN1" 4 "10.97.0.0/24" "10.99.0.2"
common_checks
down_pair
pass

scenario ipv6-full-tunnel
# The endpoint is now B's loopback address fd00:96::2, reached through A's default
# route: the full tunnel must keep it there with a host route. B's routing would
# answer from fd00:98::2; B must answer from the address A talks to (IPV6_PKTINFO),
# so A's endpoint stays there.
n2 ip addr add fd00:96::2/128 dev lo
n1 ip -6 route add default via fd00:98::2 dev "$VETH1"
up_pair "[fd00:96::2]:$PORT" "0.0.0.0/0, ::/0"
has_routes "$NS1" "$TUN1" 6 "::/1 metric 1" "8000::/1 metric 1"
has_routes "$NS1" "$TUN1" 4 "0.0.0.0/1" "128.0.0.0/1"
has_routes "$NS1" "$VETH1" 6 "fd00:96::2 via fd00:98::2 metric 1"
got=$(n1 ip -6 route get 2001:db8::1)
grep -q "dev $TUN1" <<<"$got" || fail "2001:db8::1 is not routed into $TUN1: $got"
# With the default route still there, only the tunnel's counters prove the path.
tx=$(tun_tx "$NS1" "$TUN1")
common_checks
((tun_tx_after = $(tun_tx "$NS1" "$TUN1"), tun_tx_after - tx >= 20)) ||
	fail "only $((tun_tx_after - tx)) packets went into $TUN1"
down_pair
grep -q "handshake completed with \[fd00:96::2\]:$PORT" "${LOG_OF[$TUN1]}" ||
	fail "A did not keep its endpoint [fd00:96::2]:$PORT: $(cat "${LOG_OF[$TUN1]}")"
! grep -q "endpoint changed" "${LOG_OF[$TUN1]}" ||
	fail "A's endpoint moved: $(grep 'endpoint changed' "${LOG_OF[$TUN1]}")"
n1 ip -6 route del default via fd00:98::2 dev "$VETH1"
pass

scenario dual-stack-socket
n1 ip addr add 10.98.0.1/24 dev "$VETH1"
n2 ip addr add 10.98.0.2/24 dev "$VETH2"
n1 ping -c1 -W2 -q 10.98.0.2 >&2
up_pair "10.98.0.2:$PORT" "$SPLIT_ALLOWED"
common_checks
down_pair
pass
