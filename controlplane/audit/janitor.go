package audit

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/outposthq/outpost/controlplane/store"
)

const (
	// sweepChunk is how many keys one delete removes, so a first sweep of a
	// large backlog does not become one huge etcd transaction.
	sweepChunk = 1000
	// sweepTimeout bounds one background sweep.
	sweepTimeout = 5 * time.Minute
)

// janitor deletes expired entries at start and then every SweepInterval.
func (l *Log) janitor() {
	defer close(l.jdone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(l.cfg.SweepInterval)
	defer t.Stop()
	for {
		sctx, scancel := context.WithTimeout(ctx, sweepTimeout)
		n, err := l.Sweep(sctx)
		scancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			l.log.Warn("deleting expired audit entries failed; will retry", "err", err, "deleted", n, "retry_in", l.cfg.SweepInterval)
		case n > 0:
			l.log.Info("deleted expired audit entries", "deleted", n, "retention", l.cfg.Retention)
		}
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
	}
}

// Sweep deletes the entries older than Retention (by Config.Now) and
// returns how many it deleted. It never deletes the newest entry, which
// carries the log's sequence.
func (l *Log) Sweep(ctx context.Context) (int, error) {
	cutoff := store.AuditKey(l.cfg.Now().Add(-l.cfg.Retention), 0)
	client := l.cfg.Store.Client()
	newest, err := client.Get(ctx, store.AuditPrefix, append(clientv3.WithLastKey(), clientv3.WithKeysOnly())...)
	if err != nil {
		return 0, fmt.Errorf("read the newest audit entry: %w", err)
	}
	if len(newest.Kvs) == 0 {
		return 0, nil
	}
	end := min(cutoff, string(newest.Kvs[0].Key))
	deleted := 0
	// Each pass deletes at least one key or stops; the bound guards
	// against a bug turning it into a spin.
	for range 1 << 20 {
		resp, err := client.Get(ctx, store.AuditPrefix, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(sweepChunk))
		if err != nil {
			return deleted, fmt.Errorf("list expired audit entries: %w", err)
		}
		if len(resp.Kvs) == 0 {
			return deleted, nil
		}
		last := string(resp.Kvs[len(resp.Kvs)-1].Key)
		del, err := client.Delete(ctx, store.AuditPrefix, clientv3.WithRange(last+"\x00"))
		if err != nil {
			return deleted, fmt.Errorf("delete expired audit entries: %w", err)
		}
		deleted += int(del.Deleted)
		if !resp.More {
			return deleted, nil
		}
	}
	return deleted, fmt.Errorf("delete expired audit entries: too many passes")
}
