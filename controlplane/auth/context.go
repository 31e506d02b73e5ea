package auth

import (
	"context"

	"github.com/outposthq/outpost/internal/pki"
)

type callerKey struct{}

// FromContext returns the identity of the caller whose call ctx belongs
// to, and false for calls that carry none (Public methods).
func FromContext(ctx context.Context) (pki.Identity, bool) {
	c, ok := ctx.Value(callerKey{}).(*caller)
	if !ok {
		return pki.Identity{}, false
	}
	return c.id, true
}

// NewContext returns ctx carrying id, as the interceptors do. Other
// packages use it in tests that call handlers directly.
func NewContext(ctx context.Context, id pki.Identity) context.Context {
	return withCaller(ctx, &caller{id: id})
}

func withCaller(ctx context.Context, c *caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// callerFromContext returns the full caller (with its certificate's serial
// when it came through an interceptor), or nil.
func callerFromContext(ctx context.Context) *caller {
	c, _ := ctx.Value(callerKey{}).(*caller)
	return c
}
