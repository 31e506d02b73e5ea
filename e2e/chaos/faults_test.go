package chaos

import (
	"os"
	"strings"
	"testing"

	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// fleetSetup is one control plane with its embedded etcd, one gateway and
// two nodes that run release 1.0.0 already.
type fleetSetup struct {
	c     *cluster
	cl    *e2etest.Client
	nodes []*node
	v1    want
}

func startFleet(t *testing.T, opts nodeOptions) *fleetSetup {
	t.Helper()
	f := &fleetSetup{c: startCluster(t, cpOptions{})}
	f.cl = f.c.client(f.c.cps[0])
	creds := newSSHCreds(t)
	f.nodes = startNodes(t, 2, creds, opts)
	if err := f.cl.Apply(ctxT(t), inventory(f.nodes, "dc-1")); err != nil {
		t.Fatal(err)
	}
	f.c.startGateway("gw-1", "dc-1", 2, creds)
	rel := buildRelease(t, "1.0.0", 0)
	r := create(t, f.cl, e2etest.RollingPlan("release-1.0.0.tar.gz", "100%", 0), upload(t, f.cl, rel))
	done := waitRollout(t, f.cl, r.GetId(), "release 1.0.0 everywhere", terminal)
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("deploying 1.0.0: %v (%q)", done.GetState(), done.GetMessage())
	}
	f.v1 = wantOf(done, rel)
	return f
}

// rollout deploys a 2.0.0 with pad bytes of padding to both nodes, with a
// failure budget that tolerates one node of two, and returns it once it
// ended.
func (f *fleetSetup) rollout(t *testing.T, pad int64, armed func(r *outpostv1.Rollout)) (*outpostv1.Rollout, release) {
	t.Helper()
	rel := buildRelease(t, "2.0.0", pad)
	r := create(t, f.cl, e2etest.RollingPlan("release-2.0.0.tar.gz", "100%", 50), upload(t, f.cl, rel))
	if armed != nil {
		armed(r)
	}
	return waitRollout(t, f.cl, r.GetId(), "the end of the rollout", terminal), rel
}

// checkOneFailed checks the end of a rollout in which the first node
// succeeded and the second failed at step, saying why, and was left
// exactly as it was: on 1.0.0, unlocked, with nothing of 2.0.0.
func (f *fleetSetup) checkOneFailed(t *testing.T, done *outpostv1.Rollout, rel release, step outpostv1.Step, why string) {
	t.Helper()
	ok, bad := f.nodes[0], f.nodes[1]
	states := map[string]outpostv1.NodeState{ok.id: outpostv1.NodeState_NODE_STATE_SUCCEEDED, bad.id: outpostv1.NodeState_NODE_STATE_FAILED}
	// One failure of two nodes is within a 50% budget: the rollout
	// succeeds and says which node did not.
	checkRollout(t, f.cl, done, outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, states)
	rec := rolloutNodes(t, f.cl, done.GetId())[bad.id]
	t.Logf("%s: %v at %v: %s", bad.id, rec.GetState(), rec.GetStep(), rec.GetError())
	if rec.GetStep() != step || !strings.Contains(rec.GetError(), why) {
		t.Errorf("%s failed at %v (%q), want at %v saying %q", bad.id, rec.GetStep(), rec.GetError(), step, why)
	}
	checkNode(t, ok, wantOf(done, rel), 1)
	hist := checkNode(t, bad, f.v1, 1)
	for _, e := range hist {
		if e.Release == done.GetReleaseId() {
			t.Errorf("%s: history mentions %s: %+v", bad.id, e.Release, e)
		}
	}
	if _, err := os.Stat(bad.deployDir() + "/releases/" + done.GetReleaseId()); !os.IsNotExist(err) {
		t.Errorf("%s: release %s exists on the node: %v", bad.id, done.GetReleaseId(), err)
	}
	checkAudit(t, f.cl, done, states, nil)
}

func TestConnectionCutMidTransfer(t *testing.T) {
	f := startFleet(t, nodeOptions{})
	const pad = 16 << 20
	done, rel := f.rollout(t, pad, func(*outpostv1.Rollout) {
		// Half way through the artifact (the SSH handshake and the lock
		// script are a few KiB), the node's TCP connection ends: the
		// gateway gets a reset, the server the bytes so far and EOF.
		f.nodes[1].proxy.CutAfter(pad / 2)
	})
	f.checkOneFailed(t, done, rel, outpostv1.Step_STEP_UPLOAD, "")
}

func TestDiskTooFull(t *testing.T) {
	f := startFleet(t, nodeOptions{fakeDF: true})
	// From now on df reports the second node's disk 98% full.
	if err := os.WriteFile(f.nodes[1].fullMarker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	done, rel := f.rollout(t, 1<<20, nil)
	f.checkOneFailed(t, done, rel, outpostv1.Step_STEP_PRECHECK, "98% used, above the 90% limit")
}
