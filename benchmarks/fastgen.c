/* fastgen: create the flat:N tree of benchmarks/bench.py quickly (millions of empty files).
 *
 * usage: fastgen DIR COUNT OLD_THRESHOLD OLD_NS NEW_NS THREADS
 *
 * Creates DIR/file-%08d.tmp for i in [0, COUNT): an empty regular file (mode 0644 & ~umask)
 * whose atime and mtime are OLD_NS when (i * 7919) % 1000 < OLD_THRESHOLD, else NEW_NS
 * (nanoseconds since the epoch) -- exactly what bench.py's TreeWriter makes, two system calls
 * per file (mknodat + utimensat) instead of three. THREADS threads take blocks of 4096 names
 * in turn; creates in one directory serialize on its lock, but the timestamps and the name
 * lookups overlap (2 threads: ~1.9x on tmpfs). Prints "OLD NEW" counts on success.
 * bench.py compiles this on the fly with the system's C compiler (see fast_generator()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 4096

static int dir_fd;
static long long count;
static double threshold;
static struct timespec old_ts[2], new_ts[2];
static atomic_llong next_block;
static atomic_llong olds;
static atomic_int failed;

static void to_ts(long long ns, struct timespec ts[2]) {
    ts[0].tv_sec = ns / 1000000000LL;
    ts[0].tv_nsec = ns % 1000000000LL;
    ts[1] = ts[0];
}

static void *worker(void *arg) {
    (void)arg;
    char name[32];
    long long my_old = 0;
    for (;;) {
        long long first = atomic_fetch_add(&next_block, BLOCK);
        if (first >= count || atomic_load(&failed)) break;
        long long last = first + BLOCK < count ? first + BLOCK : count;
        for (long long i = first; i < last; i++) {
            snprintf(name, sizeof name, "file-%08lld.tmp", i);
            int old = (double)((i * 7919) % 1000) < threshold;
            if (mknodat(dir_fd, name, S_IFREG | 0644, 0) != 0) {
                /* Some filesystems refuse mknod for regular files: fall back to open. */
                int fd = openat(dir_fd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
                if (fd < 0) {
                    fprintf(stderr, "fastgen: create %s: %s\n", name, strerror(errno));
                    atomic_store(&failed, 1);
                    return NULL;
                }
                close(fd);
            }
            if (utimensat(dir_fd, name, old ? old_ts : new_ts, AT_SYMLINK_NOFOLLOW) != 0) {
                fprintf(stderr, "fastgen: utimensat %s: %s\n", name, strerror(errno));
                atomic_store(&failed, 1);
                return NULL;
            }
            my_old += old;
        }
    }
    atomic_fetch_add(&olds, my_old);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s DIR COUNT OLD_THRESHOLD OLD_NS NEW_NS THREADS\n", argv[0]);
        return 2;
    }
    dir_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) {
        fprintf(stderr, "fastgen: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    count = atoll(argv[2]);
    threshold = atof(argv[3]);
    to_ts(atoll(argv[4]), old_ts);
    to_ts(atoll(argv[5]), new_ts);
    int threads = atoi(argv[6]);
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    pthread_t tid[64];
    for (int t = 0; t < threads; t++) pthread_create(&tid[t], NULL, worker, NULL);
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    if (atomic_load(&failed)) return 1;
    long long o = atomic_load(&olds);
    printf("%lld %lld\n", o, count - o);
    return 0;
}
