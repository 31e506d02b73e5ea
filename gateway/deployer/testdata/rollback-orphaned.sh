P='/srv/bill'\''s app'
I=r1.4.2
R="$P/releases/$I"; T="$R.partial"; H="$P/.outpost/hook.log"
m() { u=${EPOCHREALTIME:-}; [ -n "$u" ] || read -r u _ </proc/uptime || u=; printf '@%s %s %s %s\n' "$1" "$2" "${u:--}" "${3:-}" || exit 1; [ "$2" != start ] || printf '@%s%s\n' "$1" "${3:+ $3}" >&2; }
h() { (cd -P -- "$1" && exec "${SHELL:-/bin/sh}" -c "$2") </dev/null >"$H" 2>&1 || { r=$?; tail -c 2048 -- "$H" >&2; return "$r"; }; }
OUTPOST_RELEASE=r1.4.2
OUTPOST_DEPLOY_PATH='/srv/bill'\''s app'
OUTPOST_ROLLOUT=ro-7
export OUTPOST_RELEASE OUTPOST_DEPLOY_PATH OUTPOST_ROLLOUT
V=releases/r1.4.1
m 16 start wait; n=0; a=; read -r a <"$P/.outpost/active" 2>/dev/null
while [ -n "$a" ] && [ $n -lt 100 ] && kill -0 "$a" 2>/dev/null; do sleep 0.2; n=$((n+1)); done
if [ -n "$a" ] && kill -0 "$a" 2>/dev/null; then echo "the interrupted activation (pid $a) still runs; rolling back anyway" >&2; m 16 fail; else m 16 ok; fi
C='sudo systemctl stop '\''billing api'\'''
m 16 start stop; if h "$R" "$C"; then m 16 ok; else m 16 fail; fi
m 16 start switch
{ rm -f -- "$P/.current.tmp-$I" && ln -s -- "$V" "$P/.current.tmp-$I" && mv -T -- "$P/.current.tmp-$I" "$P/current"; } || { m 16 fail; exit 1; }
m 16 ok
OUTPOST_RELEASE=r1.4.1
C='sudo systemctl start '\''billing api'\'''
m 16 start start; h "$P/current" "$C" || { m 16 fail; exit 1; }; m 16 ok
