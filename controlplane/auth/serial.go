package auth

// validSerial reports whether s is a serial as pki.SerialString writes
// it: lower-case hex without leading zeros, at most 40 digits (RFC 5280's
// 20 bytes). User input goes into keys only after this check.
func validSerial(s string) bool {
	if s == "" || len(s) > 40 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
