package audit

import (
	"context"
	"strconv"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// ActionAnalysis is a canary analysis outcome that acts (a failure that
// rolls back or pauses, an inconclusive run that pauses, a passed
// analysis that lets the stage end), with a summary of its measurements.
const ActionAnalysis = "rollout.analysis"

// RecordAnalysis records a stage's analysis outcome: outcome is
// "passed", "failed" or "inconclusive", message the engine's reason
// (naming the query and its values), ms every measurement of the stage.
// It waits while the queue is full, bounded by ctx (see enqueueRecord).
func (l *Log) RecordAnalysis(ctx context.Context, r *outpostv1.Rollout, stage, outcome, message string, ms []*outpostv1.Measurement) {
	e := &outpostv1.AuditEntry{
		Actor:     l.cfg.ReplicaName,
		ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_SYSTEM,
		Action:    ActionAnalysis,
		Result:    ResultOK,
		Message:   "stage " + stage + ": analysis " + outcome,
	}
	if outcome != "passed" {
		e.Result = ResultFailed
	}
	if message != "" {
		e.Message += ": " + message
	}
	setRollout(e, r.GetId())
	var ok, bad, unknown, dry int
	for _, m := range ms {
		switch m.GetVerdict() {
		case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_SUCCESS:
			ok++
		case outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE:
			bad++
		default:
			unknown++
		}
		if m.GetDryRun() {
			dry++
		}
	}
	detail(e, "stage", stage)
	detail(e, "outcome", outcome)
	detail(e, "app", r.GetApp())
	detail(e, "release", r.GetReleaseId())
	detail(e, "measurements", strconv.Itoa(len(ms)))
	detail(e, "success", strconv.Itoa(ok))
	detail(e, "failure", strconv.Itoa(bad))
	detail(e, "inconclusive", strconv.Itoa(unknown))
	detail(e, "dry_run", strconv.Itoa(dry))
	l.enqueueRecord(ctx, e)
}
