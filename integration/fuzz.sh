#!/usr/bin/env bash
# Fuzzes pipevpn's parsers of untrusted input with AFL++ (cargo-afl): the
# datagram decoders (fuzz/fuzz_targets/messages.rs), the responder fed
# initiations with a valid mac1 (responder.rs), the config parser (config.rs),
# the route-record parser (routes.rs), the cutting and joining of TCP
# super-segments on the tun (tun_offload.rs), the cutting of a UDP GRO
# receive buffer into slots (udp_gro.rs) and the control socket's request
# reader (uapi.rs), FUZZ_SECONDS (default 60) each, from
# the seeds in fuzz/seeds/. One line per target, `PASS fuzz-NAME` or `FAIL fuzz-NAME: why`;
# any crash fails, and the crashing inputs stay in fuzz/target/afl/NAME/.
# Needs cargo-afl with AFL++ built (`cargo install cargo-afl --locked`, then
# `cargo afl config --build`); no root, no network.
set -Eeuo pipefail

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz" && pwd)
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
TARGETS=(messages responder config routes tun_offload udp_gro uapi)

fail() {
	echo "FAIL $1: $2"
	exit 1
}

cargo afl --version >/dev/null 2>&1 ||
	fail fuzz-prerequisites "cargo-afl is missing (cargo install cargo-afl --locked; cargo afl config --build)"
cd "$FUZZ_DIR"
echo "+ cargo afl build --release  (in fuzz/)" >&2
cargo afl build --release >&2 || fail fuzz-build "cargo afl build failed"
echo "PASS fuzz-build"

for target in "${TARGETS[@]}"; do
	out="target/afl/$target"
	rm -rf "$out"
	mkdir -p "$out"
	echo "+ cargo afl fuzz -V $SECONDS_PER_TARGET -i seeds/$target -o $out target/release/$target" >&2
	# No UI, no CPU binding (the machine is shared), and no complaints about the
	# CPU governor or a core_pattern that AFL++ cannot change in a container.
	AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
		timeout --kill-after=10 $((SECONDS_PER_TARGET + 120)) \
		cargo afl fuzz -V "$SECONDS_PER_TARGET" -i "seeds/$target" -o "$out" "target/release/$target" \
		>"$out/afl.log" 2>&1 || {
		tail -n 20 "$out/afl.log" >&2
		fail "fuzz-$target" "afl-fuzz did not run to its time limit (log: fuzz/$out/afl.log)"
	}
	stats="$out/default/fuzzer_stats"
	[[ -f $stats ]] || fail "fuzz-$target" "afl-fuzz left no $stats"
	execs=$(awk -F' *: *' '$1 == "execs_done" { print $2 }' "$stats")
	paths=$(awk -F' *: *' '$1 == "corpus_count" { print $2 }' "$stats")
	crashes=$(find "$out/default/crashes" -type f ! -name README.txt | wc -l)
	hangs=$(find "$out/default/hangs" -type f | wc -l)
	echo "INFO fuzz-$target: $execs executions in ${SECONDS_PER_TARGET}s, corpus $paths, crashes $crashes, hangs $hangs"
	((execs > 0)) || fail "fuzz-$target" "no executions"
	if ((crashes > 0)); then
		for f in $(find "$out/default/crashes" -type f ! -name README.txt | head -n 3); do
			echo "---- $f" >&2
			od -A d -t x1 "$f" | head -n 10 >&2
			echo "---- the target on it:" >&2
			"target/release/$target" <"$f" 2>&1 | tail -n 5 >&2 || true
		done
		fail "fuzz-$target" "$crashes crashing inputs in fuzz/$out/default/crashes"
	fi
	echo "PASS fuzz-$target"
done
