package hookpolicy

import (
	"fmt"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// checker holds what one Check learns while it reads a hook, in the
// order the text says it; nested command strings share it.
type checker struct {
	// vars holds the values assigned literally to variables so far
	// (X=/srv/app, for d in /etc /usr), by name.
	vars map[string][]string
	// cwd is where the last cd with a known target went ("/", "~/app");
	// "" when unknown, as at the start (the release directory).
	cwd string
	// parsed counts the bytes parsed so far, against maxParsedBytes.
	parsed int
}

// tooComplex denies what cannot be checked in bounded time.
func tooComplex(reason, call string) *DeniedError {
	return &DeniedError{Rule: ruleTooComplex, Reason: reason, Call: call}
}

// script checks one command string, the hook itself at depth 0. known is
// false when parts of src are placeholders for text only known when the
// hook runs: a parse error then says nothing about the real text.
func (c *checker) script(src string, depth int, known bool) (*DeniedError, error) {
	if depth > maxDepth {
		return tooComplex(fmt.Sprintf("command strings nested more than %d deep", maxDepth), src), nil
	}
	if c.parsed += len(src); c.parsed > maxParsedBytes {
		return tooComplex(fmt.Sprintf("more than %d bytes of command strings to read", maxParsedBytes), src), nil
	}
	if n := bracketDepth(src); n > maxBrackets {
		return tooComplex(fmt.Sprintf("brackets nested %d deep, more than %d", n, maxBrackets), src), nil
	}
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(src), "")
	if err != nil {
		switch {
		case !known:
			return nil, nil
		case depth == 0:
			return nil, fmt.Errorf("%w: %v", ErrUnparsable, err)
		default:
			return nil, fmt.Errorf("%w: the command string %q: %v", ErrUnparsable, clip(src), err)
		}
	}
	w := &walker{c: c, src: src, depth: depth, funcs: map[string][]int{}}
	syntax.Walk(f, w.visit)
	return w.denied, w.err
}

// bracketDepth is how deeply brackets of any kind nest in s, quotes
// ignored: cheap, and enough to bound the parser's time.
func bracketDepth(s string) int {
	d, max := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(', '{', '[':
			if d++; d > max {
				max = d
			}
		case ')', '}', ']':
			if d > 0 {
				d--
			}
		}
	}
	return max
}

// walker visits one parsed command string, keeping the nodes above the
// current one.
type walker struct {
	c     *checker
	src   string
	depth int
	stack []syntax.Node
	// forks counts the nodes on the stack whose commands the shell runs
	// in a child process: background, pipelines, subshells, $(...).
	forks int
	// funcs holds, for each function being declared, forks when its
	// declaration was entered (a stack: the innermost last).
	funcs map[string][]int
	// execs counts the find -exec commands being checked, nested.
	execs int

	denied *DeniedError
	err    error
}

// site is where a command runs, for the rules that look around it.
type site struct {
	// stmt runs the command, with its redirections (stdin); nil for a
	// command run by another (find -exec).
	stmt *syntax.Stmt
	// call is the command as written, for DeniedError.Call.
	call string
}

func (w *walker) done() bool { return w.denied != nil || w.err != nil }

func (w *walker) deny(rule, reason, call string) {
	if !w.done() {
		w.denied = &DeniedError{Rule: rule, Reason: reason, Call: call}
	}
}

// text is the source of n.
func (w *walker) text(n syntax.Node) string {
	from, to := int(n.Pos().Offset()), int(n.End().Offset())
	if from < 0 || to > len(w.src) || from > to {
		return w.src
	}
	return w.src[from:to]
}

// forking reports whether the shell runs what is under n in a child
// process.
func forking(n syntax.Node) bool {
	switch n := n.(type) {
	case *syntax.Stmt:
		return n.Background || n.Coprocess || n.Disown
	case *syntax.BinaryCmd:
		return n.Op == syntax.Pipe || n.Op == syntax.PipeAll
	case *syntax.Subshell, *syntax.CmdSubst, *syntax.ProcSubst:
		return true
	}
	return false
}

// visit is the syntax.Walk callback: n is nil when leaving the last
// node it returned true for.
func (w *walker) visit(n syntax.Node) bool {
	if n == nil {
		top := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		if forking(top) {
			w.forks--
		}
		if fd, ok := top.(*syntax.FuncDecl); ok && fd.Name != nil {
			s := w.funcs[fd.Name.Value]
			w.funcs[fd.Name.Value] = s[:len(s)-1]
		}
		return true
	}
	if w.done() {
		return false
	}
	if len(w.stack) >= maxTreeDepth {
		w.deny(ruleTooComplex, fmt.Sprintf("commands nested more than %d deep", maxTreeDepth), w.text(n))
		return false
	}
	switch n := n.(type) {
	case *syntax.Comment:
		return false
	case *syntax.Stmt:
		w.redirects(n)
	case *syntax.BinaryCmd:
		if n.Op == syntax.Pipe || n.Op == syntax.PipeAll {
			w.pipe(n)
		}
	case *syntax.CallExpr:
		w.callExpr(n)
	case *syntax.DeclClause:
		for _, a := range n.Args {
			w.assign(a)
		}
	case *syntax.WordIter:
		var vals []string
		for _, it := range n.Items {
			for _, v := range w.c.word(it).vals {
				vals = appendValue(vals, v)
			}
		}
		w.c.vars[n.Name.Value] = append(vals, unknown)
	}
	if w.done() {
		return false
	}
	w.stack = append(w.stack, n)
	if forking(n) {
		w.forks++
	}
	if fd, ok := n.(*syntax.FuncDecl); ok && fd.Name != nil {
		w.funcs[fd.Name.Value] = append(w.funcs[fd.Name.Value], w.forks)
	}
	return true
}

// assign records X=value.
func (w *walker) assign(a *syntax.Assign) {
	if a.Name == nil || a.Naked {
		return
	}
	if a.Value == nil || a.Array != nil || a.Index != nil || a.Append {
		delete(w.c.vars, a.Name.Value)
		return
	}
	w.c.vars[a.Name.Value] = w.c.word(a.Value).vals
}

// parentStmt is the statement on top of the stack, if any.
func (w *walker) parentStmt() *syntax.Stmt {
	if len(w.stack) == 0 {
		return nil
	}
	s, _ := w.stack[len(w.stack)-1].(*syntax.Stmt)
	return s
}

func (w *walker) callExpr(ce *syntax.CallExpr) {
	if len(ce.Args) == 0 {
		for _, a := range ce.Assigns {
			w.assign(a)
		}
		return
	}
	args := make([]word, len(ce.Args))
	for i, a := range ce.Args {
		args[i] = w.c.word(a)
	}
	w.forkBomb(args[0])
	w.command(args, &site{stmt: w.parentStmt(), call: w.text(ce)})
}

// forkBomb denies a function that starts itself in a child process:
// each call starts more, without end (:(){ :|:& };: under any name).
func (w *walker) forkBomb(name word) {
	for _, n := range name.known() {
		starts := w.funcs[n]
		if len(starts) == 0 || w.forks <= starts[len(starts)-1] {
			continue
		}
		call := n
		for i := len(w.stack) - 1; i >= 0; i-- {
			if fd, ok := w.stack[i].(*syntax.FuncDecl); ok && fd.Name != nil && fd.Name.Value == n {
				call = w.text(fd)
				break
			}
		}
		w.deny(ruleForkBomb, fmt.Sprintf("function %s starts copies of itself in the background or a pipeline", n), call)
		return
	}
}

// redirects denies a statement that writes to a block device.
func (w *walker) redirects(s *syntax.Stmt) {
	for _, r := range s.Redirs {
		switch r.Op {
		case syntax.RdrOut, syntax.AppOut, syntax.RdrInOut, syntax.DplOut, syntax.RdrClob,
			syntax.AppClob, syntax.RdrAll, syntax.RdrAllClob, syntax.AppAll, syntax.AppAllClob:
		default:
			continue
		}
		for _, v := range w.c.word(r.Word).vals {
			if w.c.blockDevice(v) {
				w.deny(ruleDevice, "write to "+shown(v), w.text(s))
				return
			}
		}
	}
}

// nested checks the readings of a command string that a command runs
// (sh -c STRING, eval ...).
func (w *walker) nested(vals []string) {
	for _, v := range vals {
		if w.done() {
			return
		}
		text, known := scriptText(v)
		d, err := w.c.script(text, w.depth+1, known)
		if err != nil {
			w.err = err
		} else if d != nil {
			w.denied = d
		}
	}
}

// joined returns the readings of args joined by spaces, as eval and
// ssh make one command string of their arguments.
func joined(args []word) []string {
	pieces := make([][]string, 0, 2*len(args))
	for i, a := range args {
		if i > 0 {
			pieces = append(pieces, []string{" "})
		}
		pieces = append(pieces, a.vals)
	}
	return concat(pieces)
}

// pipe looks at what a pipeline feeds to its last command: a shell fed
// from curl, SQL fed to psql.
func (w *walker) pipe(bc *syntax.BinaryCmd) {
	consumer := headCall(bc.Y)
	if consumer == nil {
		return
	}
	name, args := w.unwrap(w.words(consumer.Args))
	if name == "" {
		return
	}
	// The commands just before, the few that matter.
	const window = 8
	var feeders []*syntax.Stmt
	cur := bc.X
	for len(feeders) < window {
		if b, ok := cur.Cmd.(*syntax.BinaryCmd); ok && (b.Op == syntax.Pipe || b.Op == syntax.PipeAll) {
			feeders = append(feeders, b.Y)
			cur = b.X
			continue
		}
		feeders = append(feeders, cur)
		break
	}
	s := &site{call: w.text(bc)}
	switch {
	case interpreters[name] || shells[name]:
		if _, _, stdin := interpArgs(name, args); !stdin {
			return
		}
		for _, f := range feeders {
			w.feeder(name, f, s)
		}
	case sqlClients[name]:
		for _, f := range feeders {
			for _, ce := range topCalls(f) {
				fname, fargs := w.unwrap(w.words(ce.Args))
				if text, ok := printedText(fname, fargs); ok {
					w.sql(text, s)
				}
			}
			w.stdinSQL(f, s)
		}
	}
}

// feeder denies what feeds an interpreter code nobody can read in the
// hook: a download, decoded data, text printed from a variable. Plain
// text printed for a shell is checked as a command string.
func (w *walker) feeder(interp string, f *syntax.Stmt, s *site) {
	w.opaqueSource(interp, f, s)
	for _, ce := range topCalls(f) {
		if w.done() {
			return
		}
		name, args := w.unwrap(w.words(ce.Args))
		switch name {
		case "echo", "printf":
			text, ok := printedText(name, args)
			if !ok {
				w.deny(ruleShellFeed, fmt.Sprintf("%s runs text printed by %s from variables or escapes", interp, name), s.call)
				return
			}
			if shells[interp] {
				w.nested([]string{text})
			}
		case "cat":
			if shells[interp] {
				w.stdinScript(interp, &site{stmt: stmtOf(f, ce), call: s.call}, true)
			}
		}
	}
}

// opaqueSource denies n when it holds a command that downloads or
// decodes, whose output interp runs.
func (w *walker) opaqueSource(interp string, n syntax.Node, s *site) {
	if n == nil || w.done() {
		return
	}
	syntax.Walk(n, func(n syntax.Node) bool {
		if w.done() {
			return false
		}
		if ce, ok := n.(*syntax.CallExpr); ok && len(ce.Args) > 0 {
			if name, _ := w.unwrap(w.words(ce.Args)); fetchers[name] {
				w.deny(ruleShellFeed, fmt.Sprintf("%s runs the output of %s", interp, name), s.call)
				return false
			}
		}
		return true
	})
}

// stdinScript checks what a statement's redirections give an
// interpreter reading its program from stdin: a here-document, a
// here-string (checked as command strings when script), or a file that
// is a download (< <(curl ...)).
func (w *walker) stdinScript(interp string, s *site, script bool) {
	if s.stmt == nil {
		return
	}
	for _, r := range s.stmt.Redirs {
		var body *syntax.Word
		switch r.Op {
		case syntax.Hdoc, syntax.DashHdoc:
			body = r.Hdoc
		case syntax.WordHdoc:
			body = r.Word
		case syntax.RdrIn:
			w.opaqueSource(interp, r.Word, s)
			continue
		default:
			continue
		}
		if body == nil {
			continue
		}
		w.opaqueSource(interp, body, s)
		if script {
			w.nested(w.c.values(body.Parts, r.Op != syntax.WordHdoc))
		}
	}
}

// stdinSQL checks the SQL that a statement's here-documents and
// here-strings give a client.
func (w *walker) stdinSQL(stmt *syntax.Stmt, s *site) {
	if stmt == nil {
		return
	}
	for _, r := range stmt.Redirs {
		switch {
		case (r.Op == syntax.Hdoc || r.Op == syntax.DashHdoc) && r.Hdoc != nil:
			for _, v := range w.c.values(r.Hdoc.Parts, true) {
				w.sql(v, s)
			}
		case r.Op == syntax.WordHdoc:
			for _, v := range w.c.word(r.Word).vals {
				w.sql(v, s)
			}
		}
	}
}

// headCall is the first simple command a statement runs, looking into
// { ...; } and ( ... ).
func headCall(s *syntax.Stmt) *syntax.CallExpr {
	for range maxBrackets + 1 {
		switch c := s.Cmd.(type) {
		case *syntax.CallExpr:
			if len(c.Args) == 0 {
				return nil
			}
			return c
		case *syntax.Block:
			if len(c.Stmts) == 0 {
				return nil
			}
			s = c.Stmts[0]
		case *syntax.Subshell:
			if len(c.Stmts) == 0 {
				return nil
			}
			s = c.Stmts[0]
		default:
			return nil
		}
	}
	return nil
}

// topCalls are the simple commands whose output a statement writes:
// itself, or those of the { ...; } or ( ... ) it is.
func topCalls(s *syntax.Stmt) []*syntax.CallExpr {
	switch c := s.Cmd.(type) {
	case *syntax.CallExpr:
		if len(c.Args) > 0 {
			return []*syntax.CallExpr{c}
		}
	case *syntax.Block:
		return callsOf(c.Stmts)
	case *syntax.Subshell:
		return callsOf(c.Stmts)
	}
	return nil
}

func callsOf(stmts []*syntax.Stmt) []*syntax.CallExpr {
	var out []*syntax.CallExpr
	for _, s := range stmts {
		if ce, ok := s.Cmd.(*syntax.CallExpr); ok && len(ce.Args) > 0 {
			out = append(out, ce)
		}
	}
	return out
}

// stmtOf returns the statement of f that runs ce.
func stmtOf(f *syntax.Stmt, ce *syntax.CallExpr) *syntax.Stmt {
	if f.Cmd == ce {
		return f
	}
	var stmts []*syntax.Stmt
	switch c := f.Cmd.(type) {
	case *syntax.Block:
		stmts = c.Stmts
	case *syntax.Subshell:
		stmts = c.Stmts
	}
	for _, s := range stmts {
		if s.Cmd == ce {
			return s
		}
	}
	return nil
}

// words resolves parsed words.
func (w *walker) words(ws []*syntax.Word) []word {
	out := make([]word, len(ws))
	for i, a := range ws {
		out[i] = w.c.word(a)
	}
	return out
}
