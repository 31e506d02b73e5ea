#!/usr/bin/env bash
# Installs the system packages Outpost's tests, demo and benchmarks use, when
# they are missing: OpenSSH's server (tests start real sshd on loopback) and
# client (benchmarks compare against ssh/scp/sftp), iproute2 and nftables
# (the segmented network test builds namespaces with a firewall between them),
# prometheus (a real server and promtool for the metrics and alert tests),
# rpm and jq (the package test and the grpcurl cookbook),
# chromium (the console's browser tests).
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 && command -v scp >/dev/null 2>&1 || need+=(openssh-client)
command -v rsync >/dev/null 2>&1 || need+=(rsync) # bench/delta_test.go: the delta baseline
command -v sha256sum >/dev/null 2>&1 || need+=(coreutils)
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v curl >/dev/null 2>&1 || need+=(curl)
# Tests run a real Prometheus server and promtool (alert rule tests).
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || need+=(prometheus)

# The CLI's completion test loads cobra's bash script, which needs bash-completion;
# the man page test renders pages with groff.
[ -f /usr/share/bash-completion/bash_completion ] || need+=(bash-completion)
command -v groff >/dev/null 2>&1 || need+=(groff-base)

# The package test (deploy/packaging) lists the .rpm's files with rpm; the
# grpcurl cookbook's scripts (docs/grpcurl.md) use jq.
command -v rpm >/dev/null 2>&1 || need+=(rpm)
command -v jq >/dev/null 2>&1 || need+=(jq)

# The console's browser tests drive Debian's Chromium with chromedp.
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]} with apt-get"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# sshd refuses to start without its privilege-separation directory.
if [ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ]; then mkdir -p /run/sshd && chmod 0755 /run/sshd; fi
exit 0
