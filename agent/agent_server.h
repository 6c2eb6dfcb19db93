/* SPDX-License-Identifier: Apache-2.0 */
/* The real agent process: hygiene, socket, event loop (agent_server.c). */
#ifndef AGENT_SERVER_H
#define AGENT_SERVER_H

#include <stdbool.h>

#include "core/pj_config.h"
#include "core/pj_err.h"

/*
 * Startup hygiene before anything else: fds 0-2 valid, other inherited fds
 * closed (systemd's sockets kept), not dumpable, no core files, SIGPIPE
 * ignored, umask 077.
 */
PJ_MUST_USE pj_rc agent_process_sanitize(struct pj_err *err);

/*
 * The listening socket: the one systemd passed, or a new one at
 * ac->socket (directory 0750, socket 0660 with socket-group). Refuses when
 * a live agent answers there; removes a stale socket. *ownedp says whether
 * the agent created the path (and unlinks it at exit).
 */
PJ_MUST_USE pj_rc agent_socket_open(const struct pj_config_agent *ac, int *fdp,
                                    bool *ownedp, struct pj_err *err);

/* sd_notify when built with libsystemd; a no-op otherwise. */
void agent_notify(const char *state);

struct agent_serve_opts {
    const char *config_path; /* reloaded on SIGHUP */
    unsigned workers;
};

/*
 * Run the agent on cfg (owned) until SIGTERM/SIGINT. Returns PJ_OK after a
 * clean shutdown; an error when startup fails (err says why).
 */
PJ_MUST_USE pj_rc agent_serve(const struct agent_serve_opts *opts,
                              struct pj_config *cfg, struct pj_err *err);

#endif
