package controlplane

import (
	"sync"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// eventBuffer is how many step events a slow watcher may lag behind
// before it misses some. Step events are live only (node states in etcd
// are what a watcher relies on), so dropping them is safe.
const eventBuffer = 256

// eventHub fans step events out to the watchers on this replica. Only the
// leader's engine publishes, so watchers on followers get node states but
// no step events.
type eventHub struct {
	mu   sync.Mutex // guards subs
	subs map[string]map[chan *outpostv1.NodeStepEvent]struct{}
}

func newEventHub() *eventHub {
	return &eventHub{subs: map[string]map[chan *outpostv1.NodeStepEvent]struct{}{}}
}

// Publish implements rollout.EventSink; it never blocks.
func (h *eventHub) Publish(rolloutID string, ev *outpostv1.NodeStepEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[rolloutID] {
		select {
		case ch <- ev:
		default:
		}
	}
}

// subscribe returns a channel of rolloutID's step events and a func that
// ends the subscription.
func (h *eventHub) subscribe(rolloutID string) (<-chan *outpostv1.NodeStepEvent, func()) {
	ch := make(chan *outpostv1.NodeStepEvent, eventBuffer)
	h.mu.Lock()
	if h.subs[rolloutID] == nil {
		h.subs[rolloutID] = map[chan *outpostv1.NodeStepEvent]struct{}{}
	}
	h.subs[rolloutID][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[rolloutID], ch)
		if len(h.subs[rolloutID]) == 0 {
			delete(h.subs, rolloutID)
		}
	}
}
