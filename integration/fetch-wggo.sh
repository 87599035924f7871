#!/usr/bin/env bash
# Prints the path of a newer wireguard-go from Debian's archive, downloading it
# on first use. Debian 12 ships wireguard-go 0.0.20220316, which predates
# batching and offloads; bookworm-backports carries a 2023 build with both, the
# faster peer that integration/bench.sh compares against ("wggo-new").
#
# The package is checked the way apt checks it: InRelease signed by a key in
# Debian's archive keyring, Packages.xz by the SHA256 in InRelease, the .deb by
# the SHA256 in Packages. It is unpacked, not installed: the system's own
# wireguard-go stays as it is.
#
# Usage: integration/fetch-wggo.sh
# Environment:
#   WGGO_SUITE  Debian suite to take it from (default bookworm-backports)
#   WGGO_CACHE  where to unpack it (default target/wireguard-go-<suite>)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=${WGGO_SUITE:-bookworm-backports}
CACHE=${WGGO_CACHE:-$REPO_ROOT/target/wireguard-go-$SUITE}
MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
BIN=$CACHE/usr/bin/wireguard-go

die() {
	echo "fetch-wggo.sh: $*" >&2
	exit 1
}

if [[ -x $BIN ]]; then
	echo "$BIN"
	exit 0
fi
for tool in curl gpgv xz dpkg-deb sha256sum; do
	command -v "$tool" >/dev/null || die "missing tool: $tool"
done
[[ -r $KEYRING ]] || die "no Debian archive keyring at $KEYRING (Debian: debian-archive-keyring)"

TMP=$(mktemp -d "/tmp/pipevpn-fetch-wggo.$$.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

get() { curl -fsS --max-time 120 -o "$2" "$MIRROR/$1" || die "download of $MIRROR/$1 failed"; }

# sha256_of FILE NAME: the SHA256 that the index FILE lists for NAME.
sha256_of() {
	awk -v name="$2" '/^SHA256:/ {s = 1; next} /^[^ ]/ {s = 0} s && $3 == name {print $1; exit}' "$1"
}

# check FILE SHA256: dies unless FILE has that digest.
check() {
	[[ -n $2 ]] || die "no SHA256 listed for $1"
	echo "$2  $1" | sha256sum --check --quiet --status || die "$1 does not match its SHA256 $2"
}

get "dists/$SUITE/InRelease" "$TMP/InRelease"
gpgv --quiet --keyring "$KEYRING" --output "$TMP/Release" "$TMP/InRelease" 2>"$TMP/gpgv.log" ||
	die "InRelease of $SUITE is not signed by a Debian archive key: $(cat "$TMP/gpgv.log")"
until_date=$(sed -n 's/^Valid-Until: //p' "$TMP/Release")
if [[ -n $until_date ]] && (($(date -d "$until_date" +%s) < $(date +%s))); then
	die "the Release file of $SUITE expired on $until_date"
fi

get "dists/$SUITE/main/binary-amd64/Packages.xz" "$TMP/Packages.xz"
check "$TMP/Packages.xz" "$(sha256_of "$TMP/Release" main/binary-amd64/Packages.xz)"
xz -dc "$TMP/Packages.xz" |
	awk '/^Package: / {p = ($2 == "wireguard-go")} p' >"$TMP/stanza"
filename=$(sed -n 's/^Filename: //p' "$TMP/stanza" | tail -n1)
sha=$(sed -n 's/^SHA256: //p' "$TMP/stanza" | tail -n1)
[[ -n $filename ]] || die "$SUITE has no wireguard-go for amd64"

get "$filename" "$TMP/wireguard-go.deb"
check "$TMP/wireguard-go.deb" "$sha"
rm -rf "$CACHE"
mkdir -p "$CACHE"
dpkg-deb -x "$TMP/wireguard-go.deb" "$CACHE"
[[ -x $BIN ]] || die "$filename holds no usr/bin/wireguard-go"
echo "$BIN"
