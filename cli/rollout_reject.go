package cli

import (
	"context"
	"flag"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutRejectCommand() *command {
	var reason *string
	return rolloutVerb{
		name:  "reject",
		short: "reject a rollout waiting for approval or validation",
		usage: "outpost rollout reject ROLLOUT_ID [--reason TEXT]",
		long: `Rejects a rollout. Waiting for approval: it ends REJECTED and nothing is
deployed. Waiting for validation (same as 'outpost rollout validate ID
--reject'): the app is rolled back to its previous revision by a new undo
rollout, approved by you, and the rejected rollout ends REJECTED with a
message naming the undo.

Example:
  outpost rollout reject r-00000042 --reason "not in the change window"`,
		flags: func(fs *flag.FlagSet) func(context.Context, *client, string, string) (*outpostv1.Rollout, error) {
			reason = fs.String("reason", "", "why, for the rollout's message and the audit log")
			return func(ctx context.Context, c *client, id, rid string) (*outpostv1.Rollout, error) {
				resp, err := c.cp.RejectRollout(ctx, &outpostv1.RejectRolloutRequest{Id: id, Reason: *reason, RequestId: rid})
				return resp.GetRollout(), err
			}
		},
	}.command()
}
