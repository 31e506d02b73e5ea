package cli

import (
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestRolloutList(t *testing.T) {
	f := startFake(t)
	for i, state := range []outpostv1.RolloutState{
		outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED,
		outpostv1.RolloutState_ROLLOUT_STATE_ABORTED,
		outpostv1.RolloutState_ROLLOUT_STATE_RUNNING,
	} {
		r := sampleRollout()
		r.Id = []string{"r-000001", "r-000002", "r-000003"}[i]
		r.Revision = int64(i + 1)
		r.State = state
		if i == 1 {
			r.App = "other"
		}
		f.addRollout(r)
	}
	tests := []struct {
		args []string
		want string
	}{
		// Three rollouts with the fake's two-item pages: the verb follows the token.
		{[]string{"rollout", "list"}, `ID        APP          REVISION  RELEASE      STATE      NODES                   CREATED
r-000003  billing-api  3         r7-1a2b3c4d  RUNNING    4/15 ok, 1 rolled back  2026-05-04T09:30:00Z
r-000002  other        2         r7-1a2b3c4d  ABORTED    4/15 ok, 1 rolled back  2026-05-04T09:30:00Z
r-000001  billing-api  1         r7-1a2b3c4d  SUCCEEDED  4/15 ok, 1 rolled back  2026-05-04T09:30:00Z
`},
		{[]string{"rollout", "list", "--app", "billing-api", "--limit", "1"}, `ID        APP          REVISION  RELEASE      STATE    NODES                   CREATED
r-000003  billing-api  3         r7-1a2b3c4d  RUNNING  4/15 ok, 1 rolled back  2026-05-04T09:30:00Z
`},
	}
	for _, tt := range tests {
		code, out, errOut := f.run(t, tt.args...)
		if code != 0 || out != tt.want {
			t.Errorf("outpost %q: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", tt.args, code, errOut, out, tt.want)
		}
	}
	code, out, _ := f.run(t, "rollout", "list", "--app", "other", "-o", "json")
	if code != 0 || !strings.HasPrefix(out, "{\n  \"rollouts\": [\n    {\n      \"id\": \"r-000002\"") {
		t.Errorf("rollout list -o json: exit %d, stdout %q", code, out)
	}
}
