// Command upstream is the loopback upstream of bench/run.sh: ~1 KiB JSON
// answers, cacheable on /cacheable/... (Cache-Control: public,
// max-age=3600) and not on anything else (Cache-Control: no-store).
//
//	go run ./bench/upstream -addr 127.0.0.1:9100
//	go run ./bench/upstream -print-body   # the body, for the `respond` baseline
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Body is the 1024-byte JSON answer (the same bytes as the `respond` baseline).
var Body = func() []byte {
	const head = `{"id":42,"name":"bench","items":["`
	const tail = `"]}` + "\n"
	pad := strings.Repeat("x", 1024-len(head)-len(tail))
	return []byte(head + pad + tail)
}()

func main() {
	addr := flag.String("addr", "127.0.0.1:9100", "listen address (loopback)")
	printBody := flag.Bool("print-body", false, "print the answer body and exit")
	flag.Parse()
	if *printBody {
		os.Stdout.Write(Body)
		return
	}
	clen := strconv.Itoa(len(Body))
	cacheable := []string{"public, max-age=3600"}
	noStore := []string{"no-store"}
	ctype := []string{"application/json"}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd["Content-Type"] = ctype
		hd["Content-Length"] = []string{clen}
		if strings.HasPrefix(r.URL.Path, "/cacheable/") {
			hd["Cache-Control"] = cacheable
		} else {
			hd["Cache-Control"] = noStore
		}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(Body)
		}
	})
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "upstream listening on %s\n", l.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(l))
}
