// Package plan reads and checks the two YAML files people write for
// Outpost: the plan (what to deploy where and how, outpostv1.PlanSpec) and
// the node inventory (outpostv1.Node).
//
// Parsing is strict: an unknown key, a value of the wrong shape, a bad
// duration, an impossible batch or a refused hook command is an error that
// names the field by its YAML path ("strategy.stages[1].batch"), so a
// mistake is caught at submission and not half-way through a rollout.
// Validate reports every problem at once. DeploySpecOf turns a valid plan
// into the typed, defaults-applied DeploySpec a gateway runs, so nothing
// downstream parses plan strings again.
//
// The stored PlanSpec keeps what the user wrote; defaults are applied when
// it is resolved (DeploySpecOf, UnpackOf, the control plane's stage
// expansion), never written back.
package plan
