// Package gateway is the gateway daemon: it lives in one datacenter, dials
// out to the control plane (never the reverse), and deploys the nodes the
// control plane assigns to it over SSH, with bounded concurrency, through
// the node deployer.
//
// One Run holds one GatewayService.Connect stream at a time: hello,
// welcome, then assignments and cancels in, acks, step events, node results
// and heartbeats out. When the stream breaks, Run reconnects with jittered
// exponential backoff until its ctx ends.
//
// Invariants:
//
//   - A deployment in flight is never abandoned because the link broke: it
//     runs to its end, and its step events and result wait in a bounded
//     outbox and are re-sent after the next welcome. Results are never
//     dropped; when the outbox is full, older step events of an assignment
//     that has a newer one are dropped first (the latest per node is kept).
//     Sequence numbers are therefore increasing but may have gaps.
//   - The next hello lists the assignments still deploying. Accepted
//     assignments that had not started when the link broke are dropped
//     (they are not in the list, so the control plane hands them out
//     again): no node is started while no cancel could reach the gateway.
//   - A cancel drops an assignment that has not started and cancels the
//     context of a running one until the gateway has seen it reach the
//     switch; the deployer turns a cancelled context into a clean abandon
//     (before the stop hook) or a rollback (after it), never a half-switched
//     node. Past the switch a deployment is left to finish.
//   - An assignment for a node of another datacenter, from a stale leader
//     epoch, or beyond capacity is refused with a reason.
//   - Each artifact is fetched from the control plane once per digest
//     (package artifactcache) and fanned out to every node, as long as
//     the size-bounded cache keeps it. A deployment pins its artifact and
//     its delta bases until it ends, so none is evicted under it.
//   - SSH keys are loaded once, in New; passwords never reach logs, errors,
//     events or traces.
//   - With an SSH user CA (SSHConfig.CAKeyFile) each assignment logs in
//     with a key pair and certificate of its own (package sshca), carried
//     by its context to its own dials only; its context ends at its time
//     limit, switch or not, early enough for the deployer's cleanup or
//     rollback to finish before the certificate expires.
//   - The deployer's spans join the control plane's trace through the W3C
//     trace context carried in each assignment.
//   - The link is TLS with a client certificate bound to the gateway's name
//     and datacenter (Config.CredentialFile). A gateway without one joins
//     once with a single-use join token; it renews the certificate after
//     two thirds of its remaining life and moves its streams to a new
//     connection, leaving calls in flight on the old one until its
//     certificate expires. Join tokens are never logged.
//   - Beside Connect the gateway holds ServeHostKeyScans: asked for a
//     node's host key, it reads it from the SSH handshake and hangs up
//     before authenticating, offering no credential and trusting nothing.
package gateway
