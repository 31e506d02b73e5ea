package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func gatewayListCommand() *command {
	return &command{
		name:  "list",
		short: "list the gateways connected to the control plane",
		usage: "outpost gateway list [--datacenter NAME] [-o table|wide|json|yaml]",
		long: `Lists the gateways connected to the control plane now, sorted by name:
name, datacenter, version, when the current connection began, and how
many nodes each is deploying. -o wide adds each gateway's capacity (the
most nodes it deploys at once). A gateway that is not listed is not
connected: its datacenter's nodes wait until one is.

Examples:
  outpost gateway list
  outpost gateway list --datacenter seoul-1 -o json`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			dc := fs.String("datacenter", "", "only gateways of this datacenter")
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("gateway list takes no arguments")
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				var gws []*outpostv1.Gateway
				err = listPages(ctx, c, "list gateways", func(ctx context.Context, token string) (*outpostv1.ListGatewaysResponse, error) {
					return c.cp.ListGateways(ctx, &outpostv1.ListGatewaysRequest{PageSize: listPageSize, Datacenter: *dc, PageToken: token})
				}, func(resp *outpostv1.ListGatewaysResponse) bool {
					gws = append(gws, resp.GetGateways()...)
					return true
				})
				if err != nil {
					return err
				}
				if structured(*out) {
					return writeProto(env.Stdout, *out, &outpostv1.ListGatewaysResponse{Gateways: gws})
				}
				if len(gws) == 0 {
					fmt.Fprintln(env.Stderr, "no gateways connected")
					return nil
				}
				wide := *out == "wide"
				tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
				header := "NAME\tDATACENTER\tVERSION\tCONNECTED SINCE\tNODES IN FLIGHT"
				if wide {
					header += "\tCAPACITY"
				}
				fmt.Fprintln(tw, header)
				now := time.Now()
				for _, g := range gws {
					since := timeText(g.GetConnectTime())
					if g.GetConnectTime() != nil {
						since += " (" + now.Sub(g.GetConnectTime().AsTime()).Truncate(time.Second).String() + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d", g.GetName(), g.GetDatacenter(), orDash(g.GetVersion()), since, g.GetNodesInFlight())
					if wide {
						fmt.Fprintf(tw, "\t%d", g.GetCapacity())
					}
					fmt.Fprintln(tw)
				}
				return tw.Flush()
			}
		},
	}
}
