package gateway

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Every Caddyfile in testdata/ adapts to its golden JSON, as `caddy adapt`
// would print it.
func TestAdaptGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.Caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Caddyfiles in testdata: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := adaptCaddyfile(t, string(src))
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := strings.TrimSuffix(file, ".Caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestAdaptGolden -update)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("adapt output differs from %s:\n%s", golden, pretty.String())
			}
			// the golden JSON is a config Caddy accepts as it is
			var cfg caddy.Config
			if err := json.Unmarshal(want, &cfg); err != nil {
				t.Fatalf("golden is not a Caddy config: %v", err)
			}
		})
	}
}

// Bad Caddyfiles are rejected by the adapter with the file and line of the
// offending token, as `caddy validate` and `caddy adapt` show them.
func TestCaddyfileErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name, block string
		line        int
		want        string
	}{
		{"unknown subdirective", "service a http://x:1 {\n\t\tbogus 1\n\t}", 4, `unknown subdirective "bogus"`},
		{"unknown gateway option", "service a http://x:1\n\tfrobnicate", 4, `unknown gateway subdirective "frobnicate"`},
		{"missing URL", "service a", 3, "missing upstream URL"},
		{"malformed URL", "service a ftp://x:1", 3, "scheme must be http or https"},
		{"URL without host", "service a http://", 3, "missing host"},
		{"duplicate service", "service a http://x:1\n\tservice a http://x:2", 4, `service "a" declared twice`},
		{"bad duration", "service a http://x:1 {\n\t\ttimeout soon\n\t}", 4, `bad duration "soon"`},
		{"bad size", "service a http://x:1\n\tcache {\n\t\tmax_size lots\n\t}", 5, `bad size "lots"`},
		{"token and token_file", "service a http://x:1 {\n\t\ttoken t\n\t\ttoken_file /f\n\t}", 6, "mutually exclusive"},
		{"empty service name", `service "" http://x:1`, 3, "service name is empty"},
		{"service name with slash", "service a/b http://x:1", 3, "must not contain '/'"},
		{"negative retries", "service a http://x:1 {\n\t\tretries -1\n\t}", 4, "not a non-negative integer"},
		{"unknown lb policy", "service a http://x:1 {\n\t\tlb fastest\n\t}", 4, `unknown policy "fastest"`},
		{"no service", "slow_request 1s", 4, "declare at least one service"},
		{"redis bad URL", "service a http://x:1\n\tcache {\n\t\tredis 127.0.0.1:6379\n\t}", 5, "must start with redis://"},
		{"redis unknown option", "service a http://x:1\n\tcache {\n\t\tredis redis://127.0.0.1:6379 {\n\t\t\tclustre redis://a:1\n\t\t}\n\t}", 6, `redis: unknown subdirective "clustre"`},
		{"redis cluster without seed", "service a http://x:1\n\tcache {\n\t\tredis {\n\t\t\tcluster\n\t\t}\n\t}", 6, "cluster needs at least one seed URL"},
		{"redis cluster and URL", "service a http://x:1\n\tcache {\n\t\tredis redis://a:1 {\n\t\t\tcluster redis://b:1\n\t\t}\n\t}", 7, "exclude each other"},
		{"redis cluster mixed schemes", "service a http://x:1\n\tcache {\n\t\tredis {\n\t\t\tcluster redis://a:1 rediss://b:1\n\t\t}\n\t}", 6, "mix redis:// and rediss://"},
		{"redis sentinel without master", "service a http://x:1\n\tcache {\n\t\tredis {\n\t\t\tsentinel redis://s:26379\n\t\t}\n\t}", 6, "sentinel needs the master name"},
		{"redis without anything", "service a http://x:1\n\tcache {\n\t\tredis {\n\t\t\ttimeout 1s\n\t\t}\n\t}", 7, "needs a URL, a cluster or a sentinel"},
		{"oauth2 and token", "service a http://x:1 {\n\t\ttoken t\n\t\toauth2 {\n\t\t\ttoken_url http://127.0.0.1:9/t\n\t\t\tclient_id c\n\t\t\tclient_secret s\n\t\t}\n\t}", 10, "oauth2 and token/token_file are mutually exclusive"},
		{"mixed schemes", "service a http://x:1 https://y:2", 3, "share scheme"},
		{"misspelt tag option", "service a http://x:1\n\tcache {\n\t\ttag_header Surrogate-Key\n\t}", 5, `cache: unknown subdirective "tag_header"`},
		{"bad tag field", "service a http://x:1\n\tcache {\n\t\ttag_headers Surrogate:Key\n\t}", 5, `"Surrogate:Key" is not a header field name`},
		{"keep_tag_headers with an argument", "service a http://x:1\n\tcache {\n\t\tkeep_tag_headers yes\n\t}", 5, "wrong argument count"},
		{"cache key unknown option", "service a http://x:1\n\tcache {\n\t\tkey a {\n\t\t\tignore_qurey utm_*\n\t\t}\n\t}", 6, `cache key: unknown subdirective "ignore_qurey"`},
		{"cache key empty option", "service a http://x:1\n\tcache {\n\t\tkey {\n\t\t\theader\n\t\t}\n\t}", 6, "header needs at least one argument"},
		{"cache key bad pattern", "service a http://x:1\n\tcache {\n\t\tkey {\n\t\t\tignore_query a*b\n\t\t}\n\t}", 7, `bad query parameter pattern "a*b"`},
		{"cache key sort_query argument", "service a http://x:1\n\tcache {\n\t\tkey {\n\t\t\tsort_query yes\n\t\t}\n\t}", 6, "wrong argument count"},
		{"cache key twice", "service a http://x:1\n\tcache {\n\t\tkey a {\n\t\t}\n\t\tkey a {\n\t\t}\n\t}", 7, `declared twice for service "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "http://localhost:8080 {\n\tgateway /api/* {\n\t" + tt.block + "\n\t}\n}\n"
			_, err := adaptCaddyfile(t, src)
			if err == nil {
				t.Fatalf("accepted:\n%s", src)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not say %q", msg, tt.want)
			}
			if loc := "Caddyfile:" + strconv.Itoa(tt.line); !strings.Contains(msg, loc) {
				t.Errorf("error %q does not name %s", msg, loc)
			}
		})
	}
}

// The JSON config is validated too (for users who skip the Caddyfile).
func TestJSONValidateErrors(t *testing.T) {
	tests := []struct {
		name, json, want string
	}{
		{"no services", `{}`, "no service declared"},
		{"duplicate", `{"services":[{"name":"a","upstreams":["http://x:1"]},{"name":"a","upstreams":["http://x:2"]}]}`, "declared twice"},
		{"bad url", `{"services":[{"name":"a","upstreams":["x:1"]}]}`, "scheme"},
		{"both tokens", `{"services":[{"name":"a","upstreams":["http://x:1"],"token":"t","token_file":"f"}]}`, "mutually exclusive"},
		{"bad prefix", `{"prefix":"api","services":[{"name":"a","upstreams":["http://x:1"]}]}`, "prefix"},
		{"cache key for an unknown service", `{"services":[{"name":"a","upstreams":["http://x:1"]}],"cache":{"keys":{"b":{"sort_query":true}}}}`, `key for service "b", which is not declared`},
		{"cache key bad header", `{"services":[{"name":"a","upstreams":["http://x:1"]}],"cache":{"keys":{"a":{"headers":["X Tenant"]}}}}`, "bad header field name"},
		{"pending without conns", `{"services":[{"name":"a","upstreams":["http://x:1"],"max_pending":5}]}`, "max_pending needs max_conns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g Gateway
			if err := json.Unmarshal([]byte(tt.json), &g); err != nil {
				t.Fatal(err)
			}
			err := g.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}

// Several gateway sites can share a server, plain or HTTPS, with or
// without a global `servers` option: each adds the hand-over wrapper, and
// the config must still provision (Caddy allows one `tls` placeholder per
// server's list of listener wrappers).
func TestGatewaySitesShareAServer(t *testing.T) {
	sites := `
http://a.localhost:18099 {
	gateway /api/* {
		service users http://127.0.0.1:18098
	}
}
http://b.localhost:18099 {
	gateway /api/* {
		service users http://127.0.0.1:18098
	}
}
https://a.localhost:18443, https://b.localhost:18443 {
	tls internal
	gateway /api/* {
		service users http://127.0.0.1:18098
	}
}
`
	for name, global := range map[string]string{
		"no servers option":       "{\n\tskip_install_trust\n}\n",
		"servers option":          "{\n\tskip_install_trust\n\tservers {\n\t\ttimeouts {\n\t\t\tidle 1m\n\t\t}\n\t}\n}\n",
		"servers option with tls": "{\n\tskip_install_trust\n\tservers {\n\t\tlistener_wrappers {\n\t\t\ttls\n\t\t}\n\t}\n}\n",
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := adaptCaddyfile(t, global+sites)
			if err != nil {
				t.Fatal(err)
			}
			var c caddy.Config
			if err := json.Unmarshal(cfg, &c); err != nil {
				t.Fatal(err)
			}
			if err := caddy.Validate(&c); err != nil {
				t.Fatalf("%v\n%s", err, cfg)
			}
		})
	}
}

// The gateway_handoff global option turns the listener wrapper off, and
// anything but on or off is an error naming the line.
func TestHandoffOption(t *testing.T) {
	site := "http://localhost:8080 {\n\tgateway /api/* {\n\t\tservice users http://127.0.0.1:9001\n\t}\n}\n"
	for opt, wantWrapper := range map[string]bool{"": true, "gateway_handoff on": true, "gateway_handoff off": false} {
		cfg, err := adaptCaddyfile(t, "{\n\t"+opt+"\n}\n"+site)
		if err != nil {
			t.Fatalf("%q: %v", opt, err)
		}
		if got := bytes.Contains(cfg, []byte(`"wrapper":"gateway_handoff"`)); got != wantWrapper {
			t.Errorf("%q: listener wrapper present = %v, want %v\n%s", opt, got, wantWrapper, cfg)
		}
	}
	_, err := adaptCaddyfile(t, "{\n\tgateway_handoff maybe\n}\n"+site)
	if err == nil || !strings.Contains(err.Error(), `want on or off, not "maybe"`) || !strings.Contains(err.Error(), "Caddyfile:2") {
		t.Errorf("bad value: %v", err)
	}
}
