package simfleet

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"
)

// Why an interpreter: a host that runs every exec command through /bin/sh
// forks a shell and, for a deployment, some twenty utilities (mkdir, tar,
// sha256sum, mv, ln…), about 30 ms of CPU per node here. That is what a
// real server spends on its own CPU, but a fleet of 10,000 simulated hosts
// on a 2-core machine would spend minutes on it, and a benchmark would
// measure fork and exec instead of Outpost. ShellInterp runs commands in
// this process with a POSIX shell interpreter (mvdan.cc/sh) and does the
// utilities the deployer's scripts use in Go, with the options those
// scripts pass; a utility called any other way, and any other program,
// still runs as a real process. The deployer's test suite runs against
// this shell too (gateway/deployer), so the two agree on what the scripts
// do.
//
// Known differences from /bin/sh, none of which the deployer relies on:
// $$ is a number outside the kernel's process ids, which kill -0 knows
// while the script runs (see scriptPIDs); signal requests do not reach
// the interpreter (cancelling the session's context stops it between
// commands); `set -C` (noclobber) is honoured for redirections to regular
// files only.

// Shell selects how hosts run exec commands.
type Shell int

const (
	// ShellProcess runs each command with /bin/sh -c, as sshd does.
	ShellProcess Shell = iota
	// ShellInterp runs each command in the fleet's process with a shell
	// interpreter and the deployer's utilities in Go: for benchmarks with
	// thousands of hosts.
	ShellInterp
)

// noclobberVar is the shell variable that `set -C` becomes (see
// compatCall): scoped like the option, to the (sub)shell that set it.
const noclobberVar = "__simfleet_noclobber"

// runInterp runs script in dir with env (NAME=value) and returns its exit
// status.
func runInterp(ctx context.Context, dir string, env []string, params []string, stdin io.Reader, stdout, stderr io.Writer, script string) int {
	file, err := syntax.NewParser().Parse(strings.NewReader(script), "")
	if err != nil {
		fmt.Fprintf(stderr, "sh: %v\n", err)
		return 2
	}
	unescapeAssignments(file)
	pid := scriptPIDs.start()
	defer scriptPIDs.end(pid)
	replacePID(file, pid)
	opts := []interp.RunnerOption{
		interp.StdIO(stdin, stdout, stderr),
		interp.Dir(dir),
		interp.Env(expand.ListEnviron(env...)),
		interp.CallHandler(compatCall),
		interp.OpenHandler(noclobberOpen),
		interp.ExecHandlers(utilities),
	}
	if len(params) > 0 {
		opts = append(opts, interp.Params(append([]string{"--"}, params...)...))
	}
	r, err := interp.New(opts...)
	if err != nil {
		fmt.Fprintf(stderr, "sh: %v\n", err)
		return 2
	}
	err = r.Run(ctx, file)
	var status interp.ExitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &status):
		return int(status)
	default:
		fmt.Fprintf(stderr, "sh: %v\n", err)
		return 2
	}
}

// unescapeAssignments removes the backslashes of unquoted escapes in
// assignment values, which the interpreter keeps: x=a\'b must set a'b, and
// internal/shell quotes a value with a quote in it as 'a'\”b'.
func unescapeAssignments(file *syntax.File) {
	syntax.Walk(file, func(n syntax.Node) bool {
		as, ok := n.(*syntax.Assign)
		if !ok || as.Value == nil {
			return true
		}
		for _, part := range as.Value.Parts {
			lit, ok := part.(*syntax.Lit)
			if !ok || !strings.Contains(lit.Value, `\`) {
				continue
			}
			var b strings.Builder
			for i := 0; i < len(lit.Value); i++ {
				if lit.Value[i] == '\\' && i+1 < len(lit.Value) {
					i++
				}
				b.WriteByte(lit.Value[i])
			}
			lit.Value = b.String()
		}
		return true
	})
}

// scriptPIDs hands each interpreted script a process id of its own for $$
// (the interpreter would give every script the fleet's), outside the
// kernel's range so that no real process has it, and answers kill -0 for
// it while the script runs.
var scriptPIDs = &pidRegistry{next: 1 << 23, live: map[int]bool{}}

type pidRegistry struct {
	mu   sync.Mutex
	next int
	live map[int]bool
}

func (r *pidRegistry) start() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.live[r.next] = true
	return r.next
}

func (r *pidRegistry) end(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.live, pid)
}

// state reports whether pid is a script's and, if so, whether it runs.
func (r *pidRegistry) state(pid int) (ours, running bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return pid > 1<<23, r.live[pid]
}

// replacePID turns every plain $$ of file into pid.
func replacePID(file *syntax.File, pid int) {
	lit := strconv.Itoa(pid)
	replace := func(parts []syntax.WordPart) {
		for i, p := range parts {
			pe, ok := p.(*syntax.ParamExp)
			if ok && pe.Param != nil && pe.Param.Value == "$" && pe.Exp == nil && pe.Repl == nil &&
				pe.Slice == nil && pe.Index == nil && !pe.Length && !pe.Excl && !pe.Width {
				parts[i] = &syntax.Lit{ValuePos: pe.Pos(), ValueEnd: pe.End(), Value: lit}
			}
		}
	}
	syntax.Walk(file, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.Word:
			replace(n.Parts)
		case *syntax.DblQuoted:
			replace(n.Parts)
		}
		return true
	})
}

// compatCall rewrites the builtin calls the interpreter does not take as
// the deployer writes them: `cd -P -- DIR` (it takes one operand and no
// options), `set -C` and kill.
func compatCall(ctx context.Context, args []string) ([]string, error) {
	switch {
	case args[0] == "cd" && len(args) > 2:
		physical := false
		rest := args[1:]
		for len(rest) > 1 && strings.HasPrefix(rest[0], "-") {
			if rest[0] == "-P" {
				physical = true
			}
			if rest[0] == "--" {
				rest = rest[1:]
				break
			}
			rest = rest[1:]
		}
		dir := rest[0]
		if physical {
			abs := dir
			if !filepath.IsAbs(abs) {
				abs = filepath.Join(interp.HandlerCtx(ctx).Dir, abs)
			}
			if real, err := filepath.EvalSymlinks(abs); err == nil {
				dir = real
			}
		}
		return []string{"cd", dir}, nil
	case args[0] == "set" && len(args) == 2 && args[1] == "-C":
		return []string{"eval", noclobberVar + "=1"}, nil
	case args[0] == "kill":
		// A builtin the interpreter names but does not implement: as a
		// path it reaches the exec handlers (killUtil, or /bin/kill).
		return append([]string{"/bin/kill"}, args[1:]...), nil
	}
	return args, nil
}

// noclobberOpen refuses `>` onto an existing regular file after `set -C`.
func noclobberOpen(ctx context.Context, p string, flag int, perm os.FileMode) (io.ReadWriteCloser, error) {
	hc := interp.HandlerCtx(ctx)
	if flag&os.O_TRUNC != 0 && hc.Env.Get(noclobberVar).IsSet() {
		abs := p
		if !filepath.IsAbs(abs) {
			abs = filepath.Join(hc.Dir, abs)
		}
		if fi, err := os.Stat(abs); err != nil || fi.Mode().IsRegular() {
			flag = flag&^os.O_TRUNC | os.O_EXCL
		}
	}
	return interp.DefaultOpenHandler()(ctx, p, flag, perm)
}

// utility runs one program in Go. ok false means it was called in a way
// this package does not implement, and the real program runs instead.
type utility func(u *call) (status int, ok bool)

var utilityTable map[string]utility

func init() {
	// Assigned here: sh refers back to the table through runInterp.
	utilityTable = map[string]utility{
		"cat": catUtil, "df": dfUtil, "kill": killUtil, "ln": lnUtil, "ls": lsUtil,
		"mkdir": mkdirUtil, "mv": mvUtil, "openssl": opensslUtil, "readlink": readlinkUtil,
		"rm": rmUtil, "sh": shUtil, "sha256sum": sha256sumUtil, "tail": tailUtil,
		"tar": tarUtil, "touch": touchUtil,
	}
}

// utilities is the interpreter's exec middleware.
func utilities(next interp.ExecHandlerFunc) interp.ExecHandlerFunc {
	return func(ctx context.Context, args []string) error {
		if f := utilityTable[path.Base(args[0])]; f != nil {
			u := &call{ctx: ctx, hc: interp.HandlerCtx(ctx), name: path.Base(args[0]), args: args[1:]}
			if status, ok := f(u); ok {
				if status != 0 {
					return interp.ExitStatus(status)
				}
				return nil
			}
		}
		return next(ctx, args)
	}
}

// call is one utility invocation.
type call struct {
	ctx  context.Context
	hc   interp.HandlerContext
	name string
	args []string
}

// flags splits the leading single-letter options (combined or not, up
// to "--") from the operands and reports whether every letter is in
// allowed.
func (u *call) flags(allowed string) (set string, operands []string, ok bool) {
	args := u.args
	for len(args) > 0 && len(args[0]) > 1 && args[0][0] == '-' {
		if args[0] == "--" {
			args = args[1:]
			break
		}
		if strings.HasPrefix(args[0], "--") {
			return "", nil, false
		}
		for _, c := range args[0][1:] {
			if !strings.ContainsRune(allowed, c) {
				return "", nil, false
			}
			set += string(c)
		}
		args = args[1:]
	}
	return set, args, true
}

func (u *call) abs(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(u.hc.Dir, p)
}

// fail prints "name: message" to stderr and returns status.
func (u *call) fail(status int, format string, args ...any) int {
	fmt.Fprintf(u.hc.Stderr, u.name+": "+format+"\n", args...)
	return status
}

// errText is err's description without the operation and path that
// os.PathError adds, as coreutils prints it.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	if errors.Is(err, fs.ErrNotExist) {
		return "No such file or directory"
	}
	if errors.Is(err, fs.ErrExist) {
		return "File exists"
	}
	return err.Error()
}

func mkdirUtil(u *call) (int, bool) {
	f, ops, ok := u.flags("p")
	if !ok || len(ops) == 0 {
		return 0, false
	}
	status := 0
	for _, p := range ops {
		var err error
		if strings.Contains(f, "p") {
			err = os.MkdirAll(u.abs(p), 0o777)
		} else {
			err = os.Mkdir(u.abs(p), 0o777)
		}
		if err != nil {
			status = u.fail(1, "cannot create directory '%s': %s", p, errText(err))
		}
	}
	return status, true
}

func rmUtil(u *call) (int, bool) {
	f, ops, ok := u.flags("rf")
	if !ok {
		return 0, false
	}
	recursive, force := strings.Contains(f, "r"), strings.Contains(f, "f")
	status := 0
	for _, p := range ops {
		fi, err := os.Lstat(u.abs(p))
		switch {
		case err != nil:
			if !force {
				status = u.fail(1, "cannot remove '%s': %s", p, errText(err))
			}
			continue
		case fi.IsDir() && !recursive:
			status = u.fail(1, "cannot remove '%s': Is a directory", p)
			continue
		}
		if recursive {
			err = os.RemoveAll(u.abs(p))
		} else {
			err = os.Remove(u.abs(p))
		}
		if err != nil {
			status = u.fail(1, "cannot remove '%s': %s", p, errText(err))
		}
	}
	return status, true
}

func mvUtil(u *call) (int, bool) {
	f, ops, ok := u.flags("Tf")
	if !ok || len(ops) != 2 {
		return 0, false
	}
	src, dst := u.abs(ops[0]), u.abs(ops[1])
	if !strings.Contains(f, "T") {
		if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
			dst = filepath.Join(dst, filepath.Base(src))
		}
	}
	if err := os.Rename(src, dst); err != nil {
		return u.fail(1, "cannot move '%s' to '%s': %s", ops[0], ops[1], errText(err)), true
	}
	return 0, true
}

func lnUtil(u *call) (int, bool) {
	f, ops, ok := u.flags("s")
	if !ok || f != "s" || len(ops) != 2 {
		return 0, false
	}
	if err := os.Symlink(ops[0], u.abs(ops[1])); err != nil {
		return u.fail(1, "failed to create symbolic link '%s': %s", ops[1], errText(err)), true
	}
	return 0, true
}

func catUtil(u *call) (int, bool) {
	_, ops, ok := u.flags("")
	if !ok {
		return 0, false
	}
	if len(ops) == 0 {
		_, _ = io.Copy(u.hc.Stdout, u.hc.Stdin)
		return 0, true
	}
	status := 0
	for _, p := range ops {
		f, err := os.Open(u.abs(p))
		if err != nil {
			status = u.fail(1, "%s: %s", p, errText(err))
			continue
		}
		_, err = io.Copy(u.hc.Stdout, f)
		f.Close()
		if err != nil {
			status = u.fail(1, "%s: %s", p, errText(err))
		}
	}
	return status, true
}

func touchUtil(u *call) (int, bool) {
	f, ops, ok := u.flags("c")
	if !ok || f != "c" {
		return 0, false
	}
	now := time.Now()
	for _, p := range ops {
		_ = os.Chtimes(u.abs(p), now, now) // -c: a missing file is no error
	}
	return 0, true
}

func readlinkUtil(u *call) (int, bool) {
	f, ops, ok := u.flags("")
	if !ok || f != "" || len(ops) != 1 {
		return 0, false
	}
	target, err := os.Readlink(u.abs(ops[0]))
	if err != nil {
		return 1, true
	}
	fmt.Fprintln(u.hc.Stdout, target)
	return 0, true
}

// lsUtil does `ls -1t -- FILE...`: the files, newest first.
func lsUtil(u *call) (int, bool) {
	f, ops, ok := u.flags("1t")
	if !ok || f != "1t" && f != "t1" {
		return 0, false
	}
	type entry struct {
		name string
		mod  time.Time
	}
	var found []entry
	status := 0
	for _, p := range ops {
		fi, err := os.Lstat(u.abs(p))
		if err != nil {
			status = u.fail(2, "cannot access '%s': %s", p, errText(err))
			continue
		}
		if fi.IsDir() {
			return 0, false // a directory's listing: the real ls
		}
		found = append(found, entry{p, fi.ModTime()})
	}
	slices.SortStableFunc(found, func(a, b entry) int {
		if c := b.mod.Compare(a.mod); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	for _, e := range found {
		fmt.Fprintln(u.hc.Stdout, e.name)
	}
	return status, true
}

// dfUtil does `df -P -- PATH` in POSIX format.
func dfUtil(u *call) (int, bool) {
	f, ops, ok := u.flags("P")
	if !ok || f != "P" || len(ops) != 1 {
		return 0, false
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(u.abs(ops[0]), &st); err != nil {
		return u.fail(1, "%s: %s", ops[0], errText(err)), true
	}
	bs := uint64(st.Bsize)
	total, free, avail := st.Blocks*bs/1024, st.Bfree*bs/1024, st.Bavail*bs/1024
	used := total - free
	capacity := uint64(0)
	if used+avail > 0 {
		capacity = (used*100 + used + avail - 1) / (used + avail)
	}
	fmt.Fprintf(u.hc.Stdout, "Filesystem     1024-blocks      Used Available Capacity Mounted on\n")
	fmt.Fprintf(u.hc.Stdout, "simfleet %d %d %d %d%% /\n", total, used, avail, capacity)
	return 0, true
}

// sha256sumUtil does `sha256sum -b` of standard input.
func sha256sumUtil(u *call) (int, bool) {
	f, ops, ok := u.flags("b")
	if !ok || len(ops) != 0 || f != "b" {
		return 0, false
	}
	return u.digestStdin("-: ", "-"), true
}

// opensslUtil does `openssl dgst -sha256 -r` of standard input.
func opensslUtil(u *call) (int, bool) {
	if !slices.Equal(u.args, []string{"dgst", "-sha256", "-r"}) {
		return 0, false
	}
	return u.digestStdin("", "stdin"), true
}

// digestStdin prints the SHA-256 of standard input as "<hex> *<name>",
// the binary-mode line both tools print; a read error is reported after
// errPrefix.
func (u *call) digestStdin(errPrefix, name string) int {
	h := sha256.New()
	if _, err := io.Copy(h, u.hc.Stdin); err != nil {
		return u.fail(1, "%s%s", errPrefix, errText(err))
	}
	fmt.Fprintf(u.hc.Stdout, "%x *%s\n", h.Sum(nil), name)
	return 0
}

// tailUtil does `tail -c N -- FILE`.
func tailUtil(u *call) (int, bool) {
	if len(u.args) < 3 || u.args[0] != "-c" {
		return 0, false
	}
	n, err := strconv.ParseInt(u.args[1], 10, 64)
	ops := u.args[2:]
	if len(ops) > 0 && ops[0] == "--" {
		ops = ops[1:]
	}
	if err != nil || n < 0 || len(ops) != 1 {
		return 0, false
	}
	f, err := os.Open(u.abs(ops[0]))
	if err != nil {
		return u.fail(1, "cannot open '%s' for reading: %s", ops[0], errText(err)), true
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, io.SeekStart)
	}
	_, _ = io.Copy(u.hc.Stdout, f)
	return 0, true
}

// killUtil answers `kill -0 PID` for an interpreted script's $$.
func killUtil(u *call) (int, bool) {
	if len(u.args) != 2 || u.args[0] != "-0" {
		return 0, false
	}
	pid, err := strconv.Atoi(u.args[1])
	if err != nil {
		return 0, false
	}
	ours, running := scriptPIDs.state(pid)
	switch {
	case !ours:
		return 0, false
	case running:
		return 0, true
	default:
		return u.fail(1, "(%d) - No such process", pid), true
	}
}

// shUtil runs `sh -c COMMAND [NAME ARG...]` and `sh FILE [ARG...]` in
// the interpreter.
func shUtil(u *call) (int, bool) {
	var script string
	var params []string
	switch {
	case len(u.args) >= 2 && u.args[0] == "-c":
		script = u.args[1]
		if len(u.args) > 3 {
			params = u.args[3:]
		}
	case len(u.args) >= 1 && !strings.HasPrefix(u.args[0], "-"):
		data, err := os.ReadFile(u.abs(u.args[0]))
		if err != nil {
			return u.fail(2, "cannot open %s: %s", u.args[0], errText(err)), true
		}
		script, params = string(data), u.args[1:]
	default:
		return 0, false
	}
	var env []string
	u.hc.Env.Each(func(name string, vr expand.Variable) bool {
		if vr.Exported && vr.IsSet() {
			env = append(env, name+"="+vr.String())
		}
		return true
	})
	return runInterp(u.ctx, u.hc.Dir, env, params, u.hc.Stdin, u.hc.Stdout, u.hc.Stderr, script), true
}

// tarUtil does `tar -xf FILE -C DIR --no-same-owner` and its -xzf form,
// with or without --no-same-permissions (setuid, setgid and sticky bits are
// never restored here either way).
func tarUtil(u *call) (int, bool) {
	a := u.args
	if len(a) == 6 && a[5] == "--no-same-permissions" {
		a = a[:5]
	}
	if len(a) != 5 || (a[0] != "-xf" && a[0] != "-xzf") || a[2] != "-C" || a[4] != "--no-same-owner" {
		return 0, false
	}
	f, err := os.Open(u.abs(a[1]))
	if err != nil {
		return u.fail(2, "%s: Cannot open: %s", a[1], errText(err)), true
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	if a[0] == "-xzf" {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return u.fail(2, "%s: not in gzip format", a[1]), true
		}
		r = zr
	}
	if err := extract(tar.NewReader(r), u.abs(a[3])); err != nil {
		return u.fail(2, "%v", err), true
	}
	return 0, true
}

// inside returns dir/name, or an error when name leaves dir.
func inside(dir, name string) (string, error) {
	clean := filepath.Clean(name)
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%s: member outside the directory", name)
	}
	return filepath.Join(dir, clean), nil
}

// extract writes an archive's directories, regular files, symbolic and
// hard links under dir; a member outside dir is an error, as the
// deployer's own scan makes it before any upload.
func extract(tr *tar.Reader, dir string) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		dst, err := inside(dir, hdr.Name)
		if err != nil {
			return err
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o777); err != nil {
				return err
			}
			if err := os.Chmod(dst, mode); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o777); err != nil {
				return err
			}
			out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if err := os.Chmod(dst, mode); err != nil {
				return err
			}
			if err := os.Chtimes(dst, hdr.ModTime, hdr.ModTime); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, dst); err != nil {
				return err
			}
		case tar.TypeLink:
			src, err := inside(dir, hdr.Linkname)
			if err != nil {
				return err
			}
			if err := os.Link(src, dst); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: member type %q not supported by simfleet", hdr.Name, hdr.Typeflag)
		}
	}
}
