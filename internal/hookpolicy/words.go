package hookpolicy

import (
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"mvdan.cc/sh/v3/syntax"
)

// unknown marks, in a word's value, text only known when the hook runs:
// a variable, a command's output. Check refuses NUL bytes, so it cannot
// come from the hook itself.
const unknown = "\x00"

// word is one shell word as the rules see it: the values it may take
// once expanded, after quote and escape removal. Only the first few
// readings are kept (maxCandidates); the first is the one where every
// ${X:-default} takes its default, the last the one where none does.
type word struct {
	vals []string     // at least one
	node *syntax.Word // as parsed; nil for a word the checker made up
}

// lit returns the word's value when it has exactly one and all of it is
// known.
func (w word) lit() (string, bool) {
	if len(w.vals) == 1 && !strings.Contains(w.vals[0], unknown) {
		return w.vals[0], true
	}
	return "", false
}

// first is the word's first reading: enough to read options and
// wrappers, where several readings would be a stretch.
func (w word) first() string { return w.vals[0] }

// known returns the readings that hold no unknown text.
func (w word) known() []string {
	var out []string
	for _, v := range w.vals {
		if !strings.Contains(v, unknown) {
			out = append(out, v)
		}
	}
	return out
}

// literal makes a word of a known value.
func literal(v string) word { return word{vals: []string{v}} }

// word resolves a parsed word.
func (c *checker) word(w *syntax.Word) word {
	return word{vals: c.values(w.Parts, false), node: w}
}

// values returns the readings of a sequence of word parts, with brace
// expansion ({a,b}) applied to the known ones when a brace is unquoted. quoted is true inside
// double quotes (and here-documents), where backslashes mostly stay.
func (c *checker) values(parts []syntax.WordPart, quoted bool) []string {
	alts := make([][]string, len(parts))
	for i, p := range parts {
		alts[i] = c.partValues(p, quoted)
	}
	vals := concat(alts)
	if quoted || !bareBrace(parts) {
		return vals
	}
	var out []string
	for _, v := range vals {
		if strings.Contains(v, unknown) || !strings.Contains(v, "{") {
			out = appendValue(out, v)
			continue
		}
		for _, e := range expandBraces(v, maxCandidates, 0) {
			out = appendValue(out, e)
		}
	}
	return out
}

// bareBrace reports whether a brace stands outside quotes in parts, as
// brace expansion needs.
func bareBrace(parts []syntax.WordPart) bool {
	for _, p := range parts {
		if l, ok := p.(*syntax.Lit); ok && strings.Contains(l.Value, "{") {
			return true
		}
	}
	return false
}

// concat returns the readings of pieces in a row, each with its own
// readings (at most maxCandidates each). When that makes too many, it
// keeps the two that matter most: every piece at its first reading
// (defaults taken), and every one at its last.
func concat(pieces [][]string) []string {
	bufs := [][]byte{nil}
	capped := false
	for _, alts := range pieces {
		switch {
		case len(alts) == 1:
			for i := range bufs {
				bufs[i] = append(bufs[i], alts[0]...)
			}
		case capped || len(bufs)*len(alts) > maxCandidates:
			// Two buffers from here on, distinct (made below), so
			// appending in place costs no copy.
			capped = true
			bufs = [][]byte{append(bufs[0], alts[0]...), append(bufs[len(bufs)-1], alts[len(alts)-1]...)}
		default:
			next := make([][]byte, 0, len(bufs)*len(alts))
			for _, x := range bufs {
				for _, y := range alts {
					b := make([]byte, len(x), len(x)+len(y))
					copy(b, x)
					next = append(next, append(b, y...))
				}
			}
			bufs = next
		}
	}
	var out []string
	for _, b := range bufs {
		out = appendValue(out, string(b))
	}
	return out
}

// appendValue adds v to vals unless it is there or vals is full.
func appendValue(vals []string, v string) []string {
	for _, x := range vals {
		if x == v {
			return vals
		}
	}
	if len(vals) >= maxCandidates {
		return vals
	}
	return append(vals, v)
}

func (c *checker) partValues(p syntax.WordPart, quoted bool) []string {
	switch p := p.(type) {
	case *syntax.Lit:
		return []string{unescape(p.Value, quoted)}
	case *syntax.SglQuoted:
		if p.Dollar {
			return []string{ansiC(p.Value)}
		}
		return []string{p.Value}
	case *syntax.DblQuoted:
		return c.values(p.Parts, true)
	case *syntax.ParamExp:
		return c.paramValues(p)
	case *syntax.CmdSubst:
		if v, ok := c.printed(p.Stmts); ok {
			return []string{v}
		}
	}
	return []string{unknown}
}

// paramValues returns the readings of $X and ${X...}: a value assigned
// literally earlier in the hook, or unknown; ${X:-word} and ${X:=word}
// may also be word, ${X:+word} word or nothing.
func (c *checker) paramValues(p *syntax.ParamExp) []string {
	if p.Param == nil || p.Excl || p.Length || p.Width || p.IsSet || p.NestedParam != nil ||
		p.Index != nil || p.Slice != nil || p.Repl != nil || p.Names != 0 || len(p.Modifiers) > 0 {
		return []string{unknown}
	}
	set := append(append([]string(nil), c.vars[p.Param.Value]...), unknown)
	if p.Exp == nil {
		return set
	}
	alt := []string{""}
	if p.Exp.Word != nil {
		alt = c.values(p.Exp.Word.Parts, false)
	}
	var out []string
	switch p.Exp.Op {
	case syntax.DefaultUnset, syntax.DefaultUnsetOrNull, syntax.AssignUnset, syntax.AssignUnsetOrNull:
		out = append(alt, set...)
	case syntax.AlternateUnset, syntax.AlternateUnsetOrNull:
		out = append(alt, "")
	case syntax.ErrorUnset, syntax.ErrorUnsetOrNull:
		return set
	default: // ${X%suffix} and the like
		return []string{unknown}
	}
	var vals []string
	for _, v := range out {
		vals = appendValue(vals, v)
	}
	return vals
}

// printed returns what $(echo WORDS) or $(printf TEXT) prints, when that
// is plain known text.
func (c *checker) printed(stmts []*syntax.Stmt) (string, bool) {
	if len(stmts) != 1 || len(stmts[0].Redirs) > 0 || stmts[0].Background {
		return "", false
	}
	ce, ok := stmts[0].Cmd.(*syntax.CallExpr)
	if !ok || len(ce.Args) == 0 {
		return "", false
	}
	args := make([]word, len(ce.Args))
	for i, a := range ce.Args {
		args[i] = c.word(a)
	}
	name, ok := args[0].lit()
	if !ok {
		return "", false
	}
	return printedText(name, args[1:])
}

// printedText returns what echo or printf with args writes, without the
// final newline, when it is plain known text: no variables, and no
// escapes or formats that would hide what it says.
func printedText(name string, args []word) (string, bool) {
	var vals []string
	for _, a := range args {
		v, ok := a.lit()
		if !ok || strings.Contains(v, `\`) {
			return "", false
		}
		vals = append(vals, v)
	}
	switch name {
	case "echo":
		for len(vals) > 0 && vals[0] == "-n" {
			vals = vals[1:]
		}
		if len(vals) > 0 && strings.HasPrefix(vals[0], "-") {
			return "", false // -e and friends
		}
		return strings.Join(vals, " "), true
	case "printf":
		if len(vals) != 1 || strings.Contains(vals[0], "%") {
			return "", false
		}
		return vals[0], true
	}
	return "", false
}

// unescape removes the backslashes the shell removes: before any
// character outside quotes, before $ ` " \ inside double quotes.
func unescape(s string, quoted bool) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		next := s[i+1]
		if quoted && !strings.ContainsRune("$`\"\\\n", rune(next)) {
			b.WriteByte('\\')
			continue
		}
		i++
		if next != '\n' {
			b.WriteByte(next)
		}
	}
	return b.String()
}

// ansiC decodes the text of $'...'.
func ansiC(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch c := s[i]; c {
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'e', 'E':
			b.WriteByte(0x1b)
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case '\\', '\'', '"', '?':
			b.WriteByte(c)
		case 'c':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i] & 0x1f)
			}
		case 'x', 'u', 'U':
			max := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
			j := i + 1
			for j < len(s) && j-i-1 < max && strings.IndexByte("0123456789abcdefABCDEF", s[j]) >= 0 {
				j++
			}
			n, err := strconv.ParseUint(s[i+1:j], 16, 32)
			if err != nil {
				b.WriteByte('\\')
				b.WriteByte(c)
				continue
			}
			if c == 'x' {
				b.WriteByte(byte(n))
			} else if r := rune(n); utf8.ValidRune(r) {
				b.WriteRune(r)
			}
			i = j - 1
		case '0', '1', '2', '3', '4', '5', '6', '7':
			j := i
			for j < len(s) && j-i < 3 && s[j] >= '0' && s[j] <= '7' {
				j++
			}
			n, _ := strconv.ParseUint(s[i:j], 8, 16)
			b.WriteByte(byte(n))
			i = j - 1
		default:
			b.WriteByte('\\')
			b.WriteByte(c)
		}
	}
	return b.String()
}

// expandBraces expands the comma forms of brace expansion in s
// ("/{etc,usr}" is "/etc" and "/usr"), up to limit results and a few
// levels deep; sequences ({1..9}) stay as written.
func expandBraces(s string, limit, depth int) []string {
	open, end, commas := firstBrace(s)
	if open < 0 || depth >= 4 {
		return []string{s}
	}
	var out []string
	start := open + 1
	for _, k := range append(commas, end) {
		alt := s[:open] + s[start:k] + s[end+1:]
		start = k + 1
		for _, v := range expandBraces(alt, limit-len(out), depth+1) {
			out = appendValue(out, v)
		}
		if len(out) >= limit {
			break
		}
	}
	return out
}

// firstBrace finds the first {...} of s holding a comma at its own
// level: its braces' indexes and its commas'. open is -1 when none.
func firstBrace(s string) (open, end int, commas []int) {
	type frame struct {
		at     int
		commas []int
	}
	var stack []frame
	open = -1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			stack = append(stack, frame{at: i})
		case ',':
			if n := len(stack); n > 0 && len(stack[n-1].commas) < maxCandidates {
				stack[n-1].commas = append(stack[n-1].commas, i)
			}
		case '}':
			n := len(stack)
			if n == 0 {
				continue
			}
			f := stack[n-1]
			stack = stack[:n-1]
			if len(f.commas) > 0 && (open < 0 || f.at < open) {
				open, end, commas = f.at, i, f.commas
			}
		}
	}
	return open, end, commas
}

// scriptText turns a reading of a command string into text to parse:
// its unknown parts become a variable nobody set, which is unknown to
// the checker again. known reports whether there were none.
func scriptText(v string) (text string, known bool) {
	if !strings.Contains(v, unknown) {
		return v, true
	}
	return strings.ReplaceAll(v, unknown, "${__outpost_unknown}"), false
}

// shown is a reading for a message: unknown parts as "...".
func shown(v string) string { return strings.ReplaceAll(v, unknown, "...") }

// sqlText is a reading of an argument as SQL to match: unknown parts
// become a name.
func sqlText(v string) string { return strings.ReplaceAll(v, unknown, "x") }

// baseName is a command name without its directory: /bin/rm is rm.
func baseName(v string) string { return v[strings.LastIndexByte(v, '/')+1:] }

// systemRoots are the top-level directories whose loss wrecks a server.
var systemRoots = []string{"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32",
	"opt", "proc", "root", "run", "sbin", "srv", "sys", "usr", "var"}

// everything reports whether a file name pattern matches every name in
// a directory: *, ?*, and .* (which once matched .. too).
func everything(p string) bool {
	return p != "" && (strings.Trim(p, "*?") == "" || p == ".*")
}

// systemPath reports whether v, an argument to a destructive command,
// names the root, a top-level system directory, everything in one, or
// a home directory or everything in it. Patterns count by what they
// match (/e* is /etc). Relative paths count from the last cd the hook
// made to a known place.
func (c *checker) systemPath(v string) bool {
	v, ok := c.abs(v)
	if !ok {
		return false
	}
	if v[0] == '~' {
		_, rest, _ := strings.Cut(v, "/")
		r := path.Clean("/" + rest)
		return r == "/" || (strings.Count(r, "/") == 1 && everything(r[1:]))
	}
	p := path.Clean(v)
	if p == "/" {
		return true
	}
	parts := strings.Split(p[1:], "/")
	switch len(parts) {
	case 1:
		return everything(parts[0]) || isRoot(parts[0])
	case 2:
		return isRoot(parts[0]) && everything(parts[1])
	}
	return false
}

// isRoot reports whether a name (or a pattern) is a system root.
func isRoot(name string) bool {
	for _, r := range systemRoots {
		if m, err := path.Match(name, r); name == r || (err == nil && m) {
			return true
		}
	}
	return false
}

// abs returns v as an absolute (or ~) path, when it is known.
func (c *checker) abs(v string) (string, bool) {
	if v == "" || strings.Contains(v, unknown) {
		return "", false
	}
	if v[0] == '/' || v[0] == '~' {
		return v, true
	}
	if c.cwd == "" {
		return "", false
	}
	return c.cwd + "/" + v, true
}

// blockDevices are the names under /dev of disks and their partitions,
// as prefixes; deviceSamples are some, for patterns (/dev/s?a).
var (
	blockDevices  = []string{"sd", "hd", "vd", "xvd", "nvme", "mmcblk", "disk/", "dm-", "md", "mapper/", "loop", "nbd", "rbd", "zd", "bcache"}
	deviceSamples = []string{"/dev/sda", "/dev/sda1", "/dev/vda", "/dev/xvda", "/dev/nvme0n1", "/dev/mmcblk0", "/dev/md0", "/dev/dm-0", "/dev/hda"}
)

// blockDevice reports whether v names a disk or a partition; its known
// start is enough (/dev/sd$X).
func (c *checker) blockDevice(v string) bool {
	partial := false
	if i := strings.Index(v, unknown); i >= 0 {
		v, partial = v[:i], true
	}
	v, ok := c.abs(v)
	if !ok || v[0] != '/' {
		return false
	}
	p := path.Clean(v)
	if partial && strings.HasSuffix(v, "/") {
		p += "/"
	}
	name, ok := strings.CutPrefix(p, "/dev/")
	if !ok {
		return false
	}
	for _, d := range blockDevices {
		if strings.HasPrefix(name, d) {
			return true
		}
	}
	if partial {
		return false
	}
	for _, s := range deviceSamples {
		if m, err := path.Match(p, s); err == nil && m {
			return true
		}
	}
	return false
}
