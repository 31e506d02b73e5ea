// Package audit is the control plane's audit log: who did what, when, from
// where and with what result, kept in etcd for a retention period.
//
// What is recorded:
//
//   - every mutating API call (everything but Get*, List*, Watch*, Stat*,
//     FetchArtifact, the gateway's Connect stream, health and reflection;
//     see [Mutating]), by [Log.UnaryServerInterceptor] and
//     [Log.StreamServerInterceptor]: caller, role, method, resource,
//     request_id, peer address, result code and error text;
//   - every node's final result in a rollout, with the steps it ran
//     folded in as the detail "steps" ([Log.RecordNodeStep] holds them
//     in memory until [Log.RecordNodeResult]; see fold.go), with the
//     gateway that deployed the node as actor, and every rollout state change
//     ([Log.RecordRolloutState]), with the control plane as actor; the
//     rollout engine calls them.
//
// Request bodies are never stored: an entry holds only the fields of
// outpost.v1.AuditEntry, filled from an allow-list of request fields (ids,
// names, reasons), so passwords, join tokens, CSRs and plans never reach
// the log. Detail values whose name looks secret are replaced by
// "REDACTED", and URLs in messages are cut to scheme and host, because a
// webhook URL often carries its token in the path.
//
// Layout and order: entries live at /outpost/audit/<time>-<seq>
// (store.AuditKey). Each append transaction is compared on the newest
// entry (the head): it succeeds only if no entry was added since this
// writer last saw the head, so every replica's entries get consecutive
// sequences and times that never go backwards, and key order, time order,
// sequence order and commit order are one order. A writer that loses the
// race re-reads the head from the same transaction's answer and retries.
// That transaction (a comparison on the newest key of a range, and a read
// of it in the else branch) and the check of a batch's exact bytes after
// an unknown outcome are etcd operations the store does not wrap, so the
// writer (log.go) uses the store's raw client; reads elsewhere go through
// the store.
//
// Writes are not fenced on leadership: the log records what happened, and
// an entry from a replica that was just deposed (a step result its gateway
// reported) is still true. The Log belongs to the server, not to one
// leadership term, so the engine's entries queued before leadership moves
// are still written. Entries are queued and written in batches (one etcd
// transaction for up to 64 entries); API calls wait until their entry is
// written, the engine only until it is queued ([Log.Enqueue]). Delivery
// is at least once: after an etcd error whose outcome is unknown the
// writer checks whether its batch landed, but a transaction that lands
// after that check is written twice.
//
// Back-pressure: an entry is never dropped because the queue is full
// (Config.QueueSize). A caller that finds it full waits for space, bounded
// by its context, and the writer writes at once instead of gathering a
// batch; so a slow etcd slows the rollout engine down (and, through it,
// the gateways' streams, by gRPC flow control) rather than losing its
// entries. The writer needs nothing the engine holds, so the wait ends
// when etcd answers. The engine waits with its leadership term's context:
// when the term ends (or the control plane shuts down) a waiting entry is
// not queued, is logged as an error and counted
// (outpost_audit_entries_not_queued_total), and the markers let the next
// term's Reconcile record the node results and final rollout states among
// those (step results and other state changes are lost). An API call
// waits at most 5 s for space and its write. Close wakes every waiting
// caller with ErrClosed, then writes what is queued. The queue's depth,
// its capacity and the time callers waited are metrics
// (outpost_audit_queue_depth, outpost_audit_queue_capacity,
// outpost_audit_queue_wait_seconds).
//
// Markers and recovery: the engine makes a node's result durable first
// and queues its entry after, so a leader killed in between would lose the
// entry. Every node result entry and every entry of a rollout reaching a
// terminal state is written together with a marker key in the same
// transaction (/outpost/auditidx/<rollout>/nodes/<node>/<STATE>/<assignment>
// or /outpost/auditidx/<rollout>/state/<STATE>, holding the entry's
// sequence; see index.go), which costs no extra transaction. When a
// replica becomes leader the control plane runs [Log.Reconcile]: for each
// rollout that is unfinished or ended within a day, it compares the final
// node records (as they were when the term began) with the rollout's
// markers, one range read, and records what has no marker with detail
// recovered=true. So every node's latest result is in the log at least
// once across leader crashes; a deposed leader that is still alive may
// write the same result again. A rollout ending in the same terminal state
// twice (a retry) shares one marker, so only the first end is recoverable.
//
// Hash chain: each entry holds its predecessor's hash and its own over a
// canonical encoding (internal/auditchain), set in the append transaction
// after the head it follows, so the chain is as linear as the sequence.
// The janitor signs checkpoints with Config.Signer after verifying the
// entries since the last one, and every prune leaves a checkpoint of the
// last entry it deleted (chain.go).
//
// Retention: a janitor goroutine deletes entries older than
// Config.Retention (90 days by default), but never the newest entry, which
// carries the sequence, and deletes each expired entry's marker first
// unless a newer entry of the same result holds it. Every replica runs
// one; deletes are idempotent.
package audit
