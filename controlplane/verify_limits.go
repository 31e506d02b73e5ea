package controlplane

import (
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Bounds of on-demand verification (VerifyNodes): every call makes the
// gateways open an SSH connection to each selected node, so a caller
// repeating it in a loop, or a few callers at once, would have the whole
// fleet dialled again and again. A caller runs one verification at a
// time; a control plane runs at most maxVerifications; and a node
// observed within verifyFresh is answered from that observation unless
// the request forces a new one. The leader's periodic sweep is not
// counted: it has its own pace.
const (
	// maxVerifications bounds the VerifyNodes calls one control plane
	// serves at once, over all callers.
	maxVerifications = 4
	// verifyFresh is how old an observation may be and still answer an
	// unforced VerifyNodes.
	verifyFresh = 30 * time.Second
)

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
			"this control plane already runs %d node verifications, the most at once; retry in a minute (nodes observed in the last %v are answered from that observation)",
			maxVerifications, verifyFresh)
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
