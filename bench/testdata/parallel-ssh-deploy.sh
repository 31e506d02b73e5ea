#!/usr/bin/env bash
# The fleet baseline: what a Jenkins "publish over SSH" job or a hand-written
# deploy script does to many servers: controlmaster-deploy.sh (every step an
# ssh command over one OpenSSH ControlMaster connection per server, scp for
# the upload, curl for health) for every server, PARALLEL servers at a time
# (xargs -P, as such jobs are usually configured).
# Usage: parallel-ssh-deploy.sh PARALLEL NODES_FILE SSH_OPTS_FILE RELEASE ARTIFACT SHA256
# NODES_FILE has one server per line: TARGET PORT DEPLOY_PATH HEALTH_URL
set -euo pipefail
export parallel=$1 nodes=$2 opts=$3 rel=$4 artifact=$5 sum=$6
export one
one="$(cd "$(dirname "$0")" && pwd)/controlmaster-deploy.sh"
# xargs exits non-zero when any server's deployment failed; each failure
# is on stderr, prefixed with its server.
xargs -P "$parallel" -L 1 bash -c '
  out=$(bash "$one" "$opts" "$1" "$2" "$3" "$rel" "$artifact" "$sum" "$4" 2>&1) || { echo "$1:$2: $out" >&2; exit 1; }
' deploy-one < "$nodes"
