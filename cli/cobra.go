package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The verb tree is declared with command (see command.go) and built into
// a cobra tree here, in one place: cobra brings what the ecosystem's
// tools (kubectl, etcdctl, helm, argo) have — shell completion for bash,
// zsh and fish, generated man pages, POSIX flags — while the verbs keep
// declaring their flags on a standard flag.FlagSet.

// longNames gives single-letter flags the long name people know from
// kubectl: -o/--output, -l/--selector, -f/--filename.
var longNames = map[string]string{"o": "output", "l": "selector", "f": "filename"}

// completeTimeout bounds one dynamic completion: a shell waiting on TAB
// must never hang on an unreachable control plane.
const completeTimeout = 3 * time.Second

// cobraCommand builds c and its subcommands as a cobra tree whose verbs
// run with env. parent is the command path above c ("outpost rollout").
func (c *command) cobraCommand(env *Env, parent string) *cobra.Command {
	path := strings.TrimSpace(parent + " " + c.name)
	use := c.name
	if rest, ok := strings.CutPrefix(c.usage, path); ok {
		use += rest
	}
	cc := &cobra.Command{
		Use:                   use,
		Short:                 c.short,
		Long:                  strings.TrimSpace(c.long),
		Hidden:                c.hidden,
		Args:                  cobra.ArbitraryArgs,
		DisableFlagsInUseLine: true,
		SilenceErrors:         true,
		SilenceUsage:          true,
	}
	gofs := flag.NewFlagSet(path, flag.ContinueOnError)
	gofs.SetOutput(io.Discard)
	var run func(context.Context, []string) error
	if c.flags != nil {
		run = c.flags(gofs, env)
	}
	gofs.VisitAll(func(f *flag.Flag) {
		pf := pflag.PFlagFromGoFlag(f)
		if long, ok := longNames[f.Name]; ok {
			pf.Name = long
		}
		cc.Flags().AddFlag(pf)
		if o, ok := f.Value.(*outputValue); ok {
			cc.RegisterFlagCompletionFunc(pf.Name, func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return o.formats, cobra.ShellCompDirectiveNoFileComp
			})
		}
	})
	cc.RunE = func(cmd *cobra.Command, args []string) error {
		if run == nil {
			if len(args) > 0 {
				return usagef("unknown command %q", strings.TrimPrefix(path+" "+args[0], "outpost "))
			}
			return cmd.Help()
		}
		return run(cmd.Context(), args)
	}
	if c.complete != nil {
		cc.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return completeFromControlPlane(cmd, env, c.complete, toComplete), cobra.ShellCompDirectiveNoFileComp
		}
	}
	for _, s := range c.sub {
		cc.AddCommand(s.cobraCommand(env, path))
	}
	return cc
}

// cobraRoot builds the whole tree for one command line: input and output
// on env, usage errors for bad flags, the help layout of every verb, and
// the version for --version.
func cobraRoot(env *Env) *cobra.Command {
	root := root().cobraCommand(env, "")
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.Version = buildVersion().String()
	root.SetVersionTemplate("outpost {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usagef("%v", err) })
	root.SetHelpFunc(func(cmd *cobra.Command, _ []string) { writeHelp(cmd.OutOrStdout(), cmd) })
	root.InitDefaultCompletionCmd()
	return root
}

// writeHelp prints a verb's usage line, its text with examples, its
// subcommands and its flags.
func writeHelp(w io.Writer, cmd *cobra.Command) {
	fmt.Fprintf(w, "Usage: %s\n", cmd.UseLine())
	if cmd.Long != "" {
		fmt.Fprintf(w, "\n%s\n", cmd.Long)
	} else if cmd.Short != "" {
		fmt.Fprintf(w, "\n%s\n", cmd.Short)
	}
	if subs := cmd.Commands(); len(subs) > 0 {
		fmt.Fprintf(w, "\nCommands:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, s := range subs { // cobra sorts them by name
			if s.IsAvailableCommand() {
				fmt.Fprintf(tw, "  %s\t%s\n", s.Name(), s.Short)
			}
		}
		tw.Flush()
		fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's flags and examples.\n", cmd.CommandPath())
	}
	if fl := cmd.LocalFlags().FlagUsages(); fl != "" {
		fmt.Fprintf(w, "\nFlags:\n%s", fl)
	}
}

// completer lists the completions of a verb's first positional argument
// that start with prefix, asking the control plane with the user's
// credential.
type completer func(ctx context.Context, c *client, prefix string) ([]string, error)

// completeFromControlPlane runs complete with the endpoint the command
// line names (--controlplane, --credential, else the environment and the
// defaults) within completeTimeout. Any failure completes nothing, and
// quietly: the shell shows no completions rather than an error.
func completeFromControlPlane(cmd *cobra.Command, env *Env, complete completer, prefix string) []string {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	ep := endpoint{env: env, addr: &trackedString{}, credential: new(string)}
	if f := cmd.Flags().Lookup("controlplane"); f != nil {
		ep.addr = &trackedString{value: f.Value.String(), set: f.Changed}
	} else {
		ep.addr.value = defaultAddr(env)
	}
	if f := cmd.Flags().Lookup("credential"); f != nil {
		*ep.credential = f.Value.String()
	}
	c, err := dial(ep)
	if err != nil {
		return nil
	}
	defer c.Close()
	got, err := complete(ctx, c, prefix)
	if err != nil {
		return nil
	}
	return got
}
