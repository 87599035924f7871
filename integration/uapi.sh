#!/usr/bin/env bash
# `pipevpn up` serves the control socket `wg` speaks (src/control.rs): unmodified
# wg(8) reads and changes the running tunnel. A (ns1) starts with B as its peer; B
# (ns2) starts with no peer at all, and is given A over the socket:
# - `wg show`, `wg show dump` (every field; the answer also carries pipevpn's
#   per-stage lines, which wg skips), `wg set ... peer A` that then connects,
#   a change of its AllowedIPs that cuts it off and one that lets it in again, its
#   removal (no ping) and its return, `wg showconf`, fwmark;
# - `wg set listen-port` moves B's socket (A reaches B again once told the new
#   endpoint; only the new port is bound); a port another socket holds is refused
#   and the old one still carries the tunnel;
# - a malformed request is answered errno=-22 and changes nothing, not even the
#   valid lines before the bad one;
# - a second `up` of B's interface in ns2 is refused, naming B's pid; one of B's
#   name in ns3 finds the socket path taken, warns naming B's pid, serves
#   elsewhere, and is reachable there with a bind mount;
# - deleting B's socket file ends B cleanly (exit 0, interface and record gone), and
#   so does deleting its interface (`ip link del`).
# pipevpn only: wireguard-go serves this socket natively.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn

scenario topology
command -v unshare >/dev/null && command -v mount >/dev/null ||
	fail "unshare and mount are missing (Debian: apt-get install util-linux mount)"
make_topology
gen_keys a
gen_keys b
write_conf "$TMP/a.conf" "${PRIV[a]}" "$INNER1/24" "${PUB[b]}" "$INNER2/32" "$UNDER2:$PORT" -
printf '[Interface]\nPrivateKey = %s\nAddress = %s/24\nListenPort = %s\nMTU = 1420\n' \
	"${PRIV[b]}" "$INNER2" "$PORT" >"$TMP/b.conf"
chmod 600 "$TMP/b.conf"
start_pipevpn "$NS2" "$TMP/b.conf" "$TUN2"
start_pipevpn "$NS1" "$TMP/a.conf" "$TUN1"
SOCK="/var/run/wireguard/$TUN2.sock"
pass

# uapi NS SOCKET REQUEST: sends REQUEST as is and prints the reply, up to its empty line.
uapi() {
	in_ns "$1" python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode())
reply = b""
while not reply.endswith(b"\n\n"):
    got = s.recv(4096)
    if not got:
        break
    reply += got
sys.stdout.write(reply.decode())
' "$2" "$3"
}
hex() { base64 -d <<<"$1" | od -An -tx1 | tr -d ' \n'; }
# peer_line: the dump line of A's peer entry on B (empty if none).
peer_line() { ip netns exec "$NS2" wg show "$TUN2" dump | awk -v k="${PUB[a]}" '$1 == k'; }
no_ping() { ! in_ns "$1" ping -c2 -i0.3 -W1 -q "$2" >&2 || fail "$3"; }

scenario wg-show
[[ -S $SOCK ]] || fail "no control socket at $SOCK"
mode=$(stat -c %a "$SOCK")
[[ $mode == 700 ]] || fail "$SOCK has mode $mode, expected 700 (a get gives the private key)"
show=$(n2 wg show "$TUN2")
log "$show"
[[ $show == *"interface: $TUN2"* && $show == *"public key: ${PUB[b]}"* && $show == *"listening port: $PORT"* ]] ||
	fail "wg show $TUN2 lacks the interface, its key or its port: $show"
dump=$(n2 wg show "$TUN2" dump)
[[ $dump == "${PRIV[b]}	${PUB[b]}	$PORT	off" ]] || fail "wg show $TUN2 dump of a peerless interface: '$dump'"
# The answer wg read above carries pipevpn's own lines (the per-stage figures),
# which it skipped: the output above is unchanged by them.
get=$(uapi "$NS2" "$SOCK" $'get=1\n\n')
grep -q '^pipevpn_stage=tun_reader packets=' <<<"$get" && grep -q '^pipevpn_handshakes=' <<<"$get" ||
	fail "the get answer has no pipevpn_ lines: $get"
[[ $show != *pipevpn* && $dump != *pipevpn* ]] || fail "wg printed a pipevpn_ line: $show $dump"
pass

scenario wg-set-adds-a-peer-that-connects
n2 wg set "$TUN2" peer "${PUB[a]}" allowed-ips "$INNER1/32" endpoint "$UNDER1:$PORT" persistent-keepalive 25
wait_for_handshake "$NS2" "$INNER1"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
read -r key psk endpoint allowed latest rx tx keepalive < <(peer_line)
log "dump: $key $psk $endpoint $allowed $latest $rx $tx $keepalive"
[[ $key == "${PUB[a]}" && $psk == "(none)" && $endpoint == "$UNDER1:$PORT" && $allowed == "$INNER1/32" && $keepalive == 25 ]] ||
	fail "dump of the added peer: $(peer_line)"
now=$(date +%s)
((latest > now - 60 && latest <= now + 1)) || fail "latest handshake $latest is not within the last minute of $now"
((rx > 0 && tx > 0)) || fail "transfer rx=$rx tx=$tx after pings both ways"
pass

scenario wg-set-changes-allowed-ips
n2 wg set "$TUN2" peer "${PUB[a]}" allowed-ips 10.99.5.0/24
[[ $(n2 wg show "$TUN2" allowed-ips) == "${PUB[a]}	10.99.5.0/24" ]] || fail "allowed-ips not replaced"
no_ping "$NS1" "$INNER2" "B still takes $INNER1 from A once it is no longer among A's AllowedIPs"
n2 wg set "$TUN2" peer "${PUB[a]}" allowed-ips "$INNER1/32,10.99.5.0/24"
ping_ok "$NS1" "$INNER2"
pass

scenario wg-set-removes-and-adds-again
n2 wg set "$TUN2" peer "${PUB[a]}" remove
[[ -z $(peer_line) ]] || fail "the removed peer is still listed: $(peer_line)"
no_ping "$NS1" "$INNER2" "A still reaches B after B removed it"
no_ping "$NS2" "$INNER1" "B still reaches A after removing it"
n2 wg set "$TUN2" peer "${PUB[a]}" allowed-ips "$INNER1/32" endpoint "$UNDER1:$PORT"
wait_for_handshake "$NS2" "$INNER1"
ping_ok "$NS1" "$INNER2"
pass

scenario wg-showconf-fwmark
conf=$(n2 wg showconf "$TUN2")
[[ $conf != *pipevpn* ]] || fail "wg showconf printed a pipevpn_ line: $conf"
for want in "PrivateKey = ${PRIV[b]}" "ListenPort = $PORT" "PublicKey = ${PUB[a]}" \
	"AllowedIPs = $INNER1/32" "Endpoint = $UNDER1:$PORT"; do
	grep -qxF "$want" <<<"$conf" || fail "wg showconf lacks '$want': $conf"
done
n2 wg set "$TUN2" fwmark 0x1234
[[ $(n2 wg show "$TUN2" fwmark) == 0x1234 ]] || fail "fwmark not set: $(n2 wg show "$TUN2" fwmark)"
n2 wg set "$TUN2" fwmark 0
pass

# udp_ports NS: the local ports of the UDP sockets bound in NS, one a line.
udp_ports() { ip netns exec "$1" ss -Hnlu | awk '{ n = split($4, a, ":"); print a[n] }'; }

scenario wg-set-listen-port-moves-the-socket
moved=$((PORT + 7))
n2 wg set "$TUN2" listen-port "$moved"
[[ $(n2 wg show "$TUN2" listen-port) == "$moved" ]] || fail "wg show reports port $(n2 wg show "$TUN2" listen-port), not $moved"
[[ $(udp_ports "$NS2") == "$moved" ]] || fail "B's namespace has UDP ports '$(udp_ports "$NS2" | tr '\n' ' ')', expected only $moved"
no_ping "$NS1" "$INNER2" "A still reaches B at B's old port $PORT"
n1 wg set "$TUN1" peer "${PUB[b]}" endpoint "$UNDER2:$moved"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
grep -q "UDP port $PORT -> $moved" "${LOG_OF[$TUN2]}" || fail "B's log does not say it moved"
pass

scenario wg-set-listen-port-taken-changes-nothing
held=$((PORT + 9))
echo "+ [$NS2] python3 (holds UDP port $held) &" >&2
ip netns exec "$NS2" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[1])))
time.sleep(60)
' "$held" &
track $! holder "$NS2" python3 /dev/null
wait_until 5 "a socket on port $held in B's namespace" eval "udp_ports $NS2 | grep -qx $held"
! n2 wg set "$TUN2" listen-port "$held" 2>"$TMP/port.err" || fail "listen-port $held, held by another socket, was accepted"
grep -q "Address already in use" "$TMP/port.err" || fail "listen-port refusal: $(cat "$TMP/port.err")"
[[ $(n2 wg show "$TUN2" listen-port) == "$moved" ]] || fail "the listen port changed"
grep -q "listen_port $held: .*staying on port $moved" "${LOG_OF[$TUN2]}" || fail "B's log does not say why it stays"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
kill -TERM "${PID_OF[holder]}"
wait "${PID_OF[holder]}" || true
pass

scenario malformed-request-changes-nothing
gen_keys c
before=$(n2 wg show "$TUN2" dump | cut -f1-4)
# A new peer, then a bad line: wireguard-go would have added the peer already.
reply=$(uapi "$NS2" "$SOCK" "set=1
public_key=$(hex "${PUB[c]}")
allowed_ip=10.99.7.0/24
allowed_ip=10.99.7.0/99

")
# (The reply's empty line goes with $(...)'s trailing newlines.)
[[ $reply == errno=-22 ]] || fail "reply to a malformed set: '$reply'"
after=$(n2 wg show "$TUN2" dump | cut -f1-4)
[[ $after == "$before" ]] || fail "a malformed set changed the interface: $before -> $after"
reply=$(uapi "$NS2" "$SOCK" $'get=1\n\n')
[[ $reply == *$'\nerrno=0' && $reply == *"allowed_ip=$INNER1/32"* ]] || fail "a get after it: '$reply'"
ping_ok "$NS1" "$INNER2"
pass

scenario same-name-in-another-namespace-serves-elsewhere
# In B's own namespace the name is B's: refused before anything is made.
rc=0
echo "+ [$NS2] $PIPEVPN up $TMP/b.conf --interface $TUN2" >&2
ip netns exec "$NS2" timeout --foreground 10 "$PIPEVPN" up "$TMP/b.conf" --interface "$TUN2" >"$TMP/twice.out" 2>&1 || rc=$?
((rc != 0 && rc != 124)) && grep -q "interface $TUN2 is in use.* pid ${PID_OF[$TUN2]}" "$TMP/twice.out" ||
	fail "a second $TUN2 in B's namespace: exit $rc: $(cat "$TMP/twice.out")"
[[ $(n2 wg show "$TUN2" public-key) == "${PUB[b]}" ]] || fail "B's socket no longer answers for B"
add_ns "$NS3"
printf '[Interface]\nPrivateKey = %s\nAddress = 10.99.9.1/24\nMTU = 1420\n' "${PRIV[c]}" >"$TMP/c.conf"
chmod 600 "$TMP/c.conf"
start_pipevpn "$NS3" "$TMP/c.conf" "$TUN2" third
elsewhere="${RUN_DIR_OF[$NS3]}/$TUN2.sock"
grep -q "$SOCK is taken by pid ${PID_OF[$TUN2]} .*serving ours at $elsewhere" "${LOG_OF[third]}" ||
	fail "no warning naming B's pid and where the socket is: $(cat "${LOG_OF[third]}")"
[[ -S $elsewhere ]] || fail "no socket at $elsewhere"
[[ $(n2 wg show "$TUN2" public-key) == "${PUB[b]}" ]] || fail "B's socket no longer answers for B"
# As the warning says: a private mount namespace sees ours where wg looks.
got=$(n3 unshare -m sh -c "mount --bind '${RUN_DIR_OF[$NS3]}' /var/run/wireguard && wg show '$TUN2' public-key")
[[ $got == "${PUB[c]}" ]] || fail "through the bind mount wg found '$got', not the third interface's key"
# pipevpn show looks in its namespace's directory first: each finds its own.
for ns_key in "$NS3:c" "$NS2:b"; do
	got=$(ip netns exec "${ns_key%%:*}" "$PIPEVPN" show "$TUN2" --json | jq -r .public_key)
	[[ $got == "${PUB[${ns_key#*:}]}" ]] || fail "pipevpn show $TUN2 in ${ns_key%%:*} found '$got', not ${ns_key#*:}'s key"
done
stop_impl third
[[ $STOP_RC == 0 ]] || fail "the third pipevpn exited $STOP_RC after SIGTERM"
[[ ! -e $elsewhere && -S $SOCK ]] || fail "after the third stopped: its socket left, or B's gone"
pass

scenario deleting-the-socket-ends-the-tunnel
pid=${PID_OF[$TUN2]}
echo "+ rm $SOCK" >&2
rm "$SOCK"
wait_until 5 "pipevpn on $TUN2 to exit once its socket is deleted" eval "! alive $pid"
rc=0
wait "$pid" || rc=$?
((rc == 0)) || fail "exit status $rc after the socket was deleted, expected 0"
grep -q "$SOCK was deleted: shutting down" "${LOG_OF[$TUN2]}" || fail "no log line saying why it stopped"
wait_until 5 "$TUN2 to disappear" eval "! iface_exists $NS2 $TUN2"
no_route_record "$TUN2"
stop_impl "$TUN1"
[[ $STOP_RC == 0 ]] || fail "A exited $STOP_RC after SIGTERM"
pass

scenario deleting-the-interface-ends-the-tunnel
start_pipevpn "$NS2" "$TMP/b.conf" "$TUN2"
wait_until 10 "B's control socket" test -S "$SOCK"
pid=${PID_OF[$TUN2]}
in_ns "$NS2" ip link del "$TUN2"
wait_until 5 "pipevpn on $TUN2 to exit once its interface is deleted" eval "! alive $pid"
rc=0
wait "$pid" || rc=$?
((rc == 0)) || fail "exit status $rc after the interface was deleted, expected 0: $(tail -n 3 "${LOG_OF[$TUN2]}")"
grep -q "interface $TUN2 was removed: shutting down" "${LOG_OF[$TUN2]}" || fail "no log line saying why it stopped"
[[ ! -e $SOCK ]] || fail "$SOCK left behind"
no_route_record "$TUN2"
pass
