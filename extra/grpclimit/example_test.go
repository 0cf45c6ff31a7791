package grpclimit_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/redislimit/redislimit"
	"github.com/redislimit/redislimit/extra/grpclimit"
)

// A server that admits 2 calls a minute per client address: the third
// call of a client is denied with ResourceExhausted, the details that say
// why and when to retry, and the pushback trailer.
func Example() {
	mr, err := miniredis.Run() // a real Redis in production
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	lim, err := redislimit.New(rdb, redislimit.FixedWindow(2, time.Minute))
	if err != nil {
		panic(err)
	}
	ic, err := grpclimit.New(lim)
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(ic.UnaryServer()),
		grpc.ChainStreamInterceptor(ic.StreamServer()),
	)
	healthgrpc.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	client := healthgrpc.NewHealthClient(conn)
	for range 3 {
		var trailer metadata.MD
		resp, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
		if err == nil {
			fmt.Println(resp.GetStatus())
			continue
		}
		st := status.Convert(err)
		fmt.Println(st.Code())
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.RetryInfo:
				fmt.Println("retry within a minute:", d.GetRetryDelay().AsDuration() <= time.Minute)
			case *errdetails.QuotaFailure:
				v := d.GetViolations()[0]
				fmt.Printf("quota failure: %s, %s\n", v.GetSubject(), v.GetDescription())
			}
		}
		fmt.Println("pushback trailer set:", len(trailer.Get(grpclimit.RetryPushbackTrailer)) == 1)
	}
	// Output:
	// SERVING
	// SERVING
	// ResourceExhausted
	// retry within a minute: true
	// quota failure: peer, limit of 2 per 1m0s
	// pushback trailer set: true
}
