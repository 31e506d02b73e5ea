#!/bin/sh
# Before the files go (deb prerm, rpm %preun): on removal, not on upgrade,
# stop and disable the daemons.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now outpost-controlplane.service outpost-gateway.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
