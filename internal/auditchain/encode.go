package auditchain

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Domains of the canonical encoding, version 1: an entry's hash and a
// checkpoint's signature are over different domains, so neither can pass
// for the other.
const (
	EntryDomain      = "outpost.audit.entry.v1"
	CheckpointDomain = "outpost.audit.checkpoint.v1"
)

// HashSize is the length of an entry's hash (SHA-256).
const HashSize = sha256.Size

// ErrUnknownFields reports a message carrying fields this version of
// Outpost does not know (written by a newer one): its encoding cannot be
// computed here, which is not evidence of tampering.
var ErrUnknownFields = errors.New("fields this version of outpost does not know (upgrade outpost to verify it)")

// maxValue bounds one encoded value, far above what the audit log stores.
const maxValue = math.MaxUint32

// EncodeEntry returns e's canonical encoding: every set field but hash.
func EncodeEntry(e *outpostv1.AuditEntry) ([]byte, error) {
	return encode(EntryDomain, e, "hash")
}

// HashEntry returns the SHA-256 of e's canonical encoding.
func HashEntry(e *outpostv1.AuditEntry) ([]byte, error) {
	b, err := EncodeEntry(e)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(b)
	return h[:], nil
}

// EncodeCheckpoint returns c's canonical encoding: every set field but
// signature.
func EncodeCheckpoint(c *outpostv1.AuditCheckpoint) ([]byte, error) {
	return encode(CheckpointDomain, c, "signature")
}

type record struct {
	name  string
	value []byte
}

// encode writes domain, NUL, and m's set fields but skip as sorted
// length-prefixed records (see the package comment).
func encode(domain string, m proto.Message, skip protoreflect.Name) ([]byte, error) {
	r := m.ProtoReflect()
	if len(r.GetUnknown()) > 0 {
		return nil, ErrUnknownFields
	}
	var recs []record
	var err error
	r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() == skip {
			return true
		}
		name := string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() != protoreflect.StringKind || fd.MapValue().Kind() != protoreflect.StringKind {
				err = fmt.Errorf("field %s: only map<string, string> has a canonical encoding", name)
				return false
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				recs = append(recs, record{name + "." + k.String(), []byte(mv.String())})
				return true
			})
		case fd.IsList():
			err = fmt.Errorf("field %s: repeated fields have no canonical encoding", name)
		default:
			var b []byte
			b, err = scalar(fd, v)
			recs = append(recs, record{name, b})
		}
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].name < recs[j].name })
	var out bytes.Buffer
	out.WriteString(domain)
	out.WriteByte(0)
	for _, rec := range recs {
		if len(rec.name) > maxValue || len(rec.value) > maxValue {
			return nil, fmt.Errorf("field %.64s: too long to encode", rec.name)
		}
		out.Write(binary.BigEndian.AppendUint32(nil, uint32(len(rec.name))))
		out.WriteString(rec.name)
		out.Write(binary.BigEndian.AppendUint32(nil, uint32(len(rec.value))))
		out.Write(rec.value)
	}
	return out.Bytes(), nil
}

// scalar encodes one singular field's value.
func scalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return []byte(v.String()), nil
	case protoreflect.BytesKind:
		return v.Bytes(), nil
	case protoreflect.BoolKind:
		return []byte(strconv.FormatBool(v.Bool())), nil
	case protoreflect.EnumKind:
		return []byte(strconv.FormatInt(int64(v.Enum()), 10)), nil
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return []byte(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return []byte(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.MessageKind:
		switch fd.Message().FullName() {
		case "google.protobuf.Timestamp", "google.protobuf.Duration":
			m := v.Message()
			fields := m.Descriptor().Fields()
			secs := m.Get(fields.ByName("seconds")).Int()
			nanos := m.Get(fields.ByName("nanos")).Int()
			if nanos < 0 || nanos > 999_999_999 {
				// A negative Duration keeps its sign in seconds; its
				// nanos are negative too, which this form cannot say.
				return nil, fmt.Errorf("field %s: nanos %d out of range", fd.Name(), nanos)
			}
			return fmt.Appendf(nil, "%d.%09d", secs, nanos), nil
		}
	}
	return nil, fmt.Errorf("field %s: %v fields have no canonical encoding", fd.Name(), fd.Kind())
}
