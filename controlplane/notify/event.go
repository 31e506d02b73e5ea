package notify

import (
	"fmt"
	"strings"
	"time"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// EventType names what happened to a rollout. The values are the "event"
// field of the JSON body.
type EventType string

// Event types.
const (
	// EventApprovalNeeded: the rollout waits for an approver (PENDING_APPROVAL).
	EventApprovalNeeded EventType = "approval_needed"
	// EventStarted: the first nodes are being deployed (RUNNING).
	EventStarted EventType = "started"
	// EventPaused: no new node starts until someone resumes or promotes (PAUSED).
	EventPaused EventType = "paused"
	// EventFailed: the rollout stopped because nodes failed (a failure
	// budget was exceeded); rolled_back or aborted follows when it ends.
	EventFailed EventType = "failed"
	// EventRolledBack: the rollout ended and its nodes were returned to
	// their previous release (FAILED_ROLLED_BACK, or REJECTED at validation).
	EventRolledBack EventType = "rolled_back"
	// EventAborted: the rollout was stopped for good (ABORTED).
	EventAborted EventType = "aborted"
	// EventSucceeded: every stage finished within its failure budget (SUCCEEDED).
	EventSucceeded EventType = "succeeded"
	// EventValidationNeeded: succeeded, and a person must accept or reject
	// it (PENDING_VALIDATION).
	EventValidationNeeded EventType = "validation_needed"
)

// EventFor returns the event announcing a rollout's change from state
// from to state to, and false for changes that are not announced
// (APPROVED, VALIDATED, REJECTED at approval, resuming). EventFailed has
// no state of its own: the engine sends it when a failure budget is
// exceeded.
func EventFor(from, to outpostv1.RolloutState) (EventType, bool) {
	switch to {
	case outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL:
		return EventApprovalNeeded, true
	case outpostv1.RolloutState_ROLLOUT_STATE_RUNNING:
		// PAUSED -> RUNNING is a resume, not a start.
		return EventStarted, from != outpostv1.RolloutState_ROLLOUT_STATE_PAUSED
	case outpostv1.RolloutState_ROLLOUT_STATE_PAUSED:
		return EventPaused, true
	case outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED:
		return EventSucceeded, true
	case outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION:
		return EventValidationNeeded, true
	case outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK:
		return EventRolledBack, true
	case outpostv1.RolloutState_ROLLOUT_STATE_ABORTED:
		return EventAborted, true
	case outpostv1.RolloutState_ROLLOUT_STATE_REJECTED:
		// Rejected at validation: the nodes are rolled back.
		return EventRolledBack, from == outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION
	}
	return "", false
}

// Event is one notification.
type Event struct {
	// Type is what happened.
	Type EventType
	// Webhook is the URL to POST to (the plan's notify.webhook); "" means
	// the event goes nowhere.
	Webhook string
	// Time is when it happened; zero means when Notify is called.
	Time time.Time

	RolloutID   string
	App         string
	Environment string
	ChangeID    string
	Revision    int64
	Release     string
	// State is the rollout's state name ("RUNNING").
	State string
	// Message says why, for people ("stage canary: 1 of 1 nodes failed").
	Message string
	// Counts are the rollout's node counts; nil means all zero.
	Counts *outpostv1.NodeCounts
}

// RolloutEvent returns the event typ for rollout r, addressed to its
// plan's webhook and stamped now.
func RolloutEvent(typ EventType, r *outpostv1.Rollout, now time.Time) Event {
	return Event{
		Type:        typ,
		Webhook:     r.GetPlan().GetNotify().GetWebhook(),
		Time:        now,
		RolloutID:   r.GetId(),
		App:         r.GetApp(),
		Environment: r.GetPlan().GetEnvironment(),
		ChangeID:    r.GetPlan().GetChangeId(),
		Revision:    r.GetRevision(),
		Release:     r.GetReleaseId(),
		State:       rolloutstate.Name(r.GetState()),
		Message:     r.GetMessage(),
		Counts:      r.GetNodeCounts(),
	}
}

// Body is the JSON a webhook receives. Every field is always present, so
// receivers can rely on the shape.
type Body struct {
	Event       EventType `json:"event"`
	RolloutID   string    `json:"rollout_id"`
	App         string    `json:"app"`
	Environment string    `json:"environment"`
	Revision    int64     `json:"revision"`
	Release     string    `json:"release"`
	State       string    `json:"state"`
	Message     string    `json:"message"`
	ChangeID    string    `json:"change_id"`
	// Time is RFC 3339 in UTC.
	Time   time.Time `json:"time"`
	Counts Counts    `json:"counts"`
	// Text is a one-line summary for chat tools (Slack's "text" field).
	Text string `json:"text"`
}

// Counts counts the rollout's nodes by state.
type Counts struct {
	Total          int32 `json:"total"`
	Pending        int32 `json:"pending"`
	Running        int32 `json:"running"`
	Succeeded      int32 `json:"succeeded"`
	Failed         int32 `json:"failed"`
	RolledBack     int32 `json:"rolled_back"`
	RollbackFailed int32 `json:"rollback_failed"`
	Skipped        int32 `json:"skipped"`
}

// BodyOf returns the JSON body of ev.
func BodyOf(ev Event) Body {
	c := ev.Counts
	return Body{
		Event:       ev.Type,
		RolloutID:   ev.RolloutID,
		App:         ev.App,
		Environment: ev.Environment,
		Revision:    ev.Revision,
		Release:     ev.Release,
		State:       ev.State,
		Message:     ev.Message,
		ChangeID:    ev.ChangeID,
		Time:        ev.Time.UTC(),
		Counts: Counts{
			Total: c.GetTotal(), Pending: c.GetPending(), Running: c.GetRunning(), Succeeded: c.GetSucceeded(),
			Failed: c.GetFailed(), RolledBack: c.GetRolledBack(), RollbackFailed: c.GetRollbackFailed(), Skipped: c.GetSkipped(),
		},
		Text: Text(ev),
	}
}

// phrases say what happened, after "app revision N to env".
var phrases = map[EventType]string{
	EventApprovalNeeded:   "needs approval",
	EventStarted:          "started",
	EventPaused:           "paused",
	EventFailed:           "failed",
	EventRolledBack:       "was rolled back",
	EventAborted:          "was aborted",
	EventSucceeded:        "succeeded",
	EventValidationNeeded: "succeeded and needs validation",
}

// Text is the one-line summary of ev, escaped for Slack's mrkdwn:
//
//	Outpost: billing-api revision 7 to prod failed: stage canary: 1 of 1 nodes failed (rollout r-000042, release r7-1a2b3c4d, change SR-2026-1142; 1 node: 1 rolled back)
func Text(ev Event) string {
	var b strings.Builder
	b.WriteString("Outpost: ")
	b.WriteString(orDash(ev.App))
	if ev.Revision != 0 {
		fmt.Fprintf(&b, " revision %d", ev.Revision)
	}
	if ev.Environment != "" {
		b.WriteString(" to " + ev.Environment)
	}
	phrase, ok := phrases[ev.Type]
	if !ok {
		phrase = string(ev.Type)
	}
	b.WriteString(" " + phrase)
	if ev.Message != "" {
		b.WriteString(": " + ev.Message)
	}
	details := []string{"rollout " + orDash(ev.RolloutID)}
	if ev.Release != "" {
		details = append(details, "release "+ev.Release)
	}
	if ev.ChangeID != "" {
		details = append(details, "change "+ev.ChangeID)
	}
	fmt.Fprintf(&b, " (%s; %s)", strings.Join(details, ", "), rolloutstate.CountsText(ev.Counts))
	return slackEscape(oneLine(b.String()))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine folds line breaks and tabs into spaces.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// slackEscape escapes the three characters Slack treats as markup
// (https://api.slack.com/reference/surfaces/formatting#escaping).
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace
