package sshexec

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func TestUpload(t *testing.T) {
	for _, server := range []struct{ name, sftp string }{
		{"internal-sftp", ""},
		{"sftp-server", "/usr/lib/openssh/sftp-server"},
	} {
		t.Run(server.name, func(t *testing.T) {
			if server.sftp != "" {
				if _, err := os.Stat(server.sftp); err != nil {
					t.Skip(err)
				}
			}
			s := startSSHD(t, sshdOptions{sftpServer: server.sftp})
			c := dial(t, s.config())
			dir := t.TempDir()
			tests := []struct {
				name string
				data []byte
				mode fs.FileMode
			}{
				{"empty", nil, 0o600},
				{"small", []byte("hello\n"), 0o644},
				{"several packets", randomBytes(5<<20+123, 1), 0o755},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					dst := filepath.Join(dir, tt.name)
					// Something longer already there must be truncated.
					writeFile(t, dst, bytes.Repeat([]byte("old"), 3<<20))
					got, err := c.Upload(context.Background(), bytes.NewReader(tt.data), dst, tt.mode)
					if err != nil {
						t.Fatalf("Upload: %v", err)
					}
					want := UploadResult{Bytes: int64(len(tt.data)), SHA256: sha256Hex(tt.data), Sessions: 1}
					if got != want {
						t.Errorf("Upload = %+v, want %+v", got, want)
					}
					onNode, err := os.ReadFile(dst)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(onNode, tt.data) {
						t.Errorf("file on node has %d bytes (sha256 %s), want %d (%s)", len(onNode), sha256Hex(onNode), len(tt.data), want.SHA256)
					}
					fi, err := os.Stat(dst)
					if err != nil {
						t.Fatal(err)
					}
					if fi.Mode().Perm() != tt.mode {
						t.Errorf("mode = %v, want %v", fi.Mode().Perm(), tt.mode)
					}
				})
			}
			c.mu.Lock()
			writeSize := c.sftpWriteSize
			c.mu.Unlock()
			// OpenSSH states its limit (255 KiB) through
			// limits@openssh.com; using it, up to our cap, is what makes
			// uploads fast.
			if want := sftpMaxWriteSize; writeSize != want {
				t.Errorf("SFTP write size = %d, want %d from limits@openssh.com", writeSize, want)
			}
		})
	}
}

func TestUploadRelativeToHome(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c := dial(t, s.config())
	home, err := c.Home(context.Background())
	if err != nil {
		t.Fatalf("Home: %v", err)
	}
	r, err := c.Run(context.Background(), "pwd -P")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(r.Stdout)); home != want {
		t.Errorf("Home = %q, want the login directory %q", home, want)
	}
	name := "sshexec-test-" + hex.EncodeToString(randomBytes(6, byte(time.Now().UnixNano())))
	t.Cleanup(func() { os.Remove(filepath.Join(home, name)) })
	if _, err := c.Upload(context.Background(), strings.NewReader("rel"), name, 0o600); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(home, name))
	if err != nil || string(got) != "rel" {
		t.Errorf("relative upload landed wrong: %q, %v", got, err)
	}
}

func TestUploadErrors(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c := dial(t, s.config())
	dir := t.TempDir()

	t.Run("missing directory", func(t *testing.T) {
		_, err := c.Upload(context.Background(), strings.NewReader("x"), filepath.Join(dir, "no/such/dir/f"), 0o600)
		if err == nil || !strings.Contains(err.Error(), "upload") {
			t.Fatalf("Upload = %v, want an upload error", err)
		}
	})
	t.Run("source fails", func(t *testing.T) {
		boom := errors.New("disk read error")
		src := io.MultiReader(bytes.NewReader(randomBytes(1<<20, 2)), &failingReader{err: boom})
		_, err := c.Upload(context.Background(), src, filepath.Join(dir, "f"), 0o600)
		if !errors.Is(err, boom) {
			t.Fatalf("Upload = %v, want %v", err, boom)
		}
	})
	t.Run("still usable", func(t *testing.T) {
		if _, err := c.Upload(context.Background(), strings.NewReader("ok"), filepath.Join(dir, "g"), 0o600); err != nil {
			t.Fatalf("Upload after errors: %v", err)
		}
	})
}

type failingReader struct{ err error }

func (r *failingReader) Read([]byte) (int, error) { return 0, r.err }

// endlessReader yields zeros forever, counting what was read.
type endlessReader struct{ n atomic.Int64 }

func (r *endlessReader) Read(p []byte) (int, error) {
	clear(p)
	r.n.Add(int64(len(p)))
	return len(p), nil
}

// watchedReader counts the reads of r made after returned was set: an
// Upload must not read its source once it returned.
type watchedReader struct {
	r        io.Reader
	returned atomic.Bool
	late     atomic.Int64
}

func (w *watchedReader) Read(p []byte) (int, error) {
	if w.returned.Load() {
		w.late.Add(1)
	}
	return w.r.Read(p)
}

// checkNoLateReads closes c, which waits for every goroutine it owns
// (those of a cancelled upload too), and then checks that none read w
// after its Upload returned.
func checkNoLateReads(t *testing.T, c *Client, w *watchedReader) {
	t.Helper()
	c.Close()
	if n := w.late.Load(); n != 0 {
		t.Errorf("src was read %d times after Upload returned", n)
	}
}

func TestUploadCancel(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c := dial(t, s.config())
	dst := filepath.Join(t.TempDir(), "f")

	ctx, cancel := context.WithCancel(context.Background())
	src := &endlessReader{}
	watched := &watchedReader{r: src}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Upload(ctx, watched, dst, 0o600)
		watched.returned.Store(true)
		errc <- err
	}()
	for i := 0; src.n.Load() < 4<<20; i++ {
		if i == 1000 {
			t.Fatal("upload did not start within 10s")
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
	// A new SFTP session serves the next upload.
	res, err := c.Upload(context.Background(), strings.NewReader("after"), dst, 0o600)
	if err != nil || res.Bytes != 5 {
		t.Fatalf("Upload after cancel = %+v, %v", res, err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "after" {
		t.Errorf("file = %q, want %q", got, "after")
	}
	checkNoLateReads(t, c, watched)
}
