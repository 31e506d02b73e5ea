package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func nodeTrustCommand() *command {
	return &command{
		name:  "trust",
		short: "pin the host key a node presented in its last scan (admin)",
		usage: "outpost node trust ID --fingerprint SHA256:...",
		long: `Pins the key that outpost node scan read from the node in the last hour,
if its fingerprint is the one given: gateways then accept that key, and
only that key (one per key type), from the node. A different fingerprint,
or no recent scan, pins nothing. The node keeps the key when the inventory
is applied again without host keys, until its address changes.

Examples:
  outpost node trust srv-000123 --fingerprint SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			fp := fs.String("fingerprint", "", "the `SHA256:...` fingerprint you checked (required)")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("node trust takes one node id")
				}
				if !strings.HasPrefix(*fp, "SHA256:") {
					return usagef("--fingerprint SHA256:... is required (outpost node scan %s shows it)", args[0])
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				resp, err := c.cp.TrustNodeHostKey(cctx, &outpostv1.TrustNodeHostKeyRequest{Id: args[0], Fingerprint: *fp, RequestId: newRequestID()})
				if err != nil {
					return c.explain("trust the host key of node "+args[0], err)
				}
				fmt.Fprintf(env.Stdout, "node %s: pinned %s (%d host keys pinned)\n", args[0], *fp, len(resp.GetNode().GetHostKeys()))
				return nil
			}
		},
	}
}
