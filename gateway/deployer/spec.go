package deployer

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/outposthq/outpost/internal/deploypath"
	"github.com/outposthq/outpost/internal/hookpolicy"
	"github.com/outposthq/outpost/internal/shell"
	"github.com/outposthq/outpost/internal/tarscan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Defaults applied by Spec.CheckAndSetDefaults.
const (
	DefaultKeepReleases       = 5
	DefaultMaxDiskUsedPercent = 90
	DefaultHealthTimeout      = 30 * time.Second
	DefaultHealthInterval     = 2 * time.Second
	DefaultHTTPPath           = "/"
	DefaultExpectStatus       = 200
)

// Spec says where and how a release is deployed on a node.
type Spec struct {
	// Path is the deploy directory: absolute, or relative to the login's
	// home ("app" or "~/app"), as SFTP sees it (ResolvePath). Required.
	Path string
	// KeepReleases is how many release directories prune keeps, including
	// the current one; zero means DefaultKeepReleases. The current and the
	// previous release are never pruned, whatever this says.
	KeepReleases int
	// Precheck bounds the deploy file system.
	Precheck Precheck
	// Hooks are shell commands run on the node; an empty hook is skipped.
	Hooks Hooks
	// Health says when the started release is healthy; the zero value
	// means healthy once the start hook returns.
	Health Health
	// Layout is how releases are laid out under Path; the zero value is
	// LayoutReleases (see inplace.go for LayoutInplace).
	Layout Layout
	// TarLimits bound what a tar artifact may unpack to; its zero fields
	// mean tarscan's defaults. It is checked on the gateway before
	// anything is sent to the node. AllowSetuid also lets the unpack keep
	// the archive's setuid, setgid and sticky bits, as GNU tar does when
	// it runs as root; otherwise it drops them and applies the umask.
	TarLimits tarscan.Limits
}

// Precheck refuses a node whose deploy file system is too full, before
// anything is uploaded.
type Precheck struct {
	// MaxDiskUsedPercent is the highest acceptable use of the file system,
	// 1..100; zero means DefaultMaxDiskUsedPercent.
	MaxDiskUsedPercent int
	// MinFreeBytes is the free space required before an upload; zero means
	// twice the artifact's size, or twice a tar's unpacked size when that
	// is larger; negative means no free-space check.
	MinFreeBytes int64
}

// Hooks are the plan's shell commands. before_install, after_install and
// start run in the new release directory; stop runs in the current release
// directory (the new one on a first deployment). During a rollback, stop
// runs in the new release and start in the previous one. Each runs through
// the login shell ($SHELL -c) with OUTPOST_RELEASE (the release whose
// directory it runs in), OUTPOST_DEPLOY_PATH and OUTPOST_ROLLOUT set, stdin
// from /dev/null, and output to P/.outpost/hook.log so that a daemon it
// leaves behind cannot hold the SSH session open; the end of that output is
// in the error when the hook fails.
type Hooks struct {
	BeforeInstall string
	Stop          string
	AfterInstall  string
	Start         string
}

// Health is the health check run after start. At most one of HTTP, TCP and
// Command may be set; none means no check.
type Health struct {
	// HTTP GETs http://<node host>:<port><path> from the gateway.
	HTTP *HTTPCheck
	// TCP connects to <node host>:<port> from the gateway.
	TCP *TCPCheck
	// Command runs on the node in the release directory; exit 0 is healthy.
	Command string
	// Timeout bounds the wait for a healthy answer; zero means
	// DefaultHealthTimeout.
	Timeout time.Duration
	// Interval is the pause between attempts; zero means
	// DefaultHealthInterval.
	Interval time.Duration
}

// HTTPCheck is healthy when GET returns ExpectStatus.
type HTTPCheck struct {
	// Port is 1..65535.
	Port int
	// Path is the request path; empty means DefaultHTTPPath.
	Path string
	// ExpectStatus is the healthy status code; zero means 200.
	ExpectStatus int
}

// TCPCheck is healthy when a TCP connection succeeds.
type TCPCheck struct {
	// Port is 1..65535.
	Port int
}

// enabled reports whether any health check is configured.
func (h Health) enabled() bool { return h.HTTP != nil || h.TCP != nil || h.Command != "" }

// CheckAndSetDefaults validates s and fills in its defaults. It touches
// neither the network nor the node.
func (s *Spec) CheckAndSetDefaults() error {
	// "~/app" is how people write a path in their home; SFTP and the
	// deployer take relative paths from the home already.
	if rest, ok := strings.CutPrefix(s.Path, "~/"); ok {
		s.Path = rest
	}
	if err := checkPath(s.Path); err != nil {
		return err
	}
	s.Path = path.Clean(s.Path)
	switch {
	case s.KeepReleases < 0 || s.KeepReleases > 1000:
		return fmt.Errorf("spec: keep_releases %d is outside 1..1000", s.KeepReleases)
	case s.KeepReleases == 0:
		s.KeepReleases = DefaultKeepReleases
	}
	switch p := &s.Precheck; {
	case p.MaxDiskUsedPercent < 0 || p.MaxDiskUsedPercent > 100:
		return fmt.Errorf("spec: max_disk_used_percent %d is outside 1..100", p.MaxDiskUsedPercent)
	case p.MaxDiskUsedPercent == 0:
		p.MaxDiskUsedPercent = DefaultMaxDiskUsedPercent
	}
	switch l := &s.TarLimits; {
	case l.MaxUnpackedBytes < 0:
		return fmt.Errorf("spec: max_unpacked_bytes %d is negative", l.MaxUnpackedBytes)
	case l.MaxUnpackedBytes > 1<<62:
		// Twice it is the free space to ask for.
		return fmt.Errorf("spec: max_unpacked_bytes %d is too large", l.MaxUnpackedBytes)
	case l.MaxRatio < 0:
		return fmt.Errorf("spec: max_unpacked_ratio %d is negative", l.MaxRatio)
	}
	if err := s.TarLimits.CheckAndSetDefaults(); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	for _, h := range []struct{ name, cmd string }{
		{"before_install", s.Hooks.BeforeInstall},
		{"stop", s.Hooks.Stop},
		{"after_install", s.Hooks.AfterInstall},
		{"start", s.Hooks.Start},
		{"health.command", s.Health.Command},
	} {
		if err := checkHook(h.cmd); err != nil {
			return fmt.Errorf("spec: hooks.%s: %w", h.name, err)
		}
	}
	return s.Health.checkAndSetDefaults()
}

func (h *Health) checkAndSetDefaults() error {
	n := 0
	if h.HTTP != nil {
		n++
		c := *h.HTTP // never write to the caller's struct
		if err := checkPort(c.Port); err != nil {
			return fmt.Errorf("spec: health.http: %w", err)
		}
		if c.Path == "" {
			c.Path = DefaultHTTPPath
		}
		if !strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, " \r\n\x00#") {
			return fmt.Errorf("spec: health.http.path %q must start with / and hold no spaces, control characters or fragment", c.Path)
		}
		switch {
		case c.ExpectStatus == 0:
			c.ExpectStatus = DefaultExpectStatus
		case c.ExpectStatus < 100 || c.ExpectStatus > 599:
			return fmt.Errorf("spec: health.http.expect_status %d is not an HTTP status", c.ExpectStatus)
		}
		h.HTTP = &c
	}
	if h.TCP != nil {
		n++
		if err := checkPort(h.TCP.Port); err != nil {
			return fmt.Errorf("spec: health.tcp: %w", err)
		}
		c := *h.TCP
		h.TCP = &c
	}
	if h.Command != "" {
		n++
	}
	if n > 1 {
		return errors.New("spec: health: set at most one of http, tcp and command")
	}
	if h.Timeout < 0 || h.Interval < 0 {
		return fmt.Errorf("spec: health: negative timeout %v or interval %v", h.Timeout, h.Interval)
	}
	if h.Timeout == 0 {
		h.Timeout = DefaultHealthTimeout
	}
	if h.Interval == 0 {
		h.Interval = DefaultHealthInterval
	}
	if h.Interval > h.Timeout {
		return fmt.Errorf("spec: health: interval %v is longer than timeout %v", h.Interval, h.Timeout)
	}
	return nil
}

func checkPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("port %d is outside 1..65535", p)
	}
	return nil
}

// checkPath accepts deploy paths a person can read back in an error and
// that no remote tool can misread (no control characters, no "..") and
// that internal/deploypath allows: not the root, a system or home
// directory, or in .ssh.
func checkPath(p string) error {
	if p == "" {
		return errors.New("spec: path is required")
	}
	if len(p) > deploypath.MaxLen {
		return fmt.Errorf("spec: path is %d bytes long, at most %d", len(p), deploypath.MaxLen)
	}
	if err := shell.CheckArg(p); err != nil {
		return fmt.Errorf("spec: path %q: %w", p, err)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("spec: path %q holds a control character", p)
		}
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("spec: path %q holds a .. component", p)
		}
	}
	if c := path.Clean(p); c == "/" || c == "." {
		return fmt.Errorf("spec: path %q is not a directory of its own", p)
	}
	if strings.HasPrefix(p, "~") {
		return fmt.Errorf("spec: path %q: only ~/ is understood, for the login's home", p)
	}
	// The plan was checked against the same table by the control plane;
	// the gateway does not take its word for it. The node checks again
	// with symlinks resolved (guard.go).
	if err := deploypath.Check(p); err != nil {
		return fmt.Errorf("spec: path %q: %w", p, err)
	}
	return nil
}

// checkHook refuses hook text that the deny list rejects or that no shell
// argument can carry.
func checkHook(cmd string) error {
	if err := shell.CheckArg(cmd); err != nil {
		return err
	}
	return hookpolicy.Check(cmd)
}

// SpecFromProto converts the control plane's resolved DeploySpec. Its
// min_free_bytes of 0 means no free-space check (the plan already turned
// "auto" into bytes), which is MinFreeBytes -1 here.
func SpecFromProto(p *outpostv1.DeploySpec) (Spec, error) {
	if p == nil {
		return Spec{}, errors.New("spec: no deploy spec")
	}
	layout := LayoutReleases
	switch p.GetLayout() {
	case outpostv1.Layout_LAYOUT_RELEASES, outpostv1.Layout_LAYOUT_UNSPECIFIED:
	case outpostv1.Layout_LAYOUT_INPLACE:
		layout = LayoutInplace
	default:
		return Spec{}, fmt.Errorf("spec: layout %v is not supported by this gateway", p.GetLayout())
	}
	s := Spec{
		Path:         p.GetPath(),
		KeepReleases: int(p.GetKeepReleases()),
		Precheck: Precheck{
			MaxDiskUsedPercent: int(p.GetMaxDiskUsedPercent()),
			MinFreeBytes:       p.GetMinFreeBytes(),
		},
		Layout: layout,
		TarLimits: tarscan.Limits{
			MaxUnpackedBytes: p.GetMaxUnpackedBytes(),
			MaxRatio:         p.GetMaxUnpackedRatio(),
			AllowSetuid:      p.GetAllowSetuid(),
		},
		Hooks: Hooks{
			BeforeInstall: p.GetHooks().GetBeforeInstall(),
			Stop:          p.GetHooks().GetStop(),
			AfterInstall:  p.GetHooks().GetAfterInstall(),
			Start:         p.GetHooks().GetStart(),
		},
	}
	if s.Precheck.MinFreeBytes == 0 {
		s.Precheck.MinFreeBytes = -1
	}
	if h := p.GetHealth(); h != nil {
		if c := h.GetHttp(); c != nil {
			s.Health.HTTP = &HTTPCheck{Port: int(c.GetPort()), Path: c.GetPath(), ExpectStatus: int(c.GetExpectStatus())}
		}
		if c := h.GetTcp(); c != nil {
			s.Health.TCP = &TCPCheck{Port: int(c.GetPort())}
		}
		s.Health.Command = h.GetCommand()
		s.Health.Timeout = h.GetTimeout().AsDuration()
		s.Health.Interval = h.GetInterval().AsDuration()
	}
	if err := s.CheckAndSetDefaults(); err != nil {
		return Spec{}, err
	}
	return s, nil
}
