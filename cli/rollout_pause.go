package cli

import (
	"context"
	"flag"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutPauseCommand() *command {
	var reason *string
	return rolloutVerb{
		name:  "pause",
		short: "stop a running rollout from starting nodes",
		usage: "outpost rollout pause ROLLOUT_ID [--reason TEXT]",
		long: `Pauses a running rollout: no node starts until 'outpost rollout resume'.
Nodes already deploying finish (or roll back). A stage that is baking stops
re-checking health; its bake time keeps running and it checks again on
resume. The pause survives control plane restarts.

Examples:
  outpost rollout pause r-00000042 --reason "waiting for the DBA"
  outpost rollout resume r-00000042`,
		flags: func(fs *flag.FlagSet) func(context.Context, *client, string, string) (*outpostv1.Rollout, error) {
			reason = fs.String("reason", "", "why, for the rollout's message and the audit log")
			return func(ctx context.Context, c *client, id, rid string) (*outpostv1.Rollout, error) {
				resp, err := c.cp.PauseRollout(ctx, &outpostv1.PauseRolloutRequest{Id: id, Reason: *reason, RequestId: rid})
				return resp.GetRollout(), err
			}
		},
	}.command()
}
