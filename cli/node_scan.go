package cli

import (
	"context"
	"flag"
	"fmt"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func nodeScanCommand() *command {
	return &command{
		name:  "scan",
		short: "show the SSH host key a node presents, read through its gateway (admin)",
		usage: "outpost node scan ID [-o table|wide|json|yaml]",
		long: `Asks a gateway of the node's datacenter to connect to the node's SSH port
and report the host key it presents, without logging in, and shows the
key's type and SHA-256 fingerprint. Nothing is trusted: compare the
fingerprint with the host's own, read from its console or your
provisioning records (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub),
then pin it with outpost node trust. Nodes without pinned keys are checked
against the gateway's known_hosts instead.

Examples:
  outpost node scan srv-000123
  outpost node scan srv-000123 -o json`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("node scan takes one node id")
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				resp, err := c.cp.ScanNodeHostKey(cctx, &outpostv1.ScanNodeHostKeyRequest{Id: args[0]})
				if err != nil {
					return c.explain("scan node "+args[0], err)
				}
				sc := resp.GetScan()
				if structured(*out) {
					return writeProto(env.Stdout, *out, sc)
				}
				fmt.Fprintf(env.Stdout, "node %s at %s presents, through gateway %s:\n  %s %s\n", sc.GetNodeId(), sc.GetAddress(), sc.GetGateway(), sc.GetKeyType(), sc.GetFingerprint())
				if sc.GetPinned() {
					fmt.Fprintln(env.Stdout, "This key is pinned on the node already.")
					return nil
				}
				fmt.Fprintf(env.Stdout, "Not pinned. If it is the host's own key, pin it:\n  outpost node trust %s --fingerprint %s\n", sc.GetNodeId(), sc.GetFingerprint())
				return nil
			}
		},
	}
}
