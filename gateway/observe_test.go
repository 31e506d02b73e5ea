package gateway

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestObserveRealSSHD observes a node served by OpenSSH's sshd: a clean
// release, then the failures a verification classifies (host key, login,
// no server).
func TestObserveRealSSHD(t *testing.T) {
	// A session on sshd may take long to start on a loaded test machine.
	defer func(d time.Duration) { observeTimeout = d }(observeTimeout)
	observeTimeout = 3 * time.Minute
	signer, pub := testsshd.ClientKey(t)
	srv := testsshd.Start(t, testsshd.Options{AuthorizedKeys: []ssh.PublicKey{pub}})
	p := filepath.Join(t.TempDir(), "app")
	digest := strings.Repeat("0f", 32)
	for name, content := range map[string]string{
		"releases/r1-aaaa/.outpost-sha256": digest + "\n",
		".outpost/history":                 "{\"release\":\"r1-aaaa\"}\n",
		// A hostile history line: far longer than the observe command keeps.
		"releases/r1-aaaa/big": strings.Repeat("x", 1<<20),
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(p, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("releases/r1-aaaa", filepath.Join(p, "current")); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(p, ".outpost", "history"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(strings.Repeat("\x1b[2J", 1<<16))
	f.Close()

	now := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	g := &Gateway{cfg: Config{Name: "gw", Datacenter: "dc-1", Now: func() time.Time { return now }}, log: slogTo(&syncBuffer{}),
		auth: sshexec.Auth{Signers: []ssh.Signer{signer}}}
	node := &outpostv1.Node{Id: "n1", Address: srv.Addr, Datacenter: "dc-1", User: srv.User,
		HostKeys: []string{string(ssh.MarshalAuthorizedKey(srv.HostKey))}}
	observe := func(n *outpostv1.Node) *outpostv1.NodeObservation {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		return g.observe(ctx, &outpostv1.ServeHostKeyScansResponse{ScanId: "s", Node: n,
			Observe: &outpostv1.ObserveRequest{Path: p, Layout: outpostv1.Layout_LAYOUT_RELEASES, Release: "r1-aaaa"}}).GetObservation()
	}

	o := observe(node)
	// The history's last line is the hostile one: control characters, so
	// the whole output is refused.
	if o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_FAILED || !strings.Contains(o.GetError(), "control characters") {
		t.Errorf("hostile history: %v %q, want FAILED for control characters", o.GetResult(), o.GetError())
	}
	if err := os.WriteFile(filepath.Join(p, ".outpost", "history"), []byte("{\"release\":\"r1-aaaa\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o = observe(node)
	if o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_OK || o.GetRelease() != "r1-aaaa" || o.GetSha256() != digest ||
		!o.GetReleasePresent() || o.GetLockHeld() || o.GetGateway() != "gw" || !o.GetTime().AsTime().Equal(now) {
		t.Errorf("clean node: %v", o)
	}

	other, _ := testsshd.ClientKey(t)
	wrongKey := &outpostv1.Node{Id: "n1", Address: srv.Addr, Datacenter: "dc-1", User: srv.User,
		HostKeys: []string{string(ssh.MarshalAuthorizedKey(other.PublicKey()))}}
	if o := observe(wrongKey); o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_HOST_KEY {
		t.Errorf("wrong pinned host key: %v %q, want HOST_KEY", o.GetResult(), o.GetError())
	}
	g.auth = sshexec.Auth{Signers: []ssh.Signer{other}}
	if o := observe(node); o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_AUTH {
		t.Errorf("unknown client key: %v %q, want AUTH", o.GetResult(), o.GetError())
	}
	g.auth = sshexec.Auth{Signers: []ssh.Signer{signer}}
	srv.Kill()
	if o := observe(node); o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_UNREACHABLE {
		t.Errorf("sshd stopped: %v %q, want UNREACHABLE", o.GetResult(), o.GetError())
	}
}
