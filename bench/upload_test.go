package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

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

// uploadSmallSize is a typical release: 5 MiB, the size BenchmarkFleet100
// deploys.
const uploadSmallSize = 5 << 20

// BenchmarkUploadSmall uploads a 5 MiB file over a new connection each
// time, as one node's deployment does, with Outpost's uploader and with
// OpenSSH scp, to a real sshd whose logins do not run this machine's
// root ~/.bashrc. Besides the time it reports the CPU the server (the
// sshd process tree) spent per upload: on a fleet that CPU is the
// servers', and on this machine it competes with everything else.
func BenchmarkUploadSmall(b *testing.B) {
	dir := b.TempDir()
	key := newClientKey(b, dir)
	node := startSSHDFleet(b, dir, key.signer, 1)[0]
	src := randomFile(b, dir, uploadSmallSize)
	dst := filepath.Join(node.home, "upload.bin")
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(node.srv.KnownHostsLine()+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	serverCPU := func(b *testing.B, run func()) {
		cpu0 := sshdCPU(b)
		b.SetBytes(uploadSmallSize)
		for b.Loop() {
			run()
		}
		b.StopTimer()
		// The sshd children that served the last upload may still be
		// exiting; their CPU counts once they are reaped.
		time.Sleep(300 * time.Millisecond)
		b.ReportMetric((sshdCPU(b)-cpu0)*1000/float64(b.N), "server-cpu-ms/op")
	}
	b.Run("tool=outpost", func(b *testing.B) {
		ctx := context.Background()
		serverCPU(b, func() {
			c, err := sshexec.Dial(ctx, sshexec.Config{
				Address:  node.srv.Addr,
				User:     node.srv.User,
				Auth:     sshexec.Auth{Signers: []ssh.Signer{key.signer}},
				HostKeys: sshexec.HostKeys{KnownHostsFiles: []string{knownHosts}},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			f, err := os.Open(src)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			res, err := c.Upload(ctx, f, dst, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			if res.Bytes != uploadSmallSize {
				b.Fatalf("uploaded %d bytes, want %d", res.Bytes, uploadSmallSize)
			}
		})
	})
	b.Run("tool=scp", func(b *testing.B) {
		args := []string{"-F", "/dev/null", "-i", key.privateKey, "-o", "IdentitiesOnly=yes",
			"-o", "UserKnownHostsFile=" + knownHosts, "-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-q", "-P", strconv.Itoa(node.srv.Port),
			src, node.srv.User + "@" + node.srv.IP + ":" + dst}
		serverCPU(b, func() {
			if out, err := exec.Command("scp", args...).CombinedOutput(); err != nil {
				b.Fatalf("scp: %v: %s", err, out)
			}
		})
	})
	if fi, err := os.Stat(dst); err != nil || fi.Size() != uploadSmallSize {
		b.Fatalf("destination after uploads: %v, %v", fi, err)
	}
}
