// Package planner turns a validated plan and the nodes it selected into a
// rollout's stages and batches: which node goes in which stage, in which
// batch, with which failure budget.
//
// Expansion is pure (no I/O) and deterministic: the same plan and nodes
// always give the same stages, so a dry run shows exactly what a real
// rollout will do. Every node appears in exactly one batch of one stage;
// batches hold node ids sorted, and stages keep the plan's order.
//
// Strategies expanded here: rolling (one stage), tiered (stages by the
// "tier" label), canary without bake or manual pause, and explicit stages
// without bake or manual pause. What the engine cannot run yet is refused
// with an *UnsupportedError naming the plan field, never silently ignored.
package planner
