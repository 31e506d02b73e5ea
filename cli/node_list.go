package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/outposthq/outpost/internal/plan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// listPageSize is the page size the list verbs ask for: large pages, few round trips.
const listPageSize = 500

func nodeListCommand() *command {
	return &command{
		name:  "list",
		short: "list nodes, optionally filtered by labels or datacenter",
		usage: "outpost node list [-l key=value,...] [--datacenter NAME] [-o table|wide|json|yaml]",
		long: `Lists every node in the inventory, sorted by id, fetching all pages.

The table shows ID, ADDRESS, DATACENTER and LABELS. -o wide adds the
SSH user, the number of pinned host keys, DESIRED (the release Outpost
last activated), OBSERVED (what the last node verify saw), DRIFT and
OBSERVED AT. json and yaml print the API's ListNodesResponse
({"nodes": [...]}), as grpcurl does.

Examples:
  outpost node list
  outpost node list -l app=billing-api,tier=1
  outpost node list --datacenter seoul-1 -o yaml`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			selector := fs.String("l", "", "label selector `key=value[,key=value]`: only nodes with all these labels")
			dc := fs.String("datacenter", "", "only nodes of this datacenter")
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("node list takes no arguments")
				}
				sel, err := plan.ParseLabelSelector(*selector)
				if err != nil {
					return usagef("-l: %v", err)
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				nodes, err := listNodes(ctx, c, plan.FormatLabelSelector(sel), *dc)
				if err != nil {
					return err
				}
				if structured(*out) {
					return writeProto(env.Stdout, *out, &outpostv1.ListNodesResponse{Nodes: nodes})
				}
				if len(nodes) == 0 {
					fmt.Fprintln(env.Stderr, "no nodes")
					return nil
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
				wide := *out == "wide"
				head := "ID\tADDRESS\tDATACENTER\tLABELS"
				if wide {
					head += "\tUSER\tHOST KEYS\tDESIRED\tOBSERVED\tDRIFT\tOBSERVED AT"
				}
				fmt.Fprintln(tw, head)
				for _, n := range nodes {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s", n.GetId(), n.GetAddress(), n.GetDatacenter(), labelsText(n.GetLabels()))
					if st := n.GetStatus(); wide {
						fmt.Fprintf(tw, "\t%s\t%d\t%s\t%s\t%s\t%s", orDash(n.GetUser()), len(n.GetHostKeys()),
							orDash(st.GetDesired().GetRelease()), orDash(observedText(st.GetObservation())),
							orDash(driftText(st)), orDash(observedAtText(st)))
					}
					fmt.Fprintln(tw)
				}
				return tw.Flush()
			}
		},
	}
}

// listNodes fetches every page of ListNodes.
func listNodes(ctx context.Context, c *client, selector, dc string) ([]*outpostv1.Node, error) {
	var nodes []*outpostv1.Node
	err := listPages(ctx, c, "list nodes", func(ctx context.Context, token string) (*outpostv1.ListNodesResponse, error) {
		return c.cp.ListNodes(ctx, &outpostv1.ListNodesRequest{PageSize: listPageSize, LabelSelector: selector, Datacenter: dc, PageToken: token})
	}, func(resp *outpostv1.ListNodesResponse) bool {
		nodes = append(nodes, resp.GetNodes()...)
		return true
	})
	if err != nil {
		return nil, err
	}
	return nodes, nil
}
