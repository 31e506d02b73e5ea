package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func TestRun(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	cfg := s.config()
	cfg.MaxOutputBytes = 1000
	c := dial(t, cfg)

	tests := []struct {
		name    string
		cmd     string
		want    Result
		wantErr string // substring of Result.Err(); empty means nil
	}{
		{name: "success", cmd: "echo hello", want: Result{Stdout: []byte("hello\n")}},
		{name: "exit code", cmd: "exit 3", want: Result{ExitCode: 3}, wantErr: "exited with status 3"},
		{
			name:    "stderr",
			cmd:     "echo out; echo 'disk full' >&2; exit 1",
			want:    Result{ExitCode: 1, Stdout: []byte("out\n"), Stderr: []byte("disk full\n")},
			wantErr: "exited with status 1: disk full",
		},
		{
			name: "stdout truncated",
			cmd:  "head -c 5000 /dev/zero | tr '\\0' a",
			want: Result{Stdout: bytes.Repeat([]byte("a"), 1000), Truncated: true},
		},
		{
			name:    "stderr truncated",
			cmd:     "head -c 5000 /dev/zero | tr '\\0' e >&2; exit 2",
			want:    Result{ExitCode: 2, Stderr: bytes.Repeat([]byte("e"), 1000), Truncated: true},
			wantErr: "status 2: ..." + strings.Repeat("e", stderrTailBytes),
		},
		{
			name:    "killed by signal",
			cmd:     "kill -TERM $$",
			want:    Result{ExitCode: 128 + int(syscall.SIGTERM), Signal: "TERM"},
			wantErr: "killed by signal TERM",
		},
		{name: "no output", cmd: "true", want: Result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Run(context.Background(), tt.cmd)
			if err != nil {
				t.Fatalf("Run(%q): %v", tt.cmd, err)
			}
			if diff := cmp.Diff(tt.want, got, cmpEmptyBytes); diff != "" {
				t.Errorf("Run(%q) (-want +got):\n%s", tt.cmd, diff)
			}
			gotErr := got.Err()
			if tt.wantErr == "" {
				if gotErr != nil {
					t.Errorf("Err() = %v, want nil", gotErr)
				}
				return
			}
			var exitErr *ExitError
			if !errors.As(gotErr, &exitErr) || exitErr.Code != tt.want.ExitCode {
				t.Fatalf("Err() = %#v, want *ExitError with code %d", gotErr, tt.want.ExitCode)
			}
			if !strings.Contains(gotErr.Error(), tt.wantErr) {
				t.Errorf("Err() = %q, want it to contain %q", gotErr, tt.wantErr)
			}
		})
	}
}

// cmpEmptyBytes treats nil and empty output alike.
var cmpEmptyBytes = cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })

func TestRunInput(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c := dial(t, s.config())
	in := bytes.Repeat([]byte("0123456789abcdef"), 100<<10) // 1.6 MB, more than a window
	r, err := c.RunInput(context.Background(), "sha256sum", bytes.NewReader(in))
	if err != nil || r.Err() != nil {
		t.Fatalf("RunInput: %v, %v", err, r.Err())
	}
	got, _, _ := strings.Cut(string(r.Stdout), " ")
	if want := sha256Hex(in); got != want {
		t.Errorf("remote sha256 of stdin = %s, want %s", got, want)
	}

	// A command that does not read its input must neither hang the call
	// nor fail it: whether the remote exits before or after the input is
	// sent is a race, so try it a few times.
	for i := range 10 {
		r, err = c.RunInput(context.Background(), "exit 0", bytes.NewReader(in))
		if err != nil || r.Err() != nil {
			t.Fatalf("RunInput ignoring stdin, try %d: %v, %v", i, err, r.Err())
		}
	}
	r, err = c.RunInput(context.Background(), "exit 3", bytes.NewReader(in))
	if err != nil || r.ExitCode != 3 {
		t.Fatalf("RunInput ignoring stdin, exit 3: %v, exit code %d", err, r.ExitCode)
	}
}

func TestRunConcurrent(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c := dial(t, s.config())
	const n = 8 // sshd's default MaxSessions is 10 per connection
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Each command outlives the others' start, so the sessions
			// really overlap.
			r, err := c.Run(context.Background(), fmt.Sprintf("sleep 0.3; echo %d", i))
			if err != nil {
				errs <- err
				return
			}
			if got, want := string(r.Stdout), fmt.Sprintf("%d\n", i); got != want {
				errs <- fmt.Errorf("run %d: stdout %q, want %q", i, got, want)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRunCancel(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c := dial(t, s.config())
	pidFile := filepath.Join(t.TempDir(), "pid")

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, "echo $$ > "+pidFile+"; exec sleep 30")
		errc <- err
	}()
	pid := waitForPID(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// SIGKILL was sent: the remote process must go away. OpenSSH delivers
	// signals only to sessions of non-root users (root sessions run
	// without privilege separation), so as root this is checked against
	// the fake server in TestRunCancelSendsKill instead.
	for i := 0; s.user != "root"; i++ {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			break
		}
		if i == 200 {
			t.Fatalf("remote process %d still alive after cancel", pid)
		}
		time.Sleep(25 * time.Millisecond)
	}

	// The connection is still good for the next command.
	r, err := c.Run(context.Background(), "echo again")
	if err != nil || string(r.Stdout) != "again\n" {
		t.Fatalf("Run after cancel: %+v, %v", r, err)
	}

	// An already cancelled context runs nothing.
	marker := filepath.Join(t.TempDir(), "ran")
	if _, err := c.Run(ctx, "touch "+marker); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with cancelled ctx = %v, want context.Canceled", err)
	}
	if markerExists(t, marker) {
		t.Error("Run with a cancelled ctx ran the command")
	}
}

func TestRunCancelSendsKill(t *testing.T) {
	f := startFakeServer(t, "pw")
	c := dial(t, Config{
		Address:  f.addr,
		User:     "deploy",
		Auth:     Auth{Password: "pw"},
		HostKeys: HostKeys{Pinned: []ssh.PublicKey{f.hostKey}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Run(ctx, "sleep"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want context.DeadlineExceeded", err)
	}
	select {
	case sig := <-f.signals:
		if sig != "KILL" {
			t.Errorf("server got signal %q, want KILL", sig)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server got no signal after the ctx ended")
	}
}

// waitForPID waits for a command to write its pid, as zombie-free a
// signal that it started as any.
func waitForPID(t *testing.T, file string) int {
	t.Helper()
	for range 400 {
		data, err := os.ReadFile(file)
		if err == nil && bytes.HasSuffix(data, []byte("\n")) {
			pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("command did not start within 10s")
	return 0
}

func TestClosed(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	c, err := Dial(context.Background(), s.config())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Run(context.Background(), "true"); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Upload(context.Background(), strings.NewReader("x"), "x", 0o600); !errors.Is(err, ErrClosed) {
		t.Errorf("Upload after Close = %v, want ErrClosed", err)
	}
}

func TestStderrTail(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"  oops \n", "oops"},
		{strings.Repeat("x", 600) + "\nlast line\n", "..." + strings.Repeat("x", stderrTailBytes-len("\nlast line")) + "\nlast line"},
		{strings.Repeat("é", 400) + "x", "..." + strings.Repeat("é", 255) + "x"}, // cut inside a rune
	}
	for _, tt := range tests {
		if got := stderrTail([]byte(tt.in)); got != tt.want {
			t.Errorf("stderrTail(%.20q...) = %.40q..., want %.40q...", tt.in, got, tt.want)
		}
	}
}
