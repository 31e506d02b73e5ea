package watchhub

import (
	"cmp"
	"math/bits"
	"slices"
	"sync"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Watcher is one WatchRollout stream's place in a feed. Take and Ready are
// for the one goroutine that sends the stream; Leave ends it.
type Watcher struct {
	hub      *Hub
	feed     *feed
	caller   string
	from     int64
	pageSize int           // most nodes per response; 0: one response per node
	ready    chan struct{} // signalled when Take may have something new

	// Guarded by feed.mu: what changed since the watcher last took changes.
	dirty        bitset // node slots
	rolloutDirty bool

	// Owned by the goroutine that calls Take.
	started bool
	snap    *snapshot // the snapshot being sent; nil when none is
	// pending are the changes taken and not sent yet, oldest first.
	pending        []change
	pendingRollout *rolloutVersion // the rollout as taken, when pending holds it
	last           int64           // revision of the last response
	ended          bool

	leaveOnce sync.Once
}

// snapshot is a feed's cache at one revision, being sent.
type snapshot struct {
	rev         int64
	rollout     *rolloutVersion
	rolloutSent bool
	pages       []*page
	next        int // index of the next page to send
}

// change is a node slot (or rolloutSlot) taken as changed, and the
// revision it was written at then.
type change struct {
	slot int
	rev  int64
}

const rolloutSlot = -1

// pendingKeep is the capacity of pending kept for the next changes; a
// bigger one (after a burst) is let go.
const pendingKeep = 4 * PageSize

func newWatcher(h *Hub, f *feed, caller string, from int64, pageSize int) *Watcher {
	return &Watcher{hub: h, feed: f, caller: caller, from: from, pageSize: pageSize, last: from, ready: make(chan struct{}, 1)}
}

// Ready is signalled when Take may return something new (or an error).
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

func (w *Watcher) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// Leave ends the watcher; it may be called more than once.
func (w *Watcher) Leave() {
	w.leaveOnce.Do(func() { w.hub.leave(w) })
}

// Take returns the next responses to send, at most about one page of
// nodes, and whether the stream is complete once they are sent (the
// rollout ended and that was sent). It returns none when nothing is
// pending: wait for Ready. An error means the feed stopped: ErrNotFound,
// ErrWatchEnded, ErrClosed or a failure to read etcd. The responses
// share the feed's records: they must not be modified.
func (w *Watcher) Take() ([]*outpostv1.WatchRolloutResponse, bool, error) {
	if w.ended {
		return nil, true, nil
	}
	if err := w.feed.error(); err != nil {
		return nil, false, err
	}
	if !w.started && !w.start() {
		return nil, false, nil
	}
	if w.ended {
		return nil, true, nil
	}
	if w.snap != nil {
		return w.takeSnapshot(), w.ended, nil
	}
	if len(w.pending) == 0 {
		w.collect()
	}
	return w.takeChanges(), w.ended, nil
}

// Live reports whether the watcher is past its snapshot (if it sends
// one): step events may go out from then on, after the state they change.
func (w *Watcher) Live() bool { return w.started && w.snap == nil }

func (f *feed) error() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// start begins the watch once the feed has loaded, and reports whether
// it did: from revision 0 with a snapshot of the cache, otherwise by
// marking what changed after the revision the client resumes from.
func (w *Watcher) start() bool {
	f := w.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		return false
	}
	w.started = true
	if w.from == 0 {
		// The snapshot holds every change marked so far.
		w.snap = &snapshot{rev: f.rev, rollout: f.rollout, pages: slices.Clone(f.pages)}
		w.dirty.clear()
		w.rolloutDirty = false
		return true
	}
	if ended(f.rollout.state) && f.rolloutRev <= w.from {
		w.ended = true // the client has seen the end already
		return true
	}
	for i, p := range f.pages {
		for j, rev := range p.revs {
			if rev > w.from {
				w.dirty.set(i*PageSize + j)
			}
		}
	}
	w.rolloutDirty = w.rolloutDirty || f.rolloutRev > w.from
	return true
}

// ended reports whether a watch ends once it sent a rollout in state s:
// the rollout ended (the rule is controlplane/rollout's).
func ended(s outpostv1.RolloutState) bool { return rolloutstate.Terminal(s) }

// rolloutResponse returns r as this watcher sends it: whole when it sends
// a response per node, brief (node counts instead of node ids in its
// batches) when it sends pages.
func (w *Watcher) rolloutResponse(rev int64, r *rolloutVersion) *outpostv1.WatchRolloutResponse {
	if w.pageSize > 0 {
		return response(rev, r.brief)
	}
	return response(rev, r.whole)
}

// takeSnapshot returns the snapshot's next responses: the rollout, then
// one page of the cache per call, then snapshot_end.
func (w *Watcher) takeSnapshot() []*outpostv1.WatchRolloutResponse {
	s := w.snap
	var out []*outpostv1.WatchRolloutResponse
	if !s.rolloutSent {
		s.rolloutSent = true
		out = append(out, w.rolloutResponse(s.rev, s.rollout))
	}
	if s.next < len(s.pages) {
		p := s.pages[s.next]
		s.next++
		switch w.pageSize {
		case 0:
			for _, v := range p.vals {
				out = append(out, response(s.rev, nodeField(v)))
			}
		case PageSize:
			// What most clients ask for: encoded once, for all of them.
			for _, f := range p.pageFields() {
				out = append(out, response(s.rev, f))
			}
		default:
			fields, _ := nodePages(p.vals, w.pageSize)
			for _, f := range fields {
				out = append(out, response(s.rev, f))
			}
		}
		return out
	}
	w.snap = nil
	w.last = s.rev
	w.ended = ended(s.rollout.state)
	return append(out, &outpostv1.WatchRolloutResponse{Revision: s.rev, Event: &outpostv1.WatchRolloutResponse_SnapshotEnd{SnapshotEnd: &outpostv1.WatchSnapshotEnd{}}})
}

// collect takes the marked changes into pending, oldest first (the
// rollout after the nodes written at the same revision).
func (w *Watcher) collect() {
	f := w.feed
	f.mu.Lock()
	w.dirty.each(func(slot int) {
		w.pending = append(w.pending, change{slot: slot, rev: f.pages[slot/PageSize].revs[slot%PageSize]})
	})
	w.dirty.clear()
	if w.rolloutDirty {
		w.pending = append(w.pending, change{slot: rolloutSlot, rev: f.rolloutRev})
		w.pendingRollout = f.rollout
		w.rolloutDirty = false
	}
	f.mu.Unlock()
	slices.SortStableFunc(w.pending, func(a, b change) int { return cmp.Compare(a.rev, b.rev) })
}

// takeChanges returns the next pending changes: the rollout alone, or up
// to PageSize nodes in their latest state.
func (w *Watcher) takeChanges() []*outpostv1.WatchRolloutResponse {
	if len(w.pending) == 0 {
		return nil
	}
	if w.pending[0].slot == rolloutSlot {
		r := w.pendingRollout
		resp := w.rolloutResponse(w.revisionAfter(0), r)
		w.advance(1)
		if ended(r.state) {
			w.ended = true
			w.pending = nil
		}
		return []*outpostv1.WatchRolloutResponse{resp}
	}
	n := 0
	for n < len(w.pending) && n < PageSize && w.pending[n].slot != rolloutSlot {
		n++
	}
	vals := make([][]byte, n)
	f := w.feed
	f.mu.Lock()
	for i, c := range w.pending[:n] {
		vals[i] = f.pages[c.slot/PageSize].vals[c.slot%PageSize]
	}
	f.mu.Unlock()
	var out []*outpostv1.WatchRolloutResponse
	if w.pageSize == 0 {
		for i, v := range vals {
			out = append(out, response(w.revisionAfter(i), nodeField(v)))
		}
	} else {
		fields, ends := nodePages(vals, w.pageSize)
		for i, f := range fields {
			out = append(out, response(w.revisionAfter(ends[i]-1), f))
		}
	}
	w.advance(n)
	return out
}

// advance drops the first n pending changes.
func (w *Watcher) advance(n int) {
	w.pending = w.pending[n:]
	if len(w.pending) == 0 {
		if cap(w.pending) > pendingKeep {
			w.pending = nil
		} else {
			w.pending = w.pending[:0:0]
		}
	}
}

// revisionAfter returns the revision a response may carry once pending
// changes up to index i are sent: everything written at or before it is
// then sent, so a client resuming from it misses nothing. Changes written
// by one transaction share a revision, which a response claims only with
// the last of them.
func (w *Watcher) revisionAfter(i int) int64 {
	rev := w.pending[i].rev
	if i+1 < len(w.pending) && w.pending[i+1].rev == rev {
		rev--
	}
	w.last = max(w.last, rev)
	return w.last
}

// bitset is a set of small non-negative integers.
type bitset []uint64

func (b *bitset) set(i int) {
	for i/64 >= len(*b) {
		*b = append(*b, 0)
	}
	(*b)[i/64] |= 1 << (i % 64)
}

func (b bitset) clear() { clear(b) }

// each calls fn for every member in increasing order.
func (b bitset) each(fn func(int)) {
	for wi, word := range b {
		for word != 0 {
			fn(wi*64 + bits.TrailingZeros64(word))
			word &= word - 1
		}
	}
}
