package testenv

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is a kind of failure FaultProxy injects.
type Fault int

// The faults FaultProxy can inject. The HTTP ones answer with an S3 XML
// error body, before the request reaches the server.
const (
	// FaultInternalError answers 500 InternalError.
	FaultInternalError Fault = iota
	// FaultUnavailable answers 503 ServiceUnavailable.
	FaultUnavailable
	// FaultSlowDown answers 503 SlowDown, as AWS S3 throttles.
	FaultSlowDown
	// FaultTooManyRequests answers 429 SlowDown, as some S3-compatible
	// services throttle.
	FaultTooManyRequests
	// FaultReset breaks the connection: a request with a response body
	// is forwarded and cut off with a TCP reset after half of the body
	// (or after the headers for short bodies); any other request is reset
	// before it reaches the server.
	FaultReset
)

func (f Fault) String() string {
	switch f {
	case FaultInternalError:
		return "500 InternalError"
	case FaultUnavailable:
		return "503 ServiceUnavailable"
	case FaultSlowDown:
		return "503 SlowDown"
	case FaultTooManyRequests:
		return "429 SlowDown"
	case FaultReset:
		return "connection reset"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// FaultProxy is a reverse proxy on 127.0.0.1 in front of an HTTP endpoint
// that injects failures, chosen with a seeded random generator so a run
// can be repeated. It forwards requests unmodified, Host header included:
// an S3 client signs for the proxy's host:port, and the server checks the
// signature against the Host it receives, so the proxy must not rewrite
// it. Its settings may be changed while it runs; it is safe for concurrent
// use.
type FaultProxy struct {
	// Endpoint is the proxy's host:port.
	Endpoint string

	target string
	proxy  *httputil.ReverseProxy

	mu       sync.Mutex
	rng      *rand.Rand
	rate     float64
	faults   []Fault
	failAll  bool
	latency  time.Duration
	requests atomic.Int64
	injected atomic.Int64
	inflight atomic.Int64
	peak     atomic.Int64
}

// StartFaultProxy starts a proxy in front of target (host:port, plain
// HTTP) that forwards everything until told otherwise. It stops when the
// test ends.
func StartFaultProxy(t testing.TB, target string, seed uint64) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fault proxy: %v", err)
	}
	p := &FaultProxy{
		Endpoint: ln.Addr().String(),
		target:   target,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		faults:   []Fault{FaultUnavailable},
	}
	transport := &http.Transport{
		Proxy:               nil,
		DisableCompression:  true, // pass bodies through as they are
		MaxIdleConnsPerHost: 64,
	}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = p.target
			r.Out.Host = r.In.Host // keep the Host the client signed
		},
		Transport:     transport,
		FlushInterval: -1,
	}
	srv := &http.Server{Handler: p}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		transport.CloseIdleConnections()
	})
	return p
}

// URL is the S3 location of bucket through the proxy.
func (p *FaultProxy) URL(bucket string) string {
	return "s3:http://" + p.Endpoint + "/" + bucket
}

// SetFailureRate makes each request fail with probability rate (0..1),
// with a fault drawn from faults (all kinds when none are given).
func (p *FaultProxy) SetFailureRate(rate float64, faults ...Fault) {
	if len(faults) == 0 {
		faults = []Fault{FaultInternalError, FaultUnavailable, FaultSlowDown, FaultTooManyRequests, FaultReset}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rate = rate
	p.faults = append([]Fault(nil), faults...)
}

// FailAll makes every request fail (on) with a fault drawn from faults
// (503 ServiceUnavailable when none are given), or ends that mode (off).
func (p *FaultProxy) FailAll(on bool, faults ...Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failAll = on
	if len(faults) > 0 {
		p.faults = append([]Fault(nil), faults...)
	}
}

// SetLatency delays every request by d before it is handled.
func (p *FaultProxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Requests is the number of requests the proxy received.
func (p *FaultProxy) Requests() int64 { return p.requests.Load() }

// Faults is the number of faults the proxy injected.
func (p *FaultProxy) Faults() int64 { return p.injected.Load() }

// PeakInFlight is the largest number of requests the proxy was handling at
// the same time.
func (p *FaultProxy) PeakInFlight() int64 { return p.peak.Load() }

// decide returns the latency to add and the fault to inject, if any.
func (p *FaultProxy) decide() (time.Duration, Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.failAll && (p.rate <= 0 || p.rng.Float64() >= p.rate) {
		return p.latency, 0, false
	}
	return p.latency, p.faults[p.rng.IntN(len(p.faults))], true
}

// ServeHTTP forwards r or injects a fault.
func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	n := p.inflight.Add(1)
	defer p.inflight.Add(-1)
	for {
		peak := p.peak.Load()
		if n <= peak || p.peak.CompareAndSwap(peak, n) {
			break
		}
	}
	latency, fault, inject := p.decide()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	if !inject {
		p.proxy.ServeHTTP(w, r)
		return
	}
	p.injected.Add(1)
	switch fault {
	case FaultInternalError:
		s3Error(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case FaultUnavailable:
		s3Error(w, r, http.StatusServiceUnavailable, "ServiceUnavailable", "Service is unable to handle request.")
	case FaultSlowDown:
		s3Error(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case FaultTooManyRequests:
		s3Error(w, r, http.StatusTooManyRequests, "SlowDown", "Please reduce your request rate.")
	case FaultReset:
		if r.Method == http.MethodGet {
			p.forwardAndCut(w, r)
		} else {
			resetConn(w)
		}
	}
}

// s3Error answers like an S3 server refusing the request. The request body
// is read first so the client is not cut off while sending it.
func s3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/xml")
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>faultproxy</RequestId></Error>`,
		code, msg, xmlEscape(r.URL.Path))
}

func xmlEscape(s string) string {
	var b []byte
	for _, c := range []byte(s) {
		switch c {
		case '<':
			b = append(b, "&lt;"...)
		case '>':
			b = append(b, "&gt;"...)
		case '&':
			b = append(b, "&amp;"...)
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// forwardAndCut forwards r and resets the connection half-way through the
// response body.
func (p *FaultProxy) forwardAndCut(w http.ResponseWriter, r *http.Request) {
	rec := &cutWriter{ResponseWriter: w}
	p.proxy.ServeHTTP(rec, r)
	// The body was shorter than its cut-off point, or there was none:
	// the response is complete, but the connection still goes away.
	if !rec.cut {
		resetConn(w)
	}
}

// cutWriter passes on half of the declared body, then resets.
type cutWriter struct {
	http.ResponseWriter
	limit   int64 // bytes of body to pass; -1 until headers are written
	written int64
	cut     bool
}

func (c *cutWriter) WriteHeader(status int) {
	c.limit = -1
	if n, err := parseLength(c.Header().Get("Content-Length")); err == nil && n > 1 {
		c.limit = n / 2
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if c.cut {
		return 0, io.ErrClosedPipe
	}
	if c.limit >= 0 && c.written+int64(len(b)) > c.limit {
		n, _ := c.ResponseWriter.Write(b[:c.limit-c.written])
		c.written += int64(n)
		c.cut = true
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		resetConn(c.ResponseWriter)
		return n, io.ErrClosedPipe
	}
	n, err := c.ResponseWriter.Write(b)
	c.written += int64(n)
	return n, err
}

// Flush lets ReverseProxy flush through the wrapper.
func (c *cutWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok && !c.cut {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (c *cutWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func parseLength(s string) (int64, error) {
	var n int64
	_, err := fmt.Sscan(s, &n)
	return n, err
}

// resetConn closes the client's connection with a TCP reset (linger 0),
// so the client sees "connection reset by peer" rather than a clean close.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Already hijacked, or not hijackable: make net/http drop it.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
