package redislimit

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"slices"

	"github.com/redis/go-redis/v9"
)

// This file is the wire format of a script call: the program, the request
// ready to send, and the commands that carry it, alone or in a pipeline,
// with the EVAL that answers NOSCRIPT.

// A program is a script the transport can run: its SHA-1 for EVALSHA and
// its source for the EVAL that answers NOSCRIPT.
type program struct {
	hash   string
	src    string
	script *redis.Script // for clients that cannot take a prepared command
}

// newProgram returns the program of the Lua source src.
func newProgram(src string) *program {
	sum := sha1.Sum([]byte(src))
	return &program{hash: hex.EncodeToString(sum[:]), src: src, script: redis.NewScript(src)}
}

// lineHead is how many values of a command line come before ARGV for a
// script on one key: EVALSHA, the SHA-1, the key count (1) and the key.
const lineHead = 4

// A request is one script call, ready to send.
type request struct {
	prog *program
	// line is the command line: lineHead values (filled in by newRequest)
	// and then ARGV.
	line []any
}

// newRequest returns a request to run p on the Redis key rkey, with room
// for argc arguments, which the caller appends to line.
func newRequest(p *program, rkey string, argc int) request {
	line := make([]any, lineHead, lineHead+argc)
	line[0], line[1], line[2], line[3] = "evalsha", p.hash, 1, rkey
	return request{prog: p, line: line}
}

// newRequestKeys is newRequest for a script on several keys, all in the
// slot of the first.
func newRequestKeys(p *program, rkeys []string, argc int) request {
	line := make([]any, 3, 3+len(rkeys)+argc)
	line[0], line[1], line[2] = "evalsha", p.hash, len(rkeys)
	for _, k := range rkeys {
		line = append(line, k)
	}
	return request{prog: p, line: line}
}

// keys returns r's Redis keys.
func (r *request) keys() []string {
	n := r.line[2].(int)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = r.line[3+i].(string)
	}
	return keys
}

// cmd returns the EVALSHA command of r, or, when eval is set, the EVAL
// command that also loads the script into the node's cache. The command
// is never re-sent by go-redis (see onceCmd).
func (r *request) cmd(ctx context.Context, eval bool) *redis.Cmd {
	line := r.line
	if eval {
		line = slices.Clone(line)
		line[0], line[1] = "eval", r.prog.src
	}
	c := redis.NewCmd(ctx, line...)
	c.SetFirstKeyPos(3)
	return c
}

// onceCmd is a script call that go-redis must not send again after a
// failure. go-redis re-sends a command whose reply it did not get (a read
// timeout, a connection closed after the write), which would run a
// consuming script twice for one decision; a command whose NoRetry is true
// fails instead. Redirections (MOVED, ASK), which mean the script did not
// run, are still followed.
type onceCmd struct{ *redis.Cmd }

// NoRetry implements [redis.Cmder].
func (onceCmd) NoRetry() bool { return true }

// processor is a client that takes prepared commands: *redis.Client,
// *redis.ClusterClient, *redis.Ring and go-redis's AutoPipeliner.
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// pipeliner is a client that can send many commands in one round trip per
// node.
type pipeliner interface {
	Pipeline() redis.Pipeliner
}

// isNoScript reports whether err is Redis's answer that it does not have
// the script: the script did not run.
func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// send runs r alone on c and returns its reply: EVALSHA, then EVAL when
// Redis does not have the script. On a client that cannot take prepared
// commands it falls back to [redis.Script.Run], which go-redis may re-send.
func send(ctx context.Context, c redis.Scripter, r *request) (any, error) {
	p, ok := c.(processor)
	if !ok {
		keys := r.keys()
		return r.prog.script.Run(ctx, c, keys, r.line[3+len(keys):]...).Result()
	}
	cmd := r.cmd(ctx, false)
	_ = p.Process(ctx, onceCmd{cmd})
	if isNoScript(cmd.Err()) {
		cmd = r.cmd(ctx, true)
		_ = p.Process(ctx, onceCmd{cmd})
	}
	return cmd.Result()
}

// sendBatch runs every call of batch in one pipeline on c, which go-redis
// splits into one round trip per node, and sets each call's outcome. The
// calls whose script Redis did not have are sent again, alone of them, as
// EVAL in a second pipeline.
func sendBatch(ctx context.Context, c pipeliner, batch []*call) {
	cmds := make([]*redis.Cmd, len(batch))
	queued := make([]redis.Cmder, len(batch))
	for i, b := range batch {
		cmds[i] = b.cmd(ctx, false)
		queued[i] = onceCmd{cmds[i]}
	}
	// One BatchProcess sizes the pipeline's queue once, where a Process
	// per command would grow it step by step.
	pipe := c.Pipeline()
	_ = pipe.BatchProcess(ctx, queued...)
	_, _ = pipe.Exec(ctx)
	var again redis.Pipeliner
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			if again == nil {
				again = c.Pipeline()
			}
			cmds[i] = batch[i].cmd(ctx, true)
			_ = again.Process(ctx, onceCmd{cmds[i]})
		}
	}
	if again != nil {
		_, _ = again.Exec(ctx)
	}
	for i, cmd := range cmds {
		batch[i].reply, batch[i].err = cmd.Result()
	}
}

// sendAll sends the calls of batch together on c: in one pipeline when c
// can pipeline, else one after another.
func sendAll(ctx context.Context, c redis.Scripter, batch []*call) {
	if p, ok := c.(pipeliner); ok {
		sendBatch(ctx, p, batch)
		return
	}
	for _, b := range batch {
		b.reply, b.err = send(ctx, c, &b.request)
	}
}
