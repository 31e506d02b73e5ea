package e2etest

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	"github.com/outposthq/outpost/internal/testsshd"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// What tests of Outpost as processes share: the outpost binary built from
// this tree, its daemons (a control plane, gateways) each an `outpost`
// process logging JSON to a file, and real OpenSSH nodes.

const (
	// logLimit bounds a wait for a daemon's log line.
	logLimit = time.Minute
	// stopLimit bounds a daemon's exit after SIGTERM.
	stopLimit = 40 * time.Second
)

// BuildOutpost builds the outpost command of this tree into dir.
func BuildOutpost(tb testing.TB, dir string) string {
	tb.Helper()
	bin := filepath.Join(dir, "outpost")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/outposthq/outpost/cli/outpost").CombinedOutput(); err != nil {
		tb.Fatalf("go build outpost: %v\n%s", err, out)
	}
	return bin
}

// Daemon is an outpost process started by a test, its standard output and
// error in Log. It is stopped (SIGTERM, then SIGKILL) when the test ends.
type Daemon struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan error
}

// StartDaemon runs bin with args in dir, as name, with HOME=dir.
func StartDaemon(tb testing.TB, dir, name, bin string, args ...string) *Daemon {
	tb.Helper()
	d := &Daemon{Name: name, Log: filepath.Join(dir, name+".log"), done: make(chan error, 1)}
	logFile, err := os.Create(d.Log)
	if err != nil {
		tb.Fatal(err)
	}
	defer logFile.Close()
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	d.cmd.Dir = dir
	d.cmd.Env = append(os.Environ(), "HOME="+dir)
	if err := d.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	tb.Cleanup(func() { d.Stop(tb) })
	return d
}

// Stop ends the daemon with SIGTERM and waits for it; a daemon that does
// not exit cleanly fails the test. Stopping twice is a no-op.
func (d *Daemon) Stop(tb testing.TB) {
	tb.Helper()
	if d.done == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			tb.Errorf("%s exited with %v; log %s:\n%s", d.Name, err, d.Log, d.Tail())
		}
	case <-time.After(stopLimit):
		_ = d.cmd.Process.Kill()
		<-d.done
		tb.Errorf("%s did not stop within %v of SIGTERM; log %s", d.Name, stopLimit, d.Log)
	}
	d.done = nil
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Tail returns the last lines of the daemon's log.
func (d *Daemon) Tail() string {
	data, _ := os.ReadFile(d.Log)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// WaitLog waits for a JSON log line whose msg starts with msg and whose
// field key is a string for which ok is true (nil: any), and returns that
// field.
func (d *Daemon) WaitLog(tb testing.TB, msg, key string, ok func(string) bool) string {
	tb.Helper()
	deadline := time.Now().Add(logLimit)
	for time.Now().Before(deadline) {
		if v, found := d.findLog(msg, key, ok); found {
			return v
		}
		select {
		case err := <-d.done:
			d.done = nil
			tb.Fatalf("%s exited (%v) before logging %q:\n%s", d.Name, err, msg, d.Tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
	tb.Fatalf("%s did not log %q within %v:\n%s", d.Name, msg, logLimit, d.Tail())
	return ""
}

func (d *Daemon) findLog(msg, key string, ok func(string) bool) (string, bool) {
	f, err := os.Open(d.Log)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if m, _ := line["msg"].(string); !strings.HasPrefix(m, msg) {
			continue
		}
		if v, isString := line[key].(string); isString && (ok == nil || ok(v)) {
			return v, true
		}
	}
	return "", false
}

// System is a control plane and its gateways, each an `outpost` process,
// with an admin client of the control plane.
type System struct {
	CP *Daemon
	// Addr is the control plane's gRPC address; AdminFile the admin
	// credential it wrote.
	Addr, AdminFile string
	Client          *Client
	Gateways        map[string]*Daemon
	bin, dir        string
}

// StartSystem runs `outpost controlplane` with its data under dir and
// waits until it serves.
func StartSystem(tb testing.TB, bin, dir string) *System {
	tb.Helper()
	s := &System{bin: bin, dir: dir, Gateways: map[string]*Daemon{}, AdminFile: filepath.Join(dir, "cp-data", "admin.pem")}
	s.CP = StartDaemon(tb, dir, "controlplane", bin, "controlplane",
		"--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "cp-data"), "--name", "cp-e2e",
		"--log-format", "json", "--log-level", "info")
	s.Addr = s.CP.WaitLog(tb, "control plane ready", "addr", nil)
	admin, err := pki.LoadCredential(s.AdminFile)
	if err != nil {
		tb.Fatal(err)
	}
	if s.Client, err = Dial(s.Addr, admin); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Client.Close() })
	return s
}

// StartGateway runs `outpost gateway` name for datacenter dc, joining with
// a fresh token, logging in to nodes with the key in keyFile (host keys
// are pinned in the inventory), and waits until the control plane has it.
func (s *System) StartGateway(tb testing.TB, name, dc, keyFile string) *Daemon {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), logLimit)
	defer cancel()
	token, err := s.Client.JoinToken(ctx, name, dc)
	if err != nil {
		tb.Fatal(err)
	}
	knownHosts := filepath.Join(s.dir, name+".known_hosts") // empty: every key is pinned
	if err := os.WriteFile(knownHosts, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	// The token goes through a file: never in a process's arguments.
	tokenFile := filepath.Join(s.dir, name+".token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		tb.Fatal(err)
	}
	g := StartDaemon(tb, s.dir, "gateway-"+name, s.bin, "gateway",
		"--controlplane", s.Addr, "--datacenter", dc, "--name", name,
		"--credential-file", filepath.Join(s.dir, name+".pem"), "--join-token-file", tokenFile,
		"--ssh-key", keyFile, "--known-hosts", knownHosts, "--cache-dir", filepath.Join(s.dir, "cache-"+name),
		"--log-format", "json", "--log-level", "info")
	s.Gateways[name] = g
	s.CP.WaitLog(tb, "gateway connected", "gateway", func(v string) bool { return v == name })
	return g
}

// User creates user name with role through the admin and returns the
// file holding their credential.
func (s *System) User(tb testing.TB, name string, role pki.Role) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), logLimit)
	defer cancel()
	path := filepath.Join(s.dir, name+".pem")
	if _, err := enroll.CreateUser(ctx, s.Client.AdminServiceClient, name, role, 0, path, s.Addr); err != nil {
		tb.Fatalf("create user %s: %v", name, err)
	}
	return path
}

// SSHKey is a key nodes accept: its signer, and its private key in a
// file for `outpost gateway --ssh-key` and `ssh -i`.
type SSHKey struct {
	Signer ssh.Signer
	File   string
}

// NewSSHKey makes an ed25519 key and writes it under dir.
func NewSSHKey(tb testing.TB, dir string) SSHKey {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		tb.Fatal(err)
	}
	k := SSHKey{Signer: signer, File: filepath.Join(dir, "id_ed25519")}
	if err := os.WriteFile(k.File, pem.EncodeToMemory(block), 0o600); err != nil {
		tb.Fatal(err)
	}
	return k
}

// SSHDNode is a real OpenSSH sshd serving one node whose login home is
// its own directory Home: sshd runs in a mount namespace of its own where
// Home is mounted over the home of this machine's user (the login of
// every node), so sessions start there, SFTP too, and HOME names it, as
// on a server of its own. A plan's relative deploy path thus lands in a
// different directory on each node although all log in as the same user,
// and the login files of this machine's user (a slow ~/.bashrc) never
// run. It needs root (unshare --mount), as CI has; without, the test
// is skipped.
type SSHDNode struct {
	Name string
	Srv  *testsshd.Server
	Home string
}

// StartSSHDNodes starts n sshd nodes accepting key, named name-N, with
// homes under dir.
func StartSSHDNodes(tb testing.TB, dir, name string, n int, key ssh.PublicKey) []SSHDNode {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("sshd nodes with homes of their own need root (unshare --mount): run as root (CI does)")
	}
	me, err := user.Current()
	if err != nil || me.HomeDir == "" {
		tb.Fatalf("this user's home directory: %v", err)
	}
	nodes := make([]SSHDNode, n)
	for i := range nodes {
		home := filepath.Join(dir, fmt.Sprintf("%s-%d", name, i+1))
		if err := os.MkdirAll(home, 0o755); err != nil {
			tb.Fatal(err)
		}
		nodes[i] = SSHDNode{Name: fmt.Sprintf("%s-%d", name, i+1), Home: home}
		nodes[i].Srv = testsshd.Start(tb, testsshd.Options{
			AuthorizedKeys: []ssh.PublicKey{key},
			ExtraConfig:    []string{"SetEnv HOME=" + me.HomeDir},
			Wrapper: []string{"unshare", "--mount", "--propagation", "private",
				"sh", "-c", `mount --bind "$0" "$1" && shift && exec "$@"`, home, me.HomeDir},
		})
	}
	return nodes
}

// Node is the node's inventory entry, labelled app=App, in datacenter dc,
// its host key pinned.
func (n SSHDNode) Node(dc string) *outpostv1.Node {
	return &outpostv1.Node{
		Id: n.Name, Address: n.Srv.Addr, Datacenter: dc, User: n.Srv.User,
		Labels:   map[string]string{"app": App},
		HostKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(n.Srv.HostKey)))},
	}
}

// SSH runs command on the node with OpenSSH's ssh client, as an operator
// would by hand, its host key checked, and returns its output.
func (n SSHDNode) SSH(ctx context.Context, keyFile, command string) (string, error) {
	knownHosts := n.Home + ".known_hosts"
	if err := os.WriteFile(knownHosts, []byte(n.Srv.KnownHostsLine()+"\n"), 0o600); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-i", keyFile, "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile="+knownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR", "-p", fmt.Sprint(n.Srv.Port), n.Srv.User+"@"+n.Srv.IP, command)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ssh %s %q: %w: %s", n.Name, command, err, out)
	}
	return string(out), nil
}
