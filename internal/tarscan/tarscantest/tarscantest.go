// Package tarscantest builds hostile tar artifacts for tests: compression
// bombs and setuid entries, cheaply enough to build hundreds of MiB of
// unpacked data in a test. It is the one builder the control plane,
// deployer and end-to-end tests share.
package tarscantest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"testing"
	"time"
)

// ZerosTarGz returns a tar.gz holding one regular file, name, of mib MiB
// of zeros with the given mode. It is made of concatenated gzip members
// (as gzip -d, GNU tar and Go's gzip reader read them), one per MiB of
// the same zeros, so a bomb of hundreds of MiB costs the test one MiB of
// compression: 256 MiB of zeros come to about 264 KiB.
func ZerosTarGz(t testing.TB, name string, mode int64, mib int) []byte {
	t.Helper()
	var hdr bytes.Buffer
	if err := tar.NewWriter(&hdr).WriteHeader(&tar.Header{
		Name: name, Typeflag: tar.TypeReg, Mode: mode,
		Size: int64(mib) << 20, ModTime: time.Unix(1700000000, 0),
	}); err != nil {
		t.Fatal(err)
	}
	// The header block, then only zeros: the data (a whole number of
	// blocks) and the two zero blocks that end the archive.
	out := gzMember(t, hdr.Bytes()[:512])
	mebibyte := gzMember(t, make([]byte, 1<<20))
	for range mib {
		out = append(out, mebibyte...)
	}
	return append(out, gzMember(t, make([]byte, 1024))...)
}

// gzMember gzips b as one gzip member.
func gzMember(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
