package tarscan

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

// entry is a tar entry for tests: a header and the bytes of its data.
type entry struct {
	hdr  tar.Header
	data []byte
}

func reg(name string, mode int64, data []byte) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))}, data: data}
}

func dir(name string, mode int64) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}}
}

// archive builds a tar of es, gzip-compressed when gz.
func archive(t testing.TB, gz bool, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range es {
		h := e.hdr
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("header %s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// headerOnly is a tar that is one header block claiming size bytes of
// data and nothing else: a walk must refuse it from the header alone.
func headerOnly(t testing.TB, name string, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err == nil {
		t.Fatal("Flush without the data succeeded")
	}
	return buf.Bytes()
}

// withSize rewrites the size field of the ustar header block at off and
// its checksum, for headers the tar writer will not produce.
func withSize(b []byte, off int, size int64) []byte {
	b = bytes.Clone(b)
	copy(b[off+124:off+136], fmt.Sprintf("%011o\x00", size))
	copy(b[off+148:off+156], "        ")
	sum := 0
	for _, c := range b[off : off+512] {
		sum += int(c)
	}
	copy(b[off+148:off+156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func zeros(n int) []byte { return make([]byte, n) }

func TestWalk(t *testing.T) {
	const mib = 1 << 20
	symlink := archive(t, false,
		entry{hdr: tar.Header{Name: "lib.so", Typeflag: tar.TypeSymlink, Linkname: "lib.so.1", Mode: 0o777, Format: tar.FormatUSTAR}},
		reg("lib.so.1", 0o644, []byte("elf")))
	// A megabyte of zeros compresses about a thousand times.
	bomb := archive(t, true, reg("zeros", 0o644, zeros(mib)))
	for _, tc := range []struct {
		name    string
		tar     []byte
		lim     Limits
		want    Summary // when accepted
		tooBig  Limit   // the TooLargeError expected; 0 for none
		mode    string  // the ModeError's entry expected; "" for none
		message []string
	}{
		{
			name: "plain gzip",
			tar:  archive(t, true, dir("bin/", 0o755), reg("bin/start", 0o755, []byte("#!/bin/sh\n")), reg("VERSION", 0o644, []byte("1\n"))),
			want: Summary{Gzip: true, Entries: 3, UnpackedBytes: 12},
		},
		{
			name: "plain tar",
			tar:  archive(t, false, reg("a", 0o644, []byte("abc"))),
			want: Summary{Entries: 1, UnpackedBytes: 3},
		},
		{
			name:    "declared size over the limit",
			tar:     headerOnly(t, "zeros", 10<<30),
			tooBig:  LimitUnpackedBytes,
			message: []string{`"zeros"`, "10.0 GiB (10737418240 bytes)", "8.0 GiB (8589934592 bytes)"},
		},
		{
			name:    "many entries add up over the limit",
			tar:     archive(t, true, reg("a", 0o644, zeros(600)), reg("b", 0o644, zeros(600))),
			lim:     Limits{MaxUnpackedBytes: 1000},
			tooBig:  LimitUnpackedBytes,
			message: []string{`"b"`, "1.2 KiB (1200 bytes)", "1000 bytes"},
		},
		{
			name: "at the limit exactly",
			tar:  archive(t, true, reg("a", 0o644, zeros(500)), reg("b", 0o644, zeros(500))),
			lim:  Limits{MaxUnpackedBytes: 1000},
			want: Summary{Gzip: true, Entries: 2, UnpackedBytes: 1000},
		},
		{
			name:    "compression bomb",
			tar:     bomb,
			lim:     Limits{RatioFloor: mib / 2},
			tooBig:  LimitRatio,
			message: []string{`"zeros"`, "1.0 MiB (1048576 bytes)", "limit of 200 times", "512.0 KiB (524288 bytes) unpacked"},
		},
		{
			name: "compressible but under the floor",
			tar:  bomb,
			lim:  Limits{RatioFloor: mib},
			want: Summary{Gzip: true, Entries: 1, UnpackedBytes: mib},
		},
		{
			name: "compressible under a higher ratio",
			tar:  bomb,
			lim:  Limits{RatioFloor: mib / 2, MaxRatio: 100000},
			want: Summary{Gzip: true, Entries: 1, UnpackedBytes: mib},
		},
		{
			name:    "too many entries",
			tar:     archive(t, false, reg("a", 0o644, nil), reg("b", 0o644, nil), reg("c", 0o644, nil)),
			lim:     Limits{MaxEntries: 2},
			tooBig:  LimitEntries,
			message: []string{"more than 2 entries", `"c"`},
		},
		{
			name:    "setuid file",
			tar:     archive(t, true, dir("bin/", 0o755), reg("bin/su", 0o4755, []byte("x"))),
			mode:    "bin/su",
			message: []string{`"bin/su"`, "mode 4755", "setuid bit"},
		},
		{
			name:    "setgid world-writable file",
			tar:     archive(t, true, reg("shared", 0o2777, []byte("x"))),
			mode:    "shared",
			message: []string{`"shared"`, "mode 2777", "setgid bit"},
		},
		{
			name:    "setuid and setgid",
			tar:     archive(t, false, reg("both", 0o6755, nil)),
			mode:    "both",
			message: []string{"mode 6755", "setuid and setgid bit"},
		},
		{
			name: "setgid directory",
			tar:  archive(t, false, dir("var/", 0o2775)),
			mode: "var/",
		},
		{
			name: "setuid allowed",
			tar:  archive(t, true, reg("bin/su", 0o4755, []byte("x")), reg("shared", 0o2777, []byte("y"))),
			lim:  Limits{AllowSetuid: true},
			want: Summary{Gzip: true, Entries: 2, UnpackedBytes: 2},
		},
		{
			name: "sticky directory is not setuid",
			tar:  archive(t, false, dir("tmp/", 0o1777)),
			want: Summary{Entries: 1},
		},
		{
			// GNU tar and archive/tar both read no data for a symlink,
			// whatever its size field says: it adds nothing.
			name: "symlink claiming a size",
			tar:  withSize(symlink, 0, 1<<40),
			lim:  Limits{MaxUnpackedBytes: 10},
			want: Summary{Entries: 2, UnpackedBytes: 3},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Walk(bytes.NewReader(tc.tar), int64(len(tc.tar)), tc.lim, nil)
			var tl *TooLargeError
			var me *ModeError
			switch {
			case tc.tooBig != 0:
				if !errors.As(err, &tl) || tl.Limit != tc.tooBig {
					t.Fatalf("Walk = %+v, %v; want a TooLargeError on limit %d", got, err, tc.tooBig)
				}
			case tc.mode != "":
				if !errors.As(err, &me) || me.Entry != tc.mode {
					t.Fatalf("Walk = %+v, %v; want a ModeError on %q", got, err, tc.mode)
				}
			default:
				if err != nil {
					t.Fatalf("Walk = %v, want accepted", err)
				}
				if got != tc.want {
					t.Errorf("Walk = %+v, want %+v", got, tc.want)
				}
			}
			for _, m := range tc.message {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
		})
	}
}

// TestWalkStopsEarly shows that a bomb costs the walk only what the limits
// allow: the reader is never asked for the bytes past the refusing header.
func TestWalkStopsEarly(t *testing.T) {
	b := append(headerOnly(t, "big", 1<<40), zeros(1<<20)...)
	r := &countingReader{r: bytes.NewReader(b)}
	_, err := Walk(r, int64(len(b)), Limits{}, nil)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.UnpackedBytes != 1<<40 {
		t.Fatalf("Walk = %v, want a TooLargeError at 1 TiB", err)
	}
	// bufio reads ahead one buffer; the megabyte behind is never read.
	if r.n > 64<<10 {
		t.Errorf("Walk read %d bytes to refuse a header", r.n)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestCountSaturates adds sizes near the largest int64 (sparse entries can
// declare them with little data): the sum must not wrap around to a small
// number that passes.
func TestCountSaturates(t *testing.T) {
	lim := Limits{MaxUnpackedBytes: math.MaxInt64 - 1, MaxRatio: math.MaxInt64}
	if err := lim.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	sum := Summary{}
	h := &tar.Header{Name: "sparse", Typeflag: tar.TypeReg, Mode: 0o644, Size: math.MaxInt64/2 + 1}
	if err := count(&sum, h, 1, lim); err != nil {
		t.Fatalf("first entry: %v", err)
	}
	err := count(&sum, h, 1, lim)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Limit != LimitUnpackedBytes || sum.UnpackedBytes != math.MaxInt64 {
		t.Errorf("second entry: %v, sum %d; want a TooLargeError with the sum at MaxInt64", err, sum.UnpackedBytes)
	}
}

func TestWalkRefusesBadInput(t *testing.T) {
	gzipText := func() []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write([]byte(strings.Repeat("hello", 200)))
		zw.Close()
		return buf.Bytes()
	}()
	good := archive(t, true, reg("a", 0o644, []byte("abc")))
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "no entries"},
		{"text", []byte(strings.Repeat("hello", 200)), "not a readable tar"},
		{"gzip of text", gzipText, "not a readable tar"},
		{"end of archive only", make([]byte, 1024), "no entries"},
		{"gzip magic only", []byte{0x1f, 0x8b}, "gzip"},
		{"truncated gzip", good[:len(good)/2], ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Walk(bytes.NewReader(tc.in), int64(len(tc.in)), Limits{}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Walk = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := Walk(bytes.NewReader(good), int64(len(good)), Limits{MaxUnpackedBytes: -1}, nil); err == nil {
		t.Error("Walk accepted a negative limit")
	}
}

func TestWalkEachAndPartialSummary(t *testing.T) {
	b := archive(t, false, reg("a", 0o644, []byte("abc")), reg("b", 0o644, []byte("de")), reg("c", 0o644, nil))
	stop := errors.New("stop")
	var seen []string
	got, err := Walk(bytes.NewReader(b), int64(len(b)), Limits{}, func(h *tar.Header) error {
		seen = append(seen, h.Name)
		if h.Name == "b" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || strings.Join(seen, ",") != "a,b" {
		t.Errorf("Walk = %v after %v, want each's error after a,b", err, seen)
	}
	if want := (Summary{Entries: 2, UnpackedBytes: 5}); got != want {
		t.Errorf("Walk summary = %+v, want %+v (what was read)", got, want)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:          "0 bytes",
		1023:       "1023 bytes",
		1024:       "1.0 KiB (1024 bytes)",
		8 << 30:    "8.0 GiB (8589934592 bytes)",
		45<<20 + 1: "45.0 MiB (47185921 bytes)",
	} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
