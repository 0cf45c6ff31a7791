// Package faultproxy is a TCP proxy for tests that stands between a Redis
// client and a redis-server, both on 127.0.0.1, and breaks the path between
// them on demand: it slows replies down, stalls, cuts connections and refuses
// new ones, then heals.
//
// Faults, and the calls that make them:
//
//	fault                              calls                       what the client sees
//	slow server or network             SetLatency(d)               each reply arrives at least d later
//	hung server (GC pause, SIGSTOP,    Stall() … Heal()            dials succeed, commands get no reply; on Heal
//	  a long script)                                               held commands reach the server and replies flow
//	hung server, session lost          Stall() … CutAll(); Heal()  as above, but held data is dropped with the
//	                                                               connections; new dials work after Heal
//	reply lost after the command ran   StallReplies() … Heal()     commands run on the server, replies are held
//	server killed                      Refuse(); CutAll()          open connections end (EOF); dials are refused
//	server back                        Heal()                      normal forwarding on the same address
//	server moved to another port       SetTarget(addr)             new connections reach addr
//
// The proxy keeps its address across Refuse and Heal, so a client configured
// with [Proxy.Addr] reconnects by itself. Each client connection gets its own
// connection to the target, dialed when it is accepted (after a stall, if one
// is on); if that dial fails the client's connection is closed, as most
// proxies do, so a stopped target shows as an accepted connection that ends at
// once. Use [Proxy.Refuse] for refused dials.
//
// Buffers are bounded: each direction of a connection holds at most seven
// chunks of up to 16 KiB (a read buffer, one chunk being written, one being
// queued and a queue of four); beyond that the proxy stops reading and TCP
// flow control pushes back on the sender, so a stall or a long latency holds
// at most that much plus what the kernel buffers.
//
// Every connection costs five goroutines (a handler, and a reader and a
// writer per direction). Each ends when its connection ends; [Proxy.CutAll]
// and [Proxy.Close] wait for them, and the accept loop ends with its
// listener.
package faultproxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

const (
	chunkSize   = 16 << 10 // bytes read from a socket at a time
	queueChunks = 4        // chunks read but not yet written, per direction
	dialTimeout = 5 * time.Second
	relistenFor = 2 * time.Second // how long Heal retries taking its port back
)

// Proxy forwards TCP connections from [Proxy.Addr] to a target address and
// injects faults into them. Create it with [Start]. Its methods are safe for
// concurrent use.
type Proxy struct {
	tb   testing.TB
	addr string         // "127.0.0.1:port", kept across Refuse and Heal
	wg   sync.WaitGroup // accept loops and connection handlers

	mu       sync.Mutex
	target   string
	latency  time.Duration
	up       chan struct{} // closed while client→server data flows
	down     chan struct{} // closed while server→client data flows
	ln       net.Listener  // nil while refusing and after Close
	links    map[*link]struct{}
	accepted int
	closed   bool
}

// Start starts a proxy to target on a free 127.0.0.1 port. It fails tb if it
// cannot listen, and closes the proxy when the test ends.
func Start(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: listen: %v", err)
	}
	p := &Proxy{
		tb:     tb,
		addr:   ln.Addr().String(),
		target: target,
		up:     newOpenGate(),
		down:   newOpenGate(),
		ln:     ln,
		links:  make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.serve(ln)
	tb.Cleanup(p.Close)
	return p
}

// Addr returns the address clients dial, "127.0.0.1:port". It does not
// change for the proxy's lifetime.
func (p *Proxy) Addr() string { return p.addr }

// Target returns the address new connections are forwarded to.
func (p *Proxy) Target() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}

// SetTarget makes connections accepted from now on go to addr, for example a
// server restarted on another port. Open connections keep their server.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = addr
}

// SetLatency delays everything the server sends by d, counted from the moment
// the proxy reads it, so a command's round trip grows by at least d. Requests
// are not delayed, and the delay does not limit throughput: chunks read
// together are written together. A change applies to data not yet written.
// Zero (the initial value) or a negative d forwards at once.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = max(d, 0)
}

// Latency returns the delay set by [Proxy.SetLatency].
func (p *Proxy) Latency() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latency
}

// Stall stops forwarding in both directions, as a hung server looks from the
// client: connections are still accepted, but nothing reaches the server and
// nothing comes back. Data already in flight is held in the proxy (up to the
// bound in the package documentation), not dropped, and new connections are
// not forwarded to the server. [Proxy.Heal] forwards the held data in order;
// call [Proxy.CutAll] first to drop it with the connections instead.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = shutGate(p.up)
	p.down = shutGate(p.down)
}

// StallReplies stops forwarding from server to client only: commands still
// reach the server and run there, but their replies are held, as when a reply
// is lost after the server acted on it. [Proxy.Heal] forwards the held
// replies.
func (p *Proxy) StallReplies() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = shutGate(p.down)
}

// Refuse stops listening, so that new dials to [Proxy.Addr] fail at once with
// "connection refused", as with a dead server. Connections already open are
// left as they are; add [Proxy.CutAll] to end them too. [Proxy.Heal] listens
// again on the same address.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close() // serve sees net.ErrClosed and returns
		p.ln = nil
	}
}

// CutAll closes every connection open when it is called, on both sides
// (the client reads EOF, the server sees its client leave), without forwarding
// what they hold. A client's command in flight fails; go-redis notices a
// closed idle connection and dials a new one for its next command. New
// connections are handled as usual. CutAll returns once the cut connections'
// goroutines have ended, so [Proxy.Conns] no longer counts them.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	for _, l := range links {
		<-l.finished
	}
}

// Heal ends every fault: it sets the latency back to zero, resumes
// forwarding (held data is forwarded in order, see [Proxy.Stall]) and, after
// [Proxy.Refuse], listens again on the same address. The target set by
// [Proxy.SetTarget] stays. If the address cannot be taken back within two
// seconds (another process took the port), Heal reports an error through
// the test and the proxy keeps refusing. Healing a healthy proxy does
// nothing.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.latency = 0
	p.up = openGate(p.up)
	p.down = openGate(p.down)
	relisten := p.ln == nil && !p.closed
	p.mu.Unlock()
	if !relisten {
		return
	}
	ln, err := listenAgain(p.addr)
	if err != nil {
		p.tb.Errorf("faultproxy: heal: listen on %s again: %v", p.addr, err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.ln != nil { // closed, or healed by a concurrent Heal
		_ = ln.Close()
		return
	}
	p.ln = ln
	p.wg.Add(1)
	go p.serve(ln)
}

// Conns returns the number of client connections open through the proxy,
// including those held by a stall before reaching the server.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Accepted returns the number of client connections accepted since [Start],
// open or not: a client that reconnects makes it grow.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops listening, closes every connection and waits for all of the
// proxy's goroutines to end. [Start] registers it with tb.Cleanup; calling it
// again does nothing. After Close, the other methods have no effect on
// connections, as there are none.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.CutAll()
	p.wg.Wait()
}

func listenAgain(addr string) (net.Listener, error) {
	deadline := time.Now().Add(relistenFor)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serve accepts connections on ln until ln is closed.
func (p *Proxy) serve(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: let it pass rather than spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		l := newLink(c)
		p.links[l] = struct{}{}
		p.accepted++
		p.wg.Add(1)
		p.mu.Unlock()
		go p.run(l)
	}
}

// run forwards one client connection until either side ends or the link is
// cut, and returns once all of the link's goroutines have ended.
func (p *Proxy) run(l *link) {
	defer p.wg.Done()
	defer close(l.finished)
	defer func() {
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	defer l.close()

	// A stalled server is not dialed: the client's connection is accepted,
	// and what it sends waits in the socket buffer.
	if !p.wait(&p.up, l) {
		return
	}
	d := net.Dialer{Timeout: dialTimeout}
	server, err := d.DialContext(l.ctx, "tcp", p.Target())
	if err != nil || !l.setServer(server) {
		return
	}
	var pipes sync.WaitGroup
	pipes.Add(4)
	go p.pipe(l, l.client, server, &p.up, false, &pipes)
	go p.pipe(l, server, l.client, &p.down, true, &pipes)
	pipes.Wait()
}

// chunk is data read from one side and not yet written to the other.
type chunk struct {
	data []byte
	read time.Time
}

// pipe copies src to dst through a bounded queue, with a reader and a writer
// goroutine so that delayed or held chunks do not stop reading until the
// queue is full. The writer waits for the latency when delayed is set and
// for *gate to be open; it closes the link when src ends or a write fails.
// Both goroutines call pipes.Done when they return.
func (p *Proxy) pipe(l *link, src, dst net.Conn, gate *chan struct{}, delayed bool, pipes *sync.WaitGroup) {
	queue := make(chan chunk, queueChunks)
	go func() {
		defer pipes.Done()
		defer close(queue)
		buf := make([]byte, chunkSize)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				c := chunk{data: append([]byte(nil), buf[:n]...), read: time.Now()}
				select {
				case queue <- c:
				case <-l.ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer pipes.Done()
	// When src ends, what was read from it is still written before the link
	// is closed, so a server's last reply reaches the client.
	defer l.close()
	for c := range queue {
		if delayed && !p.sleepUntil(l, c.read) {
			return
		}
		if !p.wait(gate, l) {
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}

// sleepUntil waits until the current latency has passed since t. It reports
// false if the link was closed first.
func (p *Proxy) sleepUntil(l *link, t time.Time) bool {
	d := time.Until(t.Add(p.Latency()))
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// wait waits for the gate *g (p.up or p.down) to be open. It reports false
// if the link was closed first.
func (p *Proxy) wait(g *chan struct{}, l *link) bool {
	p.mu.Lock()
	ch := *g
	p.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// A gate is a channel that is closed while data may pass. newOpenGate
// returns an open one.
func newOpenGate() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func isOpen(g chan struct{}) bool {
	select {
	case <-g:
		return true
	default:
		return false
	}
}

// shutGate returns a shut gate: g itself if it is already shut.
func shutGate(g chan struct{}) chan struct{} {
	if isOpen(g) {
		return make(chan struct{})
	}
	return g
}

// openGate opens g, waking everyone waiting on it, and returns it.
func openGate(g chan struct{}) chan struct{} {
	if !isOpen(g) {
		close(g)
	}
	return g
}

// link is one client connection and, once dialed, its server connection.
type link struct {
	client   net.Conn
	ctx      context.Context // done when the link is closed
	cancel   context.CancelFunc
	finished chan struct{} // closed when run has returned

	mu     sync.Mutex
	server net.Conn
	closed bool
}

func newLink(client net.Conn) *link {
	ctx, cancel := context.WithCancel(context.Background())
	return &link{client: client, ctx: ctx, cancel: cancel, finished: make(chan struct{})}
}

// setServer attaches the server connection, or closes it and reports false
// if the link was closed meanwhile.
func (l *link) setServer(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return false
	}
	l.server = c
	return true
}

// close closes both connections, which ends every read and write on them.
// It may be called any number of times.
func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	l.cancel()
	_ = l.client.Close()
	if l.server != nil {
		_ = l.server.Close()
	}
}
