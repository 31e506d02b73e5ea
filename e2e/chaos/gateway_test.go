package chaos

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// waitPartial waits until some node holds more than min bytes of the
// release's upload in its partial directory, and returns that node and how
// many bytes it held.
func waitPartial(t *testing.T, nodes []*node, releaseID string, min int64) (*node, int64) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			dir := filepath.Join(n.deployDir(), "releases", releaseID+".partial")
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if info, err := e.Info(); err == nil && info.Size() > min {
					return n, info.Size()
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no upload of %s passed %d bytes within %v", releaseID, min, waitLimit)
	return nil, 0
}

func TestGatewayKilledMidUpload(t *testing.T) {
	const grace = 3 * time.Second
	c := startCluster(t, cpOptions{gatewayGrace: grace})
	cl := c.client(c.cps[0])
	creds := newSSHCreds(t)
	nodes := startNodes(t, 2, creds, nodeOptions{})
	if err := cl.Apply(ctxT(t), inventory(nodes, "dc-1")); err != nil {
		t.Fatal(err)
	}
	gateways := map[string]*gatewayProc{}
	for _, name := range []string{"gw-a", "gw-b"} {
		// One node at a time each: the two nodes go to different gateways.
		gateways[name] = c.startGateway(name, "dc-1", 1, creds)
	}
	rel := buildRelease(t, "2.0.0", 32<<20)
	digest := upload(t, cl, rel)
	// A 200 ms round trip: the upload takes a second or two, time enough
	// to see it under way on the node and kill its gateway.
	setDelay(nodes, 100*time.Millisecond)
	r := create(t, cl, e2etest.RollingPlan("release-2.0.0.tar.gz", "100%", 0), digest)

	victim, got := waitPartial(t, nodes, r.GetReleaseId(), 1<<20)
	rec := rolloutNodes(t, cl, r.GetId())[victim.id]
	dead := gateways[rec.GetGateway()]
	if dead == nil {
		t.Fatalf("%s is uploading but its record names gateway %q", victim.id, rec.GetGateway())
	}
	dead.kill()
	killed := time.Now()
	t.Logf("killed %s with SIGKILL while %s held %d of %d bytes", dead.name, victim.id, got, rel.size)
	var survivor *gatewayProc
	for name, g := range gateways {
		if name != dead.name {
			survivor = g
		}
	}

	done := waitRollout(t, cl, r.GetId(), "the end of the rollout", terminal)
	t.Logf("rollout ended %v after the kill", time.Since(killed).Round(time.Millisecond))
	states := map[string]outpostv1.NodeState{}
	for _, n := range nodes {
		states[n.id] = outpostv1.NodeState_NODE_STATE_SUCCEEDED
	}
	checkRollout(t, cl, done, outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, states)
	if g := rolloutNodes(t, cl, r.GetId())[victim.id].GetGateway(); g != survivor.name {
		t.Errorf("%s was finished by gateway %q, want %s", victim.id, g, survivor.name)
	}
	// The survivor broke the dead deployment's lock explicitly, as the
	// control plane allowed it to.
	if survivor.logged(tookOverRE) != 1 {
		t.Errorf("%s took over %d locks, want 1 (its log says how it got the node)", survivor.name, survivor.logged(tookOverRE))
	}
	for _, n := range nodes {
		checkNode(t, n, wantOf(done, rel), 1)
	}
	checkAudit(t, cl, done, states, nil)
}

var tookOverRE = regexp.MustCompile(`took over the lock of a deployment whose gateway is gone`)
