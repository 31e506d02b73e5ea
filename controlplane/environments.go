package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"sigs.k8s.io/yaml"

	"github.com/outposthq/outpost/controlplane/analysis"
	"github.com/outposthq/outpost/internal/deploypath"
	"github.com/outposthq/outpost/internal/plan"
	"github.com/outposthq/outpost/internal/signature"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Environment is what the control plane's configuration says about one
// deployment environment ("prod", "staging"), which plans name in their
// environment field.
type Environment struct {
	// Protected environments require an approval, by someone other than
	// the requester, before a rollout starts, whatever the plan says.
	Protected bool
	// ApprovalTTL is how long an approval of a rollout in this protected
	// environment stays good: an approved rollout that has not started
	// within it (waiting behind another rollout of the app, say) returns
	// to PENDING_APPROVAL and must be approved again. 0 means the rollout
	// engine's default. A rollout waits for its first approval without a
	// limit.
	ApprovalTTL time.Duration
	// HookAllowList holds regular expressions (RE2); when it is not empty,
	// every hook command of a plan for this environment (hooks, the health
	// command, the blue/green switch hooks) must match one of them as a
	// whole, or CreateRollout refuses the plan. Empty means any command
	// that passes the deny list (internal/hookpolicy), which is a seat
	// belt, not a control: a protected environment should have one, and
	// Start warns when it has not.
	HookAllowList []string
	// DeployPathPrefixes holds absolute directories; when it is not empty,
	// a plan for this environment must deploy to one of them or below
	// (by whole path elements: /srv allows /srv/app, not /srvx), with an
	// absolute deploy.path, or CreateRollout refuses it. Empty means any
	// path internal/plan accepts.
	DeployPathPrefixes []string
	// VerifyInterval is how often nodes whose release was activated by a
	// rollout of this environment are verified (fleet truth, verifier.go);
	// 0 means DefaultVerifyInterval, negative means never (node verify
	// still works on demand).
	VerifyInterval time.Duration
	// MaxUnpackedBytes bounds what a tar artifact deployed in this
	// environment may unpack to; 0 means tarscan.DefaultMaxUnpackedBytes
	// (8 GiB). A plan's artifact.max_unpacked_bytes may lower it, never
	// raise it (without it, a plan may ask for more than the default).
	MaxUnpackedBytes int64
	// MaxUnpackedRatio bounds a tar artifact's unpacked size over its size,
	// once past 64 MiB unpacked; 0 means tarscan.DefaultMaxRatio (200).
	MaxUnpackedRatio int64
	// AllowSetuid admits tar entries with the setuid or setgid bit, and
	// lets the unpack keep them; otherwise such an artifact is refused.
	AllowSetuid bool
	// TrustedKeys are the public keys whose signatures (Sigstore bundles,
	// see internal/signature) a rollout in this environment may carry:
	// a signature given is verified against them and its signer recorded.
	// Empty means none is verified here (the gateways still verify).
	TrustedKeys []signature.KeySpec
	// RequireSignature refuses a rollout whose artifact is not signed by
	// one of TrustedKeys, which must then not be empty.
	RequireSignature bool
	// AllowSelfApproval lets the requester of a rollout in this
	// environment approve it themselves, when its plan asks for approval
	// (approval.required). It is refused on a protected environment,
	// whose approval is four eyes by definition. False: four eyes.
	AllowSelfApproval bool
}

// envNameRE is what an environment may be named: what a plan's
// environment field accepts (internal/plan).
var envNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// environments is the validated form of Config.Environments. A nil or
// empty one declares nothing: any environment, no allow-list.
type environments map[string]*environment

type environment struct {
	Environment
	allow    []*regexp.Regexp // HookAllowList, anchored
	prefixes []string         // DeployPathPrefixes, cleaned
	trust    *signature.Trust // TrustedKeys; nil when empty
}

// compileEnvironments validates the declared environments.
func compileEnvironments(in map[string]Environment) (environments, error) {
	out := environments{}
	for _, name := range sortedKeys(in) {
		e := in[name]
		if !envNameRE.MatchString(name) {
			return nil, fmt.Errorf("environments: %q: must be 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", name)
		}
		if e.ApprovalTTL < 0 {
			return nil, fmt.Errorf("environments.%s.approval_ttl: %v is negative", name, e.ApprovalTTL)
		}
		if e.ApprovalTTL > 0 && !e.Protected {
			return nil, fmt.Errorf("environments.%s.approval_ttl: set, but the environment is not protected", name)
		}
		if e.AllowSelfApproval && e.Protected {
			return nil, fmt.Errorf("environments.%s.allow_self_approval: a protected environment requires an approval by someone other than the requester; drop protected (plans may still ask for approval.required) or drop allow_self_approval", name)
		}
		if e.MaxUnpackedBytes < 0 || e.MaxUnpackedBytes > 1<<62 {
			return nil, fmt.Errorf("environments.%s.max_unpacked_bytes: %d must be from 1 to %d (or 0 for the default)", name, e.MaxUnpackedBytes, int64(1)<<62)
		}
		if e.MaxUnpackedRatio < 0 {
			return nil, fmt.Errorf("environments.%s.max_unpacked_ratio: %d is negative", name, e.MaxUnpackedRatio)
		}
		ce := &environment{Environment: e}
		if len(e.TrustedKeys) > 0 {
			t, err := signature.NewTrust("environments."+name+".trusted_keys", e.TrustedKeys)
			if err != nil {
				return nil, err
			}
			ce.trust = t
		}
		if e.RequireSignature && ce.trust == nil {
			return nil, fmt.Errorf("environments.%s.require_signature: set, but trusted_keys is empty: list the public keys whose signatures are accepted", name)
		}
		for i, p := range e.HookAllowList {
			if strings.TrimSpace(p) == "" {
				return nil, fmt.Errorf("environments.%s.hook_allow_list[%d]: empty pattern", name, i)
			}
			// Anchored: a pattern allows a whole command, never a command
			// that merely contains an allowed one ("start app; rm ...").
			re, err := regexp.Compile(`^(?:` + p + `)$`)
			if err != nil {
				return nil, fmt.Errorf("environments.%s.hook_allow_list[%d]: %w", name, i, err)
			}
			ce.allow = append(ce.allow, re)
		}
		for i, p := range e.DeployPathPrefixes {
			c, err := checkPathPrefix(p)
			if err != nil {
				return nil, fmt.Errorf("environments.%s.deploy_path_prefixes[%d]: %w", name, i, err)
			}
			ce.prefixes = append(ce.prefixes, c)
		}
		out[name] = ce
	}
	return out, nil
}

// checkPathPrefix validates one of DeployPathPrefixes and returns it
// cleaned.
func checkPathPrefix(p string) (string, error) {
	switch {
	case p == "":
		return "", errors.New("empty prefix")
	case len(p) > plan.MaxDeployPath:
		return "", fmt.Errorf("%d bytes long: at most %d", len(p), plan.MaxDeployPath)
	case strings.ContainsFunc(p, unicode.IsControl):
		return "", fmt.Errorf("%q: contains control characters", p)
	case !path.IsAbs(p):
		return "", fmt.Errorf("%q: must be an absolute path", p)
	case slices.Contains(strings.Split(p, "/"), ".."):
		return "", fmt.Errorf("%q: must not contain '..'", p)
	case path.Clean(p) == "/":
		// It would allow every path: leave the list out instead.
		return "", fmt.Errorf("%q: allows every path; leave deploy_path_prefixes out to allow any", p)
	}
	return path.Clean(p), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// names lists the declared environments, sorted.
func (es environments) names() []string { return sortedKeys(es) }

// protected returns the names of the protected environments.
func (es environments) protected() []string {
	var out []string
	for _, n := range es.names() {
		if es[n].Protected {
			out = append(out, n)
		}
	}
	return out
}

// unguarded returns the names of the protected environments without a
// hook allow-list: their hooks pass only the deny list, a seat belt that
// a determined plan author can walk around.
func (es environments) unguarded() []string {
	var out []string
	for _, n := range es.names() {
		if es[n].Protected && len(es[n].allow) == 0 {
			out = append(out, n)
		}
	}
	return out
}

// hookFields lists a plan's shell commands by field, as internal/plan
// names them.
func hookFields(spec *outpostv1.PlanSpec) [][2]string {
	h := spec.GetHooks()
	return [][2]string{
		{"hooks.before_install", h.GetBeforeInstall()},
		{"hooks.stop", h.GetStop()},
		{"hooks.after_install", h.GetAfterInstall()},
		{"hooks.start", h.GetStart()},
		{"health.command", spec.GetHealth().GetCommand()},
		{"strategy.switch_hook", spec.GetStrategy().GetSwitchHook()},
		{"strategy.switch_back_hook", spec.GetStrategy().GetSwitchBackHook()},
	}
}

// checkPlan enforces the declared environments on a submitted plan: once
// any is declared, a plan must name one of them (so a typo cannot dodge a
// protected environment's approval), every hook command must be on its
// environment's allow-list when it has one, and the deploy path under one
// of its deploy path prefixes when it has those. The error is
// INVALID_ARGUMENT naming each field at fault.
func (es environments) checkPlan(spec *outpostv1.PlanSpec) error {
	if len(es) == 0 {
		return nil
	}
	name := spec.GetEnvironment()
	env, ok := es[name]
	if !ok {
		declared := strings.Join(es.names(), ", ")
		if name == "" {
			return fieldError("plan.environment", "required: this control plane declares the environments %s", declared)
		}
		return fieldError("plan.environment", "%q is not declared in the control plane's configuration (declared: %s)", name, declared)
	}
	var msgs []string
	var vs []*errdetails.BadRequest_FieldViolation
	violation := func(field, desc string) {
		msgs = append(msgs, "plan."+field+": "+desc)
		vs = append(vs, &errdetails.BadRequest_FieldViolation{Field: "plan." + field, Description: desc})
	}
	// A missing or over-long path is left to plan validation, which runs
	// next and names it without echoing a megabyte back.
	if p := spec.GetDeploy().GetPath(); len(env.prefixes) > 0 && p != "" && len(p) <= plan.MaxDeployPath {
		switch {
		case !path.IsAbs(p):
			violation("deploy.path", fmt.Sprintf("%q is relative to the SSH user's home: environment %q allows only absolute deploy paths under %s",
				p, name, strings.Join(env.prefixes, ", ")))
		case !slices.ContainsFunc(env.prefixes, func(dir string) bool { return deploypath.Under(p, dir) }):
			violation("deploy.path", fmt.Sprintf("%q is not under the deploy path prefixes of environment %q (%s)",
				p, name, strings.Join(env.prefixes, ", ")))
		}
	}
	for _, f := range hookFields(spec) {
		cmd := strings.TrimSpace(f[1])
		if len(env.allow) == 0 || cmd == "" || slices.ContainsFunc(env.allow, func(re *regexp.Regexp) bool { return re.MatchString(cmd) }) {
			continue
		}
		violation(f[0], fmt.Sprintf("%q is not on the hook allow-list of environment %q", cmd, name))
	}
	if len(vs) == 0 {
		return nil
	}
	return withViolations(codes.InvalidArgument, strings.Join(msgs, "; "), vs)
}

// guardedControlPlane is the ControlPlaneService as served: the
// environment policy runs before CreateRollout, so no rollout is stored,
// and no dry run passes, with a plan the configuration forbids.
type guardedControlPlane struct {
	*controlPlaneService
	envs      environments
	providers *analysis.Providers
}

// CreateRollout checks the plan against the declared environments, then
// creates the rollout.
func (g guardedControlPlane) CreateRollout(ctx context.Context, req *outpostv1.CreateRolloutRequest) (*outpostv1.CreateRolloutResponse, error) {
	if req.GetPlan() != nil {
		if err := g.envs.checkPlan(req.GetPlan()); err != nil {
			return nil, err
		}
		if err := checkProviders(g.providers, req.GetPlan()); err != nil {
			return nil, err
		}
	}
	return g.controlPlaneService.CreateRollout(ctx, req)
}

// FileConfig is the control plane's configuration file (outpost
// controlplane --config FILE), YAML:
//
//	environments:
//	  prod:
//	    protected: true
//	    approval_ttl: 24h
//	    hook_allow_list:
//	      - "sudo systemctl (start|stop|restart) [a-z0-9-]+"
//	    deploy_path_prefixes: [/srv, /opt/apps]
//	    max_unpacked_bytes: 20GiB   # a tar artifact's unpacked size; default 8GiB
//	    max_unpacked_ratio: 500     # unpacked / artifact size past 64 MiB; default 200
//	    allow_setuid: false         # admit setuid and setgid bits in tar artifacts
//	    require_signature: true     # refuse artifacts not signed by a trusted key
//	    trusted_keys:               # public keys whose cosign signatures are accepted
//	      - id: ci-release
//	        public_key: |
//	          -----BEGIN PUBLIC KEY-----
//	          ...
//	          -----END PUBLIC KEY-----
//	    verify_interval: 15m        # how often its nodes are verified (drift); 0 disables
//	  staging: {}
//	  dev:
//	    allow_self_approval: true   # a requester may approve their own rollout (never with protected)
//	analysis_providers:           # Prometheus endpoints canary analysis may query
//	  - name: prom
//	    url: https://prometheus.internal:9090
//	    tls: {ca_file: /etc/outpost/prom-ca.pem}   # also cert_file, key_file
//	    bearer_token_file: /etc/outpost/prom-token  # read at each query
//	    timeout: 10s
//
// Unknown fields are refused.
type FileConfig struct {
	// Environments declared, by name.
	Environments map[string]Environment
	// AnalysisProviders are the metric providers canary analysis may use.
	AnalysisProviders []analysis.ProviderConfig
}

type fileConfigYAML struct {
	Environments      map[string]*environmentYAML `json:"environments"`
	AnalysisProviders []analysis.ProviderConfig   `json:"analysis_providers"`
}

type environmentYAML struct {
	Protected          bool                `json:"protected"`
	ApprovalTTL        string              `json:"approval_ttl"`
	HookAllowList      []string            `json:"hook_allow_list"`
	DeployPathPrefixes []string            `json:"deploy_path_prefixes"`
	MaxUnpackedBytes   sizeText            `json:"max_unpacked_bytes"`
	MaxUnpackedRatio   int64               `json:"max_unpacked_ratio"`
	AllowSetuid        bool                `json:"allow_setuid"`
	RequireSignature   bool                `json:"require_signature"`
	TrustedKeys        []signature.KeySpec `json:"trusted_keys"`
	// RequireTransparencyLog is refused: signatures are checked offline
	// against public keys only.
	RequireTransparencyLog bool   `json:"require_transparency_log"`
	VerifyInterval         string `json:"verify_interval"`
	AllowSelfApproval      bool   `json:"allow_self_approval"`
}

// sizeText is a size as written in YAML: "20GiB", or a number of bytes.
type sizeText string

func (s *sizeText) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		*s = sizeText(str)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("a size must be a number of bytes or a string such as \"20GiB\", not %s", b)
	}
	*s = sizeText(n.String())
	return nil
}

// LoadFileConfig reads and validates a configuration file.
func LoadFileConfig(path string) (*FileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	fc, err := ParseFileConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return fc, nil
}

// ParseFileConfig parses and validates a configuration file's content.
func ParseFileConfig(data []byte) (*FileConfig, error) {
	var raw fileConfigYAML
	if err := checkConfigShape(data, reflect.TypeOf(raw)); err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		// Only what checkConfigShape cannot see reaches here.
		return nil, errors.New(strings.TrimPrefix(err.Error(), "error unmarshaling JSON: while decoding JSON: "))
	}
	fc := &FileConfig{Environments: map[string]Environment{}}
	for _, name := range sortedKeys(raw.Environments) {
		e := raw.Environments[name]
		if e == nil {
			e = &environmentYAML{}
		}
		env := Environment{Protected: e.Protected, HookAllowList: e.HookAllowList, DeployPathPrefixes: e.DeployPathPrefixes,
			MaxUnpackedRatio: e.MaxUnpackedRatio, AllowSetuid: e.AllowSetuid,
			RequireSignature: e.RequireSignature, TrustedKeys: e.TrustedKeys, AllowSelfApproval: e.AllowSelfApproval}
		if e.RequireTransparencyLog {
			return nil, fmt.Errorf("environments.%s.require_transparency_log: not supported: signatures are verified offline against trusted_keys only; leave it out", name)
		}
		if e.MaxUnpackedBytes != "" {
			n, err := plan.ParseSize("environments."+name+".max_unpacked_bytes", string(e.MaxUnpackedBytes))
			if err != nil {
				return nil, err
			}
			if n <= 0 {
				return nil, fmt.Errorf("environments.%s.max_unpacked_bytes: %q must be more than zero", name, e.MaxUnpackedBytes)
			}
			env.MaxUnpackedBytes = n
		}
		if e.ApprovalTTL != "" {
			d, err := time.ParseDuration(e.ApprovalTTL)
			if err != nil {
				return nil, fmt.Errorf("environments.%s.approval_ttl: %w", name, err)
			}
			if d <= 0 {
				return nil, fmt.Errorf("environments.%s.approval_ttl: %q is not positive", name, e.ApprovalTTL)
			}
			env.ApprovalTTL = d
		}
		if e.VerifyInterval != "" {
			d, err := time.ParseDuration(e.VerifyInterval)
			switch {
			case err != nil:
				return nil, fmt.Errorf("environments.%s.verify_interval: %w", name, err)
			case d == 0:
				env.VerifyInterval = -1
			case d < MinVerifyInterval || d > MaxVerifyInterval:
				return nil, fmt.Errorf("environments.%s.verify_interval: %v must be 0 (never) or from %v to %v", name, d, MinVerifyInterval, MaxVerifyInterval)
			default:
				env.VerifyInterval = d
			}
		}
		fc.Environments[name] = env
	}
	if _, err := compileEnvironments(fc.Environments); err != nil {
		return nil, err
	}
	if _, err := analysis.NewProviders(raw.AnalysisProviders); err != nil {
		return nil, err
	}
	fc.AnalysisProviders = raw.AnalysisProviders
	return fc, nil
}
