package deploypath

import (
	"path"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		path string
		want string // "" when allowed, else a part of the error
	}{
		// The paths of issue #11 that dry runs accepted.
		{"/var/lib", "directly in /var"},
		{"/usr/local", "directly in /usr"},
		{"/usr/lib", "must not be /usr/lib, the system's libraries"},
		{"/etc/ssh", "must not be in /etc"},
		{"/etc/systemd/system", "must not be in /etc"},
		{"/boot/grub", "must not be in /boot"},
		{"/home/deploy", "directly in /home"},

		{"/", "the root directory"},
		{"/bin", "must not be /bin"},
		{"/etc", "must not be /etc"},
		{"/etc/nginx/conf.d", "must not be in /etc"},
		{"/home", "must not be /home"},
		{"/root", "must not be /root"},
		{"/usr", "must not be /usr"},
		{"/usr/lib/systemd/system", "must not be in /usr/lib"},
		{"/usr/local/bin", "must not be /usr/local/bin"},
		{"/var", "must not be /var"},
		{"/var/log", "directly in /var"},
		{"/var/tmp", "directly in /var"},
		{"/opt", "must not be /opt"},
		{"/srv/", "must not be /srv"},
		{"/tmp", "must not be /tmp"},
		{"/dev/shm/x", "must not be in /dev"},
		{"/proc/1", "must not be in /proc"},
		{"/run/app", "must not be in /run"},
		{"/lib64", "must not be /lib64"},
		{"//etc//", "must not be /etc"},
		{"/srv/../etc", "must not be /etc"},
		{"/home/deploy/.ssh", "in an .ssh directory"},
		{"/srv/app/.ssh/keys", "in an .ssh directory"},
		{".ssh", "in an .ssh directory"},
		{"apps/.ssh", "in an .ssh directory"},

		{"/srv/billing-api", ""},
		{"/opt/app", ""},
		{"/opt/was/profiles/app1/installedApps/ledger", ""},
		{"/usr/local/app", ""},
		{"/usr/local/lib/app", ""},
		{"/var/lib/app", ""},
		{"/var/www/html", ""},
		{"/home/deploy/app", ""},
		{"/root/app", ""},
		{"/tmp/test/app", ""},
		{"/srvx", ""},
		{"/etcetera/app", ""},
		{"/srv/app/.sshkeys", ""},
		{"app", ""},
		{"apps/billing", ""},
	}
	for _, tt := range tests {
		err := Check(tt.path)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Check(%q) = %v, want allowed", tt.path, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Check(%q) = %v, want an error containing %q", tt.path, err, tt.want)
		}
	}
}

// TestRulesAreClean checks the table's own shape: each directory
// absolute, clean, listed once, after the rules for directories in it,
// with a reason; the gateway builds shell patterns from it.
func TestRulesAreClean(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Rules() {
		if r.Dir != path.Clean(r.Dir) || !path.IsAbs(r.Dir) || strings.ContainsAny(r.Dir, "*?[]\\'\"$`\n") {
			t.Errorf("rule %q: not an absolute clean path of plain characters", r.Dir)
		}
		if seen[r.Dir] {
			t.Errorf("rule %q listed twice", r.Dir)
		}
		for earlier := range seen {
			// The root's rule refuses only the root: its place is free.
			if earlier != "/" && Under(r.Dir, earlier) {
				t.Errorf("rule %q comes after %q, the directory it is in: the more specific rule must come first", r.Dir, earlier)
			}
		}
		seen[r.Dir] = true
		if r.Why == "" || r.Scope < Itself || r.Scope > Tree {
			t.Errorf("rule %q: scope %d, why %q", r.Dir, r.Scope, r.Why)
		}
	}
}

func TestUnder(t *testing.T) {
	for _, tt := range []struct {
		p, dir string
		want   bool
	}{
		{"/srv/app", "/srv", true},
		{"/srv", "/srv", true},
		{"/srv/", "/srv", true},
		{"/srvx", "/srv", false},
		{"/sr", "/srv", false},
		{"/srv/app", "/srv/app/", true},
		{"/anything", "/", true},
		{"/opt/apps/x", "/opt/apps", true},
		{"/opt/app", "/opt/apps", false},
		{"app", "/srv", false},
	} {
		if got := Under(tt.p, tt.dir); got != tt.want {
			t.Errorf("Under(%q, %q) = %v, want %v", tt.p, tt.dir, got, tt.want)
		}
	}
}
