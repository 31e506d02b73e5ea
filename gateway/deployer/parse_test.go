package deployer

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/internal/tarscan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestParseDF(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     diskFigures
		wantErr  bool
	}{
		{
			name: "gnu",
			in: "Filesystem     1024-blocks     Used Available Capacity Mounted on\n" +
				"/dev/sda1        102400000 50000000  52400000      49% /\n",
			want: diskFigures{usedPercent: 49, availableBytes: 52400000 * 1024, mount: "/"},
		},
		{
			name: "posixly correct 512 blocks",
			in: "Filesystem 512-blocks Used Available Capacity Mounted on\n" +
				"overlay 200 150 50 75% /var/lib/x\n",
			want: diskFigures{usedPercent: 75, availableBytes: 50 * 512, mount: "/var/lib/x"},
		},
		{
			name: "spaces in names",
			in: "Filesystem 1024-blocks Used Available Capacity Mounted on\n" +
				"//nas/share name 1000 900 100 90% /mnt/my share\n",
			want: diskFigures{usedPercent: 90, availableBytes: 100 * 1024, mount: "/mnt/my share"},
		},
		{name: "empty", in: "", wantErr: true},
		{name: "header only", in: "Filesystem 1024-blocks Used Available Capacity Mounted on\n", wantErr: true},
		{name: "garbage", in: "Filesystem 1024-blocks\nfoo bar baz\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDF(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseDF error %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("parseDF = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func tarBytes(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	rel := writeTar(t, t.TempDir()+"/a.tar", false, entries)
	b, err := os.ReadFile(rel.Path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestScanTar(t *testing.T) {
	reg := func(name string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: "x"}
	}
	dir := func(name string) tarEntry { return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir}} }
	sym := func(name, target string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
	}
	hard := func(name, target string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
	}
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		unsafe  string // expected UnsafeArtifactError entry; "" means accepted
	}{
		{"plain", []tarEntry{dir("./"), dir("bin/"), reg("bin/start"), reg("./VERSION")}, ""},
		{"inner dotdot", []tarEntry{reg("a/../b")}, "a/../b"},
		{"dotdot", []tarEntry{reg("../x")}, "../x"},
		{"absolute", []tarEntry{reg("/etc/passwd")}, "/etc/passwd"},
		{"symlink inside", []tarEntry{dir("lib/"), reg("lib/libfoo.so.1.2"), sym("lib/libfoo.so.1", "libfoo.so.1.2"), sym("lib/libfoo.so", "libfoo.so.1")}, ""},
		{"symlink up but inside", []tarEntry{dir("a/"), sym("a/up", "../VERSION")}, ""},
		{"symlink escape", []tarEntry{dir("a/"), sym("a/up", "../../x")}, "a/up"},
		{"symlink absolute", []tarEntry{sym("etc", "/etc")}, "etc"},
		{"write through symlink", []tarEntry{dir("d/"), sym("l", "d"), reg("l/x")}, "l/x"},
		{"symlink through symlink", []tarEntry{dir("d/"), sym("l", "d"), sym("m", "l/../..")}, "m"},
		{"hardlink inside", []tarEntry{reg("a"), hard("b", "a")}, ""},
		{"hardlink escape", []tarEntry{hard("b", "../a")}, "b"},
		{"hardlink absolute", []tarEntry{hard("b", "/etc/shadow")}, "b"},
		{"hardlink through symlink", []tarEntry{dir("d/"), sym("l", "d"), hard("b", "l/x")}, "b"},
		{"char device", []tarEntry{{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar}}}, "null"},
		{"fifo", []tarEntry{{hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo}}}, "p"},
		{"reserved name", []tarEntry{reg("./" + artifactFile)}, "./" + artifactFile},
		{"reserved digest", []tarEntry{reg(digestFile)}, digestFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tarBytes(t, tc.entries)
			_, err := scanTar(bytes.NewReader(b), int64(len(b)), tarscan.Limits{})
			var ue *UnsafeArtifactError
			switch {
			case tc.unsafe == "" && err != nil:
				t.Errorf("scanTar = %v, want accepted", err)
			case tc.unsafe != "" && (!errors.As(err, &ue) || ue.Entry != tc.unsafe):
				t.Errorf("scanTar = %v, want an *UnsafeArtifactError for %q", err, tc.unsafe)
			}
		})
	}
	t.Run("not a tar", func(t *testing.T) {
		if _, err := scanTar(strings.NewReader(strings.Repeat("hello", 200)), 1000, tarscan.Limits{}); err == nil {
			t.Error("scanTar accepted text")
		}
	})
	t.Run("gzip detected", func(t *testing.T) {
		rel := writeTar(t, t.TempDir()+"/a.tgz", true, []tarEntry{reg("a")})
		b, _ := os.ReadFile(rel.Path)
		info, err := scanTar(bytes.NewReader(b), int64(len(b)), tarscan.Limits{})
		if err != nil || !info.gzip {
			t.Errorf("scanTar(gzip) = %+v, %v", info, err)
		}
	})
}

func TestParseMarkersAndClock(t *testing.T) {
	out := []byte("junk\n@5 start 100.00 \n@5 note 100.01 abc\n@5 ok 100.50 \n@7 skip - \n@16 start 101,25 stop\nnot @ marker\n")
	got := parseMarkers(out)
	want := []marker{
		{step: 5, kind: "start", at: 100, hasAt: true},
		{step: 5, kind: "note", at: 100.01, hasAt: true, label: "abc"},
		{step: 5, kind: "ok", at: 100.5, hasAt: true},
		{step: 7, kind: "skip"},
		{step: 16, kind: "start", at: 101.25, hasAt: true, label: "stop"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(marker{})); diff != "" {
		t.Fatalf("parseMarkers (-want +got):\n%s", diff)
	}
	sent := time.Unix(1000, 0)
	returned := sent.Add(2 * time.Second)
	c := newNodeClock(sent, returned, got)
	// The last timed marker (101.25) is at returned.
	if at := c.at(got[4]); !at.Equal(returned) {
		t.Errorf("last marker at %v, want %v", at, returned)
	}
	if at := c.at(got[0]); !at.Equal(returned.Add(-1250 * time.Millisecond)) {
		t.Errorf("first marker at %v, want 1.25s before return", at)
	}
	if at := c.at(got[3]); !at.Equal(returned) {
		t.Errorf("untimed marker at %v, want the return time", at)
	}
	far := marker{at: 50, hasAt: true}
	if at := c.at(far); !at.Equal(sent) {
		t.Errorf("marker before the send at %v, want clamped to %v", at, sent)
	}
}

func TestStderrOf(t *testing.T) {
	stderr := []byte("early warning\n@5\n@6\ntar: oops\n@16 stop\nstop failed\n@16 switch\n@16 start\nstart failed\n")
	for _, tc := range []struct {
		step  outpostv1.Step
		label string
		want  string
	}{
		{5, "", ""},
		{6, "", "tar: oops"},
		{16, "stop", "stop failed"},
		{16, "start", "start failed"},
		{9, "", "early warning"}, // never started: everything up to the first tag
	} {
		if got := stderrOf(stderr, tc.step, tc.label); got != tc.want {
			t.Errorf("stderrOf(%v, %q) = %q, want %q", tc.step, tc.label, got, tc.want)
		}
	}
}

func TestPruneSet(t *testing.T) {
	for _, tc := range []struct {
		name     string
		releases []string
		newID    string
		previous string
		keep     int
		want     []string
	}{
		{"keep 2", []string{"r3", "r2", "r1"}, "r4", "r3", 2, []string{"r2", "r1"}},
		{"keep 1 keeps previous", []string{"r3", "r2", "r1"}, "r4", "r3", 1, []string{"r2", "r1"}},
		{"re-activation keeps previous out of order", []string{"r4", "r3", "r2", "r1"}, "r1", "r4", 1, []string{"r3", "r2"}},
		{"nothing", []string{"r1"}, "r2", "r1", 5, nil},
		{"first", nil, "r1", "", 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pruneSet(tc.releases, tc.newID, tc.previous, tc.keep)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("pruneSet (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseFacts(t *testing.T) {
	stdout := "@locked\n@df\nFilesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 10 5 5 50% /\n" +
		"@current\nlink releases/r2\ndir\n@releases\nr2/.outpost-sha256\nbad id!/.outpost-sha256\nr1/.outpost-sha256\n" +
		"@present\nabc\n\n"
	f, err := parseFacts(splitSections([]byte(stdout)))
	if err != nil {
		t.Fatal(err)
	}
	want := nodeFacts{
		df:            "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 10 5 5 50% /\n",
		current:       "releases/r2",
		currentIsDir:  true,
		present:       true,
		presentDigest: "abc",
		releases:      []string{"r2", "r1"},
	}
	if diff := cmp.Diff(want, f, cmp.AllowUnexported(nodeFacts{})); diff != "" {
		t.Errorf("parseFacts (-want +got):\n%s", diff)
	}
	if _, err := parseFacts(splitSections([]byte("@current\nlink a\nb\n"))); err == nil {
		t.Error("parseFacts accepted a symlink target with a newline")
	}
}

func TestReleaseOf(t *testing.T) {
	for in, want := range map[string]string{
		"releases/r1":           "r1",
		"/srv/app/releases/r-2": "r-2",
		"releases/r1/":          "r1",
		"/opt/app-1.0":          "",
		"releases/../x":         "",
		"":                      "",
	} {
		if got := releaseOf(in); got != want {
			t.Errorf("releaseOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSpecDefaults(t *testing.T) {
	s := Spec{Path: "/srv/app/", Health: Health{HTTP: &HTTPCheck{Port: 8080}}}
	if err := s.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	want := Spec{
		Path: "/srv/app", KeepReleases: DefaultKeepReleases,
		Precheck: Precheck{MaxDiskUsedPercent: DefaultMaxDiskUsedPercent},
		Health: Health{
			HTTP:    &HTTPCheck{Port: 8080, Path: "/", ExpectStatus: 200},
			Timeout: DefaultHealthTimeout, Interval: DefaultHealthInterval,
		},
		TarLimits: tarscan.Limits{
			MaxUnpackedBytes: tarscan.DefaultMaxUnpackedBytes, MaxRatio: tarscan.DefaultMaxRatio,
			RatioFloor: tarscan.DefaultRatioFloor, MaxEntries: tarscan.DefaultMaxEntries,
		},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestSpecPaths(t *testing.T) {
	for in, want := range map[string]string{
		"/srv/app":     "/srv/app",
		"/srv//app/./": "/srv/app",
		"app":          "app",
		"~/app":        "app",
		"./app":        "app",
		"":             "",
		"/":            "",
		"~":            "",
		"~/":           "",
		"/srv/../etc":  "",
		"/srv/a\nb":    "",
		"/srv/a\x00b":  "",
		"/etc/app":     "",
		"/home/deploy": "",
		"/usr/local":   "",
		"apps/.ssh":    "",
	} {
		s := Spec{Path: in}
		err := s.CheckAndSetDefaults()
		switch {
		case want == "" && err == nil:
			t.Errorf("Spec{Path: %q} accepted as %q", in, s.Path)
		case want != "" && (err != nil || s.Path != want):
			t.Errorf("Spec{Path: %q} = %q, %v; want %q", in, s.Path, err, want)
		}
	}
	// Up to PATH_MAX bytes.
	long := "/srv/" + strings.Repeat("a", 4091)
	if s := (Spec{Path: long}); s.CheckAndSetDefaults() != nil {
		t.Errorf("a %d-byte path refused", len(long))
	}
	if s := (Spec{Path: long + "a"}); s.CheckAndSetDefaults() == nil {
		t.Errorf("a %d-byte path accepted", len(long)+1)
	}
}

func TestSpecFromProto(t *testing.T) {
	p := &outpostv1.DeploySpec{
		Path: "apps/billing", Layout: outpostv1.Layout_LAYOUT_RELEASES, KeepReleases: 3,
		MaxDiskUsedPercent: 80, MinFreeBytes: 0,
		MaxUnpackedBytes: 1 << 30, MaxUnpackedRatio: 50, AllowSetuid: true,
		Hooks: &outpostv1.Hooks{Stop: "systemctl stop x", Start: "systemctl start x"},
		Health: &outpostv1.HealthCheck{
			Check:   &outpostv1.HealthCheck_Tcp{Tcp: &outpostv1.TcpHealthCheck{Port: 9000}},
			Timeout: durationpb.New(10 * time.Second), Interval: durationpb.New(time.Second),
		},
	}
	got, err := SpecFromProto(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{
		Path: "apps/billing", KeepReleases: 3,
		Precheck: Precheck{MaxDiskUsedPercent: 80, MinFreeBytes: -1},
		Hooks:    Hooks{Stop: "systemctl stop x", Start: "systemctl start x"},
		Health:   Health{TCP: &TCPCheck{Port: 9000}, Timeout: 10 * time.Second, Interval: time.Second},
		TarLimits: tarscan.Limits{
			MaxUnpackedBytes: 1 << 30, MaxRatio: 50, AllowSetuid: true,
			RatioFloor: tarscan.DefaultRatioFloor, MaxEntries: tarscan.DefaultMaxEntries,
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SpecFromProto (-want +got):\n%s", diff)
	}
	// Zero limits are an older control plane's: the gateway's defaults.
	p.MaxUnpackedBytes, p.MaxUnpackedRatio, p.AllowSetuid = 0, 0, false
	if got, err := SpecFromProto(p); err != nil || got.TarLimits.MaxUnpackedBytes != tarscan.DefaultMaxUnpackedBytes ||
		got.TarLimits.MaxRatio != tarscan.DefaultMaxRatio || got.TarLimits.AllowSetuid {
		t.Errorf("SpecFromProto(no limits) = %+v, %v; want the defaults", got.TarLimits, err)
	}
	for _, bad := range []*outpostv1.DeploySpec{
		{Path: "app", MaxUnpackedBytes: -1},
		{Path: "app", MaxUnpackedRatio: -5},
	} {
		if _, err := SpecFromProto(bad); err == nil || !strings.Contains(err.Error(), "negative") {
			t.Errorf("SpecFromProto(%v) = %v, want a negative-limit error", bad, err)
		}
	}
	p.Layout = outpostv1.Layout_LAYOUT_INPLACE
	if got, err := SpecFromProto(p); err != nil || got.Layout != LayoutInplace {
		t.Errorf("SpecFromProto(inplace) = layout %v, %v; want LayoutInplace", got.Layout, err)
	}
	p.Layout = outpostv1.Layout(99)
	if _, err := SpecFromProto(p); err == nil {
		t.Error("SpecFromProto accepted an unknown layout")
	}
}

func TestErrorMessages(t *testing.T) {
	at := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&LockedError{Path: "/srv/a/.outpost/lock", Holder: LockInfo{Owner: "gw-1", Rollout: "ro-9", Release: "r3", Epoch: 2, Time: at}},
			"node is locked by gw-1 for rollout ro-9 (release r3, epoch 2) since 2026-11-01T10:00:00Z"},
		{&LockedError{Path: "/srv/a/.outpost/lock", Holder: LockInfo{Owner: "gw-1", Rollout: "ro-9", Time: at}, Stale: true, Age: 2 * time.Hour},
			"node is locked by gw-1 for rollout ro-9 (release , epoch 0) since 2026-11-01T10:00:00Z; the lock is stale (2h0m0s old): if that deployment is gone, remove /srv/a/.outpost/lock by hand"},
		{&PrecheckError{Path: "/srv/a", UsedPercent: 95, MaxUsedPercent: 90, AvailableBytes: 3 << 30, MinFreeBytes: 1 << 20},
			"disk of /srv/a is 95% used, above the 90% limit (3.0 GiB free)"},
		{&PrecheckError{Path: "/srv/a", UsedPercent: 50, MaxUsedPercent: 90, AvailableBytes: 1 << 20, MinFreeBytes: 3 << 20},
			"disk of /srv/a has 1.0 MiB free, below the 3.0 MiB needed (50% used)"},
		{&VerifyError{Want: "aa", Node: "bb", Sent: "aa"}, "sha256 on the node is bb, the release says aa: corrupted in transit or on the node (sent aa)"},
		{&VerifyError{Want: "aa", Node: "bb", Sent: "bb"}, "sha256 on the node is bb, the release says aa: the gateway's artifact file does not match the release"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%T.Error() =\n  %q\nwant\n  %q", tc.err, got, tc.want)
		}
	}
}
