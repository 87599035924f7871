#!/usr/bin/env bash
# wg-quick's [Interface] keys in `pipevpn up`, on B (ns2, the side without an Endpoint):
# - PreUp, PostUp, PreDown, PostDown: each hook appends "%i <hook>" to a file, so the
#   file shows the order and that %i became the interface name; PreUp runs once the
#   interface exists but before it has an address, PostDown once it is gone; a hook
#   keeps a `#` of its line; a hook's stdout lands in pipevpn's log;
# - Table = off: B's Address is a /32, so B has no route back to A but the one its
#   PostUp hook adds (metric 7); the tunnel carries pings, and `ip route` differs from
#   before only by that route, with no route record;
# - FwMark: B's UDP socket carries the mark (ss -e);
# - DNS, through a fake resolvconf first in PATH that appends its arguments and stdin
#   to the same file (the machine's resolver is never touched): `-a IFACE -m 0 -x` with
#   wg-quick's nameserver and search lines after the addresses are set, `-d IFACE -f`
#   after the interface is gone and before PostDown; a resolvconf that fails, and one
#   missing from PATH, fail `up` naming the DNS line;
# - SaveConfig: on exit B's file (mode 0644 before) is rewritten, mode 0600, with every
#   key it had, no comment, and A's Endpoint that B learned; B starts again from it and
#   now initiates; started through a symbolic link, the file it names is rewritten and
#   the link stays;
# - a failing PreDown (exit 6) and PostDown (exit 7) hook: the teardown still runs (the
#   interface goes, the PostDown hook runs, SaveConfig still writes), and the exit
#   status is 2 with the PreDown hook's file, line and status in the message;
# - a failing PostUp hook (exit 3) or PreUp hook (exit 4): exit status 2, the message
#   names the file, the hook's line and its exit status, no PreDown/PostDown hook runs
#   (as in wg-quick), the DNS settings are taken back, and no interface, route or route
#   record is left;
# - Table = N (this run's number), AllowedIPs A's address and 0.0.0.0/0, a PostUp hook
#   `ip rule add ... to A lookup N`: both routes land in table N as written (the /0 a
#   /0), the main table is as before, the record lists them with their table, pings
#   flow both ways, and stop without the rule (the control); after exit table N is
#   empty and the PostDown hook took the rule away.
# shellcheck source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools pipevpn

scenario topology
make_topology
setup_pair a no
HOOKS="$TMP/hooks"
before=$(route_snapshot "$NS2")
# The fake resolvconf: `resolvconf ARGS` and, for -a, its stdin indented; FAIL_ADD=N
# makes -a exit N.
mkdir "$TMP/bin"
cat >"$TMP/bin/resolvconf" <<FAKE
#!/bin/bash
{ echo "resolvconf \$*"; [[ \$1 != -a ]] || sed 's/^/  /'; } >>$HOOKS
[[ \$1 != -a || -z \${FAIL_ADD:-} ]] || exit \$FAIL_ADD
FAKE
chmod 755 "$TMP/bin/resolvconf"
pass

# b_conf FILE LINES...: B's config, Address a /32, with LINES added to [Interface].
b_conf() {
	local file=$1
	shift
	sed -e "s|^Address = .*|Address = $INNER2/32|" "$TMP/b.conf" >"$file"
	printf '%s\n' "$@" | sed -i "/^MTU = /r /dev/stdin" "$file"
	chmod 600 "$file"
}

# line_of FILE TEXT: the number of the first line of FILE holding TEXT.
line_of() { grep -nF -- "$2" "$1" | head -n1 | cut -d: -f1; }

# up_fails CONF: `pipevpn up` on B must fail; its output is in UP_OUT, exit status in UP_RC.
up_fails() {
	UP_RC=0
	echo "+ [$NS2] $PIPEVPN up $1 --interface $TUN2" >&2
	ip netns exec "$NS2" timeout --foreground 20 "$PIPEVPN" up "$1" --interface "$TUN2" >"$TMP/up.out" 2>&1 || UP_RC=$?
	UP_OUT=$(cat "$TMP/up.out")
	log "exit $UP_RC: $UP_OUT"
	((UP_RC == 2)) || fail "exit status $UP_RC, expected 2: $UP_OUT"
}

# nothing_left: no interface, the routes of before, no route record on B.
nothing_left() {
	! iface_exists "$NS2" "$TUN2" || fail "$TUN2 is left behind"
	same_routes "$NS2" "$before"
	[[ ! -e ${RUN_DIR_OF[$NS2]}/$TUN2.routes ]] || fail "a route record is left behind"
}

scenario hooks-table-off-fwmark
b_conf "$TMP/b-hooks.conf" \
	"Table = off" \
	"FwMark = 0x51820" \
	"DNS = 10.99.0.53, fd99::53 vpn.test" \
	"DNS = corp.test" \
	"SaveConfig = true # and a comment" \
	"PreUp = echo \"%i preup, addresses: \$(ip -o addr show dev %i | wc -l)\" >>$HOOKS" \
	"PostUp = ip route add $INNER1/32 dev %i metric 7" \
	"PostUp = echo \"%i postup #2\" >>$HOOKS; echo hello from %i" \
	"PreDown = echo \"%i predown, \$(ip link show dev %i >/dev/null 2>&1 && echo present || echo gone)\" >>$HOOKS" \
	"PostDown = echo \"%i postdown, \$(ip link show dev %i >/dev/null 2>&1 && echo present || echo gone)\" >>$HOOKS"
PATH="$TMP/bin:$PATH" start_pipevpn "$NS2" "$TMP/b-hooks.conf" "$TUN2"
chmod 644 "$TMP/b-hooks.conf"
start_pipevpn "$NS1" "$TMP/a.conf" "$TUN1"
wait_for_handshake "$NS1" "$INNER2"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
added=$(diff <(echo "$before") <(route_snapshot "$NS2") | sed -n 's/^> //p' || true)
[[ $added == "$INNER1 dev $TUN2 scope link metric 7" ]] ||
	fail "with Table = off, the routes added are not just the PostUp hook's: '$added'"
[[ ! -e ${RUN_DIR_OF[$NS2]}/$TUN2.routes ]] || fail "a route record exists with Table = off"
sockets=$(ip netns exec "$NS2" ss -u -a -e -n "sport = :$PORT")
log "$sockets"
[[ $sockets == *"fwmark:0x51820"* ]] || fail "B's UDP socket does not carry fwmark 0x51820: $sockets"
grep -q "hello from $TUN2" "$TMP/$TUN2.log" || fail "the PostUp hook's output is not in pipevpn's log"
stop_impl "$TUN2"
[[ $STOP_RC == 0 ]] || fail "exit status $STOP_RC after SIGTERM, expected 0"
expected="$TUN2 preup, addresses: 0
resolvconf -a $TUN2 -m 0 -x
  nameserver 10.99.0.53
  nameserver fd99::53
  search vpn.test corp.test
$TUN2 postup #2
$TUN2 predown, present
resolvconf -d $TUN2 -f
$TUN2 postdown, gone"
[[ $(cat "$HOOKS") == "$expected" ]] || fail "the hooks wrote:
$(cat "$HOOKS")
expected:
$expected"
nothing_left
pass

scenario saveconfig
conf="$TMP/b-hooks.conf"
log "saved config:"$'\n'"$(grep -v PrivateKey "$conf")"
[[ $(stat -c %a "$conf") == 600 ]] || fail "the saved config has mode $(stat -c %a "$conf"), expected 600"
grep -qx "Endpoint = $UNDER1:$PORT" "$conf" || fail "the saved config lacks the learned 'Endpoint = $UNDER1:$PORT'"
! grep -q 'and a comment' "$conf" || fail "the saved config kept a comment"
for want in "PrivateKey = ${PRIV[b]}" "Address = $INNER2/32" "ListenPort = $PORT" "MTU = 1420" \
	"FwMark = 0x51820" "DNS = 10.99.0.53, fd99::53, vpn.test, corp.test" "Table = off" \
	"PostUp = echo \"%i postup #2\" >>$HOOKS; echo hello from %i" "SaveConfig = true" \
	"PublicKey = ${PUB[a]}" "AllowedIPs = $INNER1/32"; do
	grep -qxF -- "$want" "$conf" || fail "the saved config lacks '$want'"
done
[[ $(grep -c '^P[a-z]*\(Up\|Down\) = ' "$conf") == 5 ]] || fail "the saved config does not have the 5 hooks"
[[ ! -e $conf.tmp ]] || fail "$conf.tmp is left behind"
rm -f "$HOOKS"
PATH="$TMP/bin:$PATH" start_pipevpn "$NS2" "$conf" "$TUN2"
grep -q "peer at $UNDER1:$PORT" "$TMP/$TUN2.log" || fail "B did not start from the saved Endpoint"
wait_for_handshake "$NS2" "$INNER1"
ping_ok "$NS1" "$INNER2"
stop_impl "$TUN2"
[[ $STOP_RC == 0 ]] || fail "exit status $STOP_RC after SIGTERM, expected 0"
stop_impl "$TUN1"
pass

scenario failing-postup-undoes-everything
rm -f "$HOOKS"
b_conf "$TMP/b-postup.conf" \
	"DNS = 10.99.0.53" \
	"PostUp = ip route add 10.55.0.0/16 dev %i" \
	"PostUp = exit 3" \
	"PreDown = echo \"%i predown\" >>$HOOKS" \
	"PostDown = echo \"%i postdown\" >>$HOOKS"
PATH="$TMP/bin:$PATH" up_fails "$TMP/b-postup.conf"
line=$(line_of "$TMP/b-postup.conf" "exit 3")
[[ $UP_OUT == *"pipevpn: $TMP/b-postup.conf:$line: PostUp hook 'exit 3' failed (exit status: 3)"* ]] ||
	fail "the message does not name the file, line $line and the exit status: $UP_OUT"
expected="resolvconf -a $TUN2 -m 0 -x
  nameserver 10.99.0.53
resolvconf -d $TUN2 -f"
[[ $(cat "$HOOKS") == "$expected" ]] || fail "after a failed PostUp the hooks and resolvconf wrote:
$(cat "$HOOKS")
expected (no down hooks, DNS taken back):
$expected"
nothing_left
pass

scenario failing-preup-undoes-everything
rm -f "$HOOKS"
b_conf "$TMP/b-preup.conf" "PreUp = exit 4" "PostDown = echo \"%i postdown\" >>$HOOKS"
up_fails "$TMP/b-preup.conf"
line=$(line_of "$TMP/b-preup.conf" "exit 4")
[[ $UP_OUT == *"pipevpn: $TMP/b-preup.conf:$line: PreUp hook 'exit 4' failed (exit status: 4)"* ]] ||
	fail "the message does not name the file, line $line and the exit status: $UP_OUT"
[[ ! -e $HOOKS ]] || fail "a down hook ran after a failed PreUp: $(cat "$HOOKS")"
nothing_left
pass

scenario failing-resolvconf-undoes-everything
rm -f "$HOOKS"
b_conf "$TMP/b-dns.conf" "DNS = 10.99.0.53" "PostDown = echo \"%i postdown\" >>$HOOKS"
FAIL_ADD=5 PATH="$TMP/bin:$PATH" up_fails "$TMP/b-dns.conf"
line=$(line_of "$TMP/b-dns.conf" "DNS =")
[[ $UP_OUT == *"pipevpn: $TMP/b-dns.conf:$line: DNS: $TMP/bin/resolvconf -a $TUN2 -m 0 -x failed (exit status: 5)"* ]] ||
	fail "the message does not name the file, the DNS line $line and resolvconf's exit status: $UP_OUT"
[[ $(head -n1 "$HOOKS") == "resolvconf -a $TUN2 -m 0 -x" ]] || fail "resolvconf was not run: $(cat "$HOOKS")"
! grep -q postdown "$HOOKS" || fail "a down hook ran after a failed up"
nothing_left
pass

scenario missing-resolvconf
rm -f "$HOOKS"
mkdir "$TMP/empty"
ip netns exec "$NS2" env PATH="$TMP/empty" "$PIPEVPN" up "$TMP/b-dns.conf" --interface "$TUN2" >"$TMP/up.out" 2>&1 && rc=0 || rc=$?
UP_OUT=$(cat "$TMP/up.out")
((rc == 2)) || fail "exit status $rc without resolvconf, expected 2: $UP_OUT"
[[ $UP_OUT == "pipevpn: $TMP/b-dns.conf:$line: DNS needs resolvconf, which is not in PATH"* ]] ||
	fail "the message does not name the DNS line $line and the missing resolvconf: $UP_OUT"
[[ ! -e $HOOKS ]] || fail "something ran without resolvconf: $(cat "$HOOKS")"
nothing_left
pass

scenario failing-down-hooks
rm -f "$HOOKS"
b_conf "$TMP/b-down.conf" \
	"SaveConfig = true" \
	"PreDown = exit 6" \
	"PostDown = echo \"%i postdown, \$(ip link show dev %i >/dev/null 2>&1 && echo present || echo gone)\" >>$HOOKS; exit 7"
ln -s "$TMP/b-down.conf" "$TMP/b-link.conf"
line=$(line_of "$TMP/b-down.conf" "exit 6") # before SaveConfig reorders the file
start_pipevpn "$NS2" "$TMP/b-link.conf" "$TUN2"
stop_impl "$TUN2"
[[ $STOP_RC == 2 ]] || fail "exit status $STOP_RC after failing down hooks, expected 2"
grep -qF "pipevpn: $TMP/b-link.conf:$line: PreDown hook 'exit 6' failed (exit status: 6)" "$TMP/$TUN2.log" ||
	fail "the exit's error does not name the PreDown hook's line $line: $(tail -n 3 "$TMP/$TUN2.log")"
grep -qF "PostDown hook" "$TMP/$TUN2.log" || fail "the failing PostDown hook is not logged"
[[ $(cat "$HOOKS") == "$TUN2 postdown, gone" ]] || fail "the PostDown hook did not run after the teardown: $(cat "$HOOKS" 2>/dev/null)"
[[ -L $TMP/b-link.conf ]] || fail "SaveConfig replaced the symbolic link instead of the file it names"
grep -q '^SaveConfig = true$' "$TMP/b-down.conf" && [[ $(stat -c %a "$TMP/b-down.conf") == 600 ]] ||
	fail "SaveConfig did not rewrite $TMP/b-down.conf (mode 0600)"
nothing_left
pass

scenario table-number
# A table and a rule priority of this run's own (after the topology's rules).
TABLE=$((1000 + $$ % 30000))
PREF=$((1000 + $$ % 30000))
rm -f "$HOOKS"
b_conf "$TMP/b-table.conf" \
	"Table = $TABLE" \
	"PostUp = ip rule add pref $PREF to $INNER1 lookup $TABLE" \
	"PostDown = ip rule del pref $PREF"
# A /0 besides A's address: in table N it stays a /0.
sed -i "s|^AllowedIPs = .*|AllowedIPs = $INNER1/32, 0.0.0.0/0|" "$TMP/b-table.conf"
ROUTES_PY='import json, sys; [print(r["dst"], "dev", r["dev"]) for r in json.load(sys.stdin)]'
# table_routes: TABLE_NOW = table $TABLE in ns2 (both families), "DST dev DEV" lines;
# a family without a route in it has no table at all for the kernel.
table_routes() {
	local family json
	TABLE_NOW=""
	for family in -4 -6; do
		if json=$(ip netns exec "$NS2" ip -j "$family" route show table "$TABLE" 2>"$TMP/table.err"); then
			TABLE_NOW+=$(python3 -c "$ROUTES_PY" <<<"$json")$'\n' ||
				fail "ip -j $family route show table $TABLE gave no JSON: $json"
		else
			grep -q "FIB table does not exist" "$TMP/table.err" ||
				fail "ip $family route show table $TABLE: $(cat "$TMP/table.err")"
		fi
	done
	TABLE_NOW=$(sort <<<"$TABLE_NOW" | sed '/^$/d')
}
start_pipevpn "$NS2" "$TMP/b-table.conf" "$TUN2"
start_pipevpn "$NS1" "$TMP/a.conf" "$TUN1"
wait_for_handshake "$NS1" "$INNER2"
ping_ok "$NS1" "$INNER2"
ping_ok "$NS2" "$INNER1"
expected="$INNER1 dev $TUN2
default dev $TUN2"
table_routes
[[ $TABLE_NOW == "$expected" ]] || fail "table $TABLE holds:
$TABLE_NOW
expected:
$expected"
# The main table is untouched: no 0/1 + 128/1 split, no endpoint host route.
same_routes "$NS2" "$before"
record="${RUN_DIR_OF[$NS2]}/$TUN2.routes"
grep -qx "$INNER1/32 dev $TUN2 table $TABLE" "$record" && grep -qx "0.0.0.0/0 dev $TUN2 table $TABLE" "$record" ||
	fail "the route record does not list the routes of table $TABLE: $(cat "$record")"
# The control: without the PostUp rule, B's answers have no route back.
in_ns "$NS2" ip rule del pref "$PREF"
! in_ns "$NS1" ping -c2 -i0.2 -W1 -q "$INNER2" >&2 || fail "A's pings are answered without the rule to table $TABLE"
in_ns "$NS2" ip rule add pref "$PREF" to "$INNER1" lookup "$TABLE"
ping_ok "$NS1" "$INNER2"
stop_impl "$TUN2"
[[ $STOP_RC == 0 ]] || fail "exit status $STOP_RC after SIGTERM, expected 0"
table_routes
[[ -z $TABLE_NOW ]] || fail "table $TABLE still holds: $TABLE_NOW"
[[ $(ip netns exec "$NS2" ip rule show pref "$PREF") == "" ]] || fail "the PostDown hook did not delete the rule"
stop_impl "$TUN1"
nothing_left
pass
