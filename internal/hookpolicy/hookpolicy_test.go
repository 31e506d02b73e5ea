package hookpolicy

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		cmd     string
		pattern string // "" = allowed
	}{
		// Ordinary hooks pass.
		{"", ""},
		{"sudo systemctl stop billing-api", ""},
		{"sudo systemctl start billing-api", ""},
		{"sh bin/start", ""},
		{"rm -rf ./cache", ""},
		{"rm -rf /srv/billing-api/releases/old", ""},
		{"rm -f /tmp/app.pid", ""},
		{"rm -r tmp/*", ""},
		{"curl -fsS http://localhost:8080/health", ""},
		{"psql -c 'select 1'", ""},
		{"echo formatting done", ""},
		{"cp app.war /opt/was/webapps/", ""},
		{"chmod -R 755 ./bin", ""},
		{"./manage.py migrate && sudo systemctl restart app", ""},
		// Destructive ones are refused, naming the pattern.
		{"rm -rf /", "rm -rf /"},
		{"rm -rf /*", "rm -rf /"},
		{"sudo rm -rf / ", "rm -rf /"},
		{"rm -fr /", "rm -rf /"},
		{"rm -r -f /", "rm -rf /"},
		{"rm -Rf /etc", "rm -rf /"},
		{"rm -rf /usr/", "rm -rf /"},
		{"rm -rf ~", "rm -rf /"},
		{"rm -rf $HOME/*", "rm -rf /"},
		{"rm -rf ${HOME}", "rm -rf /"},
		{"rm --recursive --force /", "rm -rf /"},
		{"cd /srv/app && rm -rf /var", "rm -rf /"},
		{"true;rm -rf /", "rm -rf /"},
		{"rm -rf '/'", "rm -rf /"},
		{"rm  -rf   /", "rm -rf /"},
		{"rm -rf --no-preserve-root /", "rm -rf /"},
		{"rm --no-preserve-root -r x", "rm --no-preserve-root"},
		{"mkfs.ext4 /dev/sdb1", "mkfs"},
		{"sudo mkfs -t xfs /dev/sdc", "mkfs"},
		{"format c:", "format"},
		{"psql -c 'DROP TABLE accounts'", "drop table"},
		{"mysql -e 'drop database billing'", "drop table"},
		{"psql -c 'TRUNCATE accounts'", "truncate"},
		{"truncate -s 0 /var/log/app.log", "truncate"},
		{"psql -c 'delete from accounts;'", "delete from without where"},
		{"echo x > /dev/sda", "> /dev/sd*"},
		{"cat img >/dev/nvme0n1", "> /dev/sd*"},
		{"dd if=/dev/zero of=/dev/sda bs=1M", "dd of=/dev/*"},
		{"shred -u /dev/sda", "shred"},
		{"chmod -R 777 /", "chmod -R /"},
		{"chown -R nobody /etc", "chmod -R /"},
		{":(){ :|:& };:", "fork bomb"},
		{"sudo reboot", "shutdown/reboot"},
		{"shutdown -h now", "shutdown/reboot"},
		{"init 0", "init 0/6"},
		{"wipefs -a /dev/sdb", "wipefs"},
		{"$(mkfs /dev/sdb)", "mkfs"},
	}
	for _, tt := range tests {
		err := Check(tt.cmd)
		if tt.pattern == "" {
			if err != nil {
				t.Errorf("Check(%q) = %v, want allowed", tt.cmd, err)
			}
			continue
		}
		var de *DeniedError
		if !errors.As(err, &de) {
			t.Errorf("Check(%q) = %v, want refused by %q", tt.cmd, err, tt.pattern)
			continue
		}
		if de.Pattern != tt.pattern || de.Command != tt.cmd {
			t.Errorf("Check(%q) refused by %q (command %q), want pattern %q", tt.cmd, de.Pattern, de.Command, tt.pattern)
		}
	}
}

func TestDeniedErrorNamesPattern(t *testing.T) {
	err := Check("rm -rf /")
	want := `hook command "rm -rf /" is refused: it matches the deny-list pattern "rm -rf /"`
	if err == nil || err.Error() != want {
		t.Errorf("Check error = %v, want %q", err, want)
	}
}

func TestPatternsUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range Patterns() {
		if seen[p] {
			t.Errorf("pattern %q listed twice", p)
		}
		seen[p] = true
	}
	if len(seen) < 10 {
		t.Errorf("Patterns() = %d names, want the whole deny list", len(seen))
	}
}
