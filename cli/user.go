package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// userCommand groups the verbs that manage people's credentials.
func userCommand() *command {
	return &command{
		name:  "user",
		short: "create, list and revoke credentials of people and tools (admin)",
		usage: "outpost user COMMAND [flags]",
		long: `A user is a person or tool holding a credential file: a client
certificate carrying a role, its private key and the control plane's CA.
Roles: viewer (read), deployer (viewer + create and steer rollouts, upload
artifacts), approver (viewer + approve, reject, validate rollouts), admin
(everything, plus nodes, join tokens and users). Deploying and approving
are separate roles, so a protected rollout needs a second person.`,
		sub: []*command{
			userCreateCommand(),
			userListCommand(),
			userRevokeCommand(),
		},
	}
}

func userCreateCommand() *command {
	return &command{
		name:  "create",
		short: "write a credential file for a user with a role",
		usage: "outpost user create NAME --role viewer|deployer|approver|admin [-f FILE] [--ttl 2160h]",
		long: `Makes a private key here, has the control plane certify it for NAME with
the role, and writes the credential file (mode 0600; default NAME.pem).
The key never leaves this machine except in that file: hand the file to
its user over a safe channel. They use it with --credential FILE, or
$OUTPOST_CREDENTIAL, or by putting it at ~/.config/outpost/credential.pem.

Examples:
  outpost user create alice --role deployer
  outpost user create bob --role approver -f /tmp/bob.pem --ttl 720h`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			role := fs.String("role", "", "the user's role: viewer, deployer, approver or admin (required)")
			file := fs.String("f", "", "credential `FILE` to write; default NAME.pem")
			ttl := fs.Duration("ttl", 0, "certificate lifetime; 0 means the control plane's default (90 days)")
			force := fs.Bool("force", false, "replace FILE if it exists")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("user create takes one user name")
				}
				name := args[0]
				if err := pki.CheckName(name); err != nil {
					return usagef("user name: %v", err)
				}
				if *role == "" {
					return usagef("--role is required (viewer, deployer, approver or admin)")
				}
				r, err := pki.ParseRole(*role)
				if err != nil {
					return usagef("--role: %v", err)
				}
				if *ttl < 0 {
					return usagef("--ttl must not be negative")
				}
				path := *file
				if path == "" {
					path = name + ".pem"
				}
				if _, err := os.Stat(path); err == nil && !*force {
					return fmt.Errorf("%s exists; choose another file with -f, or replace it with --force", path)
				} else if err != nil && !errors.Is(err, iofs.ErrNotExist) {
					return err
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				cred, err := enroll.CreateUser(cctx, c.adm, name, r, *ttl, path, c.addr)
				if err != nil {
					if rpcErr := innerStatus(err); rpcErr != nil {
						return c.explain("create user "+name, rpcErr)
					}
					return err
				}
				fmt.Fprintf(env.Stdout, "wrote %s: user %s, role %s, serial %s, expires %s\n", path, name, r,
					pki.SerialString(cred.Leaf()), cred.Leaf().NotAfter.Local().Format(time.RFC3339))
				return nil
			}
		},
	}
}

func userListCommand() *command {
	return &command{
		name:  "list",
		short: "list the unexpired certificates of users (and gateways with --all)",
		usage: "outpost user list [--all] [-o table|wide|json|yaml]",
		long: `Lists issued certificates that have not expired, sorted by serial: NAME,
KIND, ROLE or DATACENTER, SERIAL, EXPIRES, ISSUER and whether it is
REVOKED.

Examples:
  outpost user list
  outpost user list --all -o json`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			all := fs.Bool("all", false, "gateways' certificates too")
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("user list takes no arguments")
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				req := &outpostv1.ListCredentialsRequest{PageSize: listPageSize, Kind: outpostv1.CredentialKind_CREDENTIAL_KIND_USER}
				if *all {
					req.Kind = outpostv1.CredentialKind_CREDENTIAL_KIND_UNSPECIFIED
				}
				var creds []*outpostv1.Credential
				err = listPages(ctx, c, "list credentials", func(ctx context.Context, token string) (*outpostv1.ListCredentialsResponse, error) {
					req.PageToken = token
					return c.adm.ListCredentials(ctx, req)
				}, func(resp *outpostv1.ListCredentialsResponse) bool {
					creds = append(creds, resp.GetCredentials()...)
					return true
				})
				if err != nil {
					return err
				}
				if structured(*out) {
					return writeProto(env.Stdout, *out, &outpostv1.ListCredentialsResponse{Credentials: creds})
				}
				if len(creds) == 0 {
					fmt.Fprintln(env.Stderr, "no credentials")
					return nil
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tROLE/DATACENTER\tSERIAL\tEXPIRES\tISSUER\tREVOKED")
				for _, cr := range creds {
					kind, what := "user", strings.TrimPrefix(strings.ToLower(cr.GetRole().String()), "role_")
					if cr.GetKind() == outpostv1.CredentialKind_CREDENTIAL_KIND_GATEWAY {
						kind, what = "gateway", cr.GetDatacenter()
					}
					revoked := "-"
					if cr.GetRevoked() {
						revoked = "yes"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cr.GetName(), kind, what, cr.GetSerial(),
						cr.GetExpireTime().AsTime().Local().Format(time.RFC3339), cr.GetIssuer(), revoked)
				}
				return tw.Flush()
			}
		},
	}
}

func userRevokeCommand() *command {
	return &command{
		name:  "revoke",
		short: "revoke a user's (or a gateway's) certificates",
		usage: "outpost user revoke NAME | --gateway NAME | --serial SERIAL [--reason TEXT]",
		long: `Revokes every unexpired certificate of user NAME, of a gateway with
--gateway, or one certificate by serial. The control plane refuses
revoked certificates at once and ends the streams opened with them.

Examples:
  outpost user revoke alice --reason "left the team"
  outpost user revoke --gateway gw-seoul-1 --reason "host reinstalled"
  outpost user revoke --serial 5e0c1f2a3b4c5d6e7f8091a2b3c4d5e6`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			gatewayName := fs.String("gateway", "", "revoke the certificates of the gateway of this `name`")
			serial := fs.String("serial", "", "revoke the certificate with this `serial` (hex)")
			reason := fs.String("reason", "", "why, for the record")
			return func(ctx context.Context, args []string) error {
				req := &outpostv1.RevokeCredentialRequest{Reason: *reason}
				given := 0
				if len(args) == 1 {
					req.Kind, req.Name = outpostv1.CredentialKind_CREDENTIAL_KIND_USER, args[0]
					given++
				}
				if *gatewayName != "" {
					req.Kind, req.Name = outpostv1.CredentialKind_CREDENTIAL_KIND_GATEWAY, *gatewayName
					given++
				}
				if *serial != "" {
					req.Serial = *serial
					given++
				}
				if len(args) > 1 || given != 1 {
					return usagef("give one of: a user NAME, --gateway NAME, --serial SERIAL")
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				resp, err := c.adm.RevokeCredential(cctx, req)
				if err != nil {
					return c.explain("revoke", err)
				}
				for _, cr := range resp.GetCredentials() {
					fmt.Fprintf(env.Stdout, "revoked %s, serial %s\n", cr.GetName(), cr.GetSerial())
				}
				return nil
			}
		},
	}
}
