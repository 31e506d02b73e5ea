package notify_test

import (
	"testing"

	"github.com/outposthq/outpost/controlplane/notify"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestEventFor(t *testing.T) {
	const (
		unspecified = outpostv1.RolloutState_ROLLOUT_STATE_UNSPECIFIED
		pendingAppr = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL
		approved    = outpostv1.RolloutState_ROLLOUT_STATE_APPROVED
		running     = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
		paused      = outpostv1.RolloutState_ROLLOUT_STATE_PAUSED
		succeeded   = outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED
		pendingVal  = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION
		validated   = outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED
		aborted     = outpostv1.RolloutState_ROLLOUT_STATE_ABORTED
		rolledBack  = outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK
		rejected    = outpostv1.RolloutState_ROLLOUT_STATE_REJECTED
	)
	tests := []struct {
		from, to outpostv1.RolloutState
		want     notify.EventType // "" means not announced
	}{
		{unspecified, pendingAppr, notify.EventApprovalNeeded},
		{pendingAppr, approved, ""},
		{approved, running, notify.EventStarted},
		{running, paused, notify.EventPaused},
		{paused, running, ""},
		{running, succeeded, notify.EventSucceeded},
		{running, pendingVal, notify.EventValidationNeeded},
		{pendingVal, validated, ""},
		{pendingVal, rejected, notify.EventRolledBack},
		{pendingAppr, rejected, ""},
		{running, aborted, notify.EventAborted},
		{running, rolledBack, notify.EventRolledBack},
	}
	for _, tt := range tests {
		got, ok := notify.EventFor(tt.from, tt.to)
		if ok != (tt.want != "") || (ok && got != tt.want) {
			t.Errorf("EventFor(%v, %v) = %q, %v; want %q", tt.from, tt.to, got, ok, tt.want)
		}
	}
}

func TestText(t *testing.T) {
	tests := []struct {
		ev   notify.Event
		want string
	}{
		{
			notify.Event{Type: notify.EventApprovalNeeded, RolloutID: "r-1", App: "billing-api", Revision: 3, Environment: "prod",
				Counts: &outpostv1.NodeCounts{Total: 1, Pending: 1}},
			"Outpost: billing-api revision 3 to prod needs approval (rollout r-1; 1 node: 1 pending)",
		},
		{
			notify.Event{Type: notify.EventRolledBack, RolloutID: "r-2", App: "a<b>&c", Message: "stage canary:\n1 of 1 nodes failed"},
			"Outpost: a&lt;b&gt;&amp;c was rolled back: stage canary: 1 of 1 nodes failed (rollout r-2; 0 nodes)",
		},
		{
			notify.Event{Type: notify.EventValidationNeeded, RolloutID: "r-3", App: "web", Release: "r1-00aa", ChangeID: "CHG-9"},
			"Outpost: web succeeded and needs validation (rollout r-3, release r1-00aa, change CHG-9; 0 nodes)",
		},
	}
	for _, tt := range tests {
		if got := notify.Text(tt.ev); got != tt.want {
			t.Errorf("Text(%+v) =\n%q, want\n%q", tt.ev, got, tt.want)
		}
	}
}
