package store

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Root is the prefix of every key Outpost writes.
const Root = "/outpost/"

// LeaderPrefix is the election prefix; candidates' keys live under
// LeaderPrefix + "/".
const LeaderPrefix = "/outpost/leader"

// Prefixes of the collections. Each ends in '/', so a prefix scan of one id
// never matches another id that merely starts with the same letters.
const (
	NodesPrefix    = Root + "nodes/"
	PlansPrefix    = Root + "plans/"
	RolloutsPrefix = Root + "rollouts/"
	GatewaysPrefix = Root + "gateways/"
	AuditPrefix    = Root + "audit/"
	revisionsRoot  = Root + "revisions/"
)

// revisionDigits is the zero-padded width of revision numbers so that lexical
// key order equals numeric order (up to 9,999,999,999 revisions per app).
const revisionDigits = 10

// auditTimeLayout is RFC 3339 in UTC with a fixed nine-digit fraction:
// time.RFC3339Nano drops trailing zeros, which would break lexical order.
const auditTimeLayout = "2006-01-02T15:04:05.000000000Z"

// NodeKey returns /outpost/nodes/<id>.
func NodeKey(id string) string { return NodesPrefix + id }

// PlanKey returns /outpost/plans/<id>.
func PlanKey(id string) string { return PlansPrefix + id }

// RolloutKey returns /outpost/rollouts/<id>.
func RolloutKey(id string) string { return RolloutsPrefix + id }

// RolloutNodesPrefix returns /outpost/rollouts/<id>/nodes/, the prefix of
// the rollout's per-node states.
func RolloutNodesPrefix(rolloutID string) string { return RolloutKey(rolloutID) + "/nodes/" }

// RolloutNodeKey returns /outpost/rollouts/<id>/nodes/<node-id>.
func RolloutNodeKey(rolloutID, nodeID string) string {
	return RolloutNodesPrefix(rolloutID) + nodeID
}

// RevisionsPrefix returns /outpost/revisions/<app>/.
func RevisionsPrefix(app string) string { return revisionsRoot + app + "/" }

// RevisionKey returns /outpost/revisions/<app>/<n>, n zero-padded to ten
// digits so that lexical order is numeric order.
func RevisionKey(app string, n int64) string {
	return fmt.Sprintf("%s%0*d", RevisionsPrefix(app), revisionDigits, n)
}

// GatewayKey returns /outpost/gateways/<name>.
func GatewayKey(name string) string { return GatewaysPrefix + name }

// AuditKey returns /outpost/audit/<time>-<seq>: time in UTC with a fixed
// width, seq zero-padded to ten digits, so keys sort by time then seq.
// seq disambiguates entries written in the same nanosecond.
func AuditKey(t time.Time, seq int64) string {
	return fmt.Sprintf("%s%s-%0*d", AuditPrefix, t.UTC().Format(auditTimeLayout), revisionDigits, seq)
}

// maxIDLen bounds ids so keys stay well below etcd's request size limits.
const maxIDLen = 253

// CheckID reports whether id can be used as one segment of a key: non-empty,
// at most 253 bytes of valid UTF-8, no '/', no control characters. The Key
// helpers do not check their arguments; validate ids from users with CheckID
// at the API boundary, because a '/' in an id would place the key inside
// another object's subtree.
func CheckID(id string) error {
	switch {
	case id == "":
		return errors.New("empty id")
	case len(id) > maxIDLen:
		return fmt.Errorf("id longer than %d bytes", maxIDLen)
	case !utf8.ValidString(id):
		return errors.New("id is not valid UTF-8")
	case strings.ContainsRune(id, '/'):
		return fmt.Errorf("id %q contains '/'", id)
	case id == "." || id == "..":
		return fmt.Errorf("id %q is reserved", id)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("id %q contains a control character", id)
		}
	}
	return nil
}
