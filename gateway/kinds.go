package gateway

import (
	"context"
	"fmt"

	"github.com/outposthq/outpost/gateway/deployer"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// nodeOperator runs the assignments that are not deployments (see
// outpostv1.AssignmentKind): bake health checks, blue/green switch hooks
// and canary rollbacks. *deployer.Deployer implements it; a nodeDeployer
// that does not (a test's wrapper) makes those assignments fail.
type nodeOperator interface {
	CheckHealth(ctx context.Context, job deployer.Job, emit func(*outpostv1.NodeStepEvent)) deployer.Result
	RunHook(ctx context.Context, job deployer.HookJob, emit func(*outpostv1.NodeStepEvent)) deployer.Result
	Rollback(ctx context.Context, job deployer.Job, to string, emit func(*outpostv1.NodeStepEvent)) deployer.Result
}

var _ nodeOperator = (*deployer.Deployer)(nil)

// isDeploy reports whether a is a deployment (the kind gateways that
// predate kinds know).
func isDeploy(a *outpostv1.Assignment) bool {
	switch a.GetKind() {
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_UNSPECIFIED, outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY:
		return true
	}
	return false
}

// runOther runs an assignment that is not a deployment. None of them
// needs the artifact.
func (g *Gateway) runOther(ctx context.Context, a *outpostv1.Assignment, emit func(*outpostv1.NodeStepEvent)) deployer.Result {
	failed := func(err error) deployer.Result {
		return deployer.Result{State: outpostv1.NodeState_NODE_STATE_FAILED, Err: err}
	}
	op, ok := g.deploy.(nodeOperator)
	if !ok {
		return failed(fmt.Errorf("this gateway cannot run %s assignments", a.GetKind()))
	}
	if a.GetKind() == outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK {
		owner := a.GetOwner()
		if owner == "" {
			owner = g.cfg.Name
		}
		return op.RunHook(ctx, deployer.HookJob{
			Node: a.GetNode(), RolloutID: a.GetRolloutId(), Owner: owner, Command: a.GetHook(), Env: a.GetHookEnv(),
		}, emit)
	}
	job, err := jobOf(a, g.cfg.Name)
	if err != nil {
		return failed(err)
	}
	switch a.GetKind() {
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_HEALTH_CHECK:
		return op.CheckHealth(ctx, job, emit)
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK:
		return op.Rollback(ctx, job, a.GetRollbackTo(), emit)
	}
	return failed(fmt.Errorf("unknown assignment kind %v; upgrade the gateway", a.GetKind()))
}
