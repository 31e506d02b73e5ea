package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
)

// Env is what a verb may touch of the outside world.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads environment variables (os.Getenv outside tests).
	Getenv func(string) string
}

// command is one node of the verb tree. A command with subcommands and no
// run prints its help.
type command struct {
	name  string
	short string // one line for the parent's list
	usage string // "outpost rollout create -f PLAN [--watch]"
	long  string // what it does, then examples
	// flags registers the verb's flags on fs and returns the function that
	// runs it with the positional arguments.
	flags func(fs *flag.FlagSet, env *Env) func(ctx context.Context, args []string) error
	sub   []*command
}

// usageError is a mistake in how the command was called: it prints the
// usage line and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// exitError carries a specific exit code (for example `rollout watch`
// exits 1 when the rollout did not succeed) after its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Main runs the outpost command line and returns the process exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
}

// Run runs one command line with env and returns its exit code: 0 success,
// 1 the command failed, 2 it was called wrongly.
func Run(ctx context.Context, args []string, env *Env) int {
	cmd, path, rest := root().find(args)
	err := cmd.exec(ctx, path, rest, env)
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "outpost: %s\nUsage: %s\nRun '%s --help' for more.\n", ue.msg, cmd.usage, strings.Join(path, " "))
		return 2
	case errors.As(err, &ee):
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintf(env.Stderr, "outpost: %v\n", ee.err)
		}
		return ee.code
	default:
		fmt.Fprintf(env.Stderr, "outpost: %v\n", err)
		return 1
	}
}

// find walks args down the verb tree as far as names match.
func (c *command) find(args []string) (*command, []string, []string) {
	path := []string{c.name}
	for len(args) > 0 {
		next := c.child(args[0])
		if next == nil {
			break
		}
		c, args = next, args[1:]
		path = append(path, c.name)
	}
	return c, path, args
}

func (c *command) child(name string) *command {
	for _, s := range c.sub {
		if s.name == name {
			return s
		}
	}
	return nil
}

func (c *command) exec(ctx context.Context, path, args []string, env *Env) error {
	fs := flag.NewFlagSet(strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var run func(context.Context, []string) error
	if c.flags != nil {
		run = c.flags(fs, env)
	}
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.help(env.Stdout, path, fs)
		return flag.ErrHelp
	}
	if err != nil {
		return usagef("%v", err)
	}
	if run == nil {
		if len(pos) > 0 {
			return usagef("unknown command %q", strings.Join(append(path[1:], pos[0]), " "))
		}
		c.help(env.Stdout, path, fs)
		return nil
	}
	return run(ctx, pos)
}

// parseInterleaved accepts flags before, between and after positional
// arguments (`rollout watch ID -o json`), and "--" to end flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// longFlagDashes finds multi-letter flag names in PrintDefaults output,
// which the help shows as --name, the way people type them (the flag
// package accepts both).
var longFlagDashes = regexp.MustCompile(`(?m)^(  )-([a-z][a-z0-9-]+)`)

func (c *command) help(w io.Writer, path []string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n", c.usage)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
	}
	if len(c.sub) > 0 {
		fmt.Fprintf(w, "\nCommands:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		subs := append([]*command(nil), c.sub...)
		sort.Slice(subs, func(i, j int) bool { return subs[i].name < subs[j].name })
		for _, s := range subs {
			fmt.Fprintf(tw, "  %s\t%s\n", s.name, s.short)
		}
		tw.Flush()
		fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's flags and examples.\n", strings.Join(path, " "))
	}
	var flags strings.Builder
	fs.SetOutput(&flags)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	if flags.Len() > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s", longFlagDashes.ReplaceAllString(flags.String(), "$1--$2"))
	}
}
