package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutHistoryCommand() *command {
	return &command{
		name:  "history",
		short: "list an app's revisions, newest first",
		usage: "outpost rollout history APP [--limit N] [-o table|wide|json|yaml]",
		long: `Lists the revisions of an app, newest first: each rollout of the app is one
revision, undos included. The current revision (the newest that succeeded)
is marked; 'outpost rollout undo APP --to-revision N' returns to revision N.

Examples:
  outpost rollout history billing-api
  outpost rollout history billing-api --limit 5 -o json`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			limit := fs.Int("limit", 20, "show at most `N` revisions; 0 means all")
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("rollout history takes one APP")
				}
				if *limit < 0 {
					return usagef("--limit must not be negative")
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				revs, err := listRevisions(ctx, c, args[0], *limit)
				if err != nil {
					return err
				}
				if structured(*out) {
					return writeProto(env.Stdout, *out, &outpostv1.ListRevisionsResponse{Revisions: revs})
				}
				if len(revs) == 0 {
					fmt.Fprintf(env.Stderr, "%s has no revisions\n", args[0])
					return nil
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "REVISION\tROLLOUT\tRELEASE\tSTATE\tCREATED\tREQUESTER\tNOTE")
				current := false
				for _, rv := range revs {
					var note []string
					if !current && rolloutstate.Deployed(rv.GetState()) {
						current = true
						note = append(note, "current")
					}
					if rv.GetSourceRevision() > 0 {
						note = append(note, fmt.Sprintf("undo to %d", rv.GetSourceRevision()))
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", rv.GetRevision(), rv.GetRolloutId(), rv.GetReleaseId(),
						rolloutstate.Name(rv.GetState()), timeText(rv.GetCreateTime()), rv.GetRequester(), joinNote(note))
				}
				return tw.Flush()
			}
		},
	}
}

func joinNote(parts []string) string {
	out := ""
	for i, p := range parts {
		if i > 0 {
			out += ", "
		}
		out += p
	}
	return out
}

// listRevisions pages through ListRevisions until limit (0: all).
func listRevisions(ctx context.Context, c *client, app string, limit int) ([]*outpostv1.Revision, error) {
	var out []*outpostv1.Revision
	err := listPages(ctx, c, "list revisions of "+app, func(ctx context.Context, token string) (*outpostv1.ListRevisionsResponse, error) {
		size := 200
		if limit > 0 {
			size = min(size, limit-len(out))
		}
		return c.cp.ListRevisions(ctx, &outpostv1.ListRevisionsRequest{App: app, PageSize: int32(size), PageToken: token})
	}, func(resp *outpostv1.ListRevisionsResponse) bool {
		out = append(out, resp.GetRevisions()...)
		return limit <= 0 || len(out) < limit
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
