package cli

import (
	"context"
	"flag"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutRetryCommand() *command {
	var nodes stringList
	return rolloutVerb{
		name:  "retry",
		short: "deploy the failed nodes of a rollout again",
		usage: "outpost rollout retry ROLLOUT_ID [--node NODE_ID]...",
		long: `Runs the failed nodes of a rollout that ended (SUCCEEDED with failures
within its budget, ABORTED, or FAILED_ROLLED_BACK) again, and only them:
every FAILED and ROLLED_BACK node, or the nodes named with --node (which
may also be ROLLBACK_FAILED). They run stage by stage in their batches.
Nodes skipped by an abort are not retried; a rollout that still has some
ends ABORTED. Only the newest rollout of an app can be retried, and not
while another rollout of the app runs.

Examples:
  outpost rollout retry r-00000042
  outpost rollout retry r-00000042 --node srv-000123 --node srv-000124
  outpost rollout retry r-00000042 && outpost rollout watch r-00000042`,
		flags: func(fs *flag.FlagSet) func(context.Context, *client, string, string) (*outpostv1.Rollout, error) {
			fs.Var(&nodes, "node", "retry only this `NODE_ID` (repeatable)")
			return func(ctx context.Context, c *client, id, rid string) (*outpostv1.Rollout, error) {
				resp, err := c.cp.RetryRollout(ctx, &outpostv1.RetryRolloutRequest{Id: id, NodeIds: nodes, RequestId: rid})
				return resp.GetRollout(), err
			}
		},
	}.command()
}
