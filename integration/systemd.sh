#!/usr/bin/env bash
# The systemd notifications (src/notify.rs) through a stand-in for systemd's
# NOTIFY_SOCKET (integration/notify_socket.py, a unix datagram socket under this
# run's temporary directory):
# - `pipevpn up` sends READY=1, and at that moment its interface is up with its
#   address, its route and control socket exist, and its PostUp hook has run;
# - with WATCHDOG_USEC=2 s, WATCHDOG=1 comes at least twice in 3 intervals;
# - kill -HUP: RELOADING=1 (with MONOTONIC_USEC) and then READY=1 again;
# - SIGTERM: STOPPING=1, and a clean exit;
# - `pipevpnd -f` sends READY=1 once `wg show` answers, then the watchdog's
#   pings, and STOPPING=1 on SIGTERM;
# - `up` in a copy of the unit's sandbox, made from packaging/systemd/pipevpn@.service
#   (systemd is not needed, nor started): the system read-only (/etc /usr /var
#   /run) but for the unit's RuntimeDirectory= and ReadWritePaths=, /proc/sys
#   read-only (ProtectKernelTunables=), the bounding set and no_new_privs: READY=1
#   with everything up, a reload, pings, STOPPING=1 and exit 0. /tmp stays
#   writable, as the unit's private one is.
# The peer B runs without NOTIFY_SOCKET, as outside systemd.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn
WATCHDOG_SECS=2
NOTIFY_PY="$REPO_ROOT/integration/notify_socket.py"
UNIT="$REPO_ROOT/packaging/systemd/pipevpn@.service"

# listen NAME CHECK: a fresh notification socket $TMP/NAME.sock, its messages in
# $TMP/NAME.notify, CHECK run when READY=1 first comes.
listen() {
	local sock="$TMP/$1.sock" log="$TMP/$1.notify"
	: >"$log"
	echo "+ $NOTIFY_PY $sock $log '$2' &" >&2
	python3 "$NOTIFY_PY" "$sock" "$log" "$2" 2>"$TMP/$1.listener.log" &
	track $! "notify-$1" - python3 "$TMP/$1.listener.log"
	wait_until 5 "the notification socket $sock" test -S "$sock"
}
# listen_up NAME: listen NAME with the check that A's `up` has done everything
# by READY=1: its interface up with its address, the route to B through it, its
# control socket, and its PostUp hook run.
listen_up() {
	listen "$1" "ip -n $NS1 link show dev $TUN1 up | grep -q $TUN1 &&
	ip -n $NS1 addr show dev $TUN1 | grep -q 'inet $INNER1/24' &&
	ip -n $NS1 route show $INNER2 | grep -q 'dev $TUN1' &&
	test -S /var/run/wireguard/$TUN1.sock && test -e $TMP/postup.done"
}
# count NAME PATTERN: how many messages in NAME's log match PATTERN.
count() { grep -cE "$2" "$TMP/$1.notify" || true; }
# ready_check NAME: the CHECK run at READY=1 passed.
ready_check() {
	wait_until 5 "the check at READY=1" test -s "$TMP/$1.notify.ready"
	[[ $(head -n1 "$TMP/$1.notify.ready") == 0 ]] ||
		fail "at READY=1 the check failed: $(tail -n +2 "$TMP/$1.notify.ready" | tr '\n' ' ')"
}
# watchdog_ok NAME: at least 2 pings within 3 intervals from now.
watchdog_ok() {
	local before
	before=$(count "$1" '^WATCHDOG=1$')
	sleep $((3 * WATCHDOG_SECS))
	local pings=$(($(count "$1" '^WATCHDOG=1$') - before))
	((pings >= 2)) || fail "$pings WATCHDOG=1 in $((3 * WATCHDOG_SECS)) s with WATCHDOG_USEC=${WATCHDOG_SECS}000000"
	info "$1: $pings WATCHDOG=1 in $((3 * WATCHDOG_SECS)) s (WatchdogSec=${WATCHDOG_SECS}s)"
}

scenario topology
make_topology
setup_pair a no
sed -i "/^MTU/a PostUp = touch $TMP/postup.done" "$TMP/a.conf"
pass

scenario up-sends-ready-once-everything-is-up
listen_up up
start_pipevpn "$NS2" "$TMP/b.conf" "$TUN2"
NOTIFY_SOCKET="$TMP/up.sock" WATCHDOG_USEC="${WATCHDOG_SECS}000000" \
	start_pipevpn "$NS1" "$TMP/a.conf" "$TUN1"
wait_until 5 "READY=1 from up" eval "(( \$(count up '^READY=1\$') == 1 ))"
ready_check up
wait_for_handshake "$NS1" "$INNER2"
pass

scenario up-pings-the-watchdog
watchdog_ok up
pass

scenario sighup-is-reloading-then-ready
echo "+ kill -HUP ${PID_OF[$TUN1]}" >&2
kill -HUP "${PID_OF[$TUN1]}"
wait_until 5 "READY=1 after the reload" eval "(( \$(count up '^READY=1\$') == 2 ))"
seq=$(grep -v '^WATCHDOG=1$' "$TMP/up.notify" | tr '\n' '|')
order='^READY=1[|]RELOADING=1 MONOTONIC_USEC=[0-9]+[|]READY=1[|]$'
[[ $seq =~ $order ]] || fail "not READY, RELOADING with MONOTONIC_USEC, READY, but: $seq"
ping_ok "$NS1" "$INNER2"
pass

scenario sigterm-is-stopping
stop_impl "$TUN1"
[[ $STOP_RC == 0 ]] || fail "up exited with status $STOP_RC after SIGTERM"
[[ $(tail -n1 "$TMP/up.notify") == STOPPING=1 ]] ||
	fail "the last message was not STOPPING=1: $(tail -n3 "$TMP/up.notify" | tr '\n' ' ')"
stop_impl "$TUN2"
pass

scenario pipevpnd-sends-ready-once-wg-show-answers
listen daemon "ip netns exec $NS1 wg show $TUN1 >/dev/null"
log="$TMP/pipevpnd.log"
echo "+ [$NS1] NOTIFY_SOCKET=$TMP/daemon.sock $PIPEVPND -f $TUN1 &" >&2
NOTIFY_SOCKET="$TMP/daemon.sock" WATCHDOG_USEC="${WATCHDOG_SECS}000000" \
	env --default-signal=INT,QUIT ip netns exec "$NS1" "$PIPEVPND" -f "$TUN1" >"$log" 2>&1 &
track $! "$TUN1" "$NS1" pipevpnd "$log"
wait_until 10 "READY=1 from pipevpnd" eval "(( \$(count daemon '^READY=1\$') == 1 )) || ! alive ${PID_OF[$TUN1]}"
expect_alive "$TUN1"
ready_check daemon
watchdog_ok daemon
stop_impl "$TUN1"
[[ $STOP_RC == 0 ]] || fail "pipevpnd exited with status $STOP_RC after SIGTERM"
[[ $(tail -n1 "$TMP/daemon.notify") == STOPPING=1 ]] ||
	fail "the last message was not STOPPING=1: $(tail -n3 "$TMP/daemon.notify" | tr '\n' ' ')"
pass

# unit_values KEY: the values of every KEY= line of the unit, one a line.
unit_values() { sed -n "s/^$1=//p" "$UNIT" | tr ' ' '\n' | sed '/^$/d'; }

# sandbox_wrapper FILE: a script that runs pipevpn as the unit would confine it,
# in a mount namespace made inside the network namespace it is started in.
sandbox_wrapper() {
	local rw=() caps ro="/etc /usr /var /run" d
	grep -qx 'ProtectSystem=strict' "$UNIT" || fail "the unit has no ProtectSystem=strict"
	grep -qx 'ProtectKernelTunables=yes' "$UNIT" && ro+=" /proc/sys"
	grep -qx 'NoNewPrivileges=yes' "$UNIT" || fail "the unit has no NoNewPrivileges=yes"
	for d in $(unit_values RuntimeDirectory); do rw+=("/run/$d"); done
	for d in $(unit_values ReadWritePaths); do rw+=("${d#-}"); done
	caps=$(unit_values CapabilityBoundingSet | tr 'A-Z' 'a-z' | sed 's/^cap_/+/' | paste -sd,)
	[[ -n $caps ]] || fail "the unit has no CapabilityBoundingSet="
	mkdir -p /run/pipevpn /run/wireguard # what RuntimeDirectory= makes
	cat >"$1" <<-WRAPPER
		#!/bin/bash
		exec unshare -m --propagation private bash -c '
		set -e
		for d in $ro; do mount --bind \$d \$d; mount -o remount,bind,ro \$d; done
		for d in ${rw[*]}; do [[ ! -e \$d ]] || { mount --bind \$d \$d; mount -o remount,bind,rw \$d; }; done
		exec setpriv --no-new-privs --bounding-set=-all,$caps --inh-caps=-all "$PIPEVPN" "\$@"' pipevpn "\$@"
	WRAPPER
	chmod +x "$1"
	log "sandbox: read-only $ro; writable ${rw[*]}; bounding set $caps"
}

scenario up-runs-in-the-units-sandbox
command -v setpriv >/dev/null || fail "setpriv is missing (Debian: util-linux)"
sandbox_wrapper "$TMP/sandboxed-pipevpn"
rm -f "$TMP/postup.done"
listen_up sandboxed
start_pipevpn "$NS2" "$TMP/b.conf" "$TUN2"
NOTIFY_SOCKET="$TMP/sandboxed.sock" PIPEVPN="$TMP/sandboxed-pipevpn" \
	start_pipevpn "$NS1" "$TMP/a.conf" "$TUN1"
wait_until 5 "READY=1 from the sandboxed up" eval "(( \$(count sandboxed '^READY=1\$') == 1 ))"
ready_check sandboxed
status=$(cat "/proc/${PID_OF[$TUN1]}/status")
grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$status" || fail "up runs without no_new_privs"
grep -q '^CapBnd:[[:space:]]*0000000000001000$' <<<"$status" ||
	fail "up's bounding set is not CAP_NET_ADMIN alone: $(grep CapBnd <<<"$status")"
wait_for_handshake "$NS1" "$INNER2"
kill -HUP "${PID_OF[$TUN1]}"
wait_until 5 "READY=1 after the reload" eval "(( \$(count sandboxed '^READY=1\$') == 2 ))"
ping_ok "$NS1" "$INNER2"
stop_impl "$TUN1"
[[ $STOP_RC == 0 ]] || fail "the sandboxed up exited with status $STOP_RC after SIGTERM"
[[ $(tail -n1 "$TMP/sandboxed.notify") == STOPPING=1 ]] ||
	fail "the last message was not STOPPING=1: $(tail -n3 "$TMP/sandboxed.notify" | tr '\n' ' ')"
no_route_record "$TUN1"
stop_impl "$TUN2"
pass
