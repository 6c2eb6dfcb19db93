/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process hygiene (research/style.md 2.7), the listening socket and the
 * systemd hooks (socket activation, sd_notify).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef P11JWT_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "agent/agent_server.h"
#include "core/pj_log.h"
#include "core/pj_util.h"

/* systemd's first passed fd (SD_LISTEN_FDS_START). */
#define LISTEN_FDS_START 3

static unsigned
passed_fds(void)
{
    const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS");
    long v, p;

    if (pid == NULL || n == NULL ||
        pj_parse_long(pid, 1, INT_MAX, &p) != PJ_OK || (pid_t)p != getpid() ||
        pj_parse_long(n, 0, 64, &v) != PJ_OK) {
        return 0;
    }
    return (unsigned)v;
}

pj_rc
agent_process_sanitize(struct pj_err *err)
{
    struct rlimit rl = {0, 0};
    unsigned keep = passed_fds();
    int fd;

    /* 0-2 open on /dev/null if closed, so a later open() never becomes
     * stdout and a log line never lands in a socket. */
    for (fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
            int n = open("/dev/null", O_RDWR);
            if (n < 0) {
                return pj_err_sys(err, "cannot open /dev/null");
            }
            if (n != fd) {
                dup2(n, fd);
                close(n);
            }
        }
    }
    /* Inherited fds (other than systemd's sockets) are closed. */
#ifdef SYS_close_range
    if (syscall(SYS_close_range, LISTEN_FDS_START + keep, ~0U, 0) != 0)
#endif
    {
        for (fd = (int)(LISTEN_FDS_START + keep); fd < 1024; fd++) {
            close(fd);
        }
    }
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        return pj_err_sys(err, "prctl(PR_SET_DUMPABLE, 0) failed");
    }
    if (setrlimit(RLIMIT_CORE, &rl) != 0) {
        return pj_err_sys(err, "cannot set RLIMIT_CORE to 0");
    }
    signal(SIGPIPE, SIG_IGN);
    umask(077);
    return PJ_OK;
}

void
agent_notify(const char *state)
{
#ifdef P11JWT_HAVE_SYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

/* Is an agent answering on path? */
static bool
socket_live(const char *path)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live;

    if (fd < 0) {
        return false;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    pj_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
    live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return live;
}

static pj_rc
resolve_group(const char *name, gid_t *gidp, struct pj_err *err)
{
    struct group *gr;
    long v;

    *gidp = (gid_t)-1;
    if (name == NULL) {
        return PJ_OK;
    }
    if ((gr = getgrnam(name)) != NULL) {
        *gidp = gr->gr_gid;
        return PJ_OK;
    }
    if (pj_parse_long(name, 0, INT_MAX, &v) == PJ_OK) {
        *gidp = (gid_t)v;
        return PJ_OK;
    }
    return pj_err_set(err, PJ_ERR_CONFIG,
                      "socket-group '%s': no such group on this system", name);
}

pj_rc
agent_socket_open(const struct pj_config_agent *ac, int *fdp, bool *ownedp,
                  struct pj_err *err)
{
    const char *path = ac->socket ? ac->socket : PJ_CONFIG_DEFAULT_SOCKET;
    struct sockaddr_un sa;
    struct stat st;
    char dir[sizeof(sa.sun_path)], *slash;
    gid_t gid;
    mode_t old;
    int fd = -1;
    unsigned n = passed_fds();

    *fdp = -1;
    *ownedp = false;
    if (n > 0) {
        /* Socket activation: systemd made the socket (with its mode). */
        int flags = fcntl(LISTEN_FDS_START, F_GETFL);
        if (n != 1) {
            return pj_err_set(err, PJ_ERR_CONFIG,
                              "systemd passed %u sockets; the agent takes "
                              "exactly one (ListenStream= once)",
                              n);
        }
        fcntl(LISTEN_FDS_START, F_SETFL, flags | O_NONBLOCK);
        fcntl(LISTEN_FDS_START, F_SETFD, FD_CLOEXEC);
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
        *fdp = LISTEN_FDS_START;
        pj_log_info("listening on the socket passed by systemd");
        return PJ_OK;
    }
    if (strlen(path) >= sizeof(sa.sun_path)) {
        return pj_err_set(err, PJ_ERR_CONFIG,
                          "socket path %s is longer than %zu bytes", path,
                          sizeof(sa.sun_path) - 1);
    }
    PJ_TRY(resolve_group(ac->socket_group, &gid, err));
    pj_strlcpy(dir, path, sizeof(dir));
    if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0750) == 0) {
            if (gid != (gid_t)-1 && chown(dir, (uid_t)-1, gid) != 0) {
                return pj_err_sys(err, "cannot give directory %s to group %s",
                                  dir, ac->socket_group);
            }
            chmod(dir, 0750);
        } else if (errno != EEXIST) {
            return pj_err_sys(err, "cannot create socket directory %s", dir);
        }
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return pj_err_set(err, PJ_ERR_EXISTS,
                              "%s exists and is not a socket: remove it or "
                              "choose another 'socket'",
                              path);
        }
        if (socket_live(path)) {
            return pj_err_set(err, PJ_ERR_EXISTS,
                              "another agent is already listening on %s", path);
        }
        if (unlink(path) != 0) {
            return pj_err_sys(err, "cannot remove stale socket %s", path);
        }
        pj_log_info("removed stale socket %s", path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return pj_err_sys(err, "cannot create a Unix socket");
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    pj_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
    /* Created 0600 (never briefly open to others), then widened. */
    old = umask(0177);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        umask(old);
        pj_err_sys(err, "cannot bind %s", path);
        close(fd);
        return err ? err->rc : PJ_ERR_IO;
    }
    umask(old);
    if ((gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) != 0) ||
        chmod(path, 0660) != 0) {
        pj_err_sys(err, "cannot set owner group/mode of %s", path);
        unlink(path);
        close(fd);
        return err ? err->rc : PJ_ERR_IO;
    }
    if (listen(fd, 512) != 0) {
        pj_err_sys(err, "cannot listen on %s", path);
        unlink(path);
        close(fd);
        return err ? err->rc : PJ_ERR_IO;
    }
    *fdp = fd;
    *ownedp = true;
    pj_log_notice("listening on %s", path);
    return PJ_OK;
}
