package controlplane

import (
	"fmt"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func stepEvent(node string, seq uint64) *outpostv1.NodeStepEvent {
	return &outpostv1.NodeStepEvent{NodeId: node, Seq: seq, Step: outpostv1.Step_STEP_CONNECT}
}

// drain returns what ch holds now, as "node/seq".
func drain(ch <-chan *outpostv1.NodeStepEvent) []string {
	var got []string
	for {
		select {
		case ev := <-ch:
			got = append(got, fmt.Sprintf("%s/%d", ev.GetNodeId(), ev.GetSeq()))
		default:
			return got
		}
	}
}

// TestEventHubReplaysToLateWatchers: a watcher that subscribes after the
// first events gets them first, then live ones, each once; a resumed
// watcher gets only live ones.
func TestEventHubReplaysToLateWatchers(t *testing.T) {
	h := newEventHub()
	h.Publish("r1", stepEvent("n1", 1))
	h.Publish("r1", stepEvent("n1", 2))
	h.Publish("r2", stepEvent("n9", 1))

	fresh, stopFresh := h.subscribe("r1", true)
	defer stopFresh()
	resumed, stopResumed := h.subscribe("r1", false)
	defer stopResumed()
	h.Publish("r1", stepEvent("n2", 1))

	if got, want := fmt.Sprint(drain(fresh)), "[n1/1 n1/2 n2/1]"; got != want {
		t.Errorf("fresh watcher got %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(drain(resumed)), "[n2/1]"; got != want {
		t.Errorf("resumed watcher got %s, want %s", got, want)
	}
}

// TestEventHubBoundsItsMemory: at most eventBuffer events per rollout, and
// only the recentRollouts latest rollouts are kept.
func TestEventHubBoundsItsMemory(t *testing.T) {
	h := newEventHub()
	for i := range eventBuffer + 10 {
		h.Publish("big", stepEvent("n", uint64(i+1)))
	}
	ch, stop := h.subscribe("big", true)
	got := drain(ch)
	stop()
	if len(got) != eventBuffer || got[0] != fmt.Sprintf("n/%d", 11) {
		t.Errorf("replay of a long rollout: %d events starting at %v, want the last %d", len(got), got[:1], eventBuffer)
	}
	for i := range recentRollouts {
		h.Publish(fmt.Sprintf("r%d", i), stepEvent("n", 1))
	}
	if _, ok := h.recent["big"]; ok {
		t.Errorf("the oldest rollout's events are still kept after %d newer rollouts", recentRollouts)
	}
	if len(h.recent) != recentRollouts || len(h.order) != recentRollouts {
		t.Errorf("kept %d rollouts (order %d), want %d", len(h.recent), len(h.order), recentRollouts)
	}
}
