// Package hookpolicy refuses hook commands that no deployment should run.
//
// Hooks are shell text from a plan, run on every node of a rollout. The
// deny list catches the commands that destroy a server or its data
// (recursive deletes of system paths, mkfs, raw writes to block devices,
// fork bombs, a shell fed from curl, dropping tables, ...) before anything
// is sent.
//
// The command is parsed as a shell script (mvdan.cc/sh, bash syntax) and
// the rules match simple commands as the shell would run them: words after
// quote and escape removal, the command's name without its directory,
// through wrappers (sudo, env, nice, timeout, xargs, ...) and into the
// command strings that sh -c, eval, su -c, trap and heredocs fed to a shell
// run. A word only known when the hook runs ($DIR, $(cmd)) is taken as any
// value, except that the defaults of ${X:-/} and literal assignments seen
// earlier in the hook count as possible values.
//
// It is a seat belt, not the security boundary: it catches mistakes and
// the obvious ways around it, never someone set on getting past it (a
// script shipped in the artifact runs unseen). For production, the
// control plane's per-environment hook allow-list is the control, and
// approval, roles and the audit log are the boundary. A refusal names the
// rule and the offending command so the plan's author knows what to change.
package hookpolicy

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxCommandLen bounds a hook command's length in bytes: longer scripts
// belong in the artifact, where they are versioned and reviewed.
const MaxCommandLen = 64 << 10

// Limits that keep Check's time bounded on hostile input.
const (
	// maxBrackets bounds how deeply brackets nest, counted before parsing:
	// the parser's time grows with the square of it.
	maxBrackets = 64
	// maxTreeDepth bounds how deeply the parsed syntax nests (a pipeline
	// of a thousand commands, ifs in ifs in ifs).
	maxTreeDepth = 1000
	// maxDepth bounds how deeply command strings nest (sh -c in eval in
	// a heredoc fed to bash, ...).
	maxDepth = 8
	// maxParsedBytes bounds the text parsed in one Check, the hook and
	// every command string found in it.
	maxParsedBytes = 4 * MaxCommandLen
	// maxCandidates bounds the values a word is taken to have.
	maxCandidates = 16
	// maxExecs bounds find -exec find -exec ...: the rules look into the
	// commands of the first few.
	maxExecs = 4
)

// The rule families, as DeniedError.Rule names them.
const (
	ruleDelete     = "recursive delete of a system path"
	ruleChmod      = "recursive chmod or chown of a system path"
	ruleMove       = "move of a system path"
	ruleDiskTool   = "filesystem or partition tool"
	ruleDevice     = "write to a block device"
	rulePower      = "shutdown or reboot"
	ruleKillAll    = "signal to every process"
	ruleForkBomb   = "fork bomb"
	ruleShellFeed  = "downloaded or decoded code run by an interpreter"
	ruleSQL        = "destructive SQL"
	ruleTooComplex = "too complex to check"
)

// Rules lists the deny-list rule families, for --help and docs.
func Rules() []string {
	return []string{ruleDelete, ruleChmod, ruleMove, ruleDiskTool, ruleDevice, rulePower,
		ruleKillAll, ruleForkBomb, ruleShellFeed, ruleSQL, ruleTooComplex}
}

// DeniedError reports a hook command that the deny list refuses.
type DeniedError struct {
	// Command is the refused hook text.
	Command string
	// Rule is the family of the rule that matched, one of Rules().
	Rule string
	// Reason says what the offending command would do, e.g. "recursive
	// delete of /etc".
	Reason string
	// Call is the offending command as written, found by parsing: the
	// whole hook, or a part of it, or of a string it runs (sh -c "...").
	Call string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("%q: denied: %s (%s)", clip(e.Command), e.Reason, clip(e.Call))
}

// ErrUnparsable is wrapped by the error for a hook that is not a shell
// command the deny list can read.
var ErrUnparsable = errors.New("does not parse as a shell command")

// clip shortens s for an error message.
func clip(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

// Check returns nil when cmd may run as a hook: empty (the hook is
// skipped), or a shell command that parses and that no deny-list rule
// matches. It returns a *DeniedError when a rule matches, and an error
// wrapping ErrUnparsable when cmd, or a command string in it, does not
// parse. A command too large or too deeply nested to check in bounded
// time is denied by the rule "too complex to check".
func Check(cmd string) error {
	if cmd == "" {
		return nil
	}
	if strings.IndexByte(cmd, 0) >= 0 {
		return fmt.Errorf("%q: %w: it holds a NUL byte", clip(cmd), ErrUnparsable)
	}
	if len(cmd) > MaxCommandLen {
		return &DeniedError{Command: cmd, Rule: ruleTooComplex, Call: cmd,
			Reason: fmt.Sprintf("%d bytes, more than %d: ship a script in the artifact and run that", len(cmd), MaxCommandLen)}
	}
	c := &checker{vars: map[string][]string{"HOME": {"~"}}}
	d, err := c.script(cmd, 0, true)
	if err != nil {
		return fmt.Errorf("%q: %w", clip(cmd), err)
	}
	if d != nil {
		d.Command = cmd
		return d
	}
	return nil
}
