package deployer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// snapshotTree records dir as path -> "dir", "file <mode> <content>" or
// "link <target>", so that "the node is unchanged" is one cmp.Diff.
func snapshotTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if _, err := os.Lstat(dir); os.IsNotExist(err) {
		return out
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "link " + target
		case d.IsDir():
			out[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = "file " + info.Mode().String() + " " + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return out
}

// assertUnchanged fails when dir differs from before.
func assertUnchanged(t testing.TB, dir string, before map[string]string) {
	t.Helper()
	if diff := cmp.Diff(before, snapshotTree(t, dir)); diff != "" {
		t.Errorf("deploy tree changed (-before +after):\n%s", diff)
	}
}

// release is a built test artifact.
type release struct {
	Path   string
	SHA256 string
	Size   int64
}

// writeTar writes a tar.gz of entries to path and returns it as a release.
// Entries are headers with optional content.
type tarEntry struct {
	hdr  tar.Header
	body string
}

func writeTar(t testing.TB, path string, gz bool, entries []tarEntry) release {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == 0 {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
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
	return writeFile(t, path, buf.Bytes())
}

func writeFile(t testing.TB, path string, b []byte) release {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return release{Path: path, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(b))}
}

// serviceRelease builds a release following the simulated service
// contract: VERSION, bin/start, bin/stop, and HEALTHY when healthy. extra
// adds a file of that many random-ish bytes (for slow uploads).
func serviceRelease(t testing.TB, dir, version string, healthy bool, extra int) release {
	t.Helper()
	if extra == 0 {
		r, err := simfleet.BuildRelease(dir, version, healthy)
		if err != nil {
			t.Fatal(err)
		}
		return release{Path: r.Path, SHA256: r.SHA256, Size: r.Size}
	}
	entries := []tarEntry{
		{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir}},
		{hdr: tar.Header{Name: "VERSION", Typeflag: tar.TypeReg}, body: version + "\n"},
		{hdr: tar.Header{Name: "bin/", Typeflag: tar.TypeDir}},
		{hdr: tar.Header{Name: "bin/start", Typeflag: tar.TypeReg, Mode: 0o755},
			body: "#!/bin/sh\nmkdir -p ../../.svc && pwd -P > ../../.svc/running\n"},
		{hdr: tar.Header{Name: "bin/stop", Typeflag: tar.TypeReg, Mode: 0o755},
			body: "#!/bin/sh\nrm -f ../../.svc/running\n"},
	}
	if healthy {
		entries = append(entries, tarEntry{hdr: tar.Header{Name: "HEALTHY", Typeflag: tar.TypeReg}, body: "yes\n"})
	}
	if extra > 0 {
		b := make([]byte, extra)
		x := uint32(2463534242)
		for i := range b {
			// xorshift: incompressible enough that gzip keeps the size.
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x)
		}
		entries = append(entries, tarEntry{hdr: tar.Header{Name: "blob", Typeflag: tar.TypeReg}, body: string(b)})
	}
	return writeTar(t, filepath.Join(dir, version+".tar.gz"), true, entries)
}

// serveHealth serves h on ip at a free port until the test ends and
// returns the port.
func serveHealth(t testing.TB, ip string, h http.Handler) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// events collects step events.
type events struct {
	mu  sync.Mutex
	all []*outpostv1.NodeStepEvent
}

func (e *events) emit(ev *outpostv1.NodeStepEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) list() []*outpostv1.NodeStepEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*outpostv1.NodeStepEvent(nil), e.all...)
}

// steps renders events as "STEP:PHASE" strings, for comparisons.
func (e *events) steps() []string {
	var out []string
	for _, ev := range e.list() {
		out = append(out, strings.TrimPrefix(ev.GetStep().String(), "STEP_")+":"+strings.TrimPrefix(ev.GetPhase().String(), "STEP_PHASE_"))
	}
	return out
}

// has reports whether an event of step with phase exists.
func (e *events) has(step outpostv1.Step, phase outpostv1.StepPhase) bool {
	for _, ev := range e.list() {
		if ev.GetStep() == step && ev.GetPhase() == phase {
			return true
		}
	}
	return false
}

// checkEventInvariants checks what every event stream must satisfy: seq
// 1, 2, 3...; node and rollout set; each STARTED followed by its end before
// the next STARTED; times not going backwards.
func checkEventInvariants(t testing.TB, evs []*outpostv1.NodeStepEvent, nodeID, rollout string) {
	t.Helper()
	var open *outpostv1.NodeStepEvent
	var last time.Time
	for i, ev := range evs {
		if ev.GetSeq() != uint64(i+1) {
			t.Errorf("event %d has seq %d", i, ev.GetSeq())
		}
		if ev.GetNodeId() != nodeID || ev.GetRolloutId() != rollout {
			t.Errorf("event %d: node %q rollout %q, want %q %q", i, ev.GetNodeId(), ev.GetRolloutId(), nodeID, rollout)
		}
		at := ev.GetTime().AsTime()
		if at.Before(last) {
			t.Errorf("event %d (%v %v) at %v, before the previous one at %v", i, ev.GetStep(), ev.GetPhase(), at, last)
		}
		last = at
		switch ev.GetPhase() {
		case outpostv1.StepPhase_STEP_PHASE_STARTED:
			if open != nil {
				t.Errorf("event %d: %v started while %v is open", i, ev.GetStep(), open.GetStep())
			}
			open = ev
		default:
			if open == nil || open.GetStep() != ev.GetStep() {
				t.Errorf("event %d: %v %v without its start", i, ev.GetStep(), ev.GetPhase())
			}
			if ev.GetDuration() == nil {
				t.Errorf("event %d: %v end without duration", i, ev.GetStep())
			}
			if ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_FAILED && ev.GetError() == "" {
				t.Errorf("event %d: %v failed without an error", i, ev.GetStep())
			}
			open = nil
		}
	}
	if open != nil {
		t.Errorf("step %v never ended", open.GetStep())
	}
}

// countingRemote counts commands and uploads, and can cut the connection
// in the middle of an upload.
type countingRemote struct {
	Remote
	runs, uploads atomic.Int32
	// cutAfter, when positive, makes the upload cut the connection (via
	// cut) once that many bytes were read.
	cutAfter int64
	cut      func()
}

func (r *countingRemote) Run(ctx context.Context, cmd string) (sshexec.Result, error) {
	r.runs.Add(1)
	return r.Remote.Run(ctx, cmd)
}

func (r *countingRemote) Upload(ctx context.Context, src io.Reader, p string, mode fs.FileMode) (sshexec.UploadResult, error) {
	r.uploads.Add(1)
	if r.cutAfter > 0 {
		src = &cuttingReader{r: src, left: r.cutAfter, cut: r.cut}
	}
	return r.Remote.Upload(ctx, src, p, mode)
}

// cuttingReader calls cut once left bytes were read, then keeps reading so
// that the upload fails only because the connection is gone.
type cuttingReader struct {
	r    io.Reader
	left int64
	cut  func()
	once sync.Once
}

func (c *cuttingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left <= 0 {
		c.once.Do(c.cut)
	}
	return n, err
}

// lsReleases lists the entries of deployPath/releases.
func lsReleases(t testing.TB, deployPath string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(deployPath, "releases"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// readLink returns the target of deployPath/current, or "".
func readLink(t testing.TB, deployPath string) string {
	t.Helper()
	s, err := os.Readlink(filepath.Join(deployPath, "current"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return s
}

// getStatus GETs url and returns the status code (0 on error).
func getStatus(url string) int {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func itoa(i int) string { return strconv.Itoa(i) }
