package deployer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/outposthq/outpost/internal/tarscan"
)

// fuzzLimits are small, so that the fuzzer reaches every limit with small
// inputs and each input costs little.
var fuzzLimits = tarscan.Limits{MaxUnpackedBytes: 1 << 20, MaxRatio: 200, RatioFloor: 4 << 10, MaxEntries: 64}

// FuzzScanTar feeds the artifact scan arbitrary bytes. It must never panic
// or hang, and what it accepts must hold up when read back independently
// with archive/tar: every name inside the release directory, no device, no
// setuid or setgid bit, size, ratio and entries within the limits; the
// control plane's walk (tarscan alone) must accept it too and measure the
// same.
//
// The seed corpus is testdata/fuzz/FuzzScanTar (rewritten by
// TestFuzzScanTarSeeds with -update); `make fuzz` runs the fuzzer for a
// bounded time.
func FuzzScanTar(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := scanTar(bytes.NewReader(data), int64(len(data)), fuzzLimits)
		if err != nil {
			var ue *UnsafeArtifactError
			var tl *tarscan.TooLargeError
			if errors.As(err, &ue) && ue.Entry == "" && !strings.Contains(ue.Reason, "empty name") {
				t.Errorf("refusal without an entry name: %v", err)
			}
			if errors.As(err, &tl) && tl.Limits.MaxUnpackedBytes != fuzzLimits.MaxUnpackedBytes {
				t.Errorf("TooLargeError with limits %+v, want %+v", tl.Limits, fuzzLimits)
			}
			return
		}
		sum, err := tarscan.Walk(bytes.NewReader(data), int64(len(data)), fuzzLimits, nil)
		if err != nil || sum.UnpackedBytes != info.unpacked || sum.Gzip != info.gzip {
			t.Fatalf("scanTar accepted (unpacked %d, gzip %v); tarscan.Walk = %+v, %v", info.unpacked, info.gzip, sum, err)
		}
		var r io.Reader = bytes.NewReader(data)
		if info.gzip {
			zr, err := gzip.NewReader(r)
			if err != nil {
				t.Fatalf("accepted, but not gzip: %v", err)
			}
			r = zr
		}
		tr := tar.NewReader(r)
		var entries int
		var unpacked int64
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("accepted, but reading it back: %v", err)
			}
			entries++
			switch h.Typeflag {
			case tar.TypeReg, tar.TypeRegA:
				unpacked += h.Size
			case tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeXGlobalHeader:
			default:
				t.Errorf("accepted entry %q of type %q", h.Name, h.Typeflag)
			}
			if h.Typeflag != tar.TypeXGlobalHeader {
				if name, err := entryPath(h.Name); err != nil || name == ".." || strings.HasPrefix(name, "../") {
					t.Errorf("accepted entry name %q", h.Name)
				}
			}
			if h.Typeflag != tar.TypeSymlink && h.Typeflag != tar.TypeLink && h.Mode&0o6000 != 0 {
				t.Errorf("accepted entry %q with mode %o", h.Name, h.Mode)
			}
		}
		if entries == 0 || entries > fuzzLimits.MaxEntries || unpacked != info.unpacked || unpacked > fuzzLimits.MaxUnpackedBytes ||
			(unpacked > fuzzLimits.RatioFloor && unpacked > fuzzLimits.MaxRatio*int64(len(data))) {
			t.Errorf("accepted %d entries of %d bytes (scan said %d) from %d, limits %+v", entries, unpacked, info.unpacked, len(data), fuzzLimits)
		}
	})
}

// fuzzSeeds are the starting points of FuzzScanTar: ordinary archives and
// one of each way to be refused.
func fuzzSeeds(t testing.TB) map[string][]byte {
	mk := func(gz bool, entries ...tarEntry) []byte { return tarBytesOf(t, gz, entries) }
	reg := func(name, body string, mode int64) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, body: body}
	}
	dir := func(name string) tarEntry { return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir}} }
	sym := func(name, target string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
	}
	var many []tarEntry
	for i := range fuzzLimits.MaxEntries + 1 {
		many = append(many, reg(fmt.Sprintf("f%03d", i), "", 0o644))
	}
	plain := mk(true, dir("./"), dir("bin/"), reg("bin/start", "#!/bin/sh\n", 0o755), reg("VERSION", "1\n", 0o644),
		sym("lib.so", "lib.so.1"), reg("lib.so.1", "elf", 0o644))
	longName := strings.Repeat("d/", 60) + "file"
	gnu := tarEntry{hdr: tar.Header{Name: longName, Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatGNU}, body: "gnu"}
	pax := tarEntry{hdr: tar.Header{Name: longName, Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX,
		PAXRecords: map[string]string{"comment": "hi"}}, body: "pax"}
	symSized := mk(false, tarEntry{hdr: tar.Header{Name: "x", Typeflag: tar.TypeSymlink, Linkname: "VERSION", Format: tar.FormatUSTAR}},
		reg("VERSION", "1\n", 0o644))
	copy(symSized[124:136], fmt.Sprintf("%011o\x00", 512)) // a symlink claiming data: tar readers differ on it
	fixChecksum(symSized[:512])
	var huge bytes.Buffer
	tw := tar.NewWriter(&huge)
	if err := tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 10 << 30}); err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"plain-gzip":       plain,
		"plain-tar":        mk(false, reg("a", "abc", 0o644), dir("d/"), reg("d/b", "", 0o600)),
		"hardlink":         mk(false, reg("a", "abc", 0o644), tarEntry{hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "a"}}),
		"setuid":           mk(true, reg("bin/su", "x", 0o4755)),
		"setgid-writable":  mk(true, reg("shared", "x", 0o2777)),
		"setgid-dir":       mk(false, tarEntry{hdr: tar.Header{Name: "var/", Typeflag: tar.TypeDir, Mode: 0o2775}}),
		"ratio-bomb":       mk(true, reg("zeros", string(make([]byte, 64<<10)), 0o644)),
		"declared-huge":    huge.Bytes(),
		"too-many-entries": mk(true, many...),
		"dotdot":           mk(false, reg("../evil", "x", 0o644)),
		"absolute":         mk(false, reg("/etc/evil", "x", 0o644)),
		"symlink-escape":   mk(false, sym("up", "../../x"), reg("up/evil", "x", 0o644)),
		"device":           mk(false, tarEntry{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}),
		"gnu-long-name":    mk(false, gnu),
		"pax-long-name":    mk(true, pax),
		"symlink-sized":    symSized,
		"truncated-gzip":   plain[:len(plain)/2],
		"text":             []byte(strings.Repeat("hello ", 100)),
		"empty":            {},
	}
}

// tarBytesOf builds a tar (gzip-compressed when gz) of entries in memory.
func tarBytesOf(t testing.TB, gz bool, entries []tarEntry) []byte {
	t.Helper()
	name := "a.tar"
	if gz {
		name += ".gz"
	}
	rel := writeTar(t, filepath.Join(t.TempDir(), name), gz, entries)
	b, err := os.ReadFile(rel.Path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixChecksum recomputes the checksum of a ustar header block after an edit.
func fixChecksum(block []byte) {
	copy(block[148:156], "        ")
	sum := 0
	for _, c := range block[:512] {
		sum += int(c)
	}
	copy(block[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// TestFuzzScanTarSeeds keeps the committed seed corpus in step with
// fuzzSeeds: -update rewrites it; otherwise every seed must be there. (The
// bytes are not compared: gzip output may change with the Go release.)
func TestFuzzScanTarSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzScanTar")
	seeds := fuzzSeeds(t)
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			// The format `go test` reads: a version line, then one Go
			// literal per argument.
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("%v (run go test -run TestFuzzScanTarSeeds -update)", err)
	}
	var have, want []string
	for _, e := range ents {
		have = append(have, e.Name())
	}
	for name := range seeds {
		want = append(want, name)
	}
	slices.Sort(want)
	if !slices.Equal(have, want) {
		t.Errorf("seed corpus %s holds %v, want %v (run go test -run TestFuzzScanTarSeeds -update)", dir, have, want)
	}
}
