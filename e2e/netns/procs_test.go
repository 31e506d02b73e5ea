package netns

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/testsshd"
)

// buildOutpost builds the outpost binary into dir, so the test runs the
// daemons and the CLI exactly as operators do.
func buildOutpost(t *testing.T, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build outpost: %v", err)
	}
	bin := filepath.Join(dir, "outpost")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, "github.com/outposthq/outpost/cli/outpost").CombinedOutput()
	if err != nil {
		t.Fatalf("go build outpost: %v\n%s", err, out)
	}
	t.Logf("built %s in %v", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// process is a program running in a network namespace (through `ip netns
// exec`, which execs it: the pid is the program's), with its output in a
// log file that is shown when the test fails.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited and been reaped
}

// startIn starts argv in namespace ns and stops it on cleanup: SIGTERM,
// then SIGKILL after grace (0: SIGKILL at once).
func startIn(t *testing.T, ns, name string, grace time.Duration, argv ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child holds its own copy
	cmd := exec.Command(sbin("ip"), append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(grace)
		if t.Failed() {
			t.Logf("%s (%s) log:\n%s", name, strings.Join(argv, " "), p.tail(8<<10))
		}
	})
	return p
}

// stop ends the process: SIGTERM and up to grace to exit, then SIGKILL.
func (p *process) stop(grace time.Duration) {
	if grace > 0 {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(grace):
		}
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last n bytes of the process's log.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// waitLog waits until the process logs a line containing s.
func (p *process) waitLog(s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(p.log)
		if err == nil && bytes.Contains(b, []byte(s)) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before logging %q: %v\n%s", p.name, s, p.cmd.ProcessState, p.tail(4<<10))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not log %q within %v:\n%s", p.name, s, timeout, p.tail(4<<10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitListening waits until addr accepts connections from inside ns
// and, when banner is not empty, greets with a line starting with it.
func (p *process) waitListening(ns, addr, banner string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited before listening on %s: %v\n%s", p.name, addr, p.cmd.ProcessState, p.tail(4<<10))
		}
		if lastErr = greets(ns, addr, banner); lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening on %s within %v: %v\n%s", p.name, addr, timeout, lastErr, p.tail(4<<10))
}

// greets dials addr from ns and, when banner is not empty, checks the
// first line the server sends.
func greets(ns, addr, banner string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := dialIn(ctx, ns, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if banner == "" {
		return nil
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read banner: %w", err)
	}
	if !strings.HasPrefix(line, banner) {
		return fmt.Errorf("banner %q, want %s...", line, banner)
	}
	return nil
}

// newKey returns a fresh ed25519 key and its OpenSSH PEM encoding.
func newKey(t *testing.T) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return signer, pem.EncodeToMemory(block)
}

// sshNode is a real sshd serving one node: it listens on the node's own
// IP in its idc namespace and starts SFTP sessions in root, the node's
// "home", so a relative deploy path lands under root. Every node runs as
// the test's user (root) on the shared filesystem; the separate roots keep
// their deploy directories apart.
type sshNode struct {
	ip      string
	root    string
	hostKey ssh.PublicKey
}

// startSSHNode starts the sshd of a node (internal/testsshd) in ns on
// ip:22, the namespace's own port 22 that nothing else uses, accepting
// clientKey; it returns once sshd greets.
func startSSHNode(t *testing.T, ns, name, ip string, clientKey ssh.PublicKey) *sshNode {
	t.Helper()
	root := filepath.Join(t.TempDir(), name, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := testsshd.Start(t, testsshd.Options{
		AuthorizedKeys: []ssh.PublicKey{clientKey},
		ExtraConfig:    []string{"Subsystem sftp internal-sftp -d " + root},
		IP:             ip,
		Port:           22,
		Wrapper:        []string{sbin("ip"), "netns", "exec", ns},
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return dialIn(ctx, ns, addr)
		},
	})
	return &sshNode{ip: ip, root: root, hostKey: srv.HostKey}
}
