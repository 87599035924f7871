#!/usr/bin/env bash
# Least privilege (src/sys/privilege.rs): a running `pipevpn up` and a running
# `pipevpnd -f` hold CAP_NET_ADMIN alone, in every thread, with no_new_privs:
# - every task of both (/proc/PID/task/*/status): CapEff = CapPrm = CapBnd =
#   0x1000 (CAP_NET_ADMIN, bit 12), CapInh = CapAmb = 0, NoNewPrivs 1;
# - what still works with that: pings both ways, `wg set fwmark` (SO_MARK),
#   `wg set listen-port` (a new socket, SO_RCVBUFFORCE/SNDBUFFORCE), a SIGHUP
#   reload adding a peer (and one of a file root may not read refused, logged),
#   the teardown (routes as before, no route record, no
#   control socket), and B's hooks: PreUp, PostUp and PostDown record their own
#   /proc/self/status (the same confinement), a PostUp hook adds a veth pair and
#   a PreDown hook deletes it (CAP_NET_ADMIN suffices), `unshare --mount` in a
#   hook is refused (CAP_SYS_ADMIN is gone);
# - what no longer works, refused clearly: ListenPort below
#   net.ipv4.ip_unprivileged_port_start at start (exit 2, the message says why,
#   nothing left), `wg set listen-port 80` live (the port unchanged);
# - started as a service manager may start it, with CAP_NET_ADMIN alone in the
#   bounding set (no CAP_SETPCAP to drop more): up and confined; started without
#   CAP_NET_ADMIN: exit 2, the message says so, nothing made;
# - an unconfined holder of the control socket's path (wireguard-go, whose
#   /proc/PID/ns/net a confined process may not read): in its namespace `up` of
#   that name is refused naming its pid; in another one `up` serves elsewhere.
# pipevpn only.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn pipevpnd

scenario topology
command -v unshare >/dev/null && command -v setpriv >/dev/null ||
	fail "unshare or setpriv is missing (Debian: apt-get install util-linux)"
make_topology
setup_pair a no
before=$(route_snapshot "$NS2")
HOOKPAIR="${PREFIX}h"
# B's hooks: each confinement it ran with, as the status lines of its own process.
status_to() { echo "grep -E '^(Cap|NoNewPrivs)' /proc/self/status >$TMP/$1.status"; }
{
	echo "PreUp = $(status_to preup)"
	echo "PostUp = $(status_to postup)"
	echo "PostUp = ip link add ${HOOKPAIR}a type veth peer name ${HOOKPAIR}b"
	echo "PostUp = if unshare --mount true 2>$TMP/unshare.err; then echo allowed; else echo refused; fi >$TMP/unshare"
	echo "PreDown = ip link del ${HOOKPAIR}a"
	echo "PostDown = $(status_to postdown)"
} | sed -i "/^MTU = /r /dev/stdin" "$TMP/b.conf"
pass

# The status lines of a confined process, in /proc/PID/status's order.
CONFINED="CapInh: 0000000000000000 CapPrm: 0000000000001000 CapEff: 0000000000001000 \
CapBnd: 0000000000001000 CapAmb: 0000000000000000 NoNewPrivs: 1"
# caps_of FILE: its Cap* and NoNewPrivs lines on one line, single spaces.
caps_of() { grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' "$1" | tr -s ' \t\n' ' ' | sed 's/ $//'; }

# all_tasks_confined PID WHAT: every thread of PID is confined; there are several.
all_tasks_confined() {
	local pid=$1 what=$2 task caps tasks=0
	for task in /proc/"$pid"/task/*; do
		caps=$(caps_of "$task/status") || fail "cannot read $task/status of $what"
		[[ $caps == "$CONFINED" ]] || fail "$what's thread $(cat "$task/comm") ($task): $caps"
		tasks=$((tasks + 1))
	done
	((tasks > 1)) || fail "$what ($pid) has $tasks threads: is it the tunnel?"
	info "$what: $tasks threads, each: $caps"
}

scenario every-thread-of-up-holds-cap-net-admin-alone
start_pair pipevpn pipevpn a
wait_for_handshake "$NS1" "$INNER2"
all_tasks_confined "${PID_OF[$TUN1]}" "pipevpn up (A)"
all_tasks_confined "${PID_OF[$TUN2]}" "pipevpn up (B)"
pass

scenario hooks-run-confined
for hook in preup postup; do
	[[ -s $TMP/$hook.status ]] || fail "the $hook hook left no status"
	[[ $(caps_of "$TMP/$hook.status") == "$CONFINED" ]] || fail "$hook hook ran with $(caps_of "$TMP/$hook.status")"
done
n2 ip link show "${HOOKPAIR}a" >/dev/null || fail "the PostUp hook's veth pair is missing"
[[ $(cat "$TMP/unshare") == refused ]] || fail "unshare --mount in a hook was $(cat "$TMP/unshare")"
log "unshare in a hook: $(cat "$TMP/unshare.err")"
pass

scenario tunnel-and-live-changes-work-confined
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
n2 wg set "$TUN2" fwmark 0x1234
[[ $(n2 wg show "$TUN2" fwmark) == 0x1234 ]] || fail "fwmark not set: $(n2 wg show "$TUN2" fwmark)"
n2 wg set "$TUN2" fwmark 0
moved=$((PORT + 7))
n2 wg set "$TUN2" listen-port "$moved"
[[ $(n2 wg show "$TUN2" listen-port) == "$moved" ]] || fail "listen-port not moved to $moved"
n1 wg set "$TUN1" peer "${PUB[b]}" endpoint "$UNDER2:$moved"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
# A port below 1024 needs CAP_NET_BIND_SERVICE: refused, the tunnel stays.
! n2 wg set "$TUN2" listen-port 80 2>"$TMP/port.err" || fail "listen-port 80 was accepted"
[[ $(n2 wg show "$TUN2" listen-port) == "$moved" ]] || fail "a refused listen-port changed the port"
grep -q "listen_port 80: .*Permission denied.*staying on port $moved" "${LOG_OF[$TUN2]}" ||
	fail "B's log does not say why port 80 was refused"
ping_ok "$NS1" "$INNER2"
all_tasks_confined "${PID_OF[$TUN2]}" "pipevpn up (B) after wg set"
pass

scenario sighup-reload-works-confined
gen_keys c
# The port B moved to stays (a reload applies the file's ListenPort).
sed -i "s/^ListenPort = .*/ListenPort = $moved/" "$TMP/b.conf"
printf '\n[Peer]\nPublicKey = %s\nAllowedIPs = 10.99.0.3/32\n' "${PUB[c]}" >>"$TMP/b.conf"
kill -HUP "${PID_OF[$TUN2]}"
wait_until 5 "B's reload to add C" eval "n2 wg show $TUN2 peers | grep -qxF '${PUB[c]}'"
grep -q "SIGHUP: $TMP/b.conf applied: 2 peers" "${LOG_OF[$TUN2]}" || fail "B's log has no reload line"
ping_ok "$NS1" "$INNER2"
# Without CAP_DAC_OVERRIDE, a file root does not own and may not read is not re-read.
chown nobody "$TMP/b.conf"
kill -HUP "${PID_OF[$TUN2]}"
wait_until 5 "B's log to refuse the unreadable file" \
	grep -q "SIGHUP: .*$TMP/b.conf.*Permission denied.*nothing changed" "${LOG_OF[$TUN2]}"
chown root "$TMP/b.conf"
ping_ok "$NS1" "$INNER2"
pass

scenario teardown-works-confined
stop_impl "$TUN2"
[[ $STOP_RC == 0 ]] || fail "B exited $STOP_RC after SIGTERM: $(tail -n 3 "${LOG_OF[$TUN2]}")"
same_routes "$NS2" "$before"
no_route_record "$TUN2"
[[ ! -e /var/run/wireguard/$TUN2.sock ]] || fail "B left its control socket"
! n2 ip link show "${HOOKPAIR}a" >/dev/null 2>&1 || fail "the PreDown hook did not delete its veth pair"
[[ $(caps_of "$TMP/postdown.status") == "$CONFINED" ]] || fail "PostDown hook ran with $(caps_of "$TMP/postdown.status")"
stop_impl "$TUN1"
pass

scenario low-listen-port-refused-at-start
sed -e "s/^ListenPort = .*/ListenPort = 80/" -e '/^\(Pre\|Post\)/d' "$TMP/b.conf" >"$TMP/low.conf"
chmod 600 "$TMP/low.conf"
rc=0
n2 timeout 10 "$PIPEVPN" up "$TMP/low.conf" --interface "$TUN2" >"$TMP/low.out" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "ListenPort = 80 is below net.ipv4.ip_unprivileged_port_start (1024).*CAP_NET_BIND_SERVICE" "$TMP/low.out" ||
	fail "ListenPort = 80: exit $rc: $(cat "$TMP/low.out")"
! iface_exists "$NS2" "$TUN2" >/dev/null 2>&1 || fail "the refused start left $TUN2"
no_route_record "$TUN2"
pass

scenario started-with-cap-net-admin-alone
# As a service manager may start it, CAP_NET_ADMIN alone in the bounding set
# (systemd's CapabilityBoundingSet=): nothing left to drop, so no CAP_SETPCAP
# needed. Without CAP_NET_ADMIN: refused before anything is made.
printf '#!/bin/bash\nexec setpriv --bounding-set -all,+net_admin --inh-caps -all "%s" "$@"\n' \
	"$PIPEVPN" >"$TMP/bounded"
chmod 755 "$TMP/bounded"
sed -e '/^ListenPort/d' -e '/^\(Pre\|Post\)/d' "$TMP/b.conf" >"$TMP/plain.conf"
chmod 600 "$TMP/plain.conf"
PIPEVPN="$TMP/bounded" start_pipevpn "$NS2" "$TMP/plain.conf" "$TUN2" bounded
all_tasks_confined "${PID_OF[bounded]}" "pipevpn up started with CAP_NET_ADMIN alone"
stop_impl bounded
[[ $STOP_RC == 0 ]] || fail "it exited $STOP_RC after SIGTERM: $(tail -n 3 "${LOG_OF[bounded]}")"
rc=0
n2 setpriv --bounding-set -net_admin --inh-caps -all "$PIPEVPN" up "$TMP/plain.conf" \
	--interface "$TUN2" >"$TMP/no-admin.out" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "CAP_NET_ADMIN is needed .*this process does not have it" "$TMP/no-admin.out" ||
	fail "without CAP_NET_ADMIN: exit $rc: $(cat "$TMP/no-admin.out")"
! iface_exists "$NS2" "$TUN2" >/dev/null 2>&1 || fail "the refused start left $TUN2"
pass

scenario pipevpnd-holds-cap-net-admin-alone
DAEMON="${PREFIX}d"
log="$TMP/$DAEMON.log"
echo "+ [$NS1] $PIPEVPND -f $DAEMON &" >&2
env --default-signal=INT,QUIT ip netns exec "$NS1" "$PIPEVPND" -f "$DAEMON" >"$log" 2>&1 &
track $! "$DAEMON" "$NS1" pipevpnd "$log"
wait_until 10 "pipevpnd -f to serve" eval "n1 wg show $DAEMON || ! alive ${PID_OF[$DAEMON]}"
expect_alive "$DAEMON"
all_tasks_confined "${PID_OF[$DAEMON]}" "pipevpnd -f"
# What wg-quick does next: a key, a port, a mark, and the interface up.
printf '[Interface]\nPrivateKey = %s\nListenPort = %s\nFwMark = 0x99\n' "${PRIV[c]}" $((PORT + 11)) >"$TMP/d.wg"
n1 wg setconf "$DAEMON" "$TMP/d.wg"
[[ $(n1 wg show "$DAEMON" listen-port) == $((PORT + 11)) && $(n1 wg show "$DAEMON" fwmark) == 0x99 ]] ||
	fail "wg setconf not applied: $(n1 wg show "$DAEMON")"
n1 ip link set "$DAEMON" up
stop_impl "$DAEMON"
[[ $STOP_RC == 0 ]] || fail "pipevpnd -f exited $STOP_RC after SIGTERM"
[[ ! -e /var/run/wireguard/$DAEMON.sock ]] || fail "pipevpnd -f left its control socket"
pass

scenario unconfined-holder-of-the-socket-path
HELD="${PREFIX}g"
echo "+ [$NS2] $WGGO_BIN -f $HELD &" >&2
env --default-signal=INT,QUIT ip netns exec "$NS2" "$WGGO_BIN" -f "$HELD" >"$TMP/$HELD.log" 2>&1 &
track $! "$HELD" "$NS2" wggo "$TMP/$HELD.log"
wait_until 10 "wireguard-go's control socket for $HELD" test -S "/var/run/wireguard/$HELD.sock"
holder=${PID_OF[$HELD]}
[[ $(caps_of "/proc/$holder/status") != "$CONFINED" ]] || fail "wireguard-go is confined: not the control"
# In wireguard-go's namespace: the name is in use.
rc=0
n2 timeout 10 "$PIPEVPN" up "$TMP/a.conf" --interface "$HELD" >"$TMP/held.out" 2>&1 || rc=$?
((rc != 0 && rc != 124)) && grep -q "interface $HELD is in use: pid $holder serves" "$TMP/held.out" ||
	fail "up of $HELD beside wireguard-go: exit $rc: $(cat "$TMP/held.out")"
# In another namespace: served in that namespace's directory of records.
add_ns "$NS3"
sed -e '/^ListenPort/d' "$TMP/a.conf" >"$TMP/elsewhere.conf"
chmod 600 "$TMP/elsewhere.conf"
start_pipevpn "$NS3" "$TMP/elsewhere.conf" "$HELD" elsewhere
grep -q "is taken by pid $holder .*serving ours at ${RUN_DIR_OF[$NS3]}/$HELD.sock" "${LOG_OF[elsewhere]}" ||
	fail "no warning naming wireguard-go's pid: $(cat "${LOG_OF[elsewhere]}")"
stop_impl elsewhere
[[ $STOP_RC == 0 ]] || fail "the pipevpn in $NS3 exited $STOP_RC"
stop_impl "$HELD"
pass
