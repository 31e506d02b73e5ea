package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/outposthq/outpost/cli/console"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func consoleCommand() *command {
	return &command{
		name:  "console",
		short: "serve a web console for rollouts, approvals, the fleet and the audit log",
		usage: "outpost console [--listen ADDR]",
		long: `Serves a web UI for you, on this machine: rollouts (live, with a grid of
their nodes), approvals, actions, the fleet and the audit log. Every call it
makes goes to the control plane with your credential, so your role, four
eyes and the audit log apply exactly as with the other verbs.

It listens on 127.0.0.1 on a random port and prints a URL with a one-time
token: the first browser to open it gets a session cookie and the token
stops working, so other users of this machine cannot use your console. The
UI is embedded in the outpost binary; nothing is fetched from the internet.

--listen with an address other than loopback exposes the console (and your
credential's powers) to the network; the console warns when you do.

Examples:
  outpost console
  outpost console --listen 127.0.0.1:8080
  OUTPOST_CREDENTIAL=~/approver.pem outpost console`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			ep := controlPlaneFlag(fs, env)
			listen := fs.String("listen", "127.0.0.1:0", "address `host:port` to serve on; port 0 picks a free one")
			return func(ctx context.Context, args []string) error {
				if len(args) != 0 {
					return usagef("console takes no arguments")
				}
				host, _, err := net.SplitHostPort(*listen)
				if err != nil {
					return usagef("--listen %q: %v", *listen, err)
				}
				ip := net.ParseIP(host)
				if host != "" && ip == nil {
					return usagef("--listen %q: give an IP address, not a name (127.0.0.1 keeps the console on this machine)", *listen)
				}
				if ip == nil || !ip.IsLoopback() {
					fmt.Fprintf(env.Stderr, "outpost: warning: --listen %s is not loopback: anyone who can reach it and gets the login URL acts with your credential; the connection is plain HTTP\n", *listen)
				}
				c, err := dial(*ep)
				if err != nil {
					return err
				}
				defer c.Close()
				ln, err := net.Listen("tcp", *listen)
				if err != nil {
					return fmt.Errorf("console: %w", err)
				}
				srv, err := console.New(console.Config{
					CP: c.cp, Audit: outpostv1.NewAuditServiceClient(c.cc),
					User: c.cred.Identity.Name, Role: c.cred.Identity.Role.String(), ControlPlane: c.addr,
					Logger: slog.New(slog.NewTextHandler(env.Stderr, nil)),
				}, ln.Addr().String())
				if err != nil {
					ln.Close()
					return err
				}
				// Requests (event streams too) end with the command.
				hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second,
					BaseContext: func(net.Listener) context.Context { return ctx }}
				fmt.Fprintf(env.Stderr, "outpost console for %s (%s), control plane %s. Open this URL (it works once); Ctrl-C stops.\n",
					c.cred.Identity.Name, c.cred.Identity.Role, c.addr)
				fmt.Fprintf(env.Stdout, "http://%s%s\n", ln.Addr(), srv.LoginPath())
				done := make(chan error, 1)
				go func() { done <- hs.Serve(ln) }()
				select {
				case err := <-done:
					return fmt.Errorf("console: %w", err)
				case <-ctx.Done():
				}
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
					return fmt.Errorf("console: %w", err)
				}
				return nil
			}
		},
	}
}
