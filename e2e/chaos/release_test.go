package chaos

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// release is a built artifact following the simulated service contract
// (COMMON.md): VERSION, bin/start, bin/stop, HEALTHY.
type release struct {
	path    string
	sha256  string
	size    int64
	version string
}

const startScript = `#!/bin/sh
set -e
mkdir -p ../../.svc
pwd -P > ../../.svc/running.tmp
mv -f ../../.svc/running.tmp ../../.svc/running
`

const stopScript = `#!/bin/sh
rm -f ../../.svc/running
`

// buildRelease writes a healthy release of version with pad bytes of
// random data in pad.bin, so that its upload takes a while. The gzip
// stream is stored, not compressed: random data would not shrink, and
// compressing it would only cost the test time.
func buildRelease(t *testing.T, version string, pad int64) release {
	t.Helper()
	path := filepath.Join(t.TempDir(), "release-"+version+".tar.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	zw, err := gzip.NewWriterLevel(io.MultiWriter(f, h), gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	add := func(name string, mode int64, size int64, body io.Reader) {
		hdr := &tar.Header{Name: name, Mode: mode, Size: size, ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if size < 0 {
			hdr.Typeflag, hdr.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				t.Fatal(err)
			}
		}
	}
	str := func(name string, mode int64, s string) {
		add(name, mode, int64(len(s)), strings.NewReader(s))
	}
	str("VERSION", 0o644, version+"\n")
	add("bin/", 0o755, -1, nil)
	str("bin/start", 0o755, startScript)
	str("bin/stop", 0o755, stopScript)
	str("HEALTHY", 0o644, "ok\n")
	if pad > 0 {
		src := rand.NewChaCha8([32]byte{byte(len(version)), 'c', 'h', 'a', 'o', 's'})
		add("pad.bin", 0o644, pad, io.LimitReader(src, pad))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return release{path: path, sha256: hex.EncodeToString(h.Sum(nil)), size: info.Size(), version: version}
}
