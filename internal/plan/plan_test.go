package plan

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/outposthq/outpost/internal/hookpolicy"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite golden files")

// base is the smallest valid plan; bad-plan cases add one mistake to it.
const base = "app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/web}\n"

func TestParseBad(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"empty", "", `plan: empty document`},
		{"comment only", "# nothing\n", `plan: empty document`},
		{"not a mapping", "- app: web\n", `plan: must be a mapping of keys to values, not a list`},
		{"yaml syntax", "app: web\n  deploy: x\n", `plan: yaml: line 2: mapping values are not allowed in this context`},
		{"duplicate key", base + "app: other\n", `plan: yaml: unmarshal errors:
  line 4: key "app" already set in map`},
		{"unknown top-level field", base + "stratgy: {type: rolling}\n", `plan: unknown field "stratgy" (did you mean "strategy"?) (line 4)`},
		{"unknown nested field", base + "strategy:\n  stages:\n    - {name: a, bak: 2m}\n", `strategy.stages[0]: unknown field "bak" (did you mean "bake"?) (line 6)`},
		{"unknown field no suggestion", base + "colour: blue\n", `plan: unknown field "colour" (line 4)`},
		{"camelCase and snake_case twice", "app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/web, keep_releases: 3, keepReleases: 4}\n", `deploy.keep_releases: set twice (as "keepReleases" and "keep_releases") (line 3)`},
		{"object for string", "app: {name: web}\nartifact: {path: web.war}\ndeploy: {path: /srv/web}\n", `app: must be a single value, not a mapping (line 1)`},
		{"string for int", "app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/web, keep_releases: many}\n", `deploy.keep_releases: "many": must be a whole number (line 3)`},
		{"fraction for int", "app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/web, keep_releases: 2.5}\n", `deploy.keep_releases: "2.5": must be a whole number (line 3)`},
		{"int out of range", "app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/web, keep_releases: 99999999999}\n", `deploy.keep_releases: "99999999999": out of range (line 3)`},
		{"string for bool", base + "approval: {required: maybe}\n", `approval.required: "maybe": must be true or false (line 4)`},
		{"scalar for list", base + "targets: {datacenters: seoul-1}\n", `targets.datacenters: must be a list, not a string (write [seoul-1]) (line 4)`},
		{"list for message", base + "health: [http]\n", `health: must be a mapping of keys to values, not a list (line 4)`},
		{"missing app", "artifact: {path: web.war}\ndeploy: {path: /srv/web}\n", `app: required`},
		{"bad app name", "app: Billing API\nartifact: {path: web.war}\ndeploy: {path: /srv/web}\n", `app: "Billing API": must be 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit (line 1)`},
		{"bad environment", base + "environment: Prod!\n", `environment: "Prod!": must be 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit (line 4)`},
		{"missing artifact", "app: web\ndeploy: {path: /srv/web}\n", `artifact.path: required`},
		{"bad unpack", "app: web\nartifact: {path: web.war, unpack: zip}\ndeploy: {path: /srv/web}\n", `artifact.unpack: "zip": must be "tar" or "none" (line 2)`},
		{"missing deploy", "app: web\nartifact: {path: web.war}\n", `deploy.path: required`},
		{"deploy path dotdot", "app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/../etc}\n", `deploy.path: "/srv/../etc": must not contain '..' (line 3)`},
		{"deploy path root", "app: web\nartifact: {path: web.war}\ndeploy: {path: //}\n", `deploy.path: "//": must not be the root directory (line 3)`},
		{"deploy path system dir", "app: web\nartifact: {path: web.war}\ndeploy: {path: /usr/}\n", `deploy.path: "/usr/": must not be /usr, the system's programs and data; use a directory below it (line 3)`},
		{"deploy path home", "app: web\nartifact: {path: web.war}\ndeploy: {path: ./}\n", `deploy.path: "./": must name a directory, not the home directory itself (line 3)`},
		{"deploy path tilde", "app: web\nartifact: {path: web.war}\ndeploy: {path: ~/web}\n", `deploy.path: "~/web": write paths in the home directory without ~ (relative paths start there) (line 3)`},
		{"deploy path too long", "app: web\nartifact: {path: web.war}\ndeploy: {path: /" + strings.Repeat("a", MaxDeployPath) + "}\n", `deploy.path: 4097 bytes: at most 4096 (line 3)`},
		{"deploy path newline", "app: web\nartifact: {path: web.war}\ndeploy: {path: \"/srv/web\\nx\"}\n", `deploy.path: "/srv/web\nx": contains control characters (line 3)`},
		{"bad layout", "app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/web, layout: blue}\n", `deploy.layout: "blue": must be "releases" or "inplace" (line 3)`},
		{"keep releases too many", "app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/web, keep_releases: 101}\n", `deploy.keep_releases: 101: must be from 1 to 100 (line 3)`},
		{"keep releases negative", "app: web\nartifact: {path: web.war}\ndeploy: {path: /srv/web, keep_releases: -1}\n", `deploy.keep_releases: -1: must be from 1 to 100 (line 3)`},
		{"disk percent", base + "precheck: {max_disk_used_percent: 101}\n", `precheck.max_disk_used_percent: 101: must be from 1 to 100 (line 4)`},
		{"min free bytes", base + "precheck: {min_free_bytes: lots}\n", `precheck.min_free_bytes: "lots": not a size (write bytes such as "1048576" or a size such as "512MiB" or "2GB") (line 4)`},
		{"max unpacked bytes", "app: web\nartifact: {path: web.tgz, max_unpacked_bytes: huge}\ndeploy: {path: /srv/web}\n", `artifact.max_unpacked_bytes: "huge": not a size (write bytes such as "1048576" or a size such as "512MiB" or "2GB") (line 2)`},
		{"max unpacked bytes zero", "app: web\nartifact: {path: web.tgz, max_unpacked_bytes: 0GiB}\ndeploy: {path: /srv/web}\n", `artifact.max_unpacked_bytes: "0GiB": must be more than zero (line 2)`},
		{"max unpacked bytes negative", "app: web\nartifact: {path: web.tgz, max_unpacked_bytes: -1}\ndeploy: {path: /srv/web}\n", `artifact.max_unpacked_bytes: "-1": not a size (write bytes such as "1048576" or a size such as "512MiB" or "2GB") (line 2)`},
		{"max unpacked bytes too large", "app: web\nartifact: {path: web.tgz, max_unpacked_bytes: 9999999TiB}\ndeploy: {path: /srv/web}\n", `artifact.max_unpacked_bytes: "9999999TiB": too large (line 2)`},
		{"min free unit", base + "precheck: {min_free_bytes: 2 GiGs}\n", `precheck.min_free_bytes: "2 GiGs": unknown unit "GiGs" (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB) (line 4)`},
		{"dangerous hook", base + "hooks:\n  start: rm -rf / --no-preserve-root\n", `hooks.start: "rm -rf / --no-preserve-root": denied: recursive delete of / (rm -rf / --no-preserve-root) (line 5)`},
		{"dangerous hook in sh -c", base + "hooks:\n  stop: sh -c \"rm -rf /\"\n", `hooks.stop: "sh -c \"rm -rf /\"": denied: recursive delete of / (rm -rf /) (line 5)`},
		{"hook that does not parse", base + "hooks:\n  start: echo \"$(date\n", "hooks.start: \"echo \\\"$(date\": does not parse as a shell command: 1:7: reached EOF without matching `$(` with `)` (line 5)"},
		{"dangerous health command", base + "health: {command: mkfs.ext4 /dev/sdb}\n", `health.command: "mkfs.ext4 /dev/sdb": denied: mkfs.ext4 formats a filesystem (mkfs.ext4 /dev/sdb) (line 4)`},
		{"two health checks", base + "health:\n  http: {port: 8080}\n  tcp: {port: 8080}\n", `health: set only one of http, tcp and command (found http and tcp) (line 4)`},
		{"health without check", base + "health: {timeout: 1m}\n", `health: timeout and interval are set but no check: set one of http, tcp and command (line 4)`},
		{"health port zero", base + "health: {http: {path: /health}}\n", `health.http.port: required`},
		{"health port too big", base + "health: {tcp: {port: 70000}}\n", `health.tcp.port: 70000: must be from 1 to 65535 (line 4)`},
		{"health path", base + "health: {http: {port: 80, path: health}}\n", `health.http.path: "health": must start with / and contain no spaces (line 4)`},
		{"health status", base + "health: {http: {port: 80, expect_status: 20}}\n", `health.http.expect_status: 20: must be an HTTP status from 100 to 599 (line 4)`},
		{"duration without unit", base + "health: {http: {port: 80}, timeout: 30}\n", `health.timeout: "30": duration needs a unit (write e.g. "30s") (line 4)`},
		{"bad duration", base + "health: {http: {port: 80}, timeout: soon}\n", `health.timeout: "soon": not a duration (write e.g. "30s", "2m" or "1h30m") (line 4)`},
		{"negative duration", base + "health: {http: {port: 80}, interval: -2s}\n", `health.interval: "-2s": duration must be positive (line 4)`},
		{"interval over timeout", base + "health: {http: {port: 80}, timeout: 5s, interval: 10s}\n", `health.interval: 10s: must not be longer than health.timeout (5s) (line 4)`},
		{"unknown strategy", base + "strategy: {type: yolo}\n", `strategy.type: "yolo": must be one of rolling, tiered, canary, blue_green (line 4)`},
		{"batch zero", base + "strategy: {batch: \"0\"}\n", `strategy.batch: "0": batch must be at least 1 (line 4)`},
		{"batch zero unquoted", base + "strategy: {batch: 0}\n", `strategy.batch: "0": batch must be at least 1 (line 4)`},
		{"batch zero percent", base + "strategy: {batch: 0%}\n", `strategy.batch: "0%": batch must be at least 1% (line 4)`},
		{"batch over 100 percent", base + "strategy: {batch: 150%}\n", `strategy.batch: "150%": batch cannot exceed 100% (line 4)`},
		{"batch words", base + "strategy: {batch: half}\n", `strategy.batch: "half": batch must be a node count such as "5" or a percentage such as "25%" (line 4)`},
		{"max fail percent", base + "strategy: {max_fail_percent: 110}\n", `strategy.max_fail_percent: 110: must be from 0 to 100 (line 4)`},
		{"preset with stages", base + "strategy:\n  type: rolling\n  stages: [{name: a}]\n", `strategy.type: "rolling": cannot be combined with strategy.stages (remove type to use your stages, or stages to use the preset) (line 5)`},
		{"tiered batch", base + "strategy: {type: tiered, batch: 5}\n", `strategy.batch: "5": tiered sets the batch of each tier; use stages to choose your own (line 4)`},
		{"canary field on rolling", base + "strategy: {type: rolling, bake: 5m}\n", `strategy.bake: only used by strategy type "canary" (line 4)`},
		{"bad pause", base + "strategy: {type: canary, pause: auto}\n", `strategy.pause: "auto": must be "manual" or empty (line 4)`},
		{"count and percent", base + "strategy: {type: canary, count: 1, percent: 10}\n", `strategy.percent: set count or percent, not both (line 4)`},
		{"blue green without switch", base + "strategy: {type: blue_green}\n", `strategy.switch_node: required for blue_green: the node that runs the traffic switch
strategy.switch_hook: required for blue_green: the command that moves traffic to the new color`},
		{"dangerous switch hook", base + "strategy: {type: blue_green, switch_node: lb-1, switch_hook: 'reboot'}\n", `strategy.switch_hook: "reboot": denied: reboot stops the server (reboot) (line 4)`},
		{"stage without name", base + "strategy:\n  stages:\n    - {count: 1}\n", `strategy.stages[0].name: required`},
		{"stage names twice", base + "strategy:\n  stages:\n    - {name: a}\n    - {name: a}\n", `strategy.stages[1].name: "a": used twice (also strategy.stages[0]) (line 7)`},
		{"stage batch", base + "strategy:\n  stages:\n    - {name: a, batch: \"-3\"}\n", `strategy.stages[0].batch: "-3": batch must be at least 1 (line 6)`},
		{"stage bake", base + "strategy:\n  stages:\n    - {name: a, bake: 2 minutes}\n", `strategy.stages[0].bake: "2 minutes": not a duration (write e.g. "30s", "2m" or "1h30m") (line 6)`},
		{"stage selector", base + "strategy:\n  stages:\n    - {name: a, selector: {tier: \"two words\"}}\n", `strategy.stages[0].selector.tier: "two words": label value must be at most 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit (line 6)`},
		{"stage max parallel", base + "strategy:\n  stages:\n    - {name: a, max_parallel: -1}\n", `strategy.stages[0].max_parallel: -1: must not be negative (line 6)`},
		{"duplicate datacenter", base + "targets: {datacenters: [seoul-1, seoul-1]}\n", `targets.datacenters[1]: "seoul-1": listed twice (also targets.datacenters[0]) (line 4)`},
		{"webhook", base + "notify: {webhook: chat.example.internal/hooks}\n", `notify.webhook: "chat.example.internal/hooks": must be an http:// or https:// URL (line 4)`},
		{"several problems", "app: web\nartifact: {path: web.war, unpack: zip}\ndeploy: {path: /srv/web}\nstrategy: {batch: 0}\n", `artifact.unpack: "zip": must be "tar" or "none" (line 2)
strategy.batch: "0": batch must be at least 1 (line 4)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want error %q", tt.yaml, spec, tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("Parse(%q) error:\n got: %s\nwant: %s", tt.yaml, got, tt.want)
			}
			if spec != nil {
				t.Errorf("Parse(%q) returned a spec with its error", tt.yaml)
			}
		})
	}
}

// TestDeployPathRefusesSystemAndHomeDirs covers issue #11: a deploy path
// that is a system or home directory (or in .ssh) is refused at
// submission, in either layout, by an error that names deploy.path and
// says why; a directory of its own below one is accepted.
func TestDeployPathRefusesSystemAndHomeDirs(t *testing.T) {
	tests := []struct {
		path string
		want string // "" when accepted, else the error after `deploy.path: "<path>": `
	}{
		{"/var/lib", "must not be a directory directly in /var, the system's variable data (/var/lib, /var/log, ...); use a directory below it"},
		{"/usr/local", "must not be a directory directly in /usr, the system's programs and data; use a directory below it"},
		{"/usr/lib", "must not be /usr/lib, the system's libraries"},
		{"/etc/ssh", "must not be in /etc, the system's configuration"},
		{"/etc/systemd/system", "must not be in /etc, the system's configuration"},
		{"/boot/grub", "must not be in /boot, the kernel and its boot loader"},
		{"/home/deploy", "must not be a directory directly in /home, the users' home directories; use a directory below it"},
		{"/root", "must not be /root, root's home directory; use a directory below it"},
		{"/home/deploy/.ssh", "must not be in an .ssh directory, which holds SSH keys and authorized_keys"},
		{".ssh", "must not be in an .ssh directory, which holds SSH keys and authorized_keys"},
		{"/var/log/", "must not be a directory directly in /var, the system's variable data (/var/lib, /var/log, ...); use a directory below it"},
		{"/srv", "must not be /srv, where each service has a directory of its own; use a directory below it"},
		{"/opt", "must not be /opt, where each application has a directory of its own; use a directory below it"},

		{"/srv/billing-api", ""},
		{"/opt/app", ""},
		{"/usr/local/app", ""},
		{"/var/lib/app", ""},
		{"/home/deploy/app", ""},
		{"apps/billing", ""},
	}
	for _, layout := range []string{"", LayoutReleases, LayoutInplace} {
		for _, tt := range tests {
			spec := &outpostv1.PlanSpec{App: "web", Artifact: &outpostv1.PlanArtifact{Path: "web.war"},
				Deploy: &outpostv1.PlanDeploy{Path: tt.path, Layout: layout}}
			err := Validate(spec)
			if tt.want == "" {
				if err != nil {
					t.Errorf("layout %q, deploy.path %q: %v, want accepted", layout, tt.path, err)
				}
				continue
			}
			want := fmt.Sprintf("deploy.path: %q: %s", tt.path, tt.want)
			fes := FieldErrors(err)
			if len(fes) != 1 || fes[0].Error() != want {
				t.Errorf("layout %q, deploy.path %q:\n got: %v\nwant: %s", layout, tt.path, err, want)
			}
		}
	}
}

func TestParseHookErrorIsDeniedError(t *testing.T) {
	_, err := Parse([]byte(base + "hooks: {stop: \"psql -c 'TRUNCATE sessions'\", start: 'echo ok'}\n"))
	var denied *hookpolicy.DeniedError
	if !errors.As(err, &denied) {
		t.Fatalf("Parse error %v does not wrap a *hookpolicy.DeniedError", err)
	}
	if want := "destructive SQL"; denied.Rule != want {
		t.Errorf("Rule = %q, want %q", denied.Rule, want)
	}
	fes := FieldErrors(err)
	if len(fes) != 1 || fes[0].Field != "hooks.stop" {
		t.Errorf("FieldErrors = %v, want one for hooks.stop", fes)
	}
}

// TestParseAcceptsTruncateOfAFile: the SQL rules apply to SQL, not to
// truncate(1) (issue #11, finding 9).
func TestParseAcceptsTruncateOfAFile(t *testing.T) {
	spec, err := Parse([]byte(base + "hooks: {stop: 'truncate -s 0 app.log', start: 'sh bin/start'}\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := spec.GetHooks().GetStop(); got != "truncate -s 0 app.log" {
		t.Errorf("stop hook = %q", got)
	}
}

func TestFieldErrorsListsEach(t *testing.T) {
	_, err := Parse([]byte("deploy: {path: /}\nstrategy: {batch: 0}\n"))
	var fields []string
	for _, fe := range FieldErrors(err) {
		fields = append(fields, fe.Field)
	}
	want := []string{"app", "artifact.path", "deploy.path", "strategy.batch"}
	if diff := cmp.Diff(want, fields); diff != "" {
		t.Errorf("FieldErrors fields (-want +got):\n%s", diff)
	}
}

// TestParseSnakeAndCamelCase checks that the YAML keys of DESIGN.md
// (snake_case) and protojson's lowerCamelCase names both work, and that
// unquoted numbers and booleans land in string fields.
func TestParseSnakeAndCamelCase(t *testing.T) {
	snake := `app: web
change_id: SR-1
artifact: {path: web.war}
targets: {selector: {tier: 2, canary: true}}
deploy: {path: /srv/web, keep_releases: 3}
precheck: {max_disk_used_percent: 80, min_free_bytes: 1048576}
hooks: {before_install: "true", after_install: "true"}
health: {http: {port: 80, expect_status: 204}}
strategy:
  batch: 5
  max_fail_percent: 0
  stages: [{name: a, max_parallel: 2, max_fail_percent: 20}]
`
	camel := `app: web
changeId: SR-1
artifact: {path: web.war}
targets: {selector: {tier: "2", canary: "true"}}
deploy: {path: /srv/web, keepReleases: 3}
precheck: {maxDiskUsedPercent: 80, minFreeBytes: "1048576"}
hooks: {beforeInstall: "true", afterInstall: "true"}
health: {http: {port: 80, expectStatus: 204}}
strategy:
  batch: "5"
  maxFailPercent: 0
  stages: [{name: a, maxParallel: 2, maxFailPercent: 20}]
`
	zero, twenty := int32(0), int32(20)
	want := &outpostv1.PlanSpec{
		App:      "web",
		ChangeId: "SR-1",
		Artifact: &outpostv1.PlanArtifact{Path: "web.war"},
		Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"tier": "2", "canary": "true"}},
		Deploy:   &outpostv1.PlanDeploy{Path: "/srv/web", KeepReleases: 3},
		Precheck: &outpostv1.PlanPrecheck{MaxDiskUsedPercent: 80, MinFreeBytes: "1048576"},
		Hooks:    &outpostv1.Hooks{BeforeInstall: "true", AfterInstall: "true"},
		Health:   &outpostv1.PlanHealth{Http: &outpostv1.HttpHealthCheck{Port: 80, ExpectStatus: 204}},
		Strategy: &outpostv1.PlanStrategy{
			Batch:          "5",
			MaxFailPercent: &zero,
			Stages:         []*outpostv1.PlanStage{{Name: "a", MaxParallel: 2, MaxFailPercent: &twenty}},
		},
	}
	for name, doc := range map[string]string{"snake": snake, "camel": camel} {
		got, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("Parse(%s): %v", name, err)
		}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("Parse(%s) (-want +got):\n%s", name, diff)
		}
	}
}

// TestParseNullsMeanDefaults checks that keys written without a value keep
// the zero value instead of failing.
func TestParseNullsMeanDefaults(t *testing.T) {
	got, err := Parse([]byte(base + "environment:\nhooks:\n  stop:\n  start: sh bin/start\nstrategy:\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := &outpostv1.PlanSpec{
		App:      "web",
		Artifact: &outpostv1.PlanArtifact{Path: "web.war"},
		Deploy:   &outpostv1.PlanDeploy{Path: "/srv/web"},
		Hooks:    &outpostv1.Hooks{Start: "sh bin/start"},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
}

func TestParseDesignExample(t *testing.T) {
	data, err := os.ReadFile("testdata/design.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(DESIGN.md example): %v", err)
	}
	ten := int32(10)
	want := &outpostv1.PlanSpec{
		App:         "billing-api",
		Environment: "prod",
		ChangeId:    "SR-2026-1142",
		Artifact:    &outpostv1.PlanArtifact{Path: "./build/billing-api-1.4.2.tar.gz", Unpack: "tar"},
		Targets: &outpostv1.PlanTargets{
			Selector:    map[string]string{"app": "billing-api"},
			Datacenters: []string{"seoul-1", "busan-1"},
		},
		Deploy:   &outpostv1.PlanDeploy{Path: "/srv/billing-api", Layout: "releases", KeepReleases: 5},
		Precheck: &outpostv1.PlanPrecheck{MaxDiskUsedPercent: 90, MinFreeBytes: "auto"},
		Hooks:    &outpostv1.Hooks{Stop: "sudo systemctl stop billing-api", Start: "sudo systemctl start billing-api"},
		Health: &outpostv1.PlanHealth{
			Http:     &outpostv1.HttpHealthCheck{Port: 8080, Path: "/health", ExpectStatus: 200},
			Timeout:  "30s",
			Interval: "2s",
		},
		Strategy: &outpostv1.PlanStrategy{Stages: []*outpostv1.PlanStage{
			{Name: "canary", Count: 1, Bake: "2m", Pause: "manual"},
			{Name: "tier2", Selector: map[string]string{"tier": "2"}, Batch: "50", MaxFailPercent: &ten},
			{Name: "rest", Batch: "100%"},
		}},
		Approval:   &outpostv1.PlanApproval{Required: true},
		Validation: &outpostv1.PlanValidation{Required: true},
		Notify:     &outpostv1.PlanNotify{Webhook: "https://chat.example.internal/hooks/deploys"},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Parse(DESIGN.md example) (-want +got):\n%s", diff)
	}
}

// TestGoodPlans parses every plan under testdata/good, checks that it
// survives a round trip through protojson and YAML unchanged, and compares
// its resolved DeploySpec with the golden file beside it.
func TestGoodPlans(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no good plans: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			spec, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(spec)
			if err != nil {
				t.Fatal(err)
			}
			y, err := yaml.JSONToYAML(j)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Parse(y)
			if err != nil {
				t.Fatalf("Parse(round trip):\n%s\n%v", y, err)
			}
			if diff := cmp.Diff(spec, again, protocmp.Transform()); diff != "" {
				t.Errorf("round trip (-first +second):\n%s", diff)
			}

			ds, err := DeploySpecOf(spec, 1000)
			if err != nil {
				t.Fatalf("DeploySpecOf: %v", err)
			}
			got, err := protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Marshal(ds)
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(file, ".yaml") + ".deploy.golden"
			checkGolden(t, golden, append(got, '\n'))
		})
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	// protojson randomizes white space between runs; compare without it.
	norm := func(b []byte) string { return strings.Join(strings.Fields(string(b)), " ") }
	if diff := cmp.Diff(norm(want), norm(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func TestDeploySpecOfDefaults(t *testing.T) {
	spec, err := Parse([]byte(base + "health: {http: {port: 8080}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := DeploySpecOf(spec, 5<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := &outpostv1.DeploySpec{
		Path:               "/srv/web",
		Layout:             outpostv1.Layout_LAYOUT_RELEASES,
		KeepReleases:       5,
		MaxDiskUsedPercent: 90,
		MinFreeBytes:       10 << 20,
		Health: &outpostv1.HealthCheck{
			Check: &outpostv1.HealthCheck_Http{Http: &outpostv1.HttpHealthCheck{
				Port: 8080, Path: "/", ExpectStatus: 200,
			}},
			Timeout:  durationpb.New(30 * time.Second),
			Interval: durationpb.New(2 * time.Second),
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("DeploySpecOf (-want +got):\n%s", diff)
	}

	// No health check at all: none is resolved.
	spec, err = Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	got, err = DeploySpecOf(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetHealth() != nil || got.GetHooks() != nil || got.GetMinFreeBytes() != 0 {
		t.Errorf("DeploySpecOf(minimal) = %v, want no health, no hooks, min_free_bytes 0", got)
	}
}

func TestDeploySpecOfRefusesInvalid(t *testing.T) {
	spec := &outpostv1.PlanSpec{App: "web", Artifact: &outpostv1.PlanArtifact{Path: "a"}, Deploy: &outpostv1.PlanDeploy{Path: "/srv/x"},
		Health: &outpostv1.PlanHealth{Tcp: &outpostv1.TcpHealthCheck{Port: 1}, Timeout: "forever"}}
	if _, err := DeploySpecOf(spec, 1); err == nil || !strings.Contains(err.Error(), "health.timeout") {
		t.Errorf("DeploySpecOf(bad timeout) error = %v, want one naming health.timeout", err)
	}
	if _, err := DeploySpecOf(nil, 1); err == nil {
		t.Error("DeploySpecOf(nil) succeeded")
	}
}

func TestValidateNil(t *testing.T) {
	if err := Validate(nil); err == nil || err.Error() != "plan: empty plan" {
		t.Errorf("Validate(nil) = %v, want plan: empty plan", err)
	}
}

func TestUnpackOf(t *testing.T) {
	tests := []struct {
		path, unpack string
		want         outpostv1.Unpack
	}{
		{"app.tar.gz", "", outpostv1.Unpack_UNPACK_TAR},
		{"APP.TGZ", "", outpostv1.Unpack_UNPACK_TAR},
		{"app.tar", "", outpostv1.Unpack_UNPACK_TAR},
		{"app.war", "", outpostv1.Unpack_UNPACK_NONE},
		{"app.tar.gz.sig", "", outpostv1.Unpack_UNPACK_NONE},
		{"app.war", "tar", outpostv1.Unpack_UNPACK_TAR},
		{"app.tgz", "none", outpostv1.Unpack_UNPACK_NONE},
	}
	for _, tt := range tests {
		spec := &outpostv1.PlanSpec{Artifact: &outpostv1.PlanArtifact{Path: tt.path, Unpack: tt.unpack}}
		if got := UnpackOf(spec); got != tt.want {
			t.Errorf("UnpackOf(path %q, unpack %q) = %v, want %v", tt.path, tt.unpack, got, tt.want)
		}
	}
}

// TestExamples parses the example files shipped in deploy/examples.
func TestExamples(t *testing.T) {
	plans, err := filepath.Glob("../../deploy/examples/plan-*.yaml")
	if err != nil || len(plans) == 0 {
		t.Fatalf("no example plans: %v", err)
	}
	for _, file := range plans {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := Parse(data)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if _, err := DeploySpecOf(spec, 1<<20); err != nil {
			t.Errorf("%s: DeploySpecOf: %v", file, err)
		}
	}
	data, err := os.ReadFile("../../deploy/examples/nodes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := ParseInventory(data)
	if err != nil {
		t.Fatalf("nodes.yaml: %v", err)
	}
	spec, err := Parse(mustRead(t, "../../deploy/examples/plan-rolling.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if sel, err := SelectNodes(spec, nodes); err != nil || len(sel) != len(nodes) {
		t.Errorf("SelectNodes(plan-rolling.yaml, nodes.yaml) = %d nodes, %v; want all %d", len(sel), err, len(nodes))
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
