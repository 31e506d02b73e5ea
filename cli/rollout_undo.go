package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutUndoCommand() *command {
	return &command{
		name:  "undo",
		short: "return an app to an earlier revision",
		usage: "outpost rollout undo APP [--to-revision N] [--dry-run] [--watch]",
		long: `Creates a rollout, recorded as a new revision, that makes the release of an
earlier revision current again on the app's nodes. Nodes that still hold
that release (it was not pruned: see deploy.keep_releases) switch back
without any upload; the others get it uploaded. Without --to-revision it
returns to the newest succeeded revision before the current one (the
newest that succeeded) that has another release.

The earlier revision's plan is used, with its strategy, approval and
validation. For a blue/green app whose idle color still holds that
release, the undo only switches traffic back with the switch-back hook.

Examples:
  outpost rollout history billing-api
  outpost rollout undo billing-api --dry-run
  outpost rollout undo billing-api --to-revision 41 --watch`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			to := fs.Int64("to-revision", 0, "revision `N` to return to; 0 means the one before the current")
			dryRun := fs.Bool("dry-run", false, "show what the undo would run; create nothing")
			watch := fs.Bool("watch", false, "follow the rollout like rollout watch until it ends or waits for validation; exit 0 only if it succeeded")
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("rollout undo takes one APP")
				}
				if *to < 0 {
					return usagef("--to-revision must not be negative")
				}
				if *watch && *dryRun {
					return usagef("--watch and --dry-run do not go together")
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				resp, err := c.cp.CreateRollout(cctx, &outpostv1.CreateRolloutRequest{
					Undo: &outpostv1.RolloutUndo{App: args[0], ToRevision: *to}, DryRun: *dryRun, RequestId: newRequestID(),
				})
				if err != nil {
					return c.explain("undo "+args[0], err)
				}
				r := resp.GetRollout()
				if *dryRun {
					if structured(*out) {
						return writeProto(env.Stdout, *out, r)
					}
					return writeDryRun(env.Stdout, r)
				}
				created := fmt.Sprintf("rollout %s created: %s revision %d returns to revision %d (release %s), %s in %s",
					r.GetId(), r.GetApp(), r.GetRevision(), r.GetSourceRevision(), r.GetReleaseId(), rolloutstate.CountsText(rolloutCounts(r)), stagesText(r))
				if r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
					created += "; waiting for approval by someone else"
				}
				if !*watch {
					fmt.Fprintln(env.Stderr, created)
					fmt.Fprintln(env.Stdout, r.GetId())
					return nil
				}
				o := watchOptionsFor(env, *out)
				if o.structured() {
					fmt.Fprintln(env.Stderr, created)
				} else {
					fmt.Fprintln(env.Stdout, created)
				}
				return watchRollout(ctx, c, r.GetId(), o)
			}
		},
	}
}
