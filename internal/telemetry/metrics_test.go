package telemetry

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestLabelValues(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{NodeStateValue(outpostv1.NodeState_NODE_STATE_ROLLED_BACK), "rolled_back"},
		{NodeStateValue(outpostv1.NodeState_NODE_STATE_SUCCEEDED), "succeeded"},
		{NodeStateValue(outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED), "rollback_failed"},
		{RolloutStateValue(outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL), "pending_approval"},
		{RolloutStateValue(outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION), "pending_validation"},
		{RolloutStateValue(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING), "running"},
		{StepValue(outpostv1.Step_STEP_BEFORE_INSTALL), "before_install"},
		{StepPhaseValue(outpostv1.StepPhase_STEP_PHASE_FAILED), "failed"},
	} {
		if tc.got != tc.want {
			t.Errorf("label value %q, want %q", tc.got, tc.want)
		}
	}
}

// TestBucketBoundsReadable scrapes the shared histograms and checks that
// every `le` is a short decimal, not float noise like 3.6450000000000005,
// and that the bounds are the literal ones, in order.
func TestBucketBoundsReadable(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewNodeMetrics(reg, "test")
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveStep(&outpostv1.NodeStepEvent{Step: outpostv1.Step_STEP_UPLOAD, Phase: outpostv1.StepPhase_STEP_PHASE_SUCCEEDED, Duration: durationpb.New(1500 * time.Millisecond)})
	m.ObserveStep(&outpostv1.NodeStepEvent{Step: outpostv1.Step_STEP_UPLOAD, Phase: outpostv1.StepPhase_STEP_PHASE_STARTED, Duration: durationpb.New(time.Second)})
	m.ObserveDeployment("web", "dc-a", outpostv1.NodeState_NODE_STATE_ROLLED_BACK, 12)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			t.Fatal(err)
		}
	}
	text := buf.String()
	les := regexp.MustCompile(`le="([^"]*)"`).FindAllStringSubmatch(text, -1)
	if len(les) == 0 {
		t.Fatalf("no buckets in:\n%s", text)
	}
	for _, le := range les {
		if v := le[1]; len(strings.TrimLeft(strings.ReplaceAll(v, ".", ""), "0")) > 4 {
			t.Errorf("bucket bound le=%q is not a short decimal", v)
		}
	}
	for _, want := range []string{
		`outpost_step_duration_seconds_bucket{result="succeeded",step="upload",le="2.5"} 1`,
		`outpost_step_duration_seconds_count{result="succeeded",step="upload"} 1`,
		`outpost_node_deployments_total{app="web",datacenter="dc-a",state="rolled_back"} 1`,
		`outpost_node_deployment_duration_seconds_bucket{app="web",datacenter="dc-a",state="rolled_back",le="30"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %s; got:\n%s", want, text)
		}
	}
	if strings.Contains(text, `result="started"`) {
		t.Errorf("a started step was observed:\n%s", text)
	}
	for _, b := range [][]float64{StepBuckets, NodeDeploymentBuckets} {
		for i := 1; i < len(b); i++ {
			if b[i] <= b[i-1] {
				t.Errorf("buckets %v are not increasing at %d", b, i)
			}
		}
	}
}
