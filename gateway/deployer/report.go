package deployer

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// reporter turns step boundaries into NodeStepEvents (numbered from 1),
// child spans and log lines. It is used by one deployment goroutine only.
type reporter struct {
	nodeID, rolloutID string
	address           string                         // the node's SSH address, for the step spans
	emit              func(*outpostv1.NodeStepEvent) // never nil
	tracer            trace.Tracer
	log               *slog.Logger
	now               func() time.Time
	seq               uint64
}

// stepRun is a step that has started.
type stepRun struct {
	step  outpostv1.Step
	start time.Time
	label string
}

// begin reports that step starts now.
func (r *reporter) begin(step outpostv1.Step) stepRun {
	return r.beginAt(step, r.now(), "")
}

// beginAt reports that step started at t; label names a part of the
// rollback in its event detail.
func (r *reporter) beginAt(step outpostv1.Step, t time.Time, label string) stepRun {
	r.send(&outpostv1.NodeStepEvent{Step: step, Phase: outpostv1.StepPhase_STEP_PHASE_STARTED, Time: timestamppb.New(t), Detail: label})
	return stepRun{step: step, start: t, label: label}
}

// end reports that s ended now, failed when err is non-nil.
func (r *reporter) end(ctx context.Context, s stepRun, err error, detail string) {
	r.endAt(ctx, s, r.now(), err, detail)
}

// endAt reports that s ended at t.
func (r *reporter) endAt(ctx context.Context, s stepRun, t time.Time, err error, detail string) {
	if t.Before(s.start) {
		t = s.start
	}
	if s.label != "" {
		detail = strings.TrimSpace(s.label + " " + detail)
	}
	ev := &outpostv1.NodeStepEvent{
		Step:     s.step,
		Phase:    outpostv1.StepPhase_STEP_PHASE_SUCCEEDED,
		Time:     timestamppb.New(t),
		Duration: durationpb.New(t.Sub(s.start)),
		Detail:   detail,
	}
	if err != nil {
		ev.Phase = outpostv1.StepPhase_STEP_PHASE_FAILED
		ev.Error = err.Error()
	}
	r.send(ev)

	// Spans are made when the step is over because most steps are learned
	// from a script's markers after the fact; the timestamps are the real ones.
	// Every step is an exchange with the node over SSH/SFTP: a CLIENT span.
	attrs := append(telemetry.ServerAttrs(r.address, 22),
		telemetry.AttrNodeID.String(r.nodeID), telemetry.AttrStep.String(telemetry.StepValue(s.step)))
	if detail != "" {
		attrs = append(attrs, telemetry.AttrStepDetail.String(detail))
	}
	_, span := r.tracer.Start(ctx, "deployer."+stepName(s.step), trace.WithTimestamp(s.start),
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	if err != nil {
		telemetry.Fail(span, err)
	}
	span.End(trace.WithTimestamp(t))

	if err != nil {
		r.log.Warn("step failed", "step", stepName(s.step), "detail", detail, "error", err, "duration", t.Sub(s.start))
	} else {
		r.log.Debug("step done", "step", stepName(s.step), "detail", detail, "duration", t.Sub(s.start))
	}
}

// skip reports a step that has nothing to do, as a start and a success.
func (r *reporter) skip(ctx context.Context, step outpostv1.Step, detail string) {
	r.end(ctx, r.begin(step), nil, detail)
}

func (r *reporter) send(ev *outpostv1.NodeStepEvent) {
	r.seq++
	ev.Seq = r.seq
	ev.NodeId = r.nodeID
	ev.RolloutId = r.rolloutID
	r.emit(ev)
}

// stepName is the step's lower-case name: "before_install".
func stepName(s outpostv1.Step) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STEP_"))
}
