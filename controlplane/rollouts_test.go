package controlplane

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
)

// keysUnder counts the etcd keys of rollout id: its record and its node
// records.
func keysUnder(t *testing.T, s *Server, id string) int64 {
	t.Helper()
	resp, err := s.store.Client().Get(ctxT(t), store.RolloutKey(id), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestFailedCreateLeavesNothingBehind fails creates at each point one can
// fail: in validation (a 1 MB hook), at the gRPC message limit (a 5 MB
// plan) and after the node records are written (an injected fault, with
// more nodes than one transaction takes). Each leaves no key under the
// rollout's id, and the next create gets the id and revision the failed
// one would have had.
func TestFailedCreateLeavesNothingBehind(t *testing.T) {
	var fail atomic.Bool
	s := startCP(t, t.TempDir(), func(c *Config) {
		c.failCreate = func(string) error {
			if fail.Load() {
				return errors.New("injected fault after the node records")
			}
			return nil
		}
	})
	c := dial(t, s.Addr())
	const nodes = 2*store.MaxTxnOps + 5
	applyNodes(t, c, nodes, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))

	next := 1 // the id and revision the next create should get
	create := func(what string) {
		t.Helper()
		r := createRollout(t, c, rollingPlan("100%", 0), digest)
		if want := rolloutID(int64(next)); r.GetId() != want || r.GetRevision() != int64(next) {
			t.Errorf("after %s: created %s revision %d, want %s revision %d", what, r.GetId(), r.GetRevision(), want, next)
		}
		if got := keysUnder(t, s, r.GetId()); got != nodes+1 {
			t.Errorf("after %s: %d keys under %s, want the rollout and its %d nodes", what, got, r.GetId(), nodes)
		}
		next++
	}
	create("the first create")

	bigHook := rollingPlan("100%", 0)
	bigHook.Hooks.Stop = strings.Repeat("x", 1<<20)
	huge := rollingPlan("100%", 0)
	huge.ChangeId = strings.Repeat("x", 5<<20)
	tests := []struct {
		name     string
		spec     *outpostv1.PlanSpec
		inject   bool
		code     codes.Code
		contains string
	}{
		{"1 MB hooks.stop", bigHook, false, codes.InvalidArgument, "plan.hooks.stop: 1048576 bytes: at most 16384"},
		{"5 MB plan", huge, false, codes.ResourceExhausted, "larger than max"},
		{"fault after the node records", rollingPlan("100%", 0), true, codes.Internal, "injected fault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fail.Store(tt.inject)
			defer fail.Store(false)
			_, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: tt.spec, ArtifactSha256: digest, RequestId: "req-" + strings.ReplaceAll(tt.name, " ", "-")})
			wantCode(t, tt.name, err, tt.code, tt.contains)
			if got := keysUnder(t, s, rolloutID(int64(next))); got != 0 {
				t.Errorf("%d keys left under %s", got, rolloutID(int64(next)))
			}
			fail.Store(false)
			create("a failed create (" + tt.name + ")")
		})
	}
	revs, err := c.ListRevisions(ctxT(t), &outpostv1.ListRevisionsRequest{App: "billing-api"})
	if err != nil || len(revs.GetRevisions()) != next-1 {
		t.Errorf("ListRevisions = %d revisions, %v; want %d", len(revs.GetRevisions()), err, next-1)
	}
}

// TestConcurrentRetriesLeaveNoOrphans sends one create request several
// times at once: every call gets the one rollout, and the calls that lost
// the race leave no node records behind.
func TestConcurrentRetriesLeaveNoOrphans(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 20, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	const calls = 6
	req := &outpostv1.CreateRolloutRequest{Plan: rollingPlan("100%", 0), ArtifactSha256: digest, RequestId: "same-request"}
	ids := make([]string, calls)
	errs := make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.CreateRollout(ctxT(t), req)
			ids[i], errs[i] = resp.GetRollout().GetId(), err
		}()
	}
	wg.Wait()
	for i := range calls {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Errorf("call %d: rollout %q, %v; want %q like call 0", i, ids[i], errs[i], ids[0])
		}
	}
	resp, err := s.store.Client().Get(ctxT(t), store.RolloutsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	perRollout := map[string]int{}
	for _, kv := range resp.Kvs {
		id, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), store.RolloutsPrefix), "/")
		perRollout[id]++
	}
	if want := map[string]int{ids[0]: 21}; fmt.Sprint(perRollout) != fmt.Sprint(want) {
		t.Errorf("keys per rollout id = %v, want %v: the losing calls left node records", perRollout, want)
	}
}
