package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// observer is a gateway's scan stream that answers observations only
// once the test lets it, so verifications stay in flight.
type observer struct {
	mu       sync.Mutex // guards the fields below
	received int        // observation requests received
	held     []string   // scan ids not answered yet
	open     bool       // answer at once
	// answer answers an observation; set before the first request.
	answer func(scanID string)
}

// holdingObserver connects gateway name of dc to s's scan stream.
func holdingObserver(t *testing.T, s *Server, name, dc string) *observer {
	t.Helper()
	o := &observer{}
	serveScans(t, s, name, dc, func(stream gatewayScanStream) {
		var sendMu sync.Mutex
		o.answer = func(id string) {
			sendMu.Lock()
			defer sendMu.Unlock()
			stream.Send(&outpostv1.ServeHostKeyScansRequest{ScanId: id, Observation: &outpostv1.NodeObservation{ //nolint:errcheck // a closed stream ends the test's calls
				Result: outpostv1.ObserveResult_OBSERVE_RESULT_OK, Release: "r1-x", ReleasePresent: true, Sha256: "ab",
			}})
		}
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			o.mu.Lock()
			o.received++
			open := o.open
			if !open {
				o.held = append(o.held, req.GetScanId())
			}
			o.mu.Unlock()
			if open {
				o.answer(req.GetScanId())
			}
		}
	})
	return o
}

// release answers what is held and every later request at once.
func (o *observer) release() {
	o.mu.Lock()
	held := o.held
	o.held, o.open = nil, true
	o.mu.Unlock()
	for _, id := range held {
		o.answer(id)
	}
}

// count returns how many observations were requested.
func (o *observer) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.received
}

// running is how many verifications g admitted and has not released.
func (g *verifyGate) running() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.callers)
}

// waiting is how many verifications wait for another's observation.
func (f *verifyFlights) waiting() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, fl := range f.flights {
		n += fl.waiting
	}
	return n
}

// verifyAll runs VerifyNodes to its end and returns its messages.
func verifyAll(ctx context.Context, c *client) ([]*outpostv1.VerifyNodesResponse, error) {
	stream, err := c.VerifyNodes(ctx, &outpostv1.VerifyNodesRequest{})
	if err != nil {
		return nil, err
	}
	var out []*outpostv1.VerifyNodesResponse
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func TestVerifyNodesBounds(t *testing.T) {
	// A caller runs one verification at a time and a control plane
	// maxVerifications; verifications of the same nodes at once share one
	// observation of each; a finished observation is not reused.
	clk := newFakeClock()
	s := startCP(t, t.TempDir(), withClock(clk))
	admin := dial(t, s.Addr())
	const nodes = 2
	applyNodes(t, admin, nodes, nil)
	for i := range nodes {
		d := &outpostv1.NodeDesired{Release: "r1-x", RolloutId: "r-00000001", App: "app", Path: "/srv/app",
			Time: timestamppb.New(clk.Now().Add(-time.Hour))}
		if err := s.store.Put(ctxT(t), store.NodeDesiredKey(nodeID(i)), d); err != nil {
			t.Fatal(err)
		}
	}
	obs := holdingObserver(t, s, "gw-1", "dc1")
	users := make([]*client, maxVerifications+1)
	for i := range users {
		users[i] = userClient(t, s, fmt.Sprintf("user-%d", i), pki.RoleDeployer)
	}

	// maxVerifications callers, each with one verification in flight.
	results := make(chan error, maxVerifications)
	for _, c := range users[:maxVerifications] {
		go func() {
			ms, err := verifyAll(ctxT(t), c)
			if err == nil && len(ms) != nodes {
				err = fmt.Errorf("%d messages, want %d", len(ms), nodes)
			}
			results <- err
		}()
	}
	// The first to reach a node dials it; the others wait for that.
	waitUntil(t, "every verification admitted, one observation per node", func() bool {
		return s.verifies.running() == maxVerifications && obs.count() == nodes && s.inFlight.waiting() == (maxVerifications-1)*nodes
	})

	// Repeats by a caller whose verification runs, all at once, and a
	// caller over the control plane's bound: refused, and nothing more is
	// observed.
	before := obs.count()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := verifyAll(ctxT(t), users[0])
			wantCode(t, "a second verification by user-0", err, codes.ResourceExhausted, "already running")
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := verifyAll(ctxT(t), users[maxVerifications])
		wantCode(t, "a verification over the bound", err, codes.ResourceExhausted, fmt.Sprintf("already runs %d node verifications", maxVerifications))
	}()
	wg.Wait()
	if got := s.verifies.running(); got != maxVerifications {
		t.Errorf("after refusals %d verifications run, want %d", got, maxVerifications)
	}

	obs.release()
	for range maxVerifications {
		select {
		case err := <-results:
			if err != nil {
				t.Errorf("admitted verification: %v", err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("verifications did not end within %v", waitLimit)
		}
	}
	if got := obs.count(); got != before {
		t.Errorf("refused calls made the gateway observe %d nodes", got-before)
	}

	// Verifying again observes again, however recent the last one.
	before = obs.count()
	if ms, err := verifyAll(ctxT(t), users[0]); err != nil || len(ms) != nodes {
		t.Fatalf("verify again: %d messages, %v", len(ms), err)
	}
	if got := obs.count(); got != before+nodes {
		t.Errorf("verify again observed %d nodes, want %d", got-before, nodes)
	}
}

// waitUntil polls cond until it holds, for at most waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", waitLimit, what)
		}
		time.Sleep(time.Millisecond)
	}
}
