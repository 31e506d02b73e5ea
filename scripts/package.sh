#!/usr/bin/env bash
# Builds dist/outpost_VERSION_amd64.deb and dist/outpost-VERSION-1.x86_64.rpm
# with nfpm (tools/nfpm/go.mod): the static outpost binary, the systemd
# units, sysusers.d and tmpfiles.d entries, the default configuration under
# /etc/outpost/ (conffiles), man pages and shell completions.
# `make package` runs it with VERSION, COMMIT, DATE and LDFLAGS set.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
: "${VERSION:?set VERSION (make package sets it)}"
LDFLAGS=${LDFLAGS:-}

build=dist/build
rm -rf "$build" dist/outpost*.deb dist/outpost*.rpm
mkdir -p "$build"
# Static (no cgo) and without local paths: the package runs on any
# glibc or musl distribution.
CGO_ENABLED=0 $GO build -trimpath -ldflags "$LDFLAGS" -o "$build/outpost" ./cli/outpost

cfg="$build/nfpm.yaml"
cp deploy/packaging/nfpm.yaml "$cfg"

# generated runs `outpost ARGS...` (a man page or completion generator);
# any failure stops the build.
generated() {
	local err
	if err=$("$build/outpost" "$@" 2>&1 >/dev/null); then
		return 0
	fi
	echo "package: outpost $*: $err" >&2
	exit 1
}

mkdir -p "$build/man"
if generated gen-man "$build/man"; then
	for page in "$build"/man/*.1; do
		[ -e "$page" ] || { echo "package: outpost gen-man wrote no page" >&2; exit 1; }
		gzip -9n "$page"
		printf '  - src: %s\n    dst: /usr/share/man/man1/%s\n    file_info: {mode: 0644}\n' \
			"$page.gz" "$(basename "$page").gz" >>"$cfg"
	done
fi
# completion SHELL FILE DEB-PATH RPM-PATH: Debian and Fedora look for zsh
# functions in different directories.
completion() {
	if generated completion "$1"; then
		"$build/outpost" completion "$1" >"$build/$2"
		if [ "$3" = "$4" ]; then
			printf '  - src: %s\n    dst: %s\n    file_info: {mode: 0644}\n' "$build/$2" "$3" >>"$cfg"
		else
			printf '  - src: %s\n    dst: %s\n    packager: deb\n    file_info: {mode: 0644}\n' "$build/$2" "$3" >>"$cfg"
			printf '  - src: %s\n    dst: %s\n    packager: rpm\n    file_info: {mode: 0644}\n' "$build/$2" "$4" >>"$cfg"
		fi
	fi
}
completion bash outpost.bash /usr/share/bash-completion/completions/outpost /usr/share/bash-completion/completions/outpost
completion zsh _outpost /usr/share/zsh/vendor-completions/_outpost /usr/share/zsh/site-functions/_outpost
completion fish outpost.fish /usr/share/fish/vendor_completions.d/outpost.fish /usr/share/fish/vendor_completions.d/outpost.fish

# nfpm is built once from tools/nfpm/go.mod and then served by Go's cache.
for packager in deb rpm; do
	VERSION="$VERSION" $GO tool -modfile=tools/nfpm/go.mod nfpm package \
		--config "$cfg" --packager "$packager" --target dist/ >/dev/null
done
ls -1 dist/*.deb dist/*.rpm
