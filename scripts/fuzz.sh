#!/usr/bin/env bash
# Runs every fuzz target in the module for a bounded time each (FUZZTIME,
# default 15s), one after the other: `go test -fuzz` takes one target of one
# package at a time. The seed corpora in each package's testdata/fuzz/ also
# run as plain tests under `make test`; this adds new, generated inputs.
# A crasher is written to testdata/fuzz/<Target>/ and fails the run: commit
# it with the fix so it stays a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-15s}"
go="${GO:-go}"

targets=0
# Each line: <package dir> <FuzzName>, from the test files that declare one.
while read -r dir name; do
  [ -n "$name" ] || continue
  targets=$((targets + 1))
  echo "== fuzz $name in ./$dir for $fuzztime"
  "$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir"
done < <(git ls-files -co --exclude-standard '*_test.go' |
  xargs grep -l '^func Fuzz[A-Za-z0-9_]*(f \*testing.F)' |
  xargs grep -o '^func Fuzz[A-Za-z0-9_]*' |
  sed -E 's#^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]*)#\1 \2#' | sort -u)

echo "fuzz: $targets targets ran for $fuzztime each"
[ "$targets" -gt 0 ] || { echo "fuzz: no fuzz targets found"; exit 1; }
