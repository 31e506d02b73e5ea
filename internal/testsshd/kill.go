package testsshd

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// killTree SIGKILLs pid and all its descendants. sshd puts every connection
// in its own session (setsid), so a process-group kill would leave sessions
// and their commands running; instead the tree is frozen with SIGSTOP, so
// nothing can fork or be reparented while it is collected, and then killed.
func killTree(pid int) {
	tree := map[int]bool{pid: true}
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	// Each pass stops the children found so far; a few passes reach a fixed
	// point because stopped processes cannot fork.
	for pass := 0; pass < 10; pass++ {
		added := false
		for child, parent := range parents() {
			if tree[parent] && !tree[child] {
				tree[child] = true
				added = true
				_ = syscall.Kill(child, syscall.SIGSTOP)
			}
		}
		if !added {
			break
		}
	}
	for p := range tree {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// parents maps every process in /proc to its parent pid.
func parents() map[int]int {
	m := map[int]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // exited meanwhile
		}
		// The command name may contain spaces and parentheses; fields after
		// the last ')' are "state ppid ...".
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		pid, err1 := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		ppid, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil {
			m[pid] = ppid
		}
	}
	return m
}
