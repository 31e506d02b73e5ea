package auditchain

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Break is the first place where the chain does not hold: the entry (or
// checkpoint) that was edited, or the one after entries that were
// removed or reordered.
type Break struct {
	// Sequence names the entry; for a checkpoint, the entry it covers.
	Sequence int64
	// Time is the entry's time as stored (zero for a checkpoint or a
	// removed entry).
	Time time.Time
	// Checkpoint is set when a checkpoint, not an entry, is at fault.
	Checkpoint bool
	// Reason says what is wrong, for people.
	Reason string
}

func (b *Break) Error() string {
	what := "entry"
	if b.Checkpoint {
		what = "checkpoint of entry"
	}
	if b.Time.IsZero() {
		return fmt.Sprintf("%s %d: %s", what, b.Sequence, b.Reason)
	}
	return fmt.Sprintf("%s %d (%s): %s", what, b.Sequence, b.Time.UTC().Format(time.RFC3339Nano), b.Reason)
}

// Options configure a Verifier.
type Options struct {
	// Key is the trusted public key of the checkpoints (the CA
	// certificate's); required.
	Key crypto.PublicKey
	// Window says the entries start at an arbitrary point (verify
	// --since): the first one need not link to the log's start or to a
	// prune checkpoint. Without it, the first entry must be the log's
	// first (sequence 1), follow entries written before the chain
	// existed, or link to the checkpoint of the last pruned entry.
	Window bool
}

// Summary is what a walk proved.
type Summary struct {
	// Entries walked, Legacy of them written before the chain existed
	// (not verifiable).
	Entries, Legacy int
	// First and Last are the sequences of the first and last chained
	// entries walked; 0 when none.
	First, Last int64
	// SignedThrough is the highest sequence walked that a checkpoint
	// covers: entries after it are chained but not yet signed. 0 when
	// no checkpoint covers a walked entry.
	SignedThrough int64
	// Anchored says the first entry is fixed: the log's first, linked to
	// a prune checkpoint, or covered by a checkpoint itself.
	Anchored bool
	// Checkpoints is how many checkpoints were verified.
	Checkpoints int
}

// Verifier walks entries in sequence order and stops at the first break.
// Feed it with Add, then call Finish.
type Verifier struct {
	opts Options
	cps  map[int64]*outpostv1.AuditCheckpoint
	// maxCP is the highest sequence a checkpoint covers.
	maxCP int64
	sum   Summary
	// prevSeq and prevHash are the last chained entry's.
	prevSeq  int64
	prevHash []byte
	chained  bool // a chained entry was seen
	// pending is a gap in the sequences, reported with the next entry:
	// when that one falls into the gap, the entries were reordered.
	pending *Break
}

// NewVerifier verifies the checkpoints' signatures and returns a walk
// over them; a checkpoint that does not verify is a *Break.
func NewVerifier(opts Options, checkpoints []*outpostv1.AuditCheckpoint) (*Verifier, error) {
	if opts.Key == nil {
		return nil, errors.New("audit verify: no trusted key")
	}
	v := &Verifier{opts: opts, cps: make(map[int64]*outpostv1.AuditCheckpoint, len(checkpoints))}
	for _, c := range checkpoints {
		if err := Verify(c, opts.Key); err != nil {
			return nil, &Break{Sequence: c.GetSequence(), Checkpoint: true, Reason: err.Error()}
		}
		if old, ok := v.cps[c.GetSequence()]; ok && !bytes.Equal(old.GetEntryHash(), c.GetEntryHash()) {
			return nil, &Break{Sequence: c.GetSequence(), Checkpoint: true, Reason: "two signed checkpoints disagree on its hash"}
		}
		v.cps[c.GetSequence()] = c
		v.maxCP = max(v.maxCP, c.GetSequence())
	}
	v.sum.Checkpoints = len(v.cps)
	return v, nil
}

// Add checks the next entry. It returns a *Break naming the first entry
// that was edited, or that follows removed or reordered ones.
func (v *Verifier) Add(e *outpostv1.AuditEntry) error {
	seq, at := e.GetSequence(), e.GetTime().AsTime()
	brk := func(reason string, a ...any) error {
		return &Break{Sequence: seq, Time: at, Reason: fmt.Sprintf(reason, a...)}
	}
	if p := v.pending; p != nil {
		if seq > v.prevSeq && seq < p.Sequence {
			return &Break{Sequence: p.Sequence, Time: p.Time, Reason: fmt.Sprintf("out of order: it comes before entry %d (entries were reordered)", seq)}
		}
		return p
	}
	v.sum.Entries++
	if len(e.GetHash()) == 0 {
		if v.chained {
			return brk("has no hash, but entries before it do: its chain fields were removed")
		}
		v.sum.Legacy++
		if v.sum.Legacy > 1 && seq != v.prevSeq+1 {
			return brk("sequence %d follows %d", seq, v.prevSeq)
		}
		v.prevSeq = seq
		return nil
	}
	h, err := HashEntry(e)
	if errors.Is(err, ErrUnknownFields) {
		return brk("%v", err)
	}
	if err != nil {
		return brk("cannot be encoded: %v", err)
	}
	if !bytes.Equal(h, e.GetHash()) {
		return brk("edited: its contents do not match its hash")
	}
	cp := v.cps[seq]
	if cp != nil && !bytes.Equal(cp.GetEntryHash(), h) {
		return brk("edited: it differs from the signed checkpoint of this entry (the chain after it was rewritten)")
	}
	if !v.chained {
		if err := v.start(e, brk); err != nil {
			return err
		}
	} else {
		switch {
		case seq <= v.prevSeq:
			return brk("out of order: it comes after entry %d (entries were reordered)", v.prevSeq)
		case seq == v.prevSeq+2:
			v.pending = brk("entry %d before it was removed", v.prevSeq+1).(*Break)
			return nil
		case seq > v.prevSeq+2:
			v.pending = brk("entries %d to %d before it were removed", v.prevSeq+1, seq-1).(*Break)
			return nil
		case !bytes.Equal(e.GetPreviousHash(), v.prevHash):
			return brk("does not link to entry %d: an entry before it was edited, removed or reordered", v.prevSeq)
		}
	}
	v.chained = true
	v.prevSeq, v.prevHash = seq, h
	v.sum.Last = seq
	if cp != nil {
		v.sum.SignedThrough = seq
	}
	return nil
}

// start checks the first chained entry.
func (v *Verifier) start(e *outpostv1.AuditEntry, brk func(string, ...any) error) error {
	seq := e.GetSequence()
	v.sum.First = seq
	switch anchor := v.cps[seq-1]; {
	case anchor != nil:
		if !bytes.Equal(anchor.GetEntryHash(), e.GetPreviousHash()) {
			return brk("does not link to the signed checkpoint of entry %d before it: an entry was edited, removed or reordered", seq-1)
		}
		if v.opts.Window || anchor.GetReason() == outpostv1.AuditCheckpointReason_AUDIT_CHECKPOINT_REASON_PRUNE {
			v.sum.Anchored = true
			return nil
		}
	case v.sum.Legacy > 0:
		if seq != v.prevSeq+1 {
			return brk("sequence %d follows %d", seq, v.prevSeq)
		}
		if len(e.GetPreviousHash()) != 0 {
			return brk("links to a hash, but the entry before it has none")
		}
		v.sum.Anchored = true
		return nil
	case seq == 1 && len(e.GetPreviousHash()) != 0:
		return brk("the log's first entry links to a predecessor")
	case len(e.GetPreviousHash()) == 0:
		// The chain's start: the log's first entry, or the first written
		// after an upgrade from a version without the chain (the entries
		// before it, pruned since, had no hashes to check).
		v.sum.Anchored = true
		return nil
	}
	if v.cps[seq] != nil && v.opts.Window {
		v.sum.Anchored = true
	}
	if !v.opts.Window {
		return brk("entries before it were removed, but no retention prune signed a checkpoint of entry %d", seq-1)
	}
	return nil
}

// Finish ends the walk: a checkpoint beyond the last entry means entries
// at the end were removed. It returns what the walk proved.
func (v *Verifier) Finish() (Summary, error) {
	if v.pending != nil {
		return v.sum, v.pending
	}
	if v.maxCP > v.sum.Last && (v.chained || !v.opts.Window) {
		last := v.sum.Last
		return v.sum, &Break{Sequence: last + 1, Reason: fmt.Sprintf("removed: the log ends at entry %d but a checkpoint signs entry %d", last, v.maxCP)}
	}
	return v.sum, nil
}
