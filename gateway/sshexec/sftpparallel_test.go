package sshexec

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// smallParallelMin replaces parallelUploadMin in the tests of failures and
// fallbacks, which need the parallel path but not 32 MiB of data each.
const (
	smallParallelMin  = 4 << 20
	smallParallelSize = smallParallelMin + 1<<20 + 4321
)

// dialSmallParallel dials with the parallel path starting at 4 MiB.
func dialSmallParallel(t *testing.T, cfg Config) *Client {
	t.Helper()
	c := dial(t, cfg)
	c.parallelMin = smallParallelMin
	return c
}

func TestUploadSize(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(30, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	tests := []struct {
		name   string
		src    io.Reader
		want   int64
		wantOK bool
	}{
		{"bytes reader", bytes.NewReader(make([]byte, 7)), 7, true},
		{"strings reader", strings.NewReader("abc"), 3, true},
		{"file from its offset", f, 70, true},
		{"directory", dir, 0, false},
		{"plain reader", io.MultiReader(strings.NewReader("abc")), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := uploadSize(tt.src)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("uploadSize = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestUploadParallel(t *testing.T) {
	for _, server := range []struct {
		name, sftp string
		// parallelMin replaces parallelUploadMin when set: the real
		// threshold is tested once, on internal-sftp.
		parallelMin int64
	}{
		{"internal-sftp", "", 0},
		{"sftp-server", "/usr/lib/openssh/sftp-server", smallParallelMin},
	} {
		t.Run(server.name, func(t *testing.T) {
			if server.sftp != "" {
				if _, err := os.Stat(server.sftp); err != nil {
					t.Skip(err)
				}
			}
			s := startSSHD(t, sshdOptions{sftpServer: server.sftp})
			c := dial(t, s.config())
			c.parallelMin = server.parallelMin
			size := int(cmp.Or(server.parallelMin, parallelUploadMin)) + 3<<20 + 4321
			data := randomBytes(size, 3)
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			writeFile(t, src, data)
			dst := filepath.Join(dir, "dst")
			// Longer than the upload: it must be truncated, not overwritten.
			writeFile(t, dst, bytes.Repeat([]byte("old"), size))

			f, err := os.Open(src)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Upload sends what remains from the file's offset.
			const skip = 1000
			if _, err := f.Seek(skip, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			// Hold the source back after its first MiB until a second
			// session is writing, so that one takes part however fast the
			// first is.
			var started atomic.Int32
			c.onUploadSession = func() { started.Add(1) }
			gate := &gatedFile{File: f, after: 1 << 20, open: func() bool { return started.Load() >= 2 }}
			got, err := c.Upload(context.Background(), gate, dst, 0o640)
			if err != nil {
				t.Fatalf("Upload: %v", err)
			}
			want := data[skip:]
			if got.Bytes != int64(len(want)) || got.SHA256 != sha256Hex(want) {
				t.Errorf("Upload = %d bytes sha256 %s, want %d bytes %s", got.Bytes, got.SHA256, len(want), sha256Hex(want))
			}
			if gate.timedOut {
				t.Fatal("no second session started writing within 10s")
			}
			if got.Sessions < 2 || got.Sessions > DefaultUploadSessions {
				t.Errorf("Sessions = %d, want 2..%d", got.Sessions, DefaultUploadSessions)
			}
			checkRemote(t, dst, want, 0o640)

			// The session is reusable, and an upload under the threshold
			// stays on one session.
			small, err := c.Upload(context.Background(), bytes.NewReader(data[:1<<20]), dst, 0o600)
			if err != nil {
				t.Fatalf("small Upload: %v", err)
			}
			if small.Sessions != 1 {
				t.Errorf("small upload Sessions = %d, want 1", small.Sessions)
			}
			checkRemote(t, dst, data[:1<<20], 0o600)
		})
	}
}

// gatedFile is an *os.File (so Upload sees its size) whose reads stop
// after the first after bytes until open reports true, for at most 10s.
type gatedFile struct {
	*os.File
	after    int64
	open     func() bool
	read     int64
	timedOut bool
}

func (g *gatedFile) Read(p []byte) (int, error) {
	if g.read >= g.after {
		for i := 0; !g.open(); i++ {
			if i == 1000 {
				g.timedOut = true
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		g.after = math.MaxInt64
	}
	n, err := g.File.Read(p)
	g.read += int64(n)
	return n, err
}

func checkRemote(t *testing.T, path string, want []byte, mode fs.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("file on node has %d bytes (sha256 %s), want %d (%s)", len(got), sha256Hex(got), len(want), sha256Hex(want))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("mode = %v, want %v", fi.Mode().Perm(), mode)
	}
}

// TestUploadParallelFewerSessions: a server that allows one session per
// connection refuses the extra ones, and the upload goes on over one.
func TestUploadParallelFewerSessions(t *testing.T) {
	s := startSSHD(t, sshdOptions{extraConfig: []string{"MaxSessions 1"}})
	c := dialSmallParallel(t, s.config())
	data := randomBytes(smallParallelSize, 4)
	dst := filepath.Join(t.TempDir(), "dst")
	got, err := c.Upload(context.Background(), bytes.NewReader(data), dst, 0o644)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	want := UploadResult{Bytes: int64(len(data)), SHA256: sha256Hex(data), Sessions: 1}
	if got != want {
		t.Errorf("Upload = %+v, want %+v", got, want)
	}
	checkRemote(t, dst, data, 0o644)
}

func TestUploadParallelOneSessionConfigured(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	cfg := s.config()
	cfg.UploadSessions = 1
	c := dialSmallParallel(t, cfg)
	data := randomBytes(smallParallelSize, 5)
	dst := filepath.Join(t.TempDir(), "dst")
	got, err := c.Upload(context.Background(), bytes.NewReader(data), dst, 0o644)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if got.Sessions != 1 || got.SHA256 != sha256Hex(data) {
		t.Errorf("Upload = %+v, want one session and sha256 %s", got, sha256Hex(data))
	}
	checkRemote(t, dst, data, 0o644)
}

// sizedReader is a reader of known (claimed) length, so Upload takes the
// parallel path, whose bytes come from r.
type sizedReader struct {
	r   io.Reader
	len int
}

func (s *sizedReader) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *sizedReader) Len() int                   { return s.len }

func TestUploadParallelErrors(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c := dialSmallParallel(t, s.config())
	dir := t.TempDir()

	t.Run("missing directory", func(t *testing.T) {
		src := bytes.NewReader(make([]byte, smallParallelSize))
		_, err := c.Upload(context.Background(), src, filepath.Join(dir, "no/such/dir/f"), 0o600)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Upload = %v, want an error wrapping fs.ErrNotExist", err)
		}
	})
	t.Run("source fails", func(t *testing.T) {
		boom := errors.New("disk read error")
		src := &sizedReader{
			r:   io.MultiReader(bytes.NewReader(randomBytes(smallParallelMin, 6)), &failingReader{err: boom}),
			len: smallParallelSize,
		}
		_, err := c.Upload(context.Background(), src, filepath.Join(dir, "f"), 0o600)
		if !errors.Is(err, boom) {
			t.Fatalf("Upload = %v, want %v", err, boom)
		}
	})
	t.Run("still usable", func(t *testing.T) {
		data := randomBytes(smallParallelSize, 7)
		got, err := c.Upload(context.Background(), bytes.NewReader(data), filepath.Join(dir, "g"), 0o600)
		if err != nil {
			t.Fatalf("Upload after errors: %v", err)
		}
		if got.SHA256 != sha256Hex(data) {
			t.Errorf("sha256 = %s, want %s", got.SHA256, sha256Hex(data))
		}
	})
}

func TestUploadParallelCancel(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c := dialSmallParallel(t, s.config())
	dst := filepath.Join(t.TempDir(), "f")

	ctx, cancel := context.WithCancel(context.Background())
	endless := &endlessReader{}
	watched := &watchedReader{r: endless}
	src := &sizedReader{r: watched, len: 1 << 40}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Upload(ctx, src, dst, 0o600)
		watched.returned.Store(true)
		errc <- err
	}()
	for i := 0; endless.n.Load() < 8<<20; i++ {
		if i == 1000 {
			t.Fatal("upload did not pass 8 MiB within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Upload after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Upload did not return after cancel")
	}
	data := randomBytes(smallParallelSize, 8)
	res, err := c.Upload(context.Background(), bytes.NewReader(data), dst, 0o600)
	if err != nil || res.SHA256 != sha256Hex(data) {
		t.Fatalf("Upload after cancel = %+v, %v", res, err)
	}
	checkRemote(t, dst, data, 0o600)
	checkNoLateReads(t, c, watched)
}

// TestUploadParallelClose: closing the Client in the middle of a parallel
// upload ends it, and Close waits for every goroutine (goleak checks).
func TestUploadParallelClose(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c, err := Dial(context.Background(), s.config())
	if err != nil {
		t.Fatal(err)
	}
	c.parallelMin = smallParallelMin
	endless := &endlessReader{}
	dst := filepath.Join(t.TempDir(), "f")
	errc := make(chan error, 1)
	go func() {
		_, err := c.Upload(context.Background(), &sizedReader{r: endless, len: 1 << 40}, dst, 0o600)
		errc <- err
	}()
	for i := 0; endless.n.Load() < 8<<20; i++ {
		if i == 1000 {
			t.Fatal("upload did not pass 8 MiB within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Upload succeeded on a closed Client")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Upload did not return after Close")
	}
}
