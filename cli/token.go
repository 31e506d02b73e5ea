package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// tokenCommand groups the join token verbs.
func tokenCommand() *command {
	return &command{
		name:  "token",
		short: "create, list and revoke gateway join tokens (admin)",
		usage: "outpost token COMMAND [flags]",
		long: `A join token lets one gateway get its client certificate, bound to the
token's datacenter, once: it is single-use and short-lived. The control
plane stores only its hash; the token is shown once, when created.`,
		sub: []*command{
			tokenCreateCommand(),
			tokenListCommand(),
			tokenRevokeCommand(),
		},
	}
}

func tokenCreateCommand() *command {
	return &command{
		name:  "create",
		short: "create a single-use join token for a gateway of one datacenter",
		usage: "outpost token create --datacenter NAME [--gateway-name NAME] [--ttl 30m]",
		long: `Creates a join token and prints it, alone on standard output, so it can
be captured; what it is for goes to standard error. The token is secret
until used: hand it to the gateway's operator over a safe channel, and
start the gateway with --join-token-file (or $OUTPOST_JOIN_TOKEN).

With --gateway-name only a gateway of that name may use it, and a gateway
of that name that already has a certificate is replaced (its old
certificates are revoked). Without it, any name that has no valid
certificate may join.

Examples:
  outpost token create --datacenter seoul-1 --ttl 30m
  outpost token create --datacenter seoul-1 --gateway-name gw-seoul-1 > join-token`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			dc := fs.String("datacenter", "", "`name` of the datacenter the joining gateway will serve (required)")
			name := fs.String("gateway-name", "", "only a gateway of this `name` may use the token")
			ttl := fs.Duration("ttl", 30*time.Minute, "how long the token may be used (at most 168h)")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("token create takes no arguments")
				}
				if *dc == "" {
					return usagef("--datacenter is required")
				}
				if *ttl <= 0 {
					return usagef("--ttl must be positive")
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				resp, err := c.adm.CreateJoinToken(cctx, &outpostv1.CreateJoinTokenRequest{
					Datacenter: *dc, GatewayName: *name, Ttl: durationpb.New(*ttl),
				})
				if err != nil {
					return c.explain("create join token", err)
				}
				jt := resp.GetJoinToken()
				who := "any gateway name"
				if jt.GetGatewayName() != "" {
					who = "gateway " + jt.GetGatewayName()
				}
				fmt.Fprintln(env.Stdout, resp.GetToken())
				fmt.Fprintf(env.Stderr, "join token %s for %s in datacenter %s, single use, expires %s\n",
					jt.GetId(), who, jt.GetDatacenter(), jt.GetExpireTime().AsTime().Local().Format(time.RFC3339))
				nameFlag := ""
				if jt.GetGatewayName() != "" {
					nameFlag = " --name " + jt.GetGatewayName()
				}
				fmt.Fprintf(env.Stderr, "start the gateway with: outpost gateway --controlplane %s%s --join-token-file FILE --ssh-key ... --known-hosts ...\n", c.addr, nameFlag)
				return nil
			}
		},
	}
}

func tokenListCommand() *command {
	return &command{
		name:  "list",
		short: "list join tokens (never their secrets)",
		usage: "outpost token list [-o table|wide|json|yaml]",
		long: `Lists join tokens that are still kept (used, revoked and expired ones
for a day), sorted by id: ID, DATACENTER, GATEWAY (the name the token is
for, or *), STATE, EXPIRES, CREATOR and USED BY.

Examples:
  outpost token list`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("token list takes no arguments")
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				var all []*outpostv1.JoinToken
				err = listPages(ctx, c, "list join tokens", func(ctx context.Context, token string) (*outpostv1.ListJoinTokensResponse, error) {
					return c.adm.ListJoinTokens(ctx, &outpostv1.ListJoinTokensRequest{PageSize: listPageSize, PageToken: token})
				}, func(resp *outpostv1.ListJoinTokensResponse) bool {
					all = append(all, resp.GetJoinTokens()...)
					return true
				})
				if err != nil {
					return err
				}
				if structured(*out) {
					return writeProto(env.Stdout, *out, &outpostv1.ListJoinTokensResponse{JoinTokens: all})
				}
				if len(all) == 0 {
					fmt.Fprintln(env.Stderr, "no join tokens")
					return nil
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tDATACENTER\tGATEWAY\tSTATE\tEXPIRES\tCREATOR\tUSED BY")
				for _, t := range all {
					gw := t.GetGatewayName()
					if gw == "" {
						gw = "*"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetId(), t.GetDatacenter(), gw, tokenState(t.GetState()),
						t.GetExpireTime().AsTime().Local().Format(time.RFC3339), t.GetCreator(), orDash(t.GetUsedBy()))
				}
				return tw.Flush()
			}
		},
	}
}

func tokenRevokeCommand() *command {
	return &command{
		name:  "revoke",
		short: "make an unused join token unusable",
		usage: "outpost token revoke ID",
		long: `Revokes a join token by the id that token create and token list show.
Revoking a used token changes nothing; to cut off the gateway that used
it, revoke its certificates: outpost user revoke --gateway NAME.

Examples:
  outpost token revoke 3f2a9c0d1e4b5a67`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("token revoke takes one token id")
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				resp, err := c.adm.RevokeJoinToken(cctx, &outpostv1.RevokeJoinTokenRequest{Id: args[0]})
				if err != nil {
					return c.explain("revoke join token "+args[0], err)
				}
				fmt.Fprintf(env.Stdout, "join token %s: %s\n", resp.GetJoinToken().GetId(), tokenState(resp.GetJoinToken().GetState()))
				return nil
			}
		},
	}
}

// tokenState names a join token state for people.
func tokenState(s outpostv1.JoinTokenState) string {
	switch s {
	case outpostv1.JoinTokenState_JOIN_TOKEN_STATE_ACTIVE:
		return "active"
	case outpostv1.JoinTokenState_JOIN_TOKEN_STATE_USED:
		return "used"
	case outpostv1.JoinTokenState_JOIN_TOKEN_STATE_REVOKED:
		return "revoked"
	case outpostv1.JoinTokenState_JOIN_TOKEN_STATE_EXPIRED:
		return "expired"
	}
	return "unknown"
}
