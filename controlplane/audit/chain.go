package audit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/auditchain"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// The hash chain's checkpoints (see internal/auditchain for the chain
// itself): a checkpoint signs "entry N had hash H" with Config.Signer,
// the control plane's CA key. The janitor signs one every
// CheckpointInterval, sooner once CheckpointEvery entries were written,
// and only after it verified every entry since the previous checkpoint,
// so it never signs a chain someone edited in etcd. Every retention
// prune writes, in the transaction that deletes a run of entries, a
// checkpoint of the last entry deleted (reason PRUNE) and deletes the
// older checkpoints: the oldest kept entry always links to the oldest
// kept checkpoint. Checkpoints are put only if absent: replicas race
// harmlessly.

const (
	// checkpointPage is how many entries one read of the checkpointer's
	// walk returns.
	checkpointPage = 500
	// checkpointTimeout bounds one checkpoint, which may walk many
	// entries the first time.
	checkpointTimeout = 5 * time.Minute
)

// errChainBroken marks a walk that found the chain broken.
var errChainBroken = errors.New("the audit hash chain is broken")

// wrote is called by the writer once the entries up to seq are written:
// every CheckpointEvery entries it asks the janitor for a checkpoint.
func (l *Log) wrote(seq int64) {
	if l.cfg.Signer == nil || seq-l.kickedAt < l.cfg.CheckpointEvery {
		return
	}
	l.kickedAt = seq
	signal(l.cpKick)
}

// Checkpoint signs a checkpoint of the newest entry, once it verified
// the chain from the newest checkpoint (or the oldest entry) to it, and
// returns it; nil when there is no Signer or nothing new to sign. A
// broken chain is an error wrapping the *auditchain.Break: nothing is
// signed then.
func (l *Log) Checkpoint(ctx context.Context) (*outpostv1.AuditCheckpoint, error) {
	if l.cfg.Signer == nil {
		return nil, nil
	}
	last := &outpostv1.AuditCheckpoint{}
	lastKey, err := l.cfg.Store.Last(ctx, store.AuditCheckpointPrefix, last)
	if err != nil {
		return nil, fmt.Errorf("audit checkpoint: %w", err)
	}
	var cps []*outpostv1.AuditCheckpoint
	start := store.AuditPrefix
	if lastKey != "" {
		cps = append(cps, last)
		start = store.AuditKey(last.GetEntryTime().AsTime(), last.GetSequence())
	}
	v, err := auditchain.NewVerifier(auditchain.Options{Key: l.cfg.Signer.Public(), Window: true}, cps)
	if err != nil {
		return nil, fmt.Errorf("audit checkpoint: %w: %w", errChainBroken, err)
	}
	var head *outpostv1.AuditEntry
	var rev int64
	for range 1 << 30 {
		page, err := l.cfg.Store.ReadPage(ctx, store.AuditPrefix, start, rev, checkpointPage)
		if err != nil {
			return nil, fmt.Errorf("audit checkpoint: %w", err)
		}
		rev = page.Revision
		for _, kv := range page.Kvs {
			e := &outpostv1.AuditEntry{}
			if err := proto.Unmarshal(kv.Value, e); err != nil {
				return nil, fmt.Errorf("audit checkpoint: %w: %s does not decode: %w", errChainBroken, kv.Key, err)
			}
			if err := v.Add(e); err != nil {
				return nil, fmt.Errorf("audit checkpoint: %w: %w", errChainBroken, err)
			}
			head = e
		}
		if !page.More || len(page.Kvs) == 0 {
			break
		}
		start = string(page.Kvs[len(page.Kvs)-1].Key) + "\x00"
	}
	sum, err := v.Finish()
	if err != nil {
		return nil, fmt.Errorf("audit checkpoint: %w: %w", errChainBroken, err)
	}
	if lastKey != "" && head != nil && sum.First > last.GetSequence()+1 {
		return nil, fmt.Errorf("audit checkpoint: %w: entries %d to %d after the checkpoint of entry %d were removed",
			errChainBroken, last.GetSequence()+1, sum.First-1, last.GetSequence())
	}
	if head == nil || len(head.GetHash()) == 0 || (lastKey != "" && head.GetSequence() <= last.GetSequence()) {
		return nil, nil
	}
	cp, err := l.signCheckpoint(head, outpostv1.AuditCheckpointReason_AUDIT_CHECKPOINT_REASON_PERIODIC)
	if err != nil {
		return nil, err
	}
	op, err := store.OpPut(store.AuditCheckpointKey(cp.GetSequence()), cp)
	if err != nil {
		return nil, err
	}
	absent := clientv3.Compare(clientv3.CreateRevision(store.AuditCheckpointKey(cp.GetSequence())), "=", 0)
	switch err := l.cfg.Store.TxnIf(ctx, nil, []clientv3.Cmp{absent}, op); {
	case errors.Is(err, store.ErrConflict):
		return nil, nil // another replica signed this head
	case err != nil:
		return nil, fmt.Errorf("audit checkpoint: %w", err)
	}
	return cp, nil
}

// signCheckpoint signs a checkpoint of entry e.
func (l *Log) signCheckpoint(e *outpostv1.AuditEntry, reason outpostv1.AuditCheckpointReason) (*outpostv1.AuditCheckpoint, error) {
	cp := &outpostv1.AuditCheckpoint{
		Sequence:  e.GetSequence(),
		EntryHash: e.GetHash(),
		EntryTime: e.GetTime(),
		Time:      timestamppb.New(l.cfg.Now()),
		Reason:    reason,
	}
	if err := auditchain.Sign(cp, l.cfg.Signer); err != nil {
		return nil, err
	}
	return cp, nil
}

// pruneOps returns the operations that delete the entries up to and
// including last (the newest of them, as stored) and keep the chain
// verifiable: a PRUNE checkpoint of last, and the deletion of every older
// checkpoint. Without a Signer, or for an entry written before the chain
// existed, only the deletion.
func (l *Log) pruneOps(lastKey string, last *outpostv1.AuditEntry) ([]clientv3.Op, error) {
	ops := []clientv3.Op{clientv3.OpDelete(store.AuditPrefix, clientv3.WithRange(lastKey+"\x00"))}
	if l.cfg.Signer == nil || last == nil || len(last.GetHash()) == 0 {
		return ops, nil
	}
	cp, err := l.signCheckpoint(last, outpostv1.AuditCheckpointReason_AUDIT_CHECKPOINT_REASON_PRUNE)
	if err != nil {
		return nil, err
	}
	key := store.AuditCheckpointKey(cp.GetSequence())
	put, err := store.OpPut(key, cp)
	if err != nil {
		return nil, err
	}
	return append(ops, put, clientv3.OpDelete(store.AuditCheckpointPrefix, clientv3.WithRange(key))), nil
}

// ListCheckpoints returns up to pageSize checkpoints (<= 0 means
// DefaultPageSize, at most MaxPageSize), oldest first, and the next
// page's token ("" at the end).
func (l *Log) ListCheckpoints(ctx context.Context, pageSize int, pageToken string) ([]*outpostv1.AuditCheckpoint, string, error) {
	switch {
	case pageSize <= 0:
		pageSize = DefaultPageSize
	case pageSize > MaxPageSize:
		pageSize = MaxPageSize
	}
	start := store.AuditCheckpointPrefix
	if pageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(pageToken)
		after, ok := strings.CutPrefix(string(b), checkpointTokenKind)
		if err != nil || !ok || !strings.HasPrefix(after, store.AuditCheckpointPrefix) {
			return nil, "", ErrBadPageToken
		}
		start = after + "\x00"
	}
	page, err := l.cfg.Store.ReadPage(ctx, store.AuditCheckpointPrefix, start, 0, int64(pageSize))
	if err != nil {
		return nil, "", fmt.Errorf("list audit checkpoints: %w", err)
	}
	out := make([]*outpostv1.AuditCheckpoint, 0, len(page.Kvs))
	for _, kv := range page.Kvs {
		cp := &outpostv1.AuditCheckpoint{}
		if err := proto.Unmarshal(kv.Value, cp); err != nil {
			return nil, "", fmt.Errorf("decode audit checkpoint %s: %w", kv.Key, err)
		}
		out = append(out, cp)
	}
	if !page.More || len(page.Kvs) == 0 {
		return out, "", nil
	}
	lastKey := string(page.Kvs[len(page.Kvs)-1].Key)
	return out, base64.RawURLEncoding.EncodeToString([]byte(checkpointTokenKind + lastKey)), nil
}

// checkpointTokenKind marks page tokens of ListCheckpoints.
const checkpointTokenKind = "auditcp:"
