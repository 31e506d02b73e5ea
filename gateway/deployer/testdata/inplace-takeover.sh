P='/srv/bill'\''s app'
O='{"owner":"cp-1/ro-7","rollout":"ro-7","release":"r1.4.2","epoch":2,"time":"0001-01-01T00:00:00Z","assignment":"ro-7-srv-1-e2-4"}'
J='/srv/bill'\''s app/.outpost/switching'
S='/srv/bill'\''s app/.outpost/staging/.takeover'
[ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$O" ] || exit 75
if [ -s "$P/.outpost/active" ]; then a=$(cat -- "$P/.outpost/active"); if kill -0 "$a" 2>/dev/null; then echo "$a"; exit 76; fi; fi
B=; V=; K=
[ ! -f "$J" ] || { IFS= read -r B; IFS= read -r V; IFS= read -r K; } <"$J"
if [ -n "$B" ] && [ "$K" = "$O" ]; then
  case $B in "$P/.outpost/backups/"*/*|*/..*) echo "the journal $J names $B" >&2; exit 77;; "$P/.outpost/backups/"?*) ;; *) echo "the journal $J names $B" >&2; exit 77;; esac
  r=; [ ! -d "$B" ] || r=${B##*/}
jb=; jv=; jl=; ph=
[ ! -f "$J" ] || { IFS= read -r jb; IFS= read -r jv; IFS= read -r jl; IFS= read -r ph; } <"$J"
if [ "$jb" = "$B" ] && [ "$jl" = "$K" ]; then j=1; else j=0; fi
if [ -d "$B" ]; then
  if [ $j = 0 ] || [ "$ph" = in ]; then
    mkdir -p -- "$S.failed" || { echo "putting $B back into $P failed" >&2; exit 77; }
    for e in "$P"/* "$P"/.[!.]* "$P"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; [ "${e##*/}" = .outpost ] && continue; mv -- "$e" "$S.failed/" || { echo "putting $B back into $P failed" >&2; exit 77; }; done
  fi
  for e in "$B"/* "$B"/.[!.]* "$B"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; mv -- "$e" "$P/" || { echo "putting $B back into $P failed" >&2; exit 77; }; done
  rmdir -- "$B" && rm -rf -- "$S.failed" || { echo "putting $B back into $P failed" >&2; exit 77; }
  if [ -n "$V" ]; then printf '%s\n' "$V" >"$P/.outpost/release"; else rm -f -- "$P/.outpost/release"; fi || { echo "putting $B back into $P failed" >&2; exit 77; }
fi
[ $j = 0 ] || rm -f -- "$J" || { echo "putting $B back into $P failed" >&2; exit 77; }
  [ -z "$r" ] || { echo @restored; echo "$r"; }
fi
rm -f -- "$P/.outpost/active" "$P/.outpost/lock"
