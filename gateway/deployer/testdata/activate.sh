P='/srv/bill'\''s app'
I=r1.4.2
R="$P/releases/$I"; T="$R.partial"; H="$P/.outpost/hook.log"
m() { u=${EPOCHREALTIME:-}; [ -n "$u" ] || read -r u _ </proc/uptime || u=; printf '@%s %s %s %s\n' "$1" "$2" "${u:--}" "${3:-}" || exit 1; [ "$2" != start ] || printf '@%s%s\n' "$1" "${3:+ $3}" >&2; }
h() { (cd -P -- "$1" && exec "${SHELL:-/bin/sh}" -c "$2") </dev/null >"$H" 2>&1 || { r=$?; tail -c 2048 -- "$H" >&2; return "$r"; }; }
L='{"owner":"gw-seoul-1","rollout":"ro-7","release":"r1.4.2","epoch":3,"time":"2026-11-01T10:00:00Z"}'
[ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$L" ] || { echo "the node's lock is no longer this deployment's: another assignment took it over" >&2; exit 1; }
OUTPOST_RELEASE=r1.4.2
OUTPOST_DEPLOY_PATH='/srv/bill'\''s app'
OUTPOST_ROLLOUT=ro-7
export OUTPOST_RELEASE OUTPOST_DEPLOY_PATH OUTPOST_ROLLOUT
echo $$ >"$P/.outpost/active"
S=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
F=.outpost-artifact
m 5 start
if command -v openssl >/dev/null 2>&1 && s=$(openssl dgst -sha256 -r <"$T/$F" 2>/dev/null); then :; else s=$(sha256sum -b <"$T/$F") || { m 5 fail; exit 1; }; fi
s=${s%% *}; m 5 note "$s"
[ "$s" = "$S" ] || { m 5 fail; exit 1; }
m 5 ok
m 6 start
tar -xzf "$T/$F" -C "$T" --no-same-owner --no-same-permissions && rm -f -- "$T/$F" || { m 6 fail; exit 1; }
{ printf '%s\n' "$S" >"$T/.outpost-sha256" && mv -T -- "$T" "$R"; } || { m 6 fail; exit 1; }
m 6 ok
C='echo "$HOME" > /dev/null'
m 7 start; h "$R" "$C" || { m 7 fail; exit 1; }; m 7 ok
if [ -d "$P/current/" ]; then D="$P/current"; else D="$R"; fi
OUTPOST_RELEASE=r1.4.1
[ "$D" != "$R" ] || OUTPOST_RELEASE=$I
C='sudo systemctl stop '\''billing api'\'''
m 8 start; h "$D" "$C" || { m 8 fail; exit 1; }; m 8 ok
OUTPOST_RELEASE=$I
m 9 start
{ rm -f -- "$P/.current.tmp-$I" && ln -s -- "releases/$I" "$P/.current.tmp-$I" && mv -T -- "$P/.current.tmp-$I" "$P/current"; } || { m 9 fail; exit 1; }
touch -c -- "$R/.outpost-sha256"; m 9 ok
m 10 skip
C='sudo systemctl start '\''billing api'\'''
m 11 start; h "$R" "$C" || { m 11 fail; exit 1; }; m 11 ok
