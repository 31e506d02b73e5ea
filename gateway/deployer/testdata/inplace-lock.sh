P='/srv/bill'\''s app'
I=r1.4.2
L='{"owner":"gw-seoul-1","rollout":"ro-7","release":"r1.4.2","epoch":3,"time":"2026-11-01T10:00:00Z"}'
mkdir -p -- "$P/.outpost/staging" "$P/.outpost/backups" || exit 70
if ! (set -C; printf '%s' "$L" >"$P/.outpost/lock"); then
  if [ -e "$P/.outpost/lock" ]; then echo @held; cat -- "$P/.outpost/lock"; exit 75; fi
  exit 70
fi
echo @locked
echo @df; df -P -- "$P"
echo @release; head -n 1 -- "$P/.outpost/release" 2>/dev/null
echo @entries; (cd -- "$P" && ls -A) | grep -v -x -e .outpost | head -n 1
echo @backups; (cd -- "$P/.outpost/backups" && ls -1) 2>/dev/null
rm -rf -- "$P/.outpost/staging/$I" "$P/.outpost/staging/$I.partial" && mkdir -- "$P/.outpost/staging/$I.partial" || exit 71
echo @partial
