#!/usr/bin/env bash
# The Outpost demo (`make demo`): everything on this machine, unattended.
#
#   1. `outpost dev` starts a simulated fleet of SSH servers, a control plane
#      with embedded etcd and one gateway per datacenter, in the background.
#   2. The fleet's inventory is applied.
#   3. Release v1, then v2, are rolled out to every node, batch by batch.
#   4. Release v3 is broken: its health check fails on the first batch, those
#      nodes are rolled back to v2 automatically, and the rollout aborts
#      without touching the other batches.
#   5. A summary, and a check that every node still runs v2.
#
# Exit status 0 means everything behaved as expected (v3 aborting included).
# Everything started here is stopped on exit, and the temp dir removed.
#
# Environment: OUTPOST (the binary, default bin/outpost, built if missing),
# DEMO_NODES (default 20), DEMO_DATACENTERS (default 2), DEMO_KEEP=1 keeps
# the data directory for a look around afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

OUTPOST=${OUTPOST:-bin/outpost}
NODES=${DEMO_NODES:-20}
DATACENTERS=${DEMO_DATACENTERS:-2}
READY_TIMEOUT=120 # seconds for `outpost dev` to come up
STOP_TIMEOUT=60   # seconds for it to shut down before it is killed

bold() { if [ -t 1 ]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }

if [ ! -x "$OUTPOST" ]; then
  echo "demo: building $OUTPOST"
  go build -o "$OUTPOST" ./cli/outpost
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/outpost-demo.XXXXXX")
data="$work/data"
dev_pid=""

cleanup() {
  local status=$?
  if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
    echo "demo: stopping outpost dev"
    kill -INT "$dev_pid" 2>/dev/null || true
    for _ in $(seq 1 $((STOP_TIMEOUT * 5))); do
      kill -0 "$dev_pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$dev_pid" 2>/dev/null; then
      echo "demo: outpost dev did not stop within ${STOP_TIMEOUT}s; killing it" >&2
      kill -KILL "$dev_pid" 2>/dev/null || true
    fi
    wait "$dev_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$work/dev.log" ]; then
    echo "demo: last lines of the outpost dev log:" >&2
    tail -n 40 "$work/dev.log" >&2 || true
  fi
  if [ "${DEMO_KEEP:-}" = 1 ]; then
    echo "demo: kept $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bold "Starting outpost dev: $NODES simulated nodes in $DATACENTERS datacenters"
# Port 0: a free port, so the demo runs even where 7443 is taken; the
# address is read back from what `outpost dev` prints.
"$OUTPOST" dev --nodes "$NODES" --datacenters "$DATACENTERS" --data-dir "$data" \
  --listen 127.0.0.1:0 >"$work/dev.out" 2>"$work/dev.log" &
dev_pid=$!

for _ in $(seq 1 $((READY_TIMEOUT * 5))); do
  grep -q '^outpost dev: ready' "$work/dev.out" 2>/dev/null && break
  kill -0 "$dev_pid" 2>/dev/null || { cat "$work/dev.out"; fail "outpost dev exited before it was ready"; }
  sleep 0.2
done
grep -q '^outpost dev: ready' "$work/dev.out" || fail "outpost dev not ready within ${READY_TIMEOUT}s"
cat "$work/dev.out"

addr=$(sed -n 's/^ *export OUTPOST_CONTROLPLANE=\([^ ]*\)$/\1/p' "$work/dev.out" | head -n 1)
[ -n "$addr" ] || fail "no control plane address in the output of outpost dev"
export OUTPOST_CONTROLPLANE=$addr
# Every call is TLS with a client certificate: the admin credential that
# the control plane wrote on its first start.
cred=$(sed -n 's/^ *export OUTPOST_CREDENTIAL=\([^ ]*\)$/\1/p' "$work/dev.out" | head -n 1)
[ -n "$cred" ] || fail "no credential in the output of outpost dev"
export OUTPOST_CREDENTIAL=$cred
demo="$data/dev/demo"

bold "outpost node apply -f nodes.yaml"
"$OUTPOST" node apply -f "$data/dev/nodes.yaml"
"$OUTPOST" node list

bold "outpost rollout create -f plan-v1.yaml --watch   (healthy)"
"$OUTPOST" rollout create -f "$demo/plan-v1.yaml" --watch || fail "the v1 rollout did not succeed"

bold "outpost rollout create -f plan-v2.yaml --watch   (healthy)"
"$OUTPOST" rollout create -f "$demo/plan-v2.yaml" --watch || fail "the v2 rollout did not succeed"

bold "outpost rollout create -f plan-v3.yaml; outpost rollout watch ID   (broken: expect a rollback and an abort)"
v3=$("$OUTPOST" rollout create -f "$demo/plan-v3.yaml")
if "$OUTPOST" rollout watch "$v3"; then
  fail "the broken v3 rollout $v3 succeeded"
fi
"$OUTPOST" rollout get "$v3" -o json | grep -q '"state": "ROLLOUT_STATE_ABORTED"' ||
  fail "rollout $v3 ended, but not ABORTED: $("$OUTPOST" rollout get "$v3")"
echo "demo: as expected, $v3 failed its health check, was rolled back, and aborted"

bold "outpost rollout list"
"$OUTPOST" rollout list

bold "outpost rollout get $v3"
"$OUTPOST" rollout get "$v3"

# Every node must be back on v2: the broken batch rolled back, the rest
# never touched. Each simulated host's deploy path is <root>/app.
bold "Checking what runs on the nodes"
versions=$(cat "$data"/dev/fleet/*/app/current/VERSION | sort | uniq -c)
echo "$versions"
[ "$(cat "$data"/dev/fleet/*/app/current/VERSION | grep -c '^v2$')" -eq "$NODES" ] ||
  fail "not every node runs v2"
echo "demo: all $NODES nodes run v2"

bold "Demo finished: v1 and v2 rolled out, broken v3 rolled back and aborted"
