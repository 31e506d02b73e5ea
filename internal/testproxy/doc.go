// Package testproxy is a TCP proxy on loopback for fault tests: it adds
// latency, black-holes traffic, resets connections, or cuts them after a
// number of bytes, or limits its bandwidth, while forwarding to a real
// target such as an sshd. It counts the connections it accepts and the
// bytes it forwards. A bandwidth Limiter may be shared by several proxies,
// like one link in front of many servers.
//
// It is the only TCP proxy of the repository's tests: a test that needs
// another fault or measure extends Proxy instead of copying it. It listens
// on a port the kernel chooses (port 0), so proxies never race for one.
//
// Latency is added by time-stamping each chunk as it is read and releasing
// it once its delay has passed, so a delayed link keeps its throughput:
// chunks wait concurrently, not one after another.
package testproxy
