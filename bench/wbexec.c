/*
 * wbexec: exec one CNI plugin and report its own wall time and rusage.
 *
 *   wbexec FD PLUGIN [ARGS...]
 *
 * vfork()s, execs PLUGIN with the inherited environment, stdin, stdout, stderr and network
 * namespace, reaps it with wait4() and writes one line to file descriptor FD:
 *
 *   <wait status> <wall ns> <user us> <sys us> <maxrss KiB>
 *
 * Why: Linux charges the RSS of the process that calls execve() to the new image's ru_maxrss,
 * so a plugin exec'd straight from the (20+ MiB) Python bench would report at least the
 * bench's own RSS. Exec'd from this tiny launcher, ru_maxrss is the plugin's (and whatever
 * child it waited for, e.g. bridge -> host-local). The wall clock is taken here, around
 * vfork..wait4, so Python's Popen overhead is not part of it either.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: wbexec FD PLUGIN [ARGS...]\n");
        return 125;
    }
    int fd = atoi(argv[1]);
    fcntl(fd, F_SETFD, FD_CLOEXEC); /* the plugin must not inherit the report pipe */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = vfork();
    if (pid < 0) {
        perror("wbexec: vfork");
        return 126;
    }
    if (pid == 0) {
        execv(argv[2], argv + 2);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("wbexec: wait4");
        return 126;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long wall_ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    long long user_us = (long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec;
    long long sys_us = (long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec;
    dprintf(fd, "%d %lld %lld %lld %ld\n", status, wall_ns, user_us, sys_us, ru.ru_maxrss);
    close(fd);
    return 0;
}
