package bench

import (
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/testsshd"
)

// target is one real sshd on loopback, with the files OpenSSH's client
// needs to reach it the same way Outpost does (key, known_hosts).
type target struct {
	srv        *testsshd.Server
	signer     ssh.Signer
	keyFile    string // private key for ssh/scp/sftp
	knownHosts string
	optsFile   string // one ssh option per line, for the baseline script
}

func startTarget(b *testing.B) *target {
	b.Helper()
	dir := b.TempDir()
	key := newClientKey(b, dir)
	srv := testsshd.Start(b, testsshd.Options{AuthorizedKeys: []ssh.PublicKey{key.signer.PublicKey()}})
	t := &target{srv: srv, signer: key.signer, keyFile: key.privateKey, knownHosts: srv.WriteKnownHosts(b)}
	t.optsFile = filepath.Join(dir, "ssh-opts")
	opts := ""
	for _, o := range t.sshOpts() {
		opts += o + "\n"
	}
	if err := os.WriteFile(t.optsFile, []byte(opts), 0o644); err != nil {
		b.Fatal(err)
	}
	return t
}

// sshOpts are the options every OpenSSH command of the baseline uses:
// the same key and host key checking as Outpost, nothing from ~/.ssh.
func (t *target) sshOpts() []string {
	return []string{
		"-F", "/dev/null",
		"-i", t.keyFile,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + t.knownHosts,
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR",
	}
}

func (t *target) port() string { return strconv.Itoa(t.srv.Port) }

func (t *target) login() string { return t.srv.User + "@" + t.srv.IP }

// randomFile writes size random bytes to a new file in dir.
func randomFile(b *testing.B, dir string, size int64) string {
	b.Helper()
	path := filepath.Join(dir, "artifact.bin")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	return path
}

// serveHealth serves h on ip:port until the benchmark ends.
func serveHealth(b *testing.B, ip string, port int, h http.Handler) {
	b.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
}
