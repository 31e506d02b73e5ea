// Package analysis is the part of canary analysis that needs no network:
// it compiles a measurement's PromQL template and CEL conditions (at plan
// validation, so a bad one is refused before anything is created),
// renders a query for a stage's nodes with every value escaped for a
// PromQL string, and judges a query's value: success, failure or
// inconclusive, never a silent pass.
//
// The Prometheus client that runs the queries is controlplane/analysis;
// the engine that schedules measurements and acts on verdicts is
// controlplane/rollout (analysis.go).
package analysis
