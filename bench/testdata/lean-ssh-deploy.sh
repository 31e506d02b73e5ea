#!/usr/bin/env bash
# The leanest fleet script: per server ONE ssh invocation (one connection,
# one session, so one shell started by sshd) runs every step in a single
# remote shell, the artifact on its stdin; PARALLEL servers at a time with
# xargs -P. The same steps as Outpost and controlmaster-deploy.sh: lock,
# precheck, receive, verify, unpack, stop, switch, start, health, prune,
# history, unlock. The remote side starts as few processes as the steps
# allow: builtins wherever bash has one (the lock with noclobber, the
# health check over bash's /dev/tcp, the history line), the checksum with
# the same tool Outpost picks (openssl when the node has it, else
# sha256sum). The remote shell must be bash (the login shell here).
# Usage: lean-ssh-deploy.sh PARALLEL NODES_FILE SSH_OPTS_FILE RELEASE ARTIFACT SHA256
# NODES_FILE has one server per line: TARGET PORT DEPLOY_PATH HEALTH_URL
# (HEALTH_URL is http://HOST:PORT/PATH, checked from the server itself).
set -euo pipefail
export parallel=$1 nodes=$2 opts=$3 rel=$4 artifact=$5 sum=$6

# The remote script; its values arrive as positional parameters, quoted
# with printf %q by the caller below.
export body='
P=$1 R=$2 S=$3 HH=$4 HP=$5 HQ=$6
T="$P/releases/$R.partial"
mkdir -p -- "$P/.outpost" "$P/releases" || exit 1
set -C; echo bench >"$P/.outpost/lock" || { echo "locked: $(<"$P/.outpost/lock")" >&2; exit 1; }; set +C
df -P -- "$P" >/dev/null || exit 1
mkdir -- "$T" || exit 1
cat >"$T/.artifact" || exit 1
if command -v openssl >/dev/null 2>&1 && s=$(openssl dgst -sha256 -r <"$T/.artifact" 2>/dev/null); then :; else s=$(sha256sum -b <"$T/.artifact") || exit 1; fi
[ "${s%% *}" = "$S" ] || { echo "checksum mismatch: ${s%% *}" >&2; exit 1; }
tar -xzf "$T/.artifact" -C "$T" --no-same-owner && rm -f -- "$T/.artifact" || exit 1
mv -T -- "$T" "$P/releases/$R" || exit 1
if [ -e "$P/current" ]; then (cd -- "$P/current" && sh bin/stop) </dev/null >/dev/null || exit 1; fi
ln -sfn -- "releases/$R" "$P/.current.tmp" && mv -T -- "$P/.current.tmp" "$P/current" || exit 1
(cd -- "$P/releases/$R" && sh bin/start) </dev/null >/dev/null || exit 1
ok=
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
  if exec 3<>"/dev/tcp/$HH/$HP"; then
    printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$HQ" "$HH" >&3; read -r l <&3; exec 3<&-
    case $l in "HTTP/1."?" 200"*) ok=1; break;; esac
  fi 2>/dev/null
  sleep 0.2
done
[ -n "$ok" ] || { echo "unhealthy: ${l:-no answer}" >&2; exit 1; }
(cd -- "$P/releases" && ls -1t | tail -n +6 | xargs -r rm -rf) || exit 1
echo "{\"release\":\"$R\"}" >>"$P/.outpost/history" || exit 1
rm -f -- "$P/.outpost/lock"
'
# xargs exits non-zero when any server's deployment failed; each failure
# is on stderr, prefixed with its server.
xargs -P "$parallel" -L 1 bash -c '
  mapfile -t o < "$opts"
  u=${4#http://}; hp=${u%%/*}; hq=/${u#*/}
  args=$(printf " %q" "$3" "$rel" "$sum" "${hp%:*}" "${hp##*:}" "$hq")
  out=$(ssh "${o[@]}" -p "$2" "$1" "set --$args; $body" < "$artifact" 2>&1) || { echo "$1:$2: $out" >&2; exit 1; }
' deploy-one < "$nodes"
