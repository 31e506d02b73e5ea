package cli

import (
	"context"
	"flag"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutValidateCommand() *command {
	var accept, reject *bool
	var comment *string
	return rolloutVerb{
		name:  "validate",
		short: "accept or reject a rollout waiting for validation",
		usage: "outpost rollout validate ROLLOUT_ID --accept|--reject [--comment TEXT]",
		long: `Decides on a rollout in PENDING_VALIDATION (its plan says validation:
{required: true} and every stage succeeded). --accept makes it VALIDATED.
--reject rolls the app back to its previous revision with a new undo
rollout and ends this one REJECTED; the comment is the reason.

Examples:
  outpost rollout validate r-00000042 --accept --comment "smoke tests green"
  outpost rollout validate r-00000042 --reject --comment "checkout broken"`,
		check: func() error {
			if *accept == *reject {
				return usagef("give exactly one of --accept and --reject")
			}
			return nil
		},
		flags: func(fs *flag.FlagSet) func(context.Context, *client, string, string) (*outpostv1.Rollout, error) {
			accept = fs.Bool("accept", false, "accept the rollout: VALIDATED")
			reject = fs.Bool("reject", false, "reject the rollout: roll the app back, REJECTED")
			comment = fs.String("comment", "", "comment (the reason, with --reject) for the audit log")
			return func(ctx context.Context, c *client, id, rid string) (*outpostv1.Rollout, error) {
				if *reject {
					resp, err := c.cp.RejectRollout(ctx, &outpostv1.RejectRolloutRequest{Id: id, Reason: *comment, RequestId: rid})
					return resp.GetRollout(), err
				}
				resp, err := c.cp.ValidateRollout(ctx, &outpostv1.ValidateRolloutRequest{Id: id, Comment: *comment, RequestId: rid})
				return resp.GetRollout(), err
			}
		},
	}.command()
}
