#!/bin/sh
# After the files are in place (deb postinst, rpm %post): make the outpost
# user and its directories, and tell systemd about the units. The units are
# not enabled or started: the operator configures them first (README).
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers outpost.conf
else
	getent group outpost >/dev/null 2>&1 || groupadd --system outpost
	getent passwd outpost >/dev/null 2>&1 ||
		useradd --system --gid outpost --home-dir /var/lib/outpost --no-create-home \
			--shell /usr/sbin/nologin --comment "Outpost control plane and gateway" outpost
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create outpost.conf
else
	install -d -m 0700 -o outpost -g outpost /var/lib/outpost /var/cache/outpost
	install -d -m 0750 -o root -g outpost /etc/outpost/gateway
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
