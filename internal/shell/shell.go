// Package shell builds the command strings Outpost sends to nodes over SSH.
//
// It is the only place that turns values into shell text: every path, name
// and value that reaches a remote shell goes through Quote or Join, so it
// arrives as exactly one literal argument whatever bytes it holds (quotes,
// $(...), backticks, newlines, globs, non-UTF-8). The quoting is POSIX
// single-quoting, understood the same way by sh, dash, bash, ksh and zsh.
//
// Quoting makes a value one literal word; it does not stop a command from
// reading a word that starts with "-" as an option. Callers put "--" before
// operands that may start with a dash, or validate names first.
package shell

import (
	"errors"
	"strings"
)

// safe reports whether b never needs quoting in any POSIX shell position.
func safe(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	switch b {
	case '_', '-', '.', '/', ',', ':', '@', '%', '+':
		return true
	}
	return false
}

// Quote returns s as one literal shell word.
//
// Words made only of letters, digits and _-./,:@%+ are returned as they are
// (readable logs); anything else is wrapped in single quotes, and each
// embedded single quote ends the quoting, adds a backslash-escaped quote
// and reopens it. The empty string becomes a pair of single quotes.
// s must not contain NUL, which no argument can carry; CheckArg reports it.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	plain := true
	for i := 0; i < len(s); i++ {
		if !safe(s[i]) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			b.WriteString(`'\''`)
			continue
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('\'')
	return b.String()
}

// Join quotes every argument and joins them with single spaces, giving one
// simple command: Join("mkdir", "-p", "--", dir).
func Join(args ...string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(Quote(a))
	}
	return b.String()
}

// ErrNUL is returned by CheckArg for a value holding a NUL byte.
var ErrNUL = errors.New("value contains a NUL byte")

// CheckArg reports whether s can be passed to a remote command at all: a
// NUL byte would silently cut the argument short, so it is refused.
func CheckArg(s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return ErrNUL
	}
	return nil
}
