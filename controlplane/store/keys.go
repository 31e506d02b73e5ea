package store

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// The etcd key layout. Every key Outpost writes is built here, so this
// table is the whole layout; the test in keys_test.go pins each builder's
// output, because existing data is found only under the same strings.
// Values are protobuf messages of proto/outpost/v1 unless said otherwise.
//
//	key (under /outpost/)                          builder                     value                          written by
//	leader/<lease id, hex>                         LeaderPrefix                replica name (not protobuf)    controlplane/leader (etcd election)
//	nodes/<node-id>                                NodeKey                     Node                           controlplane/nodes.go, any replica
//	plans/<id>                                     PlanKey                     (unused: a rollout keeps its plan)
//	rollouts/<id>                                  RolloutKey                  Rollout                        controlplane/rollouts.go; the engine, fenced
//	rollouts/<id>/nodes/<node-id>                  RolloutNodeKey              RolloutNode                    controlplane/rollouts.go; the engine, fenced
//	revisions/<app>/<n, 10 digits>                 RevisionKey                 Revision                       controlplane/rollouts.go; the engine, fenced
//	counters/rollouts                              RolloutCounterKey           google.protobuf.Int64Value     controlplane/rollouts.go (compare-and-swap)
//	requests/create-rollout/<request-id>           CreateRequestKey            google.protobuf.StringValue    controlplane/rollouts.go, undo.go (24 h lease)
//	requests/rollout-verbs/<verb>/<request-id>     VerbRequestKey              google.protobuf.StringValue    controlplane/control.go (24 h lease)
//	gateways/<name>                                GatewayKey                  GatewayHello                   the engine, fenced (presence lease)
//	hostkeyscans/<node-id>                         HostKeyScanKey              NodeHostKeyScan                controlplane/nodes.go (1 h lease)
//	nodestatus/<node-id>                           NodeStatusKey               NodeStatus                     controlplane/fleet.go, any replica (compare-and-swap)
//	nodedesired/<node-id>                          NodeDesiredKey              NodeDesired                    the engine, fenced, with the node record
//	audit/<time>-<seq>                             AuditKey                    AuditEntry                     controlplane/audit
//	auditidx/<rollout>/nodes/<node>/<STATE>/<asg>  AuditNodeMarkerKey          sequence, decimal text         controlplane/audit, with the entry
//	auditidx/<rollout>/state/<STATE>               AuditRolloutStateMarkerKey  sequence, decimal text         controlplane/audit, with the entry
//	auditcp/<seq, 20 digits>                       AuditCheckpointKey          AuditCheckpoint                controlplane/audit (signed)
//	jointokens/<hex SHA-256 of the secret>         JoinTokenKey                JoinToken                      controlplane/auth (lease)
//	credentials/<serial>                           CredentialKey               Credential                     controlplane/auth (lease)
//	revoked/<serial>                               RevokedKey                  Credential                     controlplane/auth (lease)
//	ca                                             CAKey                       google.protobuf.BytesValue     controlplane/auth
//
// "Fenced" writes are guarded by the leader's key (see [Fence]); the others
// are written by any replica, guarded at most by their own comparisons.

// Root is the prefix of every key Outpost writes.
const Root = "/outpost/"

// LeaderPrefix is the election prefix; candidates' keys live under
// LeaderPrefix + "/" (the lease id in hex, as etcd's concurrency package
// names them), each holding its replica's name. Written by
// controlplane/leader.
const LeaderPrefix = "/outpost/leader"

// Prefixes of the collections. Each ends in '/', so a prefix scan of one id
// never matches another id that merely starts with the same letters.
const (
	NodesPrefix    = Root + "nodes/"
	PlansPrefix    = Root + "plans/"
	RolloutsPrefix = Root + "rollouts/"
	GatewaysPrefix = Root + "gateways/"
	AuditPrefix    = Root + "audit/"
	// RevisionsRoot is the prefix of every app's revisions; the engine
	// watches it to learn of new rollouts.
	RevisionsRoot = Root + "revisions/"
	// HostKeyScansPrefix is the prefix of the nodes' last host key scans.
	HostKeyScansPrefix = Root + "hostkeyscans/"
	// NodeStatusPrefix is the prefix of the nodes' fleet truth.
	NodeStatusPrefix = Root + "nodestatus/"
	// NodeDesiredPrefix is the prefix of the releases Outpost last
	// activated on the nodes.
	NodeDesiredPrefix = Root + "nodedesired/"
	// AuditIndexPrefix is the prefix of the audit log's markers (see
	// AuditNodeMarkerKey).
	AuditIndexPrefix = Root + "auditidx/"
	// AuditCheckpointPrefix is the prefix of the audit log's signed
	// checkpoints (see AuditCheckpointKey).
	AuditCheckpointPrefix = Root + "auditcp/"
	// JoinTokensPrefix is the prefix of the gateway join tokens.
	JoinTokensPrefix = Root + "jointokens/"
	// CredentialsPrefix is the prefix of the issued credentials.
	CredentialsPrefix = Root + "credentials/"
	// RevokedPrefix is the prefix of the revoked credentials, which every
	// replica watches.
	RevokedPrefix = Root + "revoked/"
	// createRequestsPrefix and verbRequestsPrefix hold the idempotency
	// records of CreateRollout and of the rollout verbs.
	createRequestsPrefix = Root + "requests/create-rollout/"
	verbRequestsPrefix   = Root + "requests/rollout-verbs/"
)

// RolloutCounterKey holds the last rollout number handed out, a
// google.protobuf.Int64Value that controlplane/rollouts.go advances by
// compare-and-swap. Rollout ids are "r-" and that number zero-padded, so
// key order is creation order.
const RolloutCounterKey = Root + "counters/rollouts"

// CAKey holds the CA every control plane replica shares, a
// google.protobuf.BytesValue: the certificate in PEM followed by its
// private key sealed with the key-encryption key (see
// controlplane/auth/kek.go, which also binds the sealed key to this key
// name; versions before sealing kept the key there in the clear, and
// LoadOrCreateCA seals such a key on start). Written by
// controlplane/auth.LoadOrCreateCA, only when absent or unchanged since
// read.
const CAKey = Root + "ca"

// revisionDigits is the zero-padded width of revision numbers so that lexical
// key order equals numeric order (up to 9,999,999,999 revisions per app).
const revisionDigits = 10

// auditTimeLayout is RFC 3339 in UTC with a fixed nine-digit fraction:
// time.RFC3339Nano drops trailing zeros, which would break lexical order.
const auditTimeLayout = "2006-01-02T15:04:05.000000000Z"

// noAssignment stands for an empty assignment id in a marker key: a node
// skipped before it was ever assigned. Assignment ids are
// "<rollout>-<node>-e<epoch>-<n>", never "-".
const noAssignment = "-"

// NodeKey returns /outpost/nodes/<id>, the Node in the inventory. Any
// replica writes it (ApplyNodes, TrustNodeHostKey).
func NodeKey(id string) string { return NodesPrefix + id }

// PlanKey returns /outpost/plans/<id>. Nothing writes it: a rollout keeps
// its plan in its Rollout record.
func PlanKey(id string) string { return PlansPrefix + id }

// RolloutKey returns /outpost/rollouts/<id>, the Rollout. CreateRollout
// writes it first; then only the leader's engine, fenced.
func RolloutKey(id string) string { return RolloutsPrefix + id }

// RolloutNodesPrefix returns /outpost/rollouts/<id>/nodes/, the prefix of
// the rollout's per-node states.
func RolloutNodesPrefix(rolloutID string) string { return RolloutKey(rolloutID) + "/nodes/" }

// RolloutNodeKey returns /outpost/rollouts/<id>/nodes/<node-id>, a
// RolloutNode. CreateRollout writes it first; then the engine, fenced,
// through a BatchWriter.
func RolloutNodeKey(rolloutID, nodeID string) string {
	return RolloutNodesPrefix(rolloutID) + nodeID
}

// RevisionsPrefix returns /outpost/revisions/<app>/.
func RevisionsPrefix(app string) string { return RevisionsRoot + app + "/" }

// RevisionKey returns /outpost/revisions/<app>/<n>, n zero-padded to ten
// digits so that lexical order is numeric order: the app's Revision n.
// CreateRollout writes it (only if absent) with the rollout; the engine
// updates it, fenced, when the rollout's state changes.
func RevisionKey(app string, n int64) string {
	return fmt.Sprintf("%s%0*d", RevisionsPrefix(app), revisionDigits, n)
}

// CreateRequestKey returns /outpost/requests/create-rollout/<request-id>,
// the idempotency record of a CreateRollout call: a
// google.protobuf.StringValue "<rollout id> <request hash>" on a 24 h
// lease, written with the rollout (controlplane/rollouts.go; undo.go for
// the undo of a rejected rollout).
func CreateRequestKey(requestID string) string { return createRequestsPrefix + requestID }

// VerbRequestKey returns
// /outpost/requests/rollout-verbs/<verb>/<request-id>, the idempotency
// record of a rollout verb (Approve, Pause, …): a
// google.protobuf.StringValue "<rollout id> <request hash>" on a 24 h
// lease, written by controlplane/control.go after the verb ran.
func VerbRequestKey(verb, requestID string) string {
	return verbRequestsPrefix + verb + "/" + requestID
}

// GatewayKey returns /outpost/gateways/<name>, the GatewayHello of a
// connected gateway (without assignment ids), written by the engine,
// fenced, on the engine's presence lease.
func GatewayKey(name string) string { return GatewaysPrefix + name }

// HostKeyScanKey returns /outpost/hostkeyscans/<node-id>, the node's last
// NodeHostKeyScan on a one-hour lease, written by ScanNodeHostKey and read
// by TrustNodeHostKey (controlplane/nodes.go).
func HostKeyScanKey(nodeID string) string { return HostKeyScansPrefix + nodeID }

// NodeStatusKey returns /outpost/nodestatus/<node-id>, the node's
// NodeStatus: the last observation and its drift (controlplane/fleet.go),
// kept apart from the Node so that ApplyNodes never overwrites it.
func NodeStatusKey(nodeID string) string { return NodeStatusPrefix + nodeID }

// NodeDesiredKey returns /outpost/nodedesired/<node-id>, the NodeDesired
// release Outpost last activated on the node. Only the engine writes it,
// fenced, in the same transaction as the rollout node record whose result
// changed it, so the two never disagree whoever leads (records of versions
// before it kept it in NodeStatus.desired).
func NodeDesiredKey(nodeID string) string { return NodeDesiredPrefix + nodeID }

// AuditKey returns /outpost/audit/<time>-<seq>: time in UTC with a fixed
// width, seq zero-padded to ten digits, so keys sort by time then seq.
// seq disambiguates entries written in the same nanosecond. It holds an
// AuditEntry, appended by controlplane/audit.
func AuditKey(t time.Time, seq int64) string {
	return fmt.Sprintf("%s%s-%0*d", AuditPrefix, t.UTC().Format(auditTimeLayout), revisionDigits, seq)
}

// AuditCheckpointKey returns /outpost/auditcp/<seq>, seq zero-padded to
// 20 digits so keys sort by sequence: the signed checkpoint of the audit
// entry with that sequence, written by controlplane/audit.
func AuditCheckpointKey(seq int64) string { return fmt.Sprintf("%s%020d", AuditCheckpointPrefix, seq) }

// AuditIndexRolloutPrefix returns /outpost/auditidx/<rollout-id>/, the
// prefix of every audit marker of the rollout.
func AuditIndexRolloutPrefix(rolloutID string) string { return AuditIndexPrefix + rolloutID + "/" }

// AuditNodeMarkerKey returns
// /outpost/auditidx/<rollout-id>/nodes/<node-id>/<state>/<assignment-id>,
// the marker of the audit entry recording that the node reached state
// (a NodeState name without its NODE_STATE_ prefix) under that
// assignment; an empty assignmentID is written as "-". The value is the
// entry's sequence in decimal text (not protobuf), written by
// controlplane/audit in the transaction that appends the entry.
func AuditNodeMarkerKey(rolloutID, nodeID, state, assignmentID string) string {
	if assignmentID == "" {
		assignmentID = noAssignment
	}
	return AuditIndexRolloutPrefix(rolloutID) + "nodes/" + nodeID + "/" + state + "/" + assignmentID
}

// AuditRolloutStateMarkerKey returns
// /outpost/auditidx/<rollout-id>/state/<state>, the marker of the audit
// entry recording that the rollout reached the terminal state (a
// RolloutState name without its ROLLOUT_STATE_ prefix). Its value is as
// AuditNodeMarkerKey's.
func AuditRolloutStateMarkerKey(rolloutID, state string) string {
	return AuditIndexRolloutPrefix(rolloutID) + "state/" + state
}

// JoinTokenKey returns /outpost/jointokens/<hex SHA-256 of the secret>,
// the JoinToken describing a gateway join token, on a lease that ends
// after the token expires. Written by controlplane/auth.
func JoinTokenKey(hash [32]byte) string { return JoinTokensPrefix + hex.EncodeToString(hash[:]) }

// JoinTokenIDPrefix returns the prefix of the key of the join token whose
// public id is id (the first 16 hex digits of the hash).
func JoinTokenIDPrefix(id string) string { return JoinTokensPrefix + id }

// CredentialKey returns /outpost/credentials/<serial>, the Credential
// issued with that certificate serial, on a lease that ends after the
// certificate expires. Written by controlplane/auth.
func CredentialKey(serial string) string { return CredentialsPrefix + serial }

// RevokedKey returns /outpost/revoked/<serial>, the Credential of a
// revoked certificate, on a lease that ends after the certificate
// expires. Written by controlplane/auth's Revoke; every replica watches
// RevokedPrefix.
func RevokedKey(serial string) string { return RevokedPrefix + serial }

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
