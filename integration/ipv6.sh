#!/usr/bin/env bash
# IPv6 end to end, pipevpn on both sides, in two throw-away network namespaces:
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
# (B's loopback). Checks: ping and ping -6 both ways (also MTU-sized, DF set), the
# routes pipevpn added, iperf3 -6 TCP for 3 s; then SIGTERM and `ip route` /
# `ip -6 route` (all tables) equal to before, and no route record left.
# Scenario ipv6-full-tunnel: AllowedIPs = 0.0.0.0/0, ::/0 on A, whose default route
# leads to the endpoint (B's fd00:96::2 on lo): ::/1 + 8000::/1 and a host route to
# the endpoint through the old default route; the same checks.
# Scenario dual-stack-socket: the same over an IPv4 underlay (10.98.0.0/24 added),
# so the dual-stack [::] socket talks to an IPv4 endpoint.
#
# Usage: integration/ipv6.sh (root; PIPEVPN=path, default target/release/pipevpn).
# Output: `PASS name` / `FAIL name: why` per scenario on stdout, trace on stderr.
# Everything carries this run's prefix and is removed by the EXIT trap.

set -Eeuo pipefail

# Bound the whole run; on expiry timeout(1) sends SIGTERM and the trap cleans up.
if [[ -z "${PV_UNDER_TIMEOUT:-}" ]]; then
	export PV_UNDER_TIMEOUT=1
	exec timeout --kill-after=15 "${PV_TIMEOUT:-180}" bash "$0" "$@"
fi

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIPEVPN=${PIPEVPN:-target/release/pipevpn}
[[ $PIPEVPN == /* ]] || PIPEVPN="$REPO_ROOT/$PIPEVPN"

PREFIX="pv6$$"
NS1="${PREFIX}n1" NS2="${PREFIX}n2"
VETH1="${PREFIX}v1" VETH2="${PREFIX}v2"
TUN1="${PREFIX}t1" TUN2="${PREFIX}t2"
PORT=51820
TMP=$(mktemp -d "/tmp/pipevpn-ipv6.$$.XXXXXX")
CREATED_NS=()
STARTED_PIDS=()
RUN_DIRS=()
SCENARIO=setup
FAILED=0

log() { echo "# $*" >&2; }
pass() { echo "PASS $SCENARIO"; }
fail() {
	echo "FAIL $SCENARIO: $*"
	FAILED=1
	exit 1
}
trap 'fail "interrupted (timeout after ${PV_TIMEOUT:-180}s?)"' TERM INT

in_ns() {
	local ns=$1
	shift
	echo "+ [$ns] $*" >&2
	ip netns exec "$ns" "$@"
}
n1() { in_ns "$NS1" "$@"; }
n2() { in_ns "$NS2" "$@"; }

# check WHY CMD...: runs CMD, fails the scenario with WHY if it fails.
check() {
	local why=$1
	shift
	"$@" >&2 || fail "$why"
}

cleanup() {
	local rc=$? pid ns dir log
	trap - TERM INT
	for pid in "${STARTED_PIDS[@]}"; do
		kill -0 "$pid" 2>/dev/null || continue
		log "cleanup: stopping pid $pid"
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	if ((FAILED)); then
		for log in "$TMP"/*.log; do
			[[ -e $log ]] && sed "s|^|  [$(basename "$log")] |" "$log" >&2
		done
	fi
	for ns in "${CREATED_NS[@]}"; do
		ip netns del "$ns" 2>/dev/null || log "cleanup: could not delete netns $ns"
	done
	# Route records of our namespaces, should a run have been killed.
	for dir in "${RUN_DIRS[@]}"; do
		rm -rf "$dir"
	done
	rm -rf "$TMP"
	if ip -o link show | grep -q "$PREFIX"; then
		echo "FAIL cleanup: interfaces named $PREFIX* are left"
		rc=1
	fi
	((FAILED == 0)) || rc=1
	exit "$rc"
}
trap cleanup EXIT

add_ns() {
	ip netns add "$1"
	CREATED_NS+=("$1")
	in_ns "$1" ip link set lo up
	RUN_DIRS+=("/run/pipevpn/$(in_ns "$1" stat -L -c %i /proc/self/ns/net)")
}

# routes NS: both families, all tables, as `ip` shows them.
routes() {
	ip netns exec "$1" ip -4 route show table all
	ip netns exec "$1" ip -6 route show table all
}

# start NAME NS CONFIG: pipevpn up in NS; waits until the tun is up.
start() {
	local name=$1 ns=$2 conf=$3
	echo "+ [$ns] $PIPEVPN -v up $conf -i $name &" >&2
	ip netns exec "$ns" "$PIPEVPN" -v up "$conf" -i "$name" >"$TMP/$name.log" 2>&1 &
	STARTED_PIDS+=("$!")
	eval "PID_$name=$!"
	for _ in $(seq 50); do
		# Logged once the routes are in place and the pipeline runs.
		grep -q "\] $name up, " "$TMP/$name.log" && return 0
		kill -0 "$!" 2>/dev/null || break
		sleep 0.1
	done
	cat "$TMP/$name.log" >&2
	fail "$name did not come up in $ns"
}

# stop NAME: SIGTERM, then the exit status must be 0 within 10 s.
stop() {
	local name=$1 pid rc=0
	pid=$(eval "echo \$PID_$name")
	log "stopping $name (pid $pid)"
	kill -TERM "$pid"
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && fail "$name (pid $pid) still runs 10 s after SIGTERM"
	wait "$pid" || rc=$?
	sed "s/^/  [$name] /" "$TMP/$name.log" >&2
	((rc == 0)) || fail "$name exited $rc after SIGTERM"
}

# ping_ok NS ADDR [ARGS...]: a few pings, all answered; the first may take the
# handshake, so up to 5 tries for one answer first.
ping_ok() {
	local ns=$1 addr=$2
	shift 2
	for _ in $(seq 5); do
		ip netns exec "$ns" ping -c1 -W1 -q "$addr" >/dev/null 2>&1 && break
	done
	in_ns "$ns" ping -c3 -i0.2 -W2 -q "$@" "$addr" >&2 || fail "ping $* $addr from $ns"
}

# config FILE KEY ADDRESSES ENDPOINT_OR_PORT ALLOWED PEER_KEY
config() {
	{
		echo "[Interface]"
		echo "PrivateKey = $2"
		echo "Address = $3"
		[[ $4 == *:* ]] || echo "ListenPort = $4"
		echo "MTU = 1420"
		echo "[Peer]"
		echo "PublicKey = $6"
		[[ $4 != *:* ]] || echo "Endpoint = $4"
		echo "AllowedIPs = $5"
	} >"$1"
}

# tunnel_checks: pings of both families both ways through the tunnels.
tunnel_checks() {
	ping_ok "$NS1" 10.99.0.2
	ping_ok "$NS1" fd00:99::2 -6
	ping_ok "$NS2" 10.99.0.1
	ping_ok "$NS2" fd00:99::1 -6
	# Only pipevpn's AllowedIPs routes lead to B's loopback addresses.
	ping_ok "$NS1" 10.97.0.2
	ping_ok "$NS1" fd00:97::2 -6
	# Full-sized packets with DF: 1420 - 28 and 1420 - 48 bytes of payload.
	ping_ok "$NS1" 10.99.0.2 -M "do" -s 1392
	ping_ok "$NS1" fd00:99::2 -6 -M "do" -s 1372
}

# up_pair ENDPOINT ALLOWED_A: snapshots both route tables, then B (waiting) and A
# (initiating, to ENDPOINT, routing ALLOWED_A) up.
up_pair() {
	BEFORE1=$(routes "$NS1")
	BEFORE2=$(routes "$NS2")
	config "$TMP/a.conf" "$KEY1" "10.99.0.1/24, fd00:99::1/64" "$1" "$2" "$PUB2"
	config "$TMP/b.conf" "$KEY2" "10.99.0.2/24, fd00:99::2/64" "$PORT" \
		"10.99.0.1/32, fd00:99::1/128" "$PUB1"
	start "$TUN2" "$NS2" "$TMP/b.conf"
	start "$TUN1" "$NS1" "$TMP/a.conf"
}

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

# common_checks: no link-local on the tunnel, a dual-stack socket, pings of both
# families both ways, iperf3 -6 TCP for 3 s.
common_checks() {
	local got server
	got=$(n1 ip -6 addr show dev "$TUN1")
	! grep -q "inet6 fe80" <<<"$got" || fail "$TUN1 has a link-local address: $got"
	got=$(n2 ss -u -l -n -p)
	grep -q "\(\[::\]\|\*\):$PORT .*pipevpn" <<<"$got" ||
		fail "pipevpn does not listen on [::]:$PORT: $got"

	tunnel_checks

	echo "+ [$NS2] iperf3 -s -1 -B fd00:99::2 &" >&2
	ip netns exec "$NS2" timeout 20 iperf3 -s -1 -B fd00:99::2 >"$TMP/iperf3-server.log" 2>&1 &
	STARTED_PIDS+=("$!")
	server=$!
	for _ in $(seq 50); do
		ip netns exec "$NS2" ss -t -l -n | grep -q "fd00:99::2\]:5201" && break
		sleep 0.1
	done
	check "iperf3 -6 TCP through the tunnel" \
		n1 timeout 20 iperf3 -6 -c fd00:99::2 -t 3 -f m
	wait "$server" || fail "iperf3 server exited $?"
}

# down_pair: SIGTERM both; route tables as before, no route record left.
down_pair() {
	local dir
	stop "$TUN1"
	stop "$TUN2"
	[[ $(routes "$NS1") == "$BEFORE1" ]] ||
		fail "routes in $NS1 differ after stop: $(diff <(echo "$BEFORE1") <(routes "$NS1"))"
	[[ $(routes "$NS2") == "$BEFORE2" ]] ||
		fail "routes in $NS2 differ after stop: $(diff <(echo "$BEFORE2") <(routes "$NS2"))"
	for dir in "${RUN_DIRS[@]}"; do
		[[ ! -e $dir/$TUN1.routes && ! -e $dir/$TUN2.routes ]] || fail "a route record is left in $dir"
	done
}

# tun_tx NS DEV: packets the kernel has sent into tun DEV.
tun_tx() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/tx_packets"; }

SCENARIO=prerequisites
[[ $(id -u) == 0 ]] || fail "must run as root (network namespaces)"
for t in ip ping iperf3 ss timeout stat; do
	command -v "$t" >/dev/null || fail "missing tool $t"
done
[[ -x $PIPEVPN ]] || fail "pipevpn binary not found at $PIPEVPN (cargo build --release, or set PIPEVPN)"
[[ -e /proc/net/if_inet6 ]] || fail "the kernel has no IPv6"
pass

SCENARIO=topology
add_ns "$NS1"
add_ns "$NS2"
n1 ip link add "$VETH1" mtu 1500 type veth peer name "$VETH2" netns "$NS2"
n1 ip addr add fd00:98::1/64 dev "$VETH1" nodad
n2 ip addr add fd00:98::2/64 dev "$VETH2" nodad
# Static link-local addresses (neighbour discovery needs one) instead of the
# generated ones, which would appear a second or so after link up, in the middle
# of a before/after comparison of the route tables.
n1 ip link set "$VETH1" addrgenmode none
n2 ip link set "$VETH2" addrgenmode none
n1 ip addr add fe80::1/64 dev "$VETH1" nodad
n2 ip addr add fe80::2/64 dev "$VETH2" nodad
n1 ip link set "$VETH1" up
n2 ip link set "$VETH2" up
n2 ip addr add 10.97.0.2/32 dev lo
n2 ip addr add fd00:97::2/128 dev lo
check "IPv6 underlay" n1 ping -6 -c1 -W2 -q fd00:98::2
[[ -z $(n1 ip -4 addr show dev "$VETH1") ]] || fail "$VETH1 has an IPv4 address"
# Without the tunnel, neither tunnel nor loopback addresses are reachable.
for addr in 10.97.0.2 fd00:97::2; do
	! n1 ping -c1 -W1 -q "$addr" >&2 || fail "$addr answers outside the tunnel"
done
KEY1=$("$PIPEVPN" genkey) KEY2=$("$PIPEVPN" genkey)
PUB1=$("$PIPEVPN" pubkey <<<"$KEY1") PUB2=$("$PIPEVPN" pubkey <<<"$KEY2")
pass

SPLIT_ALLOWED="10.99.0.2/32, fd00:99::2/128, 10.97.0.0/24, fd00:97::/64"

SCENARIO=ipv6-underlay
up_pair "[fd00:98::2]:$PORT" "$SPLIT_ALLOWED"
has_routes "$NS1" "$TUN1" 6 "fd00:97::/64 metric 1" "fd00:99::2 metric 1" \
	"fd00:99::/64 proto kernel metric 256"
has_routes "$NS1" "$TUN1" 4 "10.97.0.0/24" "10.99.0.2"
common_checks
down_pair
pass

SCENARIO=ipv6-full-tunnel
# The endpoint is now B's loopback address fd00:96::2, reached through A's default
# route: the full tunnel must keep it there with a host route.
# B answers A from that address too (its socket is not bound to one address, so
# the kernel picks the source by route): A's endpoint stays there.
n2 ip addr add fd00:96::2/128 dev lo
n2 ip -6 route add fd00:98::1/128 dev "$VETH2" src fd00:96::2
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
grep -q "handshake completed with \[fd00:96::2\]:$PORT" "$TMP/$TUN1.log" ||
	fail "A did not keep its endpoint [fd00:96::2]:$PORT: $(cat "$TMP/$TUN1.log")"
n1 ip -6 route del default via fd00:98::2 dev "$VETH1"
n2 ip -6 route del fd00:98::1/128 dev "$VETH2"
pass

SCENARIO=dual-stack-socket
n1 ip addr add 10.98.0.1/24 dev "$VETH1"
n2 ip addr add 10.98.0.2/24 dev "$VETH2"
check "IPv4 underlay" n1 ping -c1 -W2 -q 10.98.0.2
up_pair "10.98.0.2:$PORT" "$SPLIT_ALLOWED"
common_checks
down_pair
pass
