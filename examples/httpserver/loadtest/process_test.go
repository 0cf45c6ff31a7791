package loadtest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redislimit/redislimit/internal/redistest"
)

// stopGrace is how long a process has to exit after SIGTERM before it is
// killed.
const stopGrace = 5 * time.Second

// startTimeout is how long a process has to answer after it starts.
const startTimeout = 10 * time.Second

// proc is a child process of the test, with its output in a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string        // the file holding its stdout and stderr
	done chan struct{} // closed when it has exited; err is set then
	err  error         // what cmd.Wait returned
}

// startProc starts bin with args and env added to the test's environment
// (a later value wins over an inherited one). It does not stop it: see
// [proc.stop].
func startProc(dir, name, bin string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// exited reports whether p has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends p SIGTERM, and kills it if it has not exited within grace. It
// returns nil only when p was running and exited with status 0 within
// grace.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return fmt.Errorf("%s had exited before it was stopped: %v", p.name, p.err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s exited after SIGTERM with %v", p.name, p.err)
		}
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s had not exited %v after SIGTERM; killed", p.name, grace)
	}
}

// logTail returns the last lines of p's output.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// startRetrying starts a process on a free port with start, up to three
// times, each on a new port.
func startRetrying(start func(port int) (*proc, error)) (*proc, error) {
	var err error
	for range 3 {
		var port int
		if port, err = redistest.FreePort(); err != nil {
			continue
		}
		var p *proc
		if p, err = start(port); err == nil {
			return p, nil
		}
	}
	return nil, err
}

// waitReady polls ready until it returns nil, p exits, or startTimeout
// passes; then it kills p and returns an error with p's output.
func waitReady(p *proc, ready func() error) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if p.exited() {
			return fmt.Errorf("%s exited at start (%v):\n%s", p.name, p.err, p.logTail())
		}
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			_ = p.cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("%s did not answer within %v (%v):\n%s", p.name, startTimeout, err, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildServer builds examples/httpserver of the root module (three
// directories up) into the test's temporary directory and returns the
// binary's path.
func buildServer(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "httpserver")
	cmd := exec.Command("go", "build", "-o", bin, "./examples/httpserver")
	cmd.Dir = root
	began := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/httpserver in %s: %v\n%s", root, err, out)
	}
	t.Logf("built ./examples/httpserver in %v", time.Since(began).Round(time.Millisecond))
	return bin
}

// startServers starts n copies of the example server bin on free
// 127.0.0.1 ports, each with env, and waits until each answers /healthz.
// When the test ends it stops them all at once, and fails the test if one
// does not exit with status 0 within stopGrace of SIGTERM. It returns their
// base URLs, "http://127.0.0.1:port".
func startServers(t *testing.T, bin, name string, n int, env ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var procs []*proc
	t.Cleanup(func() {
		var wg sync.WaitGroup
		errs := make([]error, len(procs))
		for i, p := range procs {
			wg.Go(func() { errs[i] = p.stop(stopGrace) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("shutdown on SIGTERM: %v", err)
			}
			if err != nil || t.Failed() {
				t.Logf("%s output:\n%s", procs[i].name, procs[i].logTail())
			}
		}
	})
	client := &http.Client{Timeout: time.Second}
	var urls []string
	for i := range n {
		var url string
		p, err := startRetrying(func(port int) (*proc, error) {
			addr := "127.0.0.1:" + strconv.Itoa(port)
			url = "http://" + addr
			p, err := startProc(dir, fmt.Sprintf("%s-%d", name, i), bin, slices.Concat(env, []string{"LISTEN_ADDR=" + addr}))
			if err != nil {
				return nil, err
			}
			return p, waitReady(p, func() error { return healthy(client, url) })
		})
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		urls = append(urls, url)
	}
	return urls
}

// healthy returns nil when GET base/healthz answers 200.
func healthy(c *http.Client, base string) error {
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /healthz: %s", resp.Status)
	}
	return nil
}
