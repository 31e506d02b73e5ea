P='/srv/bill'\''s app'
I=r1.4.2
R="$P/releases/$I"; T="$R.partial"; H="$P/.outpost/hook.log"
m() { u=${EPOCHREALTIME:-}; [ -n "$u" ] || read -r u _ </proc/uptime || u=; printf '@%s %s %s %s\n' "$1" "$2" "${u:--}" "${3:-}" || exit 1; [ "$2" != start ] || printf '@%s%s\n' "$1" "${3:+ $3}" >&2; }
h() { (cd -P -- "$1" && exec "${SHELL:-/bin/sh}" -c "$2") </dev/null >"$H" 2>&1 || { r=$?; tail -c 2048 -- "$H" >&2; return "$r"; }; }
OUTPOST_RELEASE=r1.4.2
OUTPOST_DEPLOY_PATH='/srv/bill'\''s app'
OUTPOST_ROLLOUT=ro-7
export OUTPOST_RELEASE OUTPOST_DEPLOY_PATH OUTPOST_ROLLOUT
S='/srv/bill'\''s app/.outpost/staging/r1.4.2'
B='/srv/bill'\''s app/.outpost/backups/20261101T100000.000000000Z-r1.4.1'
V=r1.4.1
J='/srv/bill'\''s app/.outpost/switching'
K='{"owner":"gw-seoul-1","rollout":"ro-7","release":"r1.4.2","epoch":3,"time":"2026-11-01T10:00:00Z"}'
C='sudo systemctl stop '\''billing api'\'''
m 16 start stop; if h "$P" "$C"; then m 16 ok; else m 16 fail; fi
m 16 start restore
jb=; jv=; jl=; ph=
[ ! -f "$J" ] || { IFS= read -r jb; IFS= read -r jv; IFS= read -r jl; IFS= read -r ph; } <"$J"
if [ "$jb" = "$B" ] && [ "$jl" = "$K" ]; then j=1; else j=0; fi
if [ -d "$B" ]; then
  if [ $j = 0 ] || [ "$ph" = in ]; then
    mkdir -p -- "$S.failed" || { m 16 fail; exit 1; }
    for e in "$P"/* "$P"/.[!.]* "$P"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; [ "${e##*/}" = .outpost ] && continue; mv -- "$e" "$S.failed/" || { m 16 fail; exit 1; }; done
  fi
  for e in "$B"/* "$B"/.[!.]* "$B"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; mv -- "$e" "$P/" || { m 16 fail; exit 1; }; done
  rmdir -- "$B" && rm -rf -- "$S.failed" || { m 16 fail; exit 1; }
  if [ -n "$V" ]; then printf '%s\n' "$V" >"$P/.outpost/release"; else rm -f -- "$P/.outpost/release"; fi || { m 16 fail; exit 1; }
fi
[ $j = 0 ] || rm -f -- "$J" || { m 16 fail; exit 1; }
m 16 ok
OUTPOST_RELEASE=r1.4.1
C='sudo systemctl start '\''billing api'\'''
m 16 start start; h "$P" "$C" || { m 16 fail; exit 1; }; m 16 ok
