package deployer

import (
	"fmt"
	"strings"

	"github.com/outposthq/outpost/internal/deploypath"
	"github.com/outposthq/outpost/internal/shell"
)

// The deploy path guard. A plan's deploy path is checked where it is
// written (internal/plan, with internal/deploypath's table) and again by
// Spec.CheckAndSetDefaults, but only the node knows what the path is:
// /srv/app may be a symlink to the SSH user's home, and only the node knows
// that home and whether the directory holds .ssh. So every lock script
// starts with the guard, before it creates or changes anything: it
// resolves the path with cd -P (its longest existing part; the rest is
// created later by mkdir -p and holds no symlink yet), then refuses, with
// exit code exitRefused and the node untouched,
//
//   - a real path that deploypath's table refuses (a system directory);
//   - a real path in an .ssh directory;
//   - the SSH user's home ($HOME, and the directory the session started
//     in, which sshd sets to the home of the account), or a directory
//     holding it: the in-place layout would move the home into a backup;
//   - in the in-place layout, a directory holding .ssh, which the switch
//     would move into a backup, locking the SSH user out;
//   - a part of the path that exists and is no directory, or that cannot
//     be entered to resolve it.
//
// The guard prints "@refused", the real path, the kind of refusal and a
// detail; refusedError turns them into a *PathRefusedError whose reason
// comes from the same table, so the plan and the node say the same thing.

// exitRefused is the exit code of a script whose guard refused the deploy
// path (EX_CONFIG).
const exitRefused = 78

// Kinds of refusal the guard prints.
const (
	refusedSystem    = "system"     // the table refuses the real path
	refusedHome      = "home"       // the real path is the SSH user's home
	refusedHoldsHome = "holds-home" // the SSH user's home is below the real path
	refusedHoldsSSH  = "holds-ssh"  // in place: the directory holds .ssh
	refusedNotDir    = "not-dir"    // a part of the path is not a directory
	refusedUnresolv  = "unresolved" // cd -P into the existing part failed
)

// guardPatterns are the case patterns of the guard, built once from
// deploypath's table: system matches the real path itself, children its
// parent directory (deploypath.Children).
var guardPatterns = func() (p struct{ system, children string }) {
	var system, children []string
	for _, r := range deploypath.Rules() {
		q := shell.Quote(r.Dir)
		system = append(system, q)
		switch r.Scope {
		case deploypath.Tree:
			system = append(system, q+"/*")
		case deploypath.Children:
			children = append(children, q)
		}
	}
	p.system, p.children = strings.Join(system, "|"), strings.Join(children, "|")
	return p
}()

// guard appends the deploy path guard for the path in $P (absolute and
// clean); inplace adds the in-place layout's .ssh rule. It changes the
// working directory, which the lock scripts do not use.
func guard(s *script, inplace bool) {
	ssh := shell.Quote(deploypath.SSHDir)
	s.line(`refuse() { printf '@refused\n%s\n%s\n%s\n' "$1" "$2" "${3:-}"; ` + exit(exitRefused) + `; }`)
	s.line(`login=; ! cd -P -- . 2>/dev/null || login=$PWD`)
	s.line(`home=${HOME:-}; [ -z "$home" ] || ! cd -P -- "$home" 2>/dev/null || home=$PWD`)
	s.line(`real=$P; rest=`)
	s.line(`while [ ! -d "$real" ]; do`)
	s.line(`  if [ -e "$real" ] || [ -L "$real" ]; then refuse "$real" ` + refusedNotDir + `; fi`)
	s.line(`  rest=/${real##*/}$rest; real=${real%/*}; real=${real:-/}`)
	s.line(`done`)
	s.line(`cd -P -- "$real" 2>/dev/null || refuse "$real" ` + refusedUnresolv)
	s.line(`real=${PWD%/}$rest; real=${real:-/}`)
	s.line(`case $real in ` + guardPatterns.system + `) refuse "$real" ` + refusedSystem + `;; esac`)
	s.line(`case ${real%/*} in ` + guardPatterns.children + `) refuse "$real" ` + refusedSystem + `;; esac`)
	s.line(`case $real/ in */` + ssh + `/*) refuse "$real" ` + refusedSystem + `;; esac`)
	s.line(`for x in "$home" "$login"; do`)
	s.line(`  [ -n "$x" ] || continue`)
	s.line(`  [ "$real" != "$x" ] || refuse "$real" ` + refusedHome + ` "$x"`)
	s.line(`  case $x in "$real"/*) refuse "$real" ` + refusedHoldsHome + ` "$x";; esac`)
	s.line(`done`)
	if inplace {
		s.line(`if [ -e "$real/"` + ssh + ` ] || [ -L "$real/"` + ssh + ` ]; then refuse "$real" ` + refusedHoldsSSH + `; fi`)
	}
}

// refusedError turns the guard's "refused" section into the error.
func (dep *deployment) refusedError(section string) error {
	f := strings.SplitN(strings.TrimSuffix(section, "\n"), "\n", 3)
	for len(f) < 3 {
		f = append(f, "")
	}
	e := &PathRefusedError{Path: dep.dir, Real: f[0]}
	switch kind, detail := f[1], f[2]; kind {
	case refusedSystem:
		e.Reason = "must not be a system directory"
		if err := deploypath.Check(e.Real); err != nil {
			e.Reason = err.Error()
		}
	case refusedHome:
		e.Reason = "must not be the SSH user's home directory"
	case refusedHoldsHome:
		e.Reason = fmt.Sprintf("must not hold the SSH user's home directory (%s)", detail)
	case refusedHoldsSSH:
		e.Reason = "must not hold " + deploypath.SSHDir + " in the in-place layout, whose switch would move it into .outpost/backups and lock the SSH user out"
	case refusedNotDir:
		e.Real, e.Reason = "", fmt.Sprintf("cannot be a directory: %s exists and is not one", f[0])
	case refusedUnresolv:
		e.Real, e.Reason = "", fmt.Sprintf("cannot be resolved: %s cannot be entered", f[0])
	default:
		e.Reason = fmt.Sprintf("refused by the node (%q)", kind)
	}
	return e
}
