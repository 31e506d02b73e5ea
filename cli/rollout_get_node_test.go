package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func failedNode() *outpostv1.RolloutNode {
	return &outpostv1.RolloutNode{
		RolloutId: "r-000042", NodeId: "srv-0007", Datacenter: "fra1", Stage: "rest", Batch: 1,
		State: outpostv1.NodeState_NODE_STATE_ROLLED_BACK, Step: outpostv1.Step_STEP_HEALTH,
		Error: "health check: 503", Gateway: "gw-fra1", Release: "r6-0a1b2c3d",
		TraceId: "0af7651916cd43dd8448eb211c80319c", UpdateTime: ts(0),
	}
}

func TestWriteRolloutNode(t *testing.T) {
	var b bytes.Buffer
	if err := writeRolloutNode(&b, failedNode()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Node:    srv-0007 (fra1)", "Stage:   rest, batch 2", "State:   ROLLED_BACK", "Step:    health",
		"Error:   health check: 503", "Trace:   0af7651916cd43dd8448eb211c80319c"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

// The JSON of a node's record carries traceId (the API's JSON), for `jq -r .traceId`.
func TestRolloutNodeJSONHasTraceID(t *testing.T) {
	var b bytes.Buffer
	if err := writeProto(&b, "json", failedNode()); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["traceId"] != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("traceId = %v in %s", got["traceId"], b.String())
	}
}
