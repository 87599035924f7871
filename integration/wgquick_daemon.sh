#!/usr/bin/env bash
# The real wg-quick with pipevpnd as its userspace implementation
# (WG_QUICK_USERSPACE_IMPLEMENTATION=pipevpnd, as it would run wireguard-go), on A (ns1);
# B (ns2) runs `pipevpn up` and routes on to an "internet" host in ns3, reachable from A
# only through the tunnel.
# - wg-quick falls back to a userspace implementation only when `ip link add IFACE type
#   wireguard` fails and /sys/module/wireguard does not exist (wg-quick's add_if). The
#   machine may well have the kernel module, so wg-quick runs in a mount namespace of its
#   own with a tmpfs over /sys/module, and with an `ip` first in PATH that refuses exactly
#   `ip link add ... type wireguard` and runs the real ip for everything else. wg-quick
#   puts its own directory first in PATH, so it runs as a copy beside that `ip`.
# - split tunnel: a config with Address, ListenPort, PrivateKey, MTU = 1280, PostUp and
#   PreDown hooks that append to a file, a peer with B's tunnel address: pings flow (up to
#   the 1280-byte MTU, DF), `wg show` shows the peer with a handshake, the daemon listens
#   on ListenPort (B sees A there), the interface has wg-quick's MTU, PostUp ran;
#   `wg-quick down`: PreDown ran, the interface and the control socket are gone, the
#   pipevpnd process (its PID read from the socket, SO_PEERCRED) has exited, and routes,
#   rules and nft tables are as before;
# - full tunnel: AllowedIPs = 0.0.0.0/0, ::/0, which wg-quick makes with `wg set fwmark`,
#   policy rules, a routing table and nft tables: pings reach B's tunnel address and the
#   internet host, routed through the tunnel; after `down` every routing table, the rules
#   (IPv4 and IPv6) and `nft list ruleset` are exactly as before, no process is left;
# - pipevpnd itself: a bad name, a user who is not root and a second pipevpnd for a name in
#   use, in this namespace or another (whose daemon wg-quick's `wg setconf` would reach),
#   are refused with a clear message and status 1, leaving nothing behind and the first
#   daemon serving; the background daemon ends when its socket is deleted; `pipevpnd -f`
#   ends cleanly (status 0, interface and socket gone) on SIGTERM and on the socket's
#   deletion.
# DNS = is left out: wg-quick sets it through resolvconf, which would change this
# machine's resolver.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn pipevpnd wgquick

WQ="${PREFIX}q" # A's interface, named by its config file as wg-quick wants
CONF="$TMP/$WQ.conf"
SOCK="/var/run/wireguard/$WQ.sock"
HOOKS="$TMP/hooks"

scenario topology
make_topology
make_internet "$INNER_NET"
mkdir "$TMP/shim"
cat >"$TMP/shim/ip" <<SHIM
#!/bin/bash
# Refuses only the kernel's WireGuard, so that wg-quick starts its userspace one.
if [[ \$1 == link && \$2 == add && " \$* " == *" type wireguard "* ]]; then
	echo "ip (test shim): no kernel WireGuard here" >&2
	exit 2
fi
exec $(command -v ip) "\$@"
SHIM
chmod 755 "$TMP/shim/ip"
cp "$(command -v wg-quick)" "$TMP/shim/wg-quick"
setup_pair a no
start_pipevpn "$NS2" "$TMP/b.conf" "$TUN2"
pass

# wg_quick up|down: wg-quick on $CONF in A's namespace, through the shim (see the top).
wg_quick() {
	in_ns "$NS1" env PATH="$TMP/shim:$PATH" WG_QUICK_USERSPACE_IMPLEMENTATION="$PIPEVPND" \
		unshare -m sh -c 'mount -t tmpfs none /sys/module && exec "$0" "$@"' "$TMP/shim/wg-quick" "$1" "$CONF" >&2 ||
		fail "wg-quick $1 $CONF failed (status $?)"
}

# a_conf ALLOWED_IPS LINES...: A's config for wg-quick, LINES added to [Interface].
a_conf() {
	local allowed=$1
	shift
	{
		echo "[Interface]"
		echo "PrivateKey = ${PRIV[a]}"
		echo "Address = $INNER1/24"
		echo "ListenPort = $((PORT + 1))"
		printf '%s\n' "$@"
		echo
		echo "[Peer]"
		echo "PublicKey = ${PUB[b]}"
		echo "AllowedIPs = $allowed"
		echo "Endpoint = $UNDER2:$PORT"
	} >"$CONF"
	chmod 600 "$CONF"
}

# net_state: A's routing tables, rules and nft ruleset, all of them.
net_state() {
	ip netns exec "$NS1" sh -c 'ip -4 route show table all; ip -6 route show table all;
		ip -4 rule show; ip -6 rule show; nft list ruleset'
}

# socket_pid PATH: the process serving the unix socket PATH (SO_PEERCRED).
socket_pid() {
	python3 -c 'import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
print(struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])' "$1"
}

# daemon_of_socket: the PID of the pipevpnd serving $SOCK, tracked for the cleanup.
daemon_of_socket() {
	local pid
	pid=$(socket_pid "$SOCK") || fail "no one serves $SOCK"
	track_daemon "$pid" "$WQ"
	[[ $(tr '\0' ' ' <"/proc/$pid/cmdline") == "$PIPEVPND "*" $WQ " ]] ||
		fail "$SOCK is served by pid $pid, which is not pipevpnd: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
	DAEMON_PID=$pid
}

# gone_after_down BEFORE: the daemon has exited, the interface and the socket are gone,
# and A's routes, rules and nft tables are BEFORE.
gone_after_down() {
	wait_until 10 "pipevpnd ($DAEMON_PID) to exit" eval "! daemon_alive $DAEMON_PID"
	! iface_exists "$NS1" "$WQ" >&2 || fail "$WQ is still there after wg-quick down"
	[[ ! -e $SOCK ]] || fail "$SOCK is still there after wg-quick down"
	local now
	now=$(net_state)
	[[ $now == "$1" ]] || fail "A's routes, rules or nft ruleset differ from before wg-quick up:
$(diff <(echo "$1") <(echo "$now") | grep '^[<>]')"
}

scenario wg-quick-split-tunnel
a_conf "$INNER2/32" "MTU = 1280" "PostUp = echo '%i PostUp' >> $HOOKS" "PreDown = echo '%i PreDown' >> $HOOKS"
before=$(net_state)
wg_quick up
daemon_of_socket
wait_for_handshake "$NS1" "$INNER2"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
# 1252 bytes of payload fill wg-quick's MTU of 1280.
ping_ok "$NS1" "$INNER2" 1252
ping_ok "$NS2" "$INNER1" 1252
[[ $(n1 cat "/sys/class/net/$WQ/mtu") == 1280 ]] || fail "$WQ does not have wg-quick's MTU 1280"
show=$(n1 wg show "$WQ")
log "$show"
[[ $show == *"peer: ${PUB[b]}"* && $show == *"latest handshake: "* ]] ||
	fail "wg show $WQ does not show peer B with a handshake"
# wg setconf moved the daemon from the port the kernel picked to ListenPort.
[[ $(n1 wg show "$WQ" listen-port) == $((PORT + 1)) ]] || fail "$WQ does not listen on ListenPort $((PORT + 1))"
[[ $(n2 wg show "$TUN2" endpoints) == *"$UNDER1:$((PORT + 1))"* ]] || fail "B does not see A at port $((PORT + 1))"
[[ $(cat "$HOOKS") == "$WQ PostUp" ]] || fail "hooks after up: $(cat "$HOOKS")"
wg_quick down
[[ $(cat "$HOOKS") == "$WQ PostUp"$'\n'"$WQ PreDown" ]] || fail "hooks after down: $(cat "$HOOKS")"
gone_after_down "$before"
pass

scenario wg-quick-full-tunnel
a_conf "0.0.0.0/0, ::/0"
before=$(net_state)
wg_quick up
daemon_of_socket
# wg-quick's policy routing: the daemon's own packets carry its fwmark and bypass it.
[[ $(n1 wg show "$WQ" fwmark) != off ]] || fail "wg-quick set no fwmark on $WQ"
wait_for_handshake "$NS1" "$INNER2"
ping_ok "$NS1" "$INNER2"
internet_through "$WQ"
[[ -n $(n1 nft list ruleset) ]] || fail "wg-quick made no nft tables (the check after down would prove nothing)"
wg_quick down
gone_after_down "$before"
pass

# run_a CMD...: CMD in A's namespace, its status in RC, its output (both
# streams) in OUT, and logged.
run_a() {
	RC=0
	OUT=$(n1 "$@" 2>&1) || RC=$?
	log "$OUT"
}

scenario pipevpnd-refusals
# A's run directory (the daemons' logs) as it was: a refusal adds nothing there.
run_dir_before=$(ls -l "${RUN_DIR_OF[$NS1]}" 2>&1 || true)
for bad in "a/b" "sixteen-chars-xy"; do
	run_a "$PIPEVPND" "$bad"
	[[ $RC == 1 && $OUT == *"'$bad'"* ]] || fail "pipevpnd '$bad': status $RC, output: $OUT"
done
run_a setpriv --reuid=65534 --regid=65534 --clear-groups "$PIPEVPND" "$WQ"
[[ $RC == 1 && $OUT == *"must run as root"* ]] || fail "pipevpnd as nobody: status $RC, output: $OUT"
# Nothing was made: no interface, no socket, no log.
! iface_exists "$NS1" "$WQ" >&2 || fail "a refused pipevpnd left $WQ"
[[ ! -e $SOCK ]] || fail "a refused pipevpnd left $SOCK"
[[ $(ls -l "${RUN_DIR_OF[$NS1]}" 2>&1 || true) == "$run_dir_before" ]] ||
	fail "a refused pipevpnd changed ${RUN_DIR_OF[$NS1]}: $(ls -l "${RUN_DIR_OF[$NS1]}")"
pass

# first_serves WHO: $SOCK is still served by WHO, the pipevpnd $first.
first_serves() {
	daemon_alive "$first" || fail "$1 ($first) died"
	[[ $(socket_pid "$SOCK") == "$first" ]] || fail "$SOCK is no longer $1's"
}
# first_ends WHO: the background pipevpnd $first (WHO) ends once $SOCK is
# deleted (wireguard-go's way out).
first_ends() {
	rm "$SOCK"
	wait_until 10 "$1 ($first) to exit once $SOCK is deleted" eval "! daemon_alive $first"
}

scenario pipevpnd-second-on-a-name-in-use
n1 "$PIPEVPND" "$WQ" >&2
# It returned: its control socket serves already.
n1 wg show "$WQ" >&2 || fail "wg show $WQ fails right after pipevpnd returned"
daemon_of_socket
first=$DAEMON_PID
run_a "$PIPEVPND" "$WQ"
[[ $RC == 1 && $OUT == *"interface $WQ is in use: pid $first serves its control socket $SOCK"* ]] ||
	fail "a second pipevpnd $WQ: status $RC, output: $OUT"
first_serves "the first pipevpnd"
n1 wg set "$WQ" private-key <(echo "${PRIV[a]}") || fail "the first pipevpnd no longer takes a set"
[[ $(n1 wg show "$WQ" public-key) == "${PUB[a]}" ]] || fail "the first pipevpnd lost its set"
first_ends "pipevpnd"
wait_until 5 "$WQ to disappear" eval "! iface_exists $NS1 $WQ"
pass

scenario pipevpnd-name-taken-in-another-namespace
# wg and wg-quick reach any namespace's daemon through the one path: a second
# pipevpnd of the name would have its `wg setconf` configure the first.
n2 "$PIPEVPND" "$WQ" >&2
daemon_of_socket
first=$DAEMON_PID
run_a "$PIPEVPND" "$WQ"
[[ $RC == 1 && $OUT == *"$SOCK is taken by pid $first (an interface $WQ in another network namespace)"* ]] ||
	fail "pipevpnd $WQ in A's namespace beside B's: status $RC, output: $OUT"
! iface_exists "$NS1" "$WQ" >&2 || fail "the refused pipevpnd left $WQ in A's namespace"
first_serves "B's pipevpnd"
iface_exists "$NS2" "$WQ" >&2 || fail "B's interface $WQ is gone"
first_ends "B's pipevpnd"
pass

# start_foreground KEY: `pipevpnd -f $WQ` in A's namespace as a job, tracked as KEY.
start_foreground() {
	local log="$TMP/$1.log"
	echo "+ [$NS1] $PIPEVPND -f $WQ &" >&2
	env --default-signal=INT,QUIT ip netns exec "$NS1" "$PIPEVPND" -f "$WQ" >"$log" 2>&1 &
	track $! "$1" "$NS1" pipevpnd "$log" "$WQ"
	wait_until 10 "pipevpnd -f to serve $SOCK" eval "[[ -S $SOCK ]] && n1 wg show $WQ || ! alive ${PID_OF[$1]}"
	expect_alive "$1"
}

scenario pipevpnd-foreground-sigterm
start_foreground fg-term
stop_impl fg-term
[[ $STOP_RC == 0 ]] || fail "pipevpnd -f exited with status $STOP_RC after SIGTERM"
[[ ! -e $SOCK ]] || fail "pipevpnd -f left $SOCK after SIGTERM"
pass

scenario pipevpnd-foreground-socket-deleted
start_foreground fg-rm
rm "$SOCK"
wait_until 10 "pipevpnd -f to exit once $SOCK is deleted" eval "! alive ${PID_OF[fg-rm]}"
rc=0
wait "${PID_OF[fg-rm]}" || rc=$?
[[ $rc == 0 ]] || fail "pipevpnd -f exited with status $rc after its socket was deleted"
wait_until 5 "$WQ to disappear" eval "! iface_exists $NS1 $WQ"
grep -q "$SOCK was deleted: shutting down" "${LOG_OF[fg-rm]}" || fail "pipevpnd -f did not say why it stopped"
pass
