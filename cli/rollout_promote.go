package cli

import (
	"context"
	"flag"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutPromoteCommand() *command {
	var stage *string
	return rolloutVerb{
		name:  "promote",
		short: "move a rollout past the stage that waits (manual pause or bake)",
		usage: "outpost rollout promote ROLLOUT_ID [--stage NAME]",
		long: `Promotes the stage a rollout waits on: one that finished with pause: manual
(the rollout is PAUSED, the stage WAITING_PROMOTION), or one that is
baking (the rest of its bake is skipped). The next stage starts.

--stage names the stage you expect to be waiting; if another one waits,
nothing happens, so a promote typed late cannot skip a stage.

Examples:
  outpost rollout promote r-00000042
  outpost rollout promote r-00000042 --stage canary`,
		flags: func(fs *flag.FlagSet) func(context.Context, *client, string, string) (*outpostv1.Rollout, error) {
			stage = fs.String("stage", "", "the stage expected to be waiting; empty means whichever waits")
			return func(ctx context.Context, c *client, id, rid string) (*outpostv1.Rollout, error) {
				resp, err := c.cp.PromoteRollout(ctx, &outpostv1.PromoteRolloutRequest{Id: id, Stage: *stage, RequestId: rid})
				return resp.GetRollout(), err
			}
		},
	}.command()
}
