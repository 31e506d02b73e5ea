package store

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// TestEmbeddedFailureEndsTheStore stops the embedded etcd under an open
// Store in the two ways it can stop by itself: Done closes and Err says
// why, and Close still works.
func TestEmbeddedFailureEndsTheStore(t *testing.T) {
	tests := []struct {
		name string
		fail func(*embed.Etcd)
		want string
	}{
		{"server stops", func(e *embed.Etcd) { e.Server.HardStop() }, "embedded etcd server stopped"},
		{"client listener fails", func(e *embed.Etcd) { e.Clients[0].Close() }, "store: "}, // etcd names the failed server
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openEmbedded(t)
			select {
			case <-s.Done():
				t.Fatal("Done closed before anything failed")
			default:
			}
			tt.fail(s.embedded.etcd)
			select {
			case <-s.Done():
			case <-time.After(20 * time.Second):
				t.Fatal("Done not closed within 20s of the embedded etcd failing")
			}
			if err := s.Err(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Err() = %v, want one containing %q", err, tt.want)
			}
			s.Close()
		})
	}
}

func TestCloseEndsTheStoreWithoutError(t *testing.T) {
	s := openEmbedded(t)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed by Close")
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err() after Close = %v, want nil", err)
	}
}

func openEmbedded(t *testing.T) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestFatalFromEtcdIsLoggedBeforeExit logs what etcd logs when it runs out
// of file descriptors: the process exits with 1, after etcd's line and a
// line of ours that says the control plane exits.
func TestFatalFromEtcdIsLoggedBeforeExit(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	var stopping atomic.Bool
	exitCode := -1
	zl := newZapLogger(logger, &stopping, func(code int) { exitCode = code })
	zl.Fatal("failed to purge wal file", zap.Error(errors.New("open /data/etcd/member/wal: too many open files")))
	if exitCode != 1 {
		t.Errorf("exit code %d, want 1", exitCode)
	}
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2 (etcd's, then ours):\n%s", len(lines), out)
	}
	if !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "too many open files") {
		t.Errorf("first line %q, want etcd's error with its cause", lines[0])
	}
	if !strings.Contains(lines[1], "level=ERROR") || !strings.Contains(lines[1], "control plane exits") || !strings.Contains(lines[1], "failed to purge wal file") {
		t.Errorf("second line %q, want ours: the control plane exits, and why", lines[1])
	}
}
