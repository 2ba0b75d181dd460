// glibc compatibility for the prebuilt binaries (binding.gyp, uds_ipc_portable=1,
// set by scripts/prebuild.sh; source builds do not compile this file).
//
// The prebuilds are built on a recent glibc (Debian 12: 2.36) but must load
// wherever Node 20's official binaries run: glibc >= 2.28 (RHEL 8, Debian 10,
// Ubuntu 20.04). A symbol reference records the newest version of that symbol
// in the build system's libc, so the link routes the few symbols whose default
// version is newer than 2.28 here (-Wl,--wrap=NAME sends every undefined NAME,
// in our objects and in the static libstdc++ alike, to __wrap_NAME), and each
// wrapper calls a version that glibc 2.28 already had, pinned with .symver.
// scripts/check-glibc.mjs fails the prebuild if any import is still newer.
//
// Rule for later native changes: a libc function newer than 2.28 needs a
// wrapper here (or a syscall() with a fallback for a newer kernel feature),
// or the prebuild fails its check.
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#define UDS_GLIBC_BASE "GLIBC_2.2.5"
#define UDS_GLIBC_CONDVAR "GLIBC_2.3.2"  // the 2.2.5 pthread_cond_* are the pre-NPTL ABI
#define UDS_GLIBC_FXSTATAT "GLIBC_2.4"
#define UDS_STAT_VER 1                   // _STAT_VER_LINUX
#elif defined(__aarch64__)
#define UDS_GLIBC_BASE "GLIBC_2.17"
#define UDS_GLIBC_CONDVAR "GLIBC_2.17"
#define UDS_GLIBC_FXSTATAT "GLIBC_2.17"
#define UDS_STAT_VER 0                   // _STAT_VER_KERNEL
#else
#error "glibc_compat.cc: only x86_64 and aarch64 prebuilds are pinned"
#endif

#define UDS_SYMVER(local, name, ver) __asm__(".symver " #local "," #name "@" ver)

extern "C" {

// The versions glibc 2.28 has, under names of our own.
double uds_old_pow(double, double);
int uds_old_mutex_trylock(pthread_mutex_t*);
int uds_old_cond_timedwait(pthread_cond_t*, pthread_mutex_t*, const struct timespec*);
void* uds_old_dlsym(void*, const char*);
int uds_old_xstat64(int, const char*, struct stat64*);
int uds_old_lxstat64(int, const char*, struct stat64*);
int uds_old_fxstat64(int, int, struct stat64*);
int uds_old_fxstatat64(int, int, const char*, struct stat64*, int);
int uds_old_pthread_create(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
int uds_old_pthread_detach(pthread_t);
int uds_old_pthread_join(pthread_t, void**);
int uds_old_pthread_once(pthread_once_t*, void (*)(void));
int uds_old_pthread_key_create(pthread_key_t*, void (*)(void*));
int uds_old_pthread_key_delete(pthread_key_t);
void* uds_old_pthread_getspecific(pthread_key_t);
int uds_old_pthread_setspecific(pthread_key_t, const void*);
UDS_SYMVER(uds_old_pow, pow, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_mutex_trylock, pthread_mutex_trylock, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_cond_timedwait, pthread_cond_timedwait, UDS_GLIBC_CONDVAR);
UDS_SYMVER(uds_old_dlsym, dlsym, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_xstat64, __xstat64, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_lxstat64, __lxstat64, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_fxstat64, __fxstat64, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_fxstatat64, __fxstatat64, UDS_GLIBC_FXSTATAT);
UDS_SYMVER(uds_old_pthread_create, pthread_create, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_pthread_detach, pthread_detach, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_pthread_join, pthread_join, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_pthread_once, pthread_once, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_pthread_key_create, pthread_key_create, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_pthread_key_delete, pthread_key_delete, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_pthread_getspecific, pthread_getspecific, UDS_GLIBC_BASE);
UDS_SYMVER(uds_old_pthread_setspecific, pthread_setspecific, UDS_GLIBC_BASE);

#define UDS_HIDDEN __attribute__((visibility("hidden")))

// pow@GLIBC_2.29 is the same function without the SVID error handling.
UDS_HIDDEN double __wrap_pow(double x, double y) { return uds_old_pow(x, y); }

// 2.34 moved libpthread into libc and gave its functions a new version; the
// old one is the same function (in libpthread.so.0 before 2.34, which Node
// always loads).
UDS_HIDDEN int __wrap_pthread_mutex_trylock(pthread_mutex_t* m) { return uds_old_mutex_trylock(m); }

// The same for the rest of the pthread API the static libstdc++ uses
// (std::thread, std::call_once, thread-local keys). __pthread_key_create is
// also libstdc++'s "is libpthread loaded" probe (a weak reference): ours is
// always there, and so are threads.
UDS_HIDDEN int __wrap_pthread_create(pthread_t* t, const pthread_attr_t* a, void* (*f)(void*), void* arg) {
  return uds_old_pthread_create(t, a, f, arg);
}
UDS_HIDDEN int __wrap_pthread_detach(pthread_t t) { return uds_old_pthread_detach(t); }
UDS_HIDDEN int __wrap_pthread_join(pthread_t t, void** r) { return uds_old_pthread_join(t, r); }
UDS_HIDDEN int __wrap_pthread_once(pthread_once_t* o, void (*f)(void)) { return uds_old_pthread_once(o, f); }
UDS_HIDDEN int __wrap_pthread_key_create(pthread_key_t* k, void (*d)(void*)) { return uds_old_pthread_key_create(k, d); }
UDS_HIDDEN int __wrap___pthread_key_create(pthread_key_t* k, void (*d)(void*)) { return uds_old_pthread_key_create(k, d); }
UDS_HIDDEN int __wrap_pthread_key_delete(pthread_key_t k) { return uds_old_pthread_key_delete(k); }
UDS_HIDDEN void* __wrap_pthread_getspecific(pthread_key_t k) { return uds_old_pthread_getspecific(k); }
UDS_HIDDEN int __wrap_pthread_setspecific(pthread_key_t k, const void* v) { return uds_old_pthread_setspecific(k, v); }

// stat and friends became real functions in 2.33; before, they were inline
// calls of __xstat64 and friends, which every later glibc still exports.
UDS_HIDDEN int __wrap_stat64(const char* p, struct stat64* b) { return uds_old_xstat64(UDS_STAT_VER, p, b); }
UDS_HIDDEN int __wrap_lstat64(const char* p, struct stat64* b) { return uds_old_lxstat64(UDS_STAT_VER, p, b); }
UDS_HIDDEN int __wrap_fstat64(int fd, struct stat64* b) { return uds_old_fxstat64(UDS_STAT_VER, fd, b); }
UDS_HIDDEN int __wrap_fstatat64(int dir, const char* p, struct stat64* b, int flags) {
  return uds_old_fxstatat64(UDS_STAT_VER, dir, p, b, flags);
}
// On 64-bit targets struct stat is struct stat64.
UDS_HIDDEN int __wrap_stat(const char* p, struct stat64* b) { return uds_old_xstat64(UDS_STAT_VER, p, b); }
UDS_HIDDEN int __wrap_lstat(const char* p, struct stat64* b) { return uds_old_lxstat64(UDS_STAT_VER, p, b); }
UDS_HIDDEN int __wrap_fstat(int fd, struct stat64* b) { return uds_old_fxstat64(UDS_STAT_VER, fd, b); }
UDS_HIDDEN int __wrap_fstatat(int dir, const char* p, struct stat64* b, int flags) {
  return uds_old_fxstatat64(UDS_STAT_VER, dir, p, b, flags);
}

// libstdc++'s inline shared_ptr/atomicity code reads glibc 2.32's
// __libc_single_threaded to skip atomic operations in single-threaded
// processes. Ours says "never single-threaded": always the atomic path, which
// is always correct (and what libstdc++ did before 2.32).
UDS_HIDDEN char __wrap___libc_single_threaded = 0;

// std::random_device (native/core/socket_util.cc) in libstdc++ 12 built on
// glibc 2.36 may draw from arc4random (2.36). Found at run time where glibc
// has it; else getrandom (glibc 2.25, kernel 3.17), else /dev/urandom (an
// older kernel: ENOSYS).
typedef uint32_t (*uds_arc4random_fn)(void);

static uds_arc4random_fn uds_find_arc4random() {
  return reinterpret_cast<uds_arc4random_fn>(uds_old_dlsym(RTLD_DEFAULT, "arc4random"));
}

UDS_HIDDEN uint32_t __wrap_arc4random(void) {
  static const uds_arc4random_fn real = uds_find_arc4random();
  if (real) return real();
  uint32_t v = 0;
  ssize_t n;
  do n = getrandom(&v, sizeof v, 0); while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof v)) return v;
  const int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    do n = read(fd, &v, sizeof v); while (n < 0 && errno == EINTR);
    close(fd);
    if (n == static_cast<ssize_t>(sizeof v)) return v;
  }
  __builtin_trap();  // no source of randomness at all: never return a predictable value
}

// std::condition_variable::wait_for/wait_until on steady_clock (the reader
// engine's mode_cv_ in native/core/reader_engine.cc) call glibc 2.30's
// pthread_cond_clockwait(CLOCK_MONOTONIC). Where glibc has it (>= 2.30) it is
// called, found at run time; on 2.28/2.29 the monotonic deadline becomes a
// CLOCK_REALTIME one for pthread_cond_timedwait, which is what libstdc++
// itself did before clockwait existed: a wall-clock step during the wait can
// end it early (the caller sees the steady clock short of its deadline and
// waits again) or late (by the size of a backward step).
typedef int (*uds_clockwait_fn)(pthread_cond_t*, pthread_mutex_t*, clockid_t, const struct timespec*);

static uds_clockwait_fn uds_find_clockwait() {
  return reinterpret_cast<uds_clockwait_fn>(uds_old_dlsym(RTLD_DEFAULT, "pthread_cond_clockwait"));
}

UDS_HIDDEN int __wrap_pthread_cond_clockwait(pthread_cond_t* c, pthread_mutex_t* m, clockid_t clock,
                                             const struct timespec* abstime) {
  static const uds_clockwait_fn real = uds_find_clockwait();  // thread-safe static init
  if (real) return real(c, m, clock, abstime);
  if (clock == CLOCK_REALTIME) return uds_old_cond_timedwait(c, m, abstime);
  if (clock != CLOCK_MONOTONIC) return EINVAL;
  struct timespec mono, wall;
  clock_gettime(CLOCK_MONOTONIC, &mono);
  clock_gettime(CLOCK_REALTIME, &wall);
  long long ns = (static_cast<long long>(abstime->tv_sec) - mono.tv_sec) * 1000000000LL +
                 (abstime->tv_nsec - mono.tv_nsec);
  if (ns < 0) ns = 0;
  struct timespec at;
  long long wall_ns = wall.tv_nsec + ns % 1000000000LL;
  at.tv_sec = wall.tv_sec + static_cast<time_t>(ns / 1000000000LL + wall_ns / 1000000000LL);
  at.tv_nsec = static_cast<long>(wall_ns % 1000000000LL);
  return uds_old_cond_timedwait(c, m, &at);
}

}  // extern "C"
