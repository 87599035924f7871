#!/usr/bin/env bash
# Stopping a full-tunnel client (ns1, IMPL_A, default pipevpn) must undo its routes:
# SIGINT, SIGTERM and SIGQUIT each exit 0, leave `ip route` as it was before the start
# and remove the route record (SIGHUP reloads the config instead: reload.sh).
# After kill -9 the endpoint's host route is left behind; starting the same config
# again must sweep it, and a clean stop then leaves the original table.
# The server (ns2, IMPL_B, default pipevpn) keeps running throughout.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

choose_impls pipevpn pipevpn

scenario topology
make_topology
setup_pair a no 0.0.0.0/0
original=$(route_snapshot "$NS1")
start_impl "$IMPL_B" "$NS2" "$TUN2" "$TMP/b.conf"
pass

start_client() {
	start_impl "$IMPL_A" "$NS1" "$TUN1" "$TMP/a.conf"
	wait_for_handshake "$NS1" "$INNER2"
	full_tunnel_routes_ok "$NS1" "$TUN1" "$VETH1" "$UNDER2"
}

# wireguard-go -f (IMPL_A=wggo, which checks the harness) handles SIGINT and SIGTERM only.
sigs=(INT TERM QUIT)
[[ $IMPL_A == pipevpn ]] || sigs=(INT TERM)
for sig in "${sigs[@]}"; do
	scenario "sig$sig-$IMPL_A-restores-routes"
	start_client
	stop_impl "$TUN1" "$sig"
	[[ $STOP_RC == 0 ]] || fail "exit status $STOP_RC after SIG$sig, expected 0"
	same_routes "$NS1" "$original"
	no_route_record "$TUN1"
	pass
done

scenario "kill9-$IMPL_A-restart-sweeps"
start_client
stop_impl "$TUN1" KILL
# The tun and its routes die with the process; the host route via the veth is
# what a crash leaves behind, and what the restart must sweep.
[[ -n $(n1 ip -4 route show "$UNDER2/32") ]] ||
	fail "after kill -9 no host route to $UNDER2 is left, so the sweep would not be tested"
start_client
stop_impl "$TUN1" TERM
[[ $STOP_RC == 0 ]] || fail "exit status $STOP_RC after SIGTERM, expected 0"
same_routes "$NS1" "$original"
pass

# Records planted the way a security review attacked them (src/rundir.rs): a route
# record that is a symbolic link to a file of nobody's listing an unrelated route,
# and a temporary record that is a symbolic link to a root-owned file. pipevpn
# must refuse the first (exit 2, the record named, the route kept, nothing made)
# and must replace the second without writing through it. Only pipevpn keeps
# such records, so only it is tested.
if [[ $IMPL_A == pipevpn ]]; then
	scenario "planted-records-$IMPL_A"
	run_dir=${RUN_DIR_OF[$NS1]}
	record="$run_dir/$TUN1.routes"
	mkdir -p "$run_dir"
	chmod 0700 "$run_dir"
	unrelated="10.77.0.0/16 via $GATEWAY1 dev $VETH1"
	# shellcheck disable=SC2086 # the route is several words on purpose
	n1 ip route add $unrelated
	true &
	dead=$!
	wait "$dead"
	printf 'pid %s\n%s\n' "$dead" "$unrelated" >"$TMP/nobody.routes"
	chown nobody "$TMP/nobody.routes"
	ln -s "$TMP/nobody.routes" "$record"
	before=$(route_snapshot "$NS1")
	rc=0
	echo "+ [$NS1] $PIPEVPN up $TMP/a.conf --interface $TUN1" >&2
	ip netns exec "$NS1" timeout --foreground 10 "$PIPEVPN" up "$TMP/a.conf" --interface "$TUN1" >"$TMP/planted.out" 2>&1 || rc=$?
	info "symlinked record: exit $rc: $(tr '\n' ' ' <"$TMP/planted.out")"
	[[ -n $(n1 ip -4 route show 10.77.0.0/16) ]] || fail "the sweep deleted $unrelated, listed in a symlinked record of nobody's"
	((rc == 2)) || fail "exit status $rc with a symlinked route record, expected 2: $(cat "$TMP/planted.out")"
	grep -qF "$record: it is a symbolic link" "$TMP/planted.out" || fail "the message does not name the symlinked record: $(cat "$TMP/planted.out")"
	same_routes "$NS1" "$before"
	! iface_exists "$NS1" "$TUN1" || fail "$TUN1 was created despite the refusal"
	rm "$record"

	echo "root's file" >"$TMP/victim"
	ln -s "$TMP/victim" "$record.tmp"
	start_client
	stop_impl "$TUN1" TERM
	[[ $STOP_RC == 0 ]] || fail "exit status $STOP_RC after SIGTERM, expected 0"
	[[ $(cat "$TMP/victim") == "root's file" ]] || fail "pipevpn wrote its record through the symlink $record.tmp into $TMP/victim: $(cat "$TMP/victim")"
	[[ ! -e $record.tmp && ! -L $record.tmp ]] || fail "$record.tmp is still there"
	# shellcheck disable=SC2086
	n1 ip route del $unrelated
	same_routes "$NS1" "$original"
	pass
fi
