package deployer

import "strconv"

// progress is how far a deployment got on the node, and so what a failure
// must undo: nothing, the lock (and what the lock script made), or the
// service (the rollback or restore). It only moves forward, through
// advance; each value implies the ones before it, so "may the service have
// been disturbed?" is one comparison.
type progress int

const (
	// progressNone: the lock is not ours and nothing on the node changed.
	progressNone progress = iota
	// progressLocked: the lock is ours; the lock script's facts were read
	// (or are being read).
	progressLocked
	// progressLockLost: the lock script's outcome is unknown (its output
	// was cut off): the lock may be ours, and releases/<id>.partial may
	// have been made. Unlocking checks the lock's content, so it is tried.
	progressLockLost
	// progressStopped: the stop hook may have run (in place: the switch
	// or a skipped stop counts too), so a failure must restore the service.
	progressStopped
	// progressSwitched: current may point at the new release (in place: P
	// may hold its entries).
	progressSwitched
	// progressOrphaned: the connection dropped during the activation: the
	// script may still run on the node, past the last marker seen.
	progressOrphaned
	// progressUnlocked: the lock was released; nothing is left to undo.
	progressUnlocked
)

var progressNames = [...]string{"none", "locked", "lock-lost", "stopped", "switched", "orphaned", "unlocked"}

func (p progress) String() string {
	if p < 0 || int(p) >= len(progressNames) {
		return "progress(" + strconv.Itoa(int(p)) + ")"
	}
	return progressNames[p]
}

// advance moves the deployment's progress to p, never back.
func (dep *deployment) advance(p progress) {
	if p > dep.progress {
		dep.progress = p
	}
}

// holdsLock reports whether the lock may be ours, so that a cleanup must
// unlock.
func (p progress) holdsLock() bool { return p >= progressLocked && p < progressUnlocked }

// disturbed reports whether the service may have been stopped or
// switched, so that a failure must roll back (or restore) rather than
// only abandon.
func (p progress) disturbed() bool { return p >= progressStopped && p < progressUnlocked }
