package audit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestWatchCatchUpKeepsOneSnapshot appends an entry while Watch is still
// reading the stored entries, which take more than one page: the entry
// is in none of the pages (they are one snapshot), so the watch that
// follows must start right after that snapshot to deliver it. Starting
// after the revision etcd reported with the last page (newer than the
// snapshot) skipped it.
func TestWatchCatchUpKeepsOneSnapshot(t *testing.T) {
	s := storetest.Open(t)
	l := openLog(t, s, audit.Config{QueueSize: 1000})
	ctx := ctxT(t)
	since := time.Now().Add(-time.Hour)
	const stored = 600 // catch-up reads pages of 500
	for i := range stored {
		if err := l.Enqueue(ctx, entry(fmt.Sprintf("old%d", i), "")); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan string, stored+10)
	done := make(chan error, 1)
	go func() {
		first := true
		done <- l.Watch(wctx, audit.Query{Since: since}, func(e *outpostv1.AuditEntry) error {
			if first {
				// Between the first page and the next one.
				first = false
				if err := l.Append(wctx, entry("late", "")); err != nil {
					return err
				}
			}
			got <- e.GetAction()
			return nil
		})
	}()
	deadline := time.After(20 * time.Second)
	for n := 0; ; n++ {
		select {
		case a := <-got:
			if a == "late" {
				if n != stored {
					t.Errorf("late entry delivered after %d entries, want after the %d stored ones", n, stored)
				}
				cancel()
				if err := <-done; err != context.Canceled {
					t.Errorf("Watch = %v, want context.Canceled", err)
				}
				return
			}
		case err := <-done:
			t.Fatalf("Watch ended: %v", err)
		case <-deadline:
			t.Fatalf("the entry appended during catch-up was not delivered after 20s (%d entries were)", n)
		}
	}
}
