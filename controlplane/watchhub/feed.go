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
	rev     int64
	rollout *outpostv1.Rollout
	// brief is rollout with its batches' node counts instead of their
	// node ids, for watchers that send node pages.
	brief      *outpostv1.Rollout
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

// page is up to PageSize nodes of a feed, with the revision each was
// written at and the size of its record.
type page struct {
	gen   uint64
	nodes []*outpostv1.RolloutNode
	revs  []int64
	sizes []int
}

func (p *page) clone(gen uint64) *page {
	return &page{
		gen:   gen,
		nodes: append(make([]*outpostv1.RolloutNode, 0, PageSize), p.nodes...),
		revs:  append(make([]int64, 0, PageSize), p.revs...),
		sizes: append(make([]int, 0, PageSize), p.sizes...),
	}
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
	if f.ctx.Err() != nil {
		err = ErrClosed
	} else {
		f.hub.log.Warn("rollout watch feed stopped", "rollout", f.id, "err", err)
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
	rollout    *outpostv1.Rollout
	brief      *outpostv1.Rollout
	rolloutRev int64
	nodes      []nodeRecord
}

type nodeRecord struct {
	id   string
	node *outpostv1.RolloutNode
	rev  int64
	size int
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
	st := &state{rev: resp.Header.Revision, rollout: &outpostv1.Rollout{}, rolloutRev: resp.Kvs[0].ModRevision}
	if err := proto.Unmarshal(resp.Kvs[0].Value, st.rollout); err != nil {
		return nil, fmt.Errorf("decode rollout %s: %w", f.id, err)
	}
	st.brief = brief(st.rollout)
	end := clientv3.GetPrefixRangeEnd(f.nodesPrefix)
	start := f.nodesPrefix
	for range maxLoadPages {
		page, err := cli.Get(f.ctx, start, clientv3.WithRange(end), clientv3.WithRev(st.rev), clientv3.WithLimit(PageSize))
		if err != nil {
			return nil, fmt.Errorf("read nodes of %s: %w", f.id, err)
		}
		for _, kv := range page.Kvs {
			r, err := f.decodeNode(kv)
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

func (f *feed) decodeNode(kv *mvccpb.KeyValue) (nodeRecord, error) {
	n := &outpostv1.RolloutNode{}
	if err := proto.Unmarshal(kv.Value, n); err != nil {
		return nodeRecord{}, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return nodeRecord{
		id:   strings.TrimPrefix(string(kv.Key), f.nodesPrefix),
		node: n,
		rev:  kv.ModRevision,
		size: len(kv.Value),
	}, nil
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
	f.rollout, f.brief, f.rolloutRev = st.rollout, st.brief, st.rolloutRev
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
		p.nodes[i], p.revs[i], p.sizes[i] = r.node, r.rev, r.size
	} else {
		p.nodes = append(p.nodes, r.node)
		p.revs = append(p.revs, r.rev)
		p.sizes = append(p.sizes, r.size)
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
// are decoded before the lock is taken.
func (f *feed) apply(events []*clientv3.Event) error {
	var (
		nodes          []nodeRecord
		rollout, short *outpostv1.Rollout
		rRev           int64
		last           int64
	)
	for _, ev := range events {
		key := string(ev.Kv.Key)
		switch {
		case key == f.rolloutKey:
			if ev.Type == clientv3.EventTypeDelete {
				return fmt.Errorf("%w: %s was deleted", ErrNotFound, f.id)
			}
			r := &outpostv1.Rollout{}
			if err := proto.Unmarshal(ev.Kv.Value, r); err != nil {
				return fmt.Errorf("decode rollout %s: %w", f.id, err)
			}
			rollout, short, rRev = r, brief(r), ev.Kv.ModRevision
		case strings.HasPrefix(key, f.nodesPrefix) && ev.Type == clientv3.EventTypePut:
			r, err := f.decodeNode(ev.Kv)
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
		f.rollout, f.brief, f.rolloutRev = rollout, short, rRev
	}
	f.rev = last
	f.mark(changed, rollout != nil)
	return nil
}

// brief returns a copy of r whose batches carry their node count instead
// of their node ids: a few hundred bytes instead of ten or so per node.
// r must not be shared yet (it is changed and restored meanwhile).
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
