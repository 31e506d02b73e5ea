package audit

import (
	"strings"
	"sync"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Step results are not entries of their own: a node deployment reports
// about fifteen steps, and a 20,000-node rollout would write 300,000
// entries a day. The finished steps of a node are kept in memory until its
// result is recorded and go into that entry as the detail "steps"
// ("connect ok 12ms, lock ok 3ms, ..., health FAILED 2s"), so a node
// deployment writes one entry (two when it is rolled back: the failed
// result, then the rollback's). A step is not durable before its node's
// result: when the leader dies in between, Reconcile records the result
// without its steps.

const (
	// foldNodes bounds the nodes whose steps are held; beyond it steps of
	// further nodes are not folded (their result entries say
	// "steps_dropped"). Far above the nodes deploying at once.
	foldNodes = 100_000
	// foldSteps bounds the steps held per node (a retried step reports
	// again).
	foldSteps = 32
	// stepsDetail names the folded steps in a node result entry.
	stepsDetail = "steps"
)

type foldKey struct{ rollout, node string }

// stepFold holds the finished steps of nodes whose result is not
// recorded yet.
type stepFold struct {
	mu    sync.Mutex // guards the fields below
	steps map[foldKey][]string
	// dropped marks nodes with steps that did not fit.
	dropped map[foldKey]bool
}

// add records a finished step of a node.
func (f *stepFold) add(rolloutID, nodeID, step string) {
	k := foldKey{rolloutID, nodeID}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.steps == nil {
		f.steps, f.dropped = map[foldKey][]string{}, map[foldKey]bool{}
	}
	s, ok := f.steps[k]
	switch {
	case !ok && len(f.steps) >= foldNodes, len(s) >= foldSteps:
		if len(f.dropped) < foldNodes {
			f.dropped[k] = true
		}
		return
	}
	f.steps[k] = append(s, step)
}

// take returns and forgets the steps of a node ("" when none), and
// whether some did not fit.
func (f *stepFold) take(rolloutID, nodeID string) (string, bool) {
	k := foldKey{rolloutID, nodeID}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, dropped := f.steps[k], f.dropped[k]
	delete(f.steps, k)
	delete(f.dropped, k)
	return strings.Join(s, ", "), dropped
}

// forget drops what is held for a rollout that ended.
func (f *stepFold) forget(rolloutID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.steps {
		if k.rollout == rolloutID {
			delete(f.steps, k)
		}
	}
	for k := range f.dropped {
		if k.rollout == rolloutID {
			delete(f.dropped, k)
		}
	}
}

// stepSummary is one finished step as folded: "health FAILED 2s".
func stepSummary(ev *outpostv1.NodeStepEvent) string {
	var b strings.Builder
	b.WriteString(stepName(ev.GetStep()))
	if ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_FAILED {
		b.WriteString(" FAILED")
	} else {
		b.WriteString(" ok")
	}
	if d := ev.GetDuration(); d != nil {
		b.WriteString(" " + d.AsDuration().String())
	}
	return b.String()
}
