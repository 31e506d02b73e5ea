package deployer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Layout is how a release is laid out in the deploy directory.
type Layout int

const (
	// LayoutReleases keeps each release in P/releases/<id> and points the
	// symlink P/current at the active one (the default).
	LayoutReleases Layout = iota
	// LayoutInplace is for application servers that read a fixed
	// directory (a WAS webapp and the like): P itself holds the release.
	LayoutInplace
)

// The in-place layout, under the deploy path P:
//
//	P/...                          the release in place (every entry but .outpost)
//	P/.outpost/lock, history       as with the releases layout
//	P/.outpost/release             id of the release in place
//	P/.outpost/staging/<id>        the upload, verified and unpacked, before it goes in place
//	P/.outpost/backups/<stamp>-<id> what P held before an activation (<id> its release, "none" when unknown)
//	P/.outpost/switching           the switch's journal, from its start until the deployment ends
//
// The steps and events are the releases layout's: connect, lock,
// precheck, upload (into staging), verify, unpack, before_install (in the
// staged release), stop, switch, after_install, start (in P), health,
// prune, history, unlock. The switch moves P's entries into a new backup
// and the staged entries into P (renames, so no copy of either is made).
// A failure before stop leaves P as it was (the staging is removed); a
// failure after it restores P: stop, move the new entries out and the
// backup back, start and health-check (ROLLED_BACK or ROLLBACK_FAILED; on
// a first deployment P ends empty and the node is FAILED). Prune keeps
// the newest keep_releases backups. A release is always uploaded: an
// in-place node keeps no other release to re-activate.
//
// The journal lets a switch that was cut off be undone by someone else:
// a deployment that takes over the lock of one whose gateway is gone
// (Job.TakeoverLockOf) first puts P back as it was before that switch
// (inplaceTakeOverScript). Its lines: the backup directory, the release
// that was in place ("" when none), the lock content of the deployment
// that switched, and "in" once every entry of P is in the backup and the
// staged entries start moving into P: before that, P holds only entries
// of the old release, after it only entries of the new one. No hook runs
// while the takeover puts P back; the new deployment's stop hook runs
// next, in the release put back.

// inplaceFacts is what the in-place lock script found.
type inplaceFacts struct {
	df       string
	release  string   // release in place, from P/.outpost/release; "" when unknown
	occupied bool     // P holds entries besides .outpost
	backups  []string // names under P/.outpost/backups, oldest first
}

// inplace holds the in-place specifics of one deployment.
type inplace struct {
	facts  inplaceFacts
	backup string // name of the backup this activation makes
}

func (ip *inplace) stagingDir(dep *deployment) string {
	return path.Join(dep.dir, ".outpost", "staging", dep.job.Release.GetId())
}

// journalPath is the in-place switch's journal (see the layout above).
func (dep *deployment) journalPath() string { return path.Join(dep.dir, ".outpost", "switching") }

// runInplace deploys job in place, after connect.
func (dep *deployment) runInplace(ctx context.Context) Result {
	ip := &inplace{}
	if err := dep.inplaceLock(ctx, ip); err != nil {
		return dep.inplaceAbandon(ctx, ip, outpostv1.Step_STEP_LOCK, err)
	}
	s := dep.rep.begin(outpostv1.Step_STEP_PRECHECK)
	detail, err := dep.inplacePrecheck(ip)
	dep.rep.end(ctx, s, err, detail)
	if err != nil {
		return dep.inplaceAbandon(ctx, ip, outpostv1.Step_STEP_PRECHECK, err)
	}
	s = dep.rep.begin(outpostv1.Step_STEP_UPLOAD)
	detail, err = dep.inplaceUpload(ctx, ip)
	dep.rep.end(ctx, s, err, detail)
	if err != nil {
		return dep.inplaceAbandon(ctx, ip, outpostv1.Step_STEP_UPLOAD, err)
	}
	if err := ctx.Err(); err != nil {
		return dep.inplaceAbandon(ctx, ip, outpostv1.Step_STEP_VERIFY, fmt.Errorf("before verify: %w", err))
	}
	ip.backup = dep.d.cfg.Now().UTC().Format("20060102T150405.000000000Z") + "-" + orNoneID(ip.facts.release)
	if step, err := dep.inplaceActivate(ctx, ip); err != nil {
		if dep.progress.disturbed() {
			return dep.inplaceRestore(ctx, ip, step, err)
		}
		return dep.inplaceAbandon(ctx, ip, step, err)
	}
	s = dep.rep.begin(outpostv1.Step_STEP_HEALTH)
	if !dep.spec.Health.enabled() {
		dep.rep.end(ctx, s, nil, "no health check")
	} else {
		detail, err = dep.waitHealthy(ctx, dep.dir, dep.job.Release.GetId())
		dep.rep.end(ctx, s, err, detail)
		if err != nil {
			return dep.inplaceRestore(ctx, ip, outpostv1.Step_STEP_HEALTH, err)
		}
	}
	return dep.inplaceFinish(ctx, ip)
}

func orNoneID(id string) string {
	if id == "" {
		return "none"
	}
	return id
}

// inplaceResult is a Result of the in-place layout.
func (dep *deployment) inplaceResult(ip *inplace, state outpostv1.NodeState, step outpostv1.Step, err error) Result {
	res := Result{State: state, Step: step, Err: err, Previous: ip.facts.release, Release: ip.facts.release}
	if state == outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		res.Release = dep.job.Release.GetId()
	}
	return res
}

// inplaceLockScript refuses a deploy path the node shows to be a system
// or home directory or to hold .ssh (guard.go), takes the lock, reports
// the facts and prepares an empty staging directory for the upload.
func (dep *deployment) inplaceLockScript() string {
	var s script
	s.set("P", dep.dir)
	s.set("I", dep.job.Release.GetId())
	s.set("L", dep.lockContent)
	takeLock(&s, true, ".outpost/staging", ".outpost/backups")
	s.line(`echo @df; df -P -- "$P"`)
	s.line(`echo @release; head -n 1 -- "$P/.outpost/release" 2>/dev/null`)
	s.line(`echo @entries; (cd -- "$P" && ls -A) | grep -v -x -e .outpost | head -n 1`)
	s.line(`echo @backups; (cd -- "$P/.outpost/backups" && ls -1) 2>/dev/null`)
	s.line(`rm -rf -- "$P/.outpost/staging/$I" "$P/.outpost/staging/$I.partial" && mkdir -- "$P/.outpost/staging/$I.partial" || ` + exit(exitPrepare))
	s.line(`echo @partial`)
	return s.String()
}

// inplaceLock is the lock step of the in-place layout (see lockStep).
func (dep *deployment) inplaceLock(ctx context.Context, ip *inplace) error {
	run := func(ctx context.Context) error { return dep.inplaceLockRun(ctx, ip) }
	return dep.lockStep(ctx, run, dep.inplaceTakeOverScript)
}

func (dep *deployment) inplaceLockRun(ctx context.Context, ip *inplace) error {
	sec, err := dep.runLockScript(ctx, dep.inplaceLockScript())
	if err != nil {
		return err
	}
	f := inplaceFacts{df: sec["df"], occupied: strings.TrimSpace(sec["entries"]) != ""}
	if id := strings.TrimSpace(sec["release"]); validReleaseID(id) {
		f.release = id
	}
	for _, b := range strings.Split(sec["backups"], "\n") {
		if b = strings.TrimSpace(b); b != "" {
			f.backups = append(f.backups, b)
		}
	}
	sort.Strings(f.backups)
	ip.facts = f
	return nil
}

// inplacePrecheck checks the disk: the release is staged next to what it
// replaces until the switch, so it needs the same room as a release.
func (dep *deployment) inplacePrecheck(ip *inplace) (string, error) {
	disk, err := parseDF(ip.facts.df)
	if err != nil {
		return "", fmt.Errorf("disk figures of %s: %w", dep.dir, err)
	}
	need := dep.spec.Precheck.MinFreeBytes
	if need == 0 {
		need = dep.autoFreeBytes()
	}
	pe := &PrecheckError{
		Path: dep.dir, UsedPercent: disk.usedPercent, MaxUsedPercent: dep.spec.Precheck.MaxDiskUsedPercent,
		AvailableBytes: disk.availableBytes, MinFreeBytes: need,
	}
	if disk.usedPercent > pe.MaxUsedPercent || (need >= 0 && disk.availableBytes < need) {
		return "", pe
	}
	return fmt.Sprintf("disk %d%% used, %s free; in place", disk.usedPercent, bytesIEC(disk.availableBytes)), nil
}

// inplaceUpload sends the artifact into the staging directory.
func (dep *deployment) inplaceUpload(ctx context.Context, ip *inplace) (string, error) {
	f, err := os.Open(dep.job.ArtifactPath)
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	if dep.broken {
		if err := dep.reconnect(ctx); err != nil {
			return "", err
		}
	}
	remote := path.Join(ip.stagingDir(dep)+".partial", dep.uploadName())
	mode := os.FileMode(0o644)
	if dep.job.Release.GetArtifact().GetUnpack() == outpostv1.Unpack_UNPACK_NONE {
		mode = 0o755
	}
	start := time.Now()
	res, err := dep.remote.Upload(ctx, f, remote, mode)
	if err != nil {
		if ctx.Err() == nil {
			dep.broken = true
		}
		return "", err
	}
	dep.sentSHA256 = res.SHA256
	if res.Bytes != dep.job.Release.GetArtifact().GetSize() {
		return "", fmt.Errorf("upload %s: sent %d bytes, the artifact has %d (did the file change?)", remote, res.Bytes, dep.job.Release.GetArtifact().GetSize())
	}
	return fmt.Sprintf("%s in %v", bytesIEC(res.Bytes), time.Since(start).Round(time.Millisecond)), nil
}

// inplaceActivateScript verifies and unpacks the staged upload, runs
// before_install in it, stops the service, moves P's entries into the
// backup and the staged ones into P, runs after_install and starts.
func (dep *deployment) inplaceActivateScript(ip *inplace) string {
	var s script
	dep.scriptPrelude(&s)
	s.set("L", dep.lockContent)
	s.line(`[ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$L" ] || { echo "the node's lock is no longer this deployment's" >&2; exit 1; }`)
	hookEnv(&s, dep.job.Release.GetId(), dep.dir, dep.job.RolloutID)
	s.line(`echo $$ >"$P/.outpost/active"`)
	s.set("S", ip.stagingDir(dep))
	s.set("B", path.Join(dep.dir, ".outpost", "backups", ip.backup))
	a := dep.job.Release.GetArtifact()
	s.set("X", a.GetSha256())
	s.set("F", dep.uploadName())
	s.line(`m 5 start`)
	s.digest(`"$S.partial/$F"`)
	s.line(`s=${s%% *}; m 5 note "$s"`)
	s.line(`[ "$s" = "$X" ] || { m 5 fail; exit 1; }`)
	s.line(`m 5 ok`)
	s.line(`m 6 start`)
	if a.GetUnpack() == outpostv1.Unpack_UNPACK_TAR {
		s.untar(`"$S.partial/$F"`, `"$S.partial"`, dep.art.gzip, dep.spec.TarLimits.AllowSetuid, false)
	}
	s.line(`mv -T -- "$S.partial" "$S" || { m 6 fail; exit 1; }`)
	s.line(`m 6 ok`)
	h := dep.spec.Hooks
	hookStep(&s, outpostv1.Step_STEP_BEFORE_INSTALL, `"$S"`, h.BeforeInstall)
	// stop runs in the release that is running: the one in place, or the
	// new one on a first deployment (as with the releases layout).
	if ip.facts.occupied {
		if h.Stop != "" && ip.facts.release != "" {
			s.set("OUTPOST_RELEASE", ip.facts.release)
		}
		hookStep(&s, outpostv1.Step_STEP_STOP, `"$P"`, h.Stop)
		s.line(`OUTPOST_RELEASE=$I`)
	} else {
		hookStep(&s, outpostv1.Step_STEP_STOP, `"$S"`, h.Stop)
	}
	// The switch: every entry of P but .outpost into the backup, then
	// every staged entry into P. Renames within one file system. The
	// journal is written before the backup exists, so a backup named in
	// no journal is always complete.
	s.set("J", dep.journalPath())
	s.set("V", ip.facts.release)
	s.line(`m 9 start`)
	s.line(`printf '%s\n%s\n%s\n' "$B" "$V" "$L" >"$J" || { m 9 fail; exit 1; }`)
	s.line(`mkdir -p -- "$B" || { m 9 fail; exit 1; }`)
	s.line(`for e in "$P"/* "$P"/.[!.]* "$P"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; [ "${e##*/}" = .outpost ] && continue; mv -- "$e" "$B/" || { m 9 fail; exit 1; }; done`)
	s.line(`echo in >>"$J" || { m 9 fail; exit 1; }`)
	s.line(`for e in "$S"/* "$S"/.[!.]* "$S"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; mv -- "$e" "$P/" || { m 9 fail; exit 1; }; done`)
	s.line(`printf '%s\n' "$I" >"$P/.outpost/release" || { m 9 fail; exit 1; }`)
	s.line(`m 9 ok`)
	hookStep(&s, outpostv1.Step_STEP_AFTER_INSTALL, `"$P"`, h.AfterInstall)
	hookStep(&s, outpostv1.Step_STEP_START, `"$P"`, h.Start)
	return s.String()
}

// inplaceActivate runs the activation script and reports its steps, as
// activate does for the releases layout.
func (dep *deployment) inplaceActivate(ctx context.Context, ip *inplace) (outpostv1.Step, error) {
	return dep.runActivation(ctx, activation{
		script:       dep.inplaceActivateScript(ip),
		switchDetail: "in place; the previous content is in .outpost/backups/" + ip.backup,
		firstStep:    outpostv1.Step_STEP_VERIFY,
		inPlace:      true,
	})
}

// inplaceRestoreScript puts P back: stop the new release, move its
// entries out and the backup's back in, start. Each part is idempotent:
// with no backup made yet, P still holds the old release and only stop
// and start run.
func (dep *deployment) inplaceRestoreScript(ip *inplace) string {
	var s script
	dep.scriptPrelude(&s)
	hookEnv(&s, dep.job.Release.GetId(), dep.dir, dep.job.RolloutID)
	s.set("S", ip.stagingDir(dep))
	s.set("B", path.Join(dep.dir, ".outpost", "backups", ip.backup))
	s.set("V", ip.facts.release)
	s.set("J", dep.journalPath())
	s.set("K", dep.lockContent)
	dep.waitActivation(&s)
	h := dep.spec.Hooks
	if h.Stop != "" {
		s.set("C", h.Stop)
		s.line(`m 16 start stop; if h "$P" "$C"; then m 16 ok; else m 16 fail; fi`)
	}
	s.line(`m 16 start restore`)
	restoreSwitch(&s, `{ m 16 fail; exit 1; }`)
	s.line(`m 16 ok`)
	if h.Start != "" && ip.facts.occupied {
		s.set("OUTPOST_RELEASE", ip.facts.release)
		s.set("C", h.Start)
		s.line(`m 16 start start; h "$P" "$C" || { m 16 fail; exit 1; }; m 16 ok`)
	}
	return s.String()
}

// restoreSwitch appends the file part of undoing a switch: P's entries
// go to "$S.failed" (removed once done) and the entries of the backup $B
// back into P, and .outpost/release says $V again. When the journal $J
// is that of the switch of the deployment whose lock content is $K, into
// $B, and that switch stopped before its second half, P holds only
// entries of the old release and keeps them. Each part can run again
// after a failure. fail is the shell code run when a part fails.
func restoreSwitch(s *script, fail string) {
	s.line(`jb=; jv=; jl=; ph=`)
	s.line(`[ ! -f "$J" ] || { IFS= read -r jb; IFS= read -r jv; IFS= read -r jl; IFS= read -r ph; } <"$J"`)
	s.line(`if [ "$jb" = "$B" ] && [ "$jl" = "$K" ]; then j=1; else j=0; fi`)
	s.line(`if [ -d "$B" ]; then`)
	s.line(`  if [ $j = 0 ] || [ "$ph" = in ]; then`)
	s.line(`    mkdir -p -- "$S.failed" || ` + fail)
	s.line(`    for e in "$P"/* "$P"/.[!.]* "$P"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; [ "${e##*/}" = .outpost ] && continue; mv -- "$e" "$S.failed/" || ` + fail + `; done`)
	s.line(`  fi`)
	s.line(`  for e in "$B"/* "$B"/.[!.]* "$B"/..?*; do { [ -e "$e" ] || [ -L "$e" ]; } || continue; mv -- "$e" "$P/" || ` + fail + `; done`)
	s.line(`  rmdir -- "$B" && rm -rf -- "$S.failed" || ` + fail)
	s.line(`  if [ -n "$V" ]; then printf '%s\n' "$V" >"$P/.outpost/release"; else rm -f -- "$P/.outpost/release"; fi || ` + fail)
	s.line(`fi`)
	s.line(`[ $j = 0 ] || rm -f -- "$J" || ` + fail)
}

// inplaceTakeOverScript is takeOverScript for the in-place layout: before
// the lock goes, a switch the holder left half done (its journal names
// the holder's lock) is undone, so that P holds the release it held
// before that deployment and the backups hold no piece of it. The backup
// put back is printed after "@restored".
func (dep *deployment) inplaceTakeOverScript() string {
	var s script
	s.set("P", dep.dir)
	s.set("O", dep.heldRaw)
	s.set("J", dep.journalPath())
	s.set("S", path.Join(dep.dir, ".outpost", "staging", ".takeover"))
	mayBreakLock(&s)
	s.line(`B=; V=; K=`)
	s.line(`[ ! -f "$J" ] || { IFS= read -r B; IFS= read -r V; IFS= read -r K; } <"$J"`)
	s.line(`if [ -n "$B" ] && [ "$K" = "$O" ]; then`)
	s.line(`  case $B in "$P/.outpost/backups/"*/*|*/..*) echo "the journal $J names $B" >&2; ` + exit(exitRestore) + `;; "$P/.outpost/backups/"?*) ;; *) echo "the journal $J names $B" >&2; ` + exit(exitRestore) + `;; esac`)
	s.line(`  r=; [ ! -d "$B" ] || r=${B##*/}`)
	restoreSwitch(&s, `{ echo "putting $B back into $P failed" >&2; `+exit(exitRestore)+`; }`)
	s.line(`  [ -z "$r" ] || { echo @restored; echo "$r"; }`)
	s.line(`fi`)
	s.line(`rm -f -- "$P/.outpost/active" "$P/.outpost/lock"`)
	return s.String()
}

// inplaceRestore restores P after a failure past the stop hook.
func (dep *deployment) inplaceRestore(ctx context.Context, ip *inplace, step outpostv1.Step, cause error) Result {
	ctx, cancel := dep.cleanupContext(ctx, dep.spec.Health.Timeout)
	defer cancel()
	prev := ip.facts.release
	state := outpostv1.NodeState_NODE_STATE_ROLLED_BACK
	if !ip.facts.occupied {
		// A first deployment: P goes back to empty, as it was.
		state = outpostv1.NodeState_NODE_STATE_FAILED
	}
	res := dep.inplaceResult(ip, state, step, nil)
	rbErr := dep.runRollbackScript(ctx, dep.inplaceRestoreScript(ip), map[string]string{
		"wait": "wait for the interrupted activation", "stop": "stop " + dep.job.Release.GetId(),
		"restore": "restore .outpost/backups/" + ip.backup, "start": "start " + orNone(prev),
	})
	if rbErr == nil && ip.facts.occupied && dep.spec.Health.enabled() {
		s := dep.rep.begin(outpostv1.Step_STEP_ROLLBACK)
		s.label = "health " + orNone(prev)
		var detail string
		detail, rbErr = dep.waitHealthy(ctx, dep.dir, prev)
		dep.rep.end(ctx, s, rbErr, detail)
	}
	hist := []historyEntry{dep.historyEntry("activate", dep.job.Release.GetId(), prev, "failed: "+cause.Error())}
	if rbErr != nil {
		res.State, res.Step = outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED, outpostv1.Step_STEP_ROLLBACK
		res.Err = fmt.Errorf("%w; RESTORE of %s FAILED: %w", cause, dep.dir, rbErr)
		hist = append(hist, dep.historyEntry("rollback", prev, dep.job.Release.GetId(), "failed: "+rbErr.Error()))
	} else {
		res.Err = fmt.Errorf("%w; restored the previous content of %s", cause, dep.dir)
		hist = append(hist, dep.historyEntry("rollback", prev, dep.job.Release.GetId(), "succeeded"))
	}
	if err := dep.inplaceCleanup(ctx, ip, false); err != nil {
		res.Err = fmt.Errorf("%w; cleanup failed: %w", res.Err, err)
	}
	if err := dep.unlock(ctx, finishPlan{history: hist}); err != nil {
		res.Err = fmt.Errorf("%w; unlock failed: %w", res.Err, err)
	}
	return res
}

// inplaceAbandon cleans up after a failure before the stop hook: P was
// not touched; the staging goes.
func (dep *deployment) inplaceAbandon(ctx context.Context, ip *inplace, step outpostv1.Step, cause error) Result {
	res := dep.inplaceResult(ip, outpostv1.NodeState_NODE_STATE_FAILED, step, cause)
	if !dep.progress.holdsLock() {
		return res
	}
	ctx, cancel := dep.cleanupContext(ctx, 0)
	defer cancel()
	if err := dep.inplaceCleanup(ctx, ip, false); err != nil {
		res.Err = fmt.Errorf("%w; cleanup failed: %w", cause, err)
	}
	if err := dep.unlock(ctx, finishPlan{}); err != nil {
		res.Err = fmt.Errorf("%w; unlock failed, the node may keep its lock: %w", res.Err, err)
	}
	return res
}

// inplaceCleanup removes this deployment's staging, and with prune the
// backups beyond keep_releases, as the PRUNE step.
func (dep *deployment) inplaceCleanup(ctx context.Context, ip *inplace, prune bool) error {
	var s script
	s.set("P", dep.dir)
	s.set("L", dep.lockContent)
	s.set("S", ip.stagingDir(dep))
	s.line(markerFunc)
	s.line(`[ "$(cat -- "$P/.outpost/lock" 2>/dev/null)" = "$L" ] || { echo "the lock is not ours (any more)" >&2; exit 1; }`)
	var removed []string
	if prune {
		backups := append(append([]string(nil), ip.facts.backups...), ip.backup)
		sort.Strings(backups)
		for len(backups) > dep.spec.KeepReleases {
			removed = append(removed, backups[0])
			backups = backups[1:]
		}
		s.line(`m 13 start; e=0`)
		for _, b := range removed {
			s.set("X", b)
			s.line(`rm -rf -- "$P/.outpost/backups/$X" || e=1`)
		}
		// The switch is done for good: its journal goes.
		s.set("J", dep.journalPath())
		s.line(`rm -rf -- "$S" "$S.partial" || e=1; rm -f -- "$J" || e=1`)
		s.line(`if [ $e = 0 ]; then m 13 ok; else m 13 fail; fi`)
	} else {
		s.line(`rm -rf -- "$S" "$S.partial"`)
	}
	sent := dep.d.cfg.Now()
	res, err := dep.execRetry(ctx, s.String())
	if !prune {
		if err == nil {
			err = res.Err()
		}
		return err
	}
	marks := parseMarkers(res.Stdout)
	clock := newNodeClock(sent, dep.d.cfg.Now(), marks)
	var open *stepRun
	for _, m := range marks {
		switch m.kind {
		case markStart:
			st := dep.rep.beginAt(m.step, clock.at(m), "")
			open = &st
		case markOK, markFail:
			if open == nil {
				continue
			}
			var serr error
			detail := "nothing to prune"
			if len(removed) > 0 {
				detail = "removed backups " + strings.Join(removed, ", ")
			}
			if m.kind == markFail {
				serr = fmt.Errorf("prune: %s", tail(strings.TrimSpace(string(res.Stderr)), 1024))
			}
			dep.rep.endAt(ctx, *open, clock.at(m), serr, detail)
			open = nil
			if serr != nil {
				return serr
			}
		}
	}
	if err == nil {
		err = res.Err()
	}
	if err != nil && open != nil {
		dep.rep.endAt(ctx, *open, dep.d.cfg.Now(), err, "")
	}
	return err
}

// inplaceFinish prunes old backups, writes history and unlocks. Their
// failures are reported but do not change the outcome.
func (dep *deployment) inplaceFinish(ctx context.Context, ip *inplace) Result {
	res := dep.inplaceResult(ip, outpostv1.NodeState_NODE_STATE_SUCCEEDED, outpostv1.Step_STEP_UNLOCK, nil)
	ctx, cancel := dep.cleanupContext(ctx, 0)
	defer cancel()
	if err := dep.inplaceCleanup(ctx, ip, true); err != nil {
		dep.log.Warn("deployment succeeded but pruning backups did not", "error", err)
	}
	hist := []historyEntry{dep.historyEntry("activate", dep.job.Release.GetId(), ip.facts.release, "succeeded")}
	if err := dep.unlock(ctx, finishPlan{history: hist}); err != nil {
		dep.log.Warn("deployment succeeded but its cleanup did not", "error", err)
	}
	return res
}

// rollbackInplace returns an in-place node to release to from its newest
// backup of that release (the ROLLBACK assignment, after connect): stop,
// move the current entries out and the backup's in, start, health check.
func (dep *deployment) rollbackInplace(ctx context.Context, to string) Result {
	ip := &inplace{}
	fail := func(state outpostv1.NodeState, step outpostv1.Step, err error) Result {
		return Result{State: state, Step: step, Err: err, Release: ip.facts.release, Previous: to}
	}
	if err := dep.inplaceLock(ctx, ip); err != nil {
		res := dep.inplaceAbandon(ctx, ip, outpostv1.Step_STEP_LOCK, err)
		return fail(outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.Step_STEP_LOCK, res.Err)
	}
	if ip.facts.release == to && to != "" {
		res := dep.inplaceAbandon(ctx, ip, outpostv1.Step_STEP_ROLLBACK, nil)
		if res.Err != nil {
			return fail(outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.Step_STEP_UNLOCK, res.Err)
		}
		return Result{State: outpostv1.NodeState_NODE_STATE_SUCCEEDED, Step: outpostv1.Step_STEP_UNLOCK, Release: to, Previous: dep.job.Release.GetId()}
	}
	for i := len(ip.facts.backups) - 1; i >= 0; i-- {
		if strings.HasSuffix(ip.facts.backups[i], "-"+orNoneID(to)) {
			ip.backup = ip.facts.backups[i]
			break
		}
	}
	if ip.backup == "" {
		err := fmt.Errorf("no backup of %s under %s/.outpost/backups; nothing was changed", orNone(to), dep.dir)
		res := dep.inplaceAbandon(ctx, ip, outpostv1.Step_STEP_ROLLBACK, err)
		return fail(outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.Step_STEP_ROLLBACK, res.Err)
	}
	ctx, cancel := dep.cleanupContext(ctx, dep.spec.Health.Timeout)
	defer cancel()
	left := ip.facts.release
	ip.facts.release, ip.facts.occupied = to, to != ""
	rbErr := dep.runRollbackScript(ctx, dep.inplaceRestoreScript(ip), map[string]string{
		"stop": "stop " + orNone(left), "restore": "restore .outpost/backups/" + ip.backup, "start": "start " + orNone(to),
	})
	if rbErr == nil && to != "" && dep.spec.Health.enabled() {
		s := dep.rep.begin(outpostv1.Step_STEP_ROLLBACK)
		s.label = "health " + to
		var detail string
		detail, rbErr = dep.waitHealthy(ctx, dep.dir, to)
		dep.rep.end(ctx, s, rbErr, detail)
	}
	result := "succeeded"
	if rbErr != nil {
		result = "failed: " + rbErr.Error()
	}
	hist := []historyEntry{dep.historyEntry("rollback", to, left, result)}
	cerr := dep.inplaceCleanup(ctx, ip, false)
	uerr := dep.unlock(ctx, finishPlan{history: hist})
	if rbErr != nil {
		return fail(outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED, outpostv1.Step_STEP_ROLLBACK,
			fmt.Errorf("ROLLBACK to %s FAILED: %w", orNone(to), errors.Join(rbErr, cerr, uerr)))
	}
	if err := errors.Join(cerr, uerr); err != nil {
		dep.log.Warn("rolled back, but cleaning up failed", "error", err)
	}
	return Result{State: outpostv1.NodeState_NODE_STATE_SUCCEEDED, Step: outpostv1.Step_STEP_UNLOCK, Release: to, Previous: left}
}
