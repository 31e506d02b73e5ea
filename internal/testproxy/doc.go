// Package testproxy is a TCP proxy on loopback for fault tests: it adds
// latency, black-holes traffic, resets connections, or cuts them after a
// number of bytes, while forwarding to a real target such as an sshd.
//
// Latency is added by time-stamping each chunk as it is read and releasing
// it once its delay has passed, so a delayed link keeps its throughput:
// chunks wait concurrently, not one after another.
package testproxy
