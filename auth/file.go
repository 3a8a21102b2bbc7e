package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DefaultFileCheck is how often a token or secret file is looked at when
// the caller gives no interval: a stat a second per service is nothing,
// and Kubernetes takes far longer than that to propagate a secret update.
const DefaultFileCheck = time.Second

// maxFileSize bounds what is read from a credential file, so that a wrong
// path (a log file, a device) cannot make every check read megabytes.
const maxFileSize = 64 << 10

// File returns a Source that serves the content of path (surrounding
// spaces, tabs and line breaks trimmed) and re-reads it when it changes,
// without a config reload, so that mounted secrets rotate.
//
// Changes are detected on the request path, not by a goroutine: Token costs
// one atomic load, and at most once per check interval one caller stats the
// path (following symlinks, as a Kubernetes secret update swaps a symlink)
// and compares mtime, size and inode; only then is the file read. Other
// callers keep getting the current token meanwhile, never waiting. This
// way an idle service costs nothing, no goroutine outlives a config (Close
// has nothing to stop), and a service with traffic sees a rotation within
// one interval. Invalidate (the upstream answered 401) makes the next Token
// call check at once, since the file may have rotated in between.
//
// If the file becomes unreadable, empty or invalid later, the last good
// token keeps being served and State reports "failing". It is an error if
// the file is unreadable or empty at start.
func File(path string, check time.Duration, logger *zap.Logger) (Source, error) {
	return newFile(path, check, logger, time.Now)
}

func newFile(path string, check time.Duration, logger *zap.Logger, now clock) (Source, error) {
	v, err := newFileValue(path, "token file", check, logger, now)
	if err != nil {
		return nil, err
	}
	return &fileSource{v: v}, nil
}

type fileSource struct {
	v      *fileValue
	closed atomic.Bool
}

func (s *fileSource) Token(context.Context) (string, error) {
	if s.closed.Load() {
		return s.v.current(), nil
	}
	return s.v.value(), nil
}

func (s *fileSource) Invalidate(token string) {
	if token != "" && token == s.v.current() {
		s.v.nextCheck.Store(0)
	}
}

func (s *fileSource) Close() { s.closed.Store(true) }

func (s *fileSource) State() State { return s.v.state() }

// fileValue is a file's trimmed content, re-read when the file changes;
// the token file source and the OAuth2 client_secret_file both use it.
type fileValue struct {
	path   string
	what   string // "token file", "client secret file": for messages
	check  time.Duration
	now    clock
	logger *zap.Logger

	cur       atomic.Pointer[string]
	nextCheck atomic.Int64 // UnixNano by now(); 0: check on next use

	mu           sync.Mutex // serializes checks; guards the fields below
	stamp        fileStamp
	reads        int64
	readAt       time.Time // the last successful read
	failures     int64
	failingSince time.Time
	lastErr      string
}

// fileStamp is what tells a changed file from the one last read.
type fileStamp struct {
	mtime    int64
	size     int64
	dev, ino uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	dev, ino := fileID(fi)
	return fileStamp{mtime: fi.ModTime().UnixNano(), size: fi.Size(), dev: dev, ino: ino}
}

func newFileValue(path, what string, check time.Duration, logger *zap.Logger, now clock) (*fileValue, error) {
	if path == "" {
		return nil, fmt.Errorf("%s: no path given", what)
	}
	if check <= 0 {
		check = DefaultFileCheck
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	f := &fileValue{path: path, what: what, check: check, now: now,
		logger: logger.With(zap.String("file", path))}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.load(); err != nil {
		// the path is configuration, not a secret: name it
		return nil, fmt.Errorf("%s %q: %s", what, path, err.msg)
	}
	f.nextCheck.Store(f.now().Add(check).UnixNano())
	return f, nil
}

// current is the last good content, without checking the file.
func (f *fileValue) current() string { return *f.cur.Load() }

// value returns the content, first re-reading the file if a check is due.
// Exactly one caller performs a due check; the others return at once.
func (f *fileValue) value() string {
	now := f.now().UnixNano()
	next := f.nextCheck.Load()
	if now >= next && f.nextCheck.CompareAndSwap(next, now+int64(f.check)) {
		f.mu.Lock()
		f.recheck()
		f.mu.Unlock()
	}
	return f.current()
}

// checkNow re-reads the file if it changed, whatever the interval, and
// returns the content: for rare callers such as an OAuth2 fetch.
func (f *fileValue) checkNow() string {
	f.mu.Lock()
	f.nextCheck.Store(f.now().Add(f.check).UnixNano())
	f.recheck()
	f.mu.Unlock()
	return f.current()
}

// fileError is a sanitized failure: it never holds file content.
type fileError struct{ msg string }

// errBusy: the file changed while it was read (written in place). Not a
// failure: the next call looks again.
var errBusy = &fileError{"file changed while being read"}

// load reads the file if it differs from the last read. f.mu is held.
func (f *fileValue) load() *fileError {
	fi, err := os.Stat(f.path)
	if err != nil {
		return &fileError{describeFileError("stat", err)}
	}
	st := stampOf(fi)
	if f.cur.Load() != nil && st == f.stamp {
		return nil // unchanged
	}
	if !fi.Mode().IsRegular() {
		return &fileError{"not a regular file"}
	}
	b, err := readLimited(f.path)
	if err != nil {
		return &fileError{describeFileError("read", err)}
	}
	if fi2, err := os.Stat(f.path); err != nil || stampOf(fi2) != st {
		// being written or replaced while we read: take it next time
		return errBusy
	}
	// Surrounding whitespace is never part of a token: editors and `echo`
	// add a trailing newline, templating and YAML block scalars add
	// indentation, and sent as is it would make "Bearer  x" (two spaces),
	// which upstreams reject or, worse, parse differently. Line breaks
	// inside stay an error (validHeaderValue): they would inject fields.
	v := strings.Trim(string(b), fileSpace)
	if v == "" {
		return &fileError{"file is empty"}
	}
	if !validHeaderValue(v) {
		return &fileError{"file content contains control characters"}
	}
	old := f.cur.Load()
	f.cur.Store(&v)
	f.stamp = st
	f.reads++
	f.readAt = f.now()
	if old != nil && *old != v {
		f.logger.Info(f.what + " changed; using its new content")
	}
	return nil
}

// recheck runs load and keeps the failure state and logs. f.mu is held.
func (f *fileValue) recheck() {
	err := f.load()
	if err == errBusy {
		f.nextCheck.Store(0)
		return
	}
	if err == nil {
		if !f.failingSince.IsZero() {
			f.logger.Info(f.what+" readable again", zap.Duration("failed_for", f.now().Sub(f.failingSince)))
			f.failingSince, f.lastErr = time.Time{}, ""
		}
		return
	}
	f.failures++
	if f.failingSince.IsZero() {
		f.failingSince = f.now()
	}
	if err.msg != f.lastErr { // one warning per distinct problem, not per check
		f.logger.Warn(f.what+" unusable; still using its last good content", zap.String("error", err.msg))
	}
	f.lastErr = err.msg
}

func (f *fileValue) state() State {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := State{Kind: KindFile, State: StateOK, Fetches: f.reads, Failures: f.failures, RefreshedAt: optionalTime(f.readAt)}
	if f.lastErr != "" {
		s.State = StateFailing
		s.FailingSince = optionalTime(f.failingSince)
		s.LastError = f.what + ": " + f.lastErr
	}
	return s
}

func readLimited(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, errors.New("file larger than 64KiB")
	}
	return b, nil
}

// fileSpace is the whitespace trimmed around a credential file's content.
const fileSpace = " \t\r\n"

// validHeaderValue rejects what would break or inject into the
// Authorization header: control characters, line breaks included.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
