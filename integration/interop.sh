#!/usr/bin/env bash
# pipevpn against wireguard-go: the same key text, then a tunnel started by each side
# in turn (the second time with a preshared key): handshake, ping both ways (small
# and MTU-sized), 3 s of TCP each way, and wireguard-go must report the handshake.
# IMPL_A / IMPL_B choose the sides (default pipevpn / wggo).
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

choose_impls pipevpn wggo

if [[ $IMPL_A == pipevpn || $IMPL_B == pipevpn ]]; then
	scenario keys-pipevpn-wg
	key=$("$PIPEVPN" genkey)
	[[ $key =~ ^[A-Za-z0-9+/]{43}=$ ]] || fail "pipevpn genkey printed '$key', not a base64 key"
	[[ $("$PIPEVPN" pubkey <<<"$key") == "$(wg pubkey <<<"$key")" ]] || fail "pipevpn pubkey and wg pubkey disagree on a pipevpn key"
	key=$(wg genkey)
	[[ $("$PIPEVPN" pubkey <<<"$key") == "$(wg pubkey <<<"$key")" ]] || fail "pipevpn pubkey and wg pubkey disagree on a wg key"
	pass
fi

scenario topology
make_topology
pass

wggo_saw_handshake() {
	local iface
	for iface in "$TUN1" "$TUN2"; do
		[[ ${IMPL_OF[$iface]} == wggo ]] || continue
		[[ $(in_ns "${NS_OF[$iface]}" wg show "$iface" latest-handshakes | awk '{print $2}') != 0 ]] ||
			fail "wireguard-go on $iface reports no handshake"
	done
}
each_initiator "interop-$IMPL_A-$IMPL_B" wggo_saw_handshake
