package deployer

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"time"

	"github.com/outposthq/outpost/internal/shell"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// script builds one remote shell command. Values enter only through set
// (quoted with internal/shell); everything else is constant text written in
// this package, so a script never mixes data into code.
type script struct {
	b strings.Builder
}

// set assigns value to the shell variable name (a constant of this package).
func (s *script) set(name, value string) {
	s.b.WriteString(name)
	s.b.WriteByte('=')
	s.b.WriteString(shell.Quote(value))
	s.b.WriteByte('\n')
}

// line appends constant script text.
func (s *script) line(code string) {
	s.b.WriteString(code)
	s.b.WriteByte('\n')
}

func (s *script) String() string { return s.b.String() }

// digest appends the verify step's checksum: the SHA-256 of file (a shell
// word naming a variable, such as "$T/$F") into $s as hex followed by
// text to cut off. OpenSSL is used when the node has it and it works,
// because it uses the CPU's SHA instructions (a third of sha256sum's CPU
// on a 5 MiB artifact, and the gap grows with the size); coreutils'
// sha256sum, which every Linux node has, otherwise. A wrong digest from
// either fails the comparison that follows, never passes it.
func (s *script) digest(file string) {
	s.line(digestCmd(file, `m 5 fail; exit 1`))
}

// digestCmd is digest's command, running fail when no tool could read
// file.
func digestCmd(file, fail string) string {
	return `if command -v openssl >/dev/null 2>&1 && s=$(openssl dgst -sha256 -r <` + file + ` 2>/dev/null); then :; ` +
		`else s=$(sha256sum -b <` + file + `) || { ` + fail + `; }; fi`
}

// untar appends the unpack step's tar command: extract archive into dir
// (both shell words naming variables, such as "$T/$F"), then remove
// archive unless keepArchive (artifact.keep_file: the base of the next
// delta upload). Owners never come from the archive. Modes do, but as root GNU
// tar would also restore setuid, setgid and sticky bits and ignore the
// umask; unless keepModes, --no-same-permissions stops that, whatever user
// the node is deployed as: the bits are dropped even should an archive
// reach the node that the gateway's scan read differently.
func (s *script) untar(archive, dir string, gzip, keepModes, keepArchive bool) {
	cmd := `tar -xf`
	if gzip {
		cmd = `tar -xzf`
	}
	cmd += ` ` + archive + ` -C ` + dir + ` --no-same-owner`
	if !keepModes {
		cmd += ` --no-same-permissions`
	}
	if !keepArchive {
		cmd += ` && rm -f -- ` + archive
	}
	s.line(cmd + ` || { m 6 fail; exit 1; }`)
}

// Marker kinds printed by the scripts' m function.
const (
	markStart = "start"
	markOK    = "ok"
	markFail  = "fail"
	markSkip  = "skip"
	markNote  = "note"
)

// markerFunc defines m, which prints "@<step> <kind> <time> [label]" to
// stdout, and on a step start "@<step>[ label]" to stderr so that stderr can
// be cut per step. The time is bash's EPOCHREALTIME, else /proc/uptime (both
// builtins, no process start); only differences between markers are used,
// so the node's clock may be off. A marker that cannot be written means the
// gateway is gone (the connection dropped): the script stops there, before
// the next step, so that it cannot race the cleanup or rollback that the
// gateway runs over a new connection. (SIGPIPE usually kills it first.)
const markerFunc = `m() { u=${EPOCHREALTIME:-}; [ -n "$u" ] || read -r u _ </proc/uptime || u=; ` +
	`printf '@%s %s %s %s\n' "$1" "$2" "${u:--}" "${3:-}" || exit 1; [ "$2" != start ] || printf '@%s%s\n' "$1" "${3:+ $3}" >&2; }`

// hookFunc defines h DIR HOOK: run HOOK through the login shell in DIR
// (physical path), stdin from /dev/null and output to $H, printing the end
// of $H to stderr when it fails. Keeping the hook's output off the session's
// pipes means a daemon the hook leaves running cannot hold the session open,
// and running it in its own shell means its syntax errors, exit or set -e
// cannot touch the calling script.
const hookFunc = `h() { (cd -P -- "$1" && exec "${SHELL:-/bin/sh}" -c "$2") </dev/null >"$H" 2>&1 || ` +
	`{ r=$?; tail -c 2048 -- "$H" >&2; return "$r"; }; }`

// marker is one parsed marker line.
type marker struct {
	step  outpostv1.Step
	kind  string
	at    float64 // node seconds; valid only when hasAt
	hasAt bool
	label string
}

// parseMarkers reads the marker lines of a script's stdout; other lines are
// ignored.
func parseMarkers(stdout []byte) []marker {
	var out []marker
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "@") {
			continue
		}
		f := strings.SplitN(line[1:], " ", 4)
		if len(f) < 3 {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		mk := marker{step: outpostv1.Step(n), kind: f[1]}
		// EPOCHREALTIME uses the locale's decimal separator.
		if at, err := strconv.ParseFloat(strings.Replace(f[2], ",", ".", 1), 64); err == nil {
			mk.at, mk.hasAt = at, true
		}
		if len(f) == 4 {
			mk.label = f[3]
		}
		out = append(out, mk)
	}
	return out
}

// nodeClock maps marker times onto the gateway's clock. The last marker
// with a time is placed at the moment the command returned (the script
// ends right after it) and the others keep their distance from it, so the
// remote shell's start-up shows as a gap before the first step rather than
// inside it. Nothing lands outside [sent, returned].
type nodeClock struct {
	sent, returned time.Time
	base           float64
	haveBase       bool
}

func newNodeClock(sent, returned time.Time, ms []marker) *nodeClock {
	c := &nodeClock{sent: sent, returned: returned}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].hasAt {
			c.base, c.haveBase = ms[i].at, true
			break
		}
	}
	return c
}

// at returns the gateway time of m; markers without a time get the moment
// the command returned.
func (c *nodeClock) at(m marker) time.Time {
	if !m.hasAt || !c.haveBase {
		return c.returned
	}
	t := c.returned.Add(time.Duration((m.at - c.base) * float64(time.Second)))
	if t.After(c.returned) {
		return c.returned
	}
	if t.Before(c.sent) {
		return c.sent
	}
	return t
}

// stderrOf returns the part of a script's stderr written since the last
// start of step (with label, for rollback parts; see markerFunc), trimmed,
// or all of it when the step never marked its start.
func stderrOf(stderr []byte, step outpostv1.Step, label string) string {
	tag := "@" + strconv.Itoa(int(step))
	if label != "" {
		tag += " " + label
	}
	tag += "\n"
	s := stderr
	if i := bytes.LastIndex(s, []byte(tag)); i >= 0 && (i == 0 || s[i-1] == '\n') {
		s = s[i+len(tag):]
	}
	// What later steps wrote does not belong to this one.
	if bytes.HasPrefix(s, []byte("@")) {
		s = nil
	} else if i := bytes.Index(s, []byte("\n@")); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(s), "\uFFFD"))
}
