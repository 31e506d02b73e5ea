P='/srv/bill'\''s app'
I=r1.4.2
L='{"owner":"gw-seoul-1","rollout":"ro-7","release":"r1.4.2","epoch":3,"time":"2026-11-01T10:00:00Z"}'
mkdir -p -- "$P/.outpost" "$P/releases" || exit 70
if ! (set -C; printf '%s' "$L" >"$P/.outpost/lock"); then
  if [ -e "$P/.outpost/lock" ]; then echo @held; cat -- "$P/.outpost/lock"; exit 75; fi
  exit 70
fi
echo @locked
echo @df; df -P -- "$P"
echo @current
if [ -L "$P/current" ]; then printf 'link %s\n' "$(readlink -- "$P/current")"; [ ! -d "$P/current/" ] || echo dir; elif [ -e "$P/current" ]; then echo notlink; fi
echo @releases; (cd -- "$P/releases" && ls -1t -- */.outpost-sha256) 2>/dev/null
rm -rf -- "$P/releases/$I.partial" || exit 71
if [ -d "$P/releases/$I" ]; then echo @present; cat -- "$P/releases/$I/.outpost-sha256" 2>/dev/null; echo; exit 0; fi
mkdir -- "$P/releases/$I.partial" || exit 71
echo @partial
