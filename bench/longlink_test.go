package bench

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/testproxy"
)

// longLinkOneWay is half the round trip the issue names (10 ms): a link
// between datacenters, or to a remote segment.
const longLinkOneWay = 5 * time.Millisecond

// BenchmarkUploadLongLink copies the same 256 MiB file to the same sshd
// through a test proxy that adds 10 ms of round-trip delay, with Outpost's
// uploader and with OpenSSH scp. Over such a link a transfer is bounded by
// what may be in flight: the server's 2 MiB channel window (and, for
// SFTP, the requests in flight), not by CPU. MB/s is b.SetBytes.
func BenchmarkUploadLongLink(b *testing.B) {
	t := startTarget(b)
	src := randomFile(b, b.TempDir(), uploadSize)
	dst := filepath.Join(t.srv.Dir, "upload-longlink.bin")

	// The proxy listens on the node's own IP, so the link looks like a
	// second address of the same host; its known_hosts line is separate.
	p := testproxy.StartOn(b, t.srv.IP, t.srv.Addr)
	p.SetDelay(longLinkOneWay)
	kh := filepath.Join(b.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(p.Addr())}, t.srv.HostKey)
	if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	_, port, err := net.SplitHostPort(p.Addr())
	if err != nil {
		b.Fatal(err)
	}

	// sessions=1 is Outpost held to one channel, as scp is: the
	// difference is what the extra channels' windows buy.
	for _, v := range []struct {
		name     string
		sessions int
	}{
		{"tool=outpost", 0},
		{"tool=outpost-1session", 1},
	} {
		b.Run(v.name, func(b *testing.B) {
			ctx := context.Background()
			c, err := sshexec.Dial(ctx, sshexec.Config{
				Address:        p.Addr(),
				User:           t.srv.User,
				Auth:           sshexec.Auth{Signers: []ssh.Signer{t.signer}},
				HostKeys:       sshexec.HostKeys{KnownHostsFiles: []string{kh}},
				UploadSessions: v.sessions,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(uploadSize)
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
	}
	b.Run("tool=scp", func(b *testing.B) {
		opts := []string{
			"-F", "/dev/null",
			"-i", t.keyFile,
			"-o", "IdentitiesOnly=yes",
			"-o", "UserKnownHostsFile=" + kh,
			"-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes",
			"-o", "LogLevel=ERROR",
		}
		b.SetBytes(uploadSize)
		for b.Loop() {
			args := append(opts, "-q", "-P", port, src, t.srv.User+"@"+t.srv.IP+":"+dst)
			if out, err := exec.Command("scp", args...).CombinedOutput(); err != nil {
				b.Fatalf("scp: %v: %s", err, out)
			}
		}
	})
	// Both tools really wrote the whole file.
	if fi, err := os.Stat(dst); err != nil || fi.Size() != uploadSize {
		b.Fatalf("destination after uploads: %v, %v", fi, err)
	}
}
