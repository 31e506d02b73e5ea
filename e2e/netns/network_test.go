package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outposthq/outpost/internal/testsshd"
)

// namePrefix starts the name of every namespace this package creates;
// the test binary's pid follows, so concurrent runs do not collide and a
// crashed run's namespaces can be told apart from a live run's.
const namePrefix = "outpost-e2e-"

// netnsDir is where `ip netns add` pins named namespaces.
const netnsDir = "/run/netns"

// Addressing. Every address lives on a veth inside the test's own
// namespaces, so the private range cannot clash with the host's networks.
const (
	centralIP = "10.200.0.2"
	// segmentsCIDR covers central and every idc subnet.
	segmentsCIDR = "10.200.0.0/16"
)

// routerIP is the router's address on subnet i (0 is central, 1.. the idcs).
func routerIP(i int) string { return fmt.Sprintf("10.200.%d.1", i) }

// idcHostIP is address host of idc i: 2 is the gateway's host, 11.. the nodes.
func idcHostIP(idc, host int) string { return fmt.Sprintf("10.200.%d.%d", idc, host) }

// firewall is the router's nftables ruleset: forwarded traffic is dropped
// unless it belongs to a connection an idc opened towards central. The
// named counter counts what central tried to send into the idcs, so the
// test can tell that the firewall, and not a missing listener or route,
// stopped it. The router itself accepts nothing new.
const firewall = `
table inet outpost_segments {
	counter central_to_idc_dropped {}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname { "idc1", "idc2" } oifname "central" ct state new accept
		iifname "central" counter name "central_to_idc_dropped" drop
	}
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
	}
}
`

// network is the segmented network of one test: namespace names and
// addresses. Deleting the namespaces (on cleanup) removes every link.
type network struct {
	router, central string
	idcs            []string // idcs[i] is the namespace of idc i+1
}

// requireNetns skips the test unless this process may create network
// namespaces, and fails it when a tool the test needs is missing (root
// means we are on a machine that should have them: `make test` installs
// them).
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("segmented network test needs root to create network namespaces: run it as root (CI does)")
	}
	if _, err := exec.LookPath(sbin("ip")); err != nil {
		t.Skipf("segmented network test needs the ip command (iproute2) to create network namespaces: %v", err)
	}
	probe := fmt.Sprintf("%s%d-probe", namePrefix, os.Getpid())
	if out, err := exec.Command(sbin("ip"), "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("segmented network test cannot create network namespaces here (needs CAP_SYS_ADMIN and CAP_NET_ADMIN): ip netns add: %v: %s",
			err, bytes.TrimSpace(out))
	}
	if out, err := exec.Command(sbin("ip"), "netns", "del", probe).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", probe, err, bytes.TrimSpace(out))
	}
	for _, tool := range []string{sbin("nft"), sbin("sysctl"), testsshd.SSHDPath} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("segmented network test needs %s (packages nftables and openssh-server; scripts/deps.sh installs them): %v", tool, err)
		}
	}
}

// sbin finds an administration command: on $PATH, or in the sbin
// directories that a non-login root shell may leave off $PATH.
func sbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p
		}
	}
	return name
}

// ipCmd runs the ip command (or, with "netns exec", a command in a
// namespace) and returns an error that carries its output.
func ipCmd(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, sbin("ip"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// staleName matches the namespaces of any run of this package.
var staleName = regexp.MustCompile(`^` + regexp.QuoteMeta(namePrefix) + `([0-9]+)-`)

// removeStale deletes namespaces left by runs whose test binary is gone
// (a crash, a SIGKILL), after killing the processes still inside them:
// only processes of those earlier runs can be there.
func removeStale(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatalf("list network namespaces: %v", err)
	}
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || testBinaryAlive(pid) {
			continue
		}
		t.Logf("removing network namespace %s left by an earlier run (pid %d)", e.Name(), pid)
		if err := deleteNamespace(e.Name()); err != nil {
			t.Errorf("remove stale namespace: %v", err)
		}
	}
}

// testBinaryAlive reports whether pid is a running Go test binary (pids
// are reused, so a live pid alone does not mean a live run).
func testBinaryAlive(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	return strings.HasSuffix(string(argv0), ".test")
}

// namespacePids lists the processes whose network namespace is ns, except
// this one: a thread of the test that could not leave ns (see inNetns)
// makes ip netns pids list the test itself.
func namespacePids(ns string) ([]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, sbin("ip"), "netns", "pids", ns).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", ns, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// deleteNamespace kills every process left in ns (sshd's sessions, a
// daemon that ignored SIGTERM), waits for them to go, and deletes ns with
// its links.
func deleteNamespace(ns string) error {
	for attempt := 0; attempt < 50; attempt++ {
		pids, err := namespacePids(ns)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ipCmd("netns", "del", ns)
}

// newNetwork creates the namespaces and links of one test and deletes
// them on cleanup, whatever happened in between:
//
//	central 10.200.0.2 ── router ── idc1 10.200.1.0/24
//	                        └────── idc2 10.200.2.0/24
//
// Central and the idcs route the whole 10.200.0.0/16 through the router
// (central needs that route to answer the idcs); the router's firewall
// decides which connections may start.
func newNetwork(t *testing.T, idcs int) *network {
	t.Helper()
	base := fmt.Sprintf("%s%d-", namePrefix, os.Getpid())
	n := &network{router: base + "router", central: base + "central"}
	for i := 1; i <= idcs; i++ {
		n.idcs = append(n.idcs, fmt.Sprintf("%sidc%d", base, i))
	}
	all := append([]string{n.router, n.central}, n.idcs...)
	for _, ns := range all {
		if err := ipCmd("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := deleteNamespace(ns); err != nil {
				t.Errorf("delete network namespace: %v", err)
			}
		})
		if err := ipCmd("-n", ns, "link", "set", "lo", "up"); err != nil {
			t.Fatal(err)
		}
	}

	// link connects the router's interface rname to eth0 in ns, on subnet
	// 10.200.sub.0/24, with addrs on ns's side. The veth pair is created
	// inside the namespaces, so the host never sees it.
	link := func(rname, ns string, sub int, addrs ...string) {
		steps := [][]string{
			{"-n", n.router, "link", "add", rname, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"-n", n.router, "addr", "add", routerIP(sub) + "/24", "dev", rname},
			{"-n", n.router, "link", "set", rname, "up"},
		}
		for _, a := range addrs {
			steps = append(steps, []string{"-n", ns, "addr", "add", a + "/24", "dev", "eth0"})
		}
		steps = append(steps,
			[]string{"-n", ns, "link", "set", "eth0", "up"},
			[]string{"-n", ns, "route", "add", segmentsCIDR, "via", routerIP(sub)},
		)
		for _, s := range steps {
			if err := ipCmd(s...); err != nil {
				t.Fatal(err)
			}
		}
	}
	link("central", n.central, 0, centralIP)
	for i := 1; i <= idcs; i++ {
		addrs := []string{idcHostIP(i, 2)}
		for h := 0; h < nodesPerIDC; h++ {
			addrs = append(addrs, idcHostIP(i, 11+h))
		}
		link(fmt.Sprintf("idc%d", i), n.idcs[i-1], i, addrs...)
	}

	// Forwarding and the firewall are settings of the router namespace
	// only; the host's sysctls and rules are untouched.
	if err := ipCmd("netns", "exec", n.router, sbin("sysctl"), "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sbin("ip"), "netns", "exec", n.router, sbin("nft"), "-f", "-")
	cmd.Stdin = strings.NewReader(firewall)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("load the router's firewall: %v: %s", err, bytes.TrimSpace(out))
	}
	return n
}

// droppedFromCentral reads how many packets from central into an idc the
// router's firewall has dropped.
func (n *network) droppedFromCentral() (int64, error) {
	out, err := exec.Command(sbin("ip"), "netns", "exec", n.router,
		sbin("nft"), "list", "counter", "inet", "outpost_segments", "central_to_idc_dropped").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("read the firewall counter: %w: %s", err, bytes.TrimSpace(out))
	}
	m := regexp.MustCompile(`packets ([0-9]+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no packet count in %q", out)
	}
	return strconv.ParseInt(string(m[1]), 10, 64)
}

// inNetns runs fn on an OS thread that has joined network namespace ns,
// so every socket fn creates (a listener, a dial) lives in ns for good,
// whichever thread uses it later. The thread goes back to its own
// namespace afterwards; if it cannot, it stays locked, and Go retires it
// with the goroutine instead of running other goroutines in ns.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer home.Close()
		target, err := os.Open(filepath.Join(netnsDir, ns))
		if err != nil {
			errc <- fmt.Errorf("open network namespace: %w", err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("join network namespace %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// dialIn opens a TCP connection to addr from inside namespace ns.
func dialIn(ctx context.Context, ns, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// listenIn listens on addr inside namespace ns.
func listenIn(ns, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetns(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}
