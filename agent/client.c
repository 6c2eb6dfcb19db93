/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's IPC client: see agent/client.h. */
#include "agent/client.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "core/pj_config.h"
#include "core/pj_util.h"

/* Bytes read per recv(); the buffer grows up to AGENT_CLIENT_ANSWER_MAX. */
#define CLIENT_READ_CHUNK 16384

struct agent_client {
    int fd;
    int timeout_ms;
    char *path;
    char *buf;    /* answer bytes received and not yet consumed */
    size_t start; /* first unconsumed byte */
    size_t len;   /* bytes held */
    size_t cap;
};

static char *
client_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);

    if (p != NULL) {
        memcpy(p, s, n);
    }
    return p;
}

pj_rc
agent_client_socket_path(const char *explicit_path, const char *config_path,
                         char **pathp, struct pj_err *err)
{
    const char *env = getenv(AGENT_CLIENT_SOCKET_ENV);
    const char *cfg_env = getenv(PJ_CONFIG_ENV);
    const char *cfg_file;
    const char *chosen = PJ_CONFIG_DEFAULT_SOCKET;
    struct pj_config *cfg = NULL;
    bool named;
    pj_rc rc;

    if (pathp == NULL) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "socket path: pathp == NULL");
    }
    *pathp = NULL;
    if (explicit_path != NULL && explicit_path[0] != '\0') {
        chosen = explicit_path;
    } else if (env != NULL && env[0] != '\0') {
        chosen = env;
    } else {
        named = config_path != NULL || (cfg_env != NULL && cfg_env[0] != '\0');
        cfg_file = pj_config_path_resolve(config_path);
        /*
         * A client is often not allowed to read the agent's config: the
         * default file is only a hint, but a file the user named must load.
         */
        if (named || access(cfg_file, R_OK) == 0) {
            rc = pj_config_load_file(cfg_file, &cfg, err);
            if (rc != PJ_OK) {
                return rc;
            }
            chosen = cfg->agent.socket;
        }
    }
    *pathp = client_strdup(chosen);
    pj_config_free(cfg);
    if (*pathp == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "socket path: out of memory");
    }
    return PJ_OK;
}

static void
name_uid(uid_t uid, char *out, size_t n)
{
    struct passwd *pw = getpwuid(uid);

    if (pw != NULL) {
        snprintf(out, n, "uid %u (%s)", (unsigned)uid, pw->pw_name);
    } else {
        snprintf(out, n, "uid %u", (unsigned)uid);
    }
}

static void
name_gid(gid_t gid, char *out, size_t n)
{
    struct group *gr = getgrgid(gid);

    if (gr != NULL) {
        snprintf(out, n, "group %s (gid %u)", gr->gr_name, (unsigned)gid);
    } else {
        snprintf(out, n, "gid %u", (unsigned)gid);
    }
}

static bool
in_group(gid_t gid)
{
    gid_t groups[256];
    int i, n;

    if (getegid() == gid) {
        return true;
    }
    n = getgroups((int)PJ_ARRAY_SIZE(groups), groups);
    for (i = 0; i < n; i++) {
        if (groups[i] == gid) {
            return true;
        }
    }
    return false;
}

/*
 * EACCES from connect(): the socket lacks write permission for us, or a
 * directory on the way lacks search permission. Say which, and who may
 * connect, so a person knows which group to join.
 */
static pj_rc
client_denied(const char *path, struct pj_err *err)
{
    char dir[sizeof(((struct sockaddr_un *)NULL)->sun_path)];
    char owner[96], group[96], me[96];
    const char *what = "socket";
    const char *where = path;
    char *slash;
    struct stat st;

    name_uid(geteuid(), me, sizeof(me));
    if (stat(path, &st) != 0) {
        /* We cannot even look at the socket: a directory is closed to us. */
        (void)pj_strlcpy(dir, path, sizeof(dir));
        slash = strrchr(dir, '/');
        if (slash != NULL && slash != dir) {
            *slash = '\0';
        }
        if (stat(dir, &st) != 0) {
            return pj_err_set(err, PJ_ERR_DENIED,
                              "permission denied connecting to the agent at "
                              "%s: a directory on the path is not open to "
                              "%s; ask the agent's administrator which group "
                              "may connect (its socket-group)",
                              path, me);
        }
        what = "directory";
        where = dir;
    }
    name_uid(st.st_uid, owner, sizeof(owner));
    name_gid(st.st_gid, group, sizeof(group));
    return pj_err_set(err, PJ_ERR_DENIED,
                      "permission denied connecting to the agent at %s: "
                      "%s %s is mode %04o, owner %s, %s; only the owner and "
                      "members of %s (the agent's socket-group) may connect; "
                      "you are %s%s: add this user to that group (and log in "
                      "again) or run as the owner",
                      path, what, where, (unsigned)(st.st_mode & 07777), owner,
                      group, group, me,
                      in_group(st.st_gid)
                          ? ", a member, so the mode lacks group access"
                          : ", not a member");
}

pj_rc
agent_client_connect(const char *path, int timeout_ms,
                     struct agent_client **clp, struct pj_err *err)
{
    struct agent_client *cl = NULL;
    struct sockaddr_un sun;
    struct timeval tv;
    int fd = -1, flags, e;
    pj_rc rc = PJ_ERR_INTERNAL;

    if (clp == NULL || path == NULL) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "agent connect: NULL argument");
    }
    *clp = NULL;
    if (timeout_ms <= 0) {
        timeout_ms = AGENT_CLIENT_TIMEOUT_MS_DEFAULT;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (path[0] == '\0' ||
        !pj_strlcpy(sun.sun_path, path, sizeof(sun.sun_path))) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "agent socket path '%.200s' is empty or longer than "
                          "%zu bytes; choose a shorter path",
                          path, sizeof(sun.sun_path) - 1);
    }
    if ((cl = calloc(1, sizeof(*cl))) == NULL ||
        (cl->path = client_strdup(path)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "agent connect: out of memory");
        goto out;
    }
    cl->fd = -1;
    cl->timeout_ms = timeout_ms;
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        rc = pj_err_sys(err, "agent connect: socket");
        goto out;
    }
    /* Linux bounds a blocking connect() to a full backlog by SO_SNDTIMEO. */
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        e = errno;
        switch (e) {
        case ENOENT:
        case ECONNREFUSED:
        case ENOTDIR:
            rc = pj_err_set(err, PJ_ERR_IO,
                            "agent not running at %s (connect: %s); start "
                            "p11jwt-agent or use --direct",
                            path, strerror(e));
            break;
        case EACCES:
        case EPERM:
            rc = client_denied(path, err);
            break;
        case EAGAIN:
        case ETIMEDOUT:
        case EINTR:
            rc = pj_err_set(err, PJ_ERR_TIMEOUT,
                            "agent at %s did not accept the connection within "
                            "%d ms (connect: %s); it may be overloaded or "
                            "stuck: see its log",
                            path, timeout_ms, strerror(e));
            break;
        default:
            rc = pj_err_set(err, PJ_ERR_IO,
                            "cannot connect to the agent at %s (connect: %s); "
                            "start p11jwt-agent or use --direct",
                            path, strerror(e));
            break;
        }
        if (err != NULL && rc == PJ_ERR_IO) {
            err->sys = e;
        }
        goto out;
    }
    /* From here every wait is a poll() against the request's deadline. */
    if ((flags = fcntl(fd, F_GETFL)) < 0 ||
        fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        rc = pj_err_sys(err, "agent connect: fcntl");
        goto out;
    }
    cl->fd = fd;
    fd = -1;
    *clp = cl;
    cl = NULL;
    rc = PJ_OK;
out:
    if (fd >= 0) {
        close(fd);
    }
    agent_client_free(cl);
    return rc;
}

void
agent_client_free(struct agent_client *cl)
{
    if (cl == NULL) {
        return;
    }
    if (cl->fd >= 0) {
        close(cl->fd);
    }
    if (cl->buf != NULL) {
        OPENSSL_cleanse(cl->buf, cl->cap);
        free(cl->buf);
    }
    free(cl->path);
    free(cl);
}

const char *
agent_client_path(const struct agent_client *cl)
{
    return cl != NULL ? cl->path : NULL;
}

/* Wait until fd is ready for events or the deadline passes. */
static pj_rc
client_wait(struct agent_client *cl, short events, int64_t deadline,
            const char *what, struct pj_err *err)
{
    struct pollfd pfd = {.fd = cl->fd, .events = events};
    int64_t left;
    int n;

    for (;;) {
        left = deadline - pj_time_mono_ms();
        if (left <= 0) {
            return pj_err_set(err, PJ_ERR_TIMEOUT,
                              "the agent at %s did not %s within %d ms; see "
                              "its log (p11jwt status shows what it is doing)",
                              cl->path, what, cl->timeout_ms);
        }
        n = poll(&pfd, 1, (int)left);
        if (n > 0) {
            return PJ_OK;
        }
        if (n < 0 && errno != EINTR) {
            return pj_err_sys(err, "waiting for the agent at %s", cl->path);
        }
    }
}

static pj_rc
client_write_all(struct agent_client *cl, const char *data, size_t len,
                 struct pj_err *err)
{
    int64_t deadline = pj_time_mono_ms() + cl->timeout_ms;
    ssize_t n;
    pj_rc rc;

    while (len > 0) {
        /* MSG_NOSIGNAL: an agent that went away is an error, not SIGPIPE. */
        n = send(cl->fd, data, len, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            rc = client_wait(cl, POLLOUT, deadline, "accept the request", err);
            if (rc != PJ_OK) {
                return rc;
            }
            continue;
        }
        return pj_err_set(err, PJ_ERR_IO,
                          "sending the request to the agent at %s failed (%s); "
                          "it may have closed the connection: see its log",
                          cl->path, n < 0 ? strerror(errno) : "no progress");
    }
    return PJ_OK;
}

pj_rc
agent_client_send(struct agent_client *cl, const json_t *req,
                  struct pj_err *err)
{
    char *json = NULL, *line = NULL;
    size_t len = 0;
    pj_rc rc;

    if (cl == NULL || req == NULL || !json_is_object(req)) {
        return pj_err_set(err, PJ_ERR_INTERNAL,
                          "agent request: not a JSON object");
    }
    /* The request may hold a token (invalidate): wipe both copies. */
    if ((json = json_dumps(req, JSON_COMPACT)) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "agent request: encode failed");
    }
    len = strlen(json);
    if (len + 1 > AGENT_CLIENT_REQUEST_MAX) {
        rc = pj_err_set(err, PJ_ERR_LIMIT,
                        "agent request of %zu bytes exceeds the %d-byte line "
                        "limit",
                        len + 1, AGENT_CLIENT_REQUEST_MAX);
        goto out;
    }
    /* One write for the whole line: a request is never split needlessly. */
    if ((line = malloc(len + 1)) == NULL) {
        rc = pj_err_set(err, PJ_ERR_NOMEM, "agent request: out of memory");
        goto out;
    }
    memcpy(line, json, len);
    line[len] = '\n';
    rc = client_write_all(cl, line, len + 1, err);
out:
    if (line != NULL) {
        OPENSSL_cleanse(line, len + 1);
        free(line);
    }
    OPENSSL_cleanse(json, len);
    free(json);
    return rc;
}

/* Make room for CLIENT_READ_CHUNK more bytes, dropping consumed ones. */
static pj_rc
client_reserve(struct agent_client *cl, struct pj_err *err)
{
    size_t held = cl->len - cl->start;
    size_t want, ncap;
    char *nbuf;

    if (cl->start > 0) {
        memmove(cl->buf, cl->buf + cl->start, held);
        OPENSSL_cleanse(cl->buf + held, cl->len - held);
        cl->start = 0;
        cl->len = held;
    }
    want = held + CLIENT_READ_CHUNK;
    if (want > AGENT_CLIENT_ANSWER_MAX) {
        want = AGENT_CLIENT_ANSWER_MAX;
    }
    if (cl->cap >= want) {
        return PJ_OK;
    }
    ncap = cl->cap == 0 ? CLIENT_READ_CHUNK : cl->cap * 2;
    if (ncap < want) {
        ncap = want;
    }
    if (ncap > AGENT_CLIENT_ANSWER_MAX) {
        ncap = AGENT_CLIENT_ANSWER_MAX;
    }
    /* Not realloc: the old buffer may hold a token and must be wiped. */
    if ((nbuf = malloc(ncap)) == NULL) {
        return pj_err_set(err, PJ_ERR_NOMEM, "agent answer: out of memory");
    }
    if (cl->buf != NULL) {
        memcpy(nbuf, cl->buf, cl->len);
        OPENSSL_cleanse(cl->buf, cl->cap);
        free(cl->buf);
    }
    cl->buf = nbuf;
    cl->cap = ncap;
    return PJ_OK;
}

pj_rc
agent_client_recv(struct agent_client *cl, json_t **answerp, struct pj_err *err)
{
    int64_t deadline;
    json_error_t jerr;
    json_t *ans;
    char *nl;
    size_t linelen;
    ssize_t n;
    pj_rc rc;

    if (answerp == NULL || cl == NULL) {
        return pj_err_set(err, PJ_ERR_INTERNAL, "agent answer: NULL argument");
    }
    *answerp = NULL;
    deadline = pj_time_mono_ms() + cl->timeout_ms;
    for (;;) {
        nl = cl->len > cl->start
                 ? memchr(cl->buf + cl->start, '\n', cl->len - cl->start)
                 : NULL;
        if (nl != NULL) {
            break;
        }
        if (cl->len - cl->start >= AGENT_CLIENT_ANSWER_MAX) {
            return pj_err_set(err, PJ_ERR_LIMIT,
                              "the agent at %s sent an answer longer than %d "
                              "bytes; is it really p11jwt-agent?",
                              cl->path, AGENT_CLIENT_ANSWER_MAX);
        }
        if ((rc = client_reserve(cl, err)) != PJ_OK) {
            return rc;
        }
        n = recv(cl->fd, cl->buf + cl->len, cl->cap - cl->len, 0);
        if (n > 0) {
            cl->len += (size_t)n;
            continue;
        }
        if (n == 0) {
            return pj_err_set(err, PJ_ERR_IO,
                              cl->len > cl->start
                                  ? "the agent at %s closed the connection in "
                                    "the middle of an answer; see its log"
                                  : "the agent at %s closed the connection "
                                    "without answering (it may have "
                                    "restarted, timed the request out or "
                                    "reached its connection limit); see its "
                                    "log",
                              cl->path);
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            rc = client_wait(cl, POLLIN, deadline, "answer", err);
            if (rc != PJ_OK) {
                return rc;
            }
            continue;
        }
        return pj_err_set(err, PJ_ERR_IO,
                          "reading the answer from the agent at %s failed "
                          "(%s); see its log",
                          cl->path, strerror(errno));
    }
    linelen = (size_t)(nl - (cl->buf + cl->start));
    ans =
        json_loadb(cl->buf + cl->start, linelen, JSON_REJECT_DUPLICATES, &jerr);
    /* The line may hold a token: wipe it now that jansson has a copy. */
    OPENSSL_cleanse(cl->buf + cl->start, linelen + 1);
    cl->start += linelen + 1;
    if (ans == NULL || !json_is_object(ans)) {
        json_decref(ans);
        /* jerr.text quotes no input, so no token can leak through it. */
        return pj_err_set(err, PJ_ERR_INVALID,
                          "the agent at %s sent an answer that is not a JSON "
                          "object (%s); is it really p11jwt-agent?",
                          cl->path, ans == NULL ? jerr.text : "wrong type");
    }
    *answerp = ans;
    return PJ_OK;
}

pj_rc
agent_client_call(struct agent_client *cl, const json_t *req, json_t **answerp,
                  struct pj_err *err)
{
    if (answerp != NULL) {
        *answerp = NULL;
    }
    PJ_TRY(agent_client_send(cl, req, err));
    return agent_client_recv(cl, answerp, err);
}

pj_rc
agent_client_request(const char *path, const json_t *req, int timeout_ms,
                     json_t **answerp, struct pj_err *err)
{
    struct agent_client *cl = NULL;
    pj_rc rc;

    if (answerp != NULL) {
        *answerp = NULL;
    }
    rc = agent_client_connect(path, timeout_ms, &cl, err);
    if (rc == PJ_OK) {
        rc = agent_client_call(cl, req, answerp, err);
    }
    agent_client_free(cl);
    return rc;
}

const char *
agent_client_answer_code(const json_t *answer)
{
    return json_string_value(json_object_get(answer, "error"));
}

/*
 * A printable copy of a string from the agent (or from Salesforce through
 * it): control bytes become '?', so a message cannot move the terminal.
 */
static void
clean_copy(char *out, size_t n, const char *in)
{
    size_t i;

    if (n == 0) {
        return;
    }
    for (i = 0; in != NULL && in[i] != '\0' && i + 1 < n; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[i] = '\0';
}

static pj_rc
code_rc(const char *code)
{
    static const struct {
        const char *code;
        pj_rc rc;
    } map[] = {
        {"forbidden", PJ_ERR_DENIED},
        {"bad_request", PJ_ERR_INVALID},
        {"unknown_op", PJ_ERR_INVALID},
        {"unknown_profile", PJ_ERR_NOT_FOUND},
        {"token_unavailable", PJ_ERR_UPSTREAM},
        {"upstream", PJ_ERR_UPSTREAM},
        {"unavailable", PJ_ERR_TOKEN},
        {"busy", PJ_ERR_LIMIT},
        {"internal", PJ_ERR_INTERNAL},
    };
    size_t i;

    for (i = 0; code != NULL && i < PJ_ARRAY_SIZE(map); i++) {
        if (strcmp(code, map[i].code) == 0) {
            return map[i].rc;
        }
    }
    return PJ_ERR_INTERNAL;
}

pj_rc
agent_client_answer_check(const json_t *answer, struct pj_err *err)
{
    char code[48], msg[200], hint[160], sfe[64], sfd[160], cls[32];
    const json_t *sf;
    char sfpart[280] = "", hintpart[180] = "";

    if (!json_is_object(answer)) {
        return pj_err_set(err, PJ_ERR_INVALID,
                          "the agent sent an answer that is not a JSON object");
    }
    if (json_is_true(json_object_get(answer, "ok"))) {
        return PJ_OK;
    }
    /* Only error fields are read: an answer's token never reaches err. */
    clean_copy(code, sizeof(code), agent_client_answer_code(answer));
    clean_copy(msg, sizeof(msg),
               json_string_value(json_object_get(answer, "message")));
    clean_copy(hint, sizeof(hint),
               json_string_value(json_object_get(answer, "hint")));
    clean_copy(cls, sizeof(cls),
               json_string_value(json_object_get(answer, "class")));
    sf = json_object_get(answer, "salesforce");
    clean_copy(sfe, sizeof(sfe),
               json_string_value(json_object_get(sf, "error")));
    clean_copy(sfd, sizeof(sfd),
               json_string_value(json_object_get(sf, "error_description")));
    if (cls[0] == '\0') {
        clean_copy(cls, sizeof(cls),
                   json_string_value(json_object_get(sf, "class")));
    }
    if (sfe[0] != '\0') {
        snprintf(sfpart, sizeof(sfpart), "; salesforce: %s%s%s%s%s%s", sfe,
                 sfd[0] != '\0' ? ": " : "", sfd, cls[0] != '\0' ? " (" : "",
                 cls, cls[0] != '\0' ? ")" : "");
    }
    if (hint[0] != '\0') {
        snprintf(hintpart, sizeof(hintpart), "; hint: %s", hint);
    }
    return pj_err_set(err, code_rc(code[0] != '\0' ? code : NULL),
                      "agent: %s [error %s]%s%s",
                      msg[0] != '\0' ? msg : "request failed",
                      code[0] != '\0' ? code : "missing", sfpart, hintpart);
}
