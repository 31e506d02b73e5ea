package cli

import (
	"context"
	"flag"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutApproveCommand() *command {
	var comment *string
	return rolloutVerb{
		name:  "approve",
		short: "approve a rollout waiting for approval (four eyes)",
		usage: "outpost rollout approve ROLLOUT_ID [--comment TEXT]",
		long: `Approves a rollout in PENDING_APPROVAL (its plan says approval: {required:
true}, or its environment is protected). The approver must be someone
other than the requester and hold the approver or admin role. The rollout
then starts as soon as no earlier rollout of its app runs; an approval not
used within the control plane's approval TTL (24h by default) expires and
the rollout waits for approval again.

Example:
  outpost rollout approve r-00000042 --comment "CAB approved SR-2026-1142"`,
		flags: func(fs *flag.FlagSet) func(context.Context, *client, string, string) (*outpostv1.Rollout, error) {
			comment = fs.String("comment", "", "comment for the audit log")
			return func(ctx context.Context, c *client, id, rid string) (*outpostv1.Rollout, error) {
				resp, err := c.cp.ApproveRollout(ctx, &outpostv1.ApproveRolloutRequest{Id: id, Comment: *comment, RequestId: rid})
				return resp.GetRollout(), err
			}
		},
	}.command()
}
