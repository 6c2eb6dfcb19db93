/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The small IPC client the CLI (and benchmarks, tests) use to talk to
 * p11jwt-agent over its Unix socket (DESIGN.md 3.2): one JSON object per
 * line each way, answers in request order.
 *
 * Errors say what to do: "agent not running at /run/p11jwt/agent.sock
 * (connect: No such file or directory); start p11jwt-agent or use
 * --direct", or, for a permission problem, which uid/group may connect.
 * Answers may carry access tokens and assertions: they are never put in an
 * error message, and the client's line buffer is wiped after parsing.
 */
#ifndef AGENT_CLIENT_H
#define AGENT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "core/pj_err.h"

#define AGENT_CLIENT_SOCKET_ENV "P11JWT_SOCKET"
/* One answer line, newline included: a status of many profiles fits. */
#define AGENT_CLIENT_ANSWER_MAX (1024 * 1024)
/* A request line: the agent refuses longer ones (8 KiB). */
#define AGENT_CLIENT_REQUEST_MAX (8 * 1024)
/*
 * Default time to wait for one answer. A cold `token` request signs on the
 * token and does an HTTPS exchange the agent bounds itself (profile
 * timeout, 30 s by default), so wait a little longer than that.
 */
#define AGENT_CLIENT_TIMEOUT_MS_DEFAULT 45000

struct agent_client;

/*
 * The socket path to use: explicit_path if not NULL or empty, else
 * $P11JWT_SOCKET, else the [agent] socket of the config file (config_path
 * as given to -c, else $P11JWT_CONFIG, else the default path), else the
 * built-in default. A config file named explicitly (-c, $P11JWT_CONFIG)
 * must load; the default config file is skipped when it is absent or not
 * readable by this user (clients often may not read it). *pathp is new.
 */
PJ_MUST_USE pj_rc agent_client_socket_path(const char *explicit_path,
                                           const char *config_path,
                                           char **pathp, struct pj_err *err);

/*
 * Connect to the agent at path. timeout_ms (0 = default) bounds each later
 * send and each answer. On failure *clp is NULL and err says whether the
 * agent is not running, the socket is not accessible (and who may connect),
 * or the path is unusable.
 */
PJ_MUST_USE pj_rc agent_client_connect(const char *path, int timeout_ms,
                                       struct agent_client **clp,
                                       struct pj_err *err);

/* Close and free; NULL is a no-op. */
void agent_client_free(struct agent_client *cl);

/* The socket path this client is connected to (borrowed). */
const char *agent_client_path(const struct agent_client *cl);

/*
 * Send one request (a JSON object) as one line. Requests may be pipelined:
 * send several, then receive the answers in the same order.
 */
PJ_MUST_USE pj_rc agent_client_send(struct agent_client *cl, const json_t *req,
                                    struct pj_err *err);

/*
 * Receive the next answer: a new JSON object in *answerp (the caller
 * json_decref()s it; it may hold a token). Does not judge "ok": see
 * agent_client_answer_check.
 */
PJ_MUST_USE pj_rc agent_client_recv(struct agent_client *cl, json_t **answerp,
                                    struct pj_err *err);

/* send + recv. */
PJ_MUST_USE pj_rc agent_client_call(struct agent_client *cl, const json_t *req,
                                    json_t **answerp, struct pj_err *err);

/*
 * One request on a new connection: resolve nothing (path is final),
 * connect, call, close.
 */
PJ_MUST_USE pj_rc agent_client_request(const char *path, const json_t *req,
                                       int timeout_ms, json_t **answerp,
                                       struct pj_err *err);

/*
 * PJ_OK when the answer has "ok":true. Otherwise fill err from the error
 * answer and return the matching code: forbidden -> PJ_ERR_DENIED,
 * bad_request/unknown_op -> PJ_ERR_INVALID, unknown_profile ->
 * PJ_ERR_NOT_FOUND, upstream -> PJ_ERR_UPSTREAM, token_unavailable ->
 * PJ_ERR_UPSTREAM, unavailable -> PJ_ERR_TOKEN, busy -> PJ_ERR_LIMIT,
 * internal (and anything else) -> PJ_ERR_INTERNAL. The message reads
 * "agent: MESSAGE [error CODE]; salesforce: ERROR: DESCRIPTION (CLASS);
 * hint: HINT". Only the error fields are read, never a token field.
 */
PJ_MUST_USE pj_rc agent_client_answer_check(const json_t *answer,
                                            struct pj_err *err);

/* The answer's "error" code string, or NULL if it has none (borrowed). */
const char *agent_client_answer_code(const json_t *answer);

#endif
