package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/sshexec"
)

// uploadSize is the file the issue names: 256 MiB.
const uploadSize = 256 << 20

// BenchmarkUpload copies the same 256 MiB file to the same sshd with
// Outpost's uploader, OpenSSH scp and OpenSSH sftp. MB/s is b.SetBytes.
func BenchmarkUpload(b *testing.B) {
	t := startTarget(b)
	src := randomFile(b, b.TempDir(), uploadSize)
	dst := filepath.Join(t.srv.Dir, "upload.bin")

	b.Run("tool=outpost", func(b *testing.B) {
		ctx := context.Background()
		c, err := sshexec.Dial(ctx, sshexec.Config{
			Address:  t.srv.Addr,
			User:     t.srv.User,
			Auth:     sshexec.Auth{Signers: []ssh.Signer{t.signer}},
			HostKeys: sshexec.HostKeys{KnownHostsFiles: []string{t.knownHosts}},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetBytes(uploadSize)
		b.ResetTimer()
		for b.Loop() {
			f, err := os.Open(src)
			if err != nil {
				b.Fatal(err)
			}
			res, err := c.Upload(ctx, f, dst, 0o644)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			if res.Bytes != uploadSize {
				b.Fatalf("uploaded %d bytes, want %d", res.Bytes, uploadSize)
			}
		}
	})
	b.Run("tool=scp", func(b *testing.B) {
		b.SetBytes(uploadSize)
		for b.Loop() {
			args := append(t.sshOpts(), "-q", "-P", t.port(), src, t.login()+":"+dst)
			if out, err := exec.Command("scp", args...).CombinedOutput(); err != nil {
				b.Fatalf("scp: %v: %s", err, out)
			}
		}
	})
	b.Run("tool=sftp", func(b *testing.B) {
		batch := filepath.Join(b.TempDir(), "batch")
		if err := os.WriteFile(batch, []byte("put "+src+" "+dst+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(uploadSize)
		for b.Loop() {
			args := append(t.sshOpts(), "-q", "-P", t.port(), "-b", batch, t.login())
			if out, err := exec.Command("sftp", args...).CombinedOutput(); err != nil {
				b.Fatalf("sftp: %v: %s", err, out)
			}
		}
	})
	// The baseline really wrote the file: same size as Outpost's.
	if fi, err := os.Stat(dst); err != nil || fi.Size() != uploadSize {
		b.Fatalf("destination after uploads: %v, %v", fi, err)
	}
}
