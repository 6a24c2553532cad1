// connlat: new-TCP-connection latency, for bench:proxy --vs upstream (compiled by the bench with gcc at run time).
//   connlat server PORT            accept and close connections until killed
//   connlat client IP PORT N [W]   W warm-up connections, then N timed connect()s; prints one latency in ns per line
// Each client connection is a fresh socket; connect() returns once the SYN-ACK is back, so the time covers the SYN's
// trip through the netfilter hooks (nat OUTPUT: the proxy's service dispatch, DNAT), conntrack, and the reply.
// Sockets close with SO_LINGER 0 (RST), so no TIME_WAIT builds up and the source ports do not run out.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int server(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 4096) < 0) {
    perror("connlat server");
    return 1;
  }
  struct linger lg = {1, 0};
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c);
  }
}

static int client(const char *ip, int port, int n, int warm) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
    fprintf(stderr, "connlat: bad address %s\n", ip);
    return 2;
  }
  struct linger lg = {1, 0};
  int failures = 0;
  for (int i = 0; i < warm + n; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    long long t0 = now_ns();
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    long long dt = now_ns() - t0;
    close(s);
    if (r < 0) {
      if (++failures > 10) {
        perror("connlat client");
        return 1;
      }
      continue;
    }
    if (i >= warm) printf("%lld\n", dt);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "server") == 0) return server(atoi(argv[2]));
  if (argc >= 5 && strcmp(argv[1], "client") == 0) return client(argv[2], atoi(argv[3]), atoi(argv[4]), argc > 5 ? atoi(argv[5]) : 100);
  fprintf(stderr, "usage: connlat server PORT | connlat client IP PORT N [WARMUP]\n");
  return 2;
}
