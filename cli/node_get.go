package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func nodeGetCommand() *command {
	return &command{
		name:  "get",
		short: "show one node: address, datacenter, labels, user, pinned host keys",
		usage: "outpost node get NODE_ID [-o table|wide|json|yaml]",
		long: `Shows one node of the inventory as the control plane has it. The table
lists the pinned host keys by type; -o wide prints them whole. json and
yaml print the API's Node, as grpcurl does (GetNode).

Examples:
  outpost node get srv-000123
  outpost node get srv-000123 -o yaml`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("node get takes one NODE_ID")
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				resp, err := c.cp.GetNode(cctx, &outpostv1.GetNodeRequest{Id: args[0]})
				if err != nil {
					return c.explain("get node "+args[0], err)
				}
				if structured(*out) {
					return writeProto(env.Stdout, *out, resp.GetNode())
				}
				return writeNode(env.Stdout, resp.GetNode(), *out == "wide")
			}
		},
	}
}

// writeNode prints a node for people.
func writeNode(w io.Writer, n *outpostv1.Node, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "Node:\t%s\n", n.GetId())
	fmt.Fprintf(tw, "Address:\t%s\n", n.GetAddress())
	fmt.Fprintf(tw, "Datacenter:\t%s\n", n.GetDatacenter())
	fmt.Fprintf(tw, "User:\t%s\n", orDash(n.GetUser()))
	fmt.Fprintf(tw, "Labels:\t%s\n", orDash(labelsText(n.GetLabels())))
	keys := n.GetHostKeys()
	if len(keys) == 0 {
		fmt.Fprintf(tw, "Host keys:\t- (checked against the gateway's known_hosts)\n")
	}
	for i, k := range keys {
		label := ""
		if i == 0 {
			label = "Host keys:"
		}
		if !wide {
			// "ssh-ed25519 AAAA... comment": the type says which key.
			k, _, _ = strings.Cut(k, " ")
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, k)
	}
	return tw.Flush()
}
