package e2e

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/controlplane"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/clock/clocktest"
	"github.com/outposthq/outpost/internal/shell"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// sshRun runs cmd on host i over SSH, as an operator changing a node by
// hand would, with the host key verified.
func (s *system) sshRun(i int, cmd string) {
	s.t.Helper()
	h := s.fleet.Hosts()[i]
	c, err := sshexec.Dial(ctxT(s.t), sshexec.Config{
		Address:  h.Addr,
		User:     "deploy",
		Auth:     sshexec.Auth{Signers: []ssh.Signer{s.fleet.Signer}},
		HostKeys: sshexec.HostKeys{Pinned: []ssh.PublicKey{h.HostKey}},
	})
	if err != nil {
		s.t.Fatalf("ssh %s: %v", h.Name, err)
	}
	defer c.Close()
	res, err := c.Run(ctxT(s.t), cmd)
	if err == nil {
		err = res.Err()
	}
	if err != nil {
		s.t.Fatalf("ssh %s %q: %v", h.Name, cmd, err)
	}
}

// verify runs VerifyNodes and returns each node's answer by id.
func (s *system) verify() map[string]*outpostv1.VerifyNodesResponse {
	s.t.Helper()
	stream, err := s.client.VerifyNodes(ctxT(s.t), &outpostv1.VerifyNodesRequest{})
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]*outpostv1.VerifyNodesResponse{}
	for range 1000 {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			s.t.Fatalf("verify: %v", err)
		}
		out[m.GetNode().GetId()] = m
	}
	s.t.Fatal("verify: too many messages")
	return nil
}

// driftAudit waits until the audit log holds the record of the latest
// VerifyNodes call (written after the node.drift entries it caused, whose
// count it returns by node).
func (s *system) driftAudit(verifyCalls int) map[string][]string {
	s.t.Helper()
	ac := outpostv1.NewAuditServiceClient(s.client.Conn)
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		resp, err := ac.ListAuditEntries(ctxT(s.t), &outpostv1.ListAuditEntriesRequest{PageSize: 1000})
		if err != nil {
			s.t.Fatal(err)
		}
		calls := 0
		drift := map[string][]string{}
		for _, e := range resp.GetEntries() {
			switch {
			case strings.HasSuffix(e.GetAction(), "VerifyNodes"):
				calls++
			case e.GetAction() == "node.drift":
				drift[e.GetNodeId()] = append(drift[e.GetNodeId()], e.GetMessage())
			}
		}
		if calls >= verifyCalls {
			return drift
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("the audit log did not record %d VerifyNodes calls in %v", verifyCalls, waitLimit)
	return nil
}

func driftKinds(m *outpostv1.VerifyNodesResponse) []outpostv1.DriftKind {
	return m.GetNode().GetStatus().GetDrift()
}

// TestDriftVerifyAndRepair deploys v1 then v2 to five nodes, changes four
// of them by hand over SSH, and checks that node verify names each drift,
// that each is audited once, and that a plan targeting drifted nodes
// redeploys only those, after which verify is clean.
func TestDriftVerifyAndRepair(t *testing.T) {
	s := newSystem(t, 5, oneDC)
	s.startGateway("gw", dc1)
	v1 := s.deploy("1.0.0", "10")
	v2 := s.deploy("2.0.0", "10")

	// The desired release is recorded once the engine has made the node's
	// result durable, which may be just after the rollout shows SUCCEEDED.
	d2 := ""
	for try := 0; ; try++ {
		clean := 0
		for _, m := range s.verify() {
			st := m.GetNode().GetStatus()
			if m.GetSkipped() == "" && len(st.GetDrift()) == 0 && st.GetDesired().GetRelease() == v2 &&
				st.GetDesired().GetSha256() != "" && st.GetObservation().GetRelease() == v2 {
				clean++
				d2 = st.GetDesired().GetSha256()
			}
		}
		if clean == 5 {
			break
		}
		if try == 50 {
			t.Fatalf("%d of 5 nodes verified clean after deploying %s", clean, v2)
		}
		time.Sleep(100 * time.Millisecond)
	}

	p := e2etest.DeployPath
	// Node 0: current switched back to v1 by hand.
	s.sshRun(0, "ln -sfn "+shell.Quote("releases/"+v1)+" "+p+"/.tmp-current && mv -T "+p+"/.tmp-current "+p+"/current")
	// Node 1: the release's digest marker deleted.
	s.sshRun(1, "rm -f -- "+shell.Quote(p+"/releases/"+v2+"/.outpost-sha256"))
	// Node 2: a lock left by a deployment whose process is dead.
	s.sshRun(2, `printf '%s' '{"owner":"cp/r-9","rollout":"r-9","epoch":1,"assignment":"a-9"}' >`+p+`/.outpost/lock && echo 999999999 >`+p+`/.outpost/active`)
	// Node 3: its SSH server stops answering.
	s.fleet.Hosts()[3].SetFaults(simfleet.Faults{RefuseConnections: true})

	want := map[string][]outpostv1.DriftKind{
		e2etest.NodeID(0): {outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED},
		e2etest.NodeID(1): {outpostv1.DriftKind_DRIFT_KIND_DIGEST_MISSING},
		e2etest.NodeID(2): {outpostv1.DriftKind_DRIFT_KIND_STALE_LOCK},
		e2etest.NodeID(3): {outpostv1.DriftKind_DRIFT_KIND_UNREACHABLE},
		e2etest.NodeID(4): nil,
	}
	for range 2 { // the second verification finds the same and audits nothing new
		got := s.verify()
		for id, kinds := range want {
			if !slices.Equal(driftKinds(got[id]), kinds) {
				t.Errorf("%s: drift %v, want %v (observation %v)", id, driftKinds(got[id]), kinds, got[id].GetNode().GetStatus().GetObservation())
			}
		}
		if o := got[e2etest.NodeID(3)].GetNode().GetStatus().GetObservation(); o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_UNREACHABLE {
			t.Errorf("node 3 observed as %v (%s), want UNREACHABLE", o.GetResult(), o.GetError())
		}
	}
	audit := s.driftAudit(3)
	wantAudit := map[string][]string{
		e2etest.NodeID(0): {"release_switched"},
		e2etest.NodeID(1): {"digest_missing"},
		e2etest.NodeID(2): {"stale_lock"},
		e2etest.NodeID(3): {"unreachable"},
	}
	for id, w := range wantAudit {
		if !slices.Equal(audit[id], w) {
			t.Errorf("%s: node.drift audit entries %q, want %q (once)", id, audit[id], w)
		}
	}
	if len(audit[e2etest.NodeID(4)]) > 0 {
		t.Errorf("clean node audited as drifted: %q", audit[e2etest.NodeID(4)])
	}

	// Repair by hand what a deployment cannot (the lock, the marker, the
	// SSH server), then let a plan redeploy only the drifted node 0.
	s.sshRun(1, "printf '%s\\n' "+shell.Quote(d2)+" >"+shell.Quote(p+"/releases/"+v2+"/.outpost-sha256"))
	s.sshRun(2, "rm -f -- "+p+"/.outpost/lock "+p+"/.outpost/active")
	s.fleet.Hosts()[3].SetFaults(simfleet.Faults{})
	s.verify()
	spec := e2etest.RollingPlan("release-2.0.0.tar.gz", "10", 10)
	spec.Targets.Drifted = true
	r := s.create(spec, d2)
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("repair rollout ended %v: %q", done.GetState(), done.GetMessage())
	}
	recs := s.rolloutNodes(r.GetId())
	if len(recs) != 1 || recs[e2etest.NodeID(0)] == nil {
		t.Errorf("repair rollout deployed %d nodes, want node 0 only", len(recs))
	}
	// The repair supersedes node 0's drift before anyone verifies again:
	// it is no longer listed, targeted or counted as drifted.
	{
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		resp, err := s.client.ListNodes(ctx, &outpostv1.ListNodesRequest{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range resp.GetNodes() {
			if n.GetId() == e2etest.NodeID(0) && (len(n.GetStatus().GetDrift()) > 0 || n.GetStatus().GetDriftSince() != nil) {
				t.Errorf("node 0 still listed as drifted (%v) after the repair rollout", n.GetStatus().GetDrift())
			}
		}
	}
	for id, m := range s.verify() {
		if len(driftKinds(m)) > 0 || m.GetNode().GetStatus().GetDriftSince() != nil {
			t.Errorf("%s after the repair: drift %v", id, driftKinds(m))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	resp, err := s.client.ListNodes(ctx, &outpostv1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range resp.GetNodes() {
		want := v2
		if n.GetId() == e2etest.NodeID(0) {
			want = r.GetReleaseId() // the repair's release: the same artifact, a new revision
		}
		if n.GetStatus().GetDesired().GetRelease() != want || n.GetStatus().GetObservation().GetRelease() != want {
			t.Errorf("%s listed with desired %q observed %q, want %s", n.GetId(), n.GetStatus().GetDesired().GetRelease(), n.GetStatus().GetObservation().GetRelease(), want)
		}
	}
}

// TestDriftPeriodicVerification restarts the control plane on a fake
// clock after a deployment, switches a node by hand, and moves the clock
// past the default interval: the leader's sweep observes every node and
// finds the drift, without any node verify call.
func TestDriftPeriodicVerification(t *testing.T) {
	s := newSystem(t, 2, oneDC)
	s.startGateway("gw", dc1)
	v1 := s.deploy("1.0.0", "10")
	v2 := s.deploy("2.0.0", "10")

	// The desired release is recorded just after the rollout shows
	// SUCCEEDED (the engine's OnNodeResult); wait for it before the restart.
	for try := 0; ; try++ {
		resp, err := s.client.ListNodes(ctxT(t), &outpostv1.ListNodesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, node := range resp.GetNodes() {
			if node.GetStatus().GetDesired().GetRelease() == v2 {
				n++
			}
		}
		if n == 2 {
			break
		}
		if try == 100 {
			t.Fatalf("%d of 2 nodes have %s recorded as desired", n, v2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	clk := clocktest.NewFake(time.Now())
	s.cpConfig = func(c *controlplane.Config) { c.Clock = clk }
	s.stopCP()
	s.startCP()
	p := e2etest.DeployPath
	s.sshRun(0, "ln -sfn "+shell.Quote("releases/"+v1)+" "+p+"/.tmp-current && mv -T "+p+"/.tmp-current "+p+"/current")
	// The gateway reconnects to the restarted control plane: a host key
	// scan answers once its stream is back (and changes no node status).
	for try := 0; ; try++ {
		if _, err := s.client.ScanNodeHostKey(ctxT(t), &outpostv1.ScanNodeHostKeyRequest{Id: e2etest.NodeID(0)}); err == nil {
			break
		} else if try == 100 {
			t.Fatalf("the gateway did not reconnect: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Before the interval, a sweep verifies nothing.
	ctx := ctxT(t)
	observed := func() map[string]*outpostv1.NodeStatus {
		resp, err := s.client.ListNodes(ctx, &outpostv1.ListNodesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*outpostv1.NodeStatus{}
		for _, n := range resp.GetNodes() {
			out[n.GetId()] = n.GetStatus()
		}
		return out
	}
	deadline := time.Now().Add(waitLimit)
	for try := 0; ; try++ {
		// A minute at a time, so every sweep tick is taken.
		clk.Advance(time.Minute)
		st := observed()
		if st[e2etest.NodeID(0)].GetObservation() != nil && st[e2etest.NodeID(1)].GetObservation() != nil {
			if try < 15 {
				t.Errorf("nodes observed %d minutes after their activation, before the 15 min interval", try+1)
			}
			if got := st[e2etest.NodeID(0)].GetDrift(); !slices.Equal(got, []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED}) {
				t.Errorf("node 0 drift %v, want RELEASE_SWITCHED", got)
			}
			if got := st[e2etest.NodeID(1)]; len(got.GetDrift()) > 0 || got.GetObservation().GetRelease() != v2 {
				t.Errorf("node 1: drift %v observed %q, want none and %s", got.GetDrift(), got.GetObservation().GetRelease(), v2)
			}
			return
		}
		if try > 40 || time.Now().After(deadline) {
			t.Fatalf("no periodic observation after %d minutes of the fake clock", try+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
