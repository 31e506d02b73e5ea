package gateway

import (
	"sync"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// DefaultOutboxSize is how many step events and results the outbox holds
// before it starts dropping superseded step events.
const DefaultOutboxSize = 4096

// outbox holds what the gateway owes the control plane: sequenced step
// events and node results until the control plane acknowledges them (they
// survive reconnects), and unsequenced assignment acks for the current
// stream. It is safe for concurrent use; one session at a time takes from
// it.
type outbox struct {
	size  int
	ready chan struct{} // has a value when there may be something to take

	mu      sync.Mutex
	entries []*outEntry                // guarded by mu: unacknowledged, in order
	cursor  int                        // guarded by mu: entries[:cursor] are sent on this stream
	nextSeq uint64                     // guarded by mu: sequence of the next message sent
	acks    []*outpostv1.AssignmentAck // guarded by mu: for the current stream only
	dropped int                        // guarded by mu: step events dropped for space
	// compactAt is the length at which a full outbox is compacted again
	// (guarded by mu): a compaction that freed little (the entries are
	// results and latest events) is not repeated for every new event.
	compactAt int
}

// outEntry is one sequenced message.
type outEntry struct {
	seq        uint64 // 0 until first sent; kept for re-sends
	assignment string
	event      bool // a step event, which may be dropped when superseded
	req        *outpostv1.ConnectRequest
}

func newOutbox(size int) *outbox {
	return &outbox{size: size, ready: make(chan struct{}, 1), nextSeq: 1}
}

func (o *outbox) signal() {
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

// addEvent queues a step event of an assignment. When the outbox is full,
// every step event superseded by a newer one of the same assignment (this
// one included) is dropped to make room.
func (o *outbox) addEvent(assignment string, ev *outpostv1.NodeStepEvent) {
	o.mu.Lock()
	if len(o.entries) >= max(o.size, o.compactAt) {
		o.compactLocked(assignment)
		// A profile of a 2,000-node rollout spent half the gateway's CPU
		// dropping one event per call from a full outbox; dropping them
		// all at once, and scanning again only after a quarter more has
		// queued up, keeps adding cheap.
		o.compactAt = len(o.entries) + max(o.size/4, 1)
	}
	o.entries = append(o.entries, &outEntry{assignment: assignment, event: true, req: &outpostv1.ConnectRequest{
		Msg: &outpostv1.ConnectRequest_StepEvent{StepEvent: &outpostv1.AssignmentStepEvent{AssignmentId: assignment, Event: ev}},
	}})
	o.mu.Unlock()
	o.signal()
}

// compactLocked drops every step event that has a newer event of its
// assignment queued, counting incoming as a newer one. Results and the
// latest event of each assignment stay, in order.
func (o *outbox) compactLocked(incoming string) {
	latest := make(map[string]int) // index of each assignment's newest event
	for i, e := range o.entries {
		if e.event {
			latest[e.assignment] = i
		}
	}
	kept := o.entries[:0]
	cursor := o.cursor
	for i, e := range o.entries {
		if e.event && (e.assignment == incoming || latest[e.assignment] != i) {
			o.dropped++
			if i < o.cursor {
				cursor--
			}
			continue
		}
		kept = append(kept, e)
	}
	clear(o.entries[len(kept):]) // let the dropped entries go
	o.entries, o.cursor = kept, cursor
}

// addResult queues a node result. Results are never dropped.
func (o *outbox) addResult(r *outpostv1.NodeResult) {
	o.mu.Lock()
	o.entries = append(o.entries, &outEntry{assignment: r.GetAssignmentId(), req: &outpostv1.ConnectRequest{
		Msg: &outpostv1.ConnectRequest_NodeResult{NodeResult: r},
	}})
	o.mu.Unlock()
	o.signal()
}

// addAck queues an assignment ack for the current stream.
func (o *outbox) addAck(a *outpostv1.AssignmentAck) {
	o.mu.Lock()
	o.acks = append(o.acks, a)
	o.mu.Unlock()
	o.signal()
}

// take returns what is to be sent now, in order: acks first, then the
// sequenced messages not yet sent on this stream, numbered.
func (o *outbox) take() []*outpostv1.ConnectRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]*outpostv1.ConnectRequest, 0, len(o.acks)+len(o.entries)-o.cursor)
	for _, a := range o.acks {
		out = append(out, &outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_AssignmentAck{AssignmentAck: a}})
	}
	o.acks = nil
	for _, e := range o.entries[o.cursor:] {
		if e.seq == 0 {
			// Numbered when first sent, so that superseded events dropped
			// while disconnected leave no gap.
			e.seq = o.nextSeq
			o.nextSeq++
			e.req.Sequence = e.seq
		}
		out = append(out, e.req)
	}
	o.cursor = len(o.entries)
	return out
}

// acked forgets every message up to and including seq.
func (o *outbox) acked(seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for n < len(o.entries) && o.entries[n].seq != 0 && o.entries[n].seq <= seq {
		n++
	}
	o.entries = o.entries[n:]
	o.cursor = max(0, o.cursor-n)
}

// restart prepares a new stream whose welcome says the control plane has
// applied everything up to applied: the rest is sent again, and new
// numbers continue above both what this process used and applied (a
// restarted gateway must not reuse numbers the control plane has seen).
func (o *outbox) restart(applied uint64) {
	o.mu.Lock()
	o.acks = nil
	o.cursor = 0
	o.nextSeq = max(o.nextSeq, applied+1)
	o.mu.Unlock()
	o.acked(applied)
	o.signal()
}

// unackedResults lists the assignments whose result is not acknowledged
// yet, in the order they finished.
func (o *outbox) unackedResults() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ids []string
	for _, e := range o.entries {
		if !e.event && e.req.GetNodeResult() != nil {
			ids = append(ids, e.assignment)
		}
	}
	return ids
}

// pending reports how many sequenced messages are not acknowledged yet.
func (o *outbox) pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries)
}
