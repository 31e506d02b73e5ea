package controlplane

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/internal/tarscan"
	"github.com/outposthq/outpost/internal/tarscan/tarscantest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestCreateRolloutMeasuresTar: the control plane measures a tar artifact
// when the rollout is created, refuses one over its plan's and
// environment's limits (naming the field and the sizes), and makes
// min_free_bytes "auto" twice the unpacked size.
func TestCreateRolloutMeasuresTar(t *testing.T) {
	s := startCP(t, t.TempDir(), func(c *Config) {
		c.Environments = map[string]Environment{
			"prod":    {MaxUnpackedBytes: 4 << 20},
			"staging": {AllowSetuid: true, MaxUnpackedRatio: 100000},
			"lab":     {},
		}
	})
	c := dial(t, s.Addr())
	applyNodes(t, c, 2, nil)
	three := upload(t, c, "three.tar.gz", tarscantest.ZerosTarGz(t, "zeros", 0o644, 3))
	five := upload(t, c, "five.tar.gz", tarscantest.ZerosTarGz(t, "zeros", 0o644, 5))
	bomb := upload(t, c, "bomb.tar.gz", tarscantest.ZerosTarGz(t, "zeros", 0o644, 100))
	setuid := upload(t, c, "setuid.tar.gz", tarscantest.ZerosTarGz(t, "bin/su", 0o4755, 1))
	notTar := upload(t, c, "a.tar.gz", []byte("a"))
	plan := func(env, maxUnpacked string) *outpostv1.PlanSpec {
		p := rollingPlan("1", 0)
		p.Environment = env
		p.Artifact.MaxUnpackedBytes = maxUnpacked
		return p
	}
	const mib = 1 << 20
	for _, tt := range []struct {
		name   string
		spec   *outpostv1.PlanSpec
		digest string
		// Accepted: the resolved deploy spec's figures.
		minFree, maxUnpacked, ratio int64
		setuid                      bool
		// Refused: the field at fault and what the message says.
		field string
		says  []string
	}{
		{name: "auto is twice the unpacked size", spec: plan("lab", ""), digest: three,
			minFree: 6 * mib, maxUnpacked: tarscan.DefaultMaxUnpackedBytes, ratio: tarscan.DefaultMaxRatio},
		{name: "environment settings", spec: plan("staging", ""), digest: bomb,
			minFree: 200 * mib, maxUnpacked: tarscan.DefaultMaxUnpackedBytes, ratio: 100000, setuid: true},
		{name: "under the environment's limit", spec: plan("prod", ""), digest: three,
			minFree: 6 * mib, maxUnpacked: 4 * mib, ratio: tarscan.DefaultMaxRatio},
		{name: "over the environment's limit", spec: plan("prod", ""), digest: five, field: "artifact_sha256",
			says: []string{"5.0 MiB (5242880 bytes)", "4.0 MiB (4194304 bytes)", "(limit: environments.prod.max_unpacked_bytes)", five}},
		{name: "plan lowers the limit", spec: plan("prod", "1MiB"), digest: three, field: "artifact_sha256",
			says: []string{"3.0 MiB (3145728 bytes)", "1.0 MiB (1048576 bytes)", "(limit: plan.artifact.max_unpacked_bytes)"}},
		{name: "plan raises the limit over the environment's", spec: plan("prod", "8MiB"), digest: three,
			field: "plan.artifact.max_unpacked_bytes", says: []string{`"8MiB" is above the 4.0 MiB (4194304 bytes)`, "environments.prod.max_unpacked_bytes"}},
		{name: "plan raises the default", spec: plan("lab", "20GiB"), digest: three,
			minFree: 6 * mib, maxUnpacked: 20 << 30, ratio: tarscan.DefaultMaxRatio},
		{name: "compression bomb", spec: plan("lab", ""), digest: bomb, field: "artifact_sha256",
			says: []string{"100.0 MiB (104857600 bytes)", "limit of 200 times", "(limit: the default, which the plan's environment's max_unpacked_ratio changes)"}},
		{name: "setuid", spec: plan("lab", ""), digest: setuid, field: "artifact_sha256",
			says: []string{`"bin/su"`, "mode 4755", "unless environments.lab sets allow_setuid"}},
		{name: "setuid allowed", spec: plan("staging", ""), digest: setuid,
			minFree: 2 * mib, maxUnpacked: tarscan.DefaultMaxUnpackedBytes, ratio: 100000, setuid: true},
		// The gateways refuse what is not a tar, saying why.
		{name: "not a tar", spec: plan("lab", ""), digest: notTar,
			minFree: 2, maxUnpacked: tarscan.DefaultMaxUnpackedBytes, ratio: tarscan.DefaultMaxRatio},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: tt.spec, ArtifactSha256: tt.digest, DryRun: true})
			if tt.field == "" {
				if err != nil {
					t.Fatalf("CreateRollout: %v, want accepted", err)
				}
				d := resp.GetRollout().GetDeploy()
				if d.GetMinFreeBytes() != tt.minFree || d.GetMaxUnpackedBytes() != tt.maxUnpacked ||
					d.GetMaxUnpackedRatio() != tt.ratio || d.GetAllowSetuid() != tt.setuid {
					t.Errorf("deploy spec min_free_bytes %d, max_unpacked_bytes %d, max_unpacked_ratio %d, allow_setuid %v; want %d, %d, %d, %v",
						d.GetMinFreeBytes(), d.GetMaxUnpackedBytes(), d.GetMaxUnpackedRatio(), d.GetAllowSetuid(),
						tt.minFree, tt.maxUnpacked, tt.ratio, tt.setuid)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("CreateRollout: %v, want INVALID_ARGUMENT", err)
			}
			msg := status.Convert(err).Message()
			for _, s := range tt.says {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q does not say %q", msg, s)
				}
			}
			var fields []string
			for _, d := range status.Convert(err).Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			if strings.Join(fields, ",") != tt.field {
				t.Errorf("violations on %v, want %s", fields, tt.field)
			}
		})
	}

	// A refused rollout is not stored, dry run or not.
	_, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: plan("lab", ""), ArtifactSha256: bomb})
	wantCode(t, "CreateRollout(bomb)", err, codes.InvalidArgument, "compression bomb")
	list, err := c.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
	if err != nil || len(list.GetRollouts()) != 0 {
		t.Errorf("ListRollouts = %v, %v; want none", list.GetRollouts(), err)
	}
}

func TestEnvironmentTarSettings(t *testing.T) {
	fc, err := ParseFileConfig([]byte(`environments:
  prod: {max_unpacked_bytes: 20GiB, max_unpacked_ratio: 500, allow_setuid: true}
  staging: {max_unpacked_bytes: 1073741824}
  dev: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]Environment{
		"prod":    {MaxUnpackedBytes: 20 << 30, MaxUnpackedRatio: 500, AllowSetuid: true},
		"staging": {MaxUnpackedBytes: 1 << 30},
		"dev":     {},
	} {
		g := fc.Environments[name]
		if g.MaxUnpackedBytes != want.MaxUnpackedBytes || g.MaxUnpackedRatio != want.MaxUnpackedRatio || g.AllowSetuid != want.AllowSetuid {
			t.Errorf("environment %s = %+v, want %+v", name, g, want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"environments: {prod: {max_unpacked_bytes: lots}}", `environments.prod.max_unpacked_bytes: "lots": not a size`},
		{"environments: {prod: {max_unpacked_bytes: 0}}", "environments.prod.max_unpacked_bytes: \"0\" must be more than zero"},
		{"environments: {prod: {max_unpacked_bytes: [1]}}", "environments.prod.max_unpacked_bytes: must be a single value, not a list"},
		{"environments: {prod: {max_unpacked_ratio: -1}}", "environments.prod.max_unpacked_ratio: -1 is negative"},
		{"environments: {prod: {max_unpacked_ratio: many}}", "max_unpacked_ratio"},
		{"environments: {prod: {allow_setuid: sure}}", "allow_setuid"},
		{"environments: {prod: {allow_suid: true}}", "allow_suid"},
	} {
		if _, err := ParseFileConfig([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseFileConfig(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
	for _, envs := range []map[string]Environment{
		{"prod": {MaxUnpackedBytes: -1}},
		{"prod": {MaxUnpackedRatio: -1}},
	} {
		if _, err := Start(ctxT(t), Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Environments: envs, Logger: testLogger()}); err == nil ||
			!strings.Contains(err.Error(), "environments.prod.max_unpacked") {
			t.Errorf("Start(%+v) = %v, want an error naming the field", envs, err)
		}
	}
}
