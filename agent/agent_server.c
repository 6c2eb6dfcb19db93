/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The event loop: one thread waits (epoll) on the listening socket, the
 * clients, an eventfd for worker completions and a signalfd; while token
 * exchanges run it waits in curl_multi_poll instead, so HTTP progresses in
 * the same loop. Signing and key opening run on worker threads; the loop
 * never blocks on the token or the network.
 */
#define _GNU_SOURCE 1 /* accept4, struct ucred */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "agent/agent.h"
#include "agent/agent_monitor_glue.h"
#include "agent/agent_server.h"
#include "core/pj_log.h"
#include "core/pj_util.h"

#define CONN_BUF_MAX (AGENT_LINE_MAX + 2) /* line + \r + \n */

struct agent_conn {
    struct agent_conn *prev, *next;
    int fd;
    struct agent_peer peer;
    char *in;
    size_t in_len, in_cap;
    size_t peeked; /* bytes in `in` still queued in the socket (conn_read) */
    struct agent_req *head, *tail;
    unsigned n_reqs;
    int64_t last_io;       /* ms */
    int64_t partial_since; /* ms; 0 = no partial line */
    int64_t write_since;   /* ms; 0 = nothing waiting to be written */
    bool dead;
    bool no_read; /* a close_after answer is queued */
    bool want;    /* service after this iteration */
    uint32_t ev;  /* events registered with epoll; 0 = not registered */
};

struct server {
    struct agent *ag;
    int listen_fd;
    bool listen_owned;
    char *sock_path;
    int evfd, sigfd;
    CURLM *multi;
    pthread_t *threads;
    unsigned nthreads;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct agent_job *q_head, *q_tail, *d_head, *d_tail;
    struct agent_job *http; /* transfers in the multi handle (via next) */
    /* certificate checks (agent_monitor_glue.h): queued, done */
    struct agent_mon_task *mq_head, *mq_tail, *md_head, *md_tail;
    bool quit;
    struct agent_conn *conns;
    unsigned nconns, max_conns;
    int epfd; /* every fd of ours but the alert-hook pidfds */
    struct curl_waitfd *wfds;
    size_t wcap;
    bool ready_sent;
    int64_t drain_deadline;
    const char *config_path;
};

/* ---- worker pool ------------------------------------------------------ */

static void *
worker_main(void *arg)
{
    struct server *s = arg;
    struct agent_job *job;
    struct agent_mon_task *t;
    uint64_t one = 1;

    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (!s->quit && s->q_head == NULL && s->mq_head == NULL) {
            pthread_cond_wait(&s->cond, &s->lock);
        }
        if (s->quit) {
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        if (s->q_head == NULL) {
            /* A certificate check; signing jobs go first. */
            t = s->mq_head;
            s->mq_head = t->next;
            if (s->mq_head == NULL) {
                s->mq_tail = NULL;
            }
            pthread_mutex_unlock(&s->lock);
            t->next = NULL;
            agent_mon_task_run(t);
            pthread_mutex_lock(&s->lock);
            if (s->md_tail != NULL) {
                s->md_tail->next = t;
            } else {
                s->md_head = t;
            }
            s->md_tail = t;
            pthread_mutex_unlock(&s->lock);
            if (write(s->evfd, &one, sizeof(one)) < 0) {
                /* eventfd only fails on overflow; the loop drains anyway */
            }
            continue;
        }
        job = s->q_head;
        s->q_head = job->next;
        if (s->q_head == NULL) {
            s->q_tail = NULL;
        }
        pthread_mutex_unlock(&s->lock);
        job->next = NULL;
        agent_job_run(job);
        pthread_mutex_lock(&s->lock);
        if (s->d_tail != NULL) {
            s->d_tail->next = job;
        } else {
            s->d_head = job;
        }
        s->d_tail = job;
        pthread_mutex_unlock(&s->lock);
        if (write(s->evfd, &one, sizeof(one)) < 0) {
            /* eventfd only fails on overflow; the loop drains anyway */
        }
    }
}

static bool
be_submit(struct agent *ag, struct agent_job *job)
{
    struct server *s = ag->be.arg;

    job->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->quit) {
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    if (s->q_tail != NULL) {
        s->q_tail->next = job;
    } else {
        s->q_head = job;
    }
    s->q_tail = job;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return true;
}

static bool
be_mon_submit(void *arg, struct agent_mon_task *t)
{
    struct server *s = arg;

    t->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->quit) {
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    if (s->mq_tail != NULL) {
        s->mq_tail->next = t;
    } else {
        s->mq_head = t;
    }
    s->mq_tail = t;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return true;
}

static void
drain_done(struct server *s)
{
    struct agent_job *job, *next;
    struct agent_mon_task *t, *tn;
    uint64_t v;

    if (read(s->evfd, &v, sizeof(v)) < 0) {
        /* EAGAIN: nothing signalled */
    }
    pthread_mutex_lock(&s->lock);
    job = s->d_head;
    s->d_head = s->d_tail = NULL;
    t = s->md_head;
    s->md_head = s->md_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    for (; job != NULL; job = next) {
        next = job->next;
        job->next = NULL;
        agent_job_done(s->ag, job);
    }
    for (; t != NULL; t = tn) {
        tn = t->next;
        t->next = NULL;
        agent_mon_task_done(s->ag, t, true);
    }
}

/* ---- HTTP (curl multi) ----------------------------------------------------
 */

static pj_rc
be_start_http(struct agent *ag, struct agent_job *job, struct pj_err *err)
{
    struct server *s = ag->be.arg;
    CURL *easy;
    CURLMcode mc;

    PJ_TRY(sf_transfer_new(job->sreq, &job->xfer, err));
    easy = sf_transfer_easy(job->xfer);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *)job);
    mc = curl_multi_add_handle(s->multi, easy);
    if (mc != CURLM_OK) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "curl_multi_add_handle: %s",
                          curl_multi_strerror(mc));
    }
    job->next = s->http;
    s->http = job;
    return PJ_OK;
}

static void
http_unlink(struct server *s, struct agent_job *job)
{
    struct agent_job **pp;

    for (pp = &s->http; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == job) {
            *pp = job->next;
            job->next = NULL;
            return;
        }
    }
}

static void
http_collect(struct server *s)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(s->multi, &left)) != NULL) {
        struct agent_job *job = NULL;
        struct sf_result res;
        struct pj_err err = {0};
        pj_rc rc;

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&job);
        CURLcode code = msg->data.result;
        curl_multi_remove_handle(s->multi, msg->easy_handle);
        http_unlink(s, job);
        sf_result_init(&res);
        rc = sf_transfer_finish(job->xfer, code, &res, &err);
        agent_exchange_done(s->ag, job, rc, &res, &err);
        sf_result_cleanup(&res);
    }
}

/* ---- connections ----------------------------------------------------------
 */

static void
be_answered(struct agent *ag, struct agent_req *req)
{
    (void)ag;
    if (req->conn != NULL) {
        req->conn->want = true;
    }
}

static void
conn_close(struct server *s, struct agent_conn *c)
{
    struct agent_req *r, *rn;

    for (r = c->head; r != NULL; r = rn) {
        rn = r->next;
        r->next = NULL;
        if (r->done) {
            agent_req_free(r);
        } else {
            r->conn = NULL; /* orphan: freed when its work completes */
        }
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    close(c->fd);
    free(c->peer.exe);
    if (c->in != NULL) {
        OPENSSL_cleanse(c->in, c->in_cap);
        free(c->in);
    }
    free(c);
    s->nconns--;
    s->ag->connections = s->nconns;
}

/* Write finished answers at the head, in order. */
static void
conn_flush(struct agent_conn *c, int64_t now)
{
    struct agent_req *r;

    while ((r = c->head) != NULL && r->done && !c->dead) {
        while (r->out_off < r->out.len) {
            ssize_t n = send(c->fd, r->out.data + r->out_off,
                             r->out.len - r->out_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    c->dead = true;
                }
                if (c->write_since == 0) {
                    c->write_since = now;
                }
                return;
            }
            r->out_off += (size_t)n;
            c->last_io = now;
            c->write_since = now;
        }
        c->head = r->next;
        if (c->head == NULL) {
            c->tail = NULL;
        }
        c->n_reqs--;
        c->write_since = 0;
        if (r->close_after) {
            c->dead = true;
        }
        agent_req_free(r);
    }
}

static struct agent_req *
conn_push(struct agent_conn *c)
{
    struct agent_req *req = agent_req_new(c, &c->peer);

    if (req == NULL) {
        c->dead = true;
        return NULL;
    }
    if (c->tail != NULL) {
        c->tail->next = req;
    } else {
        c->head = req;
    }
    c->tail = req;
    c->n_reqs++;
    return req;
}

/* Dispatch complete lines while the pipeline has room. */
static bool
conn_process(struct server *s, struct agent_conn *c, int64_t now)
{
    size_t off = 0;
    bool any = false;

    while (!c->dead && !c->no_read && c->n_reqs < AGENT_PIPELINE_MAX &&
           off < c->in_len) {
        char *line = c->in + off, *nl;
        size_t len;
        struct agent_req *req;

        nl = memchr(line, '\n', c->in_len - off);
        if (nl == NULL) {
            if (c->in_len - off >= CONN_BUF_MAX - 1 && off == 0) {
                /* No newline within the cap: refuse and close. */
                if ((req = conn_push(c)) != NULL) {
                    req->close_after = true;
                    s->ag->dispatching = req;
                    agent_answer_error(s->ag, req, AGENT_E_BAD_REQUEST,
                                       "request line longer than 8192 bytes",
                                       NULL);
                    s->ag->dispatching = NULL;
                }
                c->no_read = true;
                off = c->in_len;
                any = true;
            }
            break;
        }
        len = (size_t)(nl - line);
        off += len + 1;
        if (len > 0 && line[len - 1] == '\r') {
            len--;
        }
        if (len == 0) {
            continue;
        }
        if ((req = conn_push(c)) == NULL) {
            break;
        }
        if (len > AGENT_LINE_MAX) {
            req->close_after = true;
            c->no_read = true;
        }
        agent_dispatch(s->ag, &c->peer, line, len, req);
        any = true;
    }
    if (off > 0) {
        memset(c->in, 0, off < c->in_len ? off : c->in_len);
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    if (c->in_len == 0 && c->in_cap > 1024) {
        /* A long line is done: give its buffer back (conn_read makes a
         * small one), so idle connections hold 1 KiB, not 8. */
        OPENSSL_cleanse(c->in, c->in_cap);
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    c->partial_since =
        c->in_len > 0 ? (c->partial_since ? c->partial_since : now) : 0;
    return any;
}

/*
 * Requests are read with MSG_PEEK and taken off the socket only after their
 * answers are sent. Taking bytes off a Unix socket wakes a peer that sleeps
 * on it (the kernel's write-space wakeup), and a client that has just sent a
 * request sleeps there waiting for its answer: consumed first, every request
 * cost that client a spurious wakeup, and the agent the cross-CPU wake.
 * Consumed after the answer, the client is already awake.
 */
static void
conn_consume(struct agent_conn *c)
{
    char scratch[CONN_BUF_MAX];

    while (c->peeked > 0 && !c->dead) {
        ssize_t n =
            recv(c->fd, scratch,
                 c->peeked < sizeof(scratch) ? c->peeked : sizeof(scratch),
                 MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            c->dead = true; /* the peeked bytes must be there */
            break;
        }
        c->peeked -= (size_t)n;
        OPENSSL_cleanse(scratch, (size_t)n);
    }
}

/* Does the connection hold a complete line it has room to dispatch? */
static bool
conn_has_line(const struct agent_conn *c)
{
    return !c->dead && !c->no_read && c->n_reqs < AGENT_PIPELINE_MAX &&
           c->in_len > 0 && memchr(c->in, '\n', c->in_len) != NULL;
}

/*
 * Dispatch what the wanting connections sent, write the log lines that made
 * (audit lines included), then send the answers: an answer never leaves
 * before its audit line. Repeats while sending freed pipeline room for lines
 * already read.
 */
static void
service(struct server *s, int64_t now)
{
    struct agent_conn *c;
    int rounds;

    for (rounds = 0; rounds < 1000; rounds++) {
        bool again = false;

        for (c = s->conns; c != NULL; c = c->next) {
            if (c->want && !c->dead) {
                conn_process(s, c, now);
            }
        }
        pj_log_flush();
        for (c = s->conns; c != NULL; c = c->next) {
            if (c->want && !c->dead) {
                conn_flush(c, now);
                conn_consume(c);
                c->want = conn_has_line(c);
                again = again || c->want;
            }
        }
        if (!again) {
            break;
        }
    }
}

static void
conn_read(struct agent_conn *c, int64_t now)
{
    ssize_t n;

    /* Start with 1 KiB, enough for every usual request; grow to the cap
     * only when a line needs the room (conn_process shrinks it back). */
    if (c->in == NULL ||
        (c->in_cap < CONN_BUF_MAX && c->in_cap - c->in_len < 256)) {
        size_t ncap = c->in == NULL ? 1024 : CONN_BUF_MAX;
        char *nb = malloc(ncap);

        if (nb == NULL) {
            c->dead = true;
            return;
        }
        if (c->in != NULL) {
            memcpy(nb, c->in, c->in_len);
            OPENSSL_cleanse(c->in, c->in_cap);
            free(c->in);
        }
        c->in = nb;
        c->in_cap = ncap;
    }
    if (c->in_len >= c->in_cap) {
        return;
    }
    conn_consume(c);
    n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_PEEK);
    if (n == 0) {
        /* EOF: answer what is outstanding, then close. */
        c->no_read = true;
        if (c->n_reqs == 0) {
            c->dead = true;
        }
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            c->dead = true;
        }
        return;
    }
    c->in_len += (size_t)n;
    c->peeked = (size_t)n;
    c->last_io = now;
    c->want = true;
}

static void
send_busy_and_close(int fd)
{
    static const char busy[] =
        "{\"ok\":false,\"error\":\"busy\",\"message\":\"the agent has too "
        "many connections; retry shortly\"}\n";
    ssize_t n = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);

    (void)n;
    close(fd);
}

static void
do_accept(struct server *s, int64_t now)
{
    int i;

    for (i = 0; i < 64; i++) {
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        struct agent_conn *c;
        char proc[64], exe[PATH_MAX];
        ssize_t n;
        int fd =
            accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                pj_log_warn("accept: out of file descriptors");
            }
            return;
        }
        if (s->nconns >= s->max_conns || s->ag->stopping) {
            s->ag->ipc_errors[AGENT_E_BUSY]++;
            send_busy_and_close(fd);
            continue;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
            close(fd);
            continue;
        }
        if ((c = calloc(1, sizeof(*c))) == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->peer.uid = cred.uid;
        c->peer.gid = cred.gid;
        c->peer.pid = cred.pid;
        c->peer.exe_errno = ENOENT; /* pid not visible, until read */
        if (cred.pid > 0) {
            snprintf(proc, sizeof(proc), "/proc/%d/exe", (int)cred.pid);
            n = readlink(proc, exe, sizeof(exe) - 1);
            if (n > 0) {
                exe[n] = '\0';
                c->peer.exe = strdup(exe);
            } else {
                c->peer.exe_errno = errno;
            }
        }
        c->last_io = now;
        c->next = s->conns;
        if (s->conns != NULL) {
            s->conns->prev = c;
        }
        s->conns = c;
        s->nconns++;
        s->ag->connections = s->nconns;
        pj_log_debug("connection from uid %u gid %u pid %d", (unsigned)cred.uid,
                     (unsigned)cred.gid, (int)cred.pid);
    }
}

static void
conns_sweep(struct server *s, int64_t now)
{
    struct agent_conn *c;

    for (c = s->conns; c != NULL; c = c->next) {
        if (c->write_since > 0 && now - c->write_since > AGENT_WRITE_STALL_MS) {
            pj_log_info("closing a connection of uid %u: not reading its "
                        "answers",
                        (unsigned)c->peer.uid);
            c->dead = true;
        } else if (c->partial_since > 0 &&
                   now - c->partial_since > AGENT_PARTIAL_MS) {
            pj_log_info("closing a connection of uid %u: request line not "
                        "finished within %d s",
                        (unsigned)c->peer.uid, AGENT_PARTIAL_MS / 1000);
            c->dead = true;
        } else if (c->n_reqs == 0 && c->in_len == 0 &&
                   now - c->last_io > AGENT_IDLE_MS) {
            c->dead = true;
        } else if (s->ag->stopping && c->n_reqs == 0) {
            c->dead = true;
        }
    }
}

/* ---- signals and reload
 * ------------------------------------------------------ */

static void
do_reload(struct server *s)
{
    struct pj_config *cfg = NULL;
    struct pj_err err = {0};

    agent_notify("RELOADING=1");
    pj_log_notice("SIGHUP: reloading %s", s->config_path);
    if (pj_config_load_file(s->config_path, &cfg, &err) != PJ_OK) {
        pj_log_err("reload refused, keeping the running config: %s", err.msg);
    } else {
        agent_reload(s->ag, cfg);
        agent_mon_reloaded(s->ag); /* re-check every certificate */
    }
    agent_notify("READY=1");
}

static void
begin_stop(struct server *s, const char *why)
{
    if (s->ag == NULL || s->ag->stopping) {
        return;
    }
    pj_log_notice("%s: finishing in-flight requests, then exiting", why);
    agent_notify("STOPPING=1");
    s->ag->stopping = true;
    s->drain_deadline = pj_time_mono_ms() + AGENT_DRAIN_MS;
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        s->listen_fd = -1;
        if (s->listen_owned && s->sock_path != NULL) {
            unlink(s->sock_path);
        }
    }
}

static void
do_signals(struct server *s)
{
    struct signalfd_siginfo si;

    while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            do_reload(s);
        } else {
            begin_stop(s, si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        }
    }
}

/* ---- loop -------------------------------------------------------------------
 */

/*
 * Readiness comes from epoll, whose registrations persist: an iteration
 * costs one wait however many clients are connected, where poll(2) would
 * register and unregister every fd every time. libcurl's own sockets are
 * polled by curl_multi_poll, with the epoll fd as one extra fd, only while
 * a token exchange is running.
 */
static char TAG_EVENT, TAG_SIGNAL, TAG_LISTEN; /* epoll tags of fixed fds */

static bool
ep_add(struct server *s, int fd, void *tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};

    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

/* Register what the connection waits for, when that changed. */
static void
conn_watch(struct server *s, struct agent_conn *c)
{
    struct epoll_event ev = {.events = 0, .data.ptr = c};
    int op;

    if (!c->no_read && !s->ag->stopping && c->n_reqs < AGENT_PIPELINE_MAX &&
        c->in_len < CONN_BUF_MAX) {
        ev.events |= EPOLLIN;
    }
    if (c->head != NULL && c->head->done && c->write_since != 0) {
        ev.events |= EPOLLOUT; /* an answer met a full socket buffer */
    }
    if (ev.events == c->ev) {
        return;
    }
    /* Nothing to wait for: unregister, or EPOLLHUP would fire forever. */
    op = ev.events == 0 ? EPOLL_CTL_DEL
                        : (c->ev == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD);
    if (epoll_ctl(s->epfd, op, c->fd, &ev) != 0) {
        pj_log_warn("epoll_ctl: %s", strerror(errno));
        c->dead = true;
        return;
    }
    c->ev = ev.events;
}

static bool
add_wfd(struct server *s, size_t *n, int fd, short events)
{
    if (*n == s->wcap) {
        size_t ncap = s->wcap ? s->wcap * 2 : 8;
        struct curl_waitfd *nw = realloc(s->wfds, ncap * sizeof(*nw));
        if (nw == NULL) {
            return false;
        }
        s->wfds = nw;
        s->wcap = ncap;
    }
    s->wfds[*n].fd = fd;
    s->wfds[*n].events = events;
    s->wfds[*n].revents = 0;
    (*n)++;
    return true;
}

/* Sleep until something is ready or timeout_ms passes; returns how many
 * epoll events were collected into evs. */
static int
wait_events(struct server *s, struct epoll_event *evs, int max,
            int64_t timeout_ms)
{
    int hfds[AGENT_MON_HOOKS_MAX], running = 0, numfds = 0, n;
    size_t nh = agent_mon_fds(s->ag, hfds, AGENT_MON_HOOKS_MAX), h, nw = 0;

    if (s->http == NULL && nh == 0) {
        n = epoll_wait(s->epfd, evs, max, (int)timeout_ms);
        return n < 0 ? 0 : n;
    }
    /* Exchanges or alert hooks running: curl's sockets and the hooks'
     * pidfds are polled alongside the epoll fd. */
    add_wfd(s, &nw, s->epfd, POLLIN);
    for (h = 0; h < nh; h++) {
        add_wfd(s, &nw, hfds[h], POLLIN);
    }
    curl_multi_poll(s->multi, s->wfds, (unsigned)nw, (int)timeout_ms, &numfds);
    curl_multi_perform(s->multi, &running);
    http_collect(s);
    n = epoll_wait(s->epfd, evs, max, 0);
    return n < 0 ? 0 : n;
}

static void
loop(struct server *s)
{
    enum { EVENTS_MAX = 256 };
    struct epoll_event evs[EVENTS_MAX];
    int64_t next_sweep = 0;

    for (;;) {
        int64_t now = pj_time_mono_ms(), t, timeout = 1000;
        struct agent_conn *c, *cn;
        int i, n;

        t = agent_timers_run(s->ag);
        if (t >= 0 && t < timeout) {
            timeout = t;
        }
        t = agent_mon_tick(s->ag, now);
        if (t >= 0 && t < timeout) {
            timeout = t;
        }
        if (!s->ready_sent && s->ag->opening == 0) {
            s->ready_sent = true;
            agent_notify("READY=1\nSTATUS=serving");
            pj_log_notice("ready");
        }
        if (s->ag->stopping) {
            if ((s->nconns == 0 && agent_busy(s->ag) == 0) ||
                now >= s->drain_deadline) {
                if (s->nconns > 0 || agent_busy(s->ag) > 0) {
                    pj_log_warn("shutdown: %u connections and %u jobs still "
                                "outstanding after %d s; exiting",
                                s->nconns, agent_busy(s->ag),
                                AGENT_DRAIN_MS / 1000);
                }
                return;
            }
            if (timeout > 100) {
                timeout = 100;
            }
        }
        for (c = s->conns; c != NULL; c = c->next) {
            conn_watch(s, c);
        }
        pj_log_flush(); /* nothing waits in memory while the loop sleeps */
        n = wait_events(s, evs, EVENTS_MAX, timeout);
        now = pj_time_mono_ms();
        for (i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            uint32_t e = evs[i].events;

            if (tag == &TAG_SIGNAL) {
                do_signals(s);
            } else if (tag == &TAG_EVENT) {
                drain_done(s);
            } else if (tag == &TAG_LISTEN) {
                if (s->listen_fd >= 0) {
                    do_accept(s, now);
                }
            } else {
                c = tag;
                if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                    size_t before = c->in_len;
                    bool was_open = !c->no_read;

                    conn_read(c, now);
                    if ((e & (EPOLLHUP | EPOLLERR)) && c->in_len == before &&
                        was_open == !c->no_read) {
                        /* Gone, and nothing more can be read: answer what
                         * is outstanding (if it still can) and close. */
                        c->no_read = true;
                    }
                }
                if (e & EPOLLOUT) {
                    c->want = true;
                }
            }
        }
        agent_mon_reap(s->ag, now); /* non-blocking */
        service(s, now);
        for (c = s->conns; c != NULL; c = c->next) {
            if (c->no_read && c->n_reqs == 0) {
                c->dead = true;
            }
        }
        if (now >= next_sweep || s->ag->stopping) {
            conns_sweep(s, now);
            next_sweep = now + 1000;
        }
        for (c = s->conns; c != NULL; c = cn) {
            cn = c->next;
            if (c->dead) {
                conn_close(s, c);
            }
        }
    }
}

/* ---- setup and teardown
 * --------------------------------------------------------- */

static void
abort_jobs(struct server *s)
{
    struct agent_job *job, *next;

    struct agent_mon_task *t, *tn;

    /* Jobs never picked up by a worker. */
    pthread_mutex_lock(&s->lock);
    job = s->q_head;
    s->q_head = s->q_tail = NULL;
    t = s->mq_head;
    s->mq_head = s->mq_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    for (; t != NULL; t = tn) {
        tn = t->next;
        t->next = NULL;
        agent_mon_task_done(s->ag, t, false);
    }
    for (; job != NULL; job = next) {
        next = job->next;
        job->next = NULL;
        job->rc =
            pj_err_set(&job->err, PJ_ERR_TIMEOUT, "the agent is shutting down");
        agent_job_done(s->ag, job);
    }
    drain_done(s);
    /* Transfers still running. */
    while ((job = s->http) != NULL) {
        struct pj_err err = {0};
        s->http = job->next;
        job->next = NULL;
        curl_multi_remove_handle(s->multi, sf_transfer_easy(job->xfer));
        pj_err_set(&err, PJ_ERR_TIMEOUT, "the agent is shutting down");
        agent_exchange_done(s->ag, job, PJ_ERR_TIMEOUT, NULL, &err);
    }
}

static unsigned
conn_limit(void)
{
    struct rlimit rl;
    unsigned lim = AGENT_CONN_MAX;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < 4096) {
            rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < lim + 64) {
            lim = rl.rlim_cur > 128 ? (unsigned)rl.rlim_cur - 64 : 64;
        }
    }
    return lim;
}

pj_rc
agent_serve(const struct agent_serve_opts *opts, struct pj_config *cfg,
            struct pj_err *err)
{
    struct server s;
    struct agent_backend be;
    struct hsm_module *mod = NULL;
    sigset_t mask;
    const char *modpath;
    pj_rc rc = PJ_OK;
    unsigned i;

    memset(&s, 0, sizeof(s));
    s.listen_fd = s.evfd = s.sigfd = s.epfd = -1;
    s.config_path = opts->config_path;
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    s.max_conns = conn_limit();

    /* Signals go to the signalfd; block them before any thread exists
     * (workers and the PKCS#11 module's own threads inherit the mask). */
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    if ((s.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
        (s.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        rc = pj_err_sys(err, "cannot create signalfd/eventfd");
        goto out_cfg;
    }
    if ((rc = agent_socket_open(&cfg->agent, &s.listen_fd, &s.listen_owned,
                                err)) != PJ_OK) {
        goto out_cfg;
    }
    if ((s.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        !ep_add(&s, s.evfd, &TAG_EVENT) || !ep_add(&s, s.sigfd, &TAG_SIGNAL) ||
        !ep_add(&s, s.listen_fd, &TAG_LISTEN)) {
        rc = pj_err_sys(err, "cannot set up epoll");
        goto out_cfg;
    }
    if (s.listen_owned &&
        (s.sock_path = strdup(cfg->agent.socket ? cfg->agent.socket
                                                : PJ_CONFIG_DEFAULT_SOCKET)) ==
            NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out_cfg;
    }
    if ((rc = sf_global_init(err)) != PJ_OK) {
        goto out_cfg;
    }
    if ((s.multi = curl_multi_init()) == NULL) {
        rc = pj_err_set(err, PJ_ERR_INTERNAL, "curl_multi_init failed");
        goto out_cfg;
    }
    /* No fork happens from here on (and never after C_Initialize). */
    modpath = hsm_module_path_resolve(cfg->agent.module);
    if ((rc = hsm_module_load(modpath, &mod, err)) != PJ_OK) {
        goto out_cfg;
    }
    memset(&be, 0, sizeof(be));
    be.submit = be_submit;
    be.start_http = be_start_http;
    be.answered = be_answered;
    be.arg = &s;
    if ((rc = agent_new(cfg, mod, &be, &s.ag, err)) != PJ_OK) {
        cfg = NULL; /* owned by agent_new even on failure */
        goto out;
    }
    cfg = NULL;
    s.ag->workers = opts->workers ? opts->workers : AGENT_WORKERS_DEFAULT;
    s.nthreads = s.ag->workers;
    if ((s.threads = calloc(s.nthreads, sizeof(*s.threads))) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (i = 0; i < s.nthreads; i++) {
        if (pthread_create(&s.threads[i], NULL, worker_main, &s) != 0) {
            s.nthreads = i;
            rc = pj_err_set(err, PJ_ERR_INTERNAL,
                            "cannot start worker thread %u", i);
            goto out;
        }
    }
    if ((rc = agent_mon_new(s.ag, be_mon_submit, &s, err)) != PJ_OK) {
        goto out;
    }
    pj_log_notice("p11jwt-agent starting: %zu profiles, %u workers, module "
                  "%s, up to %u connections",
                  s.ag->cfg->cfg->n_profiles, s.nthreads, modpath, s.max_conns);
    agent_open_keys(s.ag);
    agent_mon_request(s.ag); /* once the keys are open */
    pj_log_hold(true);
    loop(&s);
out:
    pj_log_hold(false);
    begin_stop(&s, "exit");
    pthread_mutex_lock(&s.lock);
    s.quit = true;
    pthread_cond_broadcast(&s.cond);
    pthread_mutex_unlock(&s.lock);
    for (i = 0; i < s.nthreads; i++) {
        pthread_join(s.threads[i], NULL);
    }
    if (s.ag != NULL) {
        abort_jobs(&s);
        while (s.conns != NULL) {
            conn_close(&s, s.conns);
        }
        agent_mon_free(s.ag);
        agent_free(s.ag);
    }
    free(s.threads);
    free(s.wfds);
    hsm_module_free(mod);
out_cfg:
    pj_config_free(cfg);
    if (s.multi != NULL) {
        curl_multi_cleanup(s.multi);
    }
    if (s.listen_fd >= 0) {
        close(s.listen_fd);
        if (s.listen_owned && s.sock_path != NULL) {
            unlink(s.sock_path);
        }
    }
    free(s.sock_path);
    if (s.evfd >= 0) {
        close(s.evfd);
    }
    if (s.sigfd >= 0) {
        close(s.sigfd);
    }
    if (s.epfd >= 0) {
        close(s.epfd);
    }
    pthread_mutex_destroy(&s.lock);
    pthread_cond_destroy(&s.cond);
    return rc;
}
