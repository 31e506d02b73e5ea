package deployer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/gateway/sshexec"
	"github.com/outposthq/outpost/internal/shell"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Observing a node (fleet truth): one read-only command reads what the
// deployments left on the node — the release in place, the desired
// release's directory and digest marker, the lock and whether its holder's
// activation is alive (as the lock takeover decides it: kill -0 on the pid
// in .outpost/active), and the last history line. Nothing is installed or
// changed. The node is not trusted: every value is cut on the node (head
// -c), the whole output is bounded (MaxObserveOutput) and parsed strictly,
// and anything unexpected refuses the observation as a whole.

// MaxObserveOutput bounds the observe command's stdout; a longer output
// is refused (the script itself prints well under 4 KiB).
const MaxObserveOutput = 8 << 10

// Bounds of single values, applied on the node and checked again here.
const (
	maxObservedTarget  = 1024
	maxObservedDigest  = 128
	maxObservedLock    = 2048
	maxObservedHistory = 1024
)

// observeVersion opens the output, so that a login banner or a shell
// profile's chatter on stdout is told apart from it.
const observeVersion = "@outpost-observe 1"

// ObserveScript is the observe command for the deploy path dir in layout,
// reading the digest marker of the desired release (releases layout).
// It fails on a value no shell word may carry or an invalid release id.
func ObserveScript(dir string, layout Layout, desired string) (string, error) {
	if dir == "" {
		return "", errors.New("observe: empty deploy path")
	}
	if err := shell.CheckArg(dir); err != nil {
		return "", fmt.Errorf("observe: deploy path: %w", err)
	}
	if desired != "" && !validReleaseID(desired) {
		return "", fmt.Errorf("observe: invalid release id %q", desired)
	}
	var s script
	s.set("P", dir)
	s.set("D", desired)
	s.line(`echo '` + observeVersion + `'`)
	s.line(`[ -d "$P/" ] || { echo @nopath; echo @end; exit 0; }`)
	if layout == LayoutInplace {
		s.line(`if [ -f "$P/.outpost/release" ]; then printf '@release '; head -n 1 -- "$P/.outpost/release" | head -c 256 | tr -d '\r\n'; echo; fi`)
		s.line(`for e in "$P"/* "$P"/.[!.]* "$P"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; [ "$e" != "$P/.outpost" ] || continue; echo @present; break; done`)
	} else {
		s.line(`if [ -L "$P/current" ]; then printf '@link '; readlink -- "$P/current" | head -n 1 | head -c ` + strconv.Itoa(maxObservedTarget) + ` | tr -d '\r\n'; echo; elif [ -e "$P/current" ]; then echo @notlink; fi`)
		s.line(`if [ -n "$D" ] && [ -d "$P/releases/$D" ]; then echo @present; ` +
			`if [ -f "$P/releases/$D/` + digestFile + `" ]; then printf '@digest '; head -n 1 -- "$P/releases/$D/` + digestFile + `" | head -c ` + strconv.Itoa(maxObservedDigest) + ` | tr -d '\r\n'; echo; fi; fi`)
	}
	s.line(`if [ -e "$P/.outpost/lock" ]; then printf '@lock '; head -c ` + strconv.Itoa(maxObservedLock) + ` -- "$P/.outpost/lock" 2>/dev/null | tr -d '\r\n'; echo; fi`)
	s.line(`if [ -s "$P/.outpost/active" ]; then a=$(head -c 32 -- "$P/.outpost/active"); case $a in ''|*[!0-9]*) ;; *) if kill -0 "$a" 2>/dev/null; then echo @active; fi;; esac; fi`)
	s.line(`if [ -f "$P/.outpost/history" ]; then printf '@history '; tail -n 1 -- "$P/.outpost/history" | head -c ` + strconv.Itoa(maxObservedHistory) + ` | tr -d '\r\n'; echo; fi`)
	s.line(`echo @end`)
	return s.String(), nil
}

// runner is the part of a connection Observe needs.
type runner interface {
	Run(ctx context.Context, cmd string) (sshexec.Result, error)
}

// Observe runs the observe command on r and parses its output. The error
// is for a transport failure or a refused output; the caller classifies it.
func Observe(ctx context.Context, r runner, dir string, layout Layout, desired string) (*outpostv1.NodeObservation, error) {
	cmd, err := ObserveScript(dir, layout, desired)
	if err != nil {
		return nil, err
	}
	res, err := r.Run(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if res.Truncated {
		return nil, fmt.Errorf("observe: the node's output is larger than %d bytes", MaxObserveOutput)
	}
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("observe: %w", err)
	}
	return ParseObservation(res.Stdout, layout)
}

// ParseObservation reads the observe command's stdout. It refuses output
// that is too large, not UTF-8, carries control characters, repeats or
// misses a line, or names an unknown one: a node is not trusted, and a
// half-read observation is worse than none.
func ParseObservation(stdout []byte, layout Layout) (*outpostv1.NodeObservation, error) {
	if len(stdout) > MaxObserveOutput {
		return nil, fmt.Errorf("observe: output of %d bytes is larger than %d", len(stdout), MaxObserveOutput)
	}
	if !utf8.Valid(stdout) {
		return nil, errors.New("observe: output is not UTF-8")
	}
	// A login banner or profile may print before the script; its output
	// starts at the version line.
	i := bytes.Index(stdout, []byte(observeVersion+"\n"))
	if i < 0 || (i > 0 && stdout[i-1] != '\n') {
		return nil, errors.New("observe: no observe output (the version line is missing)")
	}
	body, ok := strings.CutSuffix(string(stdout[i+len(observeVersion)+1:]), "@end\n")
	if !ok {
		return nil, errors.New("observe: output does not end with @end")
	}
	o := &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_OK}
	seen := map[string]bool{}
	lines := strings.Split(body, "\n")
	lines = lines[:len(lines)-1] // body ends with "\n" (or is empty)
	for _, line := range lines {
		key, val, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(key, "@") {
			return nil, fmt.Errorf("observe: unexpected line %q", clip(line, 64))
		}
		key = key[1:]
		if seen[key] {
			return nil, fmt.Errorf("observe: line @%s repeated", clip(key, 32))
		}
		seen[key] = true
		if !printable(val) {
			return nil, fmt.Errorf("observe: @%s carries control characters", clip(key, 32))
		}
		switch key {
		case "nopath":
			if len(lines) != 1 {
				return nil, errors.New("observe: @nopath with other lines")
			}
		case "link":
			if layout != LayoutReleases || len(val) > maxObservedTarget {
				return nil, errors.New("observe: bad @link")
			}
			if id := releaseOf(val); id != "" {
				o.Release = id
			} else {
				o.CurrentOther = val
				if o.CurrentOther == "" {
					o.CurrentOther = "(empty link)"
				}
			}
		case "notlink":
			if layout != LayoutReleases || val != "" {
				return nil, errors.New("observe: bad @notlink")
			}
			o.CurrentOther = "notlink"
		case "release":
			if layout != LayoutInplace || len(val) > 256 {
				return nil, errors.New("observe: bad @release")
			}
			if validReleaseID(val) {
				o.Release = val
			} else if val != "" {
				o.CurrentOther = val
			}
		case "present":
			if val != "" {
				return nil, errors.New("observe: bad @present")
			}
			o.ReleasePresent = true
		case "digest":
			if layout != LayoutReleases || len(val) > maxObservedDigest {
				return nil, errors.New("observe: bad @digest")
			}
			o.Sha256 = val
		case "lock":
			if len(val) > maxObservedLock {
				return nil, errors.New("observe: bad @lock")
			}
			o.LockHeld = true
			var info LockInfo
			if json.Unmarshal([]byte(val), &info) == nil {
				o.LockOwner, o.LockRollout, o.LockAssignment = clip(info.Owner, 256), clip(info.Rollout, 256), clip(info.Assignment, 256)
				if !info.Time.IsZero() {
					o.LockTime = timestamppb.New(info.Time)
				}
			}
		case "active":
			if val != "" {
				return nil, errors.New("observe: bad @active")
			}
			o.LockActive = true
		case "history":
			if len(val) > maxObservedHistory {
				return nil, errors.New("observe: bad @history")
			}
			o.LastHistory = val
		default:
			return nil, fmt.Errorf("observe: unknown line @%s", clip(key, 32))
		}
	}
	if seen["digest"] && !seen["present"] {
		return nil, errors.New("observe: @digest without @present")
	}
	return o, nil
}

// printable reports whether s has no control characters.
func printable(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// clip cuts s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
