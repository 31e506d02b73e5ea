P='/srv/bill'\''s app'
L='{"owner":"gw-seoul-1","rollout":"ro-7","release":"r1.4.2","epoch":3,"time":"2026-11-01T10:00:00Z"}'
m() { u=${EPOCHREALTIME:-}; [ -n "$u" ] || read -r u _ </proc/uptime || u=; printf '@%s %s %s %s\n' "$1" "$2" "${u:--}" "${3:-}" || exit 1; [ "$2" != start ] || printf '@%s%s\n' "$1" "${3:+ $3}" >&2; }
m 15 start; e=0
if [ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$L" ]; then
X='/srv/bill'\''s app/releases/r1.4.2.partial'
  rm -rf -- "$X" || e=1
X='/srv/bill'\''s app/releases/r1.4.2'
  rm -rf -- "$X" || e=1
  rm -f -- "$P/.outpost/active" "$P/.outpost/lock" || e=1
else echo "the lock is not ours (any more): left as it is" >&2; e=1; fi
if [ $e = 0 ]; then m 15 ok; else m 15 fail; exit 1; fi
