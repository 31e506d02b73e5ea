package cli

import (
	"context"
	"flag"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutAbortCommand() *command {
	var reason *string
	return rolloutVerb{
		name:  "abort",
		short: "stop a rollout for good",
		usage: "outpost rollout abort ROLLOUT_ID [--reason TEXT]",
		long: `Aborts a rollout: nothing new starts, nodes not started yet are SKIPPED,
and nodes already deploying finish, or roll back when their health check
fails; rollbacks already under way complete. The rollout shows RUNNING
with an "aborted" message until the last of them ends, then ABORTED.
Nodes that were deployed keep the new release: use 'outpost rollout undo'
to return them.

Example:
  outpost rollout abort r-00000042 --reason "wrong build"`,
		flags: func(fs *flag.FlagSet) func(context.Context, *client, string, string) (*outpostv1.Rollout, error) {
			reason = fs.String("reason", "", "why, for the rollout's message and the audit log")
			return func(ctx context.Context, c *client, id, rid string) (*outpostv1.Rollout, error) {
				resp, err := c.cp.AbortRollout(ctx, &outpostv1.AbortRolloutRequest{Id: id, Reason: *reason, RequestId: rid})
				return resp.GetRollout(), err
			}
		},
	}.command()
}
