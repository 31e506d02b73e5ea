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
// the oldest step event superseded by a newer one of the same assignment
// (this one included) is dropped to make room.
func (o *outbox) addEvent(assignment string, ev *outpostv1.NodeStepEvent) {
	o.mu.Lock()
	if len(o.entries) >= o.size {
		o.dropSupersededLocked(assignment)
	}
	o.entries = append(o.entries, &outEntry{assignment: assignment, event: true, req: &outpostv1.ConnectRequest{
		Msg: &outpostv1.ConnectRequest_StepEvent{StepEvent: &outpostv1.AssignmentStepEvent{AssignmentId: assignment, Event: ev}},
	}})
	o.mu.Unlock()
	o.signal()
}

// dropSupersededLocked drops the oldest step event that has a newer event
// of its assignment queued, counting incoming as a newer one.
func (o *outbox) dropSupersededLocked(incoming string) {
	last := make(map[string]int)
	for i, e := range o.entries {
		if e.event {
			last[e.assignment] = i
		}
	}
	for i, e := range o.entries {
		if !e.event || (last[e.assignment] == i && e.assignment != incoming) {
			continue
		}
		o.entries = append(o.entries[:i], o.entries[i+1:]...)
		if i < o.cursor {
			o.cursor--
		}
		o.dropped++
		return
	}
	// Every queued event is the latest of its assignment: keep them all; the
	// outbox then holds at most one event per assignment beyond its size.
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
