// Package hookpolicy refuses hook commands that no deployment should run.
//
// Hooks are shell text from a plan, run on every node of a rollout. The
// deny list catches the commands that destroy a server or its data
// (recursive deletes of system paths, mkfs, raw writes to block devices,
// dropping tables, ...) before anything is sent. It is a seat belt, not the
// security boundary: approval, roles and the audit log are. A match names
// the pattern so the plan's author knows what to change.
package hookpolicy

import (
	"fmt"
	"regexp"
	"strings"
)

// DeniedError reports a hook command that matched a deny-list pattern.
type DeniedError struct {
	// Pattern is the human name of the rule that matched, e.g. "rm -rf /".
	Pattern string
	// Command is the refused hook text.
	Command string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("hook command %q is refused: it matches the deny-list pattern %q", e.Command, e.Pattern)
}

type rule struct {
	name string
	re   *regexp.Regexp
}

// Word boundaries that also treat shell operators as separators.
const (
	start = `(?:^|[\s;&|(){}\x60]|\$\()`
	end   = `(?:$|[\s;&|(){}\x60])`
	// systemPath is an operand whose recursive removal or change wrecks a
	// server: the root, everything under it, a top-level system directory,
	// or a home directory.
	systemPath = `["']?(?:/+\*?|/+\.|~/?\*?|\$\{?HOME\}?/?\*?|/+(?:bin|boot|dev|etc|home|lib|lib32|lib64|opt|proc|root|run|sbin|srv|sys|usr|var)/*\*?)["']?`
)

// rules are matched against the command with runs of white space folded to
// one space. Order matters only for which name an error shows.
var rules = []rule{
	{"rm -rf /", regexp.MustCompile(start + `rm\s+(?:-\S+\s+)*-[a-zA-Z]*[rR][a-zA-Z]*\s+(?:-\S+\s+|\S+\s+)*` + systemPath + end)},
	{"rm -rf /", regexp.MustCompile(start + `rm\s+(?:\S+\s+)*--recursive\s+(?:\S+\s+)*` + systemPath + end)},
	{"rm --no-preserve-root", regexp.MustCompile(`--no-preserve-root`)},
	{"mkfs", regexp.MustCompile(start + `mkfs(?:\.\w+)?` + end)},
	{"mke2fs", regexp.MustCompile(start + `mke2fs` + end)},
	{"format", regexp.MustCompile(start + `format` + end)},
	{"wipefs", regexp.MustCompile(start + `wipefs` + end)},
	{"fdisk/parted", regexp.MustCompile(start + `(?:s?fdisk|parted|gdisk)` + end)},
	{"drop table", regexp.MustCompile(`(?i)\bdrop\s+(?:table|database|schema|user|tablespace)\b`)},
	{"truncate", regexp.MustCompile(`(?i)\btruncate\b`)},
	{"delete from without where", regexp.MustCompile(`(?i)\bdelete\s+from\s+[\w."]+\s*(?:;|$|["'])`)},
	{"> /dev/sd*", regexp.MustCompile(`>\s*/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|disk|dm-|md)`)},
	{"dd of=/dev/*", regexp.MustCompile(`\bof=/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|disk|dm-|md)`)},
	{"shred", regexp.MustCompile(start + `shred` + end)},
	{"chmod -R /", regexp.MustCompile(start + `ch(?:mod|own|grp)\s+(?:\S+\s+)*-[a-zA-Z]*R[a-zA-Z]*\s+(?:\S+\s+)*` + systemPath + end)},
	{"fork bomb", regexp.MustCompile(`:\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&`)},
	{"shutdown/reboot", regexp.MustCompile(start + `(?:shutdown|reboot|halt|poweroff)` + end)},
	{"init 0/6", regexp.MustCompile(start + `(?:init|telinit)\s+[06]` + end)},
	{"mv / ", regexp.MustCompile(start + `mv\s+(?:-\S+\s+)*/\s`)},
}

var spaces = regexp.MustCompile(`\s+`)

// Check returns a *DeniedError when cmd matches the deny list, nil
// otherwise. An empty command is allowed (the hook is skipped).
func Check(cmd string) error {
	folded := strings.TrimSpace(spaces.ReplaceAllString(cmd, " "))
	for _, r := range rules {
		if r.re.MatchString(folded) {
			return &DeniedError{Pattern: r.name, Command: cmd}
		}
	}
	return nil
}

// Patterns lists the names of the deny-list rules, for --help and docs.
func Patterns() []string {
	seen := map[string]bool{}
	var names []string
	for _, r := range rules {
		if !seen[r.name] {
			seen[r.name] = true
			names = append(names, r.name)
		}
	}
	return names
}
