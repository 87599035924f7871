# shellcheck shell=bash disable=SC2034 # lib.sh defines names for the scenario scripts
# Network-namespace test harness for pipevpn, sourced by every scenario script.
#
#            ns1 (side A, "client")                    ns2 (side B, "server")
#   ┌──────────────────────────────────┐      ┌──────────────────────────────────┐
#   │ $TUN1  10.99.0.1/24  (A's tunnel)│      │ (B's tunnel) 10.99.0.2/24  $TUN2 │
#   │    │                             │      │                             │    │
#   │ $VETH1 10.98.0.1/24 ─────────────┼──────┼───────────── 10.98.0.2/24 $VETH2 │
#   │ default via 10.98.0.254          │ veth │   10.98.0.254/24 (A's gateway)   │
#   └──────────────────────────────────┘      └──────────────────────────────────┘
#                                                  full_tunnel.sh adds ns3 behind ns2:
#                                                  $VETH3 10.97.0.1/24 ── 10.97.0.2/24 $VETH4
#
# Each side runs one implementation, chosen per side: IMPL_A / IMPL_B = pipevpn | wggo.
# Both read the same wg-quick style file; for wireguard-go the harness plays the part
# of `pipevpn up` (addresses, MTU, routes from AllowedIPs, full-tunnel host route).
#
# Every name carries this run's prefix (pv<pid>), every process we start is recorded
# by PID, and the EXIT trap undoes all of it, then checks that nothing is left.
# Results: one line per scenario on stdout, `PASS name` or `FAIL name: why`; the
# commands themselves are traced on stderr as `+ [namespace] command`.

set -Eeuo pipefail

# Bound the whole script: re-run it under timeout(1) once. On expiry timeout signals
# our process group, so the EXIT trap below still cleans up.
if [[ -z "${PV_UNDER_TIMEOUT:-}" ]]; then
	export PV_UNDER_TIMEOUT=1
	exec timeout --kill-after=15 "${PV_TIMEOUT:-300}" bash "$0" "$@"
fi

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIPEVPN=${PIPEVPN:-target/release/pipevpn}
[[ $PIPEVPN == /* ]] || PIPEVPN="$REPO_ROOT/$PIPEVPN"
# pipevpnd, the daemon wg-quick starts: beside pipevpn unless named.
PIPEVPND=${PIPEVPND:-$(dirname "$PIPEVPN")/pipevpnd}
[[ $PIPEVPND == /* ]] || PIPEVPND="$REPO_ROOT/$PIPEVPND"
WGGO_BIN=wireguard-go # bench.sh runs a newer build through the same code
# The command of the "uapi" implementation (start_impl), without the interface name:
# any peer that start_uapi can drive. bench.sh sets it for boringtun and GotaTun.
UAPI_CMD=()

PREFIX="pv$$"
NS1="${PREFIX}n1" NS2="${PREFIX}n2" NS3="${PREFIX}n3"
VETH1="${PREFIX}v1" VETH2="${PREFIX}v2" VETH3="${PREFIX}v3" VETH4="${PREFIX}v4"
TUN1="${PREFIX}t1" TUN2="${PREFIX}t2"
UNDER1=10.98.0.1 UNDER2=10.98.0.2 GATEWAY1=10.98.0.254
INNER1=10.99.0.1 INNER2=10.99.0.2 INNER_NET=10.99.0.0/24
INTERNET_GW=10.97.0.1 INTERNET_HOST=10.97.0.2
PORT=51820
TMP=$(mktemp -d "/tmp/pipevpn-integ.$$.XXXXXX")

CREATED_NS=()
STARTED_PIDS=()
declare -A PID_OF=() NS_OF=() IMPL_OF=() LOG_OF=() HOSTROUTE_OF=() RUN_DIR_OF=() IFACE_OF=()
CURRENT_SCENARIO=""
FIRST_ERROR=""
STOP_RC=""
# Functions the cleanup calls first, each undoing what a script changed
# outside the namespaces (package.sh: the package it installed).
CLEANUP_HOOKS=()

# Result lines and cleanup output go to the script's own stdout/stderr (fds 3 and 4),
# even when a signal arrives while a command's output is redirected to a file.
exec 3>&1 4>&2

log() { echo "# $*" >&2; }

# info TEXT: a measurement worth keeping, on stdout beside the PASS/FAIL lines.
info() { echo "INFO ${CURRENT_SCENARIO:-setup}: $*" >&3; }

# ---- scenario bookkeeping -------------------------------------------------------

scenario() {
	CURRENT_SCENARIO=$1
	FIRST_ERROR=""
	log "---- scenario $1"
}

pass() {
	echo "PASS $CURRENT_SCENARIO" >&3
	CURRENT_SCENARIO=""
}

fail() {
	echo "FAIL ${CURRENT_SCENARIO:-setup}: $*" >&3
	CURRENT_SCENARIO=""
	exit 1
}

# Remembers the first command that failed under `set -e`, for the FAIL line.
on_err() {
	[[ -n $FIRST_ERROR ]] || FIRST_ERROR="'$3' exited $1 (line $2)"
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR
trap 'FIRST_ERROR="interrupted by SIGTERM (timeout after ${PV_TIMEOUT:-300}s?)"; exit 124' TERM
trap 'FIRST_ERROR="interrupted by SIGINT"; exit 130' INT

# ---- commands in namespaces -----------------------------------------------------

in_ns() {
	local ns=$1
	shift
	echo "+ [$ns] $*" >&2
	ip netns exec "$ns" "$@"
}
n1() { in_ns "$NS1" "$@"; }
n2() { in_ns "$NS2" "$@"; }
n3() { in_ns "$NS3" "$@"; }

# require_tools [pipevpn|pipevpnd|wggo|ipv6|tcpdump|wgquick]...: the tools every
# scenario uses, root, the tun device, and what is named: an implementation, a kernel
# with IPv6, tcpdump, wg-quick with nft (its full tunnel's firewall rules).
require_tools() {
	local missing=() t
	for t in ip ping iperf3 wg wireguard-go python3 jq timeout ss sysctl; do
		command -v "$t" >/dev/null || missing+=("$t")
	done
	scenario prerequisites
	((${#missing[@]} == 0)) || fail "missing tools: ${missing[*]} (Debian: apt-get install iproute2 iputils-ping iperf3 wireguard-go wireguard-tools procps python3 jq)"
	[[ $(id -u) == 0 ]] || fail "must run as root (network namespaces)"
	[[ -c /dev/net/tun ]] || fail "/dev/net/tun is missing"
	local need
	for need in "$@"; do
		case $need in
		pipevpn) [[ -x $PIPEVPN ]] || fail "pipevpn binary not found at $PIPEVPN (build it, or set PIPEVPN)" ;;
		pipevpnd) [[ -x $PIPEVPND ]] || fail "pipevpnd binary not found at $PIPEVPND (build it, or set PIPEVPND)" ;;
		wgquick)
			command -v wg-quick >/dev/null || fail "wg-quick is missing (Debian: apt-get install wireguard-tools)"
			command -v nft >/dev/null || fail "nft is missing, which wg-quick's full tunnel needs (Debian: apt-get install nftables)"
			;;
		wggo) ;;
		ipv6) [[ -e /proc/net/if_inet6 ]] || fail "the kernel has no IPv6" ;;
		tcpdump) command -v tcpdump >/dev/null || fail "tcpdump is missing (Debian: apt-get install tcpdump)" ;;
		*) fail "unknown requirement '$need' (expected pipevpn, pipevpnd, wggo, ipv6, tcpdump or wgquick)" ;;
		esac
	done
	pass
}

# choose_impls DEFAULT_A DEFAULT_B: IMPL_A and IMPL_B (pipevpn | wggo) from the
# environment, else the defaults; then the prerequisites of both.
choose_impls() {
	IMPL_A=${IMPL_A:-$1}
	IMPL_B=${IMPL_B:-$2}
	require_tools "$IMPL_A" "$IMPL_B"
}

add_ns() {
	ip netns add "$1"
	CREATED_NS+=("$1")
	in_ns "$1" ip link set lo up
	# pipevpn's route records for this namespace (src/routes.rs), removed at exit with
	# the namespace: a later namespace may get the same inode.
	RUN_DIR_OF[$1]="/run/pipevpn/$(ip netns exec "$1" stat -L -c %i /proc/self/ns/net)"
}

# link_ns NS_X VETH_X ADDR_X NS_Y VETH_Y ADDR_Y: a veth pair (MTU 1500), /24 each end.
link_ns() {
	in_ns "$1" ip link add "$2" mtu 1500 type veth peer name "$5" netns "$4"
	in_ns "$4" ip link set "$5" mtu 1500
	in_ns "$1" ip addr add "$3/24" dev "$2"
	in_ns "$4" ip addr add "$6/24" dev "$5"
	in_ns "$1" ip link set "$2" up
	in_ns "$4" ip link set "$5" up
}

make_topology() {
	add_ns "$NS1"
	add_ns "$NS2"
	link_ns "$NS1" "$VETH1" "$UNDER1" "$NS2" "$VETH2" "$UNDER2"
	# A's default gateway is a second address of B, and A reaches B's underlay
	# address only through it (A's own address is a /32 with the gateway as its
	# peer), as a client reaches a server across the internet: so a full tunnel
	# needs, and must add, a host route to the endpoint via that gateway.
	n2 ip addr add "$GATEWAY1/24" dev "$VETH2"
	n1 ip addr del "$UNDER1/24" dev "$VETH1"
	n1 ip addr add "$UNDER1/32" peer "$GATEWAY1/32" dev "$VETH1"
	n1 ip route add default via "$GATEWAY1" dev "$VETH1"
	n1 ping -c1 -W2 -q "$UNDER2" >&2
	# That default route would let B's tunnel address answer A over the veth, tunnel
	# or not: B refuses underlay packets to the tunnel subnet (a rule ahead of the
	# local table). The control: a tunnel address on B's loopback stays unreachable.
	n2 ip rule add pref 10 iif "$VETH2" to "$INNER_NET" prohibit
	n2 ip rule add pref 100 lookup local
	n2 ip rule del pref 0
	n2 ip addr add "$INNER2/32" dev lo
	! n1 ping -c1 -W1 -q "$INNER2" >&2 || fail "$INNER2 on B answers A outside the tunnel"
	n2 ip addr del "$INNER2/32" dev lo
}

# make_hub N: a hub (ns2, HUB_NS) and clients 1..N (CLIENTS), each in a namespace
# of its own (C_NS) on its own veth to the hub (10.96.C.0/24, the client .2, the
# hub .1 and its default gateway), with keys (hub, cC), tunnel address C_INNER
# (10.99.0.1C), interface C_TUN and $TMP/cC.conf: the whole tunnel subnet is its
# peer the hub's, so clients reach each other through it. The hub forwards;
# hub_conf writes its config. hub.sh and bench_hub.sh use it.
make_hub() {
	local c
	HUB_NS=$NS2 HUB_TUN=$TUN2 HUB_INNER=10.99.0.1
	CLIENTS=()
	declare -gA C_NS=() C_TUN=() C_INNER=() C_UNDER=()
	add_ns "$HUB_NS"
	n2 sysctl -qw net.ipv4.ip_forward=1
	gen_keys hub
	for ((c = 1; c <= $1; c++)); do
		CLIENTS+=("$c")
		C_NS[$c]="${PREFIX}c$c" C_TUN[$c]="${PREFIX}t$((c + 2))"
		C_INNER[$c]="10.99.0.1$c" C_UNDER[$c]="10.96.$c.2"
		add_ns "${C_NS[$c]}"
		link_ns "${C_NS[$c]}" "${PREFIX}cv$c" "${C_UNDER[$c]}" "$HUB_NS" "${PREFIX}hv$c" "10.96.$c.1"
		gen_keys "c$c"
		in_ns "${C_NS[$c]}" ip route add default via "10.96.$c.1"
		write_conf "$TMP/c$c.conf" "${PRIV[c$c]}" "${C_INNER[$c]}/24" "${PUB[hub]}" "$INNER_NET" "10.96.$c.1:$PORT" -
	done
}

# hub_conf: $TMP/hub.conf, the hub's config, one [Peer] per client, no Endpoint
# (clients start).
hub_conf() {
	local c
	{
		printf '[Interface]\nPrivateKey = %s\nAddress = %s/24\nListenPort = %s\nMTU = 1420\n' \
			"${PRIV[hub]}" "$HUB_INNER" "$PORT"
		for c in "${CLIENTS[@]}"; do
			printf '\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\n' "${PUB[c$c]}" "${C_INNER[$c]}"
		done
	} >"$TMP/hub.conf"
	chmod 600 "$TMP/hub.conf"
}

# Normalised main routing table (IPv4 and IPv6) of a namespace.
route_snapshot() {
	{
		ip netns exec "$1" ip -4 route show table main
		ip netns exec "$1" ip -6 route show table main
	} | sed -e 's/[[:space:]]\+/ /g' -e 's/ $//' | sort
}

# ---- keys and configs -----------------------------------------------------------

declare -A PRIV=() PUB=()
gen_keys() {
	PRIV[$1]=$(wg genkey)
	PUB[$1]=$(wg pubkey <<<"${PRIV[$1]}")
}

# write_conf FILE PRIVATE ADDRESS PEER_PUBLIC ALLOWED_IPS ENDPOINT|- PSK|-
write_conf() {
	{
		echo "[Interface]"
		echo "PrivateKey = $2"
		echo "Address = $3"
		echo "ListenPort = $PORT"
		echo "MTU = 1420"
		echo
		echo "[Peer]"
		echo "PublicKey = $4"
		[[ $7 == - ]] || echo "PresharedKey = $7"
		echo "AllowedIPs = $5"
		[[ $6 == - ]] || echo "Endpoint = $6"
	} >"$1"
	chmod 600 "$1"
}

# setup_pair INITIATOR(a|b) PSK(yes|no) [A_ALLOWED_IPS]: $TMP/a.conf and $TMP/b.conf
# for ns1/ns2; only the initiator knows the other's Endpoint.
setup_pair() {
	local psk=- ep_a=- ep_b=-
	gen_keys a
	gen_keys b
	[[ $2 == no ]] || psk=$(wg genpsk)
	if [[ $1 == a ]]; then ep_a="$UNDER2:$PORT"; else ep_b="$UNDER1:$PORT"; fi
	write_conf "$TMP/a.conf" "${PRIV[a]}" "$INNER1/24" "${PUB[b]}" "${3:-$INNER2/32}" "$ep_a" "$psk"
	write_conf "$TMP/b.conf" "${PRIV[b]}" "$INNER2/24" "${PUB[a]}" "$INNER1/32" "$ep_b" "$psk"
}

# conf_get FILE KEY: the value of the first `KEY = value` line, commas without spaces.
conf_get() {
	sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | head -n1 | tr -d ' \t'
}

# ---- starting and stopping peers ------------------------------------------------
# Peers start through `env --default-signal=INT,QUIT`: bash starts background jobs with
# SIGINT and SIGQUIT ignored, and a peer must see them as it would from a terminal's
# Ctrl-C and Ctrl-\.

# KEY names the peer in PID_OF and the others: its interface, unless another peer
# of the same interface name runs in another namespace (then IFACE is the name).
track() { # track PID KEY NS IMPL LOG [IFACE]
	STARTED_PIDS+=("$1")
	PID_OF[$2]=$1 NS_OF[$2]=$3 IMPL_OF[$2]=$4 LOG_OF[$2]=$5 IFACE_OF[$2]=${6:-$2}
}

# wait_until SECONDS WHAT CMD...: polls CMD every 0.1 s; fails the scenario on timeout.
wait_until() {
	local limit=$1 deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || fail "timed out after ${limit}s waiting for $what"
		sleep 0.1
	done
}

iface_exists() { ip netns exec "$1" ip link show dev "$2"; }
# alive PID: PID is one of this script's background jobs and still runs. Not kill -0:
# once a job has ended, bash reaps it, and the kernel may give its PID to another
# process, which the cleanup would then signal (pid_max is 32768 here).
alive() { [[ " $(jobs -rp | tr '\n' ' ') " == *" $1 "* ]]; }

# Daemons that put themselves in the background (pipevpnd), so are no jobs of ours:
# PID -> a word of their command line (the interface), by which a PID the kernel has
# since given to another process is told apart and never signalled.
declare -A DAEMON_OF=()
track_daemon() { DAEMON_OF[$1]=$2; }
# daemon_alive PID: the tracked daemon PID still runs.
daemon_alive() {
	local argv
	argv=$( { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null) || return 1
	[[ " $argv " == *" ${DAEMON_OF[$1]} "* ]]
}

# Fails unless the process is still running (it must not have died on start-up).
expect_alive() {
	alive "${PID_OF[$1]}" || fail "${IMPL_OF[$1]} for $1 exited early: $(tail -n 5 "${LOG_OF[$1]}" | tr '\n' ' ')"
}

start_pipevpn() { # start_pipevpn NS CONFIG IFACE [KEY]
	local key=${4:-$3}
	local log="$TMP/$key.log"
	# PIPEVPN_UP_ARGS: more options for every `up`, e.g. --crypto-workers 2.
	local -a extra
	read -ra extra <<<"${PIPEVPN_UP_ARGS:-}"
	echo "+ [$1] $PIPEVPN up $2 --interface $3 ${extra[*]} &" >&2
	# Emptied here, not only by the job's own redirection, which may come after the
	# first look below: an earlier run's "up" line must not count for this one.
	: >"$log"
	env --default-signal=INT,QUIT ip netns exec "$1" "$PIPEVPN" up "$2" --interface "$3" "${extra[@]}" >"$log" 2>&1 &
	track $! "$key" "$1" pipevpn "$log" "$3"
	# pipevpn logs "IFACE up" once its routes are in place and its pipeline runs.
	wait_until 10 "pipevpn to bring $3 up in $1" eval "grep -q '\] $3 up, ' $log || ! alive ${PID_OF[$key]}"
	expect_alive "$key"
	# The crypto workers asked for run: seal workers (threads encryptor_0,
	# encryptor_1, ...) and as many open workers (decryptor_0, ...).
	if [[ ${PIPEVPN_UP_ARGS:-} =~ --crypto-workers\ ([0-9]+) ]]; then
		local want=${BASH_REMATCH[1]} got stage
		for stage in encryptor decryptor; do
			got=$(cat /proc/"${PID_OF[$key]}"/task/*/comm | grep -c "^${stage}_") || true
			[[ $got == "$want" ]] || fail "$3 in $1: $got ${stage}_ worker threads, expected $want"
		done
	fi
}

# start_uapi NS IFACE CONFIG IMPL CMD...: a userspace peer that creates the tun IFACE
# and serves wg(8)'s control socket, as wireguard-go, boringtun and GotaTun do, run
# as `CMD... IFACE` (in the foreground), then configured as `pipevpn up` would be.
start_uapi() {
	local ns=$1 iface=$2 conf=$3 impl=$4 log="$TMP/$2.log" cidr
	shift 4
	echo "+ [$ns] $* $iface &" >&2
	env --default-signal=INT,QUIT ip netns exec "$ns" "$@" "$iface" >"$log" 2>&1 &
	track $! "$iface" "$ns" "$impl" "$log"
	wait_until 10 "$impl's control socket for $iface" eval "test -S /var/run/wireguard/$iface.sock || ! alive ${PID_OF[$iface]}"
	expect_alive "$iface"
	# wg(8) reads only the keys, port and peer lines: drop the wg-quick additions.
	grep -viE '^[[:space:]]*(Address|MTU|DNS|Table|SaveConfig|(Pre|Post)(Up|Down))[[:space:]]*=' "$conf" >"$TMP/$iface.wg"
	in_ns "$ns" wg setconf "$iface" "$TMP/$iface.wg"
	for cidr in $(conf_get "$conf" Address | tr ',' ' '); do
		in_ns "$ns" ip addr add "$cidr" dev "$iface"
	done
	in_ns "$ns" ip link set "$iface" mtu "$(conf_get "$conf" MTU)" up
	uapi_routes "$ns" "$iface" "$conf"
	expect_alive "$iface"
}

# The routes `pipevpn up` derives from AllowedIPs, made with ip(8) for the peers of start_uapi.
uapi_routes() {
	local ns=$1 iface=$2 conf=$3 cidr gw dev endpoint
	for cidr in $(conf_get "$conf" AllowedIPs | tr ',' ' '); do
		if [[ $cidr == 0.0.0.0/0 ]]; then
			endpoint=$(conf_get "$conf" Endpoint)
			endpoint=${endpoint%:*}
			read -r gw dev < <(ip netns exec "$ns" ip -4 route show default | awk '{print $3, $5; exit}')
			in_ns "$ns" ip route add "$endpoint/32" via "$gw" dev "$dev"
			HOSTROUTE_OF[$iface]="$endpoint/32 via $gw dev $dev"
			in_ns "$ns" ip route add 0.0.0.0/1 dev "$iface"
			in_ns "$ns" ip route add 128.0.0.0/1 dev "$iface"
		else
			in_ns "$ns" ip route replace "$cidr" dev "$iface"
		fi
	done
}

start_impl() { # start_impl IMPL NS IFACE CONFIG
	case $1 in
	pipevpn) start_pipevpn "$2" "$4" "$3" ;;
	wggo) start_uapi "$2" "$3" "$4" wggo "$WGGO_BIN" -f ;;
	uapi) start_uapi "$2" "$3" "$4" uapi "${UAPI_CMD[@]}" ;;
	esac
}

# stop_impl KEY [SIGNAL]: signals the peer, waits (bounded) for it to exit and for
# its interface to go; the exit status is left in STOP_RC.
stop_impl() {
	local iface=$1 sig=${2:-TERM} pid=${PID_OF[$1]} ns=${NS_OF[$1]}
	echo "+ kill -$sig $pid  (${IMPL_OF[$iface]} on $iface)" >&2
	kill -"$sig" "$pid"
	wait_until 10 "${IMPL_OF[$iface]} ($pid) to exit after SIG$sig" eval "! alive $pid"
	STOP_RC=0
	wait "$pid" || STOP_RC=$?
	wait_until 5 "${IFACE_OF[$iface]} to disappear" eval "! iface_exists $ns ${IFACE_OF[$iface]}"
	if [[ -n ${HOSTROUTE_OF[$iface]:-} ]]; then
		# shellcheck disable=SC2086 # the recorded route is several words on purpose
		in_ns "$ns" ip route del ${HOSTROUTE_OF[$iface]}
	fi
	HOSTROUTE_OF[$iface]=""
	# GotaTun 0.10 never removes its control socket (only a stale one when it starts).
	[[ ${IMPL_OF[$iface]} != uapi ]] || rm -f "/var/run/wireguard/${IFACE_OF[$iface]}.sock"
}

# start_pair IMPL_A IMPL_B INITIATOR(a|b): starts the waiting side first.
start_pair() {
	if [[ $3 == a ]]; then
		start_impl "$2" "$NS2" "$TUN2" "$TMP/b.conf"
		start_impl "$1" "$NS1" "$TUN1" "$TMP/a.conf"
	else
		start_impl "$1" "$NS1" "$TUN1" "$TMP/a.conf"
		start_impl "$2" "$NS2" "$TUN2" "$TMP/b.conf"
	fi
}

# no_route_record IFACE: fails if the stopped peer on IFACE left its route record.
no_route_record() {
	local record="${RUN_DIR_OF[${NS_OF[$1]}]}/$1.routes"
	[[ ! -e $record ]] || fail "${IMPL_OF[$1]} on $1 left its route record $record: $(cat "$record")"
}

# stop_pair: SIGTERM to both; each must exit 0, and a pipevpn must leave no route record.
stop_pair() {
	local iface
	for iface in "$TUN1" "$TUN2"; do
		stop_impl "$iface"
		[[ $STOP_RC == 0 ]] || fail "${IMPL_OF[$iface]} on $iface exited with status $STOP_RC after SIGTERM"
		no_route_record "$iface"
	done
}

# ---- traffic checks -------------------------------------------------------------

# wait_for_handshake NS ADDR [SECONDS]: pings until one answer (the first packet makes
# the initiator start the handshake); HANDSHAKE_SECS is how long it took.
wait_for_handshake() {
	local ns=$1 addr=$2 limit=${3:-20} start=$SECONDS
	echo "+ [$ns] ping -c1 -W1 $addr   (repeated, up to ${limit}s)" >&2
	until ip netns exec "$ns" ping -c1 -W1 -q "$addr" >/dev/null 2>&1; do
		((SECONDS - start < limit)) || fail "no handshake within ${limit}s (no answer from $addr in $ns)"
	done
	HANDSHAKE_SECS=$((SECONDS - start))
	log "tunnel up after ~${HANDSHAKE_SECS}s"
}

# ping_ok NS ADDR [SIZE]: 3 echoes, all answered; SIZE 1392 fills a 1420-byte tunnel MTU.
ping_ok() {
	local size=${3:-56}
	in_ns "$1" ping -c3 -i0.2 -W2 -q -s "$size" -M "do" "$2" >&2 ||
		fail "ping $2 (payload $size, DF) from $1 lost packets"
}

# iperf_ok SERVER_NS SERVER_ADDR CLIENT_NS: 3 s of TCP from client to server.
iperf_ok() {
	local sns=$1 addr=$2 cns=$3 json="$TMP/iperf.json" pid bps
	echo "+ [$sns] iperf3 -s -1 -B $addr &" >&2
	ip netns exec "$sns" iperf3 -s -1 -B "$addr" -p 5201 >"$TMP/iperf-server.log" 2>&1 &
	pid=$!
	STARTED_PIDS+=("$pid")
	wait_until 10 "iperf3 server on $addr:5201" eval "ip netns exec $sns ss -Htln 'sport = :5201' | grep -q ."
	in_ns "$cns" timeout --foreground 30 iperf3 -c "$addr" -p 5201 -t 3 -J --connect-timeout 5000 >"$json" ||
		fail "iperf3 $cns -> $addr failed: $(python3 -c 'import json,sys; print(json.load(sys.stdin).get("error","?"))' <"$json" 2>/dev/null)"
	wait_until 10 "iperf3 server to finish" eval "! alive $pid"
	wait "$pid" || true
	bps=$(python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))' <"$json")
	log "iperf3 $cns -> $addr: $((bps / 1000000)) Mbit/s"
	((bps > 0)) || fail "iperf3 $cns -> $addr moved no data"
}

# tunnel_checks INITIATOR(a|b): handshake started by the initiator's first ping, then
# ping both ways (small and MTU-sized) and 3 s of TCP each way.
tunnel_checks() {
	if [[ $1 == a ]]; then
		wait_for_handshake "$NS1" "$INNER2"
	else
		wait_for_handshake "$NS2" "$INNER1"
	fi
	ping_ok "$NS1" "$INNER2"
	ping_ok "$NS2" "$INNER1"
	ping_ok "$NS1" "$INNER2" 1392
	ping_ok "$NS2" "$INNER1" 1392
	iperf_ok "$NS2" "$INNER2" "$NS1"
	iperf_ok "$NS1" "$INNER1" "$NS2"
}

# same_routes NS BEFORE: the routing table equals an earlier route_snapshot.
same_routes() {
	local now
	now=$(route_snapshot "$1")
	[[ $now == "$2" ]] || fail "routes in $1 differ from before the start:
$(diff <(echo "$2") <(echo "$now") | grep '^[<>]')"
}

# internet_through IFACE: with a full tunnel up in NS1, INTERNET_HOST is routed
# via IFACE, answers pings of the default size and of 1392 bytes, and IFACE's
# tx counter shows those six pings went through it.
internet_through() {
	local before after
	[[ $(n1 ip -4 route get "$INTERNET_HOST") == *"dev $1"* ]] || fail "$INTERNET_HOST is not routed via $1"
	before=$(n1 cat "/sys/class/net/$1/statistics/tx_packets")
	ping_ok "$NS1" "$INTERNET_HOST"
	ping_ok "$NS1" "$INTERNET_HOST" 1392
	after=$(n1 cat "/sys/class/net/$1/statistics/tx_packets")
	((after >= before + 6)) || fail "$1 sent $((after - before)) packets for 6 pings to $INTERNET_HOST"
}

# full_tunnel_routes_ok NS IFACE VETH ENDPOINT: the routes of a 0.0.0.0/0 peer are in
# place: the two halves via the tunnel, the endpoint via the old default gateway.
full_tunnel_routes_ok() {
	local ns=$1 iface=$2 veth=$3 endpoint=$4
	# The first answer through the tunnel may come just before the last route is in.
	wait_until 5 "route 128.0.0.0/1 dev $iface in $ns" eval "ip netns exec $ns ip -4 route show 128.0.0.0/1 | grep -q 'dev $iface'"
	in_ns "$ns" ip -4 route show >&2
	[[ $(ip netns exec "$ns" ip -4 route show 0.0.0.0/1) == *"dev $iface"* ]] || fail "no route 0.0.0.0/1 dev $iface in $ns"
	[[ $(ip netns exec "$ns" ip -4 route show 128.0.0.0/1) == *"dev $iface"* ]] || fail "no route 128.0.0.0/1 dev $iface in $ns"
	[[ $(ip netns exec "$ns" ip -4 route show "$endpoint/32") == *"via $GATEWAY1 dev $veth"* ]] ||
		fail "no host route $endpoint/32 via $GATEWAY1 dev $veth in $ns"
	[[ $(ip netns exec "$ns" ip -4 route get "$endpoint") == *"dev $veth"* ]] || fail "endpoint $endpoint is not routed via $veth in $ns"
}

# stat_value FILE STAGE FIELD: a number from FILE, what `pipevpn show --json`
# printed (fresh_stats): STAGE's packets, bytes, drops, queue, blocked or
# drop_REASON (0 if that reason dropped nothing), or with STAGE "handshake" the
# handshakes' completed or last_ms.
stat_value() {
	jq -r --arg s "$2" --arg f "$3" '
		if $s == "handshake" then .handshakes[$f]
		elif ($f | startswith("drop_")) then (.stages[$s].drops_by_reason[$f[5:]] // 0)
		else .stages[$s][$f] end' "$1"
}

# stage_line FILE STAGE: STAGE's figures from FILE, on one line, for messages.
stage_line() { jq -c --arg s "$2" '{($s): .stages[$s]}' "$1"; }

# check_stats IFACE: a pipevpn peer that has carried traffic both ways answers
# `pipevpn show --json` with every stage (its control socket's counters, read
# with the one codec of src/pipeline/stats.rs), packets through every stage but
# the handshaker, and a completed handshake. The stages are the ones it lists:
# none are listed here.
check_stats() {
	local file="$TMP/$1.stats" stage n
	fresh_stats "$1" "$file"
	log "stats of $1: $(jq -c .stages "$file")"
	for stage in $(jq -r '.stages | keys[]' "$file"); do
		# The handshaker counts handshake messages, not traffic.
		[[ $stage != handshaker ]] || continue
		n=$(stat_value "$file" "$stage" packets)
		((n > 0)) || fail "stats of $1: $stage moved no packets"
	done
	n=$(stat_value "$file" handshake completed)
	((n >= 1)) || fail "stats of $1: no completed handshake (handshake completed=$n)"
}

# ---- hostile-network helpers (hostile.sh, resilience.sh, interop_more.sh) ----------

WIRE="$REPO_ROOT/integration/wire.py"
TUN3="${PREFIX}t3" TUN4="${PREFIX}t4"

# make_attacker: ns3 joined to B by its own veth ($VETH3 10.97.0.1 on B,
# $VETH4 10.97.0.2 in ns3), so it reaches B's listening port, and nothing else.
make_attacker() {
	add_ns "$NS3"
	link_ns "$NS2" "$VETH3" "$INTERNET_GW" "$NS3" "$VETH4" "$INTERNET_HOST"
	n3 ping -c1 -W2 -q "$INTERNET_GW" >&2
}

# make_internet NET: make_attacker's ns3 as an "internet" host ($INTERNET_HOST)
# beyond B, which forwards; ns3 routes back only to NET via B. With NET the tunnel
# subnet, an answer to A proves the packets went through the tunnel: the control
# checks that A cannot reach the host without one.
make_internet() {
	make_attacker
	n2 sysctl -qw net.ipv4.ip_forward=1
	n3 ip route add "$1" via "$INTERNET_GW"
	if [[ $1 == "$INNER_NET" ]]; then
		! n1 ping -c1 -W1 -q "$INTERNET_HOST" >&2 || fail "$INTERNET_HOST answers A without a tunnel"
	fi
}

# wire ARGS...: integration/wire.py (floods, pcap extraction, crafted messages, stats).
wire() { python3 "$WIRE" "$@"; }

# start_capture NAME NS IFACE FILTER...: tcpdump into $TMP/NAME.pcap until stop_capture.
declare -A CAPTURE_PID=()
start_capture() {
	local name=$1 ns=$2 iface=$3
	shift 3
	echo "+ [$ns] tcpdump -i $iface -w $TMP/$name.pcap $* &" >&2
	env --default-signal=INT ip netns exec "$ns" tcpdump -i "$iface" -n -U -Z root -w "$TMP/$name.pcap" "$@" >"$TMP/$name.tcpdump" 2>&1 &
	CAPTURE_PID[$name]=$!
	STARTED_PIDS+=("$!")
	wait_until 10 "tcpdump ($name) to listen on $iface" grep -q "listening on" "$TMP/$name.tcpdump"
}

# stop_capture NAME: SIGINT (tcpdump writes what it has) and wait for the exit.
stop_capture() {
	local pid=${CAPTURE_PID[$1]}
	# Packets sent just before may still be on their way through the stack.
	sleep 0.3
	kill -INT "$pid"
	wait_until 10 "tcpdump ($1) to exit" eval "! alive $pid"
	wait "$pid" || true
	log "capture $1: $(grep -E 'captured|dropped by kernel' "$TMP/$1.tcpdump" | tr '\n' ' ')"
}

# start_ping NAME NS ADDR INTERVAL: a timestamped ping (-D) in the background,
# into $TMP/NAME.ping, until stop_ping NAME.
declare -A PING_PID=()
start_ping() {
	echo "+ [$2] ping -D -i $4 $3 > $1.ping &" >&2
	env --default-signal=INT ip netns exec "$2" ping -D -n -i "$4" -W 1 "$3" >"$TMP/$1.ping" 2>&1 &
	PING_PID[$1]=$!
	STARTED_PIDS+=("$!")
}

# stop_ping NAME: SIGINT, then PING_SENT and PING_RECEIVED from ping's summary.
stop_ping() {
	local pid=${PING_PID[$1]} summary
	kill -INT "$pid"
	wait_until 10 "ping ($1) to exit" eval "! alive $pid"
	wait "$pid" || true
	summary=$(grep -E 'packets transmitted' "$TMP/$1.ping" || true)
	[[ $summary =~ ([0-9]+)\ packets\ transmitted,\ ([0-9]+)\ received ]] ||
		fail "ping ($1) printed no summary: $(tail -n 3 "$TMP/$1.ping" | tr '\n' ' ')"
	PING_SENT=${BASH_REMATCH[1]} PING_RECEIVED=${BASH_REMATCH[2]}
	log "ping $1: $summary"
}

# first_reply_after NAME T: seconds from T (epoch, fractional) to the first answer
# ping NAME got after T; empty if none.
first_reply_after() {
	awk -v t="$2" -F'[][]' '/bytes from/ && $2 + 0 > t + 0 { printf "%.2f\n", $2 - t; exit }' "$TMP/$1.ping"
}

now_epoch() { date +%s.%N; }

# fresh_stats KEY OUT: the counters of the pipevpn peer KEY (started by
# start_pipevpn) now, as `pipevpn show IFACE --json` in its namespace prints them
# from its control socket, into OUT: every counter change made before the call.
fresh_stats() {
	ip netns exec "${NS_OF[$1]}" "$PIPEVPN" show "${IFACE_OF[$1]}" --json >"$2" 2>"$2.err" ||
		fail "pipevpn show ${IFACE_OF[$1]} --json in ${NS_OF[$1]}: $(cat "$2.err")"
	jq -e .stages "$2" >/dev/null || fail "pipevpn show ${IFACE_OF[$1]} --json has no stages: $(cat "$2")"
}

# json_get JSON KEY: a top-level value of a JSON object, 0 when absent.
json_get() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get(sys.argv[2], 0))' "$1" "$2"; }

# udp_counter NS FIELD: a Udp counter of the namespace (/proc/net/snmp), e.g. InDatagrams.
udp_counter() {
	# shellcheck disable=SC2016 # awk's own $fields
	ip netns exec "$1" awk -v f="$2" '$1 == "Udp:" { if (!c) { for (i = 2; i <= NF; i++) if ($i == f) c = i } else { print $c; exit } }' /proc/net/snmp
}

# set_conf FILE KEY VALUE: replaces (or adds to [Interface]) one `KEY = value` line.
set_conf() {
	if grep -qiE "^[[:space:]]*$2[[:space:]]*=" "$1"; then
		sed -i -E "s|^[[:space:]]*$2[[:space:]]*=.*|$2 = $3|I" "$1"
	else
		sed -i -E "s|^\[Interface\]$|[Interface]\n$2 = $3|" "$1"
	fi
}

# iperf_start NAME SECONDS [RATE [b2a]]: TCP from A to B's tunnel address (b2a: from
# B to A's, on port 5202, so both directions can run at once) for SECONDS, with
# one-second intervals, in the background (JSON in $TMP/NAME.json), at most RATE
# (e.g. 100M) if given and not empty; iperf_wait NAME. RATE is the kernel's pacing
# rate for the socket (--fq-rate), not iperf3's -b: -b writes 128 KiB blocks on a
# timer, and each block leaves as one burst of about 90 datagrams, enough to fill a
# 208 KiB UDP receive buffer at a slow peer whatever the average rate.
declare -A IPERF_PID=()
iperf_start() {
	if [[ ${4:-a2b} == a2b ]]; then
		iperf_between "$1" "$2" "$NS2" "$INNER2" "$NS1" 5201 "${3:-}"
	else
		iperf_between "$1" "$2" "$NS1" "$INNER1" "$NS2" 5202 "${3:-}"
	fi
}

# iperf_between NAME SECONDS SERVER_NS SERVER_ADDR CLIENT_NS PORT [RATE]: what
# iperf_start does, between any two namespaces; iperf_wait NAME.
iperf_between() {
	local sns=$3 saddr=$4 cns=$5 port=$6 rate=${7:-}
	ip netns exec "$sns" iperf3 -s -1 -B "$saddr" -p "$port" >"$TMP/$1.server" 2>&1 &
	STARTED_PIDS+=("$!")
	wait_until 10 "iperf3 server on $saddr:$port" eval "ip netns exec $sns ss -Htln 'sport = :$port' | grep -q ."
	echo "+ [$cns] iperf3 -c $saddr -p $port -t $2 -i 1 -J ${rate:+--fq-rate $rate} > $1.json &" >&2
	ip netns exec "$cns" timeout --foreground $(($2 + 30)) iperf3 -c "$saddr" -p "$port" -t "$2" -i 1 -J --connect-timeout 5000 ${rate:+--fq-rate "$rate"} >"$TMP/$1.json" 2>&1 &
	IPERF_PID[$1]=$!
	STARTED_PIDS+=("$!")
}

# iperf_wait NAME: waits for the client; then IPERF_MBPS, IPERF_RETRANS, IPERF_WORST
# and IPERF_MEDIAN (Mbit/s of the slowest and the median second), IPERF_ZERO
# (seconds without data), IPERF_BYTES (received in all), IPERF_SECONDS (Mbit/s of
# each second, space-separated), IPERF_RETRANS_SECONDS (retransmits in each second,
# comma-separated).
iperf_wait() {
	local pid=${IPERF_PID[$1]} rc=0
	wait_until 90 "iperf3 ($1) to finish" eval "! alive $pid"
	wait "$pid" || rc=$?
	((rc == 0)) || fail "iperf3 ($1) failed: $(python3 -c 'import json,sys; print(json.load(sys.stdin).get("error","?"))' <"$TMP/$1.json" 2>/dev/null)"
	read -r IPERF_MBPS IPERF_RETRANS IPERF_WORST IPERF_MEDIAN IPERF_ZERO IPERF_BYTES IPERF_RETRANS_SECONDS IPERF_SECONDS < <(python3 -c '
import json, statistics, sys
d = json.load(sys.stdin)
whole = [i["sum"] for i in d["intervals"] if i["sum"]["seconds"] > 0.5]
bps = [s["bits_per_second"] / 1e6 for s in whole]
print(int(d["end"]["sum_received"]["bits_per_second"] / 1e6), d["end"]["sum_sent"].get("retransmits", 0),
      int(min(bps)), int(statistics.median(bps)), sum(1 for b in bps if b == 0), d["end"]["sum_received"]["bytes"],
      ",".join(str(s.get("retransmits", 0)) for s in whole), " ".join(str(int(b)) for b in bps))' <"$TMP/$1.json")
}

# roam_a ADDRESS [OLD]: A's underlay address becomes ADDRESS (added, made the source
# of its routes, then the old one removed), as when a laptop changes networks. OLD
# is an address an earlier roam_a gave A; without it, A's first address.
roam_a() {
	n1 ip addr add "$1/32" dev "$VETH1"
	n1 ip route replace "$GATEWAY1" dev "$VETH1" scope link src "$1"
	n1 ip route replace default via "$GATEWAY1" dev "$VETH1" src "$1"
	if [[ -n ${2:-} ]]; then
		n1 ip addr del "$2/32" dev "$VETH1"
	else
		n1 ip addr del "$UNDER1/32" peer "$GATEWAY1/32" dev "$VETH1"
	fi
}

# restart_peer IFACE CONF DOWN PING [LIMIT [SIGNAL]]: stops a peer with SIGNAL (TERM;
# KILL for a crash), starts it again with the same config after DOWN seconds, and
# fails unless the running ping PING (see start_ping) is answered again within LIMIT
# (10) seconds of the peer being back; RECOVERY_SECS.
restart_peer() {
	local iface=$1 conf=$2 down=$3 ping=$4 limit=${5:-10} sig=${6:-TERM} ns=${NS_OF[$1]} impl=${IMPL_OF[$1]} back want=0
	cp "${LOG_OF[$iface]}" "${LOG_OF[$iface]}.before-restart"
	stop_impl "$iface" "$sig"
	[[ $sig == KILL ]] && want=137
	[[ $STOP_RC == "$want" ]] || fail "$impl on $iface: exit status $STOP_RC after SIG$sig, expected $want"
	sleep "$down"
	start_impl "$impl" "$ns" "$iface" "$conf"
	back=$(now_epoch)
	wait_until 30 "an answer to ping $ping after $iface came back" eval "[[ -n \$(first_reply_after $ping $back) ]]"
	RECOVERY_SECS=$(first_reply_after "$ping" "$back")
	info "$impl on $iface down ${down}s after SIG$sig: ping answered again ${RECOVERY_SECS}s after it came back"
	python3 -c "import sys; sys.exit(0 if $RECOVERY_SECS <= $limit else 1)" ||
		fail "traffic resumed only ${RECOVERY_SECS}s after $iface came back (limit $limit s)"
}

# ---- benchmarks (bench.sh, bench_hub.sh) ----------------------------------------

# bench_args DEFAULT_IMPLS ARGS...: a benchmark's command line: --quick (1
# repetition of 3 s runs instead of 2 of 10 s; REPS and SECS override either),
# --impls LIST (else DEFAULT_IMPLS), --help (the script's header). Sets QUICK,
# IMPLS, REPS and SECS.
bench_args() {
	IMPLS=$1 QUICK=0
	shift
	while (($#)); do
		case $1 in
		--quick) QUICK=1 ;;
		--impls)
			IMPLS=${2:?--impls needs a list}
			shift
			;;
		-h | --help)
			sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
			exit 0
			;;
		*)
			echo "${0##*/}: unknown argument '$1' (see --help)" >&2
			exit 2
			;;
		esac
		shift
	done
	if ((QUICK)); then
		REPS=${REPS:-1} SECS=${SECS:-3}
	else
		REPS=${REPS:-2} SECS=${SECS:-10}
	fi
	# What the peers read from the environment (boringtun's and GotaTun's
	# threads, log level and inherited descriptors, wireguard-go's log level
	# and descriptors) would change what is measured, unseen in the table.
	unset WG_THREADS WG_LOG_LEVEL WG_LOG_FILE WG_UAPI_FD WG_TUN_FD WG_SUDO \
		WG_PROCESS_FOREGROUND LOG_LEVEL
}

# bench_order REP: the implementations (IMPL_LIST) in the order repetition REP
# runs them, in ORDER. Every other repetition runs the list backwards: in two
# runs of two pipevpn builds, whichever ran first came out 5 and 12 % slower on
# TCP A→B, so the place in the order counts; with an even REPS each
# implementation has each place.
bench_order() {
	local k n=${#IMPL_LIST[@]}
	ORDER=("${IMPL_LIST[@]}")
	if (($1 % 2 == 0)); then
		for ((k = 0; k < n; k++)); do
			ORDER[k]=${IMPL_LIST[n - 1 - k]}
		done
	fi
}

# need_bin VAR NAME CMD...: the benchmark's binary VAR (a variable name), from
# CMD's output when VAR is empty (a fetch script that prints the path); fails
# naming NAME when it is not an executable.
need_bin() {
	local -n bin=$1
	[[ -n ${bin:-} ]] || bin=$("${@:3}")
	[[ -x $bin ]] || fail "no $2 binary at $bin"
}

# bench_machine LINE...: what a benchmark ran on (date, commit, kernel, CPUs,
# memory, load, pipevpn, wireguard-go, iperf3), then the script's own LINEs,
# into $OUT/machine.txt and onto stderr.
bench_machine() {
	mkdir -p "$OUT"
	{
		echo "date: $(date -Is)"
		echo "commit: $(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
		echo "kernel: $(uname -r)"
		echo "cpus: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
		echo "memory: $(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
		echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "pipevpn: $PIPEVPN"
		echo "wireguard-go: $(wireguard-go --version 2>&1 | head -n1)"
		echo "wireguard-go (new): ${WGGO_NEW:+$("$WGGO_NEW" --version 2>&1 | head -n1)}"
		echo "iperf3: $(iperf3 --version | head -n1)"
		printf '%s\n' "$@"
	} >"$OUT/machine.txt"
	cat "$OUT/machine.txt" >&2
}

# record IMPL REP METRIC VALUE: one figure into $OUT/results.tsv; a failed
# measurement is "nan", counted in FAILED.
FAILED=0
record() {
	printf '%s\t%s\t%s\t%s\n' "$@" >>"$OUT/results.tsv"
	log "$1 rep $2: $3 = $4"
	[[ $4 != nan ]] || FAILED=$((FAILED + 1))
}

# json FILE JQ-EXPR: a number from a JSON result (iperf3's, the prober's),
# "nan" when absent.
json() { jq -r "($2) // \"nan\"" "$1" 2>/dev/null || echo nan; }

# tunnels_alive: fails if a process of TUNNEL_PIDS has exited: a tunnel that
# died mid-run would make every later number meaningless.
TUNNEL_PIDS=()
tunnels_alive() {
	local pid
	for pid in "${TUNNEL_PIDS[@]}"; do
		alive "$pid" || fail "tunnel process $pid exited during the run: $(tail -n 5 "$TMP"/*.log)"
	done
}

# cpu_ticks PID...: the sum of utime+stime (clock ticks) of the processes.
# Fields are counted after the ")" closing the command name.
cpu_ticks() {
	local pid total=0 t
	for pid in "$@"; do
		t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
		total=$((total + t))
	done
	echo "$total"
}

# ---- cleanup --------------------------------------------------------------------

cleanup() {
	local rc=$? pid ns deadline hook leaks=()
	set +eE
	trap - ERR
	exec 1>&3 2>&4
	if [[ -n $CURRENT_SCENARIO ]]; then
		echo "FAIL $CURRENT_SCENARIO: ${FIRST_ERROR:-script exited with status $rc}"
		((rc != 0)) || rc=1
	fi
	for hook in "${CLEANUP_HOOKS[@]}"; do "$hook"; done
	for pid in "${STARTED_PIDS[@]}"; do alive "$pid" && kill -TERM "$pid"; done
	for pid in "${!DAEMON_OF[@]}"; do daemon_alive "$pid" && kill -TERM "$pid"; done
	deadline=$((SECONDS + 5))
	for pid in "${STARTED_PIDS[@]}"; do
		while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
		alive "$pid" && kill -KILL "$pid"
		wait "$pid" 2>/dev/null
	done
	for pid in "${!DAEMON_OF[@]}"; do
		while daemon_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
		daemon_alive "$pid" && kill -KILL "$pid"
	done
	if ((rc != 0)); then
		for f in "$TMP"/*.log; do
			[[ -f $f ]] && { echo "---- last lines of $f"; tail -n 25 "$f"; } >&2
		done
	fi
	for ns in "${CREATED_NS[@]}"; do
		ip netns del "$ns"
		rm -rf "${RUN_DIR_OF[$ns]}"
	done
	rm -rf "$TMP"
	# Nothing of ours may be left: namespaces, processes, interfaces, sockets, files.
	for ns in "${CREATED_NS[@]}"; do
		[[ -e /run/netns/$ns ]] && leaks+=("netns $ns")
		[[ -e ${RUN_DIR_OF[$ns]} ]] && leaks+=("${RUN_DIR_OF[$ns]}")
	done
	for pid in "${STARTED_PIDS[@]}"; do alive "$pid" && leaks+=("pid $pid"); done
	for pid in "${!DAEMON_OF[@]}"; do daemon_alive "$pid" && leaks+=("daemon pid $pid"); done
	ip -o link show | grep -q "$PREFIX" && leaks+=("interface $PREFIX* in the root namespace")
	compgen -G "/var/run/wireguard/$PREFIX*" >/dev/null && leaks+=("wireguard-go socket /var/run/wireguard/$PREFIX*")
	[[ -e $TMP ]] && leaks+=("$TMP")
	if ((${#leaks[@]})); then
		echo "FAIL cleanup: left behind: ${leaks[*]}"
		rc=1
	fi
	exit "$rc"
}
trap cleanup EXIT

# each_initiator NAME CHECK: two scenarios, NAME-a-initiates and then
# NAME-b-initiates (the second with a preshared key), each starting the pair
# with that side initiating, running tunnel_checks and then the function CHECK,
# and stopping the pair.
each_initiator() {
	local name=$1 check=$2 initiator psk
	for initiator in a b; do
		psk=no
		[[ $initiator == a ]] || psk=yes
		scenario "$name-$initiator-initiates"
		setup_pair "$initiator" "$psk"
		start_pair "$IMPL_A" "$IMPL_B" "$initiator"
		tunnel_checks "$initiator"
		"$check"
		stop_pair
		pass
	done
}
