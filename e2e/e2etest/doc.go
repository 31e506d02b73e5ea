// Package e2etest holds what Outpost's end-to-end tests and its fleet
// benchmark share: an in-process SSH fleet with the key and known_hosts a
// gateway needs, its node inventory, a gRPC client of the control plane,
// and readers of what deployments left on each host (current release,
// history lines, health), so tests assert on the hosts themselves and not
// only on what the API says.
//
// It starts nothing that outlives the test or benchmark that called it.
package e2etest
