P='/srv/bill'\''s app'
O='{"owner":"cp-1/ro-7","rollout":"ro-7","release":"r1.4.2","epoch":2,"time":"0001-01-01T00:00:00Z","assignment":"ro-7-srv-1-e2-4"}'
[ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$O" ] || exit 75
if [ -s "$P/.outpost/active" ]; then a=$(cat -- "$P/.outpost/active"); if kill -0 "$a" 2>/dev/null; then echo "$a"; exit 76; fi; fi
rm -f -- "$P/.outpost/active" "$P/.outpost/lock"
