#!/usr/bin/env bash
# Builds Jaeger v2 (tools/jaeger/go.mod: its own module, because its
# dependencies clash with ours) into a directory beside Go's build cache,
# once: later runs find the binary and return at once. The e2e trace test
# starts it. The first build compiles a few thousand packages: over 75
# minutes on a loaded 2-core machine (see README, Traces).
set -euo pipefail
cd "$(dirname "$0")/../tools/jaeger"
version=$(awk '$1 == "github.com/jaegertracing/jaeger" {print $2}' go.mod)
dir="$(dirname "$(go env GOCACHE)")/outpost-tools"
bin="$dir/jaeger-$version"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
echo "jaeger: building Jaeger $version into $bin (first time only; takes minutes)" >&2
start=$(date +%s)
go build -o "$bin.tmp.$$" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$bin.tmp.$$" "$bin"
echo "jaeger: built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
