package chaos

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// binDir holds the binaries built for this run; removed by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "outpost-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// binaries are the programs the tests run as processes.
type binaries struct {
	outpost, etcd string
}

var (
	buildOnce sync.Once
	built     binaries
	buildErr  error
)

// bins builds outpost and the etcd member helper once per test binary run.
func bins(t *testing.T) binaries {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go command is needed to build the daemons: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		built = binaries{outpost: filepath.Join(binDir, "outpost"), etcd: filepath.Join(binDir, "etcdmember")}
		for bin, pkg := range map[string]string{
			built.outpost: "github.com/outposthq/outpost/cli/outpost",
			built.etcd:    "github.com/outposthq/outpost/e2e/chaos/internal/etcdmember",
		} {
			out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
				return
			}
		}
		fmt.Fprintf(os.Stderr, "chaos: built outpost and etcdmember in %v\n", time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// proc is a daemon the test runs, with its output in a log file that is
// shown when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited and been reaped
}

// startProc starts bin with args and stops it on cleanup (SIGTERM, then
// SIGKILL after grace).
func startProc(t *testing.T, name string, grace time.Duration, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a ^C at the terminal reaches the test only,
	// which then stops its daemons in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(grace)
		if t.Failed() {
			t.Logf("--- %s (%s %s) log:\n%s", name, filepath.Base(bin), strings.Join(args, " "), p.tail(12<<10))
		}
	})
	return p
}

// signal sends sig to the process, if it still runs.
func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop ends the process: SIGCONT (it may be frozen), SIGTERM and up to
// grace to exit, then SIGKILL.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	p.kill()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// output returns everything the process logged so far.
func (p *proc) output() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// tail returns the last n bytes of the log.
func (p *proc) tail(n int) string {
	s := p.output()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// waitLog waits until the process has logged a line matching re, which it
// returns, failing the test on timeout or exit.
func (p *proc) waitLog(t *testing.T, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(p.log)
		if err == nil {
			for _, line := range bytes.Split(b, []byte("\n")) {
				if re.Match(line) {
					return string(line)
				}
			}
		}
		if p.exited() {
			t.Fatalf("%s exited (%v) before logging %q:\n%s", p.name, p.cmd.ProcessState, re, p.tail(4<<10))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v:\n%s", p.name, re, timeout, p.tail(4<<10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logged reports how many lines of the log match re.
func (p *proc) logged(re *regexp.Regexp) int {
	n := 0
	for _, line := range strings.Split(p.output(), "\n") {
		if re.MatchString(line) {
			n++
		}
	}
	return n
}
