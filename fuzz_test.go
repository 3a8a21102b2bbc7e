package gateway

import (
	"strings"
	"testing"
)

// Fuzz targets. CI runs each briefly:
//
//	go test -run '^$' -fuzz '^FuzzCaddyfile$' -fuzztime 20s .
//
// Inputs that failed are kept under testdata/fuzz/<Target>/ and replayed by
// every plain `go test`.

func FuzzCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"gateway /api/* {\n\tservice users http://127.0.0.1:9001\n}",
		"gateway {\n\tservice users http://127.0.0.1:9001 http://127.0.0.1:9002 {\n\t\ttoken {env.T}\n\t\ttimeout 30s\n\t\tdial_timeout 5s\n" +
			"\t\tretries 2\n\t\tretry_backoff 50ms 1s\n\t\tmax_conns 20\n\t\tmax_pending 1000\n\t\tqueue_timeout 1s\n" +
			"\t\thealth /health 10s 2s\n\t\thealth_status 200\n\t\tlb least_conn\n\t\tproxy {\n\t\t\ttransport http {\n\t\t\t\tkeepalive 90s\n\t\t\t}\n" +
			"\t\t\theader_up X-Gateway gw\n\t\t\tmax_fails 3\n\t\t}\n\t}\n\tcache {\n\t\tmax_size 256MiB\n\t\tmax_item_size 1MiB\n" +
			"\t\tdefault_ttl 60s\n\t\tstale_while_revalidate 30s\n\t\tstale_if_error 5m\n\t}\n\thealth_path /health\n\tslow_request 100ms\n" +
			"\tmax_body 10MiB\n\tmemory_interval 60s\n\tmemory_leak_threshold 10MiB\n\tname main\n\tprefix /api\n}",
		"@internal remote_ip 127.0.0.1/8\ngateway @internal {\n\tprefix /services\n\tservice echo http://127.0.0.1:9010\n\thealth_path /ready\n}",
		"gateway /v1* {\n\tservice a https://a.example/base/\n}",
		"gateway {\n\tservice a http://x {\n\t\tproxy\n\t}\n}",
		"gateway {\n\tservice a http://x {\n\t\tproxy {\n\t\t\tto http://y\n\t\t}\n\t}\n}",
		"gateway {\n\tservice a http://x {\n\t\thealth_status 200\n\t}\n}",
		"gateway {\n\tservice a http://x {\n\t\tretry_backoff\n\t}\n}",
		"gateway {\n\tcache {\n\t\tredis localhost:6379\n\t}\n}",
		"gateway {\n\tmax_body 99999999999999999999EiB\n}",
		"gateway {\n\tservice\n}",
		"gateway {\n\tservice .. http://x\n}",
		"gateway {\n\tservice a ftp://x\n}",
		"gateway {\n\tservice a http://x {\n\t\tlb\n\t}\n}",
		"gateway {\n\tservice a http://x {\n\t\ttoken a\n\t\ttoken_file b\n\t}\n}",
		"gateway {\n\tservice a http://x {\n}",
		"gateway {{{\n}}}",
		"gateway \"",
		"gateway `x`",
		"gateway /api/* {\n\tservice a http://x\n}\ngateway /api/* {\n\tservice a http://x\n}",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, block string) {
		// "import" would read files (or globs) from the machine running the fuzzer.
		if strings.Contains(block, "import") {
			t.Skip()
		}
		// as the gateway directive of a site, and as a whole Caddyfile
		_, _ = adaptCaddyfile(t, "http://127.0.0.1:8080 {\n"+block+"\n}\n")
		_, _ = adaptCaddyfile(t, block)
	})
}
