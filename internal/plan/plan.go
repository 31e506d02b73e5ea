package plan

import (
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode"

	"github.com/outposthq/outpost/internal/deploypath"
	"github.com/outposthq/outpost/internal/hookpolicy"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Defaults applied when a plan leaves a field unset.
const (
	DefaultKeepReleases       = 5
	DefaultMaxDiskUsedPercent = 90
	DefaultHealthTimeout      = 30 * time.Second
	DefaultHealthInterval     = 2 * time.Second
	DefaultHealthPath         = "/"
	DefaultExpectStatus       = 200
	// DefaultMaxFailPercent applies to every stage whose plan sets no max_fail_percent.
	DefaultMaxFailPercent = 10
	// MaxKeepReleases bounds keep_releases.
	MaxKeepReleases = 100
	// MaxDeployPath bounds deploy.path, in bytes: Linux's PATH_MAX.
	MaxDeployPath = deploypath.MaxLen
)

// Words a plan uses for its string-typed choices.
const (
	UnpackTar  = "tar"
	UnpackNone = "none"

	LayoutReleases = "releases"
	LayoutInplace  = "inplace"

	StrategyRolling   = "rolling"
	StrategyTiered    = "tiered"
	StrategyCanary    = "canary"
	StrategyBlueGreen = "blue_green"

	PauseManual = "manual"

	// MinFreeAuto asks for twice the artifact size free, or twice a tar's
	// unpacked size when that is larger.
	MinFreeAuto = "auto"
)

// Parse reads a plan from YAML and validates it. Keys are the PlanSpec
// field names in snake_case. Errors name the field by its YAML path and,
// when the key is unambiguous, its line; see Validate. data longer than
// MaxPlanBytes is refused unread.
func Parse(data []byte) (*outpostv1.PlanSpec, error) {
	if len(data) > MaxPlanBytes {
		return nil, &FieldError{Field: "plan", Err: fmt.Errorf("%d bytes: at most %d", len(data), MaxPlanBytes)}
	}
	obj, err := decodeYAML("plan", data)
	if err != nil {
		return nil, err
	}
	spec := &outpostv1.PlanSpec{}
	var p problems
	norm := normalize(spec.ProtoReflect().Descriptor(), obj, "", &p)
	if err := p.err(); err != nil {
		addLines(err, data)
		return nil, err
	}
	if err := unmarshalNormalized("plan", norm, spec); err != nil {
		return nil, err
	}
	if err := Validate(spec); err != nil {
		addLines(err, data)
		return nil, err
	}
	return spec, nil
}

// Validate checks a plan, wherever it came from (YAML or the API). It
// returns every problem found, joined with errors.Join; each is a
// *FieldError naming the field by its YAML path. A plan with a field over
// its size limit (limits.go) gets only those errors: the other checks
// would repeat the oversized values. Whether the selector matches any
// node is checked by SelectNodes, which needs the inventory.
func Validate(spec *outpostv1.PlanSpec) error {
	if spec == nil {
		return &FieldError{Field: "plan", Err: fmt.Errorf("empty plan")}
	}
	if err := checkLimits(spec); err != nil {
		return err
	}
	var p problems
	p.addErr(checkName("app", spec.GetApp()))
	if e := spec.GetEnvironment(); e != "" {
		p.addErr(checkName("environment", e))
	}
	if c := spec.GetChangeId(); hasControl(c) {
		p.add("change_id", "%q: contains control characters", c)
	}
	validateArtifact(spec.GetArtifact(), &p)
	validateTargets(spec.GetTargets(), &p)
	validateDeploy(spec.GetDeploy(), &p)
	validatePrecheck(spec.GetPrecheck(), &p)
	if h := spec.GetHooks(); h != nil {
		checkHook("hooks.before_install", h.GetBeforeInstall(), &p)
		checkHook("hooks.stop", h.GetStop(), &p)
		checkHook("hooks.after_install", h.GetAfterInstall(), &p)
		checkHook("hooks.start", h.GetStart(), &p)
	}
	validateHealth(spec.GetHealth(), &p)
	validateStrategy(spec.GetStrategy(), &p)
	if w := spec.GetNotify().GetWebhook(); w != "" {
		u, err := url.Parse(w)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add("notify.webhook", "%q: must be an http:// or https:// URL", w)
		}
	}
	return p.err()
}

func validateArtifact(a *outpostv1.PlanArtifact, p *problems) {
	if a.GetPath() == "" {
		p.add("artifact.path", "required")
	} else if hasControl(a.GetPath()) {
		p.add("artifact.path", "%q: contains control characters", a.GetPath())
	}
	if hasControl(a.GetSignature()) {
		p.add("artifact.signature", "%q: contains control characters", a.GetSignature())
	}
	switch u := a.GetUnpack(); u {
	case "", UnpackTar, UnpackNone:
	default:
		p.add("artifact.unpack", "%q: must be %q or %q", u, UnpackTar, UnpackNone)
	}
	if s := a.GetMaxUnpackedBytes(); s != "" {
		if n, err := ParseSize("artifact.max_unpacked_bytes", s); err != nil {
			p.addErr(err)
		} else if n <= 0 {
			p.add("artifact.max_unpacked_bytes", "%q: must be more than zero", s)
		}
	}
}

func validateTargets(t *outpostv1.PlanTargets, p *problems) {
	checkLabels("targets.selector", t.GetSelector(), p)
	seen := map[string]int{}
	for i, dc := range t.GetDatacenters() {
		f := index("targets.datacenters", i)
		if err := checkName(f, dc); err != nil {
			p.addErr(err)
			continue
		}
		if j, dup := seen[dc]; dup {
			p.add(f, "%q: listed twice (also targets.datacenters[%d])", dc, j)
		}
		seen[dc] = i
	}
}

func validateDeploy(d *outpostv1.PlanDeploy, p *problems) {
	p.addErr(checkDeployPath("deploy.path", d.GetPath()))
	switch l := d.GetLayout(); l {
	case "", LayoutReleases, LayoutInplace:
	default:
		p.add("deploy.layout", "%q: must be %q or %q", l, LayoutReleases, LayoutInplace)
	}
	if k := d.GetKeepReleases(); k < 0 || k > MaxKeepReleases {
		p.add("deploy.keep_releases", "%d: must be from 1 to %d", k, MaxKeepReleases)
	}
}

// checkDeployPath accepts an absolute path, or one relative to the SSH
// user's home directory, that names a directory of its own and none that
// internal/deploypath refuses (a system or home directory, .ssh). What
// only the node knows, the user's home and symlinks, the gateway checks
// there.
func checkDeployPath(field, s string) error {
	fe := func(format string, args ...any) error {
		return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	switch {
	case s == "":
		return fe("required")
	case len(s) > MaxDeployPath:
		return fe("%d bytes long: at most %d", len(s), MaxDeployPath)
	case hasControl(s):
		return fe("%q: contains control characters", s)
	case strings.HasPrefix(s, "~"):
		return fe("%q: write paths in the home directory without ~ (relative paths start there)", s)
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == ".." {
			return fe("%q: must not contain '..'", s)
		}
	}
	c := path.Clean(s)
	switch {
	case c == "/":
		return fe("%q: must not be the root directory", s)
	case c == ".":
		return fe("%q: must name a directory, not the home directory itself", s)
	}
	if err := deploypath.Check(c); err != nil {
		return fe("%q: %w", s, err)
	}
	return nil
}

func validatePrecheck(pc *outpostv1.PlanPrecheck, p *problems) {
	if m := pc.GetMaxDiskUsedPercent(); m < 0 || m > 100 {
		p.add("precheck.max_disk_used_percent", "%d: must be from 1 to 100", m)
	}
	if s := pc.GetMinFreeBytes(); s != "" && s != MinFreeAuto {
		if _, err := ParseSize("precheck.min_free_bytes", s); err != nil {
			p.addErr(err)
		}
	}
}

func checkHook(field, cmd string, p *problems) {
	if cmd == "" {
		return
	}
	if strings.ContainsRune(cmd, 0) {
		p.add(field, "contains a NUL byte")
		return
	}
	if err := hookpolicy.Check(cmd); err != nil {
		p.errs = append(p.errs, &FieldError{Field: field, Err: err})
	}
}

func validateHealth(h *outpostv1.PlanHealth, p *problems) {
	if h == nil {
		return
	}
	var set []string
	if h.GetHttp() != nil {
		set = append(set, "http")
	}
	if h.GetTcp() != nil {
		set = append(set, "tcp")
	}
	if h.GetCommand() != "" {
		set = append(set, "command")
	}
	if len(set) > 1 {
		p.add("health", "set only one of http, tcp and command (found %s)", strings.Join(set, " and "))
	}
	if len(set) == 0 && (h.GetTimeout() != "" || h.GetInterval() != "") {
		// Most likely the check itself was forgotten or misplaced.
		p.add("health", "timeout and interval are set but no check: set one of http, tcp and command")
	}
	if hh := h.GetHttp(); hh != nil {
		checkPort("health.http.port", hh.GetPort(), p)
		if hp := hh.GetPath(); hp != "" && (!strings.HasPrefix(hp, "/") || strings.IndexFunc(hp, unicode.IsSpace) >= 0 || hasControl(hp)) {
			p.add("health.http.path", "%q: must start with / and contain no spaces", hp)
		}
		if s := hh.GetExpectStatus(); s != 0 && (s < 100 || s > 599) {
			p.add("health.http.expect_status", "%d: must be an HTTP status from 100 to 599", s)
		}
	}
	if t := h.GetTcp(); t != nil {
		checkPort("health.tcp.port", t.GetPort(), p)
	}
	checkHook("health.command", h.GetCommand(), p)
	timeout, interval := DefaultHealthTimeout, DefaultHealthInterval
	var bad bool
	if s := h.GetTimeout(); s != "" {
		d, err := ParseDuration("health.timeout", s)
		p.addErr(err)
		timeout, bad = d, bad || err != nil
	}
	if s := h.GetInterval(); s != "" {
		d, err := ParseDuration("health.interval", s)
		p.addErr(err)
		interval, bad = d, bad || err != nil
	}
	if !bad && interval > timeout {
		p.add("health.interval", "%s: must not be longer than health.timeout (%s)", interval, timeout)
	}
}

func checkPort(field string, port int32, p *problems) {
	if port < 1 || port > 65535 {
		if port == 0 {
			p.add(field, "required")
			return
		}
		p.add(field, "%d: must be from 1 to 65535", port)
	}
}

func checkPercent(field string, v int32, p *problems) {
	if v < 0 || v > 100 {
		p.add(field, "%d: must be from 0 to 100", v)
	}
}

func checkPause(field, s string, p *problems) {
	if s != "" && s != PauseManual {
		p.add(field, "%q: must be %q or empty", s, PauseManual)
	}
}

func validateStrategy(s *outpostv1.PlanStrategy, p *problems) {
	if s == nil {
		return
	}
	typ := s.GetType()
	switch typ {
	case "", StrategyRolling, StrategyTiered, StrategyCanary, StrategyBlueGreen:
	default:
		p.add("strategy.type", "%q: must be one of %s, %s, %s, %s", typ, StrategyRolling, StrategyTiered, StrategyCanary, StrategyBlueGreen)
		typ = "?" // checked; skip the type-specific rules below
	}
	if len(s.GetStages()) > 0 && (typ == StrategyRolling || typ == StrategyTiered) {
		p.add("strategy.type", "%q: cannot be combined with strategy.stages (remove type to use your stages, or stages to use the preset)", typ)
	}
	if b := s.GetBatch(); b != "" {
		if typ == StrategyTiered {
			p.add("strategy.batch", "%q: tiered sets the batch of each tier; use stages to choose your own", b)
		} else if _, err := ParseBatch("strategy.batch", b); err != nil {
			p.addErr(err)
		}
	}
	if s.MaxFailPercent != nil {
		checkPercent("strategy.max_fail_percent", s.GetMaxFailPercent(), p)
	}

	// Canary fields.
	onlyFor := func(field string, set bool, types ...string) {
		if !set || typ == "?" {
			return
		}
		for _, t := range types {
			if typ == t {
				return
			}
		}
		p.add(field, "only used by strategy type %s", strings.Join(quoteAll(types), " or "))
	}
	onlyFor("strategy.count", s.GetCount() != 0, StrategyCanary)
	onlyFor("strategy.percent", s.GetPercent() != 0, StrategyCanary)
	onlyFor("strategy.bake", s.GetBake() != "", StrategyCanary)
	onlyFor("strategy.pause", s.GetPause() != "", StrategyCanary, StrategyBlueGreen)
	onlyFor("strategy.switch_node", s.GetSwitchNode() != "", StrategyBlueGreen)
	onlyFor("strategy.switch_hook", s.GetSwitchHook() != "", StrategyBlueGreen)
	onlyFor("strategy.switch_back_hook", s.GetSwitchBackHook() != "", StrategyBlueGreen)
	onlyFor("strategy.analysis", s.GetAnalysis() != nil, StrategyCanary)
	validateAnalysis("strategy.analysis", s.GetAnalysis(), p)
	checkCountPercent("strategy", s.GetCount(), s.GetPercent(), p)
	if b := s.GetBake(); b != "" {
		_, err := ParseDuration("strategy.bake", b)
		p.addErr(err)
	}
	checkPause("strategy.pause", s.GetPause(), p)
	if typ == StrategyBlueGreen {
		if s.GetSwitchNode() == "" {
			p.add("strategy.switch_node", "required for blue_green: the node that runs the traffic switch")
		}
		if s.GetSwitchHook() == "" {
			p.add("strategy.switch_hook", "required for blue_green: the command that moves traffic to the new color")
		}
	}
	if n := s.GetSwitchNode(); n != "" {
		p.addErr(checkName("strategy.switch_node", n))
	}
	checkHook("strategy.switch_hook", s.GetSwitchHook(), p)
	checkHook("strategy.switch_back_hook", s.GetSwitchBackHook(), p)

	names := map[string]int{}
	for i, st := range s.GetStages() {
		f := index("strategy.stages", i)
		if err := checkName(join(f, "name"), st.GetName()); err != nil {
			p.addErr(err)
		} else if j, dup := names[st.GetName()]; dup {
			p.add(join(f, "name"), "%q: used twice (also strategy.stages[%d])", st.GetName(), j)
		} else {
			names[st.GetName()] = i
		}
		checkLabels(join(f, "selector"), st.GetSelector(), p)
		checkCountPercent(f, st.GetCount(), st.GetPercent(), p)
		if b := st.GetBatch(); b != "" {
			_, err := ParseBatch(join(f, "batch"), b)
			p.addErr(err)
		}
		if m := st.GetMaxParallel(); m < 0 {
			p.add(join(f, "max_parallel"), "%d: must not be negative", m)
		}
		if st.MaxFailPercent != nil {
			checkPercent(join(f, "max_fail_percent"), st.GetMaxFailPercent(), p)
		}
		if b := st.GetBake(); b != "" {
			_, err := ParseDuration(join(f, "bake"), b)
			p.addErr(err)
		}
		checkPause(join(f, "pause"), st.GetPause(), p)
		validateAnalysis(join(f, "analysis"), st.GetAnalysis(), p)
	}
}

func checkCountPercent(parent string, count, percent int32, p *problems) {
	if count < 0 {
		p.add(join(parent, "count"), "%d: must not be negative", count)
	}
	checkPercent(join(parent, "percent"), percent, p)
	if count != 0 && percent != 0 {
		p.add(join(parent, "percent"), "set count or percent, not both")
	}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// hasControl reports whether s contains a control character (NUL, newline, ...).
func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

// UnpackOf returns how the plan's artifact becomes a release directory:
// the plan's choice, or by its file name when unset (.tar, .tar.gz and .tgz
// are unpacked, anything else is placed as it is).
func UnpackOf(spec *outpostv1.PlanSpec) outpostv1.Unpack {
	switch spec.GetArtifact().GetUnpack() {
	case UnpackTar:
		return outpostv1.Unpack_UNPACK_TAR
	case UnpackNone:
		return outpostv1.Unpack_UNPACK_NONE
	}
	name := strings.ToLower(spec.GetArtifact().GetPath())
	for _, ext := range []string{".tar", ".tar.gz", ".tgz"} {
		if strings.HasSuffix(name, ext) {
			return outpostv1.Unpack_UNPACK_TAR
		}
	}
	return outpostv1.Unpack_UNPACK_NONE
}

// DeploySpecOf resolves the part of a plan a gateway needs for each node,
// with every default applied: layout releases, keep_releases 5,
// max_disk_used_percent 90, min_free_bytes auto (twice footprint),
// health timeout 30s and interval 2s, HTTP path "/" and status 200.
// footprint is what the artifact takes on a node: its size, or a tar's
// unpacked size when that is larger. max_unpacked_bytes is the plan's, 0
// when it has none (the control plane applies the environment's). The plan
// is validated first; an invalid plan returns Validate's error.
func DeploySpecOf(spec *outpostv1.PlanSpec, footprint int64) (*outpostv1.DeploySpec, error) {
	if err := Validate(spec); err != nil {
		return nil, err
	}
	if footprint < 0 {
		return nil, fmt.Errorf("artifact size %d is negative", footprint)
	}
	d := spec.GetDeploy()
	out := &outpostv1.DeploySpec{
		Path:               path.Clean(d.GetPath()),
		Layout:             outpostv1.Layout_LAYOUT_RELEASES,
		KeepReleases:       DefaultKeepReleases,
		MaxDiskUsedPercent: DefaultMaxDiskUsedPercent,
	}
	if d.GetLayout() == LayoutInplace {
		out.Layout = outpostv1.Layout_LAYOUT_INPLACE
	}
	if k := d.GetKeepReleases(); k > 0 {
		out.KeepReleases = k
	}
	pc := spec.GetPrecheck()
	if m := pc.GetMaxDiskUsedPercent(); m > 0 {
		out.MaxDiskUsedPercent = m
	}
	switch s := pc.GetMinFreeBytes(); s {
	case "", MinFreeAuto:
		if footprint > (1<<62)/2 {
			return nil, fmt.Errorf("artifact size %d is too large", footprint)
		}
		out.MinFreeBytes = 2 * footprint
	default:
		n, err := ParseSize("precheck.min_free_bytes", s)
		if err != nil {
			return nil, err
		}
		out.MinFreeBytes = n
	}
	if s := spec.GetArtifact().GetMaxUnpackedBytes(); s != "" {
		n, err := ParseSize("artifact.max_unpacked_bytes", s)
		if err != nil {
			return nil, err
		}
		out.MaxUnpackedBytes = n
	}
	if h := spec.GetHooks(); h != nil {
		out.Hooks = proto.CloneOf(h)
	}
	health, err := healthOf(spec.GetHealth())
	if err != nil {
		return nil, err
	}
	out.Health = health
	return out, nil
}

func healthOf(h *outpostv1.PlanHealth) (*outpostv1.HealthCheck, error) {
	out := &outpostv1.HealthCheck{}
	switch {
	case h.GetHttp() != nil:
		hh := proto.CloneOf(h.GetHttp())
		if hh.Path == "" {
			hh.Path = DefaultHealthPath
		}
		if hh.ExpectStatus == 0 {
			hh.ExpectStatus = DefaultExpectStatus
		}
		out.Check = &outpostv1.HealthCheck_Http{Http: hh}
	case h.GetTcp() != nil:
		out.Check = &outpostv1.HealthCheck_Tcp{Tcp: proto.CloneOf(h.GetTcp())}
	case h.GetCommand() != "":
		out.Check = &outpostv1.HealthCheck_Command{Command: h.GetCommand()}
	default:
		return nil, nil
	}
	timeout, interval := DefaultHealthTimeout, DefaultHealthInterval
	var err error
	if s := h.GetTimeout(); s != "" {
		if timeout, err = ParseDuration("health.timeout", s); err != nil {
			return nil, err
		}
	}
	if s := h.GetInterval(); s != "" {
		if interval, err = ParseDuration("health.interval", s); err != nil {
			return nil, err
		}
	}
	out.Timeout = durationpb.New(timeout)
	out.Interval = durationpb.New(interval)
	return out, nil
}
