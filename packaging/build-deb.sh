#!/usr/bin/env bash
# Builds the Debian package target/debian/pipevpn_<version>-1_<arch>.deb: the
# release binaries, then their man pages and bash, zsh and fish completions,
# which each binary writes from its own command-line definition (hidden
# `generate-man` and `generate-completions`), then `cargo deb --no-build --strip`
# (cargo install cargo-deb --locked), which lays them out as Cargo.toml's
# [package.metadata.deb] says. Prints the package's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo deb --version >/dev/null 2>&1 || {
	echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
	exit 1
}
# cargo-deb finds target/release/ assets under CARGO_TARGET_DIR too.
release=${CARGO_TARGET_DIR:-target}/release
cargo build --release
dist=$release/dist
rm -rf "$dist"
mkdir -p "$dist/man" "$dist/completions"
"$release/pipevpn" generate-man "$dist/man"
"$release/pipevpnd" --generate-man "$dist/man"
# Debian policy: pages gzipped (cargo-deb leaves files from target/ as they are).
gzip -9n "$dist"/man/*.8
for shell in bash zsh fish; do
	"$release/pipevpn" generate-completions "$shell" >"$dist/completions/pipevpn.$shell"
	"$release/pipevpnd" --generate-completions "$shell" >"$dist/completions/pipevpnd.$shell"
done
# zsh finds a command's completion by the file name _COMMAND.
mv "$dist/completions/pipevpn.zsh" "$dist/completions/_pipevpn"
mv "$dist/completions/pipevpnd.zsh" "$dist/completions/_pipevpnd"
# Stripped: the release profile keeps line tables for profiling, not needed here.
cargo deb --no-build --strip --quiet
