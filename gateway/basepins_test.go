package gateway

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/outposthq/outpost/gateway/deployer"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// baseReader is a deployer that, like the delta upload, asks for a delta
// base, waits for the test, then reads the base and the artifact; then it
// runs the fake deployer's steps.
type baseReader struct {
	*fakeDeployer
	base    string        // digest asked for as the base
	gate    chan struct{} // closed by the test
	asked   chan struct{} // closed once the base is pinned
	gotBase []byte
	gotArt  []byte
}

func (b *baseReader) Deploy(ctx context.Context, job deployer.Job, emit func(*outpostv1.NodeStepEvent)) deployer.Result {
	if job.Node.GetId() != "node-b" {
		return b.fakeDeployer.Deploy(ctx, job, emit)
	}
	path, ok := job.Base(b.base)
	close(b.asked)
	<-b.gate
	if ok {
		b.gotBase, _ = os.ReadFile(path)
	}
	b.gotArt, _ = os.ReadFile(job.ArtifactPath)
	return b.fakeDeployer.Deploy(ctx, job, emit)
}

// TestDeploymentPinsItsArtifacts: a deployment reads its artifact and
// the delta base it asked for however long it runs, even when another
// deployment pushes the cache over its limit meanwhile; the cache is back
// within its limit once they end.
func TestDeploymentPinsItsArtifacts(t *testing.T) {
	cp := startFakeCP(t)
	v := [][]byte{[]byte("version one"), []byte("version two"), []byte("version 333"), []byte("version 444")}
	var d []string
	for _, b := range v {
		d = append(d, cp.addBlob(b))
	}
	dep := &baseReader{fakeDeployer: newFakeDeployer(), base: d[0], gate: make(chan struct{}), asked: make(chan struct{})}
	cacheDir := t.TempDir()
	startGateway(t, cp, dep, func(c *Config) {
		c.CacheDir = cacheDir
		c.CacheMaxBytes = int64(2 * len(v[0])) // room for two artifacts
	})
	cached := func() []string {
		des, _ := os.ReadDir(filepath.Join(cacheDir, "sha256"))
		var out []string
		for _, de := range des {
			out = append(out, de.Name())
		}
		return slices.Sorted(slices.Values(out))
	}
	deploy := func(id, node, digest string) {
		t.Helper()
		cp.assign(t, assignment(id, node, digest))
		if res := cp.waitResult(t, id); res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
			t.Fatalf("%s: %v", id, res)
		}
	}
	deploy("a1", "node-a", d[1])
	deploy("a2", "node-a", d[0]) // the cache holds v2 and, newer, v1

	// node-b deploys v3 with v1 as its base (fetching v3 evicts v2) ...
	cp.assign(t, assignment("a3", "node-b", d[2]))
	<-dep.asked
	// ... and while it runs, node-c's v4 pushes the cache over its limit:
	// only v4 itself, done with, may go.
	deploy("a4", "node-c", d[3])
	if got := cached(); !slices.Contains(got, d[0]) || !slices.Contains(got, d[2]) {
		t.Errorf("while node-b reads v1 and v3 the cache holds %q, want both (%s, %s)", got, d[0], d[2])
	}
	close(dep.gate)
	if res := cp.waitResult(t, "a3"); res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Fatalf("a3: %v", res)
	}
	if !bytes.Equal(dep.gotBase, v[0]) || !bytes.Equal(dep.gotArt, v[2]) {
		t.Errorf("node-b read base %q and artifact %q, want %q and %q", dep.gotBase, dep.gotArt, v[0], v[2])
	}
	waitFor(t, "the cache back within its limit", func() bool { return len(cached()) <= 2 })
}
