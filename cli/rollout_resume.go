package cli

import (
	"context"
	"flag"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutResumeCommand() *command {
	return rolloutVerb{
		name:  "resume",
		short: "continue a paused rollout",
		usage: "outpost rollout resume ROLLOUT_ID",
		long: `Resumes a rollout paused with 'outpost rollout pause'. A rollout that waits
after a stage with pause: manual needs 'outpost rollout promote' instead.

Example:
  outpost rollout resume r-00000042`,
		flags: func(fs *flag.FlagSet) func(context.Context, *client, string, string) (*outpostv1.Rollout, error) {
			return func(ctx context.Context, c *client, id, rid string) (*outpostv1.Rollout, error) {
				resp, err := c.cp.ResumeRollout(ctx, &outpostv1.ResumeRolloutRequest{Id: id, RequestId: rid})
				return resp.GetRollout(), err
			}
		},
	}.command()
}
