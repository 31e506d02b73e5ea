package gateway

import (
	"fmt"
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// describe renders what take returned as "seq:kind:assignment/eventseq".
func describe(reqs []*outpostv1.ConnectRequest) string {
	var parts []string
	for _, r := range reqs {
		switch m := r.GetMsg().(type) {
		case *outpostv1.ConnectRequest_StepEvent:
			parts = append(parts, fmt.Sprintf("%d:ev:%s/%d", r.GetSequence(), m.StepEvent.GetAssignmentId(), m.StepEvent.GetEvent().GetSeq()))
		case *outpostv1.ConnectRequest_NodeResult:
			parts = append(parts, fmt.Sprintf("%d:res:%s", r.GetSequence(), m.NodeResult.GetAssignmentId()))
		case *outpostv1.ConnectRequest_AssignmentAck:
			parts = append(parts, fmt.Sprintf("%d:ack:%s", r.GetSequence(), m.AssignmentAck.GetAssignmentId()))
		}
	}
	return strings.Join(parts, " ")
}

func ev(seq uint64) *outpostv1.NodeStepEvent { return &outpostv1.NodeStepEvent{Seq: seq} }

func TestOutboxSequencing(t *testing.T) {
	o := newOutbox(100)
	o.addAck(&outpostv1.AssignmentAck{AssignmentId: "a"})
	o.addEvent("a", ev(1))
	o.addEvent("a", ev(2))
	o.addResult(&outpostv1.NodeResult{AssignmentId: "a"})
	steps := []struct {
		name string
		do   func()
		want string
	}{
		{"first take numbers from 1, acks unsequenced first", func() {}, "0:ack:a 1:ev:a/1 2:ev:a/2 3:res:a"},
		{"nothing new", func() {}, ""},
		{"new event continues", func() { o.addEvent("b", ev(1)) }, "4:ev:b/1"},
		{"ack drops up to 2; reconnect re-sends the rest with their numbers", func() {
			o.acked(2)
			o.addAck(&outpostv1.AssignmentAck{AssignmentId: "stale"})
			o.restart(2)
		}, "3:res:a 4:ev:b/1"},
		{"welcome acknowledging more drops more", func() { o.restart(3) }, "4:ev:b/1"},
		{"welcome from a control plane ahead of us: numbers jump above it", func() {
			o.restart(50)
			o.addEvent("c", ev(1))
		}, "51:ev:c/1"},
	}
	for _, s := range steps {
		s.do()
		if got := describe(o.take()); got != s.want {
			t.Errorf("%s: take = %q, want %q", s.name, got, s.want)
		}
	}
	o.acked(51)
	if n := o.pending(); n != 0 {
		t.Errorf("pending = %d after everything was acknowledged, want 0", n)
	}
}

func TestOutboxDropsSupersededEvents(t *testing.T) {
	o := newOutbox(4)
	o.addEvent("a", ev(1))
	o.addEvent("b", ev(1))
	o.addEvent("a", ev(2))
	o.addResult(&outpostv1.NodeResult{AssignmentId: "a"})
	o.addEvent("a", ev(3))                                // full: a/1 goes
	o.addEvent("b", ev(2))                                // full: b/1 goes
	o.addResult(&outpostv1.NodeResult{AssignmentId: "b"}) // results always fit
	o.addEvent("c", ev(1))                                // full: a/2 goes (a/3 is newer)
	o.addEvent("c", ev(2))                                // full: c/1 goes
	got := describe(o.take())
	want := "1:res:a 2:ev:a/3 3:ev:b/2 4:res:b 5:ev:c/2"
	if got != want {
		t.Errorf("after overflow take = %q, want %q", got, want)
	}
	if o.dropped != 4 {
		t.Errorf("dropped = %d, want 4", o.dropped)
	}
}

func TestOutboxDropsSentEventsWhenUnacknowledged(t *testing.T) {
	o := newOutbox(2)
	o.addEvent("a", ev(1))
	o.addEvent("a", ev(2))
	o.take()               // sent, never acknowledged
	o.addEvent("a", ev(3)) // a/1 and a/2 go although they were sent
	o.restart(0)
	if got, want := describe(o.take()), "3:ev:a/3"; got != want {
		t.Errorf("re-sent = %q, want %q (a gap at 1 and 2 is allowed)", got, want)
	}
}

func TestBackoff(t *testing.T) {
	g := &Gateway{cfg: Config{MinBackoff: 100, MaxBackoff: 1000}}
	tests := []struct {
		n      int
		lo, hi int64
	}{
		{0, 50, 100},
		{1, 100, 200},
		{3, 400, 800},
		{4, 500, 1000},
		{100, 500, 1000},
	}
	for _, tt := range tests {
		for range 50 {
			if d := int64(g.backoff(tt.n)); d < tt.lo || d > tt.hi {
				t.Errorf("backoff(%d) = %d, want within [%d, %d]", tt.n, d, tt.lo, tt.hi)
				break
			}
		}
	}
}

// BenchmarkOutboxAddWhenFull adds step events of 400 assignments deploying
// at once to an outbox the control plane does not drain, as when it falls
// behind in a big rollout.
func BenchmarkOutboxAddWhenFull(b *testing.B) {
	o := newOutbox(DefaultOutboxSize)
	ids := make([]string, 400)
	for i := range ids {
		ids[i] = fmt.Sprintf("r-1-srv-%05d-e1-%d", i, i)
	}
	var seq uint64
	for i := 0; b.Loop(); i++ {
		if i%len(ids) == 0 {
			seq++
		}
		o.addEvent(ids[i%len(ids)], ev(seq))
	}
}
