package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutListCommand() *command {
	return &command{
		name:  "list",
		short: "list rollouts, newest first",
		usage: "outpost rollout list [--app APP] [--limit N] [-o table|wide|json|yaml]",
		long: `Lists rollouts, newest first: id, app, revision, release, state, node
counts and creation time (UTC).

Examples:
  outpost rollout list
  outpost rollout list --app billing-api --limit 10
  outpost rollout list -o json | jq -r '.rollouts[] | select(.state=="ROLLOUT_STATE_ABORTED") | .id'`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			app := fs.String("app", "", "only rollouts of this app")
			limit := fs.Int("limit", 50, "show at most `N` rollouts; 0 means all")
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("rollout list takes no arguments")
				}
				if *limit < 0 {
					return usagef("--limit must not be negative")
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				rollouts, err := listRollouts(ctx, c, *app, *limit)
				if err != nil {
					return err
				}
				if structured(*out) {
					return writeProto(env.Stdout, *out, &outpostv1.ListRolloutsResponse{Rollouts: rollouts})
				}
				if len(rollouts) == 0 {
					fmt.Fprintln(env.Stderr, "no rollouts")
					return nil
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
				wide := *out == "wide"
				header := "ID\tAPP\tREVISION\tRELEASE\tSTATE\tNODES\tCREATED"
				if wide {
					header += "\tENVIRONMENT\tCHANGE\tREQUESTER\tUPDATED"
				}
				fmt.Fprintln(tw, header)
				for _, r := range rollouts {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s", r.GetId(), r.GetApp(), r.GetRevision(), r.GetReleaseId(),
						rolloutstate.Name(r.GetState()), nodesColumn(rolloutCounts(r)), timeText(r.GetCreateTime()))
					if wide {
						fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s", orDash(r.GetPlan().GetEnvironment()), orDash(r.GetPlan().GetChangeId()),
							orDash(r.GetRequester()), timeText(r.GetUpdateTime()))
					}
					fmt.Fprintln(tw)
				}
				return tw.Flush()
			}
		},
	}
}

// nodesColumn is a compact node summary for one table cell: "18/20 ok, 2 failed".
func nodesColumn(c *outpostv1.NodeCounts) string {
	s := fmt.Sprintf("%d/%d ok", c.GetSucceeded(), c.GetTotal())
	if f := c.GetFailed() + c.GetRollbackFailed(); f > 0 {
		s += fmt.Sprintf(", %d failed", f)
	}
	if c.GetRolledBack() > 0 {
		s += fmt.Sprintf(", %d rolled back", c.GetRolledBack())
	}
	return s
}

// listRollouts fetches pages of ListRollouts until limit rollouts (0: all).
func listRollouts(ctx context.Context, c *client, app string, limit int) ([]*outpostv1.Rollout, error) {
	size := int32(listPageSize)
	if limit > 0 && limit < listPageSize {
		size = int32(limit)
	}
	var out []*outpostv1.Rollout
	err := listPages(ctx, c, "list rollouts", func(ctx context.Context, token string) (*outpostv1.ListRolloutsResponse, error) {
		return c.cp.ListRollouts(ctx, &outpostv1.ListRolloutsRequest{PageSize: size, App: app, PageToken: token})
	}, func(resp *outpostv1.ListRolloutsResponse) bool {
		out = append(out, resp.GetRollouts()...)
		return limit <= 0 || len(out) < limit
	})
	if err != nil {
		return nil, err
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
