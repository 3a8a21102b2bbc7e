// Command reloadload sends requests to a Caddy while reloading its config
// through the admin API, and counts the requests that fail. bench/reload.sh
// runs it against stock reverse_proxy and the gateway.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "", "")
	admin := flag.String("admin", "", "")
	cfg := flag.String("config", "", "")
	cfg2 := flag.String("config2", "", "")
	mode := flag.String("mode", "ka-post", "")
	workers := flag.Int("c", 16, "")
	reloads := flag.Int("reloads", 20, "")
	flag.Parse()
	body1, _ := os.ReadFile(*cfg)
	body2 := body1
	if *cfg2 != "" {
		body2, _ = os.ReadFile(*cfg2)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1000, DisableKeepAlives: *mode == "nk-get"}
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var ok, bad, connErr atomic.Int64
	errs := sync.Map{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var resp *http.Response
				var err error
				if *mode == "ka-post" {
					resp, err = cl.Post(*url, "text/plain", bytes.NewReader([]byte("hello")))
				} else {
					resp, err = cl.Get(*url)
				}
				if err != nil {
					connErr.Add(1)
					errs.Store(err.Error(), true)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
					errs.Store(fmt.Sprint("status ", resp.StatusCode), true)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	for i := range *reloads {
		b := body1
		if i%2 == 1 {
			b = body2
		}
		resp, err := http.Post(*admin+"/load", "text/caddyfile", bytes.NewReader(b))
		if err != nil || resp.StatusCode != 200 {
			fmt.Println("reload failed", err, resp)
		}
		if resp != nil {
			resp.Body.Close()
		}
		time.Sleep(150 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	fmt.Printf("mode=%s ok=%d badstatus=%d connerr=%d\n", *mode, ok.Load(), bad.Load(), connErr.Load())
	n := 0
	errs.Range(func(k, v any) bool {
		if n < 8 {
			fmt.Println("  ", k)
		}
		n++
		return true
	})
}
