#!/usr/bin/env bash
# End-to-end performance: the same measurements over raw veth (no tunnel, the
# ceiling), pipevpn, Debian 12's wireguard-go, a newer wireguard-go with
# batching and offloads (from bookworm-backports, see fetch-wggo.sh), GotaTun
# (Mullvad's fork of boringtun) and Cloudflare's boringtun with its default 4
# threads and with one (both built on first use, see fetch-peers.sh), one after
# another in one run, so that a noisy machine hurts them alike. Judge by the
# ratios within a run.
#
#   ns1 (A)                                      ns2 (B)
#   tunnel 10.99.0.1/24 (MTU 1420)               tunnel 10.99.0.2/24 (MTU 1420)
#   veth   10.98.0.1/24 ───── MTU 1500 ───────── veth 10.98.0.2/24
#
# Per implementation and repetition (repetitions are interleaved, every other
# one in reverse order, so load that comes and goes and the place in the order
# are spread over all implementations):
#   the CPU time (/proc/PID/stat utime+stime) of both tunnel processes over
#   IDLE_SECS with no traffic (just after the handshake, keepalives off),
#   iperf3 TCP A→B and B→A (1 stream), TCP A→B with 4 streams, 200 pings at
#   10 ms, iperf3 UDP with 64-byte payloads at unlimited rate; during the TCP
#   A→B run, the CPU time of both tunnel processes and their peak RSS
#   (/proc/PID/status VmHWM).
#
# Usage: integration/bench.sh [--quick] [--impls LIST]
#   --quick        1 repetition of 3 s runs instead of 2 of 10 s (smoke run: 2
#                  minutes with every implementation, the full run about 11, plus
#                  about 7 for the first build of GotaTun and boringtun)
#   --impls LIST   which implementations, in order (default raw,pipevpn,wggo,
#                  wggo-new,gotatun,boringtun,boringtun-1; pipevpn-base is added
#                  after pipevpn when PIPEVPN_BASELINE is set)
# Environment:
#   PIPEVPN           pipevpn binary to measure (default: cargo build --release,
#                     then target/release/pipevpn)
#   PIPEVPN_BASELINE  a second pipevpn binary (e.g. built from an older commit),
#                     measured as "pipevpn-base" in the same run
#   WGGO_NEW          the newer wireguard-go binary (default: what
#                     integration/fetch-wggo.sh prints, downloading it once)
#   GOTATUN           GotaTun binary (default: what integration/fetch-peers.sh
#                     prints, building it once)
#   BORINGTUN         boringtun-cli binary, for boringtun and boringtun-1 (default:
#                     the same)
#   BENCH_TOOLS       where fetch-peers.sh builds them (default target/bench-tools)
#   REPS, SECS        override repetitions and seconds per iperf3 run
#   IDLE_SECS         seconds of the idle CPU measurement (default 30, 5 with
#                     --quick)
#   BENCH_TIMEOUT     bound for the whole run in seconds (default 1800)
# Output: a markdown table on stdout, with pipevpn's ratio to the best of the
# other tunnels (all but raw and pipevpn's) per figure; raw iperf3 JSON, ping
# output, pipevpn stats, every value per repetition (results.tsv) and the table under
# bench-results/<timestamp>/. Progress goes to stderr.
#
# The namespaces, peers and cleanup are lib.sh's, as in the test scenarios.

[[ -n ${PIPEVPN:-} ]] || BUILD_PIPEVPN=1
export PV_TIMEOUT=${PV_TIMEOUT:-${BENCH_TIMEOUT:-1800}}
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# stdout is for the table; lib.sh's PASS and FAIL lines go with the progress.
exec 3>&2

bench_args raw,pipevpn,wggo,wggo-new,gotatun,boringtun,boringtun-1 "$@"
if [[ -n ${PIPEVPN_BASELINE:-} && $IMPLS != *pipevpn-base* ]]; then
	IMPLS=${IMPLS/pipevpn/pipevpn,pipevpn-base}
fi
IFS=, read -r -a IMPL_LIST <<<"$IMPLS"
IDLE_SECS=${IDLE_SECS:-$((QUICK ? 5 : 30))}
OUT="$REPO_ROOT/bench-results/$(date +%Y%m%d-%H%M%S)"

# ---- prerequisites and build ------------------------------------------------

if [[ -n ${BUILD_PIPEVPN:-} ]]; then
	log "cargo build --release"
	(cd "$REPO_ROOT" && cargo build --release --quiet)
fi
require_tools pipevpn wggo
scenario prerequisites-bench
command -v jq >/dev/null || fail "missing tool: jq (Debian: apt-get install jq)"
# need_bin VAR WHAT FETCH...: the binary named by the variable VAR, else by what
# the command FETCH prints (which fetches or builds it once), must be there.
for impl in "${IMPL_LIST[@]}"; do
	case $impl in
	raw | pipevpn | wggo) ;;
	wggo-new) need_bin WGGO_NEW wireguard-go "$REPO_ROOT/integration/fetch-wggo.sh" ;;
	gotatun) need_bin GOTATUN GotaTun "$REPO_ROOT/integration/fetch-peers.sh" gotatun ;;
	boringtun | boringtun-1) need_bin BORINGTUN boringtun "$REPO_ROOT/integration/fetch-peers.sh" boringtun ;;
	pipevpn-base) [[ -x ${PIPEVPN_BASELINE:-} ]] || fail "pipevpn-base needs PIPEVPN_BASELINE=<binary>" ;;
	*) fail "unknown implementation '$impl' (raw, pipevpn, pipevpn-base, wggo, wggo-new, gotatun, boringtun, boringtun-1)" ;;
	esac
done
pass

bench_machine \
	"pipevpn-base: ${PIPEVPN_BASELINE:--}" \
	"gotatun: ${GOTATUN:+$("$GOTATUN" --version 2>&1 | head -n1)}" \
	"boringtun: ${BORINGTUN:+$("$BORINGTUN" --version 2>&1 | head -n1)}" \
	"runs: $REPS repetition(s) of $SECS s (idle: $IDLE_SECS s), implementations: ${IMPL_LIST[*]}"

# ---- topology and tunnels -----------------------------------------------------

scenario topology
add_ns "$NS1"
add_ns "$NS2"
link_ns "$NS1" "$VETH1" "$UNDER1" "$NS2" "$VETH2" "$UNDER2"
wait_until 10 "the veth link" ip netns exec "$NS1" ping -c1 -W1 "$UNDER2"
# A knows B's endpoint and starts the handshake.
setup_pair a no
pass

# bring_up IMPL: both peers of IMPL and the first handshake; DST is B's address as A
# reaches it, TUNNEL_PIDS the peers' processes (none for raw veth).
bring_up() {
	TUNNEL_PIDS=()
	DST=$UNDER2
	case $1 in
	raw) return ;;
	pipevpn) start_pair pipevpn pipevpn a ;;
	pipevpn-base) PIPEVPN=$PIPEVPN_BASELINE start_pair pipevpn pipevpn a ;;
	wggo) start_pair wggo wggo a ;;
	wggo-new) WGGO_BIN=$WGGO_NEW start_pair wggo wggo a ;;
	gotatun | boringtun | boringtun-1)
		case $1 in
		gotatun) UAPI_CMD=("$GOTATUN") ;;
		boringtun) UAPI_CMD=("$BORINGTUN") ;;
		boringtun-1) UAPI_CMD=("$BORINGTUN" --threads 1) ;;
		esac
		# Both drop root for the user getlogin(3) names, which fails without a
		# login session (a script, a CI job: "NULL from getlogin") and ends the
		# peer: they keep root, as wireguard-go does.
		UAPI_CMD+=(--foreground --disable-drop-privileges)
		start_pair uapi uapi a
		;;
	esac
	DST=$INNER2
	TUNNEL_PIDS=("${PID_OF[$TUN1]}" "${PID_OF[$TUN2]}")
	wait_for_handshake "$NS1" "$INNER2"
}

# bring_down IMPL
bring_down() {
	[[ $1 == raw ]] || stop_pair
}

# Largest VmHWM (kB) of the tunnel processes.
peak_rss_kb() {
	local pid max=0 kb
	for pid in "${TUNNEL_PIDS[@]}"; do
		kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
		((kb > max)) && max=$kb
	done
	echo "$max"
}

# iperf NAME ARGS...: one iperf3 client run from A to a one-shot server in B,
# JSON saved as $RUN-NAME.json.
iperf() {
	local name=$1 pid deadline json="$RUN-$1.json"
	shift
	ip netns exec "$NS2" iperf3 -s -1 -p 5201 >"$TMP/iperf-server.log" 2>&1 &
	pid=$!
	STARTED_PIDS+=("$pid")
	wait_until 10 "the iperf3 server" eval "ip netns exec $NS2 ss -Htln 'sport = :5201' | grep -q ."
	timeout $((SECS + 30)) ip netns exec "$NS1" iperf3 -c "$DST" -p 5201 -t "$SECS" \
		--connect-timeout 5000 -J "$@" >"$json" || log "iperf3 $name failed: $(jq -r '.error // "?"' "$json" 2>/dev/null)"
	# A one-shot server ends after its test; after a failed test it may not.
	deadline=$((SECONDS + 10))
	while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
	alive "$pid" && kill -TERM "$pid"
	wait "$pid" || true
}

# cpu_seconds BEFORE AFTER: the CPU time between two cpu_ticks readings.
cpu_seconds() {
	awk -v t=$(($2 - $1)) -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz}'
}

measure() {
	local impl=$1 rep=$2 before after
	RUN="$OUT/$impl-r$rep"

	if ((${#TUNNEL_PIDS[@]})); then
		before=$(cpu_ticks "${TUNNEL_PIDS[@]}")
		sleep "$IDLE_SECS"
		after=$(cpu_ticks "${TUNNEL_PIDS[@]}")
		record "$impl" "$rep" idle_cpu_pct "$(awk -v s="$(cpu_seconds "$before" "$after")" -v w="$IDLE_SECS" 'BEGIN {print 100 * s / w}')"
	fi

	before=$(cpu_ticks "${TUNNEL_PIDS[@]}")
	iperf tcp-ab
	tunnels_alive
	after=$(cpu_ticks "${TUNNEL_PIDS[@]}")
	record "$impl" "$rep" tcp_ab_mbps "$(json "$RUN-tcp-ab.json" '.end.sum_received.bits_per_second / 1e6')"
	if ((${#TUNNEL_PIDS[@]})); then
		local cpu bytes
		cpu=$(cpu_seconds "$before" "$after")
		bytes=$(json "$RUN-tcp-ab.json" '.end.sum_received.bytes')
		record "$impl" "$rep" cpu_s "$cpu"
		record "$impl" "$rep" cpu_s_per_gb "$(awk -v c="$cpu" -v b="$bytes" 'BEGIN {print (b > 0) ? c / (b / 1e9) : "nan"}')"
		record "$impl" "$rep" rss_mib "$(awk -v k="$(peak_rss_kb)" 'BEGIN {print k / 1024}')"
	fi

	iperf tcp-ba -R
	record "$impl" "$rep" tcp_ba_mbps "$(json "$RUN-tcp-ba.json" '.end.sum_received.bits_per_second / 1e6')"
	iperf tcp-p4 -P 4
	record "$impl" "$rep" tcp_p4_mbps "$(json "$RUN-tcp-p4.json" '.end.sum_received.bits_per_second / 1e6')"

	timeout 30 ip netns exec "$NS1" ping -c 200 -i 0.01 -W 1 -q "$DST" >"$RUN-ping.txt" 2>&1 || true
	# "rtt min/avg/max/mdev = 0.041/0.062/0.301/0.020 ms[, pipe 2]"
	local rtt
	rtt=$(sed -n 's|^rtt [^=]*= \([0-9./]*\) ms.*|\1|p' "$RUN-ping.txt" | tr / ' ')
	record "$impl" "$rep" ping_avg_ms "$(awk '{print $2}' <<<"${rtt:-nan nan nan}")"
	record "$impl" "$rep" ping_max_ms "$(awk '{print $3}' <<<"${rtt:-nan nan nan}")"

	iperf udp64 -u -b 0 -l 64
	# The server's view: what arrived and what went missing.
	local udp="$RUN-udp64.json"
	record "$impl" "$rep" udp_pps "$(json "$udp" '(.end.sum_received.packets - .end.sum_received.lost_packets) / .end.sum_received.seconds')"
	record "$impl" "$rep" udp_loss_pct "$(json "$udp" '.end.sum_received.lost_percent')"
	tunnels_alive

}

# save_stats IMPL REP: keeps pipevpn's counters (`pipevpn show --json`), read
# before the tunnel goes down.
save_stats() {
	local key
	[[ $1 == pipevpn* ]] || return 0
	for key in "$TUN1" "$TUN2"; do
		fresh_stats "$key" "$OUT/$1-r$2-$key.stats"
	done
}

for ((rep = 1; rep <= REPS; rep++)); do
	bench_order "$rep"
	for impl in "${ORDER[@]}"; do
		scenario "$impl-r$rep"
		log "load $(cut -d' ' -f1 /proc/loadavg)"
		bring_up "$impl"
		measure "$impl" "$rep"
		save_stats "$impl" "$rep"
		bring_down "$impl"
		pass
	done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

# ---- the table ----------------------------------------------------------------

PYTHONPATH="$REPO_ROOT/integration" python3 - "$OUT" "${IMPL_LIST[@]}" <<'EOF' | tee "$OUT/table.md"
import sys
from bench_table import Results, print_head, row
out, impls = sys.argv[1], sys.argv[2:]
rows = [  # metric, label, format, higher is better
    ("tcp_ab_mbps", "TCP A→B, 1 stream (Mbit/s)", "{:.0f}", True),
    ("tcp_ba_mbps", "TCP B→A, 1 stream (Mbit/s)", "{:.0f}", True),
    ("tcp_p4_mbps", "TCP A→B, 4 streams (Mbit/s)", "{:.0f}", True),
    ("ping_avg_ms", "ping RTT average (ms)", "{:.3f}", False),
    ("ping_max_ms", "ping RTT worst (ms)", "{:.3f}", False),
    ("udp_pps", "UDP 64 B, received (packets/s)", "{:.0f}", True),
    ("udp_loss_pct", "UDP 64 B, lost (%)", "{:.1f}", False),
    ("cpu_s", "tunnel CPU during TCP A→B (s, both peers)", "{:.2f}", False),
    ("cpu_s_per_gb", "tunnel CPU per GB, TCP A→B (s/GB)", "{:.2f}", False),
    ("rss_mib", "peak RSS, larger peer (MiB)", "{:.1f}", False),
    ("idle_cpu_pct", "tunnel CPU idle, no traffic (% of a core, both peers)", "{:.2f}", False),
]
names = {"raw": "raw veth", "pipevpn": "pipevpn", "pipevpn-base": "pipevpn (baseline)",
         "wggo": "wireguard-go", "wggo-new": "wireguard-go (new)", "gotatun": "GotaTun",
         "boringtun": "boringtun", "boringtun-1": "boringtun (1 thread)"}
# The other tunnels a user could pick instead of pipevpn.
others = [i for i in impls if i not in ("raw", "pipevpn", "pipevpn-base")]
res = Results(out)
ratios = [(a, b) for a, b in [("pipevpn", "wggo"), ("pipevpn", "wggo-new"), ("pipevpn", "pipevpn-base")]
          if a in impls and b in impls]
best_col = "pipevpn" in impls and others
print_head(["", *(names[i] for i in impls), *(["pipevpn / best other, which (pipevpn ahead: ↑ > 1, ↓ < 1)"] if best_col else []),
            *(f"{names[a]} / {names[b]}" for a, b in ratios)])
for metric, label, fmt, higher in rows:
    line = [label + (" ↑" if higher else " ↓")]
    line += [res.cell(i, metric, fmt) for i in impls]
    if best_col:
        line.append(res.best_other(metric, higher, others, names))
    for a, b in ratios:
        x, y = res.mean(a, metric), res.mean(b, metric)
        line.append(f"{x / y:.2f}" if x is not None and y else "–")
    print(row(line))
print()
print("↑ higher is better, ↓ lower is better; ±: half the spread between repetitions."
      + (" Ratios are pipevpn's figure over the other's: above 1 is better for pipevpn on a ↑ row, "
         "below 1 on a ↓ row; the best other is the highest (↑) or lowest (↓) of the other tunnels."
         if best_col or ratios else ""))
print(res.machine())
EOF
log "raw results and table: $OUT"
scenario measurements
((FAILED == 0)) || fail "$FAILED measurement(s) failed (missing from the table; see $OUT)"
pass
