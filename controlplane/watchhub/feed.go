package watchhub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// maxReloads bounds how often a feed reads everything again because etcd
// compacted history it had not read yet.
const maxReloads = 10

// maxLoadPages bounds the range requests of one load (of PageSize nodes).
const maxLoadPages = 1 << 20

// errCompacted: the feed's watch start revision was compacted away.
var errCompacted = errors.New("watch history compacted")

// feed keeps one rollout's latest records, read once and then followed
// with one etcd watch, and marks what changed for its watchers.
type feed struct {
	hub         *Hub
	id          string
	rolloutKey  string
	nodesPrefix string
	ctx         context.Context // ends the feed; cancelled by cancel
	cancel      context.CancelFunc

	mu sync.Mutex // guards the fields below and the watchers' dirty marks
	// err is why the feed stopped; nil while it runs.
	err error
	// loaded is set once the cache holds the rollout and all its nodes.
	loaded bool
	// rev is the revision the cache is complete at.
	rev        int64
	rollout    *rolloutVersion
	rolloutRev int64
	// pages hold the nodes in slot order (key order at the first load,
	// then nodes created later). A page is replaced, never changed, once
	// it may be in a snapshot: see setNode.
	pages []*page
	slots map[string]int // node id -> slot
	// gen counts changes applied; a page of an older generation may be
	// shared with a snapshot.
	gen      uint64
	watchers map[*Watcher]struct{}
}

// rolloutVersion is one version of the rollout record, ready to send.
type rolloutVersion struct {
	state outpostv1.RolloutState
	// whole is the WatchRolloutResponse.rollout field carrying the record
	// as stored; brief carries it with node counts instead of node ids in
	// its batches, for watchers that send node pages.
	whole, brief []byte
}

// page is up to PageSize nodes of a feed: each one's record as etcd
// holds it (its protobuf encoding) and the revision it was written at.
type page struct {
	gen  uint64
	vals [][]byte
	revs []int64

	// shared is the page as node_page fields of at most PageSize nodes
	// and maxPageBytes: built by the first watcher that sends the page,
	// then copied by every other one. The page never changes, so neither
	// does this.
	sharedOnce sync.Once
	shared     [][]byte
}

func (p *page) clone(gen uint64) *page {
	return &page{
		gen:  gen,
		vals: append(make([][]byte, 0, PageSize), p.vals...),
		revs: append(make([]int64, 0, PageSize), p.revs...),
	}
}

// pageFields returns the page as node_page fields for PageSize.
func (p *page) pageFields() [][]byte {
	p.sharedOnce.Do(func() { p.shared, _ = nodePages(p.vals, PageSize) })
	return p.shared
}

func newFeed(h *Hub, id string) *feed {
	ctx, cancel := context.WithCancel(h.ctx)
	return &feed{
		hub:         h,
		id:          id,
		rolloutKey:  store.RolloutKey(id),
		nodesPrefix: store.RolloutNodesPrefix(id),
		ctx:         ctx,
		cancel:      cancel,
		slots:       map[string]int{},
		watchers:    map[*Watcher]struct{}{},
	}
}

func (f *feed) add(w *Watcher) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers[w] = struct{}{}
	if f.loaded || f.err != nil {
		w.signal()
	}
}

// remove forgets w and returns how many watchers remain.
func (f *feed) remove(w *Watcher) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.watchers, w)
	return len(f.watchers)
}

// failed reports whether the feed stopped.
func (f *feed) failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err != nil
}

// run loads the rollout, follows its changes until the feed is cancelled
// or fails, and tells the watchers why it stopped.
func (f *feed) run() {
	defer f.hub.wg.Done()
	err := f.follow()
	switch {
	case f.ctx.Err() != nil:
		err = ErrClosed
	case errors.Is(err, ErrNotFound):
		// Anyone may ask for a rollout that does not exist: no warning.
		f.hub.log.Debug("rollout watch feed stopped", "rollout", f.id, "err", err)
	default:
		f.hub.log.Warn("rollout watch feed stopped; its watchers will resume", "rollout", f.id, "err", err)
	}
	f.mu.Lock()
	f.err = err
	for w := range f.watchers {
		w.signal()
	}
	f.mu.Unlock()
	f.hub.forget(f)
	f.cancel()
}

func (f *feed) follow() error {
	for range maxReloads {
		st, err := f.load()
		if err != nil {
			return err
		}
		f.install(st)
		err = f.watch(st.rev)
		if !errors.Is(err, errCompacted) {
			return err
		}
	}
	return fmt.Errorf("%w: etcd compacts history faster than the feed reads it", ErrWatchEnded)
}

// state is everything a load read, at one revision.
type state struct {
	rev        int64
	rollout    *rolloutVersion
	rolloutRev int64
	nodes      []nodeRecord
}

type nodeRecord struct {
	id  string
	val []byte
	rev int64
}

// load reads the rollout and all its nodes at one revision.
func (f *feed) load() (*state, error) {
	cli := f.hub.cfg.Store.Client()
	resp, err := cli.Get(f.ctx, f.rolloutKey)
	if err != nil {
		return nil, fmt.Errorf("read rollout %s: %w", f.id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, f.id)
	}
	r, err := f.decodeRollout(resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	st := &state{rev: resp.Header.Revision, rollout: r, rolloutRev: resp.Kvs[0].ModRevision}
	end := clientv3.GetPrefixRangeEnd(f.nodesPrefix)
	start := f.nodesPrefix
	var scratch outpostv1.RolloutNode
	for range maxLoadPages {
		page, err := cli.Get(f.ctx, start, clientv3.WithRange(end), clientv3.WithRev(st.rev), clientv3.WithLimit(PageSize))
		if err != nil {
			return nil, fmt.Errorf("read nodes of %s: %w", f.id, err)
		}
		for _, kv := range page.Kvs {
			r, err := f.nodeRecord(kv, &scratch)
			if err != nil {
				return nil, err
			}
			st.nodes = append(st.nodes, r)
		}
		if !page.More || len(page.Kvs) == 0 {
			return st, nil
		}
		start = string(page.Kvs[len(page.Kvs)-1].Key) + "\x00"
	}
	return nil, fmt.Errorf("read nodes of %s: more than %d pages", f.id, maxLoadPages)
}

// nodeRecord checks that kv holds a RolloutNode (decoding it into
// scratch, which is then dropped) and returns it as stored.
func (f *feed) nodeRecord(kv *mvccpb.KeyValue, scratch *outpostv1.RolloutNode) (nodeRecord, error) {
	if err := proto.Unmarshal(kv.Value, scratch); err != nil {
		return nodeRecord{}, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return nodeRecord{id: strings.TrimPrefix(string(kv.Key), f.nodesPrefix), val: kv.Value, rev: kv.ModRevision}, nil
}

// decodeRollout prepares one version of the rollout record for sending.
func (f *feed) decodeRollout(val []byte) (*rolloutVersion, error) {
	r := &outpostv1.Rollout{}
	if err := proto.Unmarshal(val, r); err != nil {
		return nil, fmt.Errorf("decode rollout %s: %w", f.id, err)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(brief(r))
	if err != nil {
		return nil, fmt.Errorf("encode rollout %s: %w", f.id, err)
	}
	return &rolloutVersion{state: r.GetState(), whole: rolloutField(val), brief: rolloutField(b)}, nil
}

// install puts a load into the cache. After a reload, what changed is
// marked for the watchers.
func (f *feed) install(st *state) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	var changed []int
	for _, r := range st.nodes {
		if slot, ok := f.setNode(r); ok {
			changed = append(changed, slot)
		}
	}
	rolloutChanged := st.rolloutRev != f.rolloutRev
	f.rollout, f.rolloutRev = st.rollout, st.rolloutRev
	f.rev = st.rev
	if !f.loaded {
		// Watchers start from the first load: nothing to mark.
		f.loaded = true
		for w := range f.watchers {
			w.signal()
		}
		return
	}
	f.mark(changed, rolloutChanged)
}

// setNode stores r in its slot, or a new slot for a node not seen before,
// and reports the slot and whether the record changed. f.mu is held.
func (f *feed) setNode(r nodeRecord) (int, bool) {
	slot, ok := f.slots[r.id]
	if !ok {
		slot = len(f.slots)
		f.slots[r.id] = slot
		if slot%PageSize == 0 {
			f.pages = append(f.pages, &page{gen: f.gen})
		}
	}
	p := f.pages[slot/PageSize]
	i := slot % PageSize
	if ok && p.revs[i] == r.rev {
		return slot, false
	}
	if p.gen != f.gen {
		// The page may be in a snapshot: change a copy.
		p = p.clone(f.gen)
		f.pages[slot/PageSize] = p
	}
	if ok {
		p.vals[i], p.revs[i] = r.val, r.rev
	} else {
		p.vals = append(p.vals, r.val)
		p.revs = append(p.revs, r.rev)
	}
	return slot, true
}

// mark tells every watcher which slots (and whether the rollout) changed.
// f.mu is held.
func (f *feed) mark(slots []int, rollout bool) {
	if len(slots) == 0 && !rollout {
		return
	}
	for w := range f.watchers {
		for _, s := range slots {
			w.dirty.set(s)
		}
		w.rolloutDirty = w.rolloutDirty || rollout
		w.signal()
	}
}

// watch follows the rollout's keys after revision rev until the feed is
// cancelled or fails.
func (f *feed) watch(rev int64) error {
	f.hub.etcdWatches.Add(1)
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	// The prefix also matches longer rollout ids; keys are filtered in apply.
	ch := f.hub.cfg.Store.Watch(ctx, f.rolloutKey, rev+1)
	for {
		select {
		case <-f.ctx.Done():
			return f.ctx.Err()
		case wr, ok := <-ch:
			if !ok {
				if f.ctx.Err() != nil {
					return f.ctx.Err()
				}
				return ErrWatchEnded
			}
			if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
				return errCompacted
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("%w: %v", ErrWatchEnded, err)
			}
			if err := f.apply(wr.Events); err != nil {
				return err
			}
		}
	}
}

// apply puts the changes of one watch response into the cache. Records
// are checked and the rollout prepared before the lock is taken.
func (f *feed) apply(events []*clientv3.Event) error {
	var (
		nodes   []nodeRecord
		rollout *rolloutVersion
		rRev    int64
		last    int64
		scratch outpostv1.RolloutNode
	)
	for _, ev := range events {
		key := string(ev.Kv.Key)
		switch {
		case key == f.rolloutKey:
			if ev.Type == clientv3.EventTypeDelete {
				return fmt.Errorf("%w: %s was deleted", ErrNotFound, f.id)
			}
			r, err := f.decodeRollout(ev.Kv.Value)
			if err != nil {
				return err
			}
			rollout, rRev = r, ev.Kv.ModRevision
		case strings.HasPrefix(key, f.nodesPrefix) && ev.Type == clientv3.EventTypePut:
			r, err := f.nodeRecord(ev.Kv, &scratch)
			if err != nil {
				return err
			}
			nodes = append(nodes, r)
		default:
			continue
		}
		last = ev.Kv.ModRevision
	}
	if last == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	var changed []int
	for _, r := range nodes {
		if slot, ok := f.setNode(r); ok {
			changed = append(changed, slot)
		}
	}
	if rollout != nil {
		f.rollout, f.rolloutRev = rollout, rRev
	}
	f.rev = last
	f.mark(changed, rollout != nil)
	return nil
}

// brief returns a copy of r whose batches carry their node count instead
// of their node ids: a few hundred bytes instead of ten or so per node.
// r must not be shared (it is changed and restored meanwhile).
func brief(r *outpostv1.Rollout) *outpostv1.Rollout {
	stages := r.Stages
	r.Stages = nil
	b := proto.CloneOf(r)
	r.Stages = stages
	for _, st := range stages {
		batches := st.Batches
		st.Batches = nil
		bs := proto.CloneOf(st)
		st.Batches = batches
		for _, bt := range batches {
			ids := bt.NodeIds
			bt.NodeIds = nil
			bb := proto.CloneOf(bt)
			bt.NodeIds = ids
			bb.NodeCount = int32(len(ids))
			bs.Batches = append(bs.Batches, bb)
		}
		b.Stages = append(b.Stages, bs)
	}
	return b
}
