#!/usr/bin/env bash
# The baseline: one node's deployment the way a hand-written "publish over
# SSH" script does it, every step a separate ssh command over one OpenSSH
# ControlMaster connection, with scp for the upload and curl for health.
# Usage: controlmaster-deploy.sh SSH_OPTS_FILE TARGET PORT DEPLOY_PATH RELEASE ARTIFACT SHA256 HEALTH_URL
set -euo pipefail
opts_file=$1 target=$2 port=$3 path=$4 rel=$5 artifact=$6 sum=$7 health=$8
mapfile -t opts < "$opts_file"
ctl=$(mktemp -u /tmp/outpost-cm-XXXXXX)
ssh_() { ssh "${opts[@]}" -p "$port" -o ControlPath="$ctl" "$target" "$@"; }

ssh "${opts[@]}" -p "$port" -o ControlMaster=yes -o ControlPath="$ctl" -o ControlPersist=60 -f -N "$target"
trap 'ssh "${opts[@]}" -p "$port" -o ControlPath="$ctl" -O exit "$target" 2>/dev/null || true' EXIT

ssh_ "mkdir -p '$path/.outpost' '$path/releases' && (set -C; echo bench > '$path/.outpost/lock')"
ssh_ "df -P '$path' | tail -1"
ssh_ "mkdir -p '$path/releases/$rel.partial'"
scp -q "${opts[@]}" -P "$port" -o ControlPath="$ctl" "$artifact" "$target:$path/releases/$rel.partial/.artifact"
ssh_ "echo '$sum  $path/releases/$rel.partial/.artifact' | sha256sum -c --quiet"
ssh_ "tar -xzf '$path/releases/$rel.partial/.artifact' -C '$path/releases/$rel.partial' && rm '$path/releases/$rel.partial/.artifact'"
ssh_ "mv '$path/releases/$rel.partial' '$path/releases/$rel'"
ssh_ "cd '$path/releases/$rel' && true"                       # before_install
ssh_ "if [ -e '$path/current' ]; then cd '$path/current' && sh bin/stop; fi"
ssh_ "ln -sfn 'releases/$rel' '$path/.current.tmp' && mv -T '$path/.current.tmp' '$path/current'"
ssh_ "cd '$path/releases/$rel' && true"                       # after_install
ssh_ "cd '$path/releases/$rel' && sh bin/start"
for _ in $(seq 1 15); do curl -fsS -o /dev/null "$health" && break; sleep 0.2; done
curl -fsS -o /dev/null "$health"
ssh_ "cd '$path/releases' && ls -1t | tail -n +6 | xargs -r rm -rf"
ssh_ "echo '{\"release\":\"$rel\"}' >> '$path/.outpost/history'"
ssh_ "rm -f '$path/.outpost/lock'"
