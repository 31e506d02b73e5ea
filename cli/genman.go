package cli

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/spf13/cobra/doc"
)

// genManCommand writes the man pages that packages install. It is hidden:
// people read the pages, the packaging script makes them.
func genManCommand() *command {
	return &command{
		name:   "gen-man",
		short:  "write a man page for every verb into DIR",
		usage:  "outpost gen-man DIR",
		hidden: true,
		long: `Writes one man page per verb (outpost.1, outpost-rollout-create.1, ...)
into DIR, creating it. Packages run it at build time.

Examples:
  outpost gen-man build/man && man -l build/man/outpost-rollout-create.1`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("gen-man takes one DIR")
				}
				if err := os.MkdirAll(args[0], 0o755); err != nil {
					return err
				}
				header := &doc.GenManHeader{Section: "1", Source: "Outpost " + buildVersion().Version, Manual: "Outpost Manual"}
				root := cobraRoot(env)
				root.DisableAutoGenTag = true
				if err := doc.GenManTree(root, header, args[0]); err != nil {
					return fmt.Errorf("man pages: %w", err)
				}
				return nil
			}
		},
	}
}
