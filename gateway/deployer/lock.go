package deployer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/outposthq/outpost/gateway/artifactcache"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Exit codes of the lock and takeover scripts, which spell them through
// these constants too (exitRefused, the guard's, is in guard.go).
const (
	exitLockSetup = 70 // .outpost or the lock file could not be made (no holder)
	exitPrepare   = 71 // the lock is ours, but preparing for the upload failed
	exitLockHeld  = 75 // another deployment holds the lock; its content follows "@held"
	exitActive    = 76 // takeover refused: an activation of the lock's holder still runs
	exitRestore   = 77 // takeover failed: undoing the holder's interrupted in-place switch failed
)

// exit is the shell command that exits with code.
func exit(code int) string { return "exit " + strconv.Itoa(code) }

// takeLock appends what every lock script (releases, in place, rollback)
// does before it reads anything: the deploy path guard (guard.go; inplace
// adds its in-place rule), mkdir -p of dirs (paths under $P, constant
// text), and the lock taken atomically with the content $L (noclobber is
// O_EXCL). A lock another deployment holds is printed after "@held" and
// the script exits exitLockHeld; a lock taken is announced by "@locked".
// The script must have set P and L.
func takeLock(s *script, inplace bool, dirs ...string) {
	guard(s, inplace)
	mkdir := `mkdir -p --`
	for _, d := range dirs {
		mkdir += ` "$P/` + d + `"`
	}
	s.line(mkdir + ` || ` + exit(exitLockSetup))
	s.line(`if ! (set -C; printf '%s' "$L" >"$P/.outpost/lock"); then`)
	s.line(`  if [ -e "$P/.outpost/lock" ]; then echo @held; cat -- "$P/.outpost/lock"; ` + exit(exitLockHeld) + `; fi`)
	s.line(`  ` + exit(exitLockSetup))
	s.line(`fi`)
	s.line(`echo @locked`)
}

// runLockScript runs cmd, a lock script built on takeLock, and decides
// the outcomes all lock scripts share: the transport failed (the lock may
// be ours, and whatever the script made after it), the guard refused the
// path, another deployment holds the lock (its content is kept in
// dep.heldRaw for a takeover), the script failed, or it ended without
// the lock. It returns the script's sections, also on error, and advances
// dep.progress to what the lock may be.
func (dep *deployment) runLockScript(ctx context.Context, cmd string) (map[string]string, error) {
	res, err := dep.exec(ctx, cmd)
	sections := splitSections(res.Stdout)
	if _, ok := sections["locked"]; ok {
		dep.advance(progressLocked)
	}
	if err != nil {
		// The script may have taken the lock and made the partial directory
		// before the connection or ctx ended. Unlocking is safe either way
		// (it checks the content), so try it.
		dep.advance(progressLockLost)
		return sections, fmt.Errorf("lock: %w", err)
	}
	if sec, ok := sections["refused"]; ok && res.ExitCode == exitRefused {
		return sections, dep.refusedError(sec)
	}
	if res.ExitCode == exitLockHeld {
		dep.heldRaw = strings.TrimSpace(sections["held"])
		return sections, dep.lockedError(dep.heldRaw)
	}
	if err := res.Err(); err != nil {
		return sections, fmt.Errorf("lock %s: %w", dep.lockPath(), err)
	}
	if dep.progress < progressLocked {
		return sections, fmt.Errorf("lock %s: the lock script ended without taking the lock", dep.lockPath())
	}
	return sections, nil
}

// nodeFacts is what the lock script found on the node, under the lock.
type nodeFacts struct {
	// df is `df -P` output for the deploy path.
	df string
	// current is the target of P/current as written ("releases/r1"); empty
	// when there is no current.
	current string
	// currentIsDir reports whether P/current resolves to a directory.
	currentIsDir bool
	// currentNotLink reports a P/current that exists but is no symlink.
	currentNotLink bool
	// present reports whether P/releases/<id> already exists, and
	// presentDigest what its digest file says.
	present       bool
	presentDigest string
	// baseDigest is the SHA-256 the current release records, when that
	// release holds a file named as the new upload will be.
	baseDigest string
	// releases are the ids under P/releases with a digest file, newest
	// activation first.
	releases []string
}

// lockScript refuses a deploy path the node shows to be a system or home
// directory (guard.go), takes the lock atomically (noclobber is O_EXCL),
// then, under it, reports the facts the precheck and later steps need and
// prepares the partial release directory for the upload (removing a
// leftover one from an earlier broken attempt). One round trip.
func (dep *deployment) lockScript() string {
	var s script
	s.set("P", dep.dir)
	s.set("I", dep.job.Release.GetId())
	s.set("L", dep.lockContent)
	takeLock(&s, false, ".outpost", "releases")
	s.line(`echo @df; df -P -- "$P"`)
	s.line(`echo @current`)
	s.line(`if [ -L "$P/current" ]; then printf 'link %s\n' "$(readlink -- "$P/current")"; [ ! -d "$P/current/" ] || echo dir; elif [ -e "$P/current" ]; then echo notlink; fi`)
	// The current release's artifact, when it kept the file the new one
	// is uploaded as: the base of a delta upload (deltaupload.go).
	s.set("F", dep.uploadName())
	s.line(`if [ -f "$P/current/$F" ]; then echo @base; cat -- "$P/current/` + digestFile + `" 2>/dev/null; echo; fi`)
	s.line(`echo @releases; (cd -- "$P/releases" && ls -1t -- */` + digestFile + `) 2>/dev/null`)
	s.line(`rm -rf -- "$P/releases/$I.partial" || ` + exit(exitPrepare))
	s.line(`if [ -d "$P/releases/$I" ]; then echo @present; cat -- "$P/releases/$I/` + digestFile + `" 2>/dev/null; echo; exit 0; fi`)
	s.line(`mkdir -- "$P/releases/$I.partial" || ` + exit(exitPrepare))
	s.line(`echo @partial`)
	return s.String()
}

// lock runs the lock script and records the facts it found. A lock held by
// the deployment Job.TakeoverLockOf names is broken (takeOver) and taken.
func (dep *deployment) lock(ctx context.Context) error {
	return dep.lockStep(ctx, dep.lockRun, dep.takeOverScript)
}

// lockStep is the lock step of either layout: run takes the lock and
// reads the facts, takeOverScript breaks the lock of the deployment
// Job.TakeoverLockOf names, after which run is tried again.
func (dep *deployment) lockStep(ctx context.Context, run func(context.Context) error, takeOverScript func() string) error {
	s := dep.rep.begin(outpostv1.Step_STEP_LOCK)
	err := run(ctx)
	var held *LockedError
	if errors.As(err, &held) && dep.mayTakeOver(held.Holder) {
		if err = dep.takeOver(ctx, held, takeOverScript()); err == nil {
			err = run(ctx)
		}
	}
	detail := ""
	if dep.tookOver != "" {
		detail = "took over the lock of assignment " + dep.tookOver + ", whose gateway is gone"
		if dep.restoredSwitch != "" {
			detail += "; put back what its interrupted switch had moved (.outpost/backups/" + dep.restoredSwitch + ")"
		}
	}
	dep.rep.end(ctx, s, err, detail)
	return err
}

// mayTakeOver reports whether the lock of holder is one this deployment
// was told to take over: that assignment's, in this rollout, from this
// epoch or an older one (a deposed leader's assignment cannot take over
// the lock of a newer leader's).
func (dep *deployment) mayTakeOver(holder LockInfo) bool {
	j := dep.job
	return j.TakeoverLockOf != "" && holder.Assignment == j.TakeoverLockOf &&
		holder.Rollout == j.RolloutID && holder.Epoch <= j.Epoch && dep.tookOver == ""
}

// takeOver runs script, a takeover script, to break the lock held: only
// if it still holds exactly what the lock script read and no activation
// of its holder still runs (its gateway may be gone while sshd has not yet
// noticed). What the holder left, a partial release, is then replaced by
// the lock script as after any broken attempt; an interrupted in-place
// switch is undone by the script itself (inplaceTakeOverScript).
func (dep *deployment) takeOver(ctx context.Context, held *LockedError, script string) error {
	res, err := dep.exec(ctx, script)
	switch {
	case err != nil:
		return fmt.Errorf("take over lock %s: %w", dep.lockPath(), err)
	case res.ExitCode == exitLockHeld:
		return held // changed meanwhile: someone else holds it now
	case res.ExitCode == exitActive:
		return fmt.Errorf("take over lock %s of assignment %s: its activation still runs on the node (pid %s)",
			dep.lockPath(), held.Holder.Assignment, strings.TrimSpace(string(res.Stdout)))
	case res.ExitCode == exitRestore:
		return fmt.Errorf("take over lock %s of assignment %s: its switch was interrupted and putting %s back failed, so the lock stays: %s",
			dep.lockPath(), held.Holder.Assignment, dep.dir, tail(strings.TrimSpace(string(res.Stderr)), 1024))
	case res.Err() != nil:
		return fmt.Errorf("take over lock %s: %w", dep.lockPath(), res.Err())
	}
	dep.tookOver = held.Holder.Assignment
	dep.restoredSwitch = strings.TrimSpace(splitSections(res.Stdout)["restored"])
	dep.log.Warn("took over the lock of a deployment whose gateway is gone",
		"assignment", held.Holder.Assignment, "owner", held.Holder.Owner, "epoch", held.Holder.Epoch, "since", held.Holder.Time)
	return nil
}

func (dep *deployment) lockRun(ctx context.Context) error {
	sections, err := dep.runLockScript(ctx, dep.lockScript())
	if _, ok := sections["partial"]; ok {
		dep.created = true
	}
	if err != nil {
		return err
	}
	facts, err := parseFacts(sections)
	if err != nil {
		return fmt.Errorf("lock %s: %w", dep.lockPath(), err)
	}
	dep.facts = facts
	return nil
}

// takeOverScript removes the lock if it still holds dep.heldRaw and no
// activation of its holder runs (the pid in .outpost/active is gone).
func (dep *deployment) takeOverScript() string {
	var s script
	s.set("P", dep.dir)
	s.set("O", dep.heldRaw)
	mayBreakLock(&s)
	s.line(`rm -f -- "$P/.outpost/active" "$P/.outpost/lock"`)
	return s.String()
}

// mayBreakLock appends what every takeover script checks before it breaks
// the lock: the lock still holds $O, the content the lock script read
// (else exitLockHeld), and no activation of its holder runs (else its pid
// is printed and the script exits exitActive). The script must have set P
// and O.
func mayBreakLock(s *script) {
	s.line(`[ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$O" ] || ` + exit(exitLockHeld))
	s.line(`if [ -s "$P/.outpost/active" ]; then a=$(cat -- "$P/.outpost/active"); if kill -0 "$a" 2>/dev/null; then echo "$a"; ` + exit(exitActive) + `; fi; fi`)
}

func (dep *deployment) lockPath() string { return path.Join(dep.dir, ".outpost", "lock") }

// lockedError describes the holder of a lock we could not take.
func (dep *deployment) lockedError(raw string) error {
	e := &LockedError{Path: dep.lockPath()}
	var info LockInfo
	if err := json.Unmarshal([]byte(raw), &info); err != nil || (info.Owner == "" && info.Rollout == "") {
		e.Raw = raw
	} else {
		e.Holder = info
		if !info.Time.IsZero() {
			e.Age = dep.d.cfg.Now().Sub(info.Time)
			e.Stale = e.Age > dep.d.cfg.StaleLockAge
		}
	}
	return e
}

// lockContentFor is the JSON our lock file holds; unlock removes the file
// only while it still holds exactly this.
func lockContentFor(info LockInfo) string {
	b, err := json.Marshal(info)
	if err != nil {
		// A struct of strings, an int and a time cannot fail to marshal.
		panic(err)
	}
	return string(b)
}

// splitSections splits "@name" headed sections of a script's stdout.
func splitSections(stdout []byte) map[string]string {
	out := map[string]string{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "@"); ok && name != "" && !strings.ContainsAny(name, " /") {
			cur = name
			out[cur] += ""
			continue
		}
		if cur != "" {
			out[cur] += line + "\n"
		}
	}
	return out
}

// parseFacts reads the lock script's sections.
func parseFacts(sections map[string]string) (nodeFacts, error) {
	var f nodeFacts
	f.df = sections["df"]
	for _, line := range strings.Split(strings.TrimRight(sections["current"], "\n"), "\n") {
		switch {
		case line == "":
		case line == "dir":
			f.currentIsDir = true
		case line == "notlink":
			f.currentNotLink = true
		case strings.HasPrefix(line, "link "):
			if f.current != "" {
				return f, errors.New("current: unreadable symlink target")
			}
			f.current = strings.TrimPrefix(line, "link ")
			if f.current == "" {
				return f, errors.New("current: empty symlink target")
			}
		default:
			return f, fmt.Errorf("current: unexpected %q (a symlink target with a newline?)", line)
		}
	}
	for _, line := range strings.Split(sections["releases"], "\n") {
		id, ok := strings.CutSuffix(line, "/"+digestFile)
		if ok && validReleaseID(id) {
			f.releases = append(f.releases, id)
		}
	}
	if d := strings.TrimSpace(sections["base"]); artifactcache.ValidDigest(d) {
		f.baseDigest = d
	}
	if d, ok := sections["present"]; ok {
		f.present = true
		f.presentDigest = strings.TrimSpace(d)
	}
	return f, nil
}

// releaseOf returns the release id a current symlink target names
// ("releases/<id>", or an absolute path ending so), or "" when it names
// something else.
func releaseOf(target string) string {
	dir, id := path.Split(path.Clean(target))
	if path.Base(path.Clean(dir)) != "releases" || !validReleaseID(id) {
		return ""
	}
	return id
}
