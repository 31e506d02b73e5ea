package artifact_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/outposthq/outpost/controlplane/artifact"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func open(t *testing.T) (*artifact.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := artifact.Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, dir
}

// files lists every file under dir/tmp and dir/sha256.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"tmp", "sha256"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, sub+"/"+e.Name())
		}
	}
	return out
}

func TestPutStatOpen(t *testing.T) {
	content := bytes.Repeat([]byte("billing-api 1.4.2\n"), 10000)
	sum := digest(content)
	tests := []struct {
		name string
		want artifact.Meta
	}{
		{"all known", artifact.Meta{SHA256: sum, Size: int64(len(content)), Name: "billing-api-1.4.2.tar.gz"}},
		{"digest only", artifact.Meta{SHA256: sum}},
		{"nothing known", artifact.Meta{Name: "app.war"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := open(t)
			ctx := context.Background()
			wantMeta := artifact.Meta{SHA256: sum, Size: int64(len(content)), Name: tt.want.Name}

			got, present, err := s.Put(ctx, bytes.NewReader(content), tt.want)
			if err != nil || present {
				t.Fatalf("Put = %v, present %v, want stored", err, present)
			}
			if diff := cmp.Diff(wantMeta, got); diff != "" {
				t.Errorf("Put meta (-want +got):\n%s", diff)
			}

			st, ok, err := s.Stat(sum)
			if err != nil || !ok {
				t.Fatalf("Stat = %v, %v", ok, err)
			}
			if diff := cmp.Diff(wantMeta, st); diff != "" {
				t.Errorf("Stat meta (-want +got):\n%s", diff)
			}

			f, om, err := s.Open(sum)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			b, err := io.ReadAll(f)
			f.Close()
			if err != nil || !bytes.Equal(b, content) {
				t.Errorf("Open read %d bytes (%v), want the %d stored", len(b), err, len(content))
			}
			if diff := cmp.Diff(wantMeta, om); diff != "" {
				t.Errorf("Open meta (-want +got):\n%s", diff)
			}
			if p := s.Path(sum); p != filepath.Join(dir, "sha256", sum) {
				t.Errorf("Path = %q", p)
			}
			if _, err := os.OpenFile(s.Path(sum), os.O_WRONLY, 0); err == nil && os.Getuid() != 0 {
				t.Errorf("stored artifact is writable")
			}

			// Putting the same bytes again reports them present, and the
			// first name stays.
			again, present, err := s.Put(ctx, bytes.NewReader(content), artifact.Meta{Name: "other-name"})
			if err != nil || !present {
				t.Errorf("second Put = %v, present %v; want present", err, present)
			}
			if diff := cmp.Diff(wantMeta, again); diff != "" {
				t.Errorf("second Put meta (-want +got):\n%s", diff)
			}
			// With the digest known, a present artifact is not read at all.
			_, present, err = s.Put(ctx, failingReader{}, artifact.Meta{SHA256: sum})
			if err != nil || !present {
				t.Errorf("Put(known digest, unreadable stream) = %v, present %v; want present without reading", err, present)
			}
			if diff := cmp.Diff([]string{"sha256/" + sum, "sha256/" + sum + ".json"}, files(t, dir)); diff != "" {
				t.Errorf("files (-want +got):\n%s", diff)
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("must not be read") }

// truncatedReader yields its bytes, then fails as a dropped connection does.
type truncatedReader struct{ r io.Reader }

func (t truncatedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func TestPutRejects(t *testing.T) {
	content := []byte(strings.Repeat("x", 64<<10))
	sum := digest(content)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		r       io.Reader
		want    artifact.Meta
		wantErr error
	}{
		{"wrong digest", context.Background(), bytes.NewReader(content), artifact.Meta{SHA256: digest([]byte("other"))}, artifact.ErrMismatch},
		{"short stream", context.Background(), bytes.NewReader(content[:1000]), artifact.Meta{SHA256: sum, Size: int64(len(content))}, artifact.ErrMismatch},
		{"long stream", context.Background(), bytes.NewReader(append(content, 'y')), artifact.Meta{Size: int64(len(content))}, artifact.ErrMismatch},
		{"truncated stream", context.Background(), truncatedReader{bytes.NewReader(content[:1000])}, artifact.Meta{}, io.ErrUnexpectedEOF},
		{"cancelled", cancelled, bytes.NewReader(content), artifact.Meta{}, context.Canceled},
		{"upper-case digest", context.Background(), bytes.NewReader(content), artifact.Meta{SHA256: strings.ToUpper(sum)}, artifact.ErrInvalidDigest},
		{"bad name", context.Background(), bytes.NewReader(content), artifact.Meta{Name: "../etc/passwd"}, nil},
		{"negative size", context.Background(), bytes.NewReader(content), artifact.Meta{Size: -1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := open(t)
			_, _, err := s.Put(tt.ctx, tt.r, tt.want)
			if err == nil {
				t.Fatal("Put succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Put = %v, want %v", err, tt.wantErr)
			}
			if left := files(t, dir); len(left) != 0 {
				t.Errorf("failed Put left files: %v", left)
			}
			if _, ok, _ := s.Stat(sum); ok {
				t.Errorf("failed Put stored the artifact")
			}
		})
	}
}

func TestDigestValidation(t *testing.T) {
	s, _ := open(t)
	valid := digest([]byte("a"))
	tests := []struct {
		d  string
		ok bool
	}{
		{valid, true},
		{"", false},
		{valid[:63], false},
		{valid + "0", false},
		{strings.ToUpper(valid), false},
		{"../../../../etc/passwd" + valid[22:], false},
		{strings.Repeat("g", 64), false},
		{valid[:62] + "/a", false},
	}
	for _, tt := range tests {
		err := artifact.CheckDigest(tt.d)
		if (err == nil) != tt.ok {
			t.Errorf("CheckDigest(%q) = %v, want ok=%v", tt.d, err, tt.ok)
		}
		if tt.ok {
			continue
		}
		if !errors.Is(err, artifact.ErrInvalidDigest) {
			t.Errorf("CheckDigest(%q) = %v, want ErrInvalidDigest", tt.d, err)
		}
		if p := s.Path(tt.d); p != "" {
			t.Errorf("Path(%q) = %q, want \"\"", tt.d, p)
		}
		if _, _, err := s.Stat(tt.d); !errors.Is(err, artifact.ErrInvalidDigest) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidDigest", tt.d, err)
		}
		if _, _, err := s.Open(tt.d); !errors.Is(err, artifact.ErrInvalidDigest) {
			t.Errorf("Open(%q) = %v, want ErrInvalidDigest", tt.d, err)
		}
	}
	if _, _, err := s.Open(valid); !errors.Is(err, artifact.ErrNotFound) {
		t.Errorf("Open(absent) = %v, want ErrNotFound", err)
	}
	if _, ok, err := s.Stat(valid); ok || err != nil {
		t.Errorf("Stat(absent) = %v, %v; want false, nil", ok, err)
	}
}

func TestConcurrentPuts(t *testing.T) {
	s, dir := open(t)
	content := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	sum := digest(content)
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
	)
	for i := range n {
		wg.Go(func() {
			want := artifact.Meta{Name: "app.tar.gz"}
			if i%2 == 0 {
				want.SHA256 = sum
			}
			m, present, err := s.Put(context.Background(), bytes.NewReader(content), want)
			if err != nil {
				t.Errorf("Put %d: %v", i, err)
				return
			}
			if m.SHA256 != sum || m.Size != int64(len(content)) {
				t.Errorf("Put %d meta = %+v", i, m)
			}
			if !present {
				mu.Lock()
				created++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if created != 1 {
		t.Errorf("%d of %d concurrent Puts report creating the artifact, want 1", created, n)
	}
	if diff := cmp.Diff([]string{"sha256/" + sum, "sha256/" + sum + ".json"}, files(t, dir)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	b, err := os.ReadFile(s.Path(sum))
	if err != nil || !bytes.Equal(b, content) {
		t.Errorf("stored content differs (%v)", err)
	}
}

func TestOpenRemovesStaleUploads(t *testing.T) {
	_, dir := open(t)
	stale := filepath.Join(dir, "tmp", "put-stale")
	fresh := filepath.Join(dir, "tmp", "put-fresh")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := artifact.Open(dir); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"tmp/put-fresh"}, files(t, dir)); diff != "" {
		t.Errorf("files after reopen (-want +got):\n%s", diff)
	}
}
