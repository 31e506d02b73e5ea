package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func analysisRollout(ms ...*outpostv1.Measurement) *outpostv1.Rollout {
	return &outpostv1.Rollout{
		Id: "r-1", App: "web", State: outpostv1.RolloutState_ROLLOUT_STATE_RUNNING,
		Stages: []*outpostv1.Stage{{
			Name: "canary", State: outpostv1.StageState_STAGE_STATE_BAKING,
			Batches:      []*outpostv1.Batch{{NodeIds: []string{"n1"}}},
			Analysis:     &outpostv1.PlanAnalysis{Count: 3, FailureLimit: 1, Measurements: []*outpostv1.PlanMeasurement{{Name: "error-rate"}}},
			Measurements: ms,
		}},
	}
}

var (
	okMeasurement = &outpostv1.Measurement{Name: "error-rate", Round: 0, Time: timestamppb.New(time.Unix(1e9, 0)),
		Verdict: outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_SUCCESS, Value: "0.01", Baseline: "0.01"}
	badMeasurement = &outpostv1.Measurement{Name: "error-rate", Round: 1, Time: timestamppb.New(time.Unix(1e9+60, 0)),
		Verdict: outpostv1.MeasurementVerdict_MEASUREMENT_VERDICT_FAILURE, Value: "0.4", Baseline: "0.01",
		Message: `success condition "result <= 1.2 * baseline" does not hold`, Acted: true}
)

func TestRolloutGetShowsAnalysis(t *testing.T) {
	var buf bytes.Buffer
	if err := writeRollout(&buf, analysisRollout(okMeasurement, badMeasurement)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"Analysis of stage canary: 2 of 3 round(s) every 1m, failure limit 1, inconclusive limit 0, on failure abort",
		"MEASUREMENT", "error-rate", "failure (acted)", "0.4", `"result <= 1.2 * baseline" does not hold`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRolloutWatchPrintsEachMeasurementOnce(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress()
	v := &textView{w: &buf, p: p, now: time.Now}
	for _, r := range []*outpostv1.Rollout{analysisRollout(), analysisRollout(okMeasurement), analysisRollout(okMeasurement), analysisRollout(okMeasurement, badMeasurement)} {
		p.apply(&outpostv1.WatchRolloutResponse{Event: &outpostv1.WatchRolloutResponse_Rollout{Rollout: proto.CloneOf(r)}}, v)
	}
	out := buf.String()
	if n := strings.Count(out, "stage canary analysis: error-rate round 1: success, value 0.01, baseline 0.01"); n != 1 {
		t.Errorf("the first measurement is printed %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "stage canary analysis: error-rate round 2: failure (acted), value 0.4, baseline 0.01 (success condition") {
		t.Errorf("no line for the failure:\n%s", out)
	}
}
