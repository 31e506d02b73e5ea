// Package planner turns a validated plan and the nodes it selected into a
// rollout's stages and batches: which node goes in which stage, in which
// batch, with which failure budget, bake and pause.
//
// Expansion is pure (no I/O) and deterministic: the same plan, nodes and
// Options always give the same stages, so a dry run shows exactly what a
// real rollout will do. Every node appears in exactly one batch of one
// stage; batches hold node ids sorted, and stages keep the plan's order.
//
// Strategies (DESIGN.md, Strategies):
//
//   - rolling: one stage "rolling" in batches of strategy.batch (default 1).
//   - tiered: stages tier1, tier2, tier3 by the node label "tier". Tier 1
//     is mission critical: one node at a time and strict, no failure
//     allowed (max_fail_percent 0 whatever the plan says); tier 2 in
//     batches of 50; tier 3 all at once; both with the plan's
//     max_fail_percent (default 10). Every node needs a tier of 1, 2 or 3.
//     For another order or other sizes, write the tiers as explicit stages
//     with selector {tier: "N"}.
//   - canary: a stage "canary" of count (default 1) or percent of the
//     nodes, all at once, with strategy.bake and strategy.pause, then the
//     explicit stages or one stage "rest" in batches of strategy.batch.
//   - blue_green: the nodes carry a "color" label with exactly two values.
//     The idle color (the one not serving, Options.LiveColor) becomes one
//     stage named after it, in batches of strategy.batch (default 100%),
//     waiting for promotion first when strategy.pause is manual; then a
//     stage "switch" of kind SWITCH whose only node is the switch node.
//     The live color's nodes are not part of the rollout: they keep their
//     release for an instant switch back.
//   - explicit stages: each with its own selector, count or percent,
//     batch, max_parallel, max_fail_percent, bake and pause.
package planner
