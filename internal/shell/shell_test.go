package shell

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/quote.golden")

// hostile holds values that break naive quoting: each must arrive literally.
var hostile = []string{
	"",
	"plain",
	"with space",
	"two  spaces\tand tab",
	"it's",
	"''",
	`"double"`,
	"$(touch /tmp/outpost-pwned)",
	"`touch /tmp/outpost-pwned`",
	"${HOME}",
	"$HOME",
	"a;b&&c||d|e",
	"line1\nline2",
	"trailing newline\n",
	"\r\n",
	"*",
	"?",
	"[a-z]*",
	"~",
	"~root",
	"-rf",
	"--help",
	"-",
	"!event",
	"a\\b\\",
	"#comment",
	"= x",
	"\xff\xfe non-utf8 \xc3\x28",
	"ünïcödé/路径",
	"{a,b}",
	"<in >out 2>&1",
	"\x01\x7f",
	"/srv/app/releases/r-1.partial",
}

// TestQuoteArrivesLiterally runs every hostile value through real shells
// and checks each arrives as exactly one argument with the same bytes.
func TestQuoteArrivesLiterally(t *testing.T) {
	for _, sh := range []string{"sh", "bash"} {
		path, err := exec.LookPath(sh)
		if err != nil {
			t.Fatalf("%s not found: %v", sh, err)
		}
		t.Run(sh, func(t *testing.T) {
			dir := t.TempDir()
			// printf writes each argument NUL-terminated, so splitting on NUL
			// gives back exactly the argument vector the shell built.
			cmd := "cd " + Quote(dir) + " && printf '%s\\0' " + Join(hostile...)
			out, err := exec.Command(path, "-c", cmd).Output()
			if err != nil {
				t.Fatalf("%s -c: %v", sh, err)
			}
			got := strings.Split(string(bytes.TrimSuffix(out, []byte{0})), "\x00")
			if len(got) != len(hostile) {
				t.Fatalf("%s: got %d arguments, want %d: %q", sh, len(got), len(hostile), got)
			}
			for i := range hostile {
				if got[i] != hostile[i] {
					t.Errorf("%s: argument %d = %q, want %q", sh, i, got[i], hostile[i])
				}
			}
			// Nothing ran: no command substitution created a file.
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("%s: quoting let a command run: %v", sh, entries)
			}
		})
	}
}

// TestQuoteGolden pins the exact quoted form, so a change in quoting is a
// reviewed change.
func TestQuoteGolden(t *testing.T) {
	var b strings.Builder
	for _, h := range hostile {
		b.WriteString(Quote(h))
		b.WriteString("\n")
	}
	golden := filepath.Join("testdata", "quote.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("quoted forms differ from %s (run go test -update to accept):\ngot:\n%s\nwant:\n%s", golden, b.String(), want)
	}
}

func TestJoin(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"ls"}, "ls"},
		{[]string{"mkdir", "-p", "--", "/srv/my app"}, "mkdir -p -- '/srv/my app'"},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
	}
	for _, tt := range tests {
		if got := Join(tt.args...); got != tt.want {
			t.Errorf("Join(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

func TestCheckArg(t *testing.T) {
	if err := CheckArg("ok value"); err != nil {
		t.Errorf("CheckArg(ok) = %v", err)
	}
	if err := CheckArg("a\x00b"); err != ErrNUL {
		t.Errorf("CheckArg(NUL) = %v, want ErrNUL", err)
	}
}

// FuzzQuote checks, for arbitrary bytes, that sh returns the value intact.
func FuzzQuote(f *testing.F) {
	for _, h := range hostile {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckArg(s) != nil {
			return
		}
		out, err := exec.Command("sh", "-c", "printf '%s' "+Quote(s)).Output()
		if err != nil {
			t.Fatalf("sh: %v", err)
		}
		if string(out) != s {
			t.Errorf("Quote(%q) came back as %q", s, out)
		}
	})
}
