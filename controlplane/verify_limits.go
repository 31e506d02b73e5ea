package controlplane

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Bounds of on-demand verification (VerifyNodes): every call makes the
// gateways open an SSH connection to each selected node, so a caller
// repeating it in a loop, or a few callers at once, would have the whole
// fleet dialled again and again. A caller runs one verification at a
// time; a control plane runs at most maxVerifications; and a node already
// being observed (for another call or the leader's sweep) is not dialled
// again: the later verification waits for that observation and shares
// it. A finished observation is never reused, however recent: an
// operator who just changed a node and verifies again must see the
// change. The periodic sweep is not counted against the bounds: it has
// its own pace.

// maxVerifications bounds the VerifyNodes calls one control plane serves
// at once, over all callers.
const maxVerifications = 4

// verifyGate admits VerifyNodes calls. The zero value is ready.
type verifyGate struct {
	mu      sync.Mutex          // guards callers
	callers map[string]struct{} // callers with a verification running
}

// enter admits one verification by caller, or says why not; release
// ends it.
func (g *verifyGate) enter(caller string) (release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, busy := g.callers[caller]; busy {
		return nil, status.Errorf(codes.ResourceExhausted,
			"a node verification by %s is already running on this control plane (one at a time per caller); wait for it to end or cancel it", caller)
	}
	if len(g.callers) >= maxVerifications {
		return nil, status.Errorf(codes.ResourceExhausted,
			"this control plane already runs %d node verifications, the most at once; retry when one has ended", maxVerifications)
	}
	if g.callers == nil {
		g.callers = map[string]struct{}{}
	}
	g.callers[caller] = struct{}{}
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.callers, caller)
	}, nil
}

// verifyFlights joins concurrent verifications of one node. The zero
// value is ready.
type verifyFlights struct {
	mu      sync.Mutex         // guards flights
	flights map[string]*flight // by node id, while its observation runs
}

// flight is one node's verification in progress.
type flight struct {
	done    chan struct{} // closed when st and err are set
	st      *outpostv1.NodeStatus
	err     error
	waiting int // callers joined, for tests; guarded by verifyFlights.mu
}

// do runs verify for node id, or, when a verification of id is already
// running, waits for it (bounded by ctx) and returns its result.
func (f *verifyFlights) do(ctx context.Context, id string, verify func() (*outpostv1.NodeStatus, error)) (*outpostv1.NodeStatus, error) {
	f.mu.Lock()
	if fl := f.flights[id]; fl != nil {
		fl.waiting++
		f.mu.Unlock()
		select {
		case <-fl.done:
			return fl.st, fl.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.flights == nil {
		f.flights = map[string]*flight{}
	}
	fl := &flight{done: make(chan struct{})}
	f.flights[id] = fl
	f.mu.Unlock()
	fl.st, fl.err = verify()
	f.mu.Lock()
	delete(f.flights, id)
	f.mu.Unlock()
	close(fl.done)
	return fl.st, fl.err
}
