#!/usr/bin/env bash
# The Debian package (packaging/build-deb.sh) on this machine: built, installed
# with dpkg -i, its binaries' --version, each man page rendered by `man -l`
# without a word on stderr, bash and fish completions loaded from their
# standard places and completing a subcommand, zsh's in zsh's default fpath
# and parsed by zsh, then removed (/etc/pipevpn kept) and purged,
# leaving the package's directories as they were; a purge keeps an
# /etc/pipevpn that holds a file. Unlike the netns scripts it changes this
# machine's /usr and /etc, so it runs only where pipevpn is not installed
# and /etc/pipevpn does not exist; the cleanup purges the package whatever
# happened. Run by .ci/run after the tests; needs root, cargo, cargo-deb,
# dpkg, man-db, bash-completion, zsh and fish.

# Building may compile from scratch on a slow machine.
export PV_TIMEOUT=${PV_TIMEOUT:-900}
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

PACKAGE=pipevpn
ETC=/etc/pipevpn
BASH_COMPLETION=/usr/share/bash-completion/bash_completion
# The word completed and what it must complete to (a subcommand with no
# other subcommand sharing its first letters).
COMPLETE_WORD=sh COMPLETE_TO=show
# Where the package puts files (dpkg -L), which must be as before afterwards.
DIRS=(/usr/bin /usr/share/man/man8 /usr/share/bash-completion/completions
	/usr/share/zsh/vendor-completions /usr/share/fish/vendor_completions.d
	/usr/share/doc/$PACKAGE /lib/systemd/system "$ETC")

# installed: whether dpkg has the package installed or half-installed.
installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$PACKAGE" 2>/dev/null) != @(|not-installed) ]]
}

# snapshot: every path under DIRS with its mode and owner, or that it is absent.
snapshot() {
	local d
	for d in "${DIRS[@]}"; do
		if [[ -e $d ]]; then
			find "$d" -xdev -printf '%p %M %u:%g\n'
		else
			echo "absent $d"
		fi
	done | sort
}

# remove_package (cleanup hook): purges the package and, since it was absent
# at the start, removes /etc/pipevpn with what this script put there.
ETC_IS_OURS=no
remove_package() {
	if installed; then
		echo "+ dpkg --purge $PACKAGE (cleanup)" >&2
		dpkg --purge "$PACKAGE" >&2
	fi
	[[ $ETC_IS_OURS == yes ]] && rm -rf "$ETC"
	return 0
}

# same_as_before: DIRS as the snapshot taken before the install.
same_as_before() {
	local now
	now=$(snapshot)
	[[ $now == "$BEFORE" ]] || fail "left behind or changed after $1:
$(diff <(echo "$BEFORE") <(echo "$now") | grep '^[<>]')"
}

scenario prerequisites
[[ $(id -u) == 0 ]] || fail "must run as root (dpkg -i)"
missing=()
for t in cargo dpkg dpkg-deb dpkg-query man gzip find zsh fish; do
	command -v "$t" >/dev/null || missing+=("$t")
done
((${#missing[@]} == 0)) || fail "missing tools: ${missing[*]} (Debian: apt-get install man-db dpkg gzip findutils zsh fish)"
[[ -r $BASH_COMPLETION ]] || fail "$BASH_COMPLETION is missing (Debian: apt-get install bash-completion)"
cargo deb --version >/dev/null 2>&1 || fail "cargo-deb is missing (cargo install cargo-deb --locked)"
! installed || fail "$PACKAGE is installed on this machine already; this test installs and purges it: dpkg --purge $PACKAGE first"
[[ ! -e $ETC ]] || fail "$ETC exists already; this test creates and removes it: move it away first"
ETC_IS_OURS=yes
CLEANUP_HOOKS+=(remove_package)
BEFORE=$(snapshot)
pass

scenario build
out=$(bash "$REPO_ROOT/packaging/build-deb.sh" 2>"$TMP/build.log") || {
	tail -n 30 "$TMP/build.log" >&2
	fail "packaging/build-deb.sh failed (its last lines above)"
}
DEB=$(tail -n 1 <<<"$out")
[[ $DEB == *.deb && -f $DEB ]] || fail "build-deb.sh printed no package path (got '$DEB')"
VERSION=$(dpkg-deb -f "$DEB" Version)
[[ $(dpkg-deb -f "$DEB" Package) == "$PACKAGE" ]] || fail "$DEB is not the $PACKAGE package"
dpkg-deb -c "$DEB" | awk '{ print $1, $6 }' >"$TMP/contents"
log "$DEB ($VERSION):"$'\n'"$(cat "$TMP/contents")"
info "$(basename "$DEB"): $(stat -c %s "$DEB") bytes, $(grep -vc '^d' "$TMP/contents") files"
pass

scenario install
echo "+ dpkg -i $DEB" >&2
dpkg -i "$DEB" >&2 || fail "dpkg -i $DEB failed"
installed || fail "dpkg does not list $PACKAGE as installed after dpkg -i"
[[ $(stat -c '%a %U' "$ETC") == "700 root" ]] || fail "$ETC is $(stat -c '%a %U' "$ETC"), expected mode 700 owned by root"
pass

scenario binaries
for bin in pipevpn pipevpnd; do
	[[ $(command -v "$bin") == /usr/bin/$bin ]] || fail "$bin is not found as /usr/bin/$bin in PATH"
	got=$("/usr/bin/$bin" --version) || fail "/usr/bin/$bin --version failed"
	# The package's version less its Debian revision.
	[[ $got == "$bin ${VERSION%-*}" ]] || fail "/usr/bin/$bin --version printed '$got', expected '$bin ${VERSION%-*}'"
done
pass

scenario systemd-unit
# The template unit, as shipped; not enabled (an instance is the admin's choice).
UNIT=/lib/systemd/system/pipevpn@.service
dpkg -L "$PACKAGE" | grep -qx "$UNIT" || fail "the package does not list $UNIT"
cmp -s "$UNIT" "$REPO_ROOT/packaging/systemd/pipevpn@.service" || fail "$UNIT differs from packaging/systemd/pipevpn@.service"
[[ $(stat -c '%a %U' "$UNIT") == "644 root" ]] || fail "$UNIT is $(stat -c '%a %U' "$UNIT"), expected 644 root"
pass

scenario man-pages
pages=$(dpkg -L "$PACKAGE" | grep '^/usr/share/man/man8/.*\.8\.gz$' | sort)
want="pipevpn-demo pipevpn-genkey pipevpn-pubkey pipevpn-show pipevpn-up pipevpn pipevpnd"
for name in $want; do
	grep -qx "/usr/share/man/man8/$name.8.gz" <<<"$pages" || fail "no page $name.8.gz in the package:
$pages"
	# man finds it where it belongs, by name and section.
	[[ $(man -w 8 "$name") == "/usr/share/man/man8/$name.8.gz" ]] || fail "man -w 8 $name finds '$(man -w 8 "$name" 2>&1)'"
done
for page in $pages; do
	text=$(MANWIDTH=80 man -l "$page" 2>"$TMP/man.err") || fail "man -l $page failed: $(cat "$TMP/man.err")"
	[[ ! -s $TMP/man.err ]] || fail "man -l $page wrote to stderr: $(cat "$TMP/man.err")"
	name=$(basename "$page" .8.gz)
	grep -A1 '^NAME' <<<"$text" | grep -Eq "^ *$name +- " || fail "man -l $page has no NAME line for $name:
$(head -n 8 <<<"$text")"
done
pass

scenario completions
# bash-completion's own loader finds the file by the command's name in its
# standard directory, as an interactive shell does on the first Tab.
bash_complete() {
	bash -c '
		source "$1"
		__load_completion "$2" || exit 3
		spec=$(complete -p "$2") || exit 4
		func=${spec##*-F }
		func=${func%% *}
		COMP_WORDS=("$2" "$3")
		COMP_CWORD=1
		COMP_LINE="$2 $3"
		COMP_POINT=${#COMP_LINE}
		"$func" "$2" "$3" "$2"
		printf "%s\n" "${COMPREPLY[@]}"' _ "$BASH_COMPLETION" "$1" "$2"
}
# fish loads a command's completions from its vendor directory on first use;
# a home of this run's own keeps any user's completions out.
fish_complete() {
	mkdir -p "$TMP/home"
	HOME=$TMP/home XDG_CONFIG_HOME=$TMP/home/.config XDG_DATA_HOME=$TMP/home/.local/share \
		fish -c 'complete -C"$argv[1] $argv[2]"' "$1" "$2" | cut -f1
}
for shell in bash fish; do
	got=$("${shell}_complete" pipevpn "$COMPLETE_WORD") || fail "$shell: no completion loaded for pipevpn (status $?)"
	[[ $got == "$COMPLETE_TO" ]] || fail "$shell: pipevpn $COMPLETE_WORD<Tab> offers '$(tr '\n' ' ' <<<"$got")', expected '$COMPLETE_TO'"
	got=$("${shell}_complete" pipevpnd --fo) || fail "$shell: no completion loaded for pipevpnd (status $?)"
	[[ $got == --foreground ]] || fail "$shell: pipevpnd --fo<Tab> offers '$(tr '\n' ' ' <<<"$got")', expected '--foreground'"
done
zsh -fc 'print -l $fpath' | grep -qx /usr/share/zsh/vendor-completions ||
	fail "/usr/share/zsh/vendor-completions is not in zsh's default fpath"
for bin in pipevpn pipevpnd; do
	zsh -n "/usr/share/zsh/vendor-completions/_$bin" 2>"$TMP/zsh.err" ||
		fail "zsh cannot parse _$bin: $(cat "$TMP/zsh.err")"
done
pass

scenario remove-and-purge
echo "+ dpkg -r $PACKAGE" >&2
dpkg -r "$PACKAGE" >&2 || fail "dpkg -r $PACKAGE failed"
for bin in pipevpn pipevpnd; do
	[[ ! -e /usr/bin/$bin ]] || fail "/usr/bin/$bin is left after dpkg -r"
done
[[ -d $ETC ]] || fail "dpkg -r removed $ETC: configuration is kept until a purge"
echo "+ dpkg --purge $PACKAGE" >&2
dpkg --purge "$PACKAGE" >&2 || fail "dpkg --purge $PACKAGE failed"
! installed || fail "dpkg still lists $PACKAGE after --purge"
same_as_before "dpkg -r and dpkg --purge"
pass

scenario purge-keeps-configs
echo "+ dpkg -i $DEB" >&2
dpkg -i "$DEB" >&2 || fail "dpkg -i $DEB failed"
echo "[Interface]" >"$ETC/kept.conf"
echo "+ dpkg --purge $PACKAGE" >&2
dpkg --purge "$PACKAGE" >"$TMP/purge.log" 2>&1 || fail "dpkg --purge $PACKAGE failed: $(cat "$TMP/purge.log")"
[[ -f $ETC/kept.conf ]] || fail "dpkg --purge removed $ETC/kept.conf, a file the package did not put there"
grep -q "$ETC is not empty" "$TMP/purge.log" || fail "dpkg --purge did not say why $ETC stays: $(cat "$TMP/purge.log")"
rm -r "$ETC"
same_as_before "the purge of a package whose $ETC held a file, that file removed"
pass
