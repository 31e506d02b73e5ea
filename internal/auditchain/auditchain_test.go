package auditchain_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/internal/auditchain"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

var t0 = time.Date(2026, 3, 1, 9, 30, 0, 120_000_000, time.UTC)

// TestEncodingIsPinned pins version 1 of the canonical encoding byte for
// byte: a change of the protobuf library, of field order or of Go's map
// order must not change any entry's hash.
func TestEncodingIsPinned(t *testing.T) {
	e := &outpostv1.AuditEntry{
		Time: timestamppb.New(t0), Sequence: 7, Actor: "alice",
		ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_USER, Role: outpostv1.Role_ROLE_ADMIN,
		Action: "/outpost.v1.ControlPlaneService/PauseRollout", RolloutId: "r-1",
		Details:      map[string]string{"z": "last", "a": "first"},
		PreviousHash: []byte{0xab, 0xcd},
		Hash:         []byte("ignored"),
	}
	got, err := auditchain.EncodeEntry(e)
	if err != nil {
		t.Fatal(err)
	}
	want := "outpost.audit.entry.v1\x00" +
		rec("action", "/outpost.v1.ControlPlaneService/PauseRollout") +
		rec("actor", "alice") +
		rec("actor_kind", "1") +
		rec("details.a", "first") +
		rec("details.z", "last") +
		rec("previous_hash", "\xab\xcd") +
		rec("role", "4") +
		rec("rollout_id", "r-1") +
		rec("sequence", "7") +
		rec("time", "1772357400.120000000")
	if string(got) != want {
		t.Errorf("EncodeEntry =\n%q\nwant\n%q", got, want)
	}
	h, err := auditchain.HashEntry(e)
	if err != nil {
		t.Fatal(err)
	}
	const wantHash = "b606346c8b2ccdace69a2cf4047216bd7d9ff9f6bcc39deeb2c436f36ad75768"
	if hex.EncodeToString(h) != wantHash {
		t.Errorf("HashEntry = %x, want %s", h, wantHash)
	}
}

func rec(name, value string) string {
	l := func(s string) string {
		n := len(s)
		return string([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	}
	return l(name) + name + l(value) + value
}

// TestEveryFieldIsEncoded sets each field of AuditEntry in turn: each
// changes the encoding, except hash. A field of a kind the encoding does
// not define fails here first.
func TestEveryFieldIsEncoded(t *testing.T) {
	base, err := auditchain.EncodeEntry(&outpostv1.AuditEntry{})
	if err != nil {
		t.Fatal(err)
	}
	fields := (&outpostv1.AuditEntry{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		e := &outpostv1.AuditEntry{}
		m := e.ProtoReflect()
		switch {
		case fd.IsMap():
			m.Mutable(fd).Map().Set(protoreflect.ValueOfString("k").MapKey(), protoreflect.ValueOfString("v"))
		case fd.Kind() == protoreflect.MessageKind:
			m.Set(fd, protoreflect.ValueOfMessage(timestamppb.New(t0).ProtoReflect()))
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("x"))
		case fd.Kind() == protoreflect.BytesKind:
			m.Set(fd, protoreflect.ValueOfBytes([]byte{1}))
		case fd.Kind() == protoreflect.EnumKind:
			m.Set(fd, protoreflect.ValueOfEnum(1))
		case fd.Kind() == protoreflect.Int64Kind:
			m.Set(fd, protoreflect.ValueOfInt64(1))
		default:
			t.Fatalf("field %s: kind %v: add it to this test and to the encoding's documentation", fd.Name(), fd.Kind())
		}
		got, err := auditchain.EncodeEntry(e)
		if err != nil {
			t.Fatalf("field %s: %v", fd.Name(), err)
		}
		if changed := string(got) != string(base); changed != (fd.Name() != "hash") {
			t.Errorf("setting %s changed the encoding: %v", fd.Name(), changed)
		}
	}
}

func TestUnknownFieldsAreNotTampering(t *testing.T) {
	e := &outpostv1.AuditEntry{Sequence: 1}
	e.ProtoReflect().SetUnknown(protoreflect.RawFields{0xf8, 0x7f, 0x01}) // field 2047, varint 1
	if _, err := auditchain.EncodeEntry(e); !errors.Is(err, auditchain.ErrUnknownFields) {
		t.Errorf("EncodeEntry with unknown fields = %v, want ErrUnknownFields", err)
	}
}

// chain makes n linked entries from sequence first, after prev.
func chain(t *testing.T, first int64, n int, prev []byte) []*outpostv1.AuditEntry {
	t.Helper()
	var out []*outpostv1.AuditEntry
	for i := range n {
		e := &outpostv1.AuditEntry{Sequence: first + int64(i), Time: timestamppb.New(t0.Add(time.Duration(i) * time.Second)),
			Action: "a", Message: "m" + string(rune('a'+i%26)), PreviousHash: prev}
		h, err := auditchain.HashEntry(e)
		if err != nil {
			t.Fatal(err)
		}
		e.Hash, prev = h, h
		out = append(out, e)
	}
	return out
}

func checkpoint(t *testing.T, key *ecdsa.PrivateKey, e *outpostv1.AuditEntry, reason outpostv1.AuditCheckpointReason) *outpostv1.AuditCheckpoint {
	t.Helper()
	cp := &outpostv1.AuditCheckpoint{Sequence: e.GetSequence(), EntryHash: e.GetHash(), EntryTime: e.GetTime(), Time: timestamppb.New(t0), Reason: reason}
	if err := auditchain.Sign(cp, key); err != nil {
		t.Fatal(err)
	}
	return cp
}

// walk verifies entries and returns the first break ("" when none).
func walk(t *testing.T, key any, cps []*outpostv1.AuditCheckpoint, window bool, entries []*outpostv1.AuditEntry) string {
	t.Helper()
	v, err := auditchain.NewVerifier(auditchain.Options{Key: key, Window: window}, cps)
	if err != nil {
		return err.Error()
	}
	for _, e := range entries {
		if err := v.Add(e); err != nil {
			return err.Error()
		}
	}
	if _, err := v.Finish(); err != nil {
		return err.Error()
	}
	return ""
}

func TestVerifier(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public()
	periodic := outpostv1.AuditCheckpointReason_AUDIT_CHECKPOINT_REASON_PERIODIC
	prune := outpostv1.AuditCheckpointReason_AUDIT_CHECKPOINT_REASON_PRUNE
	log := chain(t, 1, 10, nil)
	cp8 := checkpoint(t, key, log[7], periodic)
	clone := func() []*outpostv1.AuditEntry {
		out := make([]*outpostv1.AuditEntry, len(log))
		for i, e := range log {
			out[i] = proto.CloneOf(e)
		}
		return out
	}
	otherKey, _, err := ed25519.GenerateKey(rand.Reader) // the public half
	if err != nil {
		t.Fatal(err)
	}
	forged := proto.CloneOf(cp8)
	forged.EntryHash = []byte("x")

	for _, tc := range []struct {
		name    string
		entries func() []*outpostv1.AuditEntry
		cps     []*outpostv1.AuditCheckpoint
		window  bool
		key     any
		want    string // substring of the break; "" for none
	}{
		{name: "Intact", entries: clone, cps: []*outpostv1.AuditCheckpoint{cp8}},
		{name: "Edited", entries: func() []*outpostv1.AuditEntry {
			l := clone()
			l[4].Message = "nothing happened"
			return l
		}, want: "entry 5 (2026-03-01T09:30:04.12Z): edited"},
		{name: "Removed", entries: func() []*outpostv1.AuditEntry {
			l := clone()
			return append(l[:4], l[5:]...)
		}, want: "entry 6 (2026-03-01T09:30:05.12Z): entry 5 before it was removed"},
		{name: "RemovedSeveral", entries: func() []*outpostv1.AuditEntry {
			l := clone()
			return append(l[:2], l[5:]...)
		}, want: "entries 3 to 5 before it were removed"},
		{name: "Reordered", entries: func() []*outpostv1.AuditEntry {
			l := clone()
			l[4], l[5] = l[5], l[4]
			return l
		}, want: "entry 6 (2026-03-01T09:30:05.12Z): out of order: it comes before entry 5"},
		{name: "Renumbered", entries: func() []*outpostv1.AuditEntry {
			// Entry 5 removed and the rest renumbered and rehashed: the
			// links hold, the checkpoint does not.
			l := clone()
			rest := chain(t, 5, 5, l[3].GetHash())
			return append(l[:4], rest...)
		}, cps: []*outpostv1.AuditCheckpoint{cp8}, want: "entry 8"},
		{name: "TailRemoved", entries: func() []*outpostv1.AuditEntry { return clone()[:6] },
			cps: []*outpostv1.AuditCheckpoint{cp8}, want: "removed: the log ends at entry 6 but a checkpoint signs entry 8"},
		{name: "HeadRemovedWithoutPrune", entries: func() []*outpostv1.AuditEntry { return clone()[3:] },
			want: "entry 4 (2026-03-01T09:30:03.12Z): entries before it were removed"},
		{name: "HeadRemovedPeriodicCheckpointIsNoPrune", entries: func() []*outpostv1.AuditEntry { return clone()[8:] },
			cps: []*outpostv1.AuditCheckpoint{cp8}, want: "entry 9"},
		{name: "Pruned", entries: func() []*outpostv1.AuditEntry { return clone()[3:] },
			cps: []*outpostv1.AuditCheckpoint{checkpoint(t, key, log[2], prune), cp8}},
		{name: "PrunedThenFirstKeptEdited", entries: func() []*outpostv1.AuditEntry {
			l := clone()[3:]
			l[0].PreviousHash = []byte("other")
			h, _ := auditchain.HashEntry(l[0])
			l[0].Hash = h
			return l
		}, cps: []*outpostv1.AuditCheckpoint{checkpoint(t, key, log[2], prune)}, want: "entry 4 (2026-03-01T09:30:03.12Z): does not link to the signed checkpoint"},
		{name: "Window", entries: func() []*outpostv1.AuditEntry { return clone()[5:] }, window: true, cps: []*outpostv1.AuditCheckpoint{cp8}},
		{name: "ForgedCheckpoint", entries: clone, cps: []*outpostv1.AuditCheckpoint{forged}, want: "checkpoint of entry 8: signature does not verify"},
		{name: "OtherKey", entries: clone, cps: []*outpostv1.AuditCheckpoint{cp8}, key: otherKey, want: "not the trusted key"},
		{name: "ChainFieldsStripped", entries: func() []*outpostv1.AuditEntry {
			l := clone()
			l[6].Hash, l[6].PreviousHash = nil, nil
			return l
		}, want: "entry 7 (2026-03-01T09:30:06.12Z): has no hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := tc.key
			if k == nil {
				k = pub
			}
			got := walk(t, k, tc.cps, tc.window, tc.entries())
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("verify = %q, want %q", got, tc.want)
			}
		})
	}
}
