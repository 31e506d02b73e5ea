package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	// sweepChunk is how many keys one delete removes, so a first sweep of a
	// large backlog does not become one huge etcd transaction.
	sweepChunk = 1000
	// sweepTimeout bounds one background sweep.
	sweepTimeout = 5 * time.Minute
	// markerDeletes is how many conditional marker deletes one
	// transaction carries, well under store.MaxTxnOps.
	markerDeletes = 64
)

// janitor deletes expired entries at start and every SweepInterval,
// and signs a checkpoint every CheckpointInterval (sooner when the writer
// asks) and before each later sweep.
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
	cpt := time.NewTicker(l.cfg.CheckpointInterval)
	defer cpt.Stop()
	for first := true; ; first = false {
		if !first {
			// The head is signed before old entries go: a prune never
			// deletes what no checkpoint fixed.
			l.checkpointOnce(ctx)
		}
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
	wait:
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				break wait
			case <-cpt.C:
			case <-l.cpKick:
			}
			l.checkpointOnce(ctx)
		}
	}
}

// checkpointOnce signs a checkpoint; a broken chain is logged as an
// error every time, since someone edited the log.
func (l *Log) checkpointOnce(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, checkpointTimeout)
	defer cancel()
	cp, err := l.Checkpoint(cctx)
	switch {
	case ctx.Err() != nil:
	case errors.Is(err, errChainBroken):
		l.log.Error("not signing an audit checkpoint: the hash chain does not verify; the log was edited in etcd (outpost audit verify names the entry)", "err", err)
	case err != nil:
		l.log.Warn("signing an audit checkpoint failed; will retry", "err", err, "retry_in", l.cfg.CheckpointInterval)
	case cp != nil:
		l.log.Debug("signed an audit checkpoint", "sequence", cp.GetSequence())
	}
}

// Sweep deletes the entries older than Retention (by Config.Now), with
// their markers (see index.go), and returns how many entries it
// deleted. It never deletes the newest entry, which carries the log's
// sequence.
func (l *Log) Sweep(ctx context.Context) (int, error) {
	cutoff := store.AuditKey(l.cfg.Now().Add(-l.cfg.Retention), 0)
	newest, err := l.cfg.Store.Last(ctx, store.AuditPrefix, nil)
	if err != nil {
		return 0, fmt.Errorf("read the newest audit entry: %w", err)
	}
	if newest == "" {
		return 0, nil
	}
	end := min(cutoff, newest)
	// The sweep reads and deletes a range of the log bounded by time, not
	// a prefix, with etcd's range operations: only the janitor needs them,
	// so the store does not wrap them.
	client := l.cfg.Store.Client()
	deleted := 0
	// Each pass deletes at least one key or stops; the bound guards
	// against a bug turning it into a spin.
	for range 1 << 20 {
		resp, err := client.Get(ctx, store.AuditPrefix, clientv3.WithRange(end), clientv3.WithLimit(sweepChunk))
		if err != nil {
			return deleted, fmt.Errorf("list expired audit entries: %w", err)
		}
		if len(resp.Kvs) == 0 {
			return deleted, nil
		}
		// Markers first: a sweep cut short here leaves entries without
		// markers (Reconcile may record them again, only for rollouts that
		// ended recently, which these are not), never markers without
		// entries that nothing would delete.
		if err := l.deleteMarkers(ctx, resp.Kvs); err != nil {
			return deleted, err
		}
		lastKV := resp.Kvs[len(resp.Kvs)-1]
		var last *outpostv1.AuditEntry
		if e := (&outpostv1.AuditEntry{}); proto.Unmarshal(lastKV.Value, e) == nil {
			last = e
		}
		// The delete, a signed checkpoint of the last entry deleted and
		// the deletion of the older checkpoints are one transaction: the
		// oldest kept entry always links to the oldest kept checkpoint.
		ops, err := l.pruneOps(string(lastKV.Key), last)
		if err != nil {
			return deleted, fmt.Errorf("delete expired audit entries: %w", err)
		}
		txn, err := client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return deleted, fmt.Errorf("delete expired audit entries: %w", err)
		}
		deleted += int(txn.Responses[0].GetResponseDeleteRange().GetDeleted())
		if !resp.More {
			return deleted, nil
		}
	}
	return deleted, fmt.Errorf("delete expired audit entries: too many passes")
}

// deleteMarkers deletes the markers of the entries in kvs. A marker is
// deleted only while it still holds its entry's sequence: a later entry
// of the same result (written again by Reconcile, or a retried rollout
// ending in the same state) took it over and keeps it.
func (l *Log) deleteMarkers(ctx context.Context, kvs []*mvccpb.KeyValue) error {
	// One transaction may not touch a key twice, and two entries of one
	// result share a marker: the newer entry's sequence is the one a
	// marker can hold.
	seqs := map[string]int64{}
	var keys []string
	for _, kv := range kvs {
		var e outpostv1.AuditEntry
		if err := proto.Unmarshal(kv.Value, &e); err != nil {
			// An entry that cannot be read has no marker we could find.
			continue
		}
		key := markerKey(&e)
		if key == "" {
			continue
		}
		if _, ok := seqs[key]; !ok {
			keys = append(keys, key)
		}
		seqs[key] = max(seqs[key], e.GetSequence())
	}
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if err := l.cfg.Store.Txn(ctx, nil, ops...); err != nil {
			return fmt.Errorf("delete audit markers: %w", err)
		}
		ops = ops[:0]
		return nil
	}
	for _, key := range keys {
		seq := strconv.FormatInt(seqs[key], 10)
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", seq)},
			[]clientv3.Op{clientv3.OpDelete(key)}, nil))
		if len(ops) == markerDeletes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}
