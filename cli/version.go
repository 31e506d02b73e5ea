package cli

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the build: make build passes
// -ldflags "-X github.com/outposthq/outpost/cli.version=v1.2.3 -X ...cli.commit=abc -X ...cli.date=2026-01-02T03:04:05Z".
// Empty ones are read from the module's build info.
var version, commit, date string

// buildInfo is what this binary knows about its own build.
type buildInfo struct {
	Version, Commit, Date string // "unknown" when the build recorded none
	Go, Platform          string
}

// buildVersion reads the version from the -X flags, else from the build
// info Go records (the module version under go install, the VCS revision
// and commit time in a checkout built without -buildvcs=false), else
// "dev" and "unknown".
func buildVersion() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; b.Version == "" && v != "" && v != "(devel)" {
			b.Version = v
		}
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && commit == "" && b.Commit != "" {
			b.Commit += "-dirty"
		}
	}
	if len(b.Commit) > 12 && !strings.HasSuffix(b.Commit, "-dirty") {
		b.Commit = b.Commit[:12]
	}
	for _, f := range []*string{&b.Commit, &b.Date} {
		if *f == "" {
			*f = "unknown"
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	return b
}

// String is the one line of outpost --version.
func (b buildInfo) String() string {
	return fmt.Sprintf("%s (commit %s, built %s, %s %s)", b.Version, b.Commit, b.Date, b.Go, b.Platform)
}

// Short is what a gateway reports to the control plane: the version, and
// the commit when the version alone says little.
func (b buildInfo) Short() string {
	if b.Version == "dev" && b.Commit != "unknown" {
		return b.Version + "+" + b.Commit
	}
	return b.Version
}

func versionCommand() *command {
	return &command{
		name:  "version",
		short: "print the version, commit and build date",
		usage: "outpost version",
		long: `Prints this binary's version, the commit it was built from, the build
date, and the Go version and platform. Same as outpost --version.

make build stamps all three; a plain go build records the commit and its
time when built inside a git checkout; otherwise they read "unknown".

Examples:
  outpost version`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("version takes no arguments")
				}
				fmt.Fprintf(env.Stdout, "outpost %s\n", buildVersion())
				return nil
			}
		},
	}
}
