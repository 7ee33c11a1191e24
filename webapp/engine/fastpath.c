/* The receive-count-answer loop of the server and listener workers, on a thread of its own.
 *
 * Built by `make setup` into webapp/engine/libfastpath.so.1 and driven through ctypes by
 * webapp/engine/fastpath.py. It uses no Python API: the thread never takes the GIL, so the
 * UDP path runs on its own core while the event loop does the web work on the other.
 *
 * Per datagram it does what the workers did in Python on the loop: count it, remember it for
 * a broadcast's "who heard it" (a digest, not the bytes), decide whether it is shown one by
 * one (the sampling rule: `budget` datagrams per window of `window_ns`), take the next drop decision
 * (drawn by Python's Responder, fed in ahead) and answer it (the book's length reply, an echo
 * or nothing; the request ID repeated). What Python must see it hands over as records in a
 * buffer the loop drains when woken through `notify_fd` (an eventfd): the shown datagrams
 * (their first SHOW_BYTES bytes), errors, and every datagram Python decides about itself
 * ("slow": streams, peers that are not loopback or known lab peers, servers with a delay).
 * A full buffer makes the thread wait for the loop (the kernel queue holds the rest), so
 * nothing is lost and the counters stay exact.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { MODE_LISTEN = 0, MODE_LENGTH = 1, MODE_ECHO = 2, MODE_NONE = 3 };
enum { REC_SHOWN = 1, REC_SLOW = 2, REC_ERROR = 3 };
enum { F_DROPPED = 1, F_SHOWN = 2 };

#define BATCH 32           /* datagrams per recvmmsg call */
#define MAX_DGRAM 65536
#define SHOW_BYTES 801     /* payload.show() reads 800 bytes, and whether there were more */
#define OUT_BYTES (4 * 1024 * 1024)  /* per buffer: ~11 000 shown 300-byte datagrams; touched
                                      * only as far as used (a budget of 1 000/s: ~40 KB) */
#define HEARD 256          /* as Worker.heard */
#define LOCALS 1024        /* lab peers Python judged local */
#define DECISIONS 8192     /* drop decisions fed ahead */
#define WAIT_MS 20         /* longest wait for the loop before looking at `stop` again */
#define WAKE_SIGNAL (SIGRTMIN + 7)  /* fp_stop's nudge: a blocked recvmmsg returns at once
                                     * (EINTR) instead of at its timeout; Python never uses
                                     * real-time signals */
#define STREAM_MAGIC "UDPLAB-S"
#define STREAM_HEADER 28

typedef struct {  /* mirrored by fastpath.Counters */
    uint64_t received, bytes_in, dropped, replied, bytes_out, errors, unshown, slow;
} fp_counts;

typedef struct {  /* mirrored by fastpath.RECORD: 56 bytes, then `stored` bytes, padded to 8 */
    uint32_t total;
    uint8_t kind, flags;
    uint16_t family, port, copies;
    int32_t err;
    uint32_t size, stored, reply, scope;
    int64_t time_ns;
    uint8_t addr[16];
} fp_record;

typedef struct { int64_t time_ns; uint64_t digest; uint16_t port; } fp_heard_entry;

typedef struct {
    int fd, fl, mode, copies, slow_all, fed, notify_fd;
    int budget;  /* datagrams shown per window; 0 = every one */
    int64_t window_ns;
    char name[16];
    volatile int stop, running;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t room;       /* signalled when the loop took the buffer or fed decisions */
    fp_counts c;             /* written by the thread only; read with fp_counters() */
    volatile uint64_t reads;   /* reads that brought datagrams (a sink under a stream naps) */
    volatile uint64_t naps;    /* a sink's pauses between reads under a stream */
    /* sampling */
    int64_t window_ends;
    int window_left;
    /* hand-over buffers (under lock): the thread appends to out[cur]; fp_take gives that one
     * to the loop and the thread goes on in the other */
    uint8_t *out[2];
    int cur;
    size_t out_len;
    int notified;
    /* heard ring (under lock) */
    fp_heard_entry heard[HEARD];
    unsigned heard_next, heard_count;
    /* lab peers judged local (under lock) */
    uint8_t locals[LOCALS][17];  /* [0] = 1 when used, then the 16-byte address */
    unsigned locals_count;
    /* drop decisions (under lock) */
    uint8_t decisions[DECISIONS];
    uint64_t dec_head, dec_tail;  /* taken, fed */
    /* receive buffers */
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in6 from[BATCH];
    uint8_t *bufs;
} fp_worker;

static int64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A digest of a datagram for `heard` (FNV-1a over its length and first 256 bytes);
 * fastpath.digest() calls this same function, so the two always agree. */
uint64_t fp_digest(const uint8_t *data, size_t len) {
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)len;
    size_t n = len < 256 ? len : 256;
    for (size_t i = 0; i < n; i++) {
        h ^= data[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The peer as 16 bytes (IPv4 as ::ffff:a.b.c.d), its port and scope. */
static void peer_of(const struct sockaddr_in6 *sa, uint8_t addr[16], uint16_t *port,
                    uint32_t *scope, uint16_t *family) {
    if (sa->sin6_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        memset(addr, 0, 10);
        addr[10] = addr[11] = 0xff;
        memcpy(addr + 12, &v4->sin_addr, 4);
        *port = ntohs(v4->sin_port);
        *scope = 0;
    } else {
        memcpy(addr, &sa->sin6_addr, 16);
        *port = ntohs(sa->sin6_port);
        *scope = sa->sin6_scope_id;
    }
    *family = sa->sin6_family;
}

static int is_loopback(const uint8_t a[16]) {
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (memcmp(a, mapped, 12) == 0)
        return a[12] == 127;
    return memcmp(a, one, 16) == 0;
}

static unsigned slot_of(const uint8_t a[16]) {
    return (unsigned)(fp_digest(a, 16) % LOCALS);
}

/* Loopback, or a lab peer Python judged local (lock held). */
static int known_local(fp_worker *w, const uint8_t a[16]) {
    if (is_loopback(a))
        return 1;
    for (unsigned i = slot_of(a), n = 0; w->locals_count && n < LOCALS && w->locals[i][0];
         i = (i + 1) % LOCALS, n++)
        if (memcmp(w->locals[i] + 1, a, 16) == 0)
            return 1;
    return 0;
}

static void wake_loop(fp_worker *w) {
    uint64_t one = 1;
    ssize_t n = write(w->notify_fd, &one, sizeof one);
    (void)n;  /* EAGAIN: the counter is already non-zero, the loop is woken anyway */
}

/* Wait (lock held) until `ready` or stop; the loop signals `room`. */
static void wait_for_loop(fp_worker *w) {
    if (!w->notified) {
        w->notified = 1;
        wake_loop(w);
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += WAIT_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec += 1;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&w->room, &w->lock, &until);
}

/* Append a record for the loop (lock held); waits for room. NULL when asked to stop. */
static fp_record *append(fp_worker *w, int kind, int flags, const uint8_t addr[16],
                         uint16_t family, uint16_t port, uint32_t scope, int err,
                         const uint8_t *data, uint32_t size, uint32_t stored, int64_t when) {
    size_t total = (sizeof(fp_record) + stored + 7) & ~(size_t)7;
    while (w->out_len + total > OUT_BYTES) {
        if (w->stop)
            return NULL;
        wait_for_loop(w);
    }
    uint8_t *at = w->out[w->cur] + w->out_len;
    fp_record *r = (fp_record *)at;
    memset(r, 0, sizeof *r);
    r->total = (uint32_t)total;
    r->kind = (uint8_t)kind;
    r->flags = (uint8_t)flags;
    r->family = family;
    r->port = port;
    r->err = err;
    r->size = size;
    r->stored = stored;
    r->scope = scope;
    r->time_ns = when;
    if (addr)
        memcpy(r->addr, addr, 16);
    if (stored)
        memcpy(at + sizeof *r, data, stored);
    w->out_len += total;
    return r;
}

/* Hand a record to the loop. Returns 0 when asked to stop meanwhile. */
static int hand(fp_worker *w, int kind, int flags, const uint8_t addr[16], uint16_t family,
                uint16_t port, uint32_t scope, int err, const uint8_t *data, uint32_t size,
                uint32_t stored, int64_t when) {
    pthread_mutex_lock(&w->lock);
    fp_record *r = append(w, kind, flags, addr, family, port, scope, err, data, size, stored,
                          when);
    pthread_mutex_unlock(&w->lock);
    return r != NULL;
}

static int shown(fp_worker *w) {
    if (!w->budget)
        return 1;
    int64_t now = now_ns(CLOCK_MONOTONIC);
    if (now >= w->window_ends) {
        w->window_ends = now + w->window_ns;
        w->window_left = w->budget;
    }
    if (w->window_left > 0) {
        w->window_left--;
        return 1;
    }
    w->c.unshown++;
    return 0;
}

/* The next drop decision (Responder.drops(), drawn ahead by Python; lock held); -1 on stop. */
static int next_decision(fp_worker *w) {
    if (!w->fed)
        return 0;
    while (w->dec_head == w->dec_tail) {
        if (w->stop)
            return -1;
        wait_for_loop(w);
    }
    return w->decisions[w->dec_head++ % DECISIONS];
}

static int is_request_id(const uint8_t *d, size_t n) {
    if (n < 21 || memcmp(d, "#ID:", 4) != 0 || d[20] != ' ')
        return 0;
    for (int i = 4; i < 20; i++)
        if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
            return 0;
    return 1;
}

/* One datagram of a server or listener; returns 0 when asked to stop meanwhile.
 *
 * All of it under the lock (a few microseconds, the reply's system call included), so that
 * what the loop reads is whole: once a client has its reply, or a counter says a datagram
 * came, its record is there too (fp_counters() and fp_take() take the same lock). */
static int handle(fp_worker *w, const uint8_t *data, size_t n, const struct sockaddr_in6 *from,
                  socklen_t fromlen) {
    uint8_t addr[16];
    uint16_t port, family;
    uint32_t scope;
    int64_t when = now_ns(CLOCK_REALTIME);
    uint32_t head = n < SHOW_BYTES ? (uint32_t)n : SHOW_BYTES;
    int going = 1;
    peer_of(from, addr, &port, &scope, &family);
    pthread_mutex_lock(&w->lock);
    w->c.received++;
    w->c.bytes_in += n;
    fp_heard_entry *h = &w->heard[w->heard_next];
    h->time_ns = when;
    h->digest = fp_digest(data, n);
    h->port = port;
    w->heard_next = (w->heard_next + 1) % HEARD;
    if (w->heard_count < HEARD)
        w->heard_count++;
    if (w->mode == MODE_LISTEN) {
        if (shown(w))
            going = append(w, REC_SHOWN, F_SHOWN, addr, family, port, scope, 0, data,
                           (uint32_t)n, head, when) != NULL;
        goto done;
    }
    /* A stream datagram is counted by Python (StreamStats), before the budget and the drop
     * decision, as ServerWorker._handle does. */
    if (n >= STREAM_HEADER && memcmp(data, STREAM_MAGIC, 8) == 0) {
        w->c.slow++;
        going = append(w, REC_SLOW, 0, addr, family, port, scope, 0, data, (uint32_t)n,
                       (uint32_t)n, when) != NULL;
        goto done;
    }
    int show = shown(w);
    int drop = next_decision(w);
    if (drop < 0) {
        going = 0;
        goto done;
    }
    int flags = (show ? F_SHOWN : 0) | (drop ? F_DROPPED : 0);
    if (w->slow_all || !known_local(w, addr)) {
        w->c.slow++;
        going = append(w, REC_SLOW, flags, addr, family, port, scope, 0, data, (uint32_t)n,
                       (uint32_t)n, when) != NULL;
        goto done;
    }
    fp_record *r = NULL;
    if (show && !(r = append(w, REC_SHOWN, flags, addr, family, port, scope, 0, data,
                             (uint32_t)n, head, when))) {
        going = 0;
        goto done;
    }
    if (drop) {
        w->c.dropped++;
        goto done;
    }
    if (w->mode == MODE_NONE)
        goto done;
    uint8_t reply[64];
    const uint8_t *out = data;
    size_t len = n;
    if (w->mode == MODE_LENGTH) {
        size_t tag = is_request_id(data, n) ? 21 : 0;
        memcpy(reply, data, tag);
        len = tag + (size_t)snprintf((char *)reply + tag, sizeof reply - tag,
                                     "Your data was %zu bytes long", n);
        out = reply;
    }
    uint16_t copies = 0;
    int err = 0;
    for (int i = 0; i < w->copies && !err; i++) {
        if (sendto(w->fd, out, len, MSG_DONTWAIT, (const struct sockaddr *)from, fromlen) < 0) {
            err = errno;
            w->c.errors++;
        } else {
            copies++;
            w->c.replied++;
            w->c.bytes_out += len;
        }
    }
    if (r) {  /* still valid: the lock was held since it was written */
        r->copies = copies;
        r->reply = (uint32_t)len;
    }
    if (err)
        going = append(w, REC_ERROR, 0, addr, family, port, scope, err, NULL, (uint32_t)n, 0,
                       when) != NULL;
done:
    pthread_mutex_unlock(&w->lock);
    return going;
}

static void on_wake(int signal) { (void)signal; }

static void install_wake(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_wake;  /* no SA_RESTART: the interrupted call returns EINTR */
    sigemptyset(&action.sa_mask);
    sigaction(WAKE_SIGNAL, &action, NULL);
}

static pthread_once_t wake_installed = PTHREAD_ONCE_INIT;

/* A sink's pause between reads while datagrams stream in (more than one per FLOOD_GAP_NS):
 * at 600 000 datagrams/s about 30 of them, far below any receive buffer's room. */
#define NAP_NS 50000L
#define FLOOD_GAP_NS 200000L

static void nap(fp_worker *w) {
    struct timespec pause = {0, NAP_NS};
    nanosleep(&pause, NULL);  /* a stop's signal ends it early (EINTR) */
    w->naps++;
}

static void *run(void *arg) {
    fp_worker *w = arg;
    sigset_t wake;
    sigemptyset(&wake);
    sigaddset(&wake, WAKE_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
    prctl(PR_SET_NAME, w->name, 0, 0, 0);
    /* A sink (a listener, a server that does not reply) under a stream of datagrams stops
     * waiting on its socket: when datagrams came again within FLOOD_GAP_NS and a read brought
     * fewer than BATCH (the queue is empty) it naps NAP_NS and then reads without blocking,
     * so neither the sender nor this thread pays for a wake-up per datagram; a full read
     * reads on at once; the first empty read ends it, and it blocks again. A server that
     * replies never naps: its clients wait for the replies. */
    int sink = w->mode == MODE_LISTEN || w->mode == MODE_NONE, polling = 0;
    int64_t last = 0;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  /* a nap of NAP_NS, not 50 µs more */
    while (!w->stop) {
        /* Blocks for the first datagram (at most WAIT_MS: SO_RCVTIMEO), then takes what else
         * waits without blocking: one system call per wake-up, whatever the load. After a
         * sink's nap it does not block at all: an empty queue then ends the polling. */
        int got = recvmmsg(w->fd, w->msgs, BATCH, polling ? MSG_DONTWAIT : MSG_WAITFORONE,
                           NULL);
        if (got < 0) {
            int err = errno;
            if (polling && (err == EAGAIN || err == EWOULDBLOCK)) {
                polling = 0;  /* nothing came during a nap: the stream is over, block */
                continue;
            }
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
                continue;  /* the timeout: look at `stop` */
            w->c.errors++;  /* e.g. an ICMP port unreachable after a reply: say it, go on */
            if (!hand(w, REC_ERROR, 0, NULL, 0, 0, 0, err, NULL, 0, 0, now_ns(CLOCK_REALTIME)))
                break;
        } else {
            for (int i = 0; i < got && !w->stop; i++)
                if (!handle(w, w->bufs + (size_t)i * MAX_DGRAM, w->msgs[i].msg_len, &w->from[i],
                            w->msgs[i].msg_hdr.msg_namelen))
                    break;
            for (int i = 0; i < got; i++)
                w->msgs[i].msg_hdr.msg_namelen = sizeof w->from[i];
            w->reads++;
        }
        pthread_mutex_lock(&w->lock);
        if (w->out_len && !w->notified) {
            w->notified = 1;
            wake_loop(w);
        }
        pthread_mutex_unlock(&w->lock);
        if (sink && got > 0 && !w->stop) {
            int64_t now = now_ns(CLOCK_MONOTONIC);
            polling = now - last < FLOOD_GAP_NS;
            last = now;
            if (polling && got < BATCH)
                nap(w);  /* let the queue fill rather than wait on it; a full read means
                          * more waits: read on (a nap per BATCH would cap the rate) */
        }
    }
    return NULL;
}

/* --- called from Python (the event loop's thread) ------------------------------------- */

fp_worker *fp_new(int fd, int mode, int copies, int budget, int64_t window_ns, int fed,
                  int notify_fd) {
    fp_worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->fd = fd;
    w->mode = mode;
    w->copies = copies;
    w->budget = budget;
    w->window_ns = window_ns;
    w->fed = fed;
    w->notify_fd = notify_fd;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->room, NULL);
    return w;
}

void fp_set_slow_all(fp_worker *w, int slow_all) { w->slow_all = slow_all; }

static void restore(fp_worker *w) {
    struct timeval none = {0, 0};
    setsockopt(w->fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    fcntl(w->fd, F_SETFL, w->fl);
}

/* Start the thread (named `name`); 0 or an errno. Buffers are made on the first start. */
int fp_start(fp_worker *w, const char *name) {
    if (w->running)
        return EBUSY;
    if (!w->bufs && !(w->bufs = malloc((size_t)BATCH * MAX_DGRAM)))
        return ENOMEM;
    for (int i = 0; i < 2; i++)
        if (!w->out[i] && !(w->out[i] = malloc(OUT_BYTES)))
            return ENOMEM;
    for (int i = 0; i < BATCH; i++) {
        w->iov[i].iov_base = w->bufs + (size_t)i * MAX_DGRAM;
        w->iov[i].iov_len = MAX_DGRAM;
        w->msgs[i].msg_hdr.msg_iov = &w->iov[i];
        w->msgs[i].msg_hdr.msg_iovlen = 1;
        w->msgs[i].msg_hdr.msg_name = &w->from[i];
        w->msgs[i].msg_hdr.msg_namelen = sizeof w->from[i];
    }
    snprintf(w->name, sizeof w->name, "%s", name);
    /* The thread owns the reading: the socket blocks (with a timeout, so `stop` is seen
     * within WAIT_MS) while it runs, and is non-blocking again after fp_stop(). Sends stay
     * non-blocking with MSG_DONTWAIT (the thread's and Python's). */
    struct timeval wait = {.tv_sec = 0, .tv_usec = WAIT_MS * 1000};
    w->fl = fcntl(w->fd, F_GETFL);
    if (w->fl < 0 || setsockopt(w->fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait) < 0 ||
        fcntl(w->fd, F_SETFL, w->fl & ~O_NONBLOCK) < 0)
        return errno;
    w->stop = 0;
    pthread_once(&wake_installed, install_wake);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int err = pthread_create(&w->thread, &attr, run, w);
    pthread_attr_destroy(&attr);
    if (err) {
        restore(w);
        return err;
    }
    w->running = 1;
    return 0;
}

/* Ask the thread to stop and wait for it: within a millisecond or two (it looks at `stop`
 * after every call, and a signal ends a blocked one). */
void fp_stop(fp_worker *w) {
    if (!w->running)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_broadcast(&w->room);
    pthread_mutex_unlock(&w->lock);
    /* Nudge it out of a blocked recvmmsg; again each millisecond, in case the nudge came
     * just before the call (then the receive timeout, WAIT_MS, would end it anyway). */
    struct timespec until;
    do {
        pthread_kill(w->thread, WAKE_SIGNAL);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000L;
        }
    } while (pthread_timedjoin_np(w->thread, NULL, &until) == ETIMEDOUT);
    restore(w);
    w->running = 0;
}

void fp_free(fp_worker *w) {
    fp_stop(w);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->room);
    free(w->bufs);
    free(w->out[0]);
    free(w->out[1]);
    free(w);
}

void fp_counters(fp_worker *w, fp_counts *out) {
    pthread_mutex_lock(&w->lock);
    *out = w->c;
    pthread_mutex_unlock(&w->lock);
}

/* How many reads brought datagrams so far (each at most BATCH of them), and how many naps
 * a sink took between them. */
uint64_t fp_reads(fp_worker *w) { return w->reads; }
uint64_t fp_naps(fp_worker *w) { return w->naps; }

/* The waiting records: sets `*records` to them and returns their length in bytes. They stay
 * valid until the next fp_take (the thread writes to the other buffer meanwhile). */
size_t fp_take(fp_worker *w, uint8_t **records) {
    pthread_mutex_lock(&w->lock);
    size_t n = w->out_len;
    *records = w->out[w->cur];
    w->cur ^= 1;
    w->out_len = 0;
    w->notified = 0;
    pthread_cond_broadcast(&w->room);
    pthread_mutex_unlock(&w->lock);
    return n;
}

/* Room for more drop decisions. */
int fp_wants(fp_worker *w) {
    pthread_mutex_lock(&w->lock);
    int room = DECISIONS - (int)(w->dec_tail - w->dec_head);
    pthread_mutex_unlock(&w->lock);
    return room;
}

/* Feed up to fp_wants() drop decisions (one byte each, 1 = drop), in draw order. */
void fp_feed(fp_worker *w, const uint8_t *decisions, int n) {
    pthread_mutex_lock(&w->lock);
    for (int i = 0; i < n && w->dec_tail - w->dec_head < DECISIONS; i++)
        w->decisions[w->dec_tail++ % DECISIONS] = decisions[i];
    pthread_cond_broadcast(&w->room);
    pthread_mutex_unlock(&w->lock);
}

/* Python judged `addr` (16 bytes, IPv4 mapped) a local peer: answer it on the thread too. */
void fp_allow(fp_worker *w, const uint8_t addr[16]) {
    pthread_mutex_lock(&w->lock);
    if (w->locals_count >= LOCALS / 2) {  /* keep probes short: forget them all, as Python did */
        memset(w->locals, 0, sizeof w->locals);
        w->locals_count = 0;
    }
    unsigned i = slot_of(addr);
    while (w->locals[i][0] && memcmp(w->locals[i] + 1, addr, 16) != 0)
        i = (i + 1) % LOCALS;
    if (!w->locals[i][0]) {
        w->locals[i][0] = 1;
        memcpy(w->locals[i] + 1, addr, 16);
        w->locals_count++;
    }
    pthread_mutex_unlock(&w->lock);
}

/* Whether a datagram with this digest came from source port `port` at or after `since_ns`. */
int fp_heard(fp_worker *w, uint16_t port, uint64_t digest, int64_t since_ns) {
    int found = 0;
    pthread_mutex_lock(&w->lock);
    for (unsigned k = 0; k < w->heard_count && !found; k++) {
        const fp_heard_entry *h = &w->heard[(w->heard_next + HEARD - 1 - k) % HEARD];
        found = h->time_ns >= since_ns && h->port == port && h->digest == digest;
    }
    pthread_mutex_unlock(&w->lock);
    return found;
}
