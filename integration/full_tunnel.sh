#!/usr/bin/env bash
# A full tunnel (AllowedIPs = 0.0.0.0/0) from the client (ns1, IMPL_A) to the server
# (ns2, IMPL_B), which routes on to an "internet" host in ns3. The internet host has a
# route back to the tunnel subnet only, so an answer proves the packets went through
# the tunnel; the endpoint itself must stay reachable over the veth.
#
#   ns1 client ══ tunnel 10.99.0.0/24 ══ ns2 server ── 10.97.0.0/24 ── ns3 internet
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

choose_impls pipevpn pipevpn

scenario topology
make_topology
make_internet "$INNER_NET"
pass

scenario "full-tunnel-$IMPL_A-$IMPL_B"
setup_pair a no 0.0.0.0/0
before=$(route_snapshot "$NS1")
start_pair "$IMPL_A" "$IMPL_B" a
wait_for_handshake "$NS1" "$INNER2"
full_tunnel_routes_ok "$NS1" "$TUN1" "$VETH1" "$UNDER2"
internet_through "$TUN1"
# The underlay still works for the endpoint itself.
n1 ping -c1 -W2 -q "$UNDER2" >&2 || fail "the endpoint $UNDER2 is unreachable over $VETH1 with the tunnel up"
stop_pair
same_routes "$NS1" "$before"
pass
