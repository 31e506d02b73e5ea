package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// cliChildEnv makes the test binary run as the outpost command line.
const cliChildEnv = "OUTPOST_CLI_TEST_CHILD"

// outpostOnPath puts the test binary on PATH as "outpost", running the
// command line, and returns the environment for a child process.
func outpostOnPath(t *testing.T, extra ...string) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(self, filepath.Join(dir, "outpost")); err != nil {
		t.Fatal(err)
	}
	return append([]string{"PATH=" + dir + ":" + os.Getenv("PATH"), "HOME=" + t.TempDir(), cliChildEnv + "=1"}, extra...)
}

// bashComplete loads outpost's bash completion into a real bash and
// returns what TAB offers after line.
func bashComplete(t *testing.T, env []string, line string) []string {
	t.Helper()
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("%v: install bash-completion (scripts/deps.sh does)", err)
	}
	script := `source ` + bashCompletion + `
source <(outpost completion bash) || exit 3
read -ra COMP_WORDS <<<"$LINE"
[[ "$LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE="$LINE"
COMP_POINT=${#LINE}
__start_outpost
printf '%s\n' "${COMPREPLY[@]}"
`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--norc", "--noprofile", "-c", script)
	cmd.Env = append(env, "LINE="+line)
	var errOut strings.Builder
	cmd.Stderr = &errOut // compopt outside a real TAB complains there
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash completion of %q: %v\n%s%s", line, err, out, errOut.String())
	}
	return strings.Fields(string(out))
}

func TestBashCompletionCompletesVerbs(t *testing.T) {
	env := outpostOnPath(t)
	if got := bashComplete(t, env, "outpost rollo"); strings.Join(got, " ") != "rollout" {
		t.Errorf("outpost rollo<TAB> = %q, want [rollout]", got)
	}
	got := bashComplete(t, env, "outpost node ")
	for _, want := range []string{"apply", "delete", "get", "list", "scan", "trust"} {
		if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+want+" ") {
			t.Errorf("outpost node <TAB> = %q, want it to offer %q", got, want)
		}
	}
	if got := bashComplete(t, env, "outpost rollout list -o w"); strings.Join(got, " ") != "wide" {
		t.Errorf("outpost rollout list -o w<TAB> = %q, want [wide]", got)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, out, errOut := runCLI(t, nil, "completion", shell)
		if code != 0 || !strings.Contains(out, "outpost") || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: exit %d, stderr %q, script of %d bytes", shell, code, errOut, len(out))
		}
	}
}

// TestDynamicCompletion completes rollout ids, apps and node ids from a
// real control plane, and completes nothing, quickly, from one that is
// not there.
func TestDynamicCompletion(t *testing.T) {
	dir := t.TempDir()
	_, addr, admin := startControlPlane(t, dir)
	env := map[string]string{controlPlaneEnv: addr, credentialEnv: admin}
	if code, _, errOut := runCLI(t, env, "node", "apply", "-f", writeFile(t, "nodes.yaml", inventoryYAML)); code != 0 {
		t.Fatalf("node apply: exit %d, stderr %q", code, errOut)
	}
	planPath, _ := writePlan(t, planYAML, 1000)
	code, id, errOut := runCLI(t, env, "rollout", "create", "-f", planPath)
	id = strings.TrimSpace(id)
	if code != 0 || !strings.HasPrefix(id, "r-") {
		t.Fatalf("rollout create: exit %d, stdout %q, stderr %q", code, id, errOut)
	}

	tests := []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "rollout", "get", ""}, id},
		{[]string{"__complete", "rollout", "abort", "r-"}, id},
		{[]string{"__complete", "rollout", "history", "de"}, "demo"},
		{[]string{"__complete", "node", "get", "node-0"}, "node-02"},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(t, env, tt.args...)
		lines := strings.Split(out, "\n")
		if code != 0 || !contains(lines, tt.want) {
			t.Errorf("outpost %q: exit %d, stdout %q, stderr %q; want a line %q", tt.args, code, out, errOut, tt.want)
		}
	}
	if _, out, _ := runCLI(t, env, "__complete", "node", "get", "zzz"); contains(strings.Split(out, "\n"), "node-01") {
		t.Errorf("completion ignores the prefix: %q", out)
	}

	// Nothing listens here: no completions, no error on the terminal,
	// and back within the completion's timeout.
	down := map[string]string{controlPlaneEnv: "127.0.0.1:1", credentialEnv: admin}
	start := time.Now()
	code, out, errOut := runCLI(t, down, "__complete", "rollout", "get", "")
	if code != 0 || strings.Contains(out, "r-") || errOut != "" && !strings.Contains(errOut, "Completion ended with directive") {
		t.Errorf("completion without a control plane: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if took := time.Since(start); took > completeTimeout+10*time.Second {
		t.Errorf("completion without a control plane took %v, want at most about %v", took, completeTimeout)
	}
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}

// TestGenMan writes the man pages and checks each verb has one that groff
// reads.
func TestGenMan(t *testing.T) {
	dir := t.TempDir()
	if code, _, errOut := runCLI(t, nil, "gen-man", dir); code != 0 {
		t.Fatalf("gen-man: exit %d, stderr %q", code, errOut)
	}
	for _, page := range []string{"outpost.1", "outpost-rollout-create.1", "outpost-node-get.1", "outpost-node-delete.1", "outpost-gateway.1", "outpost-version.1"} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Errorf("no page %s: %v", page, err)
			continue
		}
		if !strings.HasPrefix(string(b), `.TH "`) && !strings.Contains(string(b), "\n.TH \"") {
			t.Errorf("%s has no .TH header:\n%.300s", page, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "outpost-gen-man.1")); err == nil {
		t.Errorf("the hidden gen-man has a page")
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Fatalf("groff: %v (scripts/deps.sh installs groff-base)", err)
	}
	out, err := exec.Command(groff, "-man", "-Tutf8", "-ww", "-P-cbou", filepath.Join(dir, "outpost-rollout-create.1")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "outpost rollout create -f PLAN") || strings.Contains(string(out), "warning") {
		t.Errorf("groff of outpost-rollout-create.1: %v\n%s", err, out)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errOut := runCLI(t, nil, args...)
		if code != 0 || !strings.HasPrefix(out, "outpost ") || !strings.Contains(out, "commit ") || !strings.Contains(out, "built ") {
			t.Errorf("outpost %q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}

// TestOutputValues: every verb that takes -o takes the same four values,
// and anything else is a usage error that lists them.
func TestOutputValues(t *testing.T) {
	var walk func(c *command, path []string)
	n := 0
	walk = func(c *command, path []string) {
		path = append(path, c.name)
		if c.flags != nil {
			cc := c.cobraCommand(&Env{Getenv: func(string) string { return "" }}, strings.Join(path[:len(path)-1], " "))
			if f := cc.Flags().Lookup("output"); f != nil {
				n++
				o := f.Value.String()
				if o != "table" {
					t.Errorf("%s: -o defaults to %q, want table", strings.Join(path, " "), o)
				}
				code, _, errOut := runCLI(t, nil, append(path[1:], "-o", "text")...)
				if code != 2 || !strings.Contains(errOut, "want one of table, wide, json, yaml") {
					t.Errorf("%s -o text: exit %d, stderr %q", strings.Join(path, " "), code, errOut)
				}
			}
		}
		for _, s := range c.sub {
			walk(s, path)
		}
	}
	walk(root(), nil)
	if n < 10 {
		t.Errorf("only %d verbs have -o", n)
	}
}

// TestWriteItem: streams print one JSON object per line, or one YAML
// document each, with the API's camelCase names.
func TestWriteItem(t *testing.T) {
	n := &outpostv1.RolloutNode{RolloutId: "r-1", NodeId: "n-1"}
	var j, y strings.Builder
	if err := writeItem(&j, "json", n); err != nil {
		t.Fatal(err)
	}
	if err := writeItem(&y, "yaml", n); err != nil {
		t.Fatal(err)
	}
	if got, want := j.String(), `{"rolloutId":"r-1","nodeId":"n-1"}`+"\n"; got != want {
		t.Errorf("json item = %q, want %q", got, want)
	}
	if got, want := y.String(), "---\nnodeId: n-1\nrolloutId: r-1\n"; got != want {
		t.Errorf("yaml item = %q, want %q", got, want)
	}
}
