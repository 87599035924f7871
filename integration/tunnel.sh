#!/usr/bin/env bash
# Two peers on two namespaces: ping both ways (small and MTU-sized) and 3 s of TCP
# with iperf3 in each direction, once with A initiating and once with B initiating
# (the second time with a preshared key). Implementations: IMPL_A, IMPL_B
# (pipevpn | wggo, default pipevpn); pipevpn peers must also report sane stats.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

choose_impls pipevpn pipevpn

scenario topology
make_topology
pass

stats_sane() {
	[[ $IMPL_A != pipevpn ]] || check_stats "$TUN1"
	[[ $IMPL_B != pipevpn ]] || check_stats "$TUN2"
}
each_initiator "tunnel-$IMPL_A-$IMPL_B" stats_sane
