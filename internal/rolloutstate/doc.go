// Package rolloutstate is the one meaning of the rollout, stage and node
// states of the API (outpost.v1): which rollout states the engine drives,
// which are terminal, which end a watch and which mean the release was
// deployed; which node states are final and which failed; the short state
// names people read; and node counts with their text.
//
// It imports only the API types, so the CLI, the API server, audit,
// notify and the end-to-end helpers share it without importing the
// leader-only rollout engine. A rule about states that more than one of
// them needs belongs here, not in a copy; a state added to the API fails
// this package's tests until every function here classifies it.
package rolloutstate
