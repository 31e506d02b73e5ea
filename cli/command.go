package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
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
	// complete, when set, completes the first positional argument from
	// the control plane (rollout ids, app names, node ids).
	complete completer
	// hidden leaves the verb out of help and completion (gen-man).
	hidden bool
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
	// logged: the daemon's log has said err already; print it only once.
	logged bool
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
// 1 the command failed, 2 it was called wrongly. Errors are printed here,
// once, and nowhere else.
func Run(ctx context.Context, args []string, env *Env) int {
	root := cobraRoot(env)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(env.Stderr, "outpost: %s\nUsage: %s\nRun '%s --help' for more.\n", ue.msg, cmd.UseLine(), cmd.CommandPath())
		return 2
	case errors.As(err, &ee):
		if ee.err != nil && ee.err.Error() != "" && !ee.logged {
			fmt.Fprintf(env.Stderr, "outpost: %v\n", ee.err)
		}
		return ee.code
	default:
		fmt.Fprintf(env.Stderr, "outpost: %v\n", err)
		return 1
	}
}
