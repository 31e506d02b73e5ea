package deployer

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalidJob is wrapped by every error about the job itself (bad
// release id, spec, hook, artifact file or content). Such a job fails
// before the deployer connects to the node.
var ErrInvalidJob = errors.New("invalid job")

// LockInfo is what a node's lock file says about its holder.
type LockInfo struct {
	Owner   string    `json:"owner"`
	Rollout string    `json:"rollout"`
	Release string    `json:"release"`
	Epoch   int64     `json:"epoch"`
	Time    time.Time `json:"time"`
	// Assignment is the control plane's assignment that took the lock;
	// empty in locks of deployments that were not given one.
	Assignment string `json:"assignment,omitempty"`
}

// LockedError reports a node already locked by another deployment. The lock
// is never broken automatically, stale or not: only a takeover the control
// plane names (Job.TakeoverLockOf) breaks one.
type LockedError struct {
	// Path is the lock file on the node.
	Path string
	// Holder is the lock's content; zero when it could not be read.
	Holder LockInfo
	// Raw is the lock file's content when it is not valid JSON.
	Raw string
	// Stale reports whether the lock is older than Config.StaleLockAge.
	Stale bool
	// Age is how old the lock is, by the gateway's clock.
	Age time.Duration
}

func (e *LockedError) Error() string {
	if e.Holder.Owner == "" && e.Holder.Rollout == "" {
		return fmt.Sprintf("node is locked by %s, whose content is unreadable (%q); if no deployment runs, remove it by hand", e.Path, e.Raw)
	}
	msg := fmt.Sprintf("node is locked by %s for rollout %s (release %s, epoch %d) since %s",
		e.Holder.Owner, e.Holder.Rollout, e.Holder.Release, e.Holder.Epoch, e.Holder.Time.UTC().Format(time.RFC3339))
	if e.Stale {
		msg += fmt.Sprintf("; the lock is stale (%s old): if that deployment is gone, remove %s by hand", e.Age.Round(time.Second), e.Path)
	}
	return msg
}

// PrecheckError reports a deploy file system that is too full.
type PrecheckError struct {
	// Path is where the figures were taken (df -P on it).
	Path string
	// UsedPercent and MaxUsedPercent are df's capacity and the limit.
	UsedPercent, MaxUsedPercent int
	// AvailableBytes and MinFreeBytes are the free space and the need; a
	// negative MinFreeBytes means the free space was not checked.
	AvailableBytes, MinFreeBytes int64
}

func (e *PrecheckError) Error() string {
	if e.UsedPercent > e.MaxUsedPercent {
		return fmt.Sprintf("disk of %s is %d%% used, above the %d%% limit (%s free)",
			e.Path, e.UsedPercent, e.MaxUsedPercent, bytesIEC(e.AvailableBytes))
	}
	return fmt.Sprintf("disk of %s has %s free, below the %s needed (%d%% used)",
		e.Path, bytesIEC(e.AvailableBytes), bytesIEC(e.MinFreeBytes), e.UsedPercent)
}

// VerifyError reports an uploaded artifact whose SHA-256 on the node is not
// the release's.
type VerifyError struct {
	// Want is the release's digest, Node what sha256sum said on the node,
	// Sent the digest of the bytes the gateway sent (empty when unknown).
	Want, Node, Sent string
}

func (e *VerifyError) Error() string {
	msg := fmt.Sprintf("sha256 on the node is %s, the release says %s", e.Node, e.Want)
	switch {
	case e.Sent == "":
	case e.Sent == e.Node:
		msg += ": the gateway's artifact file does not match the release"
	default:
		msg += fmt.Sprintf(": corrupted in transit or on the node (sent %s)", e.Sent)
	}
	return msg
}

// UnsafeArtifactError reports a tar entry that could write outside the
// release directory or create something other than files, directories and
// links. Nothing is sent to the node for such an artifact.
type UnsafeArtifactError struct {
	Entry  string
	Reason string
}

func (e *UnsafeArtifactError) Error() string {
	return fmt.Sprintf("artifact entry %q: %s", e.Entry, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidJob) hold for an unsafe artifact.
func (e *UnsafeArtifactError) Is(target error) bool { return target == ErrInvalidJob }

// PathRefusedError reports a deploy path that the node refused before
// anything on it was changed (see guard.go): a system directory, the SSH
// user's home, a directory holding it, or, in the in-place layout, one
// holding .ssh, after symlinks were followed.
type PathRefusedError struct {
	// Path is the deploy path, absolute.
	Path string
	// Real is Path with its symlinks resolved on the node; empty when it
	// could not be resolved.
	Real string
	// Reason says why, as internal/deploypath says it for a plan
	// ("must not be in /etc, the system's configuration").
	Reason string
}

func (e *PathRefusedError) Error() string {
	where := e.Path
	if e.Real != "" && e.Real != e.Path {
		where += ", which is " + e.Real + " on the node,"
	}
	return fmt.Sprintf("deploy path %s %s; nothing was changed on the node", where, e.Reason)
}

// bytesIEC formats n for people: "1.5 GiB".
func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
