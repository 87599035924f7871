#!/usr/bin/env bash
# Two peers on two namespaces: ping both ways (small and MTU-sized) and 3 s of TCP
# with iperf3 in each direction, once with A initiating and once with B initiating
# (the second time with a preshared key). Implementations: IMPL_A, IMPL_B
# (pipevpn | wggo, default pipevpn); pipevpn peers must also report sane stats.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMPL_A=${IMPL_A:-pipevpn}
IMPL_B=${IMPL_B:-pipevpn}
require_tools "$IMPL_A" "$IMPL_B"

scenario topology
make_topology
pass

for initiator in a b; do
	psk=no
	[[ $initiator == a ]] || psk=yes
	scenario "tunnel-$IMPL_A-$IMPL_B-$initiator-initiates"
	setup_pair "$initiator" "$psk"
	start_pair "$IMPL_A" "$IMPL_B" "$initiator"
	tunnel_checks "$initiator"
	# A little over a second, so every stats file has been rewritten since the traffic.
	sleep 1.2
	[[ $IMPL_A != pipevpn ]] || check_stats "$TUN1"
	[[ $IMPL_B != pipevpn ]] || check_stats "$TUN2"
	stop_pair
	pass
done
