/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11jwt-agent internals (docs/agent.md is the contract clients see).
 *
 * The agent is split so that everything a request does can run without
 * sockets, threads or a token:
 *
 *   agent_dispatch()   parse one request line, authorise it, answer it at
 *                      once or park it on a cache entry / job ("pending").
 *   cache + jobs       per (profile, subject) token state, single-flight
 *                      exchanges, refresh, backoff. Work that may block (sign
 *                      on the token, open a key) is handed to the backend's
 *                      submit(); the HTTP exchange to its start_http().
 *   server             the real backend: worker threads, curl multi, the
 *                      event loop, sockets, signals (agent_server.c).
 *
 * Unit tests and the fuzzer build a struct agent with a fake backend and
 * profiles whose keys are not open, and call agent_dispatch directly.
 * Everything here runs on the event-loop thread except agent_job_run.
 */
#ifndef AGENT_H
#define AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/pj_config.h"
#include "core/pj_err.h"
#include "core/pj_secret.h"
#include "pkcs11/hsm.h"
#include "salesforce/sf.h"

#define AGENT_LINE_MAX 8192        /* request line cap, bytes, without \n */
#define AGENT_PIPELINE_MAX 64      /* outstanding requests per connection */
#define AGENT_CONN_MAX 1024        /* connections (lowered by RLIMIT_NOFILE) */
#define AGENT_IDLE_MS 30000        /* idle connection */
#define AGENT_PARTIAL_MS 10000     /* unfinished request line */
#define AGENT_WRITE_STALL_MS 30000 /* client not reading */
#define AGENT_SECRET_HEAP 131072   /* locked arena for secrets, bytes */
#define AGENT_DRAIN_MS 10000       /* shutdown: finish in-flight work */
#define AGENT_WORKERS_DEFAULT 4
#define AGENT_WORKERS_MAX 64

#define AGENT_BACKOFF_BASE_MS 1000
#define AGENT_BACKOFF_CAP_MS 300000       /* 5 min */
#define AGENT_PERM_HOLD_MS 900000         /* 15 min after a permanent failure */
#define AGENT_KEY_RETRY_CAP_MS 300000     /* key open retries */
#define AGENT_REFRESH_PERMILLE 750        /* refresh at 75% of the lifetime */
#define AGENT_REFRESH_JITTER_PERMILLE 100 /* +-10% of that */
#define AGENT_EXPIRY_MARGIN_MAX_S 60

/* ---- Small JSON writer: answers are built by hand so a token is copied
 * only into buffers that are wiped after use. */
struct agent_buf {
    char *data;
    size_t len;
    size_t cap;
    bool oom;
};
void agent_buf_raw(struct agent_buf *b, const char *s, size_t len);
void agent_buf_str(struct agent_buf *b, const char *s);  /* raw text */
void agent_buf_jstr(struct agent_buf *b, const char *s); /* "escaped" or null */
void agent_buf_jstrn(struct agent_buf *b, const char *s, size_t len);
void agent_buf_int(struct agent_buf *b, int64_t v);
/* ,"key": (the comma only when the object already has a member) */
void agent_buf_key(struct agent_buf *b, const char *key);
/* Wipe (the buffer may have held a token) and free. */
void agent_buf_wipe(struct agent_buf *b);

/* snprintf whose truncation is intended (messages are capped). */
void agent_msgf(char *dst, size_t n, const char *fmt, ...) PJ_PRINTF(3, 4);

/* ---- Peers ---------------------------------------------------------- */

struct agent_peer {
    uid_t uid;
    gid_t gid;
    pid_t pid;     /* 0 when not visible (another PID namespace) */
    char *exe;     /* /proc/PID/exe target; NULL when unknown */
    int exe_errno; /* why exe is NULL: EACCES = another uid's process and the
                      agent is neither root nor CAP_SYS_PTRACE */
};

/* ---- Requests ------------------------------------------------------- */

enum agent_op {
    AGENT_OP_TOKEN,
    AGENT_OP_ASSERTION,
    AGENT_OP_INVALIDATE,
    AGENT_OP_STATUS,
    AGENT_OP_HEALTH,
    AGENT_OP_ROTATE, /* docs/rotation.md: reload-keys after `rotate start` */
    AGENT_OP_COUNT,
};
const char *agent_op_name(enum agent_op op);

/* Error codes of the IPC contract. */
enum agent_ecode {
    AGENT_E_BAD_REQUEST,
    AGENT_E_UNKNOWN_OP,
    AGENT_E_UNKNOWN_PROFILE,
    AGENT_E_FORBIDDEN,
    AGENT_E_TOKEN_UNAVAILABLE,
    AGENT_E_UPSTREAM,
    AGENT_E_UNAVAILABLE,
    AGENT_E_BUSY,
    AGENT_E_INTERNAL,
    AGENT_E_COUNT,
};
const char *agent_ecode_name(enum agent_ecode code);

struct agent_conn;
struct agent_prof;

/*
 * One request: an answer slot in its connection's FIFO. While pending it
 * also sits on a cache entry's waiter list or in a job. When the connection
 * goes away first, conn is set to NULL (orphan) and whoever completes the
 * request frees it.
 */
struct agent_req {
    struct agent_req *next;  /* connection FIFO */
    struct agent_req *wnext; /* waiter list */
    struct agent_conn *conn;
    struct agent_peer peer; /* copy; exe is owned */
    enum agent_op op;
    bool op_known;
    char *id_json; /* rendered "id" to echo, or NULL */
    char *subject; /* the JWT sub the request resolved to */
    char *profile; /* profile name (for answers and audit) */
    struct agent_buf out;
    size_t out_off;
    bool done;
    bool close_after; /* close the connection after this answer */
};

/* ---- Cache ---------------------------------------------------------- */

struct agent_failure {
    bool set;
    enum agent_ecode code;
    enum sf_class cls;
    char error[128];
    char error_description[256];
    const char *hint; /* static or NULL */
    char message[PJ_ERR_MSG_MAX];
};

struct agent_entry {
    struct agent_entry *next;
    struct agent_prof *prof;
    char *subject;
    struct pj_secret *token;
    char token_fp[13]; /* pj_fingerprint12 of token, for audit lines */
    char *instance_url;
    char *token_type;
    int64_t issued_at;    /* wall s */
    int64_t expires_at;   /* wall s, reported to clients */
    int64_t expire_mono;  /* ms: never served at or after this */
    int64_t refresh_mono; /* ms: start a refresh at this */
    bool in_flight;
    struct agent_req *waiters, **wtail;
    unsigned n_waiters;
    /* Last exchange */
    int64_t last_time; /* wall s; 0 never */
    bool last_ok;
    struct agent_failure fail; /* last failure */
    unsigned failures;         /* consecutive */
    int64_t retry_mono;        /* ms; 0 = none scheduled */
    bool hold;                 /* permanent failure: answer from cache */
};

/* ---- Profiles ------------------------------------------------------- */

struct agent_cfgref {
    struct pj_config *cfg;
    unsigned refs;
};

struct agent_counters {
    uint64_t token_ok, token_cached, token_fail;
    uint64_t exchanges_ok, exchanges_fail;
    uint64_t sign_ok, sign_fail;
    uint64_t assertion_ok, assertion_fail;
    uint64_t refused;
    /* Rotation (docs/rotation.md): exchanges retried with the other key,
     * those that succeeded, and promotions of the next key. */
    uint64_t rotation_retries, rotation_retries_ok, promotions;
};

/*
 * Key rotation state of a profile (docs/rotation.md). The token's labels
 * are the truth; this is the agent's view: the next key ("L.next", opened
 * by its CKA_ID so relabelling never loses it) and what happened when.
 */
#define AGENT_STALE_KEYS_MAX 4
struct agent_rotation {
    bool enabled;                          /* the key URI names a label L */
    char active[HSM_ROTATE_LABEL_MAX + 1]; /* L */
    char next_label[HSM_ROTATE_LABEL_MAX + 8];
    struct hsm_key *next; /* open next key, or NULL */
    uint8_t next_id[64];
    size_t next_id_len;
    uint8_t active_id[64]; /* id of the active key per the last scan */
    size_t active_id_len;
    int64_t active_since; /* wall s: key opened or promoted */
    int64_t next_since;   /* wall s: next key found; 0 none */
    int64_t promoted_at;  /* wall s of the last promotion; 0 never */
    bool scanning;        /* a ROTATE_SCAN job is out */
    bool reopen;          /* the active key changed on the token */
    struct agent_req *waiters, **wtail;     /* rotate requests awaiting it */
    bool relabel_pending;                   /* PROMOTE job out */
    char relabel_error[PJ_ERR_MSG_MAX];     /* last PROMOTE failure, or "" */
    char retired[HSM_ROTATE_LABEL_MAX + 1]; /* label of the retired key */
    char scan_error[PJ_ERR_MSG_MAX];        /* last scan failure, or "" */
    /* Keys replaced while jobs may still sign with them: freed once the
     * profile has no job out. */
    struct hsm_key *stale[AGENT_STALE_KEYS_MAX];
    unsigned n_stale;
};

struct agent_prof {
    struct agent_prof *next;
    const struct pj_profile *p; /* borrowed from cfg */
    struct agent_cfgref *cfg;
    struct hsm_key *key;
    bool key_opening;
    pj_rc key_rc;
    char key_error[PJ_ERR_MSG_MAX];
    unsigned key_failures;
    int64_t key_retry_mono; /* ms; 0 = none */
    struct agent_entry *entries;
    unsigned refs; /* jobs outstanding */
    bool retired;
    bool have_skew;
    int64_t skew;
    struct agent_counters n;
    struct agent_rotation rot;
};

/* ---- Jobs ----------------------------------------------------------- */

enum agent_job_kind {
    AGENT_JOB_EXCHANGE,    /* sign an assertion + build the request */
    AGENT_JOB_ASSERTION,   /* sign an assertion for a client */
    AGENT_JOB_OPEN_KEY,    /* hsm_key_open (+ rotation scan, next key) */
    AGENT_JOB_ROTATE_SCAN, /* find and open the next key */
    AGENT_JOB_PROMOTE,     /* relabel on the token after a promotion */
};

struct agent_job {
    struct agent_job *next;
    enum agent_job_kind kind;
    struct agent_prof *prof;   /* holds a ref */
    struct agent_entry *entry; /* EXCHANGE */
    struct agent_req *req;     /* ASSERTION */
    char *subject;             /* EXCHANGE, ASSERTION */
    struct agent_cfgref *cfg;  /* holds a ref: p stays valid on a worker */
    const struct pj_profile *p;
    struct hsm_key *key;       /* borrowed for signing */
    struct hsm_key *key_owned; /* result of OPEN_KEY */
    struct hsm_module *mod;    /* OPEN_KEY */
    unsigned sessions;         /* OPEN_KEY */
    int64_t start_mono;
    int64_t start_wall;
    /* results */
    pj_rc rc;
    struct pj_err err;
    struct pj_secret *assertion;
    int64_t exp;
    char *jti;
    struct sf_request *sreq;
    struct sf_transfer *xfer;
    /* rotation */
    bool retried;     /* EXCHANGE: the retry with the other key */
    bool rot_scanned; /* OPEN_KEY, ROTATE_SCAN: rot is valid */
    struct hsm_rotate_state rot;
    uint8_t have_next_id[64]; /* ROTATE_SCAN: the next key already open */
    size_t have_next_id_len;
    struct hsm_key *next_owned;    /* OPEN_KEY, ROTATE_SCAN: opened next key */
    char rot_note[PJ_ERR_MSG_MAX]; /* what the job did or why not */
    char retired[HSM_ROTATE_LABEL_MAX + 1]; /* PROMOTE */
};

/* Runs on a worker thread: touches only the job, the profile's read-only
 * config and the key. */
void agent_job_run(struct agent_job *job);
void agent_job_free(struct agent_job *job);

struct agent;

struct agent_backend {
    /* Hand a job to a worker; agent_job_done is called later on the loop.
     * Returns false when it cannot (the job is then failed by the caller). */
    bool (*submit)(struct agent *ag, struct agent_job *job);
    /* Start the HTTP exchange of a signed EXCHANGE job; agent_exchange_done
     * is called later. On failure fill job->err and return its rc. */
    pj_rc (*start_http)(struct agent *ag, struct agent_job *job,
                        struct pj_err *err);
    /* A pending request got its answer (flush the connection). */
    void (*answered)(struct agent *ag, struct agent_req *req);
    void *arg;
};

struct agent {
    struct agent_cfgref *cfg; /* current */
    struct agent_prof *profs; /* current, in config order */
    struct agent_prof *retired;
    struct hsm_module *mod; /* NULL: keys are never opened (tests) */
    struct agent_backend be;
    unsigned workers;
    uid_t self_uid;
    int64_t start_mono;
    bool stopping;
    unsigned connections;
    struct agent_req *dispatching; /* answered synchronously: no callback */
    unsigned opening;              /* key opens outstanding */
    /* clock and randomness, injectable for tests */
    bool fake_clock;
    int64_t fake_mono_ms;
    int64_t fake_wall_s;
    uint64_t rng;
    /* counters for metrics */
    uint64_t ipc[AGENT_OP_COUNT + 1][2]; /* [op or bad][ok, error] */
    uint64_t ipc_errors[AGENT_E_COUNT];
    struct agent_counters total;
    /* Certificate monitoring (agent_monitor_glue.h); NULL in unit tests. */
    struct agent_mon *mon;
};

/* Create the agent state for a config (taking ownership of cfg). mod may
 * be NULL: profiles then stay without keys and requests needing one get
 * `unavailable`. Key opens are submitted through be.submit when mod is
 * set (call agent_open_keys after the backend is ready). */
PJ_MUST_USE pj_rc agent_new(struct pj_config *cfg, struct hsm_module *mod,
                            const struct agent_backend *be, struct agent **agp,
                            struct pj_err *err);
void agent_free(struct agent *ag);

/* Submit opens for every profile without a key (startup). */
void agent_open_keys(struct agent *ag);

/* Replace the config (SIGHUP), keeping equal profiles' keys and caches. */
void agent_reload(struct agent *ag, struct pj_config *cfg);

int64_t agent_mono_ms(const struct agent *ag);
int64_t agent_wall_s(const struct agent *ag);
uint64_t agent_rand(struct agent *ag);

/* Backoff with full jitter before retry number `failures` (1-based). */
int64_t agent_backoff_ms(unsigned failures, uint64_t rnd);
/* Delay from a token's issue to its refresh: 75% of lifetime +-10%. */
int64_t agent_refresh_delay_ms(long lifetime_s, uint64_t rnd);
/* Safety margin before the configured lifetime ends, seconds. */
long agent_expiry_margin_s(long lifetime_s);

enum agent_dispatch_result {
    AGENT_ANSWERED, /* req->out holds the answer line */
    AGENT_PENDING,  /* answered later through be.answered */
};

/*
 * Handle one request line (without its newline). req is a fresh request
 * with conn and peer set; the caller owns it in its FIFO. Never fails: every
 * problem becomes an error answer.
 */
enum agent_dispatch_result agent_dispatch(struct agent *ag,
                                          const struct agent_peer *peer,
                                          const char *line, size_t len,
                                          struct agent_req *req);

/* Close an answer (req->out), count it and hand it to the backend. */
void agent_req_finish(struct agent *ag, struct agent_req *req, bool ok);

/* Profile by name among the current ones, or NULL. */
struct agent_prof *agent_prof_find(struct agent *ag, const char *name);
/* Take / drop a reference that keeps a profile and its keys (monitor
 * checks on workers hold one, like jobs). */
void agent_prof_ref(struct agent_prof *pr);
void agent_prof_unref(struct agent *ag, struct agent_prof *pr);

/* The ops behind dispatch (profile and subject already authorised). */
enum agent_dispatch_result agent_token_request(struct agent *ag,
                                               struct agent_prof *pr,
                                               const char *subject,
                                               struct agent_req *req);
enum agent_dispatch_result agent_assertion_request(struct agent *ag,
                                                   struct agent_prof *pr,
                                                   const char *subject,
                                                   struct agent_req *req);
/* True when token was the current one (dropped, one exchange started). */
bool agent_invalidate(struct agent *ag, struct agent_prof *pr,
                      const char *subject, const char *token, size_t len);

/* Answer a request with an error (used by the server for busy, oversize). */
void agent_answer_error(struct agent *ag, struct agent_req *req,
                        enum agent_ecode code, const char *message,
                        const struct agent_failure *fail);

struct agent_req *agent_req_new(struct agent_conn *conn,
                                const struct agent_peer *peer);
/* Wipe and free a request (answer buffer included). */
void agent_req_free(struct agent_req *req);

/* A job finished on a worker (loop thread). */
void agent_job_done(struct agent *ag, struct agent_job *job);
/* The HTTP exchange of job finished; rc/res/err from sf_transfer_finish. */
void agent_exchange_done(struct agent *ag, struct agent_job *job, pj_rc rc,
                         struct sf_result *res, const struct pj_err *err);

/* Timers: run what is due, return ms until the next (or -1 for none). */
int64_t agent_timers_run(struct agent *ag);

/* Outstanding jobs (exchanges, signatures, key opens). */
unsigned agent_busy(const struct agent *ag);

/*
 * op rotate (root and the agent's uid only): action "reload-keys" scans
 * the token for the profile's next key and answers with the rotation
 * object once done.
 */
enum agent_dispatch_result agent_rotate_request(struct agent *ag,
                                                struct agent_prof *pr,
                                                const char *action,
                                                struct agent_req *req);
/* The profile's "rotation" status object into b. */
void agent_rotation_json(const struct agent *ag, struct agent_buf *b,
                         const struct agent_prof *pr);

/* Authorisation of a peer for a profile (subject already resolved).
 * On refusal fills why (a sentence naming uid and profile). */
bool agent_peer_allowed(const struct agent *ag, const struct pj_profile *p,
                        const struct agent_peer *peer, char *why,
                        size_t whylen);

/* Audit line (notice level, "audit:" prefix). extra may be NULL. */
void agent_audit(const struct agent *ag, const struct agent_peer *peer,
                 const char *op, const char *profile, const char *subject,
                 const char *result, const char *extra);

#endif
