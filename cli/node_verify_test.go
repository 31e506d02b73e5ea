package cli

import (
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// VerifyNodes answers, like the real server, one message per node with its
// status: every node of the fake's inventory, as stored.
func (f *fakeControlPlane) VerifyNodes(_ *outpostv1.VerifyNodesRequest, stream grpc.ServerStreamingServer[outpostv1.VerifyNodesResponse]) error {
	f.mu.Lock()
	var nodes []*outpostv1.Node
	for _, n := range f.nodes {
		nodes = append(nodes, n)
	}
	f.mu.Unlock()
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].GetId() < nodes[j].GetId() })
	for i, n := range nodes {
		m := &outpostv1.VerifyNodesResponse{Node: n, Done: int32(i + 1), Total: int32(len(nodes))}
		if n.GetStatus() == nil {
			m.Skipped = "never deployed by Outpost"
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func TestNodeVerifyAndWideList(t *testing.T) {
	f := startFake(t)
	at := timestamppb.New(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC))
	ok := &outpostv1.NodeStatus{Desired: &outpostv1.NodeDesired{Release: "r2-aa"},
		Observation: &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_OK, Release: "r2-aa", Time: at}}
	drifted := &outpostv1.NodeStatus{Desired: &outpostv1.NodeDesired{Release: "r2-aa"},
		Observation: &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_OK, Release: "r1-bb", LockHeld: true, LockOwner: "cp/r-9", Time: at},
		Drift:       []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED, outpostv1.DriftKind_DRIFT_KIND_STALE_LOCK}}
	f.nodes["node-01"] = &outpostv1.Node{Id: "node-01", Address: "10.0.0.1:22", Datacenter: "dc-1", Labels: map[string]string{"app": "a"}, Status: ok}
	f.nodes["node-02"] = &outpostv1.Node{Id: "node-02", Address: "10.0.0.2:22", Datacenter: "dc-1", Labels: map[string]string{"app": "a"}, Status: drifted}
	f.nodes["node-03"] = &outpostv1.Node{Id: "node-03", Address: "10.0.0.3:22", Datacenter: "dc-1", Labels: map[string]string{"app": "a"}}

	code, out, errOut := f.run(t, "node", "verify")
	wantOut := `ID       DATACENTER  DESIRED  OBSERVED  DRIFT                        DETAIL
node-01  dc-1        r2-aa    r2-aa     -                            -
node-02  dc-1        r2-aa    r1-bb     release_switched,stale_lock  locked by cp/r-9
node-03  dc-1        -        -         -                            skipped: never deployed by Outpost
`
	if code != 1 || out != wantOut {
		t.Errorf("node verify: exit %d, stdout:\n%s\nwant exit 1 and:\n%s", code, out, wantOut)
	}
	for _, want := range []string{"[1/3] node-01: ok", "[2/3] node-02: DRIFT release_switched,stale_lock", "[3/3] node-03: skipped", "1 of 3 node(s) drifted"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("node verify stderr lacks %q:\n%s", want, errOut)
		}
	}

	code, out, errOut = f.run(t, "node", "list", "-o", "wide")
	wantOut = `ID       ADDRESS      DATACENTER  LABELS  USER  HOST KEYS  DESIRED  OBSERVED  DRIFT                        OBSERVED AT
node-01  10.0.0.1:22  dc-1        app=a   -     0          r2-aa    r2-aa     -                            2031-01-02T03:04:05Z
node-02  10.0.0.2:22  dc-1        app=a   -     0          r2-aa    r1-bb     release_switched,stale_lock  2031-01-02T03:04:05Z
node-03  10.0.0.3:22  dc-1        app=a   -     0          -        -         -                            -
`
	if code != 0 || out != wantOut {
		t.Errorf("node list -o wide: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errOut, out, wantOut)
	}
	if code, _, _ := f.run(t, "node", "verify", "extra"); code != 2 {
		t.Errorf("node verify with an argument: exit %d, want 2", code)
	}
}
