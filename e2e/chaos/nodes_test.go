package chaos

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/simfleet"
	"github.com/outposthq/outpost/internal/testproxy"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// sshCreds is the key gateways log in to nodes with.
type sshCreds struct {
	signer     ssh.Signer
	keyFile    string // the private key, OpenSSH PEM
	knownHosts string // empty: every node's host key is pinned in the inventory
}

func newSSHCreds(t *testing.T) *sshCreds {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return &sshCreds{
		signer:     signer,
		keyFile:    writeFile(t, "id_ed25519", pem.EncodeToMemory(block), 0o600),
		knownHosts: writeFile(t, "known_hosts", nil, 0o600),
	}
}

// node is one target server: a real sshd whose SFTP sessions (and so the
// login's home, against which the relative deploy path resolves) start in
// root, reached through a fault-injecting proxy on the node's own loopback
// IP, where the simulated service's health endpoint also listens.
type node struct {
	id    string
	ip    string
	root  string
	sshd  *testsshd.Server
	proxy *testproxy.Proxy
	// fullMarker, when the file exists, makes df report the deploy file
	// system as 98% used (see fakeDF); "" when the node has no fake df.
	fullMarker string
}

// nodeOptions configures startNodes.
type nodeOptions struct {
	// fakeDF gives every node a df that reports a nearly full disk while
	// the node's fullMarker file exists.
	fakeDF bool
}

// startNodes starts n nodes accepting creds; everything stops when the
// test ends.
func startNodes(t *testing.T, n int, creds *sshCreds, opts nodeOptions) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		nd := &node{id: e2etest.NodeID(i), root: filepath.Join(t.TempDir(), "root")}
		if err := os.MkdirAll(nd.root, 0o755); err != nil {
			t.Fatal(err)
		}
		extra := []string{"Subsystem sftp internal-sftp -d " + nd.root}
		if opts.fakeDF {
			bin := filepath.Join(t.TempDir(), "bin")
			nd.fullMarker = filepath.Join(t.TempDir(), "disk-full")
			writeFakeDF(t, bin, nd.fullMarker)
			extra = append(extra, "SetEnv PATH="+bin+":/usr/local/bin:/usr/bin:/bin")
		}
		nd.sshd = testsshd.Start(t, testsshd.Options{AuthorizedKeys: []ssh.PublicKey{creds.signer.PublicKey()}, ExtraConfig: extra})
		nd.ip = serveHealth(t, simfleet.HealthHandler(nd.deployDir()))
		nd.proxy = testproxy.StartOn(t, nd.ip, nd.sshd.Addr)
		nodes[i] = nd
	}
	return nodes
}

// deployDir is the node's deploy path, "app" under its home.
func (n *node) deployDir() string { return filepath.Join(n.root, e2etest.DeployPath) }

// inventory returns the nodes as the control plane's inventory, in dc,
// with their host keys pinned.
func inventory(nodes []*node, dc string) []*outpostv1.Node {
	out := make([]*outpostv1.Node, len(nodes))
	for i, n := range nodes {
		out[i] = &outpostv1.Node{
			Id:         n.id,
			Address:    n.proxy.Addr(),
			Datacenter: dc,
			User:       n.sshd.User,
			Labels:     map[string]string{"app": e2etest.App},
			HostKeys:   []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(n.sshd.HostKey)))},
		}
	}
	return out
}

// setDelay adds one-way latency to every node's SSH traffic, so that a
// rollout lasts long enough to break it in the middle.
func setDelay(nodes []*node, d time.Duration) {
	for _, n := range nodes {
		n.proxy.SetDelay(d)
	}
}

// serveHealth serves h on a fresh loopback IP at the health port and
// returns the IP; the server stops when the test ends.
func serveHealth(t *testing.T, h http.Handler) string {
	t.Helper()
	var lastErr error
	for range 20 {
		ip := fmt.Sprintf("127.%d.%d.%d", mrand.IntN(235)+16, mrand.IntN(256), mrand.IntN(254)+1)
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(e2etest.HealthPort)))
		if err != nil {
			if lastErr = err; errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(ln)
		}()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			<-done
		})
		return ip
	}
	t.Fatalf("no free loopback IP for a health endpoint: %v", lastErr)
	return ""
}

// writeFakeDF writes dir/df: the real df, unless marker exists, in which
// case it reports `df -P` figures of a 10 GiB file system that is 98% full,
// as a disk filled by logs would be.
func writeFakeDF(t *testing.T, dir, marker string) {
	t.Helper()
	real, err := exec.LookPath("df")
	if err != nil {
		t.Fatalf("df: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\n" +
		"if [ -e '" + marker + "' ]; then\n" +
		"  echo 'Filesystem     1024-blocks     Used Available Capacity Mounted on'\n" +
		"  echo '/dev/vdb1         10485760 10276045    209715      98% /srv'\n" +
		"  exit 0\n" +
		"fi\n" +
		"exec '" + real + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "df"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}
