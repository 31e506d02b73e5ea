package controlplane

import (
	"sync"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// eventBuffer is how many step events a slow watcher may lag behind
// before it misses some. Step events are live only (node states in etcd
// are what a watcher relies on), so dropping them is safe.
const eventBuffer = 256

// recentRollouts is how many rollouts keep their latest step events for
// watchers that subscribe late: `rollout create --watch` subscribes a few
// milliseconds after the engine may have started the first batch, and
// should still show those nodes' first steps.
const recentRollouts = 16

// eventHub fans step events out to the watchers on this replica. Only the
// leader's engine publishes, so watchers on followers get node states but
// no step events.
type eventHub struct {
	mu   sync.Mutex // guards subs, recent and order
	subs map[string]map[chan *outpostv1.NodeStepEvent]struct{}
	// recent holds the last eventBuffer step events of the recentRollouts
	// rollouts that published last; order lists them, oldest first.
	recent map[string][]*outpostv1.NodeStepEvent
	order  []string
}

func newEventHub() *eventHub {
	return &eventHub{
		subs:   map[string]map[chan *outpostv1.NodeStepEvent]struct{}{},
		recent: map[string][]*outpostv1.NodeStepEvent{},
	}
}

// Publish sends ev to rolloutID's watchers on this replica; it never blocks.
func (h *eventHub) Publish(rolloutID string, ev *outpostv1.NodeStepEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.remember(rolloutID, ev)
	for ch := range h.subs[rolloutID] {
		select {
		case ch <- ev:
		default:
		}
	}
}

// remember keeps ev among rolloutID's recent events; h.mu is held.
func (h *eventHub) remember(rolloutID string, ev *outpostv1.NodeStepEvent) {
	evs, known := h.recent[rolloutID]
	if !known {
		if len(h.order) == recentRollouts {
			delete(h.recent, h.order[0])
			h.order = h.order[1:]
		}
		h.order = append(h.order, rolloutID)
	}
	if len(evs) == eventBuffer {
		evs = evs[1:]
	}
	h.recent[rolloutID] = append(evs, ev)
}

// subscribe returns a channel of rolloutID's step events and a func that
// ends the subscription. With replay, the channel first holds the
// rollout's recent events (up to eventBuffer), then live ones, with no
// gap and no duplicate between them; a watcher resuming from a revision
// asks for none, having printed them already.
func (h *eventHub) subscribe(rolloutID string, replay bool) (<-chan *outpostv1.NodeStepEvent, func()) {
	ch := make(chan *outpostv1.NodeStepEvent, eventBuffer)
	h.mu.Lock()
	if replay {
		for _, ev := range h.recent[rolloutID] {
			ch <- ev // fits: recent holds at most eventBuffer events
		}
	}
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
