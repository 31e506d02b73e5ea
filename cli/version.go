package cli

import (
	"context"
	"flag"
	"fmt"
	"runtime/debug"
)

// version is set by the build (-ldflags "-X github.com/outposthq/outpost/cli.version=v1.2.3").
var version = "dev"

func versionCommand() *command {
	return &command{
		name:  "version",
		short: "print the version",
		usage: "outpost version",
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("version takes no arguments")
				}
				goVersion := "unknown"
				if bi, ok := debug.ReadBuildInfo(); ok {
					goVersion = bi.GoVersion
				}
				fmt.Fprintf(env.Stdout, "outpost %s (%s)\n", version, goVersion)
				return nil
			}
		},
	}
}
