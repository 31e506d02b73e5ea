package telemetry

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"sync"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// A trace whose id is stored in etcd outlives the leader that began it: a
// node deployment's trace id is kept in the node's record, so a new
// leader (or a second attempt) adds its root spans to the same trace, and
// the rollout's root span has an id derived from the rollout's id, so
// every leader's stage spans hang under it. The SDK makes a root span's
// ids with its IDGenerator; ours takes them from the context when asked.

type idsKey struct{}

type wantIDs struct {
	trace trace.TraceID
	span  trace.SpanID // zero: a random span id
}

// WithRootIDs returns ctx asking the next root span started from it (with
// trace.WithNewRoot, or with no parent) to have trace id tid and, when
// sid is valid, span id sid. It works with providers made by
// NewTracerProvider or with IDGenerator; others make random ids, so
// callers read the ids back from the span they started.
func WithRootIDs(ctx context.Context, tid trace.TraceID, sid trace.SpanID) context.Context {
	if !tid.IsValid() {
		return ctx
	}
	return context.WithValue(ctx, idsKey{}, wantIDs{trace: tid, span: sid})
}

// IDGenerator returns the generator that honours WithRootIDs, for
// providers built outside this package (tests).
func IDGenerator() sdktrace.IDGenerator { return newIDGenerator() }

type idGenerator struct {
	mu  sync.Mutex
	rnd *rand.ChaCha8 // guarded by mu
}

func newIDGenerator() *idGenerator {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	return &idGenerator{rnd: rand.NewChaCha8(seed)}
}

var _ sdktrace.IDGenerator = (*idGenerator)(nil)

func (g *idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if w, ok := ctx.Value(idsKey{}).(wantIDs); ok {
		sid := w.span
		if !sid.IsValid() {
			sid = g.NewSpanID(ctx, w.trace)
		}
		return w.trace, sid
	}
	var tid trace.TraceID
	g.mu.Lock()
	defer g.mu.Unlock()
	for !tid.IsValid() {
		_, _ = g.rnd.Read(tid[:])
	}
	return tid, g.spanIDLocked()
}

func (g *idGenerator) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.spanIDLocked()
}

func (g *idGenerator) spanIDLocked() trace.SpanID {
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.NativeEndian.PutUint64(sid[:], g.rnd.Uint64())
	}
	return sid
}
