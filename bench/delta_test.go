package bench

import (
	"archive/zip"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/outposthq/outpost/internal/delta"
)

// jarLike writes a zip of entries individually deflated entries, the
// shape of a Spring Boot fat jar; entries in changed get new content.
func jarLike(tb testing.TB, path string, entries int, changed map[int]bool) int64 {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range entries {
		w, err := zw.Create(fmt.Sprintf("BOOT-INF/classes/com/example/C%05d.class", i))
		if err != nil {
			tb.Fatal(err)
		}
		seed := uint64(i)
		if changed[i] {
			seed += 1 << 32
		}
		r := rand.New(rand.NewPCG(seed, 7))
		// Half random (compresses poorly, like packed classes), half text.
		body := make([]byte, 8<<10+r.IntN(16<<10))
		for j := range body {
			if j%2 == 0 {
				body[j] = byte(r.Uint32())
			} else {
				body[j] = "abcdefgh"[j%8]
			}
		}
		if _, err := w.Write(body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
	return int64(buf.Len())
}

// rsyncLiteral runs Debian's rsync with its delta algorithm forced
// (--no-whole-file: local copies skip it by default) from newPath onto a
// copy of oldPath and returns its "Literal data" bytes: what rsync would
// send over a network.
func rsyncLiteral(tb testing.TB, oldPath, newPath string) int64 {
	tb.Helper()
	dst := filepath.Join(tb.TempDir(), "app.jar")
	old, err := os.ReadFile(oldPath)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(dst, old, 0o644); err != nil {
		tb.Fatal(err)
	}
	out, err := exec.Command("rsync", "--no-whole-file", "--stats", newPath, dst).CombinedOutput()
	if err != nil {
		tb.Fatalf("rsync: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Literal data: ([0-9,]+) bytes`).FindSubmatch(out)
	if m == nil {
		tb.Fatalf("rsync printed no literal data:\n%s", out)
	}
	n, _ := strconv.ParseInt(string(bytes.ReplaceAll(m[1], []byte(","), nil)), 10, 64)
	return n
}

func deltaOf(tb testing.TB, oldPath, newPath string) *delta.Delta {
	tb.Helper()
	f, err := os.Open(oldPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	sig, err := delta.NewSignature(f, fi.Size(), delta.BlockSize(fi.Size()))
	if err != nil {
		tb.Fatal(err)
	}
	target, err := os.ReadFile(newPath)
	if err != nil {
		tb.Fatal(err)
	}
	return delta.Compute(sig, target)
}

// BenchmarkDeltaJar measures the bytes a delta upload sends for a
// jar-like zip of 4,000 entries (about 64 MiB) of which 5 changed, against
// the full artifact and rsync's literal data for the same pair, and for an
// artifact with nothing in common with the old one. The time per op is the
// gateway's delta computation (done once per rollout, shared by nodes).
func BenchmarkDeltaJar(b *testing.B) {
	if _, err := exec.LookPath("rsync"); err != nil {
		b.Skip("rsync not installed (scripts/deps.sh installs it)")
	}
	dir := b.TempDir()
	v1, v2, other := filepath.Join(dir, "v1.jar"), filepath.Join(dir, "v2.jar"), filepath.Join(dir, "other.jar")
	const entries = 4000
	size := jarLike(b, v1, entries, nil)
	jarLike(b, v2, entries, map[int]bool{7: true, 900: true, 1800: true, 2500: true, 3999: true})
	// Nothing in common: every entry changed.
	all := map[int]bool{}
	for i := range entries {
		all[i] = true
	}
	jarLike(b, other, entries, all)
	rs := rsyncLiteral(b, v1, v2)
	var d *delta.Delta
	b.ResetTimer()
	for range b.N {
		d = deltaOf(b, v1, v2)
	}
	b.StopTimer()
	unrelated := deltaOf(b, v1, other)
	b.ReportMetric(float64(size), "full_bytes")
	b.ReportMetric(float64(d.Literal), "delta_bytes")
	b.ReportMetric(float64(rs), "rsync_bytes")
	b.ReportMetric(100*float64(d.Literal)/float64(size), "delta_pct_of_full")
	b.ReportMetric(float64(d.Literal)/float64(max(rs, 1)), "delta/rsync")
	b.ReportMetric(float64(len(d.Pieces)), "pieces")
	b.ReportMetric(100*float64(unrelated.Literal)/float64(size), "unrelated_pct_of_full")
}
