package simfleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// execWaitDelay bounds how long a finished command's output pipes may be
// held open by processes it left in the background; without it a command
// like `daemon &` would pin its session forever. It is also the time the
// output of a command that has exited gets to reach the channel: when it
// runs out, the rest is dropped and the exit status still sent. On a
// saturated machine (a 1,000-node benchmark rollout on 2 cores) that copy
// waited over 2 s for the CPU, and whole scripts' output went missing
// behind an exit status of 0; it must not happen short of a process that
// really holds the pipe.
const execWaitDelay = 30 * time.Second

// session is one SSH session channel: at most one exec or sftp subsystem.
type session struct {
	host *Host
	conn net.Conn // the SSH connection's socket, cut by upload faults
	user string
	ch   ssh.Channel

	mu      sync.Mutex // guards started and proc
	started bool
	proc    *os.Process
}

// serve answers the channel's requests until the client closes the channel
// or the connection drops; then any running command is killed and serve
// returns once everything the session started has ended.
func (s *session) serve(reqs <-chan *ssh.Request) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		_ = s.ch.Close()
	}()
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if ssh.Unmarshal(req.Payload, &p) != nil || !s.start() {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.exec(ctx, &wg, p.Command)
			}()
		case "subsystem":
			var p struct{ Name string }
			if ssh.Unmarshal(req.Payload, &p) != nil || p.Name != "sftp" || !s.start() {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.sftp()
			}()
		case "signal":
			var p struct{ Signal string }
			if ssh.Unmarshal(req.Payload, &p) == nil {
				s.signal(p.Signal)
			}
			_ = req.Reply(false, nil) // signals carry no reply
		default:
			// pty-req, env, shell, x11-req, keepalive@openssh.com…: refused,
			// as a stock sshd without a terminal refuses them.
			_ = req.Reply(false, nil)
		}
	}
}

// start reports whether this is the session's first exec or subsystem.
func (s *session) start() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return false
	}
	s.started = true
	return true
}

// exec runs command through /bin/sh in the host root and reports its exit
// status. Canceling ctx kills the command's whole process group. Goroutines
// that must outlive exec (the stdin copy, which ends only when the channel
// does) join wg.
func (s *session) exec(ctx context.Context, wg *sync.WaitGroup, command string) {
	h := s.host
	h.execs.Add(1)
	if d := h.currentFaults().ExecDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}

	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	env := []string{
		"HOME=" + h.Root,
		"PATH=" + path,
		"USER=" + s.user,
		"LOGNAME=" + s.user,
		"SHELL=/bin/sh",
	}
	if h.fleet.cfg.Shell == ShellInterp {
		s.interpExec(ctx, wg, env, command)
		return
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Dir = h.Root
	cmd.Env = env
	// Its own process group, so cancellation also reaches the command's
	// children, as a closing sshd session's SIGHUP would.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = execWaitDelay
	cmd.Stdout = s.ch
	cmd.Stderr = s.ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Fprintf(s.ch.Stderr(), "simfleet: start /bin/sh: %v\n", err)
		s.exit(exitStatus(127))
		return
	}
	s.mu.Lock()
	s.proc = cmd.Process
	s.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(stdin, s.ch)
		_ = stdin.Close()
	}()

	err = cmd.Wait()
	if ctx.Err() != nil {
		return // the client is gone; nobody to tell
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
		h.fleet.cfg.Logger.Debug("exec", "host", h.Name, "err", err)
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		s.exit(exitSignal(ws.Signal()))
		return
	}
	s.exit(exitStatus(ws.ExitStatus()))
}

// interpExec runs command with the in-process shell (ShellInterp).
// Its standard input is a pipe fed from the channel, as a process's is.
func (s *session) interpExec(ctx context.Context, wg *sync.WaitGroup, env []string, command string) {
	pr, pw := io.Pipe()
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := io.Copy(pw, s.ch)
		pw.CloseWithError(err)
	}()
	status := runInterp(ctx, s.host.Root, env, nil, pr, s.ch, s.ch.Stderr(), command)
	pr.Close()
	if ctx.Err() != nil {
		return // the client is gone; nobody to tell
	}
	s.exit(exitStatus(status))
}

// exit ends the session the way OpenSSH does: EOF, the exit request, close.
func (s *session) exit(name string, payload []byte) {
	_ = s.ch.CloseWrite()
	_, _ = s.ch.SendRequest(name, false, payload)
	_ = s.ch.Close()
}

func exitStatus(code int) (string, []byte) {
	return "exit-status", ssh.Marshal(struct{ Status uint32 }{uint32(code)})
}

func exitSignal(sig syscall.Signal) (string, []byte) {
	name, ok := signalNames[sig]
	if !ok {
		name = fmt.Sprintf("SIG%d", int(sig))
	}
	return "exit-signal", ssh.Marshal(struct {
		Signal     string
		CoreDumped bool
		Error      string
		Lang       string
	}{Signal: name})
}

// signalNames maps signals to their RFC 4254 names (no "SIG" prefix).
var signalNames = map[syscall.Signal]string{
	syscall.SIGABRT: "ABRT", syscall.SIGALRM: "ALRM", syscall.SIGFPE: "FPE",
	syscall.SIGHUP: "HUP", syscall.SIGILL: "ILL", syscall.SIGINT: "INT",
	syscall.SIGKILL: "KILL", syscall.SIGPIPE: "PIPE", syscall.SIGQUIT: "QUIT",
	syscall.SIGSEGV: "SEGV", syscall.SIGTERM: "TERM", syscall.SIGUSR1: "USR1",
	syscall.SIGUSR2: "USR2",
}

// signal delivers an RFC 4254 signal request to the running command's
// process group.
func (s *session) signal(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	for sig, n := range signalNames {
		if n == name {
			_ = syscall.Kill(-s.proc.Pid, sig)
			return
		}
	}
}

// sftp serves the SFTP subsystem with relative paths resolved against the
// host root, through the host's upload faults and counters.
func (s *session) sftp() {
	h := s.host
	rw := &uploadWatcher{ch: s.ch, host: h, conn: s.conn, faults: h.currentFaults()}
	srv, err := sftp.NewServer(rw, sftp.WithServerWorkingDirectory(h.Root))
	if err != nil {
		s.exit(exitStatus(1))
		return
	}
	if err := srv.Serve(); err != nil {
		h.fleet.cfg.Logger.Debug("sftp", "host", h.Name, "err", err)
	}
	rw.stopWrites()
	s.exit(exitStatus(0))
}
