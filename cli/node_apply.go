package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/outposthq/outpost/internal/plan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// applyChunk is how many nodes go in one ApplyNodes call, so an inventory
// of thousands of nodes stays well under gRPC's message size limit.
// ApplyNodes is idempotent by id, so chunking is safe to re-run.
const applyChunk = 500

func nodeApplyCommand() *command {
	return &command{
		name:  "apply",
		short: "create or update nodes from an inventory file",
		usage: "outpost node apply -f FILE",
		long: `Creates or updates the nodes listed in an inventory file, matched by id,
and prints how many were created, updated and already up to date. Running
it twice changes nothing the second time. Nodes missing from the file are
left alone (ids are never reused, so nothing is deleted implicitly).

The file (YAML):

  nodes:
    - id: srv-0001               # immutable, serial-like, never reused
      address: 10.20.0.11        # host or host:port, port 22 by default
      datacenter: seoul-1        # the gateway of this datacenter reaches it
      user: deploy               # SSH login user
      labels: {app: billing-api, tier: "1"}
      host_keys: []              # pinned keys; empty: the gateway's known_hosts decides

The file is checked before anything is sent; errors name the entry and
line ("nodes[3].address: ...").

Examples:
  outpost node apply -f deploy/examples/nodes.yaml
  generate-inventory | outpost node apply -f -`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			file := fs.String("f", "", "inventory `FILE` (YAML); - reads standard input")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("node apply takes no arguments (did you mean -f %s?)", args[0])
				}
				if *file == "" {
					return usagef("-f FILE is required")
				}
				data, err := readInput(*file, env.Stdin)
				if err != nil {
					return err
				}
				nodes, err := plan.ParseInventory(data)
				if err != nil {
					return fileErrors(*file, err)
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				var created, updated, unchanged int32
				for start := 0; start < len(nodes); start += applyChunk {
					chunk := nodes[start:min(start+applyChunk, len(nodes))]
					cctx, cancel := unary(ctx)
					resp, err := c.cp.ApplyNodes(cctx, &outpostv1.ApplyNodesRequest{Nodes: chunk, RequestId: newRequestID()})
					cancel()
					if err != nil {
						if start > 0 {
							fmt.Fprintf(env.Stderr, "%d of %d nodes were applied before the error; applying again is safe\n", start, len(nodes))
						}
						return c.explain("apply nodes", err)
					}
					created += resp.GetCreated()
					updated += resp.GetUpdated()
					unchanged += resp.GetUnchanged()
				}
				fmt.Fprintf(env.Stdout, "%d nodes: %d created, %d updated, %d unchanged\n", len(nodes), created, updated, unchanged)
				return nil
			}
		},
	}
}

// readInput reads a file, or standard input for "-".
func readInput(name string, stdin io.Reader) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(name)
}

// fileErrors lists the problems plan found in a file, one per line, each
// prefixed with the file name the way compilers do.
func fileErrors(file string, err error) error {
	fes := plan.FieldErrors(err)
	if len(fes) == 0 {
		return fmt.Errorf("%s: %w", file, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s has %d problem(s):", file, len(fes))
	for _, fe := range fes {
		fmt.Fprintf(&b, "\n  %s", fe.Error())
	}
	return fmt.Errorf("%s", b.String())
}
