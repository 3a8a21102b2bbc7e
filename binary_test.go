package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-gateway/caddy-gateway/internal/testutil"
)

// These tests run the real `caddy` command built from ./cmd/caddy, as a
// user would: `caddy validate` output and a graceful stop on SIGINT.

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// caddyBinary builds ./cmd/caddy once per test run.
func caddyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the caddy binary")
	}
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gateway-caddy-bin")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "caddy")
		out, err := exec.Command("go", "build", "-o", binaryPath, "./cmd/caddy").CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// process is a `caddy run` of the built binary.
type process struct {
	base, admin string
	logs        *bytes.Buffer
	cmd         *exec.Cmd
	exited      chan struct{} // closed when the process ended
	waitErr     error         // its exit status, once exited is closed
}

// runCaddy starts the built caddy binary on a Caddyfile made of the global
// options given and one site serving the gateway block, waits until both
// the admin endpoint and the site answer, and kills it when the test ends.
func runCaddy(t *testing.T, globals, gatewayBlock string) *process {
	t.Helper()
	bin := caddyBinary(t)
	dir := t.TempDir()
	port, admin := freePort(t), freePort(t)
	cf := fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\t%s\n}\nhttp://:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", admin, globals, port, gatewayBlock)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	p := &process{base: fmt.Sprintf("http://127.0.0.1:%d", port), admin: fmt.Sprintf("http://127.0.0.1:%d", admin),
		logs: new(bytes.Buffer), cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	testutil.Eventually(t, "caddy admin and site up", func() bool {
		for _, u := range []string{p.admin + "/gateway/health", p.base + "/api"} {
			resp, err := http.Get(u)
			if err != nil {
				return false
			}
			resp.Body.Close()
		}
		return true
	})
	return p
}

func TestCaddyValidateNamesFileAndLine(t *testing.T) {
	bin := caddyBinary(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "Caddyfile")
	cf := "http://127.0.0.1:1 {\n\tgateway /api/* {\n\t\tservice users http://127.0.0.1:9 {\n\t\t\ttimeout forever\n\t\t}\n\t}\n}\n"
	if err := os.WriteFile(file, []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "validate", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("caddy validate accepted a bad duration:\n%s", out)
	}
	mustContain(t, string(out), `bad duration \"forever\"`) // JSON-escaped in the log line
	mustContain(t, string(out), file+":4")

	// and the demo config is valid as shipped
	cmd = exec.Command(bin, "validate", "--config", "testdata/demo.Caddyfile", "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("demo Caddyfile invalid: %v\n%s", err, out)
	}
}

// On SIGINT, a request in flight still gets its whole answer (within the
// grace period) and the process exits cleanly.
func TestSIGINTDrainsInFlightRequests(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	up := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		echoHandler(w, r)
	})
	p := runCaddy(t, "grace_period 10s", fmt.Sprintf(`gateway /api/* {
		service users %s
		cache
	}`, up.URL))
	base := p.base

	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(base + "/api/users/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(b), err}
	}()
	<-started
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// the server stops accepting while the slow request is still in flight
	testutil.Eventually(t, "listener closed", func() bool {
		resp, err := http.Get(base + "/api/users/after")
		if resp != nil {
			resp.Body.Close()
		}
		return err != nil
	})
	close(release)
	r := <-done
	if r.err != nil || r.status != 200 || !strings.Contains(r.body, `"path":"/slow"`) {
		t.Fatalf("in-flight request: %d %q %v\n%s", r.status, r.body, r.err, p.logs.String())
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Errorf("caddy exited with %v\n%s", p.waitErr, p.logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("caddy did not exit after SIGINT\n%s", p.logs.String())
	}
	if strings.Contains(p.logs.String(), "panic") {
		t.Errorf("panic in logs:\n%s", p.logs.String())
	}
}
