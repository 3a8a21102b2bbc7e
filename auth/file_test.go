package auth

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

func newTestFile(t *testing.T, path string, check time.Duration, clk *testutil.Clock, obs *observed) Source {
	t.Helper()
	o := newObserved()
	if obs != nil {
		o = *obs
	}
	s, err := newFile(path, check, o.logger, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func mustToken(t *testing.T, s Source) string {
	t.Helper()
	tok, err := s.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// kubeSecret lays out a mounted secret as the kubelet does:
// dir/token → ..data/token, ..data → ..<version>; an update writes a new
// version directory and swaps the ..data symlink by rename.
type kubeSecret struct {
	t       *testing.T
	dir     string
	version int
}

func (k *kubeSecret) write(content string) {
	k.version++
	ver := filepath.Join(k.dir, "..v"+string(rune('0'+k.version)))
	if err := os.Mkdir(ver, 0o700); err != nil {
		k.t.Fatal(err)
	}
	writeFile(k.t, filepath.Join(ver, "token"), content)
	tmp := filepath.Join(k.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ver), tmp); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(k.dir, "..data")); err != nil {
		k.t.Fatal(err)
	}
	if k.version == 1 {
		if err := os.Symlink(filepath.Join("..data", "token"), filepath.Join(k.dir, "token")); err != nil {
			k.t.Fatal(err)
		}
	}
}

func TestFileRotation(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, dir string) (path string, rotate func(content string))
		rotate []string
	}{
		{"rename over", func(t *testing.T, dir string) (string, func(string)) {
			path := filepath.Join(dir, "token")
			writeFile(t, path, "token-1\n")
			return path, func(c string) { replaceFile(t, path, c) }
		}, []string{"token-2\n", "token-3"}},
		{"kubernetes symlink swap", func(t *testing.T, dir string) (string, func(string)) {
			k := &kubeSecret{t: t, dir: dir}
			k.write("token-1\n")
			return filepath.Join(dir, "token"), k.write
		}, []string{"token-2\n", "token-3\r\n"}},
		{"rewritten in place", func(t *testing.T, dir string) (string, func(string)) {
			path := filepath.Join(dir, "token")
			writeFile(t, path, "token-1\n")
			return path, func(c string) { writeFile(t, path, c) }
		}, []string{"token-22\n", "token-333\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			path, rotate := tt.setup(t, t.TempDir())
			s := newTestFile(t, path, time.Second, clk, nil)
			prev := mustToken(t, s)
			if prev != "token-1" {
				t.Fatalf("initial token %q", prev)
			}
			for i, content := range tt.rotate {
				rotate(content)
				if got := mustToken(t, s); got != prev {
					t.Fatalf("rotation %d seen before the check interval: %q", i, got)
				}
				clk.Advance(time.Second)
				want := strings.TrimRight(content, "\r\n")
				if got := mustToken(t, s); got != want {
					t.Fatalf("rotation %d: got %q, want %q", i, got, want)
				}
				prev = want
			}
			if st := s.State(); st.State != StateOK || st.Fetches != int64(1+len(tt.rotate)) || st.Kind != KindFile ||
				st.RefreshedAt == nil || !st.RefreshedAt.Equal(clk.Now()) {
				t.Fatalf("state = %+v (refreshed at %v, want the last read at %v)", st, st.RefreshedAt, clk.Now())
			}
		})
	}
}

func TestFileKeepsLastGoodContent(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, "good-1")
	obs := newObserved()
	s := newTestFile(t, path, time.Second, clk, &obs)
	steps := []struct {
		name  string
		do    func()
		want  string
		state string
		err   string
	}{
		{"removed", func() { os.Remove(path) }, "good-1", StateFailing, "stat: no such file or directory"},
		{"empty", func() { writeFile(t, path, "\n") }, "good-1", StateFailing, "file is empty"},
		{"control characters", func() { writeFile(t, path, "a\x00b") }, "good-1", StateFailing, "control characters"},
		{"a directory", func() { os.Remove(path); os.Mkdir(path, 0o700) }, "good-1", StateFailing, "not a regular file"},
		{"restored", func() { os.Remove(path); writeFile(t, path, "good-2") }, "good-2", StateOK, ""},
	}
	for _, step := range steps {
		step.do()
		clk.Advance(time.Second)
		if got := mustToken(t, s); got != step.want {
			t.Fatalf("%s: token %q, want %q", step.name, got, step.want)
		}
		st := s.State()
		if st.State != step.state || !strings.Contains(st.LastError, step.err) || (step.err != "") != (st.FailingSince != nil) {
			t.Fatalf("%s: state %+v", step.name, st)
		}
	}
	if n := obs.logs.FilterMessage("token file unusable; still using its last good content").Len(); n != 4 {
		t.Fatalf("%d warnings:\n%s", n, obs.text())
	}
	if strings.Contains(obs.text(), "good-") {
		t.Fatalf("logs leak the token:\n%s", obs.text())
	}
}

func TestFileStartErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content *string
		want    string
	}{
		{"missing", nil, "no such file"},
		{"empty", ptr(""), "file is empty"},
		{"only a newline", ptr("\r\n"), "file is empty"},
		{"line break inside", ptr("abc\ndef\n"), "control characters"},
		{"too large", ptr(strings.Repeat("x", maxFileSize+1)), "larger than 64KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if tt.content != nil {
				writeFile(t, path, *tt.content)
			}
			s, err := File(path, 0, nil)
			if err == nil {
				s.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "abc") {
				t.Fatalf("error %q, want %q", err, tt.want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// TestFileInvalidateChecksAtOnce: a 401 may mean the file rotated since
// the last check; the next call looks without waiting for the interval.
func TestFileInvalidateChecksAtOnce(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, "old")
	s := newTestFile(t, path, time.Hour, clk, nil)
	replaceFile(t, path, "new")
	s.Invalidate("something else") // not the current token: nothing
	if got := mustToken(t, s); got != "old" {
		t.Fatalf("got %q", got)
	}
	s.Invalidate("old")
	if got := mustToken(t, s); got != "new" {
		t.Fatalf("got %q", got)
	}
}

// TestFileRealTimeRotation uses the wall clock: a rotation by rename is
// seen by steady traffic, without a reload, within the interval.
func TestFileRealTimeRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, "before")
	s, err := File(path, 10*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := testutil.Repeat(8, func() bool {
		if tok, err := s.Token(context.Background()); err != nil || tok != "before" && tok != "after" {
			t.Errorf("token %q, %v", tok, err)
			return false
		}
		return true
	})
	replaceFile(t, path, "after\n")
	testutil.Eventually(t, "the rotated token", func() bool { return mustToken(t, s) == "after" })
	stop()
}

func TestStatic(t *testing.T) {
	s := Static("abc")
	defer s.Close()
	s.Invalidate("abc")
	if tok, err := s.Token(context.Background()); tok != "abc" || err != nil {
		t.Fatalf("%q, %v", tok, err)
	}
	if st := s.State(); st != (State{Kind: KindStatic, State: StateOK}) {
		t.Fatalf("state = %+v", st)
	}
}

// TestFileTrimsSurroundingWhitespace: the file's content is the token, not
// what editors, `echo` or templating put around it — sent as is, a leading
// space made "Bearer  x". A line break inside is still refused: it would
// inject a header field.
func TestFileTrimsSurroundingWhitespace(t *testing.T) {
	tests := []struct {
		name, content, want, err string
	}{
		{"trailing newline", "tok-1\n", "tok-1", ""},
		{"leading spaces", "  tok-2\n", "tok-2", ""},
		{"spaces and tabs around", " \t tok-3 \t\r\n", "tok-3", ""},
		{"blank lines around", "\n\ntok-4\n\n", "tok-4", ""},
		{"inner space kept", " a b ", "a b", ""},
		{"only whitespace", " \t\r\n ", "", "file is empty"},
		{"line break inside", " tok\r\nX-Injected: 1\n", "", "control characters"},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("token-%d", i))
			writeFile(t, path, tt.content)
			s, err := File(path, 0, nil)
			if tt.err != "" {
				if err == nil {
					s.Close()
					t.Fatalf("content %q accepted", tt.content)
				}
				if !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %q, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("File(%q): %v", tt.content, err)
			}
			defer s.Close()
			if got := mustToken(t, s); got != tt.want {
				t.Fatalf("content %q: token %q, want %q", tt.content, got, tt.want)
			}
		})
	}
}
