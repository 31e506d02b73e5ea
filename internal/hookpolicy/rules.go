package hookpolicy

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

var (
	// shells run command strings the checker can read (sh -c STRING).
	shells = set("sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "ash", "yash", "posh", "rbash")
	// interpreters run a program from stdin when given none.
	interpreters = set("python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "fish", "csh", "tcsh")
	// fetchers write what nobody can read in the hook: downloads and
	// decoded or decompressed data.
	fetchers = set("curl", "wget", "fetch", "aria2c", "nc", "ncat", "netcat", "socat", "ftp", "tftp",
		"base64", "base32", "basenc", "xxd", "uudecode", "openssl", "gpg",
		"zcat", "gzip", "gunzip", "bzcat", "bzip2", "bunzip2", "xz", "xzcat", "unxz", "zstd", "zstdcat", "unzstd")
	// sqlClients take SQL in their arguments and on stdin.
	sqlClients = set("psql", "mysql", "mariadb", "sqlplus", "sqlite3", "sqlcmd", "clickhouse-client",
		"cqlsh", "mycli", "pgcli", "isql", "duckdb")
	// diskTools format or repartition disks, whatever their arguments.
	diskTools = map[string]string{
		"mkfs": "formats a filesystem", "mke2fs": "formats a filesystem", "mkdosfs": "formats a filesystem",
		"mkntfs": "formats a filesystem", "mkexfatfs": "formats a filesystem", "format": "formats a disk",
		"wipefs": "erases filesystem signatures", "blkdiscard": "discards every block of a device",
		"fdisk": "edits partition tables", "sfdisk": "edits partition tables", "cfdisk": "edits partition tables",
		"gdisk": "edits partition tables", "sgdisk": "edits partition tables", "parted": "edits partition tables",
	}
	powerCommands = set("shutdown", "reboot", "halt", "poweroff", "kexec")
	powerVerbs    = set("poweroff", "reboot", "halt", "kexec", "emergency", "rescue", "soft-reboot")
	powerTargets  = set("poweroff.target", "reboot.target", "halt.target", "kexec.target", "rescue.target",
		"emergency.target", "runlevel0.target", "runlevel1.target", "runlevel6.target")
)

// wrapper describes a command that runs another given after its own
// options: sudo CMD, nice -n 5 CMD, timeout 30 CMD.
type wrapper struct {
	valued   string   // short options that take a value
	long     []string // long options that take a value, when not written --opt=value
	stops    string   // short options after which no command runs (command -v)
	operands int      // operands before the command (timeout's duration)
	assigns  bool     // NAME=VALUE operands come before the command (env)
}

var wrappers = map[string]wrapper{
	"sudo":        {valued: "CDgpRrTtUu", long: []string{"chdir", "chroot", "close-from", "command-timeout", "group", "host", "other-user", "prompt", "role", "type", "user"}, stops: "el"},
	"doas":        {valued: "uC"},
	"env":         {valued: "uCS", long: []string{"unset", "chdir", "split-string"}, assigns: true},
	"nice":        {valued: "n", long: []string{"adjustment"}},
	"nohup":       {},
	"timeout":     {valued: "sk", long: []string{"signal", "kill-after"}, operands: 1},
	"command":     {stops: "vV"},
	"exec":        {valued: "a"},
	"builtin":     {},
	"busybox":     {},
	"xargs":       {valued: "adEILnPs", long: []string{"arg-file", "delimiter", "max-args", "max-procs", "max-chars", "process-slot-var"}},
	"ionice":      {valued: "cnpPu", stops: "pPu"},
	"stdbuf":      {valued: "ioe", long: []string{"input", "output", "error"}},
	"setsid":      {},
	"time":        {valued: "fo", long: []string{"format", "output"}},
	"chrt":        {valued: "TPD", stops: "p", operands: 1},
	"taskset":     {stops: "p", operands: 1},
	"flock":       {valued: "wE", long: []string{"timeout", "conflict-exit-code"}, operands: 1},
	"runuser":     {valued: "ugGc", long: []string{"user", "group", "supp-group", "command"}},
	"chroot":      {long: []string{"userspec", "groups"}, operands: 1},
	"systemd-run": {valued: "pEuMHs", long: []string{"property", "setenv", "unit", "machine", "host", "description", "slice", "uid", "gid", "nice", "working-directory"}},
	"unbuffer":    {},
}

// command returns the words of the command the wrapper runs; ok is
// false when it runs none.
func (wr wrapper) command(args []word) (cmd []word, ok bool) {
	operands := wr.operands
	i := 0
options:
	for ; i < len(args); i++ {
		v := args[i].first()
		switch {
		case v == "--":
			i++
			break options
		case strings.HasPrefix(v, "--"):
			name, _, hasValue := strings.Cut(v[2:], "=")
			if !hasValue && slices.Contains(wr.long, name) {
				i++
			}
		case len(v) > 1 && v[0] == '-' && !strings.Contains(v, unknown):
			for j := 1; j < len(v); j++ {
				if strings.IndexByte(wr.stops, v[j]) >= 0 {
					return nil, false
				}
				if strings.IndexByte(wr.valued, v[j]) >= 0 {
					if j == len(v)-1 {
						i++
					}
					break
				}
			}
		case v == unknown && operands == 0:
			// Options we cannot read; the command comes after them.
		case wr.assigns && strings.Contains(v, "=") && !strings.HasPrefix(v, "="):
		default:
			break options
		}
	}
	for ; i < len(args); i++ {
		v := args[i].first()
		if operands > 0 {
			operands--
			continue
		}
		if !(wr.assigns && strings.Contains(v, "=") && !strings.HasPrefix(v, "=")) {
			break
		}
	}
	return args[min(i, len(args)):], i < len(args)
}

// commandNames returns the names a command word may run, without
// directories.
func commandNames(w word) []string {
	var out []string
	for _, v := range w.known() {
		if n := baseName(v); n != "" {
			out = appendValue(out, n)
		}
	}
	return out
}

// unwrap returns the command that args run, through wrappers, with its
// arguments; name is "" when it is not known.
func (w *walker) unwrap(args []word) (name string, rest []word) {
	for range len(args) + 1 {
		if len(args) == 0 {
			return "", nil
		}
		names := commandNames(args[0])
		if len(names) == 0 {
			return "", nil
		}
		wr, ok := wrappers[names[0]]
		if !ok {
			return names[0], args[1:]
		}
		if args, ok = wr.command(args[1:]); !ok {
			return "", nil
		}
	}
	return "", nil
}

// command applies the rules to a simple command's words, then to the
// command a wrapper among them runs (sudo rm ...), and so on.
func (w *walker) command(args []word, s *site) {
	for range len(args) + 1 {
		if len(args) == 0 || w.done() {
			return
		}
		var next []word
		for _, name := range commandNames(args[0]) {
			if rest, ok := w.run(name, args[1:], s); ok && next == nil {
				next = rest
			}
		}
		args = next
	}
}

// run applies the rules for one command name; for a wrapper, it returns
// the command it runs.
func (w *walker) run(name string, args []word, s *site) (wrapped []word, ok bool) {
	switch name {
	case "eval":
		w.opaqueWords(name, args, s)
		w.nested(joined(args))
		return nil, false
	case "source", ".":
		w.opaqueWords(name, args[:min(1, len(args))], s)
		if len(args) > 0 && isStdin(args[0].first()) {
			w.stdinScript(name, s, true)
		}
		return nil, false
	case "trap":
		if len(args) > 0 && args[0].first() == "--" {
			args = args[1:]
		}
		if len(args) > 1 && args[0].first() != "-" {
			w.nested(args[0].vals)
		}
		return nil, false
	case "alias":
		for _, a := range args {
			for _, v := range a.vals {
				if _, val, ok := strings.Cut(v, "="); ok {
					w.nested([]string{val})
				}
			}
		}
		return nil, false
	case "su", "runuser", "script":
		if cmd, ok := optionValue(args, 'c', "command"); ok {
			w.opaqueWords(name, []word{cmd}, s)
			w.nested(cmd.vals)
			return nil, false
		}
	case "flock":
		// flock [options] FILE -c STRING, or flock [options] FILE CMD...
		rest, ok := wrappers[name].command(args)
		if ok && len(rest) > 1 && (rest[0].first() == "-c" || rest[0].first() == "--command") {
			w.opaqueWords(name, rest[1:2], s)
			w.nested(rest[1].vals)
			return nil, false
		}
		return rest, ok
	case "env":
		if split, rest, ok := envSplit(args); ok {
			w.nested(joined(append([]word{split}, quoted(rest)...)))
			return nil, false
		}
	case "watch":
		opts, ops := parseArgs(args, "nd", true, "interval", "differences")
		if hasOpt(opts, "x", "exec") {
			return ops, true
		}
		w.nested(joined(ops))
		return nil, false
	case "ssh":
		if _, ops := parseArgs(args, "BbcDEeFIiJLlmOoPpQRSWw", true); len(ops) > 1 {
			w.nested(joined(ops[1:]))
		}
		return nil, false
	case "cd", "pushd":
		w.cd(args)
		return nil, false
	}
	if shells[name] || interpreters[name] {
		w.interpreter(name, args, s)
		return nil, false
	}
	if wr, ok := wrappers[name]; ok {
		return wr.command(args)
	}
	w.rules(name, args, s)
	return nil, false
}

// opaqueWords denies words whose $(...) or <(...) run a download or
// decoded data for name to run.
func (w *walker) opaqueWords(name string, args []word, s *site) {
	for _, a := range args {
		if a.node != nil {
			w.opaqueSource(name, a.node, s)
		}
	}
}

// interpreter checks what a shell or another interpreter runs: its -c
// string, its script when that is a download, its stdin.
func (w *walker) interpreter(name string, args []word, s *site) {
	cmd, script, stdin := interpArgs(name, args)
	if cmd != nil {
		w.opaqueWords(name, []word{*cmd}, s)
		if shells[name] {
			w.nested(cmd.vals)
		}
	}
	if script != nil {
		w.opaqueWords(name, []word{*script}, s)
	}
	if stdin {
		w.stdinScript(name, s, shells[name])
	}
}

// interpArgs reads an interpreter's arguments: the program given inline
// (sh -c CMD, python -c CODE), or the script file, or neither, when it
// reads its program from stdin.
func interpArgs(name string, args []word) (cmd, script *word, stdin bool) {
	shell := shells[name]
	inline, valued := "ceEmr", "WXIM" // python -c -m, perl and ruby -e -E, php -r
	if shell {
		inline, valued = "c", "oO"
	}
	var inlineFlag, stdinFlag bool
	i := 0
	for ; i < len(args); i++ {
		v := args[i].first()
		if v == "-" {
			return nil, nil, true
		}
		if v == "--" {
			i++
			break
		}
		if len(v) < 2 || strings.Contains(v, unknown) || !(v[0] == '-' || (shell && v[0] == '+')) {
			break
		}
		if strings.HasPrefix(v, "--") {
			switch {
			case !shell && (v == "--eval" || v == "--print") && i+1 < len(args):
				i++
				return &args[i], nil, false
			case shell && (v == "--rcfile" || v == "--init-file"):
				i++
			}
			continue
		}
		for j := 1; j < len(v); j++ {
			c := v[j]
			switch {
			case shell && c == 's':
				stdinFlag = true
			case strings.IndexByte(inline, c) >= 0:
				inlineFlag = true
				if !shell {
					// The program follows, attached or as the next word.
					if j+1 < len(v) {
						return &word{vals: []string{v[j+1:]}}, nil, false
					}
					if i+1 < len(args) {
						return &args[i+1], nil, false
					}
					return nil, nil, false
				}
			case strings.IndexByte(valued, c) >= 0:
				if j == len(v)-1 {
					i++
				}
				j = len(v)
			}
		}
	}
	switch {
	case inlineFlag:
		if i < len(args) {
			return &args[i], nil, false
		}
		return nil, nil, false
	case stdinFlag || i >= len(args) || isStdin(args[i].first()):
		return nil, nil, true
	}
	return nil, &args[i], false
}

// isStdin reports whether a script path is the standard input.
func isStdin(p string) bool {
	return p == "/dev/stdin" || p == "/dev/fd/0" || p == "/proc/self/fd/0"
}

// envSplit finds env -S STRING: the string, and the arguments after it.
func envSplit(args []word) (split word, rest []word, ok bool) {
	for i := 0; i < len(args); i++ {
		v := args[i].first()
		switch {
		case v == "-S" || v == "--split-string":
			if i+1 < len(args) {
				return args[i+1], args[i+2:], true
			}
			return word{}, nil, false
		case strings.HasPrefix(v, "--split-string="):
			return literal(strings.TrimPrefix(v, "--split-string=")), args[i+1:], true
		case strings.HasPrefix(v, "-S"):
			return literal(v[2:]), args[i+1:], true
		case v == "-u" || v == "-C" || v == "--unset" || v == "--chdir":
			i++
		case strings.HasPrefix(v, "-") || strings.Contains(v, "="):
		default:
			return word{}, nil, false
		}
	}
	return word{}, nil, false
}

// quoted returns words as shell text that reads back as the same words,
// for a command string made of them.
func quoted(args []word) []word {
	out := make([]word, len(args))
	for i, a := range args {
		out[i] = literal(unknown)
		if v, ok := a.lit(); ok {
			if q, err := syntax.Quote(v, syntax.LangBash); err == nil {
				out[i] = literal(q)
			}
		}
	}
	return out
}

// optionValue finds the value of a short option (-c VALUE, -lc VALUE)
// or its long form (--command VALUE, --command=VALUE), before "--".
func optionValue(args []word, short byte, long string) (word, bool) {
	for i := 0; i < len(args); i++ {
		v := args[i].first()
		switch {
		case v == "--":
			return word{}, false
		case v == "--"+long:
			if i+1 < len(args) {
				return args[i+1], true
			}
		case strings.HasPrefix(v, "--"+long+"="):
			return literal(strings.TrimPrefix(v, "--"+long+"=")), true
		case len(v) > 1 && v[0] == '-' && v[1] != '-' && v[len(v)-1] == short:
			if i+1 < len(args) {
				return args[i+1], true
			}
		}
	}
	return word{}, false
}

// opt is one option as parseArgs reads it: "r" for -r, "recursive" for
// --recursive.
type opt struct{ name, value string }

// parseArgs splits arguments into options and operands. Options may come
// anywhere before "--", as GNU tools allow, unless posix, where the
// first operand ends them. valued lists the short options that take a
// value, long the long ones (when not written --opt=value).
func parseArgs(args []word, valued string, posix bool, long ...string) (opts []opt, ops []word) {
	done := false
	for i := 0; i < len(args); i++ {
		v := args[i].first()
		if done || len(v) < 2 || v[0] != '-' || strings.Contains(v, unknown) {
			ops = append(ops, args[i])
			done = done || posix
			continue
		}
		if v == "--" {
			done = true
			continue
		}
		if strings.HasPrefix(v, "--") {
			name, value, hasValue := strings.Cut(v[2:], "=")
			if !hasValue && slices.Contains(long, name) && i+1 < len(args) {
				i++
				value = args[i].first()
			}
			opts = append(opts, opt{name, value})
			continue
		}
		for j := 1; j < len(v); j++ {
			if strings.IndexByte(valued, v[j]) < 0 {
				opts = append(opts, opt{name: v[j : j+1]})
				continue
			}
			value := v[j+1:]
			if value == "" && i+1 < len(args) {
				i++
				value = args[i].first()
			}
			opts = append(opts, opt{v[j : j+1], value})
			break
		}
	}
	return opts, ops
}

// hasOpt reports whether one of names is among opts.
func hasOpt(opts []opt, names ...string) bool {
	return slices.ContainsFunc(opts, func(o opt) bool { return slices.Contains(names, o.name) })
}

// optValue returns the value of the last of names among opts.
func optValue(opts []opt, names ...string) (string, bool) {
	for i := len(opts) - 1; i >= 0; i-- {
		if slices.Contains(names, opts[i].name) {
			return opts[i].value, true
		}
	}
	return "", false
}

// cd follows the hook's working directory, while it is known.
func (w *walker) cd(args []word) {
	_, ops := parseArgs(args, "", true)
	if len(ops) == 0 {
		w.c.cwd = "~"
		return
	}
	v, ok := ops[0].lit()
	switch {
	case !ok || v == "" || v == "-":
		w.c.cwd = ""
	case v[0] == '/' || v[0] == '~':
		w.c.cwd = path.Clean(v)
	case w.c.cwd != "":
		w.c.cwd = path.Join(w.c.cwd, v)
	}
	if w.c.cwd != "" && w.c.cwd[0] != '/' && w.c.cwd[0] != '~' {
		w.c.cwd = "" // ~/.. and the like
	}
}

// rules applies the deny list to one command that is not a wrapper.
func (w *walker) rules(name string, args []word, s *site) {
	switch name {
	case "rm":
		opts, ops := parseArgs(args, "", false)
		if hasOpt(opts, "r", "R", "recursive") {
			w.systemOperand(ops, ruleDelete, "recursive delete of ", s)
		}
		if hasOpt(opts, "no-preserve-root") {
			w.deny(ruleDelete, "rm --no-preserve-root, which lets rm delete /", s.call)
		}
	case "chmod", "chown", "chgrp":
		opts, ops := parseArgs(args, "", false, "reference", "from")
		if hasOpt(opts, "R", "recursive") {
			w.systemOperand(ops, ruleChmod, "recursive "+name+" of ", s)
		}
		if hasOpt(opts, "no-preserve-root") {
			w.deny(ruleChmod, name+" --no-preserve-root, which lets it change /", s.call)
		}
	case "mv":
		opts, ops := parseArgs(args, "tS", false, "target-directory", "suffix")
		if _, ok := optValue(opts, "t", "target-directory"); !ok && len(ops) > 0 {
			ops = ops[:len(ops)-1] // the destination
		}
		w.systemOperand(ops, ruleMove, "move of ", s)
	case "find":
		w.find(args, s)
	case "dd":
		for _, a := range args {
			for _, v := range a.vals {
				if dev, ok := strings.CutPrefix(v, "of="); ok && w.c.blockDevice(dev) {
					w.deny(ruleDevice, "dd writes to "+shown(dev), s.call)
				}
			}
		}
	case "tee", "shred":
		_, ops := parseArgs(args, "ns", false, "iterations", "size", "random-source")
		w.deviceOperand(ops, name, s)
	case "cp", "install":
		opts, ops := parseArgs(args, "tSmog", false, "target-directory", "suffix", "mode", "owner", "group")
		if t, ok := optValue(opts, "t", "target-directory"); ok {
			w.deviceOperand([]word{literal(t)}, name, s)
		} else if len(ops) > 1 {
			w.deviceOperand(ops[len(ops)-1:], name, s)
		}
	case "mkswap":
		_, ops := parseArgs(args, "LUpe", false, "label", "uuid", "pagesize", "endianness")
		for _, op := range ops {
			for _, v := range op.vals {
				if w.c.blockDevice(v) {
					w.deny(ruleDiskTool, "mkswap formats "+shown(v), s.call)
				}
			}
		}
	case "kill":
		w.kill(args, s)
	case "killall5":
		w.deny(ruleKillAll, "killall5 signals every process", s.call)
	case "pkill":
		_, ops := parseArgs(args, "uUgGPstF", false, "signal", "euid", "uid", "group", "pgroup", "parent", "session", "terminal", "pidfile", "ns", "nslist")
		for _, op := range ops {
			for _, v := range op.known() {
				if matchesEveryName(v) {
					w.deny(ruleKillAll, fmt.Sprintf("pkill %q matches every process", v), s.call)
				}
			}
		}
	case "init", "telinit":
		if _, ops := parseArgs(args, "", false); len(ops) > 0 {
			if v, _ := ops[0].lit(); set("0", "1", "6", "s", "S")[v] {
				w.deny(rulePower, name+" "+v+" stops the server's services", s.call)
			}
		}
	case "systemctl":
		_, ops := parseArgs(args, "tpHMsno", false, "type", "property", "host", "machine", "signal", "lines", "output", "root", "state", "job-mode", "kill-whom", "message", "when")
		if len(ops) == 0 {
			return
		}
		verb, _ := ops[0].lit()
		if powerVerbs[verb] {
			w.deny(rulePower, "systemctl "+verb+" stops the server", s.call)
		}
		if verb == "isolate" && len(ops) > 1 {
			if t, _ := ops[1].lit(); powerTargets[t] {
				w.deny(rulePower, "systemctl isolate "+t+" stops the server", s.call)
			}
		}
	default:
		switch {
		case powerCommands[name]:
			w.deny(rulePower, name+" stops the server", s.call)
		case diskTools[name] != "":
			w.deny(ruleDiskTool, name+" "+diskTools[name], s.call)
		case strings.HasPrefix(name, "mkfs."):
			w.deny(ruleDiskTool, name+" formats a filesystem", s.call)
		case sqlClients[name]:
			for _, a := range args {
				for _, v := range a.vals {
					w.sql(sqlText(v), s)
					if len(v) > 2 && v[0] == '-' && v[1] != '-' {
						w.sql(sqlText(v[2:]), s) // mysql -e'DROP ...'
					}
				}
			}
			w.stdinSQL(s.stmt, s)
		}
	}
}

// systemOperand denies the first operand that is a system path.
func (w *walker) systemOperand(ops []word, rule, what string, s *site) {
	for _, op := range ops {
		for _, v := range op.known() {
			if w.c.systemPath(v) {
				w.deny(rule, what+v, s.call)
				return
			}
		}
	}
}

// deviceOperand denies the first operand that is a block device.
func (w *walker) deviceOperand(ops []word, name string, s *site) {
	for _, op := range ops {
		for _, v := range op.vals {
			if w.c.blockDevice(v) {
				w.deny(ruleDevice, name+" writes to "+shown(v), s.call)
				return
			}
		}
	}
}

// find denies find -delete and find -exec rm under a system path, and
// applies the rules to the commands it runs (-exec CMD ... ;).
func (w *walker) find(args []word, s *site) {
	i := 0
	for i < len(args) {
		v := args[i].first()
		if v == "-H" || v == "-L" || v == "-P" || strings.HasPrefix(v, "-O") {
			i++
		} else if v == "-D" {
			i += 2
		} else {
			break
		}
	}
	var starts []word
	for ; i < len(args); i++ {
		v := args[i].first()
		if (len(v) > 1 && v[0] == '-') || v == "(" || v == "!" || v == ")" || v == "," {
			break
		}
		starts = append(starts, args[i])
	}
	if len(starts) == 0 {
		starts = []word{literal(".")}
	}
	expr := args[min(i, len(args)):]
	deletes := ""
	for j := 0; j < len(expr); j++ {
		switch v := expr[j].first(); v {
		case "-delete":
			deletes = "find -delete"
		case "-exec", "-execdir", "-ok", "-okdir":
			end := j + 1
			for end < len(expr) && expr[end].first() != ";" && expr[end].first() != "+" {
				end++
			}
			cmd := expr[j+1 : end]
			if name, _ := w.unwrap(cmd); name == "rm" || name == "shred" || name == "unlink" || name == "rmdir" {
				deletes = "find " + v + " " + name
			}
			if w.execs < maxExecs {
				w.execs++
				w.command(cmd, &site{call: s.call})
				w.execs--
			}
			j = end
		}
	}
	if deletes != "" {
		w.systemOperand(starts, ruleDelete, "recursive delete ("+deletes+") of ", s)
	}
}

// kill denies kill -1 as a process: every process the user may signal.
// A lone "kill -1" names a signal and no process.
func (w *walker) kill(args []word, s *site) {
	i := 0
	if len(args) > 0 {
		v := args[0].first()
		switch {
		case v == "-l" || v == "-L" || strings.HasPrefix(v, "--list") || strings.HasPrefix(v, "--table"):
			return
		case v == "-s" || v == "-n" || v == "--signal":
			i = 2
		case len(v) > 1 && v[0] == '-' && v != "--":
			i = 1 // -9, -KILL, -SIGTERM
		}
	}
	if i < len(args) && args[i].first() == "--" {
		i++
	}
	for ; i < len(args); i++ {
		for _, v := range args[i].known() {
			if v == "-1" {
				w.deny(ruleKillAll, "kill -1 signals every process", s.call)
				return
			}
		}
	}
}

// matchesEveryName reports whether a pkill pattern matches any process
// name.
func matchesEveryName(p string) bool {
	re, err := regexp.Compile(p)
	if err != nil {
		return false
	}
	for _, n := range []string{"a", "init", "sshd", "systemd", "postgres"} {
		if !re.MatchString(n) {
			return false
		}
	}
	return true
}

var sqlRules = []struct {
	re    *regexp.Regexp
	label func(match string) string
}{
	{regexp.MustCompile(`(?i)\bdrop\s+(?:table|database|schema|user|tablespace)\b`), func(m string) string { return strings.ToUpper(strings.Join(strings.Fields(m), " ")) }},
	{regexp.MustCompile(`(?i)\btruncate\b`), func(string) string { return "TRUNCATE" }},
	{regexp.MustCompile(`(?i)\bdelete\s+from\s+[\w."]+\s*(?:;|$|["'])`), func(string) string { return "DELETE without WHERE" }},
}

// sql denies SQL that destroys data.
func (w *walker) sql(text string, s *site) {
	for _, r := range sqlRules {
		if m := r.re.FindString(text); m != "" {
			w.deny(ruleSQL, r.label(m)+" in SQL", s.call)
			return
		}
	}
}
