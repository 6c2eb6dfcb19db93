/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_agent: p11jwt-agent throughput, latency and memory, each against a
 * baseline measured in the same run (bench/run-agent.sh drives it):
 *
 *   a  assertions/s through the socket vs a plain hsm_key_sign (C_Sign)
 *      loop on the same token with the same number of threads, in
 *      alternating rounds, with the CPU time per signature of each
 *   b  cached `token` requests/s and p50/p99 latency at 1, 16 and 64
 *      connections, vs a trivial line-echo server on socketpairs
 *   d  the agent's RSS before, after 100,000 and after 1,000,000 requests
 *
 *   bench_agent --socket PATH --profile P [--parts abd] [--threads N]
 *               [--seconds S] [--key URI --pin-source SRC [--module PATH]]
 *               [--agent-pid PID] [--requests N]
 *   bench_agent --socket PATH --profile P --oneshot   one token request
 *
 * Requests are preformatted lines and answers are checked for "ok":true
 * without parsing, so the client costs little next to the agent. Never a
 * ctest test: it prints numbers, it does not judge the machine.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/pj_util.h"
#include "pkcs11/hsm.h"

#define LINE_MAX_BYTES 65536

struct opts {
    const char *socket;
    const char *profile;
    const char *key;
    const char *pin_source;
    const char *module;
    const char *parts;
    int threads;
    int clients; /* part a: agent connections; 0 = 2 x threads */
    int rounds;  /* part a */
    double seconds;
    long agent_pid;
    long requests;
    bool oneshot;
};

struct conn {
    int fd;
    char buf[LINE_MAX_BYTES];
};

/* What one worker thread does and what it measured. */
struct worker {
    pthread_t tid;
    const struct opts *o;
    int fd; /* a connected socket (agent or echo) */
    const char *req;
    size_t reqlen;
    struct hsm_key *key; /* baseline signing instead of a socket */
    long limit;          /* stop after this many requests; 0 = by time */
    bool record;         /* keep every latency */
    uint64_t *lat_ns;
    size_t nlat, caplat;
    long ok, failed;
};

static atomic_bool stop_flag;

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
connect_agent(const char *path)
{
    struct sockaddr_un sun;
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (!pj_strlcpy(sun.sun_path, path, sizeof(sun.sun_path))) {
        fprintf(stderr, "bench_agent: socket path too long\n");
        return -1;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        perror("bench_agent: socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        fprintf(stderr, "bench_agent: connect %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Send one line, read one answer line; true when it says "ok":true. */
static bool
roundtrip(int fd, const char *req, size_t reqlen, char *buf, size_t cap)
{
    size_t off = 0, held = 0;
    ssize_t n;

    while (off < reqlen) {
        n = send(fd, req + off, reqlen - off, MSG_NOSIGNAL);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return false;
        }
        off += (size_t)n;
    }
    for (;;) {
        if (held == cap) {
            return false;
        }
        n = recv(fd, buf + held, cap - held, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return false;
        }
        held += (size_t)n;
        if (memchr(buf + held - (size_t)n, '\n', (size_t)n) != NULL) {
            break;
        }
    }
    /* Any key order: a token never contains a quote, so no false match. */
    return memmem(buf, held, "\"ok\":true", 9) != NULL;
}

static void
lat_add(struct worker *w, uint64_t ns)
{
    uint64_t *nl;

    if (w->nlat == w->caplat) {
        size_t ncap = w->caplat == 0 ? 4096 : w->caplat * 2;
        if ((nl = realloc(w->lat_ns, ncap * sizeof(*nl))) == NULL) {
            return;
        }
        w->lat_ns = nl;
        w->caplat = ncap;
    }
    w->lat_ns[w->nlat++] = ns;
}

static void *
worker_run(void *arg)
{
    struct worker *w = arg;
    static const char msg[600] = "eyJhbGciOiJSUzI1NiJ9.benchmark-payload";
    uint8_t sig[HSM_SIG_MAX];
    size_t siglen;
    struct pj_err err = {0};
    char *buf = NULL;
    uint64_t t0;
    bool ok;

    if (w->key == NULL && (buf = malloc(LINE_MAX_BYTES)) == NULL) {
        return NULL;
    }
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed) &&
           (w->limit == 0 || w->ok + w->failed < w->limit)) {
        t0 = now_ns();
        if (w->key != NULL) {
            siglen = sizeof(sig);
            pj_err_clear(&err);
            ok = hsm_key_sign(w->key, (const uint8_t *)msg, sizeof(msg), sig,
                              &siglen, &err) == PJ_OK;
        } else {
            ok = roundtrip(w->fd, w->req, w->reqlen, buf, LINE_MAX_BYTES);
        }
        if (w->record) {
            lat_add(w, now_ns() - t0);
        }
        if (ok) {
            w->ok++;
        } else {
            w->failed++;
            if (w->key == NULL) {
                break; /* a broken connection stays broken */
            }
        }
    }
    free(buf);
    return NULL;
}

/* The baseline for (b): answers each line with a token-sized line. */
static void *
echo_run(void *arg)
{
    static const char answer[] =
        "{\"ok\":true,\"access_token\":\"00Dxx0000000000!AQ0AQbench-token-"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123"
        "456789abcdef0123456789abcdef\",\"instance_url\":\"https://127.0.0.1:"
        "1\",\"token_type\":\"Bearer\",\"issued_at\":1795880347,\"expires_at\":"
        "1795887547,\"profile\":\"prod\",\"subject\":\"integration@example."
        "com\"}\n";
    int fd = *(int *)arg;
    char buf[8192];
    ssize_t n;

    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
        if (memchr(buf, '\n', (size_t)n) != NULL &&
            send(fd, answer, sizeof(answer) - 1, MSG_NOSIGNAL) < 0) {
            break;
        }
    }
    close(fd);
    return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

struct result {
    double per_s;
    double p50_us, p99_us;
    long ok, failed;
};

/*
 * Run n workers (already given fds or a key) for o->seconds (or until
 * limit requests each) and summarise.
 */
static int
run_workers(struct worker *ws, int n, const struct opts *o, struct result *r)
{
    uint64_t t0, t1, *all = NULL;
    size_t total = 0, k = 0;
    int i;

    memset(r, 0, sizeof(*r));
    for (i = 0; i < n; i++) {
        ws[i].ok = ws[i].failed = 0;
    }
    atomic_store(&stop_flag, false);
    t0 = now_ns();
    for (i = 0; i < n; i++) {
        if (pthread_create(&ws[i].tid, NULL, worker_run, &ws[i]) != 0) {
            fprintf(stderr, "bench_agent: pthread_create failed\n");
            atomic_store(&stop_flag, true);
            n = i;
            break;
        }
    }
    if (ws[0].limit == 0) {
        struct timespec ts = {
            (time_t)o->seconds,
            (long)((o->seconds - (double)(time_t)o->seconds) * 1e9)};
        nanosleep(&ts, NULL);
        atomic_store(&stop_flag, true);
    }
    for (i = 0; i < n; i++) {
        pthread_join(ws[i].tid, NULL);
    }
    t1 = now_ns();
    for (i = 0; i < n; i++) {
        r->ok += ws[i].ok;
        r->failed += ws[i].failed;
        total += ws[i].nlat;
    }
    r->per_s = (double)r->ok / ((double)(t1 - t0) / 1e9);
    if (total > 0 && (all = malloc(total * sizeof(*all))) != NULL) {
        for (i = 0; i < n; i++) {
            memcpy(all + k, ws[i].lat_ns, ws[i].nlat * sizeof(*all));
            k += ws[i].nlat;
        }
        qsort(all, total, sizeof(*all), cmp_u64);
        r->p50_us = (double)all[total / 2] / 1000.0;
        r->p99_us = (double)all[(total * 99) / 100] / 1000.0;
    }
    free(all);
    for (i = 0; i < n; i++) {
        free(ws[i].lat_ns);
        ws[i].lat_ns = NULL;
        ws[i].nlat = ws[i].caplat = 0;
    }
    return r->failed == 0 ? 0 : 1;
}

static char *
make_req(const char *op, const char *profile, size_t *lenp)
{
    char *s = malloc(256);

    if (s == NULL) {
        return NULL;
    }
    snprintf(s, 256, "{\"op\":\"%s\",\"profile\":\"%s\"}\n", op, profile);
    *lenp = strlen(s);
    return s;
}

/* n agent connections running req; -1 if any connect failed. */
static int
agent_workers(const struct opts *o, int n, const char *req, size_t reqlen,
              long limit, bool record, struct result *r)
{
    struct worker *ws = calloc((size_t)n, sizeof(*ws));
    int i, rc = -1;

    if (ws == NULL) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        ws[i].fd = -1;
    }
    for (i = 0; i < n; i++) {
        ws[i].o = o;
        ws[i].req = req;
        ws[i].reqlen = reqlen;
        ws[i].limit = limit;
        ws[i].record = record;
        if ((ws[i].fd = connect_agent(o->socket)) < 0) {
            goto out;
        }
    }
    rc = run_workers(ws, n, o, r);
out:
    for (i = 0; i < n; i++) {
        if (ws[i].fd >= 0) {
            close(ws[i].fd);
        }
    }
    free(ws);
    return rc;
}

static int
echo_workers(const struct opts *o, int n, const char *req, size_t reqlen,
             struct result *r)
{
    struct worker *ws = calloc((size_t)n, sizeof(*ws));
    pthread_t *eth = calloc((size_t)n, sizeof(*eth));
    int *efd = calloc((size_t)n, sizeof(*efd));
    int i, sv[2], started = 0, rc = -1;

    if (ws == NULL || eth == NULL || efd == NULL) {
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            goto out;
        }
        ws[i].o = o;
        ws[i].fd = sv[0];
        ws[i].req = req;
        ws[i].reqlen = reqlen;
        ws[i].record = true;
        efd[i] = sv[1];
        if (pthread_create(&eth[i], NULL, echo_run, &efd[i]) != 0) {
            close(sv[0]);
            close(sv[1]);
            ws[i].fd = -1;
            goto out;
        }
        started++;
    }
    rc = run_workers(ws, n, o, r);
out:
    for (i = 0; i < started; i++) {
        shutdown(ws[i].fd, SHUT_RDWR);
        close(ws[i].fd);
        pthread_join(eth[i], NULL);
    }
    free(ws);
    free(eth);
    free(efd);
    return rc;
}

/* CPU seconds (user + system) used so far by process pid; -1 if unknown. */
static double
proc_cpu_s(long pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    if ((f = fopen(path, "r")) == NULL) {
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the ")" that ends comm: state is 3, utime 14, stime 15. */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) != 2) {
        return -1;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double
self_cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define ROUNDS_MAX 64

/*
 * Rounds alternate the two paths (and which goes first), so a machine whose
 * speed drifts slows both alike; the headline is the median of the
 * per-round ratios. CPU time per signature is printed beside the rates: it
 * is what the agent's IPC, threads and JSON actually cost, and other load
 * on the machine disturbs it far less than the rates.
 */
static int
part_a(const struct opts *o)
{
    struct hsm_module *mod = NULL;
    struct hsm_key *key = NULL;
    struct hsm_key_opts ko = {0};
    struct pj_err err = {0};
    struct worker *ws = NULL;
    struct result base, agent;
    double b_rate[ROUNDS_MAX], a_rate[ROUNDS_MAX], ratio[ROUNDS_MAX];
    double b_cpu[ROUNDS_MAX], a_cpu[ROUNDS_MAX], c_cpu[ROUNDS_MAX];
    double p99[ROUNDS_MAX];
    char *req = NULL;
    size_t reqlen;
    long failed = 0;
    /* Two connections per worker by default: with one, a worker idles for
     * every answer's round trip through the client, which the baseline
     * threads never do; two keep a request queued for each worker. */
    int i, r, rc = 1, clients = o->clients ? o->clients : 2 * o->threads;

    if (o->key == NULL) {
        fprintf(stderr, "bench_agent: part a needs --key and --pin-source\n");
        return 1;
    }
    ko.uri = o->key;
    ko.pin_source = o->pin_source;
    ko.sessions = (unsigned)o->threads;
    if (hsm_module_load(hsm_module_path_resolve(o->module), &mod, &err) !=
            PJ_OK ||
        hsm_key_open(mod, &ko, &key, &err) != PJ_OK) {
        fprintf(stderr, "bench_agent: %s\n", err.msg);
        goto out;
    }
    if ((ws = calloc((size_t)o->threads, sizeof(*ws))) == NULL ||
        (req = make_req("assertion", o->profile, &reqlen)) == NULL) {
        goto out;
    }
    for (i = 0; i < o->threads; i++) {
        ws[i].o = o;
        ws[i].key = key;
        ws[i].fd = -1;
    }
    printf("(a) signing: %d baseline threads vs %d agent workers fed by %d "
           "connections,\n    %d rounds of %.0f s per path, alternating\n",
           o->threads, o->threads, clients, o->rounds, o->seconds);
    printf("    %5s  %10s %10s  %10s %10s %10s %9s  %6s\n", "round", "base /s",
           "cpu us", "agent /s", "cpu us", "+client", "p99 us", "ratio");
    for (r = 0; r < o->rounds; r++) {
        for (i = 0; i < 2; i++) {
            double t0, t1, g0 = 0, g1 = 0;
            bool agent_turn = (i == 0) == (r % 2 == 1);

            t0 = self_cpu_s();
            if (!agent_turn) {
                (void)run_workers(ws, o->threads, o, &base);
                b_cpu[r] = (self_cpu_s() - t0) * 1e6 /
                           (double)(base.ok > 0 ? base.ok : 1);
                b_rate[r] = base.per_s;
                continue;
            }
            if (o->agent_pid > 0) {
                g0 = proc_cpu_s(o->agent_pid);
            }
            if (agent_workers(o, clients, req, reqlen, 0, true, &agent) < 0) {
                goto out;
            }
            t1 = self_cpu_s();
            if (o->agent_pid > 0) {
                g1 = proc_cpu_s(o->agent_pid);
            }
            a_rate[r] = agent.per_s;
            p99[r] = agent.p99_us;
            a_cpu[r] =
                g0 >= 0 && g1 >= 0 && o->agent_pid > 0
                    ? (g1 - g0) * 1e6 / (double)(agent.ok > 0 ? agent.ok : 1)
                    : 0;
            c_cpu[r] = (t1 - t0) * 1e6 / (double)(agent.ok > 0 ? agent.ok : 1);
            failed += agent.failed;
        }
        ratio[r] = b_rate[r] > 0 ? a_rate[r] / b_rate[r] : 0;
        printf("    %5d  %10.1f %10.0f  %10.1f %10.0f %10.0f %9.0f  %6.3f\n",
               r + 1, b_rate[r], b_cpu[r], a_rate[r], a_cpu[r], c_cpu[r],
               p99[r], ratio[r]);
    }
    {
        double mb = median(b_rate, o->rounds), ma = median(a_rate, o->rounds);
        double mr = median(ratio, o->rounds);
        double cb = median(b_cpu, o->rounds), ca = median(a_cpu, o->rounds);
        double cc = median(c_cpu, o->rounds);

        printf("    median: baseline %.1f /s, agent %.1f /s (%ld failed); "
               "ratio of medians %.3f\n",
               mb, ma, failed, mb > 0 ? ma / mb : 0.0);
        if (o->agent_pid > 0) {
            printf("    cpu per signature: baseline %.0f us, agent %.0f us "
                   "(%.2fx), agent + client %.0f us (%.2fx)\n",
                   cb, ca, ca > 0 ? cb / ca : 0.0, ca + cc,
                   ca + cc > 0 ? cb / (ca + cc) : 0.0);
        }
        printf("    ratio     %.3f  median of the per-round ratios (target "
               ">= 0.85: %s)\n",
               mr, mr >= 0.85 ? "met" : "NOT met");
    }
    rc = failed == 0 ? 0 : 1;
out:
    free(req);
    free(ws);
    hsm_key_free(key);
    hsm_module_free(mod);
    return rc;
}

static int
part_b(const struct opts *o)
{
    static const int conns[] = {1, 16, 64};
    struct result echo, agent;
    char *req;
    size_t reqlen, i;
    int rc = 0;

    if ((req = make_req("token", o->profile, &reqlen)) == NULL) {
        return 1;
    }
    /* Warm the cache so every measured request is a cached one. */
    if (agent_workers(o, 1, req, reqlen, 1, false, &agent) != 0) {
        fprintf(stderr, "bench_agent: the first token request failed\n");
        free(req);
        return 1;
    }
    printf("(b) cached token requests, %.0f s per point\n", o->seconds);
    printf("    %5s  %12s %9s %9s   %12s %9s %9s  %6s\n", "conns", "agent /s",
           "p50 us", "p99 us", "echo /s", "p50 us", "p99 us", "ratio");
    for (i = 0; i < PJ_ARRAY_SIZE(conns); i++) {
        if (echo_workers(o, conns[i], req, reqlen, &echo) < 0 ||
            agent_workers(o, conns[i], req, reqlen, 0, true, &agent) < 0) {
            rc = 1;
            break;
        }
        printf("    %5d  %12.0f %9.1f %9.1f   %12.0f %9.1f %9.1f  %6.3f%s\n",
               conns[i], agent.per_s, agent.p50_us, agent.p99_us, echo.per_s,
               echo.p50_us, echo.p99_us,
               echo.per_s > 0 ? agent.per_s / echo.per_s : 0.0,
               agent.failed != 0 ? "  (failures!)" : "");
        if (conns[i] == 16) {
            printf("    target at 16: >= 50000/s and p99 < 1000 us: %s\n",
                   agent.per_s >= 50000 && agent.p99_us < 1000 ? "met"
                                                               : "NOT met");
        }
        rc |= agent.failed != 0;
    }
    free(req);
    return rc;
}

static long
status_kib(long pid, const char *field)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    if ((f = fopen(path, "r")) == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, strlen(field)) == 0) {
            kib = strtol(line + strlen(field), NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

static long
rss_kib(long pid)
{
    return status_kib(pid, "VmRSS:");
}

static int
part_d(const struct opts *o)
{
    const int nconn = 16;
    long before, at100k, at1m, first = o->requests / 10;
    struct result r1, r2;
    char *req;
    size_t reqlen;
    int rc = 1;

    if (o->agent_pid <= 0) {
        fprintf(stderr, "bench_agent: part d needs --agent-pid\n");
        return 1;
    }
    if ((req = make_req("token", o->profile, &reqlen)) == NULL) {
        return 1;
    }
    before = rss_kib(o->agent_pid);
    if (agent_workers(o, nconn, req, reqlen, first / nconn, false, &r1) < 0) {
        goto out;
    }
    at100k = rss_kib(o->agent_pid);
    if (agent_workers(o, nconn, req, reqlen, (o->requests - first) / nconn,
                      false, &r2) < 0) {
        goto out;
    }
    at1m = rss_kib(o->agent_pid);
    printf("(d) agent RSS over %ld cached token requests on %d connections\n",
           r1.ok + r1.failed + r2.ok + r2.failed, nconn);
    printf("    start %ld KiB, after %ld: %ld KiB, after %ld: %ld KiB\n",
           before, r1.ok + r1.failed, at100k,
           r1.ok + r1.failed + r2.ok + r2.failed, at1m);
    printf("    growth %+ld KiB (100k -> 1M), ratio %.3f; target < 16384 KiB "
           "and no growth: %s\n",
           at1m - at100k, at100k > 0 ? (double)at1m / (double)at100k : 0.0,
           at1m < 16384 && at1m - at100k <= 256 ? "met" : "NOT met");
    printf("    of which anonymous (heap, stacks) %ld KiB, file-backed "
           "(libraries) %ld KiB\n",
           status_kib(o->agent_pid, "RssAnon:"),
           status_kib(o->agent_pid, "RssFile:"));
    rc = r1.failed + r2.failed == 0 ? 0 : 1;
out:
    free(req);
    return rc;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: bench_agent --socket PATH --profile P [--parts abd] "
               "[--threads N]\n"
               "                   [--seconds S] [--key URI --pin-source SRC "
               "[--module PATH]]\n"
               "                   [--rounds N] [--clients N] (part a)\n"
               "                   [--agent-pid PID] [--requests N]\n"
               "       bench_agent --socket PATH --profile P --oneshot\n");
}

int
main(int argc, char **argv)
{
    struct opts o = {.parts = "abd",
                     .threads = 4,
                     .rounds = 5,
                     .seconds = 5,
                     .requests = 1000000};
    struct result r;
    char *req;
    size_t reqlen;
    long v;
    int i, rc = 0;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--oneshot") == 0) {
            o.oneshot = true;
            continue;
        }
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (val == NULL) {
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--socket") == 0) {
            o.socket = val;
        } else if (strcmp(a, "--profile") == 0) {
            o.profile = val;
        } else if (strcmp(a, "--key") == 0) {
            o.key = val;
        } else if (strcmp(a, "--pin-source") == 0) {
            o.pin_source = val;
        } else if (strcmp(a, "--module") == 0) {
            o.module = val;
        } else if (strcmp(a, "--parts") == 0) {
            o.parts = val;
        } else if (strcmp(a, "--threads") == 0 &&
                   pj_parse_long(val, 1, 256, &v) == PJ_OK) {
            o.threads = (int)v;
        } else if (strcmp(a, "--clients") == 0 &&
                   pj_parse_long(val, 1, 1024, &v) == PJ_OK) {
            o.clients = (int)v;
        } else if (strcmp(a, "--rounds") == 0 &&
                   pj_parse_long(val, 1, ROUNDS_MAX, &v) == PJ_OK) {
            o.rounds = (int)v;
        } else if (strcmp(a, "--seconds") == 0 &&
                   pj_parse_long(val, 1, 3600, &v) == PJ_OK) {
            o.seconds = (double)v;
        } else if (strcmp(a, "--agent-pid") == 0 &&
                   pj_parse_long(val, 1, 1L << 30, &v) == PJ_OK) {
            o.agent_pid = v;
        } else if (strcmp(a, "--requests") == 0 &&
                   pj_parse_long(val, 1000, 1000000000L, &v) == PJ_OK) {
            o.requests = v;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (o.socket == NULL || o.profile == NULL) {
        usage(stderr);
        return 2;
    }
    if (o.oneshot) {
        if ((req = make_req("token", o.profile, &reqlen)) == NULL) {
            return 1;
        }
        rc = agent_workers(&o, 1, req, reqlen, 1, false, &r) == 0 ? 0 : 1;
        free(req);
        return rc;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strchr(o.parts, 'a') != NULL) {
        rc |= part_a(&o);
    }
    if (strchr(o.parts, 'b') != NULL) {
        rc |= part_b(&o);
    }
    if (strchr(o.parts, 'd') != NULL) {
        rc |= part_d(&o);
    }
    return rc;
}
