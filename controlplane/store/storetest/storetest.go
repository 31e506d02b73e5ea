// Package storetest starts a real embedded etcd for tests of packages built
// on controlplane/store.
package storetest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
)

// Open starts an embedded etcd in t.TempDir() and returns a Store on it,
// closed (and etcd stopped) when the test ends. Starting takes about a
// second, so share one per test function.
func Open(t testing.TB) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Logger: Logger()})
	if err != nil {
		t.Fatalf("storetest: open embedded etcd: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("storetest: close: %v", err)
		}
	})
	return s
}

// Logger returns a logger for warnings and errors on stderr. It does not use
// t.Log because etcd's goroutines may log after a test has finished.
func Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
