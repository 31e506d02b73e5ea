#!/bin/sh
# After the files are gone (deb postrm, rpm %postun). A purge removes the
# gateway's artifact cache; it keeps /var/lib/outpost (the embedded etcd,
# the CA and its key-encryption key, the credentials) and the outpost
# user, as Debian keeps a database's data: remove them by hand.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
	rm -rf /var/cache/outpost
fi
exit 0
