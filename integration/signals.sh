#!/usr/bin/env bash
# Stopping a full-tunnel client (ns1, IMPL_A, default pipevpn) must undo its routes:
# SIGINT, SIGTERM, SIGHUP and SIGQUIT each exit 0, leave `ip route` as it was before
# the start and remove the route record.
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
sigs=(INT TERM HUP QUIT)
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
