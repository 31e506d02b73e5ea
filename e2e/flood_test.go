package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outposthq/outpost/cli"
	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/pki"
)

// cliChildEnv, set to 1, makes the test binary run the outpost command
// line given as its arguments instead of the tests (see TestMain): a
// control plane in a process of its own, with its own file limit.
const cliChildEnv = "OUTPOST_E2E_CLI"

// Flood parameters: floodSources loopback addresses with floodPerSource
// sockets each, half silent, half stuck in their ClientHello; a socket
// the control plane closes is opened again after floodRedial, as a
// persistent attacker would.
const (
	floodSources   = 40
	floodPerSource = 50
	floodRedial    = 3 * time.Second
	// cpFileLimit is the control plane's open file limit: below the
	// flood's size, so without limits the flood takes every descriptor.
	cpFileLimit = 1024
	// answerLimit bounds one `rollout list` during the flood.
	answerLimit = 15 * time.Second
)

// TestFloodOfUnauthenticatedConnections is issue 11's first finding: a
// control plane whose open file limit (1024) is smaller than a flood of
// idle connections and partial ClientHellos to its port (2,000, from 40
// addresses, reopened when closed). While the flood runs, gateways join,
// an artifact is uploaded, a rollout succeeds and `outpost rollout list`
// answers on a fresh connection; afterwards the process is alive, exits 0
// on SIGTERM and never ran out of file descriptors.
func TestFloodOfUnauthenticatedConnections(t *testing.T) {
	const hosts = 4
	ensureFileLimit(t, floodSources*floodPerSource+4096)
	s := &system{t: t, dir: t.TempDir(), log: testLogger(), gateways: map[string]*runningGateway{}, creds: map[string]*pki.Credential{}}
	s.fleet = e2etest.StartFleet(t, hosts, s.dir)
	s.nodes = s.fleet.Nodes(alternateDC)
	cp := startCPProcess(t, filepath.Join(s.dir, "controlplane"), cpFileLimit)
	s.addr, s.adminFile = cp.addr, cp.adminFile
	var err error
	if s.admin, err = pki.LoadCredential(s.adminFile); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stopAll)
	if s.client, err = e2etest.Dial(s.addr, s.admin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.client.Close() })
	if err := s.client.Apply(ctxT(t), s.nodes); err != nil {
		t.Fatal(err)
	}

	f := startFlood(t, s.addr)
	f.waitEstablished(t)
	t.Logf("flood established: %d sockets opened, %d refused while dialling; control plane holds %d file descriptors",
		f.dials.Load(), f.failed.Load(), cp.openFiles())

	// Everything below needs new connections or new files in the
	// control plane while the flood runs.
	s.twoGateways()
	v1 := s.deploy("1.0.0", "2")
	for i := range hosts {
		s.checkOn(i, v1, 1)
	}
	start := time.Now()
	code, out := listRollouts(t, s)
	if code != 0 || !strings.Contains(out, "SUCCEEDED") {
		t.Errorf("rollout list during the flood: exit %d, output %q; want the succeeded rollout", code, out)
	}
	t.Logf("rollout list answered in %v during the flood; %d sockets opened, %d closed by the control plane; it holds %d file descriptors",
		time.Since(start).Round(time.Millisecond), f.dials.Load(), f.closed.Load(), cp.openFiles())
	if f.closed.Load() == 0 {
		t.Errorf("the control plane closed none of the flood's sockets")
	}

	f.stop()
	if cp.exited() {
		t.Fatalf("control plane exited during the flood (%v):\n%s", cp.cmd.ProcessState, cp.log.tail(4<<10))
	}
	if code, _ := listRollouts(t, s); code != 0 {
		t.Errorf("rollout list after the flood: exit %d", code)
	}
	s.stopAll()
	if code := cp.stop(t); code != 0 {
		t.Errorf("control plane exit %d on SIGTERM, want 0:\n%s", code, cp.log.tail(4<<10))
	}
	for _, bad := range []string{"too many open files", "control plane failed", "etcd failed"} {
		if strings.Contains(cp.log.String(), bad) {
			t.Errorf("control plane log says %q:\n%s", bad, cp.log.tail(8<<10))
		}
	}
	if !strings.Contains(cp.log.String(), "closing connections that have not authenticated") {
		t.Errorf("control plane log does not report the connections it closed:\n%s", cp.log.tail(4<<10))
	}
}

// listRollouts runs `outpost rollout list` in this process, as the admin,
// bounded by answerLimit.
func listRollouts(t *testing.T, s *system) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), answerLimit)
	defer cancel()
	var stdout, stderr bytes.Buffer
	getenv := func(name string) string {
		if name == "OUTPOST_CREDENTIAL" {
			return s.adminFile
		}
		return ""
	}
	code := cli.Run(ctx, []string{"rollout", "list", "--controlplane", s.addr}, &cli.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: getenv})
	if code != 0 {
		t.Logf("rollout list: exit %d, stderr %q", code, stderr.String())
	}
	return code, stdout.String()
}

// ensureFileLimit makes sure this process may open n files, raising its
// limits (root may raise the hard one) or skipping the test.
func ensureFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	want := syscall.Rlimit{Cur: n, Max: max(n, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		t.Skipf("the flood needs %d open files; the limit is %d (hard %d) and cannot be raised: %v", n, lim.Cur, lim.Max, err)
	}
}

// cpProcess is `outpost controlplane` running in a process of its own.
type cpProcess struct {
	cmd       *exec.Cmd
	log       *lockedLog
	addr      string
	adminFile string
	done      chan struct{} // closed when the process has exited and been reaped
}

var readyLine = regexp.MustCompile(`control plane ready.* addr=(127\.0\.0\.1:\d+)`)

// startCPProcess runs the outpost command line (this test binary, see
// TestMain) as a control plane with an embedded etcd in dataDir, under an
// open file limit of fileLimit (soft and hard), and waits until it is
// ready. It is stopped when the test ends.
func startCPProcess(t *testing.T, dataDir string, fileLimit int) *cpProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, fileLimit),
		exe, "controlplane", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--name", "cp-flood")
	cmd.Env = append(os.Environ(), cliChildEnv+"=1")
	p := &cpProcess{cmd: cmd, log: &lockedLog{}, adminFile: filepath.Join(dataDir, "admin.pem"), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// Its own process group: a ^C at the terminal reaches the test only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- control plane log:\n%s", p.log.tail(12<<10))
		}
	})
	deadline := time.Now().Add(waitLimit)
	for {
		if m := readyLine.FindStringSubmatch(p.log.String()); m != nil {
			p.addr = m[1]
			return p
		}
		if p.exited() {
			t.Fatalf("control plane exited before it was ready (%v):\n%s", cmd.ProcessState, p.log.tail(4<<10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane not ready within %v:\n%s", waitLimit, p.log.tail(4<<10))
		}
		time.Sleep(pollEvery)
	}
}

func (p *cpProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits for the exit (SIGKILL after waitLimit) and
// returns the exit code.
func (p *cpProcess) stop(t *testing.T) int {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(waitLimit):
			t.Errorf("control plane did not stop within %v of SIGTERM", waitLimit)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

// openFiles counts the process's open file descriptors (-1 if unknown).
func (p *cpProcess) openFiles() int {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	return len(fds)
}

// lockedLog collects a process's output.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedLog) tail(n int) string {
	s := l.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// partialClientHello is the start of a TLS record announcing a 512-byte
// ClientHello, of which nothing more comes.
var partialClientHello = []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}

// flood holds floodSources*floodPerSource sockets to a control plane,
// each reopened floodRedial after the control plane closes it, until
// stop.
type flood struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	dials  atomic.Int64 // sockets opened
	closed atomic.Int64 // sockets the control plane closed
	failed atomic.Int64 // dials that failed
}

func startFlood(t *testing.T, addr string) *flood {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &flood{cancel: cancel}
	for src := range floodSources {
		ip := net.IPv4(127, 0, 2, byte(1+src))
		for i := range floodPerSource {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.hold(ctx, addr, ip, i%2 == 1)
			}()
		}
	}
	t.Cleanup(f.stop)
	return f
}

// hold keeps one socket open from ip until ctx ends.
func (f *flood) hold(ctx context.Context, addr string, ip net.IP, partial bool) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	buf := make([]byte, 1)
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() == nil {
				f.failed.Add(1)
			}
		} else {
			f.dials.Add(1)
			if partial {
				_, _ = c.Write(partialClientHello)
			}
			stop := context.AfterFunc(ctx, func() { c.Close() })
			_, err = c.Read(buf) // until the control plane closes it, or stop
			if stop() && err != nil {
				f.closed.Add(1)
			}
			c.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(floodRedial):
		}
	}
}

// waitEstablished waits until every socket of the flood was opened once.
func (f *flood) waitEstablished(t *testing.T) {
	t.Helper()
	const total = floodSources * floodPerSource
	deadline := time.Now().Add(waitLimit)
	for f.dials.Load()+f.failed.Load() < total {
		if time.Now().After(deadline) {
			t.Fatalf("flood: %d of %d sockets opened (%d dials failed) within %v", f.dials.Load(), total, f.failed.Load(), waitLimit)
		}
		time.Sleep(pollEvery)
	}
}

// stop closes every socket of the flood and waits for its goroutines.
func (f *flood) stop() {
	f.cancel()
	f.wg.Wait()
}
