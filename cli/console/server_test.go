package console

import (
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
)

// serve runs a console on a loopback port and returns its base URL.
func serve(t *testing.T) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{User: "alice", Role: "approver", ControlPlane: "127.0.0.1:1"}, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.Handler()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return s, "http://" + ln.Addr().String()
}

func noRedirect(jar http.CookieJar) *http.Client {
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, method, u string, hdr map[string]string, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestLoginTokenWorksOnce: the token gives one session cookie (HttpOnly,
// SameSite=Strict) and is refused afterwards, also to a second client.
func TestLoginTokenWorksOnce(t *testing.T) {
	s, base := serve(t)
	login := base + s.LoginPath()
	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	resp := do(t, c, "GET", login, nil, "")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first login: %s, want 303", resp.Status)
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == CookieName {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie %+v: want HttpOnly and SameSite=Strict", cookie)
	}
	if resp := do(t, c, "GET", base+"/api/me", nil, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("/api/me with the session: %s, want 200", resp.Status)
	}
	other, _ := cookiejar.New(nil)
	for name, cl := range map[string]*http.Client{"same browser": c, "another client": noRedirect(other)} {
		if resp := do(t, cl, "GET", login, nil, ""); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s reusing the token: %s, want 403", name, resp.Status)
		}
	}
	if resp := do(t, noRedirect(other), "GET", base+"/api/me", nil, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("/api/me without the cookie: %s, want 403", resp.Status)
	}
	for _, bad := range []string{"", "x", strings.Repeat("0", 64), s.Token() + "0"} {
		if resp := do(t, noRedirect(other), "GET", base+"/login?token="+url.QueryEscape(bad), nil, ""); resp.StatusCode != http.StatusForbidden {
			t.Errorf("login with token %q: %s, want 403", bad, resp.Status)
		}
	}
}

// TestRefusesForeignRequests: with a valid session, a request without the
// cookie, from another origin, with a rebound Host or not JSON is refused
// before anything reaches the control plane (there is none: a call would
// panic on the nil client).
func TestRefusesForeignRequests(t *testing.T) {
	s, base := serve(t)
	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	if resp := do(t, c, "GET", base+s.LoginPath(), nil, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	host := strings.TrimPrefix(base, "http://")
	post := base + "/api/rollouts/r-1/abort"
	cases := map[string]struct {
		client *http.Client
		method string
		hdr    map[string]string
		want   int
	}{
		"no cookie":          {noRedirect(nil), "POST", map[string]string{"Origin": base, "Content-Type": "application/json"}, 403},
		"foreign origin":     {c, "POST", map[string]string{"Origin": "http://evil.example", "Content-Type": "application/json"}, 403},
		"no origin":          {c, "POST", map[string]string{"Content-Type": "application/json"}, 403},
		"null origin":        {c, "POST", map[string]string{"Origin": "null", "Content-Type": "application/json"}, 403},
		"cross-site fetch":   {c, "POST", map[string]string{"Origin": base, "Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, 403},
		"form post":          {c, "POST", map[string]string{"Origin": base, "Content-Type": "application/x-www-form-urlencoded"}, 403},
		"rebound host":       {c, "GET", map[string]string{"Host": "evil.example:" + strings.Split(host, ":")[1]}, 421},
		"rebound host login": {noRedirect(nil), "GET", map[string]string{"Host": "evil.example"}, 421},
	}
	for name, tc := range cases {
		u := post
		if tc.method == "GET" {
			u = base + "/api/me"
		}
		if resp := do(t, tc.client, tc.method, u, tc.hdr, `{}`); resp.StatusCode != tc.want {
			t.Errorf("%s: %s, want %d", name, resp.Status, tc.want)
		}
	}
	// The same request from the page itself passes the checks (and fails
	// only for its body).
	if resp := do(t, c, "POST", post, map[string]string{"Origin": base, "Content-Type": "application/json"}, `{"reason": 1}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("same-origin JSON with a bad body: %s, want 400", resp.Status)
	}
	if resp := do(t, c, "POST", post, map[string]string{"Origin": base, "Content-Type": "application/json"}, `{"reason": "`+strings.Repeat("x", 2000)+`"}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("same-origin JSON with a huge reason: %s, want 400", resp.Status)
	}
}

func TestLineDiff(t *testing.T) {
	got := lineDiff([]string{"a", "b", "c"}, []string{"a", "x", "c", "d"})
	var ops []string
	for _, l := range got {
		ops = append(ops, l.Op+l.Text)
	}
	if want := " a -b +x  c +d"; strings.Join(ops, " ") != want {
		t.Errorf("lineDiff = %q, want %q", strings.Join(ops, " "), want)
	}
}
