#!/usr/bin/env bash
# Prints the paths of the other userspace WireGuard peers that integration/bench.sh
# compares against, one line per name given, building each with `cargo install`
# on first use: boringtun (Cloudflare's, crate boringtun-cli, binary boringtun-cli)
# and GotaTun (Mullvad's fork of boringtun, crate gotatun-cli, binary gotatun).
# Each goes into a directory of its own under BENCH_TOOLS, by crate and version,
# with the crate's own Cargo.lock (--locked); nothing is installed into the system
# or ~/.cargo/bin, and a later run reuses what is there.
#
# Usage: integration/fetch-peers.sh boringtun|gotatun...
# Environment:
#   BENCH_TOOLS        where the installs go (default target/bench-tools)
#   BORINGTUN_VERSION  boringtun-cli version (default 0.7.1)
#   GOTATUN_VERSION    gotatun-cli version (default 0.10.2)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${BENCH_TOOLS:-$REPO_ROOT/target/bench-tools}

die() {
	echo "fetch-peers.sh: $*" >&2
	exit 1
}

# install CRATE VERSION BINARY: the path of BINARY from CRATE at VERSION, built
# into $TOOLS/CRATE-VERSION unless it is there already.
install() {
	local crate=$1 version=$2 bin=$3 root="$TOOLS/$1-$2" log
	if [[ ! -x $root/bin/$bin ]]; then
		command -v cargo >/dev/null || die "cargo is missing, which builds $crate $version (install a Rust toolchain)"
		mkdir -p "$TOOLS"
		log="$TOOLS/$crate-$version.install.log"
		echo "fetch-peers.sh: cargo install $crate $version into $root (once; a few minutes)" >&2
		if ! cargo install --locked --quiet --root "$root" --version "=$version" "$crate" >"$log" 2>&1; then
			tail -n 15 "$log" >&2
			die "cargo install of crate $crate $version failed (whole log: $log)"
		fi
		[[ -x $root/bin/$bin ]] || die "crate $crate $version installed no binary $bin into $root/bin"
	fi
	echo "$root/bin/$bin"
}

(($#)) || die "name at least one peer: boringtun, gotatun (see --help)"
for peer in "$@"; do
	case $peer in
	boringtun) install boringtun-cli "${BORINGTUN_VERSION:-0.7.1}" boringtun-cli ;;
	gotatun) install gotatun-cli "${GOTATUN_VERSION:-0.10.2}" gotatun ;;
	-h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' ;;
	*) die "unknown peer '$peer' (boringtun, gotatun)" ;;
	esac
done
