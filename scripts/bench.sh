#!/usr/bin/env bash
# Runs Outpost's benchmarks and writes BENCHMARKS.md: every figure with the
# command that measured it, the machine, and the baseline measured in the
# same run (the machines are noisy, so only same-run ratios mean much).
set -euo pipefail
cd "$(dirname "$0")/.."
out=BENCHMARKS.md
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT

run() { # name, go test args...
  local name=$1; shift
  echo "bench: $name: go test $*" >&2
  go test -run '^$' "$@" | tee "$raw/$name.txt" >&2
}

upload_cmd="go test -run '^\$' -bench 'BenchmarkUpload\$' -benchtime 3x -count 3 ./bench/"
run upload -bench 'BenchmarkUpload$' -benchtime 3x -count 3 ./bench/
life_cmd="go test -run '^\$' -bench 'BenchmarkLifecycle\$' -benchtime 20x -count 3 ./bench/"
run lifecycle -bench 'BenchmarkLifecycle$' -benchtime 20x -count 3 ./bench/

# median VALUE of the column whose unit is $2 for benchmark lines matching $1.
median() {
  grep -E "^$1-[0-9]+ " "$3" | awk -v unit="$2" '{for(i=1;i<=NF;i++) if ($i==unit) print $(i-1)}' |
    sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else print a[int((NR+1)/2)]}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "n/a" }'; }

up_outpost=$(median 'BenchmarkUpload/tool=outpost' MB/s "$raw/upload.txt")
up_scp=$(median 'BenchmarkUpload/tool=scp' MB/s "$raw/upload.txt")
up_sftp=$(median 'BenchmarkUpload/tool=sftp' MB/s "$raw/upload.txt")
lc_outpost=$(median 'BenchmarkLifecycle/tool=outpost' ms/node "$raw/lifecycle.txt")
lc_script=$(median 'BenchmarkLifecycle/tool=controlmaster-script' ms/node "$raw/lifecycle.txt")

cpu=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh) on $(date -u +%Y-%m-%d). Machine: ${cpu:-unknown CPU},"
  echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB memory, $(go version | awk '{print $3}'), $(ssh -V 2>&1)."
  echo "Each figure is the median of the runs shown below; ratios compare figures measured in the"
  echo "same run against the same real OpenSSH sshd on loopback."
  echo
  echo "## Upload of a 256 MiB file to a real sshd on loopback"
  echo
  echo "Command: \`$upload_cmd\`"
  echo
  echo "| tool | MB/s | Outpost ÷ tool |"
  echo "|---|---|---|"
  echo "| Outpost uploader (SFTP, concurrent writes, SHA-256 while streaming) | $up_outpost | 1.00 |"
  echo "| OpenSSH scp | $up_scp | $(ratio "$up_outpost" "$up_scp") |"
  echo "| OpenSSH sftp (put) | $up_sftp | $(ratio "$up_outpost" "$up_sftp") |"
  echo
  echo "Goal: at least as fast as scp (ratio ≥ 1.00). Each tool uses its default cipher choice:"
  echo "Outpost prefers aes128-gcm@openssh.com, OpenSSH prefers chacha20-poly1305."
  echo
  echo "## Per-node overhead: the full lifecycle of a ~1 KiB release with instant hooks"
  echo
  echo "Command: \`$life_cmd\`"
  echo
  echo "| how | ms per node | script ÷ Outpost |"
  echo "|---|---|---|"
  echo "| Outpost deployer (one SSH connection, every step) | $lc_outpost | 1.00 |"
  echo "| bench/testdata/controlmaster-deploy.sh (ssh per step over a ControlMaster, scp, curl) | $lc_script | $(ratio "$lc_script" "$lc_outpost") |"
  echo
  echo "Goal: Outpost at least 3× faster (ratio ≥ 3)."
  echo
  echo "## Raw output"
  for f in upload lifecycle; do
    echo
    echo "### $f"
    echo
    echo '```'
    grep -E '^(Benchmark|goos|goarch|cpu|ok|PASS)' "$raw/$f.txt" || true
    echo '```'
  done
} > "$out"
echo "bench: wrote $out" >&2
