// Package deployer deploys one release to one node over SSH and SFTP, and
// rolls the node back when the new release does not come up healthy.
//
// On the node, under the deploy path P:
//
//	P/releases/<id>/        unpacked release (built in <id>.partial, verified, renamed)
//	P/releases/<id>/.outpost-sha256  its artifact digest; mtime = last activation (prune order)
//	P/current -> releases/<id>
//	P/.outpost/lock         held while a deployment runs (owner, rollout, epoch, time)
//	P/.outpost/active       pid of the activation script, while locked
//	P/.outpost/history      one JSON line per activation and rollback
//	P/.outpost/hook.log     output of the last hook run
//
// The steps, each reported as a STARTED and a SUCCEEDED or FAILED
// NodeStepEvent: connect, lock, precheck, upload, verify, unpack,
// before_install, stop, switch, after_install, start, health, prune,
// history, unlock.
//
// Invariants:
//
//   - A job is validated, and a tar artifact scanned for entries that would
//     escape the release directory, before anything is sent to the node.
//     The same scan (internal/tarscan) refuses a tar that unpacks to more
//     than Spec.TarLimits allow (size, ratio, entries) or carries setuid or
//     setgid bits they do not allow, and the unpack drops such bits unless
//     allowed, should an archive the scan read differently reach the node.
//   - Nothing on the node changes before the lock script's guard
//     (guard.go) has accepted the deploy path as the node resolves it,
//     symlinks followed: not a system directory (internal/deploypath),
//     not the SSH user's home or a directory holding it, and, in the
//     in-place layout, not a directory holding .ssh. A refused path
//     leaves the node untouched and the node FAILED at the lock step.
//   - Every remote command is built from constant script text and values
//     quoted by internal/shell; every hook passes internal/hookpolicy.
//   - How far a deployment got on the node is one value, deployment.progress
//     (progress.go), moved forward only; every cleanup decision reads it.
//   - A failure before the service is stopped (or, without a stop hook,
//     switched) leaves the node as it was:
//     the partial release is removed and the lock released. A failure after
//     that goes through rollback.go: back to the previous release, started
//     and health-checked (ROLLED_BACK), or, on a first deployment, back to
//     no release at all (FAILED). When that fails too the result is
//     ROLLBACK_FAILED and it is logged at error level.
//   - The lock is never broken on the deployer's own judgement: a
//     conflicting or stale lock is reported with its holder. Only the lock
//     of the exact assignment the control plane names (Job.TakeoverLockOf,
//     its gateway gone) is taken over, never while that assignment's
//     activation still runs; and an activation starts only while the lock
//     is still this deployment's, so the one taken over cannot switch. In
//     the in-place layout a switch the holder left half done is undone
//     first, from the switch's journal (see inplace.go).
//     Cleanup and unlock run even when ctx is cancelled, under a fresh
//     bounded context, reconnecting once if the connection dropped.
//
// Round trips are few on purpose, since each remote command costs a process
// start on the node: steps that need no decision from the gateway in
// between run as one script (lock and precheck facts; verify, unpack, hooks
// and switch; prune, history and unlock). The script prints one marker line
// per step boundary with the node's clock, from which the step events are
// emitted with their real durations once the script returns.
package deployer
