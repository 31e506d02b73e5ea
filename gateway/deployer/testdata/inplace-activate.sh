P='/srv/bill'\''s app'
I=r1.4.2
R="$P/releases/$I"; T="$R.partial"; H="$P/.outpost/hook.log"
m() { u=${EPOCHREALTIME:-}; [ -n "$u" ] || read -r u _ </proc/uptime || u=; printf '@%s %s %s %s\n' "$1" "$2" "${u:--}" "${3:-}" || exit 1; [ "$2" != start ] || printf '@%s%s\n' "$1" "${3:+ $3}" >&2; }
h() { (cd -P -- "$1" && exec "${SHELL:-/bin/sh}" -c "$2") </dev/null >"$H" 2>&1 || { r=$?; tail -c 2048 -- "$H" >&2; return "$r"; }; }
L='{"owner":"gw-seoul-1","rollout":"ro-7","release":"r1.4.2","epoch":3,"time":"2026-11-01T10:00:00Z"}'
[ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$L" ] || { echo "the node's lock is no longer this deployment's" >&2; exit 1; }
OUTPOST_RELEASE=r1.4.2
OUTPOST_DEPLOY_PATH='/srv/bill'\''s app'
OUTPOST_ROLLOUT=ro-7
export OUTPOST_RELEASE OUTPOST_DEPLOY_PATH OUTPOST_ROLLOUT
echo $$ >"$P/.outpost/active"
S='/srv/bill'\''s app/.outpost/staging/r1.4.2'
B='/srv/bill'\''s app/.outpost/backups/20261101T100000.000000000Z-r1.4.1'
X=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
F=.outpost-artifact
m 5 start
if command -v openssl >/dev/null 2>&1 && s=$(openssl dgst -sha256 -r <"$S.partial/$F" 2>/dev/null); then :; else s=$(sha256sum -b <"$S.partial/$F") || { m 5 fail; exit 1; }; fi
s=${s%% *}; m 5 note "$s"
[ "$s" = "$X" ] || { m 5 fail; exit 1; }
m 5 ok
m 6 start
tar -xzf "$S.partial/$F" -C "$S.partial" --no-same-owner --no-same-permissions && rm -f -- "$S.partial/$F" || { m 6 fail; exit 1; }
mv -T -- "$S.partial" "$S" || { m 6 fail; exit 1; }
m 6 ok
C='echo "$HOME" > /dev/null'
m 7 start; h "$S" "$C" || { m 7 fail; exit 1; }; m 7 ok
OUTPOST_RELEASE=r1.4.1
C='sudo systemctl stop '\''billing api'\'''
m 8 start; h "$P" "$C" || { m 8 fail; exit 1; }; m 8 ok
OUTPOST_RELEASE=$I
J='/srv/bill'\''s app/.outpost/switching'
V=r1.4.1
m 9 start
printf '%s\n%s\n%s\n' "$B" "$V" "$L" >"$J" || { m 9 fail; exit 1; }
mkdir -p -- "$B" || { m 9 fail; exit 1; }
for e in "$P"/* "$P"/.[!.]* "$P"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; [ "${e##*/}" = .outpost ] && continue; mv -- "$e" "$B/" || { m 9 fail; exit 1; }; done
echo in >>"$J" || { m 9 fail; exit 1; }
for e in "$S"/* "$S"/.[!.]* "$S"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; mv -- "$e" "$P/" || { m 9 fail; exit 1; }; done
printf '%s\n' "$I" >"$P/.outpost/release" || { m 9 fail; exit 1; }
m 9 ok
m 10 skip
C='sudo systemctl start '\''billing api'\'''
m 11 start; h "$P" "$C" || { m 11 fail; exit 1; }; m 11 ok
