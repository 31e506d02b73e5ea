package simfleet

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestInterpMatchesSh runs scripts that lean on what the deployer's
// scripts use, once with /bin/sh and once with the in-process shell, and
// wants the same output and status from both.
func TestInterpMatchesSh(t *testing.T) {
	scripts := map[string]string{
		"quoting": `C='printf '\''%s|%s\n'\'' "a b" '\''c'\'''; sh -c "$C"; X=a\'b; echo "$X"`,
		"noclobber": `printf one >f; if (set -C; printf two >f) 2>/dev/null; then echo clobbered; fi; cat -- f; echo; ` +
			`(set -C; printf new >g) && cat g; echo; printf three >f; cat f`,
		"files": `mkdir -p -- a/b "c d" && mkdir -- a/b 2>/dev/null || echo exists; printf x >a/b/f; ` +
			`mv -T -- a/b "c d/e" && ls -1t -- "c d/e/f" a/b/f 2>/dev/null; echo "ls $?"; ` +
			`ln -s -- "c d/e" l && readlink -- l && cat -- l/f; echo; rm -f -- nothing; rm -- nothing 2>/dev/null || echo "rm $?"; ` +
			`rm -rf -- "c d" l && [ ! -e "c d" ] && echo gone; touch -c -- missing; [ ! -e missing ] && echo "not created"`,
		"checksums": `printf abc >f; sha256sum -b <f; openssl dgst -sha256 -r <f`,
		"cd and sh": `mkdir -p r/bin && printf 'pwd -P\necho "$1"\nexit 3\n' >r/bin/start && ln -s r cur && ` +
			`(cd -P -- cur && sh bin/start arg); echo "status $?"`,
		"pid": `p=$$; [ "$p" = "$$" ] && kill -0 "$p" && echo alive; sh -c 'echo $$' >inner; i=$(cat inner); ` +
			`kill -0 "$i" 2>/dev/null || echo "ended child"`,
		"tail":     `printf 0123456789 >f; tail -c 4 -- f; echo`,
		"fallback": `echo abc | tr a-c x-z; date -u -d @0 +%Y`,
	}
	for name, script := range scripts {
		t.Run(name, func(t *testing.T) {
			run := func(interpreted bool) string {
				dir := t.TempDir()
				var out bytes.Buffer
				env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "SHELL=/bin/sh"}
				var status int
				if interpreted {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					status = runInterp(ctx, dir, env, nil, strings.NewReader(""), &out, &out, script)
				} else {
					cmd := exec.Command("/bin/sh", "-c", script)
					cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, &out, &out
					if err := cmd.Run(); err != nil {
						status = cmd.ProcessState.ExitCode()
					}
				}
				// Paths differ between the two runs' directories.
				return strings.ReplaceAll(out.String(), dir, "DIR") + "status " + strconv.Itoa(status)
			}
			sh, in := run(false), run(true)
			if name == "pid" {
				// A real child's $$ differs from its parent's and has
				// ended too; only the lines matter.
				sh, in = strings.TrimSpace(sh), strings.TrimSpace(in)
			}
			if sh != in {
				t.Errorf("script:\n%s\n/bin/sh printed:\n%s\nthe interpreter printed:\n%s", script, sh, in)
			}
		})
	}
}

// TestInterpTar extracts a release with the in-process tar and checks
// what /bin/sh's tar would have made.
func TestInterpTar(t *testing.T) {
	rel, err := BuildRelease(t.TempDir(), "v1", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, flags := range []string{"--no-same-owner", "--no-same-owner --no-same-permissions"} {
		var out bytes.Buffer
		script := `mkdir -- x && tar -xzf ` + rel.Path + ` -C x ` + flags + ` && cat x/VERSION && [ -x x/bin/start ] && echo executable`
		// No PATH: only the in-process tar can do it.
		if status := runInterp(context.Background(), t.TempDir(), []string{"PATH=/nonexistent"}, nil, strings.NewReader(""), &out, &out, script); status != 0 {
			t.Fatalf("%s: status %d: %s", flags, status, out.String())
		}
		if got := out.String(); got != "v1\nexecutable\n" {
			t.Errorf("%s: printed %q", flags, got)
		}
	}
}
