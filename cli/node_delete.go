package cli

import (
	"context"
	"flag"
	"fmt"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func nodeDeleteCommand() *command {
	return &command{
		name:  "delete",
		short: "remove nodes from the inventory (admin)",
		usage: "outpost node delete NODE_ID...",
		long: `Removes each node from the inventory and prints what it deleted. Like
kubectl delete, it does not ask first: the node's entry in your inventory
file is the record, and outpost node apply puts it back. A rollout that
already selected a deleted node fails that node when it reaches it. Nothing
is done on the server itself.

Nodes are deleted in order; the first that fails stops the rest (exit 1),
and those already deleted stay deleted.

Examples:
  outpost node delete srv-000123
  outpost node delete srv-000123 srv-000124`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			return func(ctx context.Context, args []string) error {
				if len(args) == 0 {
					return usagef("node delete takes one or more NODE_IDs")
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				for _, id := range args {
					cctx, cancel := unary(ctx)
					_, err := c.cp.DeleteNode(cctx, &outpostv1.DeleteNodeRequest{Id: id, RequestId: newRequestID()})
					cancel()
					if err != nil {
						return c.explain("delete node "+id, err)
					}
					fmt.Fprintf(env.Stdout, "node %s deleted\n", id)
				}
				return nil
			}
		},
	}
}
