#!/usr/bin/env bash
# Many peers at once: one hub serving 1, 2 and 4 clients, each client in a
# namespace of its own on its own veth to the hub (lib.sh's make_hub, as in
# hub.sh), and a prober namespace that only makes handshakes. The hub is
# pipevpn, Debian 12's wireguard-go or the newer batching wireguard-go
# (fetch-wggo.sh); the clients are always pipevpn, so only the hub differs.
#
#   c1..c4 (pipevpn)  10.99.0.11-14 ── veth 10.96.C.0/24 ──┐
#                                                          ├── hub 10.99.0.1 (MTU 1420)
#   probe (wire.py)   ─────────────── veth 10.96.9.0/24 ──┘    4 + HS_PEERS [Peer]s
#
# Per hub implementation and repetition (repetitions interleaved, every other
# one in reverse order, as bench.sh does), for N = 1, 2 and 4 clients:
#   tcp   iperf3 TCP from each of clients 1..N to the hub's tunnel address at
#         once (1 stream each, SECS): the sum of their Mbit/s, and the hub
#         process's CPU seconds (/proc/PID/stat utime+stime) per GB received.
#         Client to hub, not client to client: every byte then crosses the hub's
#         tunnel once, so the figure is the hub's own capacity; through-hub
#         traffic (hub.sh checks it works) would cross it twice.
#   hs    the same traffic again, and meanwhile `wire.py handshakes` from the
#         prober: real initiations (Noise IKpsk2 with a valid mac1) from
#         HS_PEERS peers the hub knows, HS_WINDOW in flight at a time, each
#         answered one replaced at once (closed loop), for SECS. Figures: the
#         responses per second, their latency (sendto of the initiation to
#         recvfrom of the response: median and 99th percentile), and the
#         initiations not answered by a response (lost after 1 s, or a cookie
#         reply; a lost one holds its slot for that second, so a hub that
#         drops initiations under traffic scores far lower). HS_WINDOW 8 stays
#         under the queue length at which either hub counts itself under load
#         (pipevpn 16, wireguard-go 128) and would answer with cookie replies;
#         HS_PEERS 256 at one initiation per peer per 25 ms (the 20 ms flood
#         rule of wireguard-go and the kernel) allows 10 k/s. With N = 0 (no
#         traffic), the hub's handshake rate on its own. The hub's CPU over the
#         run (% of one core) tells whose limit the rate is.
# The prober shares the machine's 2 cores: it makes an initiation in about 70
# µs of Python (the newer wireguard-go hub answered it 6.3 k/s), but it does
# take CPU from the hub. Judge by the ratios within a run.
#
# Usage: integration/bench_hub.sh [--quick] [--impls LIST]
#   --quick        1 repetition of 3 s runs instead of 2 of 10 s (about 2
#                  minutes with the three hubs, the full run about 8)
#   --impls LIST   hub implementations, in order (default pipevpn,wggo,wggo-new)
# Environment:
#   PIPEVPN      pipevpn binary (default: cargo build --release, then
#                target/release/pipevpn), the clients' and the pipevpn hub's
#   WGGO_NEW     the newer wireguard-go (default: what fetch-wggo.sh prints)
#   REPS, SECS   override repetitions and seconds per run
#   HS_PEERS, HS_WINDOW  prober peers (256) and initiations in flight (8)
#   BENCH_TIMEOUT  bound for the whole run in seconds (default 1200)
# Output: a markdown table on stdout with pipevpn's ratio to the best
# wireguard-go hub per figure; every value per repetition (results.tsv), the
# iperf3 JSON and prober output under bench-results/hub-<timestamp>/. Progress
# goes to stderr. Needs python3's cryptography module (Debian:
# python3-cryptography) for the prober's X25519 and ChaCha20-Poly1305.

[[ -n ${PIPEVPN:-} ]] || BUILD_PIPEVPN=1
export PV_TIMEOUT=${PV_TIMEOUT:-${BENCH_TIMEOUT:-1200}}
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# stdout is for the table; lib.sh's PASS and FAIL lines go with the progress.
exec 3>&2

bench_args pipevpn,wggo,wggo-new "$@"
HS_PEERS=${HS_PEERS:-256} HS_WINDOW=${HS_WINDOW:-8}
COUNTS=(1 2 4)
IFS=, read -r -a IMPL_LIST <<<"$IMPLS"
OUT="$REPO_ROOT/bench-results/hub-$(date +%Y%m%d-%H%M%S)"

# ---- prerequisites and build ------------------------------------------------

if [[ -n ${BUILD_PIPEVPN:-} ]]; then
	log "cargo build --release"
	(cd "$REPO_ROOT" && cargo build --release --quiet)
fi
require_tools pipevpn wggo
scenario prerequisites-bench-hub
python3 -c 'import cryptography.hazmat.primitives.asymmetric.x25519' 2>/dev/null ||
	fail "python3 has no cryptography module, which the handshake prober needs (Debian: apt-get install python3-cryptography)"
for impl in "${IMPL_LIST[@]}"; do
	case $impl in
	pipevpn | wggo) ;;
	wggo-new) need_bin WGGO_NEW wireguard-go "$REPO_ROOT/integration/fetch-wggo.sh" ;;
	*) fail "unknown hub implementation '$impl' (pipevpn, wggo, wggo-new)" ;;
	esac
done
pass

bench_machine "runs: $REPS repetition(s) of $SECS s, hubs: ${IMPL_LIST[*]}, clients: pipevpn, prober: $HS_PEERS peers, $HS_WINDOW in flight"

# ---- topology -----------------------------------------------------------------

scenario topology
make_hub 4
PROBE_NS="${PREFIX}p" PROBE_UNDER=10.96.9.2 HUB_PROBE_UNDER=10.96.9.1
add_ns "$PROBE_NS"
link_ns "$PROBE_NS" "${PREFIX}pv" "$PROBE_UNDER" "$HUB_NS" "${PREFIX}hv9" "$HUB_PROBE_UNDER"
hub_conf
# The prober's peers: keys of their own, an address each outside the tunnel
# subnet (10.95.0.0/16), no endpoint (the prober starts).
: >"$TMP/probe.keys"
for ((i = 0; i < HS_PEERS; i++)); do
	gen_keys "p$i"
	echo "${PRIV[p$i]}" >>"$TMP/probe.keys"
	printf '\n[Peer]\nPublicKey = %s\nAllowedIPs = 10.95.%s.%s/32\n' "${PUB[p$i]}" $((i / 250)) $((i % 250 + 1)) >>"$TMP/hub.conf"
done
wait_until 10 "the prober's veth" ip netns exec "$PROBE_NS" ping -c1 -W1 "$HUB_PROBE_UNDER"
pass

# bring_up IMPL: the hub as IMPL, then the four pipevpn clients and their first
# handshakes; TUNNEL_PIDS all five, HUB_PID the hub's.
bring_up() {
	local c
	case $1 in
	pipevpn) start_impl pipevpn "$HUB_NS" "$HUB_TUN" "$TMP/hub.conf" ;;
	wggo) start_impl wggo "$HUB_NS" "$HUB_TUN" "$TMP/hub.conf" ;;
	wggo-new) WGGO_BIN=$WGGO_NEW start_impl wggo "$HUB_NS" "$HUB_TUN" "$TMP/hub.conf" ;;
	esac
	HUB_PID=${PID_OF[$HUB_TUN]}
	TUNNEL_PIDS=("$HUB_PID")
	for c in "${CLIENTS[@]}"; do
		start_impl pipevpn "${C_NS[$c]}" "${C_TUN[$c]}" "$TMP/c$c.conf"
		TUNNEL_PIDS+=("${PID_OF[${C_TUN[$c]}]}")
	done
	for c in "${CLIENTS[@]}"; do
		wait_for_handshake "${C_NS[$c]}" "$HUB_INNER"
	done
}

# bring_down: SIGTERM to the clients and the hub; each must exit 0.
bring_down() {
	local key
	for key in "${C_TUN[@]}" "$HUB_TUN"; do
		stop_impl "$key"
		[[ $STOP_RC == 0 ]] || fail "${IMPL_OF[$key]} on $key exited with status $STOP_RC after SIGTERM"
	done
}

# traffic NAME N: iperf3 from clients 1..N to the hub at once, SECS, in the
# background; traffic_wait NAME N: waits, then TRAFFIC_MBPS (sum) and
# TRAFFIC_BYTES (received in all).
traffic() {
	local c
	for ((c = 1; c <= $2; c++)); do
		iperf_between "$1-c$c" "$SECS" "$HUB_NS" "$HUB_INNER" "${C_NS[$c]}" $((5200 + c))
	done
}
traffic_wait() {
	local c
	TRAFFIC_MBPS=0 TRAFFIC_BYTES=0
	for ((c = 1; c <= $2; c++)); do
		iperf_wait "$1-c$c"
		cp "$TMP/$1-c$c.json" "$RUN-$1-c$c.json"
		TRAFFIC_MBPS=$((TRAFFIC_MBPS + IPERF_MBPS)) TRAFFIC_BYTES=$((TRAFFIC_BYTES + IPERF_BYTES))
	done
}

measure() {
	local impl=$1 rep=$2 n before after cpu hs start
	RUN="$OUT/$impl-r$rep"
	for n in "${COUNTS[@]}"; do
		before=$(cpu_ticks "$HUB_PID")
		traffic "tcp$n" "$n"
		traffic_wait "tcp$n" "$n"
		after=$(cpu_ticks "$HUB_PID")
		tunnels_alive
		cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz}')
		record "$impl" "$rep" "tcp_n${n}_mbps" "$TRAFFIC_MBPS"
		record "$impl" "$rep" "cpu_s_per_gb_n$n" "$(awk -v c="$cpu" -v b="$TRAFFIC_BYTES" 'BEGIN {print (b > 0) ? c / (b / 1e9) : "nan"}')"
	done
	for n in 0 "${COUNTS[@]}"; do
		before=$(cpu_ticks "$HUB_PID") start=$(date +%s%N)
		((n == 0)) || traffic "hs$n" "$n"
		hs="$RUN-hs$n.json"
		timeout $((SECS + 30)) ip netns exec "$PROBE_NS" python3 "$WIRE" handshakes "${PUB[hub]}" \
			"$HUB_PROBE_UNDER" "$PORT" "$TMP/probe.keys" "$SECS" "$HS_WINDOW" >"$hs" ||
			log "the handshake prober failed: $(cat "$hs")"
		((n == 0)) || traffic_wait "hs$n" "$n"
		after=$(cpu_ticks "$HUB_PID")
		tunnels_alive
		# Near 100 % the hub is the limit, well below it the prober is.
		record "$impl" "$rep" "hs_n${n}_hub_cpu_pct" "$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
			-v ns=$(($(date +%s%N) - start)) 'BEGIN {print 100 * t / hz / (ns / 1e9)}')"
		record "$impl" "$rep" "hs_n${n}_per_s" "$(json "$hs" .per_second)"
		record "$impl" "$rep" "hs_n${n}_p50_ms" "$(json "$hs" .latency_ms.p50)"
		record "$impl" "$rep" "hs_n${n}_p99_ms" "$(json "$hs" .latency_ms.p99)"
		record "$impl" "$rep" "hs_n${n}_unanswered" "$(json "$hs" '.lost + .cookies')"
	done
}

for ((rep = 1; rep <= REPS; rep++)); do
	bench_order "$rep"
	for impl in "${ORDER[@]}"; do
		scenario "hub-$impl-r$rep"
		log "load $(cut -d' ' -f1 /proc/loadavg)"
		bring_up "$impl"
		measure "$impl" "$rep"
		bring_down
		pass
	done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

# ---- the table ----------------------------------------------------------------

PYTHONPATH="$REPO_ROOT/integration" python3 - "$OUT" "${COUNTS[*]}" "${IMPL_LIST[@]}" <<'EOF' | tee "$OUT/table.md"
import sys
from bench_table import Results, print_head, row
out, counts, impls = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
rows = []  # metric, label, format, higher is better (None: neither, no ratio)
for n in counts:
    rows.append((f"tcp_n{n}_mbps", f"TCP to the hub, {n} client(s), sum (Mbit/s)", "{:.0f}", True))
for n in counts:
    rows.append((f"cpu_s_per_gb_n{n}", f"hub CPU per GB, {n} client(s) (s/GB)", "{:.2f}", False))
for n in ["0"] + counts:
    during = "no traffic" if n == "0" else f"during TCP from {n} client(s)"
    rows.append((f"hs_n{n}_per_s", f"handshakes answered, {during} (/s)", "{:.0f}", True))
    rows.append((f"hs_n{n}_p50_ms", f"handshake latency median, {during} (ms)", "{:.2f}", False))
    rows.append((f"hs_n{n}_p99_ms", f"handshake latency p99, {during} (ms)", "{:.2f}", False))
    rows.append((f"hs_n{n}_unanswered", f"initiations unanswered, {during}", "{:.0f}", False))
    # Whose limit the rate is, not a score: a hub that answers more uses more.
    rows.append((f"hs_n{n}_hub_cpu_pct", f"hub CPU, handshakes {during} (% of a core)", "{:.0f}", None))
names = {"pipevpn": "pipevpn hub", "wggo": "wireguard-go hub", "wggo-new": "wireguard-go (new) hub"}
others = [i for i in impls if i != "pipevpn"]
res = Results(out)
best_col = "pipevpn" in impls and others
print_head(["", *(names[i] for i in impls), *(["pipevpn / best other, which"] if best_col else [])])
for metric, label, fmt, higher in rows:
    line = [label + {True: " ↑", False: " ↓", None: ""}[higher]]
    line += [res.cell(i, metric, fmt) for i in impls]
    if best_col:
        line.append(res.best_other(metric, higher, others, names))
    print(row(line))
print()
print("↑ higher is better, ↓ lower is better; ±: half the spread between repetitions. "
      "Clients always pipevpn; ratios are pipevpn's figure over the best wireguard-go hub's.")
print(res.machine())
EOF
log "raw results and table: $OUT"
scenario measurements
((FAILED == 0)) || fail "$FAILED measurement(s) failed (missing from the table; see $OUT)"
pass
